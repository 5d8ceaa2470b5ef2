#!/usr/bin/env python
"""Labeling-queue load test: many annotators against the real HTTP API.

    .venv/bin/python benchmarks/queue_load.py [--annotators 100] [--sizes 10000,1000000]
                                          [--duration 20] [--k 1] [--think-ms 0,10000]
                                          [--mode rank --rank-k 4]

The entry point only; the code is the ``benchmarks.queueload`` package (its
docstring and benchmarks/README.md describe the method).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, sys.path[0] is benchmarks/; put the project root there
# instead, before anything else is imported, so the app packages resolve.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.queueload.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
