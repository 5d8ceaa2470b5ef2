"""Two gpu workers that share nothing but PostgreSQL, the broker and an S3
store (SeaweedFS): each has its own data directory, storage root and cache,
as two machines would. A job trains on one; the generation round for its
adapter runs on the other."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labeling.models import Completion
from ml.artifacts import HASHED_KEY, pack
from models_hub.models import GenerationJob
from models_hub.services.generation import generation_job_launch
from models_hub.services.registry import generation_settings_for
from tests.conftest import ROOT
from tests.training.conftest import labeled_campaign
from training.models import TrainingJob
from training.services.jobs import training_job_launch

FAST = {
    "max_steps": 4,
    "per_device_train_batch_size": 4,
    "logging_steps": 1,
    "max_length": 64,
}


@dataclass
class Machine:
    name: str
    queue: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def storage_root(self) -> Path:
        return self.home / "storage"

    @property
    def cache(self) -> Path:
        return self.home / "cache"


@pytest.fixture
def machines(
    celery_worker_env: dict[str, str], seaweedfs: Any, tmp_path: Path
) -> Iterator[dict[str, Machine]]:
    """Gpu workers ``a`` and ``b``, each on a queue of its own (so no other
    worker of the test session takes their jobs) with its own folders."""
    celery = str(Path(sys.executable).parent / "celery")
    tag = uuid.uuid4().hex[:8]
    started: dict[str, Machine] = {}
    for name in ("a", "b"):
        home = tmp_path / f"machine-{name}"
        env = {
            **celery_worker_env,
            **seaweedfs.env,
            "ARBITER_DATA_DIR": str(home / "data"),
            "ARBITER_STORAGE_ROOT": str(home / "storage"),
            "ARBITER_ARTIFACT_CACHE_DIR": str(home / "cache"),
        }
        queue, log = f"store-{name}-{tag}", tmp_path / f"worker-{name}.log"
        process = subprocess.Popen(
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                "--logfile",
                str(log),
            ],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        started[name] = Machine(name, queue, home, process, log)
    from config.celery import app

    deadline = time.monotonic() + 90
    try:
        while True:
            replies = app.control.ping(timeout=1.0) or []
            names = {n for reply in replies for n in reply}
            if all(
                any(n.startswith(f"{m.queue}@") for n in names)
                for m in started.values()
            ):
                break
            if time.monotonic() > deadline or any(
                m.process.poll() is not None for m in started.values()
            ):
                raise RuntimeError(
                    "workers did not start: "
                    + " ".join(
                        m.log.read_text() for m in started.values() if m.log.exists()
                    )
                )
            time.sleep(0.3)
        yield started
    finally:
        for m in started.values():
            m.process.terminate()
        for m in started.values():
            try:
                m.process.wait(20)
            except subprocess.TimeoutExpired:
                m.process.kill()


@pytest.fixture
def routed(machines: dict[str, Machine]) -> Iterator[None]:
    """Training goes to machine a and generation to machine b (the routing
    an operator would set; ``app.conf.update`` rebuilds Celery's router)."""
    from config.celery import app

    original = dict(app.conf.task_routes)
    app.conf.update(
        task_routes={
            **original,
            "training.job_run": {"queue": machines["a"].queue},
            "models_hub.generation_job_run": {"queue": machines["b"].queue},
        }
    )
    yield
    app.conf.update(task_routes=original)


@pytest.fixture
def web_on_s3(settings: Any, seaweedfs: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """This process (the web side, which takes the snapshot) on the store."""
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    settings.ARBITER_STORAGE = "s3"
    settings.ARBITER_S3_BUCKET = seaweedfs.bucket
    settings.ARBITER_S3_ENDPOINT_URL = seaweedfs.endpoint_url
    settings.ARBITER_S3_REGION = "us-east-1"
    settings.STORAGE_ROOT = tmp_path / "web" / "storage"
    settings.ARBITER_ARTIFACT_CACHE_DIR = tmp_path / "web" / "cache"


def _wait(row: Any, machine: Machine, seconds: float = 240) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row.refresh_from_db()
        if row.status not in ("queued", "running"):
            return row
        time.sleep(0.3)
    pytest.fail(f"{row} still {row.status}:\n{machine.log.read_text()[-4000:]}")


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_job_trains_on_one_machine_and_its_adapter_generates_on_another(
    machines: dict[str, Machine],
    routed: None,
    web_on_s3: None,
    seaweedfs: Any,
    make_user: Any,
    tiny_base: Any,
) -> None:
    """The snapshot (taken here) and the adapter (trained on a) are objects
    named by their SHA-256; b fetches the adapter into its own cache to
    generate. An emptied cache is filled again on the next round; an object
    replaced by other bytes is refused, failing the round with both hashes
    named and leaving nothing in b's cache."""
    a, b = machines["a"], machines["b"]
    campaign = labeled_campaign(make_user, pairs=16)
    row = generation_settings_for(campaign)
    row.enabled = False  # no automatic round: this test sends it to b
    row.prompts_per_round = 2
    row.max_new_tokens = 8
    row.save()

    job = training_job_launch(
        campaign=campaign, method="dpo", created_by=None, config=FAST
    )
    assert HASHED_KEY.match(job.snapshot.storage_path)
    job = _wait(job, a)
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error
    key = job.adapter.storage_path
    assert HASHED_KEY.match(key), key
    client = seaweedfs.client()
    client.head_object(Bucket=seaweedfs.bucket, Key=f"{key}.tar")
    assert (a.cache / key / "adapter_config.json").is_file()  # the writer's copy
    assert (a.cache / job.snapshot.storage_path / "preference").is_dir()
    assert not (a.storage_root / "adapters").exists()  # only scratch there
    assert not (b.cache / key).exists()

    def generate() -> GenerationJob:
        round_ = generation_job_launch(
            campaign=campaign, kind=GenerationJob.Kind.CANDIDATE, adapter=job.adapter
        )
        return _wait(round_, b)

    first = generate()
    assert first.status == GenerationJob.Status.SUCCEEDED, first.error
    assert (b.cache / key / "adapter_model.safetensors").is_file()
    assert Completion.objects.filter(adapter=job.adapter).exists()

    shutil.rmtree(b.cache)
    second = generate()
    assert second.status == GenerationJob.Status.SUCCEEDED, second.error
    assert (b.cache / key / "adapter_model.safetensors").is_file()

    forged = b.home / "forged.tar"
    pack(a.cache / key, forged)  # same files...
    with forged.open("ab") as tar:
        tar.write(b"\0" * 512)  # ...and one more block: other bytes
    client.put_object(
        Bucket=seaweedfs.bucket, Key=f"{key}.tar", Body=forged.read_bytes()
    )
    shutil.rmtree(b.cache)
    third = generate()
    assert third.status == GenerationJob.Status.FAILED
    assert f"ArtifactCorrupt: refused {key}" in third.error
    assert not (b.cache / key).exists()
