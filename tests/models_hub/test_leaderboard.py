"""Bradley–Terry leaderboard from human comparisons between versions."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.diff import word_diff
from core.roles import REVIEWER
from labeling.models import Comparison, Completion, Preference
from models_hub.models import BaseModelVersion
from models_hub.selectors import campaign_leaderboard
from models_hub.services.registry import adapter_register
from models_hub.services.reports import campaign_reports_refresh
from tests.conftest import PASSWORD
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


@pytest.mark.django_db
def test_leaderboard_page_names_versions_instead_of_keys(make_user: Any) -> None:
    """Rows, chart and win-rate matrix read "base: <name>" and adapter names
    such as "dpo-v2"; the ``base:<id>``/``adapter:<id>`` keys never show."""
    campaign = CampaignFactory()
    base, _ = BaseModelVersion.objects.get_or_create(
        name="SmolLM2-135M-Instruct", defaults={"source": "/m"}
    )
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=base,
            method="dpo",
            peft_type="lora",
            storage_path=f"a{i}",
            metrics={},
        )
        for i in range(2)
    ]
    annotator = make_user()
    writers = [None, adapters[0].pk, adapters[1].pk]
    for i in range(12):
        x, y = writers[i % 3], writers[(i + 1) % 3]
        prompt = PromptFactory(campaign=campaign)
        a, b = (
            Completion.objects.create(
                prompt=prompt,
                text=f"{side}{i}",
                content_hash=f"{side}{i}",
                origin="model",
                adapter_id=writer,
                base_model=base,
                source_label=side,
            )
            for side, writer in (("a", x), ("b", y))
        )
        comparison = Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
        Preference.objects.create(
            comparison=comparison,
            annotator=annotator,
            a_on_left=True,
            choice="a" if i % 2 else "b",
        )
    assert campaign_reports_refresh(campaign_id=campaign.pk)
    client = Client()
    reviewer = make_user(REVIEWER)
    assert client.login(username=reviewer.username, password=PASSWORD)
    html = client.get(reverse("models_hub:leaderboard", args=[campaign.pk]))
    page = html.content.decode()
    for name in ("base: SmolLM2-135M-Instruct", "dpo-v1", "dpo-v2"):
        assert f"<td>{name}</td>" in page, name  # a leaderboard row
        assert f"<th>{name}</th>" in page, name  # a matrix header
    charted = {p[0] for p in html.context["chart"]["series"][0]["points"]}
    assert charted == {"base: SmolLM2-135M-Instruct", "dpo-v1", "dpo-v2"}
    for key in (f"base:{base.pk}", *(f"adapter:{a.pk}" for a in adapters)):
        assert key not in page, key
