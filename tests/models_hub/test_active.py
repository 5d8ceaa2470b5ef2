"""Active selection: pairs the reward champion is unsure about come first."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from labeling.models import Comparison
from labeling.services.queue import comparison_lease_next
from models_hub.models import BaseModelVersion
from models_hub.services.active import active_selection_run, uncertainty_boost
from models_hub.services.registry import adapter_promote, adapter_register
from tests.labeling.factories import CampaignFactory, make_pairs


def test_a_coin_flip_gets_the_largest_boost() -> None:
    assert uncertainty_boost(1.0, 1.0, max_boost=20) == (1.0, 20)
    unsure, small = uncertainty_boost(0.3, 0.0, max_boost=20)
    sure, none = uncertainty_boost(8.0, 0.0, max_boost=20)
    assert small > none and unsure > sure and none == 0


@pytest.fixture(scope="module")
def reward_adapter_dir(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from ml.runners import run

    data = tmp_path_factory.mktemp("rm-data")
    rows = [
        {
            "prompt": f"tell me about the {s} .",
            "chosen": f" the {s} answers kindly .",
            "rejected": f" the {s} answers rudely .",
        }
        for s in ("cat", "river", "garden", "teacher")
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path_factory.mktemp("rm") / "adapter"
    run(
        "reward",
        {
            "base_model": str(tiny_model_dir),
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "max_length": 64,
        },
        data_dir=data,
        output_dir=out,
    )
    return out


@pytest.mark.django_db
def test_active_selection_boosts_uncertain_pairs_only_with_a_reward_champion(
    tiny_model_dir: Path, reward_adapter_dir: Path, make_user: Any
) -> None:
    campaign = CampaignFactory()
    pairs = make_pairs(campaign, 6)
    assert active_selection_run() == 0  # no reward champion yet: nothing changes
    base = BaseModelVersion.objects.create(name="tiny", source=str(tiny_model_dir))
    relative = Path("adapters") / f"rm-{campaign.pk}"
    shutil.copytree(
        reward_adapter_dir, Path(settings.STORAGE_ROOT) / relative, dirs_exist_ok=True
    )
    reward = adapter_register(
        campaign=campaign,
        base_model=base,
        method="reward",
        peft_type="lora",
        storage_path=str(relative),
        metrics={},
    )
    adapter_promote(adapter=reward, actor=None)

    assert active_selection_run() == 6
    scored = {c.pk: c for c in Comparison.objects.filter(pk__in=[p.pk for p in pairs])}
    assert all(c.reward_uncertainty is not None for c in scored.values())
    assert all(
        0 <= c.priority_boost <= settings.ARBITER_ACTIVE_SELECTION_MAX_BOOST
        for c in scored.values()
    )
    top = max(scored.values(), key=lambda c: (c.priority_boost, -c.pk))
    lease = comparison_lease_next(campaign=campaign, annotator=make_user())
    assert lease.comparison_id == top.pk
    assert active_selection_run() == 0  # already scored by this champion


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_the_beat_tick_never_queues_a_second_active_selection_while_one_waits(
    celery_workers: Any,
) -> None:
    """Beat's tick runs on the default queue and queues the gpu run only
    when no copy waits: three ticks while the gpu worker is busy leave one
    copy. An expired copy (never to run) does not count. Once the worker
    takes the queue again, the copy runs and the next tick queues a new one."""
    from config.celery import app
    from core.heartbeat import task_messages_pending
    from models_hub.services.active import active_selection_enqueue
    from tests.broker import gpu_queue_paused, queue_purge, queue_task_names

    run, tick = "models_hub.active_selection", "models_hub.active_selection_tick"
    with gpu_queue_paused(celery_workers):
        queue_purge("gpu")
        for _ in range(3):
            app.send_task(tick)
            _wait_until(lambda: not task_messages_pending(name=tick))
        assert queue_task_names("gpu") == [run]
        assert active_selection_enqueue() is False

        queue_purge("gpu")
        app.send_task(run, expires=1)
        time.sleep(1.5)
        assert active_selection_enqueue() is True
        assert queue_task_names("gpu") == [run, run]

    # A message the worker is just taking is in neither the queue nor its
    # unacknowledged set for an instant (task_messages_pending says so): the
    # copy has run once neither holds it for half a second.
    _wait_until(
        lambda: not task_messages_pending(name=run) and not queue_task_names("gpu"),
        stable=0.5,
    )
    assert active_selection_enqueue() is True
    _wait_until(lambda: not queue_task_names("gpu"))


def _wait_until(condition: Any, seconds: float = 30, stable: float = 0.0) -> None:
    """Until ``condition`` holds, and still holds ``stable`` seconds on."""
    deadline = time.monotonic() + seconds
    held_since: float | None = None
    while True:
        now = time.monotonic()
        if condition():
            held_since = now if held_since is None else held_since
            if now - held_since >= stable:
                return
        else:
            held_since = None
        assert now < deadline, "timed out"
        time.sleep(0.1)
