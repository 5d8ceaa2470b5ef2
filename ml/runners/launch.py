"""``python -m ml.runners.launch --parent-pid PID MODULE [ARGS...]``.

Runs a launcher module (``torch.distributed.run`` or
``accelerate.commands.launch``) as ``python -m MODULE ARGS...`` would, after
asking the kernel to kill this process when ``PID`` (the worker's task
process) dies. The ranks the launcher starts die with the launcher in turn
(``python -m ml.runners`` does that for itself when ``WORLD_SIZE`` > 1), so
a killed worker leaves no rank of a multi-process run behind.
"""

from __future__ import annotations

import argparse
import runpy
import sys

from ml.runners.distributed import LAUNCHERS, die_with_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.runners.launch")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("module", choices=LAUNCHERS)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if sys.platform == "linux" and not die_with_parent(args.parent_pid):
        return 1
    sys.argv = [args.module, *args.args]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
