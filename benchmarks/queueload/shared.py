"""What every part of the queue benchmark uses: the project root, the log
line, the percentile."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A next-pair answer this slow counts in ``RunResult.slow_by_second``.
SLOW_MS = 100.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_percent() -> int:
    """100 % per core: the scale of the CPU figures."""
    return 100 * (os.cpu_count() or 1)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
