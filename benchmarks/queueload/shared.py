"""What every part of the queue benchmark uses: the project root and the log line."""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_percent() -> int:
    """100 % per core: the scale of the CPU figures."""
    return 100 * (os.cpu_count() or 1)
