"""Workers that say what they have: GPUs, memory, process slots, queues.

Each Celery worker writes its ``WorkerNode`` row when it is ready and every
``ARBITER_WORKER_BEAT_SECONDS`` after (a daemon thread in the worker's main process, wired
in ``config/celery.py``), and stamps ``stopped_at`` when it shuts down. A
row whose heartbeat is older than ``LIVE_SECONDS`` belongs to a worker that
went away without saying so (killed, machine lost).

What a worker has is read without torch (web code never imports it):
GPUs from ``nvidia-smi``, CPU cores from the scheduler's affinity, memory
from ``ml.memory``'s /proc and cgroup readers. On a worker without a GPU the
CPU cores are the process slots: a multi-process job there runs as that
many CPU processes over gloo (slow, but the same code path as on GPUs).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.models import WorkerNode
from ml import memory

logger = logging.getLogger(__name__)

#: A worker whose last report is older than this is not counted (seconds;
#: at least four of its beats, ``ARBITER_WORKER_BEAT_SECONDS``).
LIVE_SECONDS = 60
#: The queue that only workers able to start several processes consume.
MULTI_QUEUE = "gpu-multi"
#: GPU queues: the workers the placement of training jobs cares about.
GPU_QUEUES = ("gpu", MULTI_QUEUE)


@dataclass(frozen=True)
class Capabilities:
    """What a worker has, as it reports it."""

    host: str
    gpus: list[dict[str, Any]] = field(default_factory=list)
    cpu_count: int = 1
    memory_bytes: int = 0
    strategies: list[str] = field(default_factory=list)

    @property
    def process_slots(self) -> int:
        return len(self.gpus) or self.cpu_count


def _gpus() -> list[dict[str, Any]]:
    """One entry per NVIDIA GPU, from ``nvidia-smi`` (none without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, no user input
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        logger.warning("core.workers.nvidia_smi_failed", exc_info=True)
        return []
    gpus = []
    for line in done.stdout.splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip() and mib.strip().isdigit():
            gpus.append(
                {"name": name.strip(), "memory_bytes": int(mib.strip()) * 2**20}
            )
    return gpus


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def capabilities_probe() -> Capabilities:
    """This machine's GPUs, CPU cores, memory and multi-process strategies.
    DeepSpeed counts when it is installed (found, not imported) and FSDP
    with a GPU; DDP runs everywhere (gloo on CPU)."""
    gpus = _gpus()
    strategies = ["ddp"]
    if gpus:
        strategies.append("fsdp")
        if importlib.util.find_spec("deepspeed") is not None:
            strategies += ["zero2", "zero3"]
    return Capabilities(
        host=socket.gethostname(),
        gpus=gpus,
        cpu_count=_cpu_count(),
        memory_bytes=memory.total_memory(),
        strategies=strategies,
    )


def worker_node_report(
    *,
    name: str,
    queues: Sequence[str],
    capabilities: Capabilities,
    started: bool = False,
) -> WorkerNode:
    """Create or refresh ``name``'s row; ``started`` resets ``started_at``
    (and clears ``stopped_at``) for a worker that just started."""
    now = timezone.now()
    values: dict[str, Any] = {
        "host": capabilities.host,
        "pid": os.getpid(),
        "queues": sorted(queues),
        "gpus": capabilities.gpus,
        "cpu_count": capabilities.cpu_count,
        "memory_bytes": capabilities.memory_bytes,
        "process_slots": capabilities.process_slots,
        "strategies": capabilities.strategies,
        "heartbeat_at": now,
    }
    if started:
        values.update(started_at=now, stopped_at=None)
    node, _ = WorkerNode.objects.update_or_create(
        name=name, defaults=values, create_defaults={**values, "started_at": now}
    )
    return node


def worker_node_stop(*, name: str) -> None:
    WorkerNode.objects.filter(name=name).update(
        stopped_at=timezone.now(), updated_at=timezone.now()
    )


def worker_nodes_live() -> list[WorkerNode]:
    """Workers that reported within ``LIVE_SECONDS`` and did not stop."""
    cutoff = timezone.now() - timedelta(seconds=LIVE_SECONDS)
    return list(
        WorkerNode.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=cutoff)
    )


def worker_node_is_live(node: WorkerNode) -> bool:
    return node.stopped_at is None and node.heartbeat_at >= timezone.now() - timedelta(
        seconds=LIVE_SECONDS
    )


def worker_node_words(node: WorkerNode) -> str:
    """``"gpu-1 (2 × NVIDIA H100 80GB HBM3, 80 GB each)"`` or
    ``"cpu-box (0 GPUs, 2 CPU processes)"``, as a person reads it."""
    if node.gpus:
        names = sorted({str(gpu.get("name", "GPU")) for gpu in node.gpus})
        each = max(int(gpu.get("memory_bytes", 0)) for gpu in node.gpus)
        what = (
            f"{len(node.gpus)} × {' / '.join(names)}, {memory.format_bytes(each)} each"
        )
    else:
        what = f"0 GPUs, {node.cpu_count} CPU processes"
    if MULTI_QUEUE not in node.queues:
        what += "; single-process jobs only"
    return f"{node.host} ({what})"


class WorkerBeat:
    """Report this worker now and every ``ARBITER_WORKER_BEAT_SECONDS``
    until ``stop()``."""

    def __init__(self, *, name: str, queues: Sequence[str]) -> None:
        self.name = name
        self.queues = list(queues)
        self.capabilities = capabilities_probe()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"worker-beat-{name}", daemon=True
        )

    def start(self) -> WorkerBeat:
        self._report(started=True)
        self._thread.start()
        return self

    def _report(self, *, started: bool = False) -> None:
        try:
            worker_node_report(
                name=self.name,
                queues=self.queues,
                capabilities=self.capabilities,
                started=started,
            )
        except Exception:  # noqa: BLE001 - a missed beat must not stop the worker
            logger.exception("core.workers.report_failed worker=%s", self.name)
        finally:
            connection.close()

    def _beat(self) -> None:
        while not self._stop.wait(settings.ARBITER_WORKER_BEAT_SECONDS):
            self._report()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            worker_node_stop(name=self.name)
        finally:
            connection.close()


_beat: WorkerBeat | None = None


def worker_started(*, name: str, queues: Sequence[str]) -> None:
    """Called by the worker_ready signal in the worker's main process."""
    global _beat
    if _beat is None:
        _beat = WorkerBeat(name=name, queues=queues).start()
        logger.info("core.workers.started worker=%s queues=%s", name, queues)


def worker_stopped() -> None:
    """Called by the worker_shutdown signal."""
    global _beat
    if _beat is not None:
        _beat.stop()
        _beat = None


def this_worker_words() -> str:
    """The worker running the current task, in words (a job's
    ``placement``): its node name and what it reported; the host name alone
    outside a task or before its first report."""
    from celery import current_task

    name = getattr(getattr(current_task, "request", None), "hostname", None)
    node = WorkerNode.objects.filter(name=name).first() if name else None
    if node is None:
        return socket.gethostname()
    return f"{node.name}: {worker_node_words(node)}"


def gpu_count() -> int:
    """GPUs on this machine (``nvidia-smi``; 0 without it)."""
    return len(_gpus())
