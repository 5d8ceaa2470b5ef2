"""Bradley–Terry leaderboard from human comparisons between versions."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from labeling.models import Comparison, Completion, Preference
from models_hub.models import BaseModelVersion
from models_hub.selectors import campaign_leaderboard, word_diff
from models_hub.services.registry import adapter_register
from tests.labeling.factories import CampaignFactory, PromptFactory


@pytest.mark.django_db
def test_leaderboard_recovers_the_order_of_known_strengths(make_user: Any) -> None:
    campaign = CampaignFactory()
    base = BaseModelVersion.objects.create(name="base", source="/m")
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=base,
            method="dpo",
            peft_type="lora",
            storage_path=f"a{i}",
            metrics={},
        )
        for i in range(3)
    ]
    keys = {None: 0.0, adapters[0].pk: 0.4, adapters[1].pk: 0.9, adapters[2].pk: 1.5}
    rng = random.Random(3)
    annotator = make_user()
    versions = list(keys)
    for i in range(1200):
        x, y = rng.sample(versions, 2)
        prompt = PromptFactory(campaign=campaign)
        a = Completion.objects.create(
            prompt=prompt,
            text=f"a{i}",
            content_hash=f"a{i}",
            origin="model",
            adapter_id=x,
            base_model=base,
            source_label="a",
        )
        b = Completion.objects.create(
            prompt=prompt,
            text=f"b{i}",
            content_hash=f"b{i}",
            origin="model",
            adapter_id=y,
            base_model=base,
            source_label="b",
        )
        comparison = Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
        p_a = 1 / (1 + math.exp(keys[y] - keys[x]))
        Preference.objects.create(
            comparison=comparison,
            annotator=annotator,
            a_on_left=True,
            choice="a" if rng.random() < p_a else "b",
        )
    board = campaign_leaderboard(campaign=campaign, n_boot=100)
    assert board["labels"] == 1200 and board["anchor"] == f"base:{base.pk}"
    assert [r["key"] for r in board["rows"]] == [
        f"adapter:{a.pk}" for a in reversed(adapters)
    ] + [f"base:{base.pk}"]
    for row in board["rows"]:
        truth = keys[row["adapter"].pk if row["adapter"] else None]
        assert row["lower"] - 0.05 <= truth <= row["upper"] + 0.05
        assert abs(row["strength"] - truth) < 0.3


def test_word_diff_marks_changes_and_escapes_html() -> None:
    left, right = word_diff("the cat <b>sat</b> down", "the dog <b>sat</b> down")
    assert "<del>cat</del>" in left and "<ins>dog</ins>" in right
    assert "&lt;b&gt;sat&lt;/b&gt;" in left and "<b>" not in left
