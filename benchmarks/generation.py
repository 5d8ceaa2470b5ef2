"""Adapter switching on one base versus loading the model per adapter.

Usage::

    .venv/bin/python benchmarks/generation.py [--base smollm2|tiny] [--prompts 8]
        [--adapters 4] [--max-new-tokens 32] [--threads 1] [--sweep 4x8,16x32] [--no-sweep]

Completions for N prompts from each of 4 random LoRA adapters (``peft``
``init_lora_weights=False``, r=16 on the seven Llama projections, like the
adapters the DPO runner writes), with the same ``DecodingParams`` and the same
batched ``AdapterGenerator`` code path, timed two ways:

(a) switch: one ``AdapterGenerator`` (base loaded once), adapters attached
    and switched on it;
(b) reload: a fresh ``AdapterGenerator`` per adapter, i.e. a fresh
    ``AutoModelForCausalLM.from_pretrained(base)`` plus
    ``PeftModel.from_pretrained`` for every adapter.

Both start after an untimed warm-up generation (first-call costs), and the
outputs of (a) and (b) are compared: same seeds, same weights, same text.
Phases: base load, adapter attach (``AdapterGenerator._activate``, which
``generate`` would otherwise call first; calling it beforehand only splits the
timing) and generation. The main setting runs each way ``--repeat`` times
(ABBA order, best kept). A "warm worker" line adds the measured cost of
switching through the adapters once they are resident (as in a long-running
worker) to the same generation time.

A sweep over prompts x max_new_tokens follows (``--sweep``, default
4x1,4x8,4x32,4x128,16x8,16x32; skip it with ``--no-sweep``), one run per
way, with the load-only ratio (what switching could save
if generation were free): the saving is a fixed per-adapter load cost, so
the ratio shrinks as generation grows. Also reported, as context: the very first
base load through ``ensure_smollm2`` (conversion from the bundled GGUF).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, sys.path[0] is benchmarks/: keep only the project root,
# so no sibling script can shadow a module of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

ROOT = _HERE.parent
DATA_DIR = ROOT / ".data" / "bench-generation"
LLAMA_LORA = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]
PROMPTS = [
    "Tell me about the cat.",
    "Write one sentence about a river at night.",
    "What is a good name for a small robot?",
    "Give me a tip for learning to play the guitar.",
    "Describe a storm over the ocean in a few words.",
    "Why do people like gardens?",
    "Explain what a teacher does, briefly.",
    "Suggest a title for a song about trains.",
]


@dataclass
class Timing:
    base_load: float = 0.0
    attach: float = 0.0
    generate: float = 0.0
    tokens: int = 0
    outputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.base_load + self.attach + self.generate

    @property
    def load(self) -> float:
        return self.base_load + self.attach


def _setup_environment() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _prepare_base(kind: str, skip_conversion: bool) -> tuple[Path, float | None, str]:
    """The base folder, and the time of a first ensure_smollm2 (conversion)."""
    models = DATA_DIR / "models"
    if kind == "tiny":
        from ml.tiny import build_tiny_model

        path = models / "tiny-llama"
        if not (path / "config.json").exists():
            build_tiny_model(path)
        return path, None, ""
    from ml.smollm2 import MARKER, ensure_smollm2

    target = models / "smollm2-135m-instruct"
    if not (target / MARKER).exists():
        start = time.perf_counter()
        path = ensure_smollm2(models)
        return path, time.perf_counter() - start, "this run's cache"
    if skip_conversion:
        return target, None, ""
    with tempfile.TemporaryDirectory(prefix="smollm2-conv-", dir=DATA_DIR) as scratch:
        start = time.perf_counter()
        ensure_smollm2(scratch)
        seconds = time.perf_counter() - start
    return ensure_smollm2(models), seconds, "a fresh temporary cache"


def _make_adapters(base: Path, kind: str, count: int) -> list[tuple[str, str]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = DATA_DIR / "adapters" / kind
    out = []
    for i in range(count):
        path = root / f"random-{i}"
        if not (path / "adapter_model.safetensors").exists():
            shutil.rmtree(path, ignore_errors=True)
            torch.manual_seed(1000 + i)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            config = LoraConfig(
                task_type="CAUSAL_LM",
                r=16,
                lora_alpha=32,
                target_modules=LLAMA_LORA,
                init_lora_weights=False,
            )
            get_peft_model(model, config).save_pretrained(path)
            del model
        out.append((f"adapter-{i}", str(path)))
    return out


def _count_tokens(tokenizer: Any, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def run_switch(
    base: str, adapters: list[tuple[str, str]], prompts: list[str], params: Any
) -> tuple[Timing, Timing]:
    """(a) one generator. Returns the round and a "warm worker" estimate: the
    measured cost of switching through the (now resident) adapters again,
    plus the same generation time (the generate call is identical)."""
    from ml.generation import AdapterGenerator

    first = Timing()
    start = time.perf_counter()
    gen = AdapterGenerator(base, max_adapters=max(4, len(adapters)))
    first.base_load = time.perf_counter() - start
    for key, path in adapters:
        start = time.perf_counter()
        gen._activate(key, path)
        first.attach += time.perf_counter() - start
        start = time.perf_counter()
        texts = [
            t for t, _ in gen.generate(prompts, adapter=(key, path), params=params)
        ]
        first.generate += time.perf_counter() - start
        first.outputs[key] = texts
        first.tokens += _count_tokens(gen.tokenizer, texts)
    warm = Timing(generate=first.generate, tokens=first.tokens)
    for key, path in adapters:
        start = time.perf_counter()
        gen._activate(key, path)
        warm.attach += time.perf_counter() - start
    del gen
    gc.collect()
    return first, warm


def run_reload(
    base: str, adapters: list[tuple[str, str]], prompts: list[str], params: Any
) -> Timing:
    """(b) a fresh base model (and generator) per adapter."""
    from ml.generation import AdapterGenerator

    timing = Timing()
    for key, path in adapters:
        start = time.perf_counter()
        gen = AdapterGenerator(base, max_adapters=1)
        timing.base_load += time.perf_counter() - start
        start = time.perf_counter()
        gen._activate(key, path)
        timing.attach += time.perf_counter() - start
        start = time.perf_counter()
        texts = [
            t for t, _ in gen.generate(prompts, adapter=(key, path), params=params)
        ]
        timing.generate += time.perf_counter() - start
        timing.outputs[key] = texts
        timing.tokens += _count_tokens(gen.tokenizer, texts)
        del gen
        gc.collect()
    return timing


def _prompts(n: int) -> list[str]:
    return [
        PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})")
        for i in range(n)
    ]


def compare(
    base: str,
    adapters: list[tuple[str, str]],
    n_prompts: int,
    max_new_tokens: int,
    repeats: int = 1,
) -> dict[str, Any]:
    """(a) and (b) ``repeats`` times in ABBA order; the best (lowest total)
    of each way is kept, the others are listed in ``totals``."""
    from ml.generation import DecodingParams

    params = DecodingParams(max_new_tokens=max_new_tokens)
    prompts = _prompts(n_prompts)
    runs_a: list[tuple[Timing, Timing]] = []
    runs_b: list[Timing] = []
    for i in range(repeats):
        for way in "ab" if i % 2 == 0 else "ba":
            if way == "a":
                runs_a.append(run_switch(base, adapters, prompts, params))
            else:
                runs_b.append(run_reload(base, adapters, prompts, params))
    a, warm = min(runs_a, key=lambda r: r[0].total)
    b = min(runs_b, key=lambda t: t.total)
    same = sum(a.outputs[k] == b.outputs[k] for k, _ in adapters)
    return {
        "a": a,
        "steady": warm,
        "b": b,
        "same": same,
        "params": params,
        "totals": ([r[0].total for r in runs_a], [t.total for t in runs_b]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0 = torch's default). 1 keeps timings stable on a "
        "shared machine; on an idle machine more threads shorten generation, "
        "which only lowers the (b)/(a) ratio further",
    )
    parser.add_argument(
        "--sweep",
        default="4x1,4x8,4x32,4x128,16x8,16x32",
        help="PROMPTSxMAX_NEW_TOKENS cells after the main setting ('' = none). "
        "16x128 is left out of the default only for time (~5 min on 1 CPU thread)",
    )
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per way for the main setting (ABBA order, best kept); the sweep runs once",
    )
    parser.add_argument(
        "--skip-conversion",
        action="store_true",
        help="do not time a fresh GGUF conversion when the converted base is cached",
    )
    args = parser.parse_args()

    _setup_environment()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    wall = time.perf_counter()
    base_path, conversion, where = _prepare_base(args.base, args.skip_conversion)
    adapters = _make_adapters(base_path, args.base, args.adapters)
    base = str(base_path)

    # Untimed warm-up: first-call costs (lazy imports, kernels, page cache).
    from ml.generation import AdapterGenerator, DecodingParams

    start = time.perf_counter()
    warm = AdapterGenerator(base)
    first_load = time.perf_counter() - start
    warm.generate(
        _prompts(2), adapter=adapters[0], params=DecodingParams(max_new_tokens=4)
    )
    del warm
    gc.collect()

    print(
        f"Generation: {args.adapters} random LoRA adapters (r=16, 7 projections) on {args.base} "
        f"({base}), torch threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.2f}"
    )
    if conversion is not None:
        print(
            f"  context: first ensure_smollm2 (GGUF -> bf16 safetensors, into {where}) took {conversion:.1f}s; "
            f"a base load from the converted folder then takes {first_load:.2f}s"
        )
    else:
        print(f"  context: first base load in this process {first_load:.2f}s")

    res = compare(
        base, adapters, args.prompts, args.max_new_tokens, repeats=args.repeat
    )
    a, steady, b = res["a"], res["steady"], res["b"]
    p = res["params"]
    print(
        f"  setting: {args.prompts} prompts x {args.adapters} adapters, max_new_tokens={p.max_new_tokens}, "
        f"do_sample={p.do_sample} T={p.temperature} top_p={p.top_p} batch_size={p.batch_size}"
    )
    totals_a, totals_b = res["totals"]
    print(
        f"  {args.repeat} run(s) per way in ABBA order, best kept: (a) totals "
        + " ".join(f"{t:.2f}" for t in totals_a)
        + "s; (b) totals "
        + " ".join(f"{t:.2f}" for t in totals_b)
        + "s"
    )
    print(
        "                          total   base load  adapter attach  generate   tok/s(gen)"
    )
    for label, t in (
        ("(a) switch, one base ", a),
        ("(b) reload per adapter", b),
        ("(a) warm worker*     ", steady),
    ):
        print(
            f"  {label} {t.total:8.2f}s {t.base_load:9.2f}s {t.attach:12.2f}s {t.generate:9.2f}s "
            f"{t.tokens / t.generate:10.1f}"
        )
    print(
        f"  ratio (b)/(a) = {b.total / a.total:.2f}x   (target >= 5x); "
        f"(b)/(a warm) = {b.total / steady.total:.2f}x; "
        f"load saved {b.load - a.load:.2f}s of {b.total:.2f}s; "
        f"identical outputs for {res['same']}/{args.adapters} adapters; "
        f"~{a.tokens} new tokens per way"
    )
    print(
        "  * warm worker: base and adapters already resident (a long-running gpu worker); "
        "switch time measured, generation time taken from (a)"
    )

    ratios: list[float] = []
    cells = [c for c in args.sweep.split(",") if c.strip()] if not args.no_sweep else []
    if cells:
        print("  sweep (same adapters; seconds; load = base load + adapter attach):")
        print(
            "    prompts  max_new   (a) switch   (b) reload   (a) load  (b) load  (b) gen   (b)/(a)  load-only (b)/(a)  same"
        )
        for cell in cells:
            n_prompts, tokens = (int(x) for x in cell.lower().split("x"))
            r = compare(base, adapters, n_prompts, tokens)
            ra, rb = r["a"], r["b"]
            ratios.append(rb.total / ra.total)
            print(
                f"    {n_prompts:7d} {tokens:8d} {ra.total:12.2f} {rb.total:12.2f} {ra.load:10.2f} {rb.load:9.2f} "
                f"{rb.generate:8.2f} {rb.total / ra.total:9.2f}x {rb.load / ra.load:17.2f}x "
                f"{r['same']:3d}/{len(adapters)}"
            )
    per_adapter_base = b.base_load / len(adapters)
    per_adapter_attach = b.attach / len(adapters)
    per_adapter_gen = a.generate / len(adapters)
    verdict = (
        "meets the 5x target"
        if b.total / a.total >= 5
        else f"{b.total / a.total:.2f}x, below the 5x target"
    )
    sweep = f" (sweep {min(ratios):.2f}x-{max(ratios):.2f}x)" if ratios else ""
    print(
        f"  conclusion: per adapter, reloading costs a base load of ~{per_adapter_base:.2f}s while "
        f"attaching the adapter costs ~{per_adapter_attach:.2f}s either way and generating "
        f"~{per_adapter_gen:.2f}s; so switching is {verdict}{sweep}. Even with no generation "
        f"at all a cold switch can save at most {b.load / a.load:.1f}x (load-only ratio); the "
        f"large saving is for a warm worker whose adapters are already attached "
        f"({steady.attach:.2f}s to switch 4 vs {b.load:.2f}s to reload), and it only "
        f"dominates the total when generations are short."
    )
    print(f"  benchmark wall time {time.perf_counter() - wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
