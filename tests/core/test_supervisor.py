"""core.supervisor: the demo's processes come back after a crash."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from core.supervisor import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_killed_child_is_restarted_with_back_off_and_the_rest_keeps_running(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    supervisor = Supervisor(
        [("web", SLEEPER), ("worker-gpu", SLEEPER)],
        env=dict(os.environ),
        cwd=tmp_path,
        say=lines.append,
    )
    supervisor.start()
    web, gpu = supervisor.children
    try:
        first_web = web.process
        gpu.process.send_signal(signal.SIGKILL)  # the kernel's OOM killer, say
        gpu.process.wait(5)
        supervisor.poll()
        assert gpu.restart_at is not None and gpu.backoff == 2.0
        assert any("worker-gpu exited with -9; restarting" in line for line in lines)

        def restarted() -> bool:
            supervisor.poll()
            return gpu.restarts == 1

        _wait(restarted)
        assert gpu.process.poll() is None and gpu.history == [-9]
        # The web process was never touched.
        assert web.process is first_web and web.process.poll() is None
    finally:
        supervisor.stop(timeout=5)
    assert all(c.process.poll() is not None for c in supervisor.children)


def test_a_crash_loop_backs_off_up_to_the_limit(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(
        [("beat", crash)], env=dict(os.environ), cwd=tmp_path, max_backoff=4, say=str
    )
    supervisor.start()
    (beat,) = supervisor.children
    delays = []
    for _ in range(4):
        beat.process.wait(5)
        supervisor.poll()
        delays.append(beat.restart_at - time.monotonic())
        beat.restart_at = time.monotonic()  # skip the wait in the test
        supervisor.poll()
    supervisor.stop(timeout=5)
    assert [round(d) for d in delays] == [1, 2, 4, 4]
    assert beat.history == [3, 3, 3, 3]
