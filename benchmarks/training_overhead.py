"""Overhead of training through Arbiter versus a bare TRL script.

Usage::

    .venv/bin/python benchmarks/training_overhead.py [--base tiny|smollm2] [--steps N] [--repeat 3]
        [--threads 1] [--runner-alone] [--pairs 64]

The same DPO run (same preference rows, hyperparameters, LoRA config, CPU
flags and ``max_steps``) is timed two ways:

(a) bare: plain ``trl.DPOTrainer`` + ``peft.LoraConfig`` + ``datasets``,
    written below in ``bare_dpo`` with no Arbiter import, in a long-lived
    subprocess (one untimed cold run first, so that torch/TRL imports and
    first-use costs are excluded, as they are for (b));
(b) product: ``POST /api/v1/training/jobs/`` (token auth) until the job row
    is SUCCEEDED with its adapter registered, executed by ONE real Celery
    worker on the ``gpu`` queue (warmed up by an untimed first job; its cold
    time is reported separately).

With ``--runner-alone`` a third column (c) calls ``ml.runners.run``
directly with no-op events (no Django, Celery or database), which splits the
overhead of (b) into "runner" (c - a) and "job plumbing" (b - c).

Repeats alternate (a) and (b) so background load hits both alike. Both sides
run with ``--threads`` torch threads (default 1; see its help). CPU seconds
are reported next to wall times: (a) the bare process, (b) the worker and its
child plus the PostgreSQL and Redis processes plus the API call. For (b) it
also counts WAL fsyncs (``pg_stat_io``) and measures what one fsynced
one-row UPDATE costs, i.e. how long each job waits on commits. The
benchmark runs its own embedded PostgreSQL and Redis under
``.data/bench-training`` and stops everything it started at the end.

Checks printed with the results: every job snapshot's ``preference/train.jsonl``
and ``val.jsonl`` are byte-identical to the files the bare script reads, both
sides ran exactly ``--steps`` optimizer steps, and the hyperparameters the
runner recorded in ``arbiter_run.json`` equal the bare script's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, sys.path[0] is benchmarks/: keep only the project root,
# so no sibling script can shadow a module of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data" / "bench-training"
RESULT_PREFIX = "BENCH-RESULT "
SUBJECTS = [
    "cat",
    "river",
    "garden",
    "teacher",
    "robot",
    "city",
    "storm",
    "friend",
    "song",
    "train",
]
# LoRA targets the runner picks for Llama-like bases (ml/adapters.py LLAMA_LORA; a copy, so the bare-TRL side imports nothing of ours).
LLAMA_LORA = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]


# --------------------------------------------------------------------------
# (a) The bare TRL script. No Arbiter imports below this line until (b).
# --------------------------------------------------------------------------


def bare_hparams(steps: int, threads: int | None) -> dict[str, Any]:
    """The DPO defaults of ``DPORunConfig`` (LoRA), spelled out, plus max_steps
    and the torch thread count (None: torch's default)."""
    return {
        "torch_threads": threads,
        "seed": 0,
        "learning_rate": 5e-4,
        "num_train_epochs": 3.0,
        "max_steps": steps,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "logging_steps": 5,
        "max_length": 512,
        "beta": 0.1,
        "loss_type": "sigmoid",
        "label_smoothing": 0.0,
        "bf16": False,
        "gradient_checkpointing": False,
        "lora": {
            "r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "target_modules": LLAMA_LORA,
        },
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def bare_dpo(
    model_path: str, data_dir: Path, out_dir: Path, steps: int, threads: int | None
) -> dict[str, Any]:
    """Train and save a DPO LoRA adapter with TRL alone; returns timings."""
    import datasets
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    hp = bare_hparams(steps, threads)
    start = time.perf_counter()
    cpu_start = time.process_time()
    if threads is not None:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    set_seed(hp["seed"])
    train_rows = _read_jsonl(data_dir / "train.jsonl")
    val_rows = _read_jsonl(data_dir / "val.jsonl")
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(task_type="CAUSAL_LM", **hp["lora"])
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bare-dpo-") as scratch:
        args = DPOConfig(
            output_dir=scratch,
            seed=hp["seed"],
            data_seed=hp["seed"],
            learning_rate=hp["learning_rate"],
            num_train_epochs=hp["num_train_epochs"],
            max_steps=steps,
            per_device_train_batch_size=hp["per_device_train_batch_size"],
            per_device_eval_batch_size=hp["per_device_eval_batch_size"],
            gradient_accumulation_steps=hp["gradient_accumulation_steps"],
            logging_steps=hp["logging_steps"],
            logging_first_step=True,
            eval_strategy="epoch" if val_rows else "no",
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
            max_length=hp["max_length"],
            beta=hp["beta"],
            loss_type=[hp["loss_type"]],
            label_smoothing=hp["label_smoothing"],
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            processing_class=tok,
            peft_config=lora,
        )
        built = time.perf_counter()
        trainer.train()
        trained = time.perf_counter()
        if val_rows:
            trainer.evaluate()
        evaluated = time.perf_counter()
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(out_dir))
        tok.save_pretrained(str(out_dir))
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "cpu": time.process_time() - cpu_start,
        "steps": int(trainer.state.global_step),
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "threads": torch.get_num_threads(),
        "phases": {
            "load": loaded - start,
            "build_trainer": built - loaded,
            "train": trained - built,
            "evaluate": evaluated - trained,
            "save": end - evaluated,
        },
    }


