"""Ranking over the REST API, and a ranking's implied preferences reaching
exports, snapshots and the leaderboard through the real workers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from core.models import Report
from core.roles import REVIEWER
from labeling.models import Campaign, Comparison, Completion, Lease, Preference, Ranking
from labeling.services.ranking import ranked_comparison_create
from labeling.services.splits import split_for_hash
from models_hub.models import BaseModelVersion
from models_hub.services.registry import adapter_register
from tests.labeling.factories import CampaignFactory, CompletionFactory, PromptFactory
from training.services.snapshots import dataset_snapshot_create


def _ranked(campaign: Campaign, k: int = 4) -> Comparison:
    prompt = PromptFactory(campaign=campaign)
    completions = [CompletionFactory(prompt=prompt) for _ in range(k)]
    return ranked_comparison_create(
        campaign=campaign, prompt=prompt, completions=completions
    )


@pytest.mark.django_db
def test_rank_campaign_next_and_submit_over_the_api(
    annotator: Any, api_client_for: Any
) -> None:
    """next answers with the K shuffled items; a ranking is 201 then 200 on
    repeat (idempotent); ?next=1 answers with the next card; bad ranks are
    400 and change nothing."""
    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    _ranked(campaign)
    _ranked(campaign, k=3)
    client = api_client_for(annotator)
    card = client.post(reverse("api-comparison-next", args=[campaign.pk])).json()
    assert card["k"] == 4 and [i["letter"] for i in card["items"]] == list("ABCD")
    lease = Lease.objects.get(pk=card["lease_id"])
    texts = dict(Completion.objects.values_list("pk", "text"))
    assert [i["text"] for i in card["items"]] == [texts[c] for c in lease.order]
    assert "source" not in json.dumps(card)

    url = reverse("api-ranking-create", args=[card["lease_id"]])
    bad = client.post(url, {"ranks": [1, 2, 3]}, format="json")
    assert bad.status_code == 400 and "one rank per completion" in bad.json()["detail"]
    assert not Ranking.objects.exists()

    body = {"ranks": [2, 1, 4, 3], "client_request_id": "r-1", "time_spent_ms": 900}
    first = client.post(url + "?next=1", body, format="json")
    assert first.status_code == 201, first.content
    data = first.json()
    assert data["created"] and data["ranks"] == [2, 1, 4, 3]
    assert data["next"]["k"] == 3 and data["next"]["lease_id"] != card["lease_id"]
    again = client.post(url, body, format="json")
    assert again.status_code == 200 and again.json()["ranking_id"] == data["ranking_id"]
    assert Ranking.objects.count() == 1 and Preference.objects.count() == 6
    ranking = Ranking.objects.get()
    assert ranking.client_request_id == "r-1" and ranking.time_spent_ms == 900

    pair_url = reverse("api-preference-create", args=[data["next"]["lease_id"]])
    refused = client.post(pair_url, {"choice": "left"}, format="json")
    assert refused.status_code == 400


@pytest.mark.django_db
def test_campaign_mode_is_set_at_creation_and_then_fixed(
    admin_user: Any, api_client_for: Any
) -> None:
    client = api_client_for(admin_user)
    created = client.post(
        reverse("api-campaign-list"), {"name": "Ranked", "mode": "rank"}, format="json"
    )
    assert created.status_code == 201 and created.json()["mode"] == "rank"
    campaign = Campaign.objects.get(pk=created.json()["id"])
    _ranked(campaign)
    url = reverse("api-campaign-detail", args=[campaign.pk])
    refused = client.patch(url, {"mode": "pair"}, format="json")
    assert refused.status_code == 400
    campaign.refresh_from_db()
    assert campaign.mode == "rank"


@pytest.mark.django_db
def test_gold_ranking_api(reviewer: Any, api_client_for: Any) -> None:
    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    comparison = _ranked(campaign, k=3)
    client = api_client_for(reviewer)
    url = reverse("api-comparison-gold-ranking", args=[comparison.pk])
    answer = client.post(url, {"ranks": [3, 1, 2]}, format="json")
    assert answer.status_code == 200
    assert answer.json() == {
        "comparison_id": comparison.pk,
        "is_gold": True,
        "ranks": [3, 1, 2],
    }
    assert client.post(url, {"ranks": [1, 2]}, format="json").status_code == 400
    cleared = client.post(url, {"ranks": None}, format="json").json()
    assert cleared["is_gold"] is False and cleared["ranks"] is None


def _wait_for(predicate: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the worker")
        time.sleep(0.25)


def _train_prompt(campaign: Campaign, n: int) -> Any:
    """A prompt whose hash puts it in the train split."""
    i = 0
    while True:
        text = f"Rank these answers {n}.{i}"
        prompt = PromptFactory.build(campaign=campaign, text=text)
        if split_for_hash(prompt.content_hash) == "train":
            prompt.save()
            return prompt
        i += 1


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_implied_preferences_reach_export_snapshot_and_leaderboard(
    celery_workers: dict[str, Any], make_user: Any, api_client_for: Any
) -> None:
    """A ranking of 4 answers written by 4 versions, submitted over the API,
    gives 6 implied preferences (one tie) that appear in the pairwise
    export, in a training snapshot and, through the worker's reports
    refresh, on the leaderboard (6 labels). A "none acceptable" ranking is
    stored but left out of the snapshot and the export by default."""
    campaign = CampaignFactory(mode=Campaign.Mode.RANK, overlap_k=2)
    base = BaseModelVersion.objects.create(name="tiny-rank", source="/m")
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=base,
            method="dpo",
            peft_type="lora",
            storage_path=f"rank{i}",
            metrics={},
        )
        for i in range(3)
    ]
    prompt = _train_prompt(campaign, 1)
    writers = [None, *adapters]
    completions = [
        Completion.objects.create(
            prompt=prompt,
            text=f"answer by version {i}",
            content_hash=f"v{i}",
            origin=Completion.Origin.MODEL,
            adapter=writer,
            base_model=base,
            source_label=f"v{i}",
        )
        for i, writer in enumerate(writers)
    ]
    ranked_comparison_create(campaign=campaign, prompt=prompt, completions=completions)

    good, picky = make_user(), make_user()
    rank_by_text = {c.text: r for c, r in zip(completions, [1, 2, 2, 4], strict=True)}
    for user, flag in ((good, False), (picky, True)):
        client = api_client_for(user)
        card = client.post(reverse("api-comparison-next", args=[campaign.pk])).json()
        ranks = [rank_by_text[item["text"]] for item in card["items"]]
        answer = client.post(
            reverse("api-ranking-create", args=[card["lease_id"]]),
            {"ranks": ranks, "none_acceptable": flag, "reason": "meh" if flag else ""},
            format="json",
        )
        assert answer.status_code == 201, answer.content

    flagged = Ranking.objects.get(annotator=picky)
    assert flagged.none_acceptable and flagged.reason == "meh"
    implied = Preference.objects.filter(ranking__annotator=good)
    assert implied.count() == 6
    assert sorted(implied.values_list("choice", flat=True)).count("tie") == 1
    text_of = dict(Completion.objects.values_list("pk", "text"))
    for pref in implied.select_related("comparison"):
        a = rank_by_text[text_of[pref.comparison.completion_a_id]]
        b = rank_by_text[text_of[pref.comparison.completion_b_id]]
        assert pref.choice == ("a" if a < b else "b" if b < a else "tie")

    # Export (pairwise, ties in both orders): 5 decisive + 2 tie rows, all good's.
    reviewer = api_client_for(make_user(REVIEWER))
    export = reviewer.get(
        reverse("api-preference-export", args=[campaign.pk]),
        {"tie_policy": "both_orders"},
    )
    rows = [
        json.loads(line) for line in b"".join(export.streaming_content).splitlines()
    ]
    assert len(rows) == 7 and {r["annotator_id"] for r in rows} == {good.pk}
    decisive = {(r["chosen"], r["rejected"]) for r in rows if not r["tie"]}
    assert ("answer by version 0", "answer by version 3") in decisive
    listwise = reviewer.get(
        reverse("api-preference-export", args=[campaign.pk]), {"layout": "listwise"}
    )
    [row] = [json.loads(x) for x in b"".join(listwise.streaming_content).splitlines()]
    assert row["ranks"] == [1, 2, 2, 4]
    assert row["completions"][0] == "answer by version 0"

    # Snapshot: the 5 decisive implied pairs (ties skipped), not picky's.
    snapshot = dataset_snapshot_create(campaign=campaign)
    assert snapshot.counts["preference"]["train"] == 5
    with_flagged = dataset_snapshot_create(
        campaign=campaign, filters={"include_unacceptable": True}
    )
    assert with_flagged.counts["preference"]["train"] == 10

    # Leaderboard: the worker's refresh counts 12 outcomes (both rankings:
    # the leaderboard reads every implied preference, as it reads every label).
    def board_ready() -> bool:
        report = Report.objects.filter(
            campaign=campaign, kind=Report.Kind.LEADERBOARD, stale=False
        ).first()
        return report is not None and report.payload.get("labels") == 12

    assert (
        reviewer.get(reverse("api-leaderboard", args=[campaign.pk])).status_code == 200
    )
    _wait_for(board_ready)
    board = Report.objects.get(campaign=campaign, kind=Report.Kind.LEADERBOARD)
    keys = {r["key"] for r in board.payload["rows"]}
    assert keys == {f"base:{base.pk}", *(f"adapter:{a.pk}" for a in adapters)}


@pytest.mark.django_db
def test_quality_api_shows_ranking_agreement_and_gold(
    make_user: Any, api_client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quality API of a rank campaign carries ordinal alpha, Kendall's W
    and gold taus once the report is computed."""
    from labeling.services import queue
    from labeling.services.ranking import ranked_gold_set, ranking_submit
    from models_hub.services.reports import campaign_reports_refresh
    from tests.labeling.test_ranking import _GoldEveryTime

    monkeypatch.setattr(queue, "_rng", _GoldEveryTime())
    campaign = CampaignFactory(mode=Campaign.Mode.RANK, overlap_k=2, gold_rate=0.5)
    comparison = _ranked(campaign)
    gold = _ranked(campaign)
    ranked_gold_set(comparison=gold, ranks=[1, 2, 3, 4])
    items = list(
        comparison.items.order_by("position").values_list("completion_id", flat=True)
    )
    for user in (make_user(), make_user()):
        client = api_client_for(user)
        for _ in range(2):
            card = client.post(
                reverse("api-comparison-next", args=[campaign.pk])
            ).json()
            lease = Lease.objects.get(pk=card["lease_id"])
            canonical = (
                items
                if lease.comparison_id == comparison.pk
                else list(
                    gold.items.order_by("position").values_list(
                        "completion_id", flat=True
                    )
                )
            )
            by_item = dict(zip(canonical, [1, 2, 3, 4], strict=True))
            ranking_submit(
                lease_id=lease.pk,
                annotator=user,
                ranks=[by_item[c] for c in lease.order],
            )
    campaign_reports_refresh(campaign_id=campaign.pk)
    reviewer = api_client_for(make_user(REVIEWER))
    data = reviewer.get(reverse("api-campaign-quality", args=[campaign.pk])).json()
    ranking = data["ranking"]
    assert ranking["agreement"]["items"] == 1
    assert ranking["agreement"]["kendall_w"] == pytest.approx(1.0)
    assert ranking["rankings"] == 4
    assert [g["tau"] for g in ranking["gold"].values()] == pytest.approx([1.0, 1.0])
