from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from labeling.models import Prompt
from tests.labeling.factories import CampaignFactory
from tests.training.conftest import labeled_campaign
from training.exceptions import NoTrainingData, TrainingError
from training.services.snapshots import dataset_snapshot_create, snapshot_data_dir


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.django_db
def test_snapshot_writes_runner_files_split_by_prompt(make_user: Any) -> None:
    campaign = labeled_campaign(make_user, pairs=12)
    snapshot = dataset_snapshot_create(campaign=campaign)
    pref_dir = snapshot_data_dir(snapshot, "dpo")
    train, val = _rows(pref_dir / "train.jsonl"), _rows(pref_dir / "val.jsonl")
    assert len(train) + len(val) == 12
    assert snapshot.counts["preference"] == {"train": len(train), "val": len(val)}
    assert all(
        r["chosen"].endswith("kindly .") and set(r) == {"prompt", "chosen", "rejected"}
        for r in train + val
    )
    train_prompts = {r["prompt"] for r in train}
    val_prompts = {r["prompt"] for r in val}
    assert not train_prompts & val_prompts
    assert all(
        Prompt.objects.get(campaign=campaign, text=p).split == "train"
        for p in train_prompts
    )
    sft = _rows(snapshot_data_dir(snapshot, "sft") / "train.jsonl")
    assert sft and all(set(r) == {"prompt", "completion"} for r in sft)
    prompts = _rows(snapshot_data_dir(snapshot, "rloo") / "train.jsonl")
    assert {r["prompt"] for r in prompts} == set(
        Prompt.objects.filter(campaign=campaign, split="train").values_list(
            "text", flat=True
        )
    )
    assert str(pref_dir).startswith(str(settings.STORAGE_ROOT))


@pytest.mark.django_db
def test_snapshot_never_contains_golden_prompts_and_is_reproducible(
    make_user: Any,
) -> None:
    campaign = labeled_campaign(make_user, pairs=12)
    golden = Prompt.objects.filter(campaign=campaign, split="train").first()
    golden.is_golden = True
    golden.save()
    first = dataset_snapshot_create(campaign=campaign)
    second = dataset_snapshot_create(campaign=campaign)
    texts = json.dumps(_rows(snapshot_data_dir(first, "dpo") / "train.jsonl"))
    assert golden.text not in texts
    assert (
        first.content_hash == second.content_hash
        and first.storage_path != second.storage_path
    )


@pytest.mark.django_db
def test_snapshot_filters_annotators_and_refuses_empty_data(make_user: Any) -> None:
    campaign = labeled_campaign(make_user, pairs=8, annotators=1)
    annotator_id = campaign.comparisons.first().preferences.first().annotator_id
    with pytest.raises(NoTrainingData):
        dataset_snapshot_create(
            campaign=campaign, filters={"exclude_annotator_ids": [annotator_id]}
        )
    with pytest.raises(TrainingError, match="unknown key 'colour'"):
        dataset_snapshot_create(campaign=campaign, filters={"colour": 1})
    with pytest.raises(NoTrainingData):
        dataset_snapshot_create(campaign=CampaignFactory())


@pytest.mark.django_db
def test_a_campaign_mixing_chat_and_plain_prompts_gives_conversational_files(
    make_user: Any,
) -> None:
    campaign = labeled_campaign(make_user, pairs=12)
    chat_prompt = Prompt.objects.filter(campaign=campaign, split="train").first()
    chat_prompt.messages, chat_prompt.text = (
        [{"role": "user", "content": chat_prompt.text}],
        "",
    )
    chat_prompt.save()
    snapshot = dataset_snapshot_create(campaign=campaign)
    for kind, method in (("preference", "dpo"), ("sft", "sft"), ("prompts", "rloo")):
        rows = _rows(snapshot_data_dir(snapshot, method) / "train.jsonl")
        assert rows and all(
            isinstance(r["prompt"], list) and r["prompt"][-1]["role"] == "user"
            for r in rows
        ), kind
    pref = _rows(snapshot_data_dir(snapshot, "dpo") / "train.jsonl")
    assert all(r["chosen"][0]["role"] == "assistant" for r in pref)