def runner_alone(
    model_path: str, data_dir: Path, out_dir: Path, steps: int, threads: int | None
) -> dict[str, Any]:
    """(c) Arbiter's runner called directly, with no-op events: no Django,
    Celery or database. Separates the runner's own cost from the job plumbing."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from ml import runners

    config: dict[str, Any] = {
        "base_model": model_path,
        "max_steps": steps,
        "early_stopping_patience": 0,
        "torch_threads": threads,
    }
    start = time.perf_counter()
    cpu_start = time.process_time()
    result = runners.run("dpo", config, data_dir=data_dir, output_dir=out_dir)
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu_start,
        "steps": result.steps,
    }


def serve(mode: str) -> None:
    """Run one training per JSON request on stdin; answer on stdout."""
    fn = bare_dpo if mode == "bare" else runner_alone
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        result = fn(
            req["model"],
            Path(req["data"]),
            Path(req["out"]),
            int(req["steps"]),
            req["threads"],
        )
        sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
        sys.stdout.flush()


class BareProcess:
    """A long-lived training subprocess (so its imports happen once):
    ``mode`` "bare" runs bare_dpo, "runner" runs runner_alone."""

    def __init__(self, env: dict[str, str], log_path: Path, mode: str = "bare") -> None:
        self.log = log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=ROOT,
            text=True,
            start_new_session=True,
        )

    def run(
        self, model: str, data: Path, out: Path, steps: int, threads: int | None
    ) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        shutil.rmtree(out, ignore_errors=True)
        req = {
            "model": model,
            "data": str(data),
            "out": str(out),
            "steps": steps,
            "threads": threads,
        }
        start = time.perf_counter()
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                result["wall"] = time.perf_counter() - start
                return result
            self.log.write(line)
        raise RuntimeError(f"the bare TRL process exited; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------
# (b) Through the product.
# --------------------------------------------------------------------------


def _setup_environment() -> None:
    # Our own servers, never an inherited DATABASE_URL / broker.
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(key, None)
    os.environ["ARBITER_DATA_DIR"] = str(DATA_DIR)
    os.environ["DJANGO_DEBUG"] = "true"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _import_lines(pairs: int) -> list[str]:
    lines = []
    for i in range(pairs):
        subject = SUBJECTS[i % len(SUBJECTS)]
        lines.append(
            json.dumps(
                {
                    "prompt": f"tell me about the {subject} number {i} .",
                    "completions": [
                        f"the {subject} answers kindly .",
                        f"the {subject} answers rudely .",
                    ],
                }
            )
        )
    return lines


def _build_campaign(pairs: int, admin: Any) -> Any:
    """Import pairs, then label them like annotators who prefer 'kindly'."""
    from core.roles import ANNOTATOR
    from core.services import user_create
    from labeling.exceptions import NothingToLabel
    from labeling.services.campaigns import campaign_create
    from labeling.services.imports import campaign_import_jsonl
    from labeling.services.queue import comparison_lease_next, preference_record
    from models_hub.services.registry import generation_settings_for

    stamp = time.strftime("%Y%m%d-%H%M%S")
    campaign = campaign_create(
        name=f"bench-training {stamp}", created_by=admin, overlap_k=1
    )
    campaign_import_jsonl(campaign=campaign, lines=_import_lines(pairs))
    # The follow-up generation round would occupy the single gpu worker
    # between timed jobs; it is not part of training, so it is switched off.
    gen = generation_settings_for(campaign)
    gen.enabled = False
    gen.save(update_fields=["enabled", "updated_at"])
    annotators = [
        user_create(
            username=f"bench-annotator-{stamp}-{k}",
            password="bench-password-not-secret",
            role=ANNOTATOR,
        )
        for k in range(2)
    ]
    done = 0
    while True:
        user = annotators[done % 2]
        try:
            lease = comparison_lease_next(campaign=campaign, annotator=user)
        except NothingToLabel:
            break
        comparison = lease.comparison
        kind_is_a = comparison.completion_a.text.endswith("kindly .")
        kind_on_left = kind_is_a == lease.a_on_left
        preference_record(
            lease_id=lease.pk,
            annotator=user,
            choice="left" if kind_on_left else "right",
        )
        done += 1
    return campaign


def _parse_log_time(line: str) -> float | None:
    try:
        # The worker logs local time with milliseconds: "2025-01-01 12:00:00,123".
        return (
            time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            + int(line[20:23]) / 1000
        )
    except (ValueError, OverflowError):
        return None


def _proc_cpu(pid: int) -> tuple[float, int] | None:
    """(utime+stime+cutime+cstime in ticks, ppid) of a live process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return float(sum(int(f) for f in fields[11:15])), int(fields[1])


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds used so far by ``roots`` and all their descendants (exited
    children count through their parent's cutime/cstime once reaped)."""
    table: dict[int, tuple[float, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_cpu(int(entry))
            if info is not None:
                table[int(entry)] = info
    children: dict[int, list[int]] = {}
    for pid, (_, ppid) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        total += table[pid][0]
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def wait_job_end(job_id: int, worker_log: Path, offset: int, final: set[str]) -> None:
    """Until job ``job_id`` has ended: its line in the worker's log (read
    from ``offset`` every 10 ms), or its row, read once a second for an end
    the worker does not log. Reading the row every 10 ms cost a query per
    poll on the two cores the job's runner uses (the figures did not move
    when it stopped, but nothing measured should compete with the job); a
    file read costs next to nothing, and the lag between the job's end and
    this observation (poll_seen) stays ~0.01 s."""
    from training.models import TrainingJob

    ended = re.compile(rf"training\.job\.(succeeded|failed|cancelled) job={job_id}\b")
    next_row_check = time.monotonic() + 1.0
    tail = ""
    with worker_log.open("r", encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        while True:
            chunk = log.read()
            if chunk:
                window = tail + chunk
                if ended.search(window):
                    return
                tail = window[-512:]  # a line cut by this read
            if time.monotonic() >= next_row_check:
                next_row_check += 1.0
                status = (
                    TrainingJob.objects.filter(pk=job_id)
                    .values_list("status", flat=True)
                    .get()
                )
                if status in final:
                    return
            time.sleep(0.01)


def _worker_log_marks(log_path: Path, job_id: int) -> dict[str, float]:
    """Timestamps of the runner's start/finish and of registration, from the worker log."""
    marks: dict[str, float] = {}
    in_job = False
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        ts = _parse_log_time(line)
        if ts is None:
            continue
        if (
            "Starting dpo run" in line and f"/job-{job_id}-" in line
        ) or f"training.runner.started job={job_id} " in line:
            # The runner's own log goes to the job's folder; the worker logs
            # when it hands the job to a runner.
            marks["runner_start"] = ts
            in_job = True
        elif in_job and "run finished in" in line:
            marks["runner_end"] = ts
        elif f"training.job.succeeded job={job_id} " in line:
            marks["registered"] = ts
            in_job = False
    return marks


def wal_fsyncs() -> int:
    """WAL fsyncs so far, all backends (the embedded server serves only us)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'"
        )
        return int(cursor.fetchone()[0])


def _cpu_busy(seconds: float = 0.5) -> float:
    """The machine's CPU busy share (0-1) over ``seconds``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [
            int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]
        ]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


SETTLE_WAITS: list[float] = []


def settle(*, below: float = 0.25, at_most: float = 30.0) -> None:
    """Before a timed run: wait until the machine is quiet (the gpu worker
    starts its next runner's imports as a job ends, and on 2 cores those
    would slow whichever run comes next). The waits are reported."""
    start = time.perf_counter()
    while time.perf_counter() - start < at_most and _cpu_busy() > below:
        pass
    SETTLE_WAITS.append(time.perf_counter() - start)


def commit_latency_ms(campaign_id: int, n: int = 40) -> float:
    """Median time of a one-row UPDATE in autocommit (one fsynced commit),
    like each of the job reporter's progress writes."""
    from django.utils import timezone

    from labeling.models import Campaign

    times = []
    for _ in range(n):
        start = time.perf_counter()
        Campaign.objects.filter(pk=campaign_id).update(updated_at=timezone.now())
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _service_pids(services: Any) -> list[int]:
    """The embedded postmaster (its backends are its children) and Redis."""
    pids = []
    pidfile = services.data_dir / "pg" / "postmaster.pid"
    if pidfile.exists():
        pids.append(int(pidfile.read_text().split()[0]))
    redis = getattr(services, "_redis_process", None)
    if redis is not None:
        pids.append(redis.pid)
    return pids


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("a", encoding="utf-8")
        celery = str(Path(sys.executable).parent / "celery")
        self.name = f"bench-gpu-{os.getpid()}@%h"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                "gpu",
                "-n",
                self.name,
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120) -> float:
        from config.celery import app

        prefix = self.name.split("@")[0] + "@"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            replies = app.control.ping(timeout=0.5) or []
            if any(name.startswith(prefix) for reply in replies for name in reply):
                return time.perf_counter() - self.started
        raise RuntimeError(f"the Celery worker did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: the child exits too
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def product_job(
    client: Any,
    campaign_id: int,
    base_id: int,
    steps: int,
    threads: int | None,
    worker_log: Path,
    cpu_roots: list[int],
) -> dict[str, Any]:
    """POST a job and wait for it; ``cpu_roots`` are the worker, PostgreSQL and
    Redis processes whose CPU time (with descendants) the job is charged."""
    from training.models import TrainingJob

    # Early stopping off so both sides run exactly max_steps (the bare script has none).
    config: dict[str, Any] = {"max_steps": steps, "early_stopping_patience": 0}
    if threads is not None:
        config["torch_threads"] = threads
    fsyncs_before = wal_fsyncs()
    cpu_before = tree_cpu_seconds(cpu_roots)
    log_offset = worker_log.stat().st_size if worker_log.exists() else 0
    t_post = time.time()
    api_cpu = time.process_time()
    resp = client.post(
        "/api/v1/training/jobs/",
        {
            "campaign": campaign_id,
            "method": "dpo",
            "base_model": base_id,
            "config": config,
        },
        format="json",
    )
    t_resp = time.time()
    api_cpu = time.process_time() - api_cpu
    if resp.status_code != 201:
        raise RuntimeError(f"POST failed: {resp.status_code} {resp.content[:500]!r}")
    job_id = resp.json()["id"]
    final = {
        TrainingJob.Status.SUCCEEDED,
        TrainingJob.Status.FAILED,
        TrainingJob.Status.CANCELLED,
    }
    wait_job_end(job_id, worker_log, log_offset, final)
    t_done = time.time()
    status, adapter_id = (
        TrainingJob.objects.filter(pk=job_id).values_list("status", "adapter_id").get()
    )
    cpu = tree_cpu_seconds(cpu_roots) - cpu_before + api_cpu
    time.sleep(
        1.2
    )  # untimed: backends flush their I/O statistics at most once a second
    fsyncs = wal_fsyncs() - fsyncs_before
    job = TrainingJob.objects.select_related("adapter", "snapshot").get(pk=job_id)
    if status != TrainingJob.Status.SUCCEEDED or adapter_id is None:
        raise RuntimeError(f"job {job_id} ended {status}: {job.error}")
    assert job.started_at is not None and job.finished_at is not None
    marks = _worker_log_marks(worker_log, job_id)
    created, started, finished = (
        job.created_at.timestamp(),
        job.started_at.timestamp(),
        job.finished_at.timestamp(),
    )
    breakdown = {
        "post_response": t_resp - t_post,
        "queue_pickup": started - created,
        # Without the runner's own log lines (they go to the job's folder):
        # runner start -> registered.
        "runner": marks.get("runner_end", marks.get("registered", float("nan")))
        - marks.get("runner_start", float("nan")),
        "claim_to_runner": marks.get("runner_start", float("nan")) - started,
        "runner_to_registered": finished - marks.get("runner_end", float("nan")),
        "poll_seen": t_done - finished,
    }
    return {
        "seconds": t_done - t_post,
        "cpu": cpu,
        "wal_fsyncs": fsyncs,
        "job": job,
        "steps": job.progress_step,
        "breakdown": breakdown,
    }


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------


def _same_files(a: Path, b: Path) -> bool:
    return all(
        (a / name).read_bytes() == (b / name).read_bytes()
        if (a / name).exists()
        else not (b / name).exists()
        for name in ("train.jsonl", "val.jsonl")
    )


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:7.2f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="max_steps (default: tiny 120, smollm2 5)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on both sides (the job's torch_threads); 0 = torch's default. "
        "1 keeps timings stable on a shared machine: with 2 threads on 2 busy cores "
        "every parallel op waits for a descheduled thread and runs vary 5-40x",
    )
    parser.add_argument(
        "--pairs", type=int, default=64, help="labelled prompt pairs in the campaign"
    )
    parser.add_argument(
        "--runner-alone",
        action="store_true",
        help="also time (c): Arbiter's runner called directly (no Django/Celery/DB), "
        "to split (b)'s overhead into runner vs job plumbing",
    )
    parser.add_argument("--serve", choices=["bare", "runner"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    steps = args.steps or (120 if args.base == "tiny" else 5)
    threads = args.threads or None

    _setup_environment()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    logs = DATA_DIR / "logs"
    logs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()

    from core.embedded import ensure_services

    services = ensure_services(DATA_DIR)
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=os.environ.copy(),
        cwd=ROOT,
        check=True,
    )
    import django

    django.setup()
    import logging

    logging.getLogger().setLevel(
        logging.WARNING
    )  # this process only; the worker logs INFO

    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from core.roles import ADMIN
    from core.services import roles_ensure, user_create
    from models_hub.models import BaseModelVersion
    from models_hub.services.registry import BUILTIN_SMOLLM2
    from training.services.snapshots import dataset_snapshot_create, snapshot_data_dir

    roles_ensure()
    admin = user_create(
        username=f"bench-admin-{stamp}",
        password="bench-password-not-secret",
        role=ADMIN,
    )
    token, _ = Token.objects.get_or_create(user=admin)
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    campaign = _build_campaign(args.pairs, admin)

    models_dir = DATA_DIR / "models"
    conversion = None
    if args.base == "tiny":
        from ml.tiny import build_tiny_model

        model_path = models_dir / "tiny-llama"
        if not (model_path / "config.json").exists():
            texts = [
                f"tell me about the {s} . the {s} answers kindly . the {s} answers rudely ."
                for s in SUBJECTS
            ]
            build_tiny_model(model_path, extra_text=texts)
        base, _ = BaseModelVersion.objects.get_or_create(
            name="bench-tiny-llama", defaults={"source": str(model_path)}
        )
    else:
        from ml.smollm2 import MARKER, ensure_smollm2

        had = (models_dir / "smollm2-135m-instruct" / MARKER).exists()
        c0 = time.perf_counter()
        model_path = ensure_smollm2(models_dir)
        conversion = None if had else time.perf_counter() - c0
        base = BaseModelVersion.objects.filter(
            source=BUILTIN_SMOLLM2
        ).first() or BaseModelVersion.objects.create(
            name="SmolLM2-135M-Instruct", source=BUILTIN_SMOLLM2
        )

    # The rows both sides train on: a snapshot written by the product itself.
    reference = dataset_snapshot_create(campaign=campaign, created_by=admin)
    bare_data = DATA_DIR / "bare" / "data"
    shutil.rmtree(bare_data, ignore_errors=True)
    bare_data.mkdir(parents=True)
    for name in ("train.jsonl", "val.jsonl"):
        src = snapshot_data_dir(reference, "dpo") / name
        if src.exists():
            shutil.copyfile(src, bare_data / name)
    bare_out = DATA_DIR / "bare" / "adapter"

    child_env = os.environ.copy()
    child_env["DJANGO_CONN_MAX_AGE"] = "0"
    worker_log = logs / f"worker-{stamp}.log"
    bare = BareProcess(child_env, logs / f"bare-{stamp}.log")
    worker = Worker(child_env, worker_log)
    alone = (
        BareProcess(child_env, logs / f"runner-{stamp}.log", mode="runner")
        if args.runner_alone
        else None
    )
    alone_out = DATA_DIR / "runner-alone" / "adapter"
    rows_c: list[dict[str, Any]] = []
    setup_seconds = time.perf_counter() - t0
    try:
        worker_ready = worker.wait_ready()
        cpu_roots = [worker.proc.pid, *_service_pids(services)]
        load_before = os.getloadavg()
        commit_ms = [commit_latency_ms(campaign.pk)]

        cold_a = bare.run(str(model_path), bare_data, bare_out, steps, threads)
        cold_b = product_job(
            client, campaign.pk, base.pk, steps, threads, worker_log, cpu_roots
        )
        if alone is not None:
            alone.run(str(model_path), bare_data, alone_out, steps, threads)

        rows_a: list[dict[str, Any]] = []
        rows_b: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            settle()
            rows_a.append(
                bare.run(str(model_path), bare_data, bare_out, steps, threads)
            )
            settle()
            rows_b.append(
                product_job(
                    client, campaign.pk, base.pk, steps, threads, worker_log, cpu_roots
                )
            )
            if alone is not None:
                settle()
                rows_c.append(
                    alone.run(str(model_path), bare_data, alone_out, steps, threads)
                )
        load_after = os.getloadavg()
        commit_ms.append(commit_latency_ms(campaign.pk))
    finally:
        worker.stop()
        bare.stop()
        if alone is not None:
            alone.stop()

    # ---- checks
    jobs = [cold_b["job"], *(r["job"] for r in rows_b)]
    same_data = all(
        _same_files(bare_data, snapshot_data_dir(j.snapshot, "dpo")) for j in jobs
    )
    steps_ok = all(
        r["steps"] == steps for r in [cold_a, *rows_a, cold_b, *rows_b, *rows_c]
    )
    from models_hub.services.registry import adapter_path

    last_adapter = adapter_path(rows_b[-1]["job"].adapter)
    run_info = json.loads(
        (last_adapter / "arbiter_run.json").read_text(encoding="utf-8")
    )
    rc = run_info["config"]
    hp = bare_hparams(steps, threads)
    runner_hp = {k: rc[k] for k in hp if k in rc and k != "lora"}
    runner_hp["bf16"] = bool(rc["bf16"]) if rc["bf16"] is not None else False
    runner_hp["lora"] = {k: rc["peft"][k] for k in ("r", "lora_alpha", "lora_dropout")}
    job_lora = json.loads(
        (last_adapter / "adapter_config.json").read_text(encoding="utf-8")
    )
    bare_lora = json.loads(
        (bare_out / "adapter_config.json").read_text(encoding="utf-8")
    )
    runner_hp["lora"]["target_modules"] = sorted(job_lora["target_modules"])
    want = dict(hp)
    want["lora"] = {**hp["lora"], "target_modules": sorted(bare_lora["target_modules"])}

    def _norm(cfg: dict[str, Any]) -> dict[str, Any]:
        skip = {"base_model_name_or_path", "revision"}
        return {
            k: sorted(v) if isinstance(v, list) else v
            for k, v in cfg.items()
            if k not in skip
        }

    hp_ok = runner_hp == want and _norm(job_lora) == _norm(bare_lora)

    # ---- report
    a_times = [r["seconds"] for r in rows_a]
    b_times = [r["seconds"] for r in rows_b]
    med_a, med_b = statistics.median(a_times), statistics.median(b_times)
    print(
        f"Training overhead: DPO LoRA on {args.base} ({model_path}), max_steps={steps}, repeats={args.repeat}, torch threads={threads or 'default'}"
    )
    print(
        f"  data: {cold_a['train_rows']} train / {cold_a['val_rows']} val rows (snapshot of {args.pairs} labelled pairs); "
        f"torch threads (bare) {cold_a['threads']}; load avg before/after {load_before[0]:.2f}/{load_after[0]:.2f}; "
        f"waited for a quiet machine before each timed run: median {statistics.median(SETTLE_WAITS or [0]):.1f}s, max {max(SETTLE_WAITS or [0]):.1f}s"
    )
    if conversion is not None:
        print(
            f"  first use of SmolLM2: GGUF -> safetensors conversion took {conversion:.1f}s (not timed below)"
        )
    print(
        f"  setup (services, migrate, campaign, labels, base): {setup_seconds:.1f}s; worker ready (ping) {worker_ready:.1f}s after spawn"
    )
    print(
        f"  cold (untimed warm-ups): bare {cold_a['seconds']:.2f}s (after process start/imports), "
        f"product first job {cold_b['seconds']:.2f}s (includes torch/TRL import in the worker child)"
    )
    runner_times = [r["breakdown"]["runner"] for r in rows_b]
    print(
        f"  (a) bare TRL    [s]: {_fmt(a_times)}   median {med_a:.2f}  min {min(a_times):.2f}"
    )
    print(
        f"  (b) Arbiter job [s]: {_fmt(b_times)}   median {med_b:.2f}  min {min(b_times):.2f}"
    )
    print(
        f"      of which runner: {_fmt(runner_times)}   median {statistics.median(runner_times):.2f}"
    )
    paired = [b / a for a, b in zip(a_times, b_times, strict=True)]
    print(
        f"  ratio (b)/(a): median {med_b / med_a:.3f}, min {min(b_times) / min(a_times):.3f}, "
        f"per repeat {' '.join(f'{r:.3f}' for r in paired)}   (target <= 1.05)"
    )
    # Each repeat runs (a) and (b) back to back, so a slow moment of the
    # machine hits one pair: the median of the pairs' ratios is the figure
    # least moved by it.
    print(
        f"  ratio (b)/(a), median of the repeats' own: {statistics.median(paired):.3f}"
    )
    print(f"  extra per job (median b - median a): {med_b - med_a:+.2f}s")
    if rows_c:
        c_times = [r["seconds"] for r in rows_c]
        c_cpu = [r["cpu"] for r in rows_c]
        med_c = statistics.median(c_times)
        print(
            f"  (c) runner alone [s]: {_fmt(c_times)}   median {med_c:.2f}  min {min(c_times):.2f}; "
            f"CPU median {statistics.median(c_cpu):.2f}s"
        )
        print(
            f"      split of the median overhead: runner vs bare {med_c - med_a:+.2f}s (c/a {med_c / med_a:.3f}), "
            f"job plumbing vs runner {med_b - med_c:+.2f}s (b/c {med_b / med_c:.3f})"
        )
    fsync_med = statistics.median(r["wal_fsyncs"] for r in rows_b)
    commit_s = statistics.mean(commit_ms) / 1000
    print(
        f"  (b) WAL fsyncs per job: median {fsync_med:.0f} ({fsync_med / steps:.2f} per optimizer step); "
        f"one fsynced commit costs {commit_ms[0]:.1f}/{commit_ms[1]:.1f} ms (before/after) here, "
        f"so ~{fsync_med * commit_s:.2f}s of each job waits on commits"
    )
    a_cpu = [r["cpu"] for r in rows_a]
    b_cpu = [r["cpu"] for r in rows_b]
    print(
        f"  CPU seconds (less sensitive to other load): (a) {_fmt(a_cpu)} median {statistics.median(a_cpu):.2f}; "
        f"(b) {_fmt(b_cpu)} median {statistics.median(b_cpu):.2f}; "
        f"ratio {statistics.median(b_cpu) / statistics.median(a_cpu):.3f}"
    )
    print(
        f"      (b) CPU = worker + its child + PostgreSQL backends + Redis ({len(cpu_roots)} roots) + this process's API call"
    )
    print(
        "  (a) bare phases, median [s]: "
        + ", ".join(
            f"{k} {statistics.median(r['phases'][k] for r in rows_a):.2f}"
            for k in rows_a[0]["phases"]
        )
    )
    keys = list(rows_b[0]["breakdown"])
    print(
        "  (b) job breakdown, median [s]: "
        + ", ".join(
            f"{k} {statistics.median(r['breakdown'][k] for r in rows_b):.3f}"
            for k in keys
        )
    )
    print(
        "      post_response = API request incl. snapshot; queue_pickup = created_at -> started_at;"
    )
    print(
        "      claim_to_runner = started_at -> runner start (log); runner = load+train+eval+save (log);"
    )
    print(
        "      runner_to_registered = runner end -> finished_at (move + adapter row); poll_seen = finished_at -> observed"
    )
    print(
        f"  checks: snapshot files identical to bare data: {same_data}; all runs did {steps} steps: {steps_ok}; "
        f"recorded hyperparameters and adapter_config.json equal bare: {hp_ok}"
    )
    if not hp_ok:
        print(f"    runner {runner_hp}\n    bare   {want}")
    services.stop()
    return 0 if (same_data and steps_ok and hp_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
