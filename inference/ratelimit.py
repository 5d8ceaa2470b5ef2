"""Per-token request rate limit, in the inference process's memory.

A sliding window log: a token may make ``count`` requests in any window of
``seconds``; the next one is refused with the seconds until the oldest
request leaves the window (``Retry-After``). One inference process serves
all requests (gunicorn, one worker, many threads), so one in-memory log per
process is the limit; several processes would each allow the full rate.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float


@lru_cache(maxsize=8)
def parse_rate(text: str) -> Rate | None:
    """``"120/minute"``, ``"10/second"``, ``"1000/5minutes"`` → a Rate;
    ``""``, ``"0"`` or ``"off"``: no limit. Anything else raises ValueError."""
    if text.strip().lower() in ("", "0", "off", "none"):
        return None
    match = _RATE.fullmatch(text.lower())
    if match is None:
        raise ValueError(
            f"ARBITER_INFERENCE_RATE_LIMIT={text!r}: expected <count>/<unit>, "
            "e.g. 120/minute (units: second, minute, hour, day), or off"
        )
    count = int(match[1])
    if count < 1:
        return None
    return Rate(count=count, seconds=int(match[2] or 1) * _UNITS[match[3]])


class SlidingWindowLimiter:
    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, rate: Rate, *, now: float | None = None) -> int | None:
        """Count a request of ``key``; None when allowed, else the whole
        seconds to wait before the next one is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - rate.seconds:
                hits.popleft()
            if len(hits) >= rate.count:
                return max(1, math.ceil(hits[0] + rate.seconds - now))
            hits.append(now)
            if len(self._hits) > 10_000:  # forget idle tokens now and then
                idle = [k for k, h in self._hits.items() if h[-1] <= now - rate.seconds]
                for stale in idle:
                    del self._hits[stale]
            return None

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


limiter = SlidingWindowLimiter()
