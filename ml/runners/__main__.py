"""Command line: ``python -m ml.runners <method> --config cfg.json --data DIR --out DIR``.

Runs exactly what the Celery task runs, without Django. stdout carries only
JSON lines, one per event: ``{"event": "status" | "progress" | "metrics", ...}``
with the payload's keys inlined, then ``{"event": "result", ...}`` (the
``RunResult``) or ``{"event": "error", "kind": ..., "message": ...}``.
Everything else (logs, library chatter) goes to stderr.

Exit codes: 0 success, 1 failure (traceback logged), 2 bad arguments or
config (the message names the field), 3 cancelled by SIGINT/SIGTERM (the
run stops within a step and saves nothing).

With ``--parent-pid PID`` (how the Celery task starts it) the kernel kills
the run when that process, its parent, dies (Linux ``PR_SET_PDEATHSIG``), so
a killed worker leaves no orphan training on.

As one rank of several (``WORLD_SIZE`` > 1: started by ``torchrun`` or
``accelerate launch``, see ``ml.runners.distributed``) only rank 0 writes
events and the result; another rank writes only an ``error`` event when it
fails. The run stops when ``--stop-file`` appears (checked by every rank,
agreed at a step boundary, then exit 3 as for a signal); SIGTERM ends a
rank at once (that is how the launcher ends the others when one rank died);
with ``--rank-log-dir DIR`` each rank's stderr goes to ``DIR/rank-N.log``;
and each rank dies with the launcher that started it.

``python -m ml.runners --warm --parent-pid PID`` is a spare started ahead of
its job (``training.services.execute.WarmRunner``): it imports torch,
transformers, peft, trl and every method module (seconds a job would
otherwise wait for), fills the caches a first run would fill
(``warm_caches``) and freezes what it imported (``freeze_imports``), then
reads one line from stdin, ``{"argv": [...], "stderr": path, "env":
{...}}``, takes ``env`` as its environment (what a
process started now would get), points its stderr at ``path`` and runs
``main(argv)`` exactly as a process started with those arguments would. End
of input before a line (the worker let it go) exits 0 and runs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ml.runners import METHODS, config_from_dict, distributed, run

logger = logging.getLogger("ml.runners.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_CANCELLED = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml.runners",
        description="Train a PEFT adapter with one of Arbiter's runners.",
    )
    parser.add_argument("method", choices=METHODS)
    parser.add_argument(
        "--config", required=True, type=Path, help="JSON file with the run config"
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="folder with train.jsonl [val.jsonl]"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="folder for the adapter"
    )
    parser.add_argument(
        "--log-level", default="INFO", help="stderr log level (default INFO)"
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="die when this process (the one that started the run) dies (Linux)",
    )
    parser.add_argument(
        "--stop-file",
        type=Path,
        default=None,
        help="stop after the current step once this file exists",
    )
    parser.add_argument(
        "--rank-log-dir",
        type=Path,
        default=None,
        help="with several ranks: write each rank's stderr to DIR/rank-N.log",
    )
    return parser


class _Emitter:
    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        if self.quiet and event != "error":
            return
        self.stream.write(json.dumps({"event": event, **payload}, default=str) + "\n")
        self.stream.flush()


def _rank_stderr(log_dir: Path) -> None:
    """Point this rank's stderr (fd 2: Python, torch's C++ and gloo alike)
    at its own file, so the worker can quote the rank that failed."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"rank-{distributed.rank()}.log").open("a", encoding="utf-8")
    sys.stderr.flush()
    os.dup2(log.fileno(), 2)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ranks = distributed.is_distributed()
    if sys.platform == "linux":
        # A rank dies with its launcher, whoever started that.
        parent = os.getppid() if ranks else args.parent_pid
        if parent and not distributed.die_with_parent(parent):
            return EXIT_FAILED
    if ranks and args.rank_log_dir is not None:
        _rank_stderr(args.rank_log_dir)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=(
            f"%(asctime)s %(levelname)s [rank {distributed.rank()}] %(name)s: "
            "%(message)s"
            if ranks
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        ),
    )
    emit = _Emitter(sys.stdout, quiet=not distributed.is_main())

    try:
        raw = json.loads(args.config.read_text(encoding="utf-8"))
        config = config_from_dict(args.method, raw)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        logger.error("Bad config %s: %s", args.config, exc)
        emit("error", {"kind": "config", "message": str(exc)})
        return EXIT_CONFIG

    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        logger.warning("Received signal %d; stopping after the current step", signum)
        stop_requested = True

    # With several ranks a stop comes through the stop file, agreed by all
    # ranks; a signal is the launcher tearing the run down and ends it now.
    stop_signals = () if ranks else (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, request_stop) for sig in stop_signals}
    stop_file = distributed.stop_file_check(args.stop_file)

    def local_stop() -> bool:
        return stop_requested or stop_file()

    should_stop = distributed.StopAgreement(local_stop) if ranks else local_stop
    try:
        # Libraries print to stdout (accelerate, rich tables); keep it JSON-only.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(
                args.method,
                config,
                data_dir=args.data,
                output_dir=args.out,
                on_event=emit,
                should_stop=should_stop,
            )
    except Exception as exc:  # noqa: BLE001 - the CLI edge reports every failure
        logger.exception("%s run failed", args.method)
        emit("error", {"kind": "failure", "message": f"{type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    emit("result", result.to_dict())
    return EXIT_CANCELLED if result.cancelled else EXIT_OK


def prepare_process(methods: Iterable[str], *, warm: bool = False) -> None:
    """What a runner process does before its job: import the ``methods``'
    modules, fill the caches a first run would fill (``warm``: a spare,
    which has time for it) and freeze what that left (``freeze_imports``).
    Only for a process of its own: ``main`` called in-process does none of
    it."""
    with contextlib.redirect_stdout(sys.stderr):
        for method in methods:
            importlib.import_module(f"ml.runners.{method}")
        if warm:
            warm_caches()
    freeze_imports()


def freeze_imports() -> None:
    """Collect once, then take every object alive now out of the garbage
    collector's reach (``gc.freeze``): after torch, transformers, peft and
    trl that is ~450,000 objects, which live as long as the process anyway.
    A full collection walks all of them (0.16 s here) and a run triggers
    several: in a runner process started for its job that was the ~0.2 s
    it took over the same run in a long-lived process, where the modules'
    objects had settled into the oldest generation long before
    (benchmarks/README.md, training_overhead)."""
    gc.collect()
    gc.freeze()


def warm_caches() -> None:
    """Fill, in the spare, the process-wide caches a first run would fill on
    its clock. transformers builds its checkpoint conversion mapping (a few
    hundred regular expressions, about 50 ms here) at a process's first
    ``from_pretrained`` (in a fresh process that had imported what a spare
    imports, the first of two runs was 0.06 s slower on average; with the
    mapping built first, it was not; benchmarks/README.md). Best effort: a
    transformers without it, or a failure here, costs the job only that
    time."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        get_checkpoint_conversion_mapping("llama")
    except Exception:  # noqa: BLE001 - an optimisation must not stop the spare
        logger.debug("warming transformers' conversion mapping failed", exc_info=True)


def warm_main(argv: list[str]) -> int:
    """The spare: imports first, then one job from stdin (see the module
    docstring)."""
    parser = argparse.ArgumentParser(prog="python -m ml.runners --warm")
    parser.add_argument("--warm", action="store_true", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    if (
        sys.platform == "linux"
        and args.parent_pid
        and not distributed.die_with_parent(args.parent_pid)
    ):
        return EXIT_FAILED
    prepare_process(METHODS, warm=True)  # while nothing waits on it
    line = sys.stdin.readline()
    if not line.strip():
        return EXIT_OK
    job = json.loads(line)
    if "env" in job:  # the environment a process started now would get
        os.environ.clear()
        os.environ.update(job["env"])
    log = open(job["stderr"], "a", encoding="utf-8")  # noqa: SIM115 - fd 2 keeps it
    sys.stderr.flush()
    os.dup2(log.fileno(), 2)
    return main([str(a) for a in job["argv"]])


def _exit(code: int) -> None:
    """End the process once its result is out. A single process skips the
    interpreter's teardown: freeing torch, transformers and the model module
    by module took over a second after the result, a second the worker waits
    for (it registers the adapter once the runner has exited). The adapter
    and every event are written before ``main`` returns. A rank of several
    exits normally, as its launcher expects."""
    if distributed.is_distributed():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cold_main() -> int:
    """A runner started for its job (no spare): it imports its own method
    (the first argument) and freezes, as a spare does, then runs the job."""
    prepare_process([m for m in sys.argv[1:2] if m in METHODS])
    return main()


if __name__ == "__main__":
    _exit(warm_main(sys.argv[1:]) if sys.argv[1:2] == ["--warm"] else cold_main())
