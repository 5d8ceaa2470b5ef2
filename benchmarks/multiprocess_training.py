"""The same DPO run as 1 process and as 2 processes (torchrun, gloo) on CPU.

Usage::

    .venv/bin/python benchmarks/multiprocess_training.py [--pairs 64] [--epochs 2]
        [--hidden 64] [--layers 2] [--batch 4] [--threads 1] [--repeat 2]

Both runs are started the way the gpu worker starts them
(``training.services.execute.runner_command``): ``python -m ml.runners``
for one process, ``python -m ml.runners.launch ... torch.distributed.run
--standalone --nproc_per_node 2 -m ml.runners`` for two. The model is a tiny
random Llama built locally (``--hidden``/``--layers``), the data ``--pairs``
preference rows; both runs see every row ``--epochs`` times with the same
micro-batch per process, so two processes take half the optimizer steps.

Printed per run: wall time (process start to exit: imports, model load,
process-group set-up and teardown included), the trainer's own training
time (rank 0's ``train_runtime``), samples/s on each, and the 2-process /
1-process ratios. On a machine with 2 cores the point is the overhead of the
multi-process path (two interpreters, gloo all-reduces, the stop agreement
each step), not a speed-up; the load average is printed before and after,
since a shared machine skews both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

SUBJECTS = ["cat", "river", "garden", "teacher", "robot", "city", "storm", "friend"]


def _prepare(folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from ml.tiny import build_tiny_model

    texts = [f"tell me about the {s} . the {s} answers kindly ." for s in SUBJECTS]
    model = build_tiny_model(
        folder / "model",
        hidden_size=args.hidden,
        num_layers=args.layers,
        extra_text=texts + [t.replace("kindly", "rudely") for t in texts],
    )
    data = folder / "data"
    data.mkdir()
    rows = [
        {
            "prompt": f"tell me about the {SUBJECTS[i % len(SUBJECTS)]} number {i} .",
            "chosen": f"the {SUBJECTS[i % len(SUBJECTS)]} answers kindly .",
            "rejected": f"the {SUBJECTS[i % len(SUBJECTS)]} answers rudely .",
        }
        for i in range(args.pairs)
    ]
    (data / "train.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
    )
    config = {
        "base_model": str(model),
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": args.batch,
        "logging_steps": 1000,
        "max_length": 64,
        "torch_threads": args.threads,
    }
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return config_path, data


def _command(processes: int, config: Path, data: Path, out: Path) -> list[str]:
    runner = [
        "ml.runners",
        "dpo",
        "--config",
        str(config),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    if processes == 1:
        return [sys.executable, "-m", *runner, "--parent-pid", str(os.getpid())]
    return [
        sys.executable,
        "-m",
        "ml.runners.launch",
        "--parent-pid",
        str(os.getpid()),
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "--monitor-interval",
        "0.5",
        "-m",
        *runner,
        "--stop-file",
        str(out.parent / f"STOP-{out.name}"),
        "--rank-log-dir",
        str(out.parent / f"ranks-{out.name}"),
    ]


def _run(processes: int, config: Path, data: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own interpreter and modules
        _command(processes, config, data, out),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    results = [
        json.loads(line)
        for line in done.stdout.splitlines()
        if line.startswith("{") and '"event": "result"' in line
    ]
    if done.returncode != 0 or len(results) != 1:
        raise RuntimeError(
            f"{processes}-process run failed ({done.returncode}): {done.stderr[-3000:]}"
        )
    result = results[0]
    return {"wall": wall, "train": result["train_runtime"], "steps": result["steps"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="micro-batch per process")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process"
    )
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"CPU cores: {len(os.sched_getaffinity(0))}")
    samples = args.pairs * args.epochs
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-multi-") as tmp:
        config, data = _prepare(Path(tmp), args)
        for repeat in range(args.repeat):
            for processes in (1, 2):  # alternate, so background load hits both
                out = Path(tmp) / f"out-{processes}-{repeat}"
                runs[processes].append(_run(processes, config, data, out))
                if not (out / "adapter_model.safetensors").exists():
                    raise RuntimeError(f"no adapter from the {processes}-process run")
    print(
        f"\nDPO, tiny Llama (hidden {args.hidden}, {args.layers} layers), "
        f"{args.pairs} pairs × {args.epochs} epochs = {samples} samples, "
        f"micro-batch {args.batch} per process, {args.threads} torch thread(s) "
        f"per process; median of {args.repeat}\n"
    )
    print(
        f"{'processes':>9} {'steps':>6} {'wall s':>8} {'train s':>8} "
        f"{'samples/s wall':>15} {'samples/s train':>16}"
    )
    medians = {}
    for processes, measured in runs.items():
        wall = statistics.median(r["wall"] for r in measured)
        train = statistics.median(r["train"] for r in measured)
        medians[processes] = (wall, train)
        print(
            f"{processes:>9} {measured[0]['steps']:>6} {wall:>8.2f} {train:>8.2f} "
            f"{samples / wall:>15.1f} {samples / train:>16.1f}"
        )
    (wall1, train1), (wall2, train2) = medians[1], medians[2]
    print(
        f"\nratio 2 processes / 1 process: wall time {wall2 / wall1:.2f}×, "
        f"training time {train2 / train1:.2f}×, samples/s (train) "
        f"{train1 / train2:.2f}×"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
