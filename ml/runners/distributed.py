"""What a runner process needs to know when it is one rank of several.

``torchrun`` (``python -m torch.distributed.run``) and ``accelerate launch``
start one process per GPU (or CPU slot) with ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` in the environment; accelerate, which every TRL trainer
builds on, reads them and forms the process group (NCCL on GPUs, gloo on
CPU). Everything else a job's contract needs lives here:

- only rank 0 reports (events, the result) and writes the adapter;
- a stop is agreed by every rank at the same step (``StopAgreement``):
  a rank that stopped alone would leave the others waiting forever in
  their next all-reduce;
- a rank dies with the launcher that started it (``die_with_parent``), and
  the launcher with the worker's task process.

Importing this module is cheap: torch is imported only when a stop is
agreed across ranks.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1

#: Launchers the worker may start a multi-process run with.
LAUNCHERS = ("torch.distributed.run", "accelerate.commands.launch")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def die_with_parent(parent: int) -> bool:
    """Ask the kernel to SIGKILL this process when ``parent`` dies (Linux
    ``PR_SET_PDEATHSIG``). False when ``parent`` already died before the
    request took effect: the caller should exit."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    return os.getppid() == parent


class StopAgreement:
    """``should_stop`` for a run of several ranks: each rank's own view
    (``local()``: its stop file or its signal flag) is combined with every
    other rank's (an all-reduce of one number, max), so that all ranks see
    True at the same call and stop after the same step.

    Every rank must call it at the same points, which the trainer callback
    does (step and micro-batch boundaries are the same on every rank: the
    data loaders give each rank as many batches). Before the process group
    exists (loading the model) it answers from ``local()`` alone. Once True
    it stays True without another collective, on every rank at once."""

    def __init__(self, local: Callable[[], bool]) -> None:
        self.local = local
        self.stopped = False

    def __call__(self) -> bool:
        if self.stopped:
            return True
        mine = self.local()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return mine
        import torch

        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )
        flag = torch.tensor([1 if mine else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.stopped = bool(flag.item())
        if self.stopped and not mine:
            logger.info("rank %d: another rank asked to stop", rank())
        return self.stopped


def trainer_overrides() -> dict[str, bool]:
    """TrainingArguments for a run of several ranks: an adapter uses every
    trainable parameter in each forward, so DDP need not search the graph
    for unused ones (transformers turns that search on without gradient
    checkpointing: an extra traversal of the autograd graph per step)."""
    return {"ddp_find_unused_parameters": False} if is_distributed() else {}


def stop_file_check(path: Path | None) -> Callable[[], bool]:
    """A cheap local check: whether the worker wrote ``path`` (one stat)."""
    if path is None:
        return lambda: False
    return path.exists
