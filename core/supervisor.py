"""Keep a set of child processes running: the demo launcher's process manager.

A child that exits while the supervisor is not stopping is started again
after a back-off (1 s, doubling up to ``max_backoff``; back to 1 s once it
has stayed up for ``stable_after`` seconds), so a worker killed by the
kernel comes back while the web server keeps serving. ``stop()`` sends
SIGTERM in the given order (web first, workers get a warm shutdown), then
kills what did not stop in time.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        specs: Sequence[tuple[str, list[str]]],
        *,
        env: dict[str, str],
        cwd: Path,
        max_backoff: float = 60.0,
        stable_after: float = 60.0,
        say: Callable[[str], None] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.children = [Child(name, list(args)) for name, args in specs]
        # None: children write to the launcher's terminal; else <name>.log here.
        self.log_dir = log_dir
        self.env = env
        self.cwd = cwd
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.say = say or logger.warning

    def _start(self, child: Child) -> None:
        self.say(f"  starting {child.name}: {' '.join(child.args)}")
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{child.name}.log", "ab")  # noqa: SIM115
        # Own session: the terminal's Ctrl-C reaches only the launcher.
        child.process = subprocess.Popen(
            child.args,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        if output is not None:
            output.close()  # the child holds its own copy
        child.started_at = time.monotonic()
        child.restart_at = None

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def poll(self) -> None:
        """Restart children that exited, each after its back-off."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                if now - child.started_at >= self.stable_after:
                    child.backoff = 1.0
                continue
            child.history.append(code)
            delay = child.backoff
            child.backoff = min(self.max_backoff, child.backoff * 2)
            child.restart_at = now + delay
            self.say(
                f"{child.name} exited with {code}; restarting it in {delay:.0f} s "
                "(the rest keeps running)"
            )

    def stop(self, *, timeout: float = 30.0) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in time; killing it.")
                child.process.kill()
