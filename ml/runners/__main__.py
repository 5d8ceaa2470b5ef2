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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ml.runners import METHODS, config_from_dict, run

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
    return parser


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(EXIT_FAILED)


class _Emitter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self.stream.write(json.dumps({"event": event, **payload}, default=str) + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.parent_pid and sys.platform == "linux":
        _die_with_parent(args.parent_pid)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    emit = _Emitter(sys.stdout)

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

    previous = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        # Libraries print to stdout (accelerate, rich tables); keep it JSON-only.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(
                args.method,
                config,
                data_dir=args.data,
                output_dir=args.out,
                on_event=emit,
                should_stop=lambda: stop_requested,
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


if __name__ == "__main__":
    sys.exit(main())
