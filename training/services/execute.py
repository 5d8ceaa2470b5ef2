"""Running one training job on a GPU worker.

The runner runs in a child process (``python -m ml.runners``), so that the
memory a run takes returns to the system when it ends, however the
allocator fragmented it. The task's process relays the child's JSON event
lines to the ``JobReporter`` (progress, metrics, phase: the database writes
of before), asks it to stop with SIGTERM when the job is cancelled, and
samples its resident memory every ``RSS_SAMPLE_SECONDS`` (stored as
``rss_bytes``/``peak_rss_bytes``). With ``ARBITER_WORKER_MEMORY_BYTES`` set it
kills a child that grows past it. A child that dies by a signal fails the
job with the signal, its last measured memory and, when the evidence says
so (the watchdog's kill, the cgroup's ``oom_kill`` count rising, or memory
near the machine's), "out of memory" and a smaller micro-batch to relaunch
with. The child dies with the task's process (``--parent-pid``).

The runner writes into a temporary folder; the adapter is registered, moved
into place and the job marked succeeded in one transaction, only after the
run returned successfully. A failed or cancelled run leaves no adapter row and
no files. Called by the ``training.job_run`` task (a process edge).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from core.artifacts import artifact_store
from core.heartbeat import Heartbeat, worker_name
from core.workers import capabilities_probe, gpu_count, this_worker_words
from ml import memory
from ml.result import RunResult
from models_hub.models import BaseModelVersion
from models_hub.services.generation import generation_round_enqueue
from models_hub.services.registry import (
    BUILTIN_SMOLLM2,
    adapter_path,
    adapter_register,
    base_model_local_path,
)
from models_hub.services.test_metrics import (
    adapter_test_metrics_due,
    adapter_test_metrics_update,
)
from training.models import TrainingJob, TrainingMetric
from training.services.jobs import pipeline_job_finished
from training.services.snapshots import snapshot_data_dir

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
CANCEL_POLL_SECONDS = 1.0
LOG_TAIL_LINES = 60
# The ETA runs at the pace of this many latest steps (JobReporter._eta).
ETA_WINDOW_STEPS = 20
#: How often the parent samples the child's resident memory (the first
#: sample comes sooner: a watchdog limit may be passed while loading).
RSS_SAMPLE_SECONDS = 2.0
FIRST_RSS_SAMPLE_SECONDS = 0.5
#: A child killed with its memory above this share of the machine's (or the
#: cgroup's) ran out of memory.
OOM_NEAR_LIMIT = 0.9
#: Seconds a cancelled child gets to stop by itself before it is killed.
STOP_GRACE_SECONDS = 120


class JobReporter:
    """The runner's ``on_event``/``should_stop``, backed by PostgreSQL, plus a
    heartbeat thread so a long model load or step still counts as alive.

    Progress, metrics and the log tail are buffered and written at most once
    per ``FLUSH_SECONDS`` (and on the last step and at ``close()``): a commit
    per optimizer step would slow short steps by a fifth (see
    benchmarks/training_overhead.py). A phase change (the runner's
    ``("status", {"phase": ...})`` events) is written at once with whatever
    else is buffered: a handful per run, so it adds no write per step."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.started = time.monotonic()
        self.log: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._last_poll = 0.0
        self._last_flush = 0.0
        self._cancel = False
        self._progress: dict[str, Any] | None = None
        self._phase: str | None = None
        self._phase_seen = ""
        self._training_started: float | None = None
        # (monotonic time, step) of the latest progress events, for the ETA.
        self._recent_steps: deque[tuple[float, int]] = deque(
            maxlen=ETA_WINDOW_STEPS + 1
        )
        self._metrics: list[TrainingMetric] = []
        self._log_dirty = False
        self._memory: dict[str, int] | None = None
        self._heartbeat = Heartbeat(TrainingJob, job_id)

    def close(self) -> None:
        self._heartbeat.stop()
        self.flush()

    def flush(self) -> None:
        """Write what was buffered; called from the training thread."""
        self._last_flush = time.monotonic()
        if self._metrics:
            TrainingMetric.objects.bulk_create(self._metrics)
            self._metrics = []
        fields: dict[str, Any] = {}
        if self._progress is not None:
            fields.update(self._progress)
            self._progress = None
        if self._phase is not None:
            fields["phase"] = self._phase
            self._phase = None
        if self._log_dirty:
            fields["log_tail"] = "\n".join(self.log)
            self._log_dirty = False
        if self._memory is not None:
            fields.update(self._memory)
            self._memory = None
        if fields:
            TrainingJob.objects.filter(pk=self.job_id).update(
                heartbeat_at=timezone.now(), **fields
            )

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        last_step = False
        if kind == "progress":
            step, total = int(payload.get("step", 0)), int(payload.get("total", 0))
            eta = self._eta(step=step, total=total, now=time.monotonic())
            self._progress = {
                "progress_step": step,
                "progress_total": total,
                "eta_seconds": eta,
            }
            last_step = bool(total) and step >= total
        elif kind == "metrics":
            step = int(payload.get("step", 0))
            metrics = payload.get("metrics", {})
            self._metrics.extend(
                TrainingMetric(
                    job_id=self.job_id, step=step, name=name, value=float(value)
                )
                for name, value in metrics.items()
            )
            self._log(
                f"step {step}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            )
        elif kind == "status":
            phase = str(payload.get("phase", ""))
            if phase == self._phase_seen:
                return  # the runner repeats the phase the task already reported
            self._phase_seen = phase
            self._log(phase)
            # "cancelled" is a status, not a phase: the job keeps the phase it
            # stopped in.
            if phase in TrainingJob.Phase.values:
                self._phase = phase
            if phase == TrainingJob.Phase.TRAINING:
                self._training_started = time.monotonic()
            last_step = True  # phase changes are rare and worth showing at once
        if last_step or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def _eta(self, *, step: int, total: int, now: float) -> int | None:
        """Seconds left at the pace of the last ``ETA_WINDOW_STEPS`` steps.

        The average over the whole run lags: after slow first steps (or an
        evaluation pass) it stays high, then the ETA stalls or rises. Until
        the window holds two samples it counts from the start of training
        (loading the models says nothing about how long the steps take)."""
        if not step or total < step:
            return None
        if self._recent_steps and step < self._recent_steps[-1][1]:
            self._recent_steps.clear()  # a restarted count: start over
        if not self._recent_steps or step > self._recent_steps[-1][1]:
            self._recent_steps.append((now, step))
        first_time, first_step = self._recent_steps[0]
        if step > first_step:
            per_step = (now - first_time) / (step - first_step)
        else:
            start = self._training_started
            per_step = (now - (self.started if start is None else start)) / step
        return int(per_step * (total - step))

    def on_memory(self, *, rss: int, peak: int) -> None:
        """Buffer a memory sample; written with the next flush."""
        self._memory = {"rss_bytes": rss, "peak_rss_bytes": peak}
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def _log(self, line: str) -> None:
        self.log.append(f"{timezone.now():%H:%M:%S} {line}")
        self._log_dirty = True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            self._cancel = TrainingJob.objects.filter(
                pk=self.job_id, cancel_requested=True
            ).exists()
        return self._cancel


def _claim(job_id: int) -> TrainingJob | None:
    """QUEUED → RUNNING under a row lock. A redelivered or duplicate message
    finds another status and does nothing."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != TrainingJob.Status.QUEUED:
            logger.info(
                "training.job.skip job=%s status=%s", job_id, job and job.status
            )
            return None
        now = timezone.now()
        job.status = TrainingJob.Status.RUNNING
        job.started_at = job.heartbeat_at = now
        job.worker = worker_name()
        job.placement = _placement(job)
        job.save(
            update_fields=[
                "status",
                "started_at",
                "heartbeat_at",
                "worker",
                "placement",
                "updated_at",
            ]
        )
        return job


def _placement(job: TrainingJob) -> str:
    """Where the job runs, in words, for its page: the worker and what it
    gives the job."""
    where = this_worker_words()
    if job.processes <= 1:
        return where[:300]
    unit = "GPUs" if gpu_count() else "CPU processes (gloo, no GPU)"
    return f"{where} — {job.processes} {unit}, {job.strategy}"[:300]


def _finish(
    job: TrainingJob,
    status: str,
    *,
    error: str = "",
    metrics: dict[str, float] | None = None,
) -> None:
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != TrainingJob.Status.RUNNING:
            return  # the sweeper got there first
        locked.status = status
        locked.error = error[-5000:]
        locked.finished_at = timezone.now()
        locked.final_metrics = metrics or {}
        locked.save(
            update_fields=[
                "status",
                "error",
                "finished_at",
                "final_metrics",
                "updated_at",
            ]
        )
        pipeline_job_finished(job=locked)


def runtime_config(job: TrainingJob) -> dict[str, Any]:
    config = dict(job.config)
    config["base_model"] = base_model_local_path(job.base_model)
    if settings.ARBITER_TORCH_THREADS and not config.get("torch_threads"):
        config["torch_threads"] = settings.ARBITER_TORCH_THREADS
    if job.reward_adapter is not None:
        config["reward_adapter"] = str(adapter_path(job.reward_adapter))
        config["reward_base"] = base_model_local_path(job.reward_adapter.base_model)
    return config


def _needs_conversion(base: BaseModelVersion) -> bool:
    """Whether the built-in base is still to be converted from its GGUF (the
    folder ``base_model_local_path`` fills on first use lacks its marker)."""
    if base.source != BUILTIN_SMOLLM2:
        return False
    from ml import smollm2

    folder = Path(settings.DATA_DIR) / "models" / smollm2.FOLDER_NAME
    return not (folder / smollm2.MARKER).is_file()


@dataclass
class ChildOutcome:
    """How a runner child ended, as its parent saw it."""

    returncode: int
    result: RunResult | None = None
    error: str = ""
    rss: int | None = None
    peak_rss: int | None = None
    watchdog_limit: int | None = None
    oom_kills_before: int | None = None
    oom_kills_after: int | None = None
    stderr_tail: str = ""
    cancel_sent: bool = False

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None


def _read_lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _convert_in_child() -> None:
    """Convert the built-in base in a child process: the conversion loads
    torch and the whole model, which the worker should not keep."""
    models_dir = str(Path(settings.DATA_DIR) / "models")
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-c",
            "import sys; from ml.smollm2 import ensure_smollm2; "
            "ensure_smollm2(sys.argv[1])",
            models_dir,
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"converting the built-in base model failed: {done.stderr[-2000:]}"
        )


#: accelerate config files of the sharded strategies (ml/launch_configs).
LAUNCH_CONFIGS = Path(__file__).resolve().parents[2] / "ml" / "launch_configs"


def runner_command(
    *,
    method: str,
    config_path: Path,
    data_dir: Path,
    workdir: Path,
    processes: int = 1,
    strategy: str = "ddp",
    gpu: bool = False,
) -> list[str]:
    """The command line that runs one job.

    One process: ``python -m ml.runners``. Several: the same module under
    ``torchrun`` (``python -m torch.distributed.run --standalone``), which
    forms the process group accelerate then finds (gloo on CPU, NCCL on
    GPUs); on GPUs a sharded strategy (zero2, zero3, fsdp) goes through
    ``accelerate launch`` with its config file from ``ml/launch_configs``
    (``accelerate launch --cpu`` would start one process, not several).
    Either launcher runs under ``ml.runners.launch``, which dies with this
    process; every rank polls ``workdir/STOP`` and writes its stderr to
    ``workdir/ranks/rank-N.log``."""
    runner = [
        "ml.runners",
        method,
        "--config",
        str(config_path),
        "--data",
        str(data_dir),
        "--out",
        str(workdir / "adapter"),
    ]
    if processes <= 1:
        return [sys.executable, "-m", *runner, "--parent-pid", str(os.getpid())]
    runner += [
        "--stop-file",
        str(workdir / STOP_FILE),
        "--rank-log-dir",
        str(workdir / RANK_LOG_DIR),
    ]
    if gpu and strategy != "ddp":
        launcher = [
            "accelerate.commands.launch",
            "--config_file",
            str(LAUNCH_CONFIGS / f"{strategy}.yaml"),
            "--num_processes",
            str(processes),
            "--main_process_port",
            str(_free_port()),
            "--module",
        ]
    else:
        launcher = [
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "--monitor-interval",
            "0.5",
            "-m",
        ]
    return [
        sys.executable,
        "-m",
        "ml.runners.launch",
        "--parent-pid",
        str(os.getpid()),
        *launcher,
        *runner,
    ]


def _free_port() -> int:
    """A TCP port free on this machine now, for the ranks' rendezvous
    (accelerate's static rendezvous needs one; torchrun's --standalone picks
    its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WarmRunner:
    """One ``python -m ml.runners --warm`` started ahead of its job.

    Starting a runner costs seconds before its first step (a new
    interpreter importing torch, transformers, peft and trl: about 6 s of
    a 10 s tiny DPO job on this 2-core machine). The spare pays that while
    nothing waits on it: ``take()`` hands a job the spare when it is alive
    and started with the same interpreter, working directory and
    environment, and ``training_job_execute`` starts the next spare
    (``prepare()``) once the job is over: its runner exited and its adapter
    registered. A spare is a child of this process and dies with it
    (``--parent-pid``). Single-process jobs only: a launcher of several
    ranks starts its own processes."""

    def __init__(self) -> None:
        self._spare: subprocess.Popen[str] | None = None
        self._key: tuple[Any, ...] = ()

    # Variables read as torch, transformers or Python start (threads,
    # devices, caches, paths): a spare started before one changed is
    # discarded. Every other variable is sent with the job and set by the
    # spare before it runs (libraries and our own code set some at run time
    # in this process: HF_HUB_OFFLINE, TORCHINDUCTOR_CACHE_DIR, ...).
    IMPORT_TIME_ENV = ("CUDA_", "OMP_", "MKL_", "PYTORCH_", "PYTHON", "LD_", "HF_HOME")

    @classmethod
    def _launch_key(cls) -> tuple[Any, ...]:
        env = {k: v for k, v in os.environ.items() if k.startswith(cls.IMPORT_TIME_ENV)}
        return (sys.executable, str(settings.BASE_DIR), tuple(sorted(env.items())))

    def take(self) -> subprocess.Popen[str] | None:
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        key = self._launch_key()
        if spare.poll() is None and self._key == key:
            return spare
        changed = sorted(
            {k for k, _ in set(self._key[2]) ^ set(key[2])} if self._key else set()
        )
        logger.info(
            "training.runner.spare_discarded exited=%s changed=%s",
            spare.poll(),
            ",".join(changed) or "-",
        )
        self._discard(spare)
        return None

    def prepare(self) -> None:
        """Start a spare unless one is waiting."""
        if self._spare is not None and self._spare.poll() is None:
            return
        self._key = self._launch_key()
        self._spare = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "ml.runners",
                "--warm",
                "--parent-pid",
                str(os.getpid()),
            ],
            cwd=settings.BASE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
        )

    def close(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            self._discard(spare)

    @staticmethod
    def _discard(spare: subprocess.Popen[str]) -> None:
        with contextlib.suppress(OSError):
            spare.kill()
        spare.wait()
        for stream in (spare.stdin, spare.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


#: This worker process's spare runner (``ARBITER_WARM_RUNNER``).
WARM_RUNNER = WarmRunner()


def _start_runner(
    command: list[str], *, job_id: int, log: TextIO, multi: bool
) -> subprocess.Popen[str]:
    """The job's runner: the warm spare when there is one (given the job's
    arguments and log), else a new process."""
    warm = settings.ARBITER_WARM_RUNNER and not multi
    proc = WARM_RUNNER.take() if warm else None
    if proc is not None:
        assert proc.stdin is not None
        # command is [python, -m, ml.runners, *argv]
        job = {
            "argv": command[3:],
            "stderr": log.name,
            "env": dict(os.environ),
        }
        try:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.close()
        except OSError:  # it died just now: start cold
            WARM_RUNNER._discard(proc)
            proc = None
    started_warm = proc is not None
    if proc is None:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            encoding="utf-8",
            start_new_session=multi,
        )
    logger.info(
        "training.runner.started job=%s pid=%s warm=%s", job_id, proc.pid, started_warm
    )
    return proc


def run_in_child(
    *,
    job_id: int,
    method: str,
    config: dict[str, Any],
    data_dir: Path,
    workdir: Path,
    reporter: JobReporter,
    processes: int = 1,
    strategy: str = "ddp",
    gpu: bool = False,
) -> ChildOutcome:
    """Run ``python -m ml.runners`` for one job and relay its events.

    The child's stdout carries JSON event lines only; its stderr (logs) goes
    to ``workdir/runner.log``. Returns when the child has exited.

    With several ``processes`` the child is a launcher in its own process
    group (``runner_command``): only rank 0 writes events; a cancel writes
    the stop file every rank polls (they agree on the step to stop after);
    a kill ends the whole group; memory is the sum over the launcher and
    its ranks; and a rank that died fails the job with its own stderr's
    tail (``_rank_failure``)."""
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    watchdog = settings.ARBITER_WORKER_MEMORY_BYTES or None
    outcome = ChildOutcome(returncode=0, watchdog_limit=watchdog)
    outcome.oom_kills_before = memory.cgroup_oom_kills()
    log_path = workdir / "runner.log"
    multi = processes > 1
    with log_path.open("w", encoding="utf-8") as log:
        proc = _start_runner(
            runner_command(
                method=method,
                config_path=config_path,
                data_dir=data_dir,
                workdir=workdir,
                processes=processes,
                strategy=strategy,
                gpu=gpu,
            ),
            job_id=job_id,
            log=log,
            multi=multi,
        )
        TrainingJob.objects.filter(pk=job_id).update(runner_pid=proc.pid)
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(
            target=_read_lines,
            args=(proc.stdout, lines),
            name=f"runner-{job_id}-stdout",
            daemon=True,
        ).start()
        stop_file = workdir / STOP_FILE if multi else None
        try:
            peak = _watch(proc, lines, job_id, reporter, outcome, watchdog, stop_file)
        except BaseException:
            # The run must not outlive a parent that gives up on it.
            _kill(proc, group=multi)
            proc.wait()
            raise
        outcome.returncode, kernel_peak, cpu = _reap(proc)
        logger.info(
            "training.runner.exited job=%s pid=%s returncode=%s cpu_s=%s",
            job_id,
            proc.pid,
            outcome.returncode,
            f"{cpu:.2f}" if cpu is not None else "?",
        )
        proc.stdout.close()
        if multi:
            _kill(proc, group=True)  # a rank the launcher left behind
    outcome.peak_rss = max(peak, kernel_peak) or None
    outcome.oom_kills_after = memory.cgroup_oom_kills()
    if outcome.peak_rss:
        reporter.on_memory(rss=outcome.rss or 0, peak=outcome.peak_rss)
    try:
        tail = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        tail = ""
    outcome.stderr_tail = "\n".join(tail.strip().splitlines()[-8:])
    if multi:
        _ranks_outcome(outcome, log=tail, workdir=workdir, processes=processes)
    return outcome


#: The file a multi-process run's ranks poll for a stop, in the job's folder.
STOP_FILE = "STOP"
#: Where each rank writes its stderr (rank-N.log), in the job's folder.
RANK_LOG_DIR = "ranks"
#: How torchrun reports each failed rank in its summary.
_RANK_FAILURE = re.compile(
    r"rank\s*:\s*(?P<rank>\d+)\s*\(local_rank:\s*\d+\)\s*"
    r"exitcode\s*:\s*(?P<code>-?\d+)"
)


def _kill(proc: subprocess.Popen[str], *, group: bool) -> None:
    """SIGKILL the child, and with ``group`` its whole process group (the
    launcher and every rank: it was started in a session of its own)."""
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()


def _tree_rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` and its descendants (a launcher and its
    ranks); None once ``pid`` is gone."""
    total = memory.process_rss(pid)
    if total is None:
        return None
    for child in _children(pid):
        total += _tree_rss(child) or 0
    return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(part) for part in text.split()]


def _rank_failure(log: str) -> tuple[int, int] | None:
    """(rank, exit code) of the rank that failed first, from the launcher's
    summary. A rank killed by a signal other than the launcher's SIGTERM is
    the cause (the others fail because it went); else the first rank that
    exited with an error; None when no rank failed."""
    failures = [(int(m["rank"]), int(m["code"])) for m in _RANK_FAILURE.finditer(log)]
    for rank, code in failures:
        if code < 0 and -code != signal.SIGTERM:
            return rank, code
    for rank, code in failures:
        if code not in (0, 3, -signal.SIGTERM):
            return rank, code
    return None


def _ranks_outcome(
    outcome: ChildOutcome, *, log: str, workdir: Path, processes: int
) -> None:
    """Read a multi-process run's end: a stop that every rank agreed on is
    a cancel (the launcher reports the ranks' exit code 3 as a failure); a
    rank that died names itself, how, and the tail of its stderr."""
    if outcome.result is not None and outcome.result.cancelled:
        outcome.returncode = 3
        return
    if outcome.returncode == 0 or outcome.signal is not None:
        return
    failed = _rank_failure(log)
    if failed is None:
        return
    rank, code = failed
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        how = f"was killed by signal {-code} ({name})"
    else:
        how = f"exited with code {code}"
    try:
        rank_log = (workdir / RANK_LOG_DIR / f"rank-{rank}.log").read_text(
            encoding="utf-8", errors="replace"
        )
    except OSError:
        rank_log = ""
    tail = "\n".join(rank_log.strip().splitlines()[-8:]) or "(no output)"
    outcome.error = (
        f"Rank {rank} of {processes} training processes {how}; the others were "
        f"stopped. The tail of its stderr:\n{tail}"
    )


def _reap(proc: subprocess.Popen[str]) -> tuple[int, int, float | None]:
    """(exit code, the kernel's peak RSS in bytes or 0, CPU seconds or None)
    of an ended child. ``wait4`` reports the peak (ru_maxrss, KiB) and the
    CPU time unless Popen already reaped the child (``kill``/``send_signal``
    poll first)."""
    if proc.returncode is None:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except ChildProcessError:
            return proc.wait(), 0, None
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        return proc.returncode, usage.ru_maxrss * 1024, cpu
    return proc.returncode, 0, None


def _watch(
    proc: subprocess.Popen[str],
    lines: queue.Queue[str | None],
    job_id: int,
    reporter: JobReporter,
    outcome: ChildOutcome,
    watchdog: int | None,
    stop_file: Path | None = None,
) -> int:
    """Relay events, sample memory, pass on a cancel and enforce the limit
    until the child closes its stdout. Returns the peak RSS sampled. With
    ``stop_file`` (a multi-process run) a cancel writes that file and a kill
    ends the child's whole process group."""
    group = stop_file is not None
    next_sample = time.monotonic() + FIRST_RSS_SAMPLE_SECONDS
    stop_sent_at: float | None = None
    peak = 0
    while True:
        try:
            line = lines.get(timeout=0.25)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line.strip():
            _relay(line, reporter, outcome)
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + RSS_SAMPLE_SECONDS
            rss = _tree_rss(proc.pid) if group else memory.process_rss(proc.pid)
            if rss is not None:
                peak = max(peak, rss)
                outcome.rss, outcome.peak_rss = rss, peak
                reporter.on_memory(rss=rss, peak=peak)
                if watchdog and rss > watchdog:
                    logger.warning(
                        "training.job.memory_limit job=%s rss=%s limit=%s",
                        job_id,
                        rss,
                        watchdog,
                    )
                    _kill(proc, group=group)
        if stop_sent_at is None and reporter.should_stop():
            stop_sent_at = now
            outcome.cancel_sent = True
            if stop_file is not None:
                stop_file.touch()
            else:
                proc.send_signal(signal.SIGTERM)
        elif stop_sent_at and now - stop_sent_at > STOP_GRACE_SECONDS:
            _kill(proc, group=group)
    return peak


def _relay(line: str, reporter: JobReporter, outcome: ChildOutcome) -> None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        logger.warning("training.job.bad_event line=%r", line[:200])
        return
    kind = event.pop("event", "")
    if kind == "result":
        event["output_dir"] = Path(event["output_dir"])
        outcome.result = RunResult(**event)
    elif kind == "error":
        outcome.error = str(event.get("message", ""))
    elif kind in ("status", "progress", "metrics"):
        reporter.on_event(kind, event)


def killed_message(outcome: ChildOutcome, *, config: dict[str, Any]) -> str:
    """Why a child that died by a signal died, in words, with its memory
    and what to relaunch with."""
    number = outcome.signal or 0
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown"
    last = (
        memory.format_bytes(outcome.rss) if outcome.rss is not None else "not measured"
    )
    peak = memory.format_bytes(outcome.peak_rss) if outcome.peak_rss else "unknown"
    text = (
        f"The training process was killed by signal {number} ({name}); its last "
        f"measured memory was {last} (peak {peak})."
    )
    evidence = oom_evidence(outcome)
    if evidence:
        text = f"Out of memory: {evidence}. " + text
        smaller = memory.suggest_smaller_batch(
            int(config.get("per_device_train_batch_size", 1)),
            int(config.get("gradient_accumulation_steps", 1)),
        )
        if smaller:
            text += (
                f" Relaunch with a micro-batch of {smaller[0]} and gradient "
                f"accumulation {smaller[1]}, or a lower max_length."
            )
        else:
            text += " Relaunch with a lower max_length."
    return text + " No adapter was registered."


def oom_evidence(outcome: ChildOutcome) -> str:
    """What says the child ran out of memory; empty when nothing does."""
    if outcome.signal != signal.SIGKILL:
        return ""
    peak = outcome.peak_rss or 0
    if outcome.watchdog_limit and (outcome.rss or 0) > outcome.watchdog_limit:
        return (
            f"it used {memory.format_bytes(outcome.rss or 0)}, over the worker's "
            f"limit of {memory.format_bytes(outcome.watchdog_limit)} "
            "(ARBITER_WORKER_MEMORY_BYTES), and the worker stopped it"
        )
    before, after = outcome.oom_kills_before, outcome.oom_kills_after
    if before is not None and after is not None and after > before:
        return f"the kernel's OOM killer ran in this worker's cgroup (oom_kill {before} → {after})"
    total = memory.total_memory()
    if peak >= OOM_NEAR_LIMIT * total:
        return (
            f"its memory reached {memory.format_bytes(peak)} of the machine's "
            f"{memory.format_bytes(total)}"
        )
    return ""


def _unfit_here(job_id: int) -> str:
    """Why this worker cannot run the job of several processes ``job_id``
    ('' when it can, or when the job is not QUEUED). Placement at launch
    only knows that some live worker on the gpu-multi queue fits the job;
    any worker on that queue may take its message."""
    wanted = (
        TrainingJob.objects.filter(pk=job_id, status=TrainingJob.Status.QUEUED)
        .values("processes", "strategy")
        .first()
    )
    if wanted is None or wanted["processes"] <= 1:
        return ""
    have = capabilities_probe()
    if wanted["processes"] > have.process_slots:
        return f"{wanted['processes']} processes, this worker has {have.process_slots}"
    if wanted["strategy"] not in have.strategies:
        return f"strategy {wanted['strategy']}, this worker has {have.strategies}"
    return ""


def training_job_execute(*, job_id: int) -> None:
    unfit = _unfit_here(job_id)
    if unfit:
        # Left QUEUED and unclaimed: the redispatch (training.sweep_stale_jobs)
        # sends it again, for a worker that has what it asks for.
        logger.warning("training.job.unfit job=%s wants %s", job_id, unfit)
        return
    job = _claim(job_id)
    if job is None:
        return
    try:
        _run(job)
    finally:
        if settings.ARBITER_WARM_RUNNER and job.processes <= 1:
            # The next job's runner imports now: not while this one trained
            # (on a machine of few cores the imports would slow its steps),
            # nor before its adapter was registered (they would delay it).
            # A job of several processes had a launcher start its own.
            WARM_RUNNER.prepare()


def _run(job: TrainingJob) -> None:
    """A claimed job, from its runner to its adapter (or its failure)."""
    storage = Path(settings.STORAGE_ROOT)
    workdir = storage / "tmp" / f"job-{job.pk}-{uuid.uuid4().hex}"
    workdir.mkdir(parents=True, exist_ok=True)
    reporter = JobReporter(job.pk)
    try:
        bases = [job.base_model]
        if job.reward_adapter is not None:
            bases.append(job.reward_adapter.base_model)
        if any(_needs_conversion(base) for base in bases):
            reporter.on_event("status", {"phase": TrainingJob.Phase.CONVERTING})
            _convert_in_child()
        config = runtime_config(job)
        # Loading starts here, not at the runner's first event: importing the
        # training stack alone takes seconds.
        reporter.on_event("status", {"phase": TrainingJob.Phase.LOADING})
        outcome = run_in_child(
            job_id=job.pk,
            method=job.method,
            config=config,
            data_dir=snapshot_data_dir(job.snapshot, job.method),
            workdir=workdir,
            reporter=reporter,
            processes=job.processes,
            strategy=job.strategy,
            gpu=job.processes > 1 and gpu_count() > 0,
        )
    except Exception as exc:  # noqa: BLE001 - process edge: record, clean up, never crash the worker
        logger.exception("training.job.failed job=%s", job.pk)
        reporter.close()
        shutil.rmtree(workdir, ignore_errors=True)
        _finish(job, TrainingJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return
    reporter.close()
    close_old_connections()
    result = outcome.result
    if result is None and outcome.cancel_sent:
        # Cancelled, and killed after STOP_GRACE_SECONDS without stopping.
        shutil.rmtree(workdir, ignore_errors=True)
        _finish(job, TrainingJob.Status.CANCELLED)
        return
    if result is None or outcome.returncode not in (0, 3):
        shutil.rmtree(workdir, ignore_errors=True)
        if outcome.signal is not None:
            error = killed_message(outcome, config=job.config)
        else:
            error = outcome.error or (
                f"The training process exited with code {outcome.returncode}: "
                f"{outcome.stderr_tail}"
            )
        logger.warning(
            "training.job.failed job=%s returncode=%s peak_rss=%s",
            job.pk,
            outcome.returncode,
            outcome.peak_rss,
        )
        _finish(job, TrainingJob.Status.FAILED, error=error)
        return
    if result.cancelled:
        shutil.rmtree(workdir, ignore_errors=True)
        _finish(job, TrainingJob.Status.CANCELLED, metrics=result.metrics)
        logger.info("training.job.cancelled job=%s", job.pk)
        return
    _register(job, workdir / "adapter", result)
    shutil.rmtree(workdir, ignore_errors=True)


def _register(job: TrainingJob, tmp: Path, result: Any) -> None:
    store = artifact_store()
    relative = (
        Path("adapters")
        / f"campaign-{job.campaign_id}"
        / f"job-{job.pk}-{result.method}"
    )
    final: Path | None = None
    try:
        # Object storage: uploaded before the row exists (a failure after it
        # leaves an unreferenced object, never a row without files).
        key = store.stage(tmp, name=str(relative))
        with transaction.atomic():
            locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
            if locked.status != TrainingJob.Status.RUNNING:
                raise RuntimeError(
                    f"job is {locked.status}; not registering its adapter"
                )
            adapter = adapter_register(
                campaign=job.campaign,
                base_model=job.base_model,
                method=job.method,
                peft_type=result.peft_type,
                storage_path=key,
                metrics=result.metrics,
                parent=job.parent_adapter,
            )
            final = store.commit(tmp, key)
            locked.status = TrainingJob.Status.SUCCEEDED
            locked.phase = TrainingJob.Phase.DONE
            locked.adapter = adapter
            locked.finished_at = timezone.now()
            locked.final_metrics = result.metrics
            locked.progress_step = max(locked.progress_step, result.steps)
            locked.progress_total = max(locked.progress_total, result.steps)
            locked.eta_seconds = 0
            locked.save(
                update_fields=[
                    "status",
                    "phase",
                    "adapter",
                    "finished_at",
                    "final_metrics",
                    "progress_step",
                    "progress_total",
                    "eta_seconds",
                    "updated_at",
                ]
            )
            pipeline_job_finished(job=locked)
            generation_round_enqueue(adapter=adapter)
    except Exception as exc:  # noqa: BLE001 - process edge: nothing half-registered survives
        logger.exception("training.job.register_failed job=%s", job.pk)
        shutil.rmtree(final if final is not None else tmp, ignore_errors=True)
        _finish(
            job,
            TrainingJob.Status.FAILED,
            error=f"registering the adapter failed: {exc}",
        )
        return
    logger.info("training.job.succeeded job=%s adapter=%s", job.pk, adapter.pk)
    if adapter_test_metrics_due(adapter=adapter):
        # Held-out figures from the start (the runner's eval_* are on the
        # validation split, which early stopping selected on). A failure
        # leaves the adapter registered (a reward model's figures are
        # retried by the drift evaluation).
        try:
            adapter_test_metrics_update(adapter=adapter)
        except Exception:  # noqa: BLE001 - the adapter is registered either way
            logger.exception("training.job.test_metrics_failed adapter=%s", adapter.pk)
