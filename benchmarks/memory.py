"""Estimated against measured peak memory of training runs on SmolLM2.

Usage::

    .venv/bin/python benchmarks/memory.py [--batches 2,4] [--length 128]
        [--methods sft,reward,dpo] [--steps 2] [--threads 2]

For each method and micro-batch size, the runner runs as the worker runs it
(``python -m ml.runners`` in a child process) for ``--steps`` optimizer
steps on rows long enough that every sequence is cut at ``--length`` tokens
(the worst case the estimate describes). The child's peak resident set is
read from the kernel (``ru_maxrss`` of ``os.wait4``) and printed next to
``ml.memory.estimate_peak_memory`` with their ratio (estimate / measured;
above 1 the estimate errs on the safe side). SmolLM2-135M-Instruct is
converted from its GGUF under ``ARBITER_DATA_DIR/models`` on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.config import config_from_dict  # noqa: E402
from ml.memory import (  # noqa: E402
    estimate_peak_memory,
    format_bytes,
    model_shape,
)

WORDS = (
    "the cat river garden teacher robot city storm friend song train answers "
    "kindly rudely quickly slowly happily because although whenever where"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _fitted(rng: random.Random, count: Any, prompt: str, budget: int) -> str:
    """An answer that brings prompt + answer to just under ``budget`` tokens
    (the reward runner drops pairs longer than max_length, DPO and SFT cut
    them): every sequence of the batch is then as long as allowed."""
    words: list[str] = []
    while count(prompt + " " + " ".join([*words, "x"])) < budget:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def write_data(folder: Path, *, rows: int, length: int, base: Path) -> dict[str, Path]:
    """Preference and SFT rows whose prompt plus answer fill ``length`` tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))

    def count(text: str) -> int:
        return len(tok(text)["input_ids"])

    rng = random.Random(0)
    budget = length - 8  # room for the special tokens each format adds
    out = {}
    for kind in ("preference", "sft"):
        target = folder / kind
        target.mkdir(parents=True)
        lines = []
        for _ in range(rows):
            prompt = _text(rng, length // 8)
            if kind == "sft":
                row = {
                    "prompt": prompt,
                    "completion": _fitted(rng, count, prompt, budget),
                }
            else:
                row = {
                    "prompt": prompt,
                    "chosen": _fitted(rng, count, prompt, budget),
                    "rejected": _fitted(rng, count, prompt, budget),
                }
            lines.append(json.dumps(row))
        (target / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        out[kind] = target
    return out


def measure(
    method: str, config: dict[str, object], data: Path, work: Path
) -> tuple[int, float, int]:
    """(peak RSS bytes, seconds, exit code) of one runner child."""
    cfg = work / f"{method}-{config['per_device_train_batch_size']}.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    out = work / cfg.stem
    start = time.monotonic()
    with (work / f"{cfg.stem}.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml.runners",
                method,
                "--config",
                str(cfg),
                "--data",
                str(data),
                "--out",
                str(out),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, time.monotonic() - start, proc.returncode


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="2,4")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--methods", default="sft,reward,dpo")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "1"
    from ml.smollm2 import ensure_smollm2

    data_root = Path(os.environ.get("ARBITER_DATA_DIR", ROOT / ".data"))
    base = ensure_smollm2(data_root / "models")
    shape = model_shape(base)
    print(
        f"SmolLM2 at {base}: {shape.parameters / 1e6:.0f}M parameters, "
        f"hidden {shape.hidden_size}, {shape.num_layers} layers, "
        f"vocab {shape.vocab_size}; max_length {args.length}, "
        f"{args.steps} steps, {args.threads} torch threads"
    )
    print(
        f"{'method':<7} {'batch':>5} {'estimate':>10} {'measured':>10} "
        f"{'ratio':>6} {'seconds':>8}  largest parts of the estimate"
    )
    ratios = []
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-memory-") as tmp:
        work = Path(tmp)
        batches = [int(b) for b in args.batches.split(",")]
        data = write_data(
            work / "data",
            rows=max(batches) * args.steps + 4,
            length=args.length,
            base=base,
        )
        for method in args.methods.split(","):
            for batch in batches:
                config = {
                    "base_model": str(base),
                    "max_steps": args.steps,
                    "per_device_train_batch_size": batch,
                    "max_length": args.length,
                    "logging_steps": 1,
                    "torch_threads": args.threads,
                    "eval_each_epoch": False,
                }
                folder = data["sft" if method == "sft" else "preference"]
                estimate = estimate_peak_memory(config_from_dict(method, config), shape)
                peak, seconds, code = measure(method, config, folder, work)
                if code != 0:
                    print(f"{method} batch {batch} failed (exit {code})")
                    print((work / f"{method}-{batch}.log").read_text()[-3000:])
                    return 1
                ratio = estimate.total / peak
                ratios.append(ratio)
                parts = sorted(estimate.parts.items(), key=lambda kv: -kv[1])[:3]
                print(
                    f"{method:<7} {batch:>5} {format_bytes(estimate.total):>10} "
                    f"{format_bytes(peak):>10} {ratio:>6.2f} {seconds:>8.1f}  "
                    + ", ".join(f"{k} {format_bytes(v)}" for k, v in parts)
                )
    print(
        f"ratio estimate/measured: min {min(ratios):.2f}, max {max(ratios):.2f} "
        f"over {len(ratios)} runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
