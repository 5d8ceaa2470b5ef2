"""The label-quality API answers in the shapes its schema documents."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from core.roles import REVIEWER
from labeling.services.queue import comparison_lease_next, preference_record
from models_hub.services.reports import campaign_reports_refresh
from tests.labeling.factories import CampaignFactory, make_pairs


def _label(campaign: Any, user: Any, choice: str) -> None:
    lease = comparison_lease_next(campaign=campaign, annotator=user)
    preference_record(lease_id=lease.pk, annotator=user, choice=choice)


@pytest.mark.django_db
def test_timeline_and_disagreements_are_lists_of_documented_rows(
    make_user: Any, api_client_for: Any
) -> None:
    """The schema said object; both answer a list (one row per day, one per
    disagreed pair), and now the schema says so too."""
    campaign = CampaignFactory(overlap_k=2)
    make_pairs(campaign, 1)
    first, second = make_user(), make_user()
    _label(campaign, first, "left")
    _label(campaign, second, "right")
    campaign_reports_refresh(campaign_id=campaign.pk)
    reviewer = api_client_for(make_user(REVIEWER))

    timeline = reviewer.get(
        reverse("api-annotator-timeline", args=[campaign.pk, first.pk])
    )
    assert timeline.status_code == 200
    [day] = timeline.json()
    assert set(day) == {"day", "labels", "gold", "gold_accuracy"}
    assert (day["labels"], day["gold"], day["gold_accuracy"]) == (1, 0, None)

    disagreements = reviewer.get(
        reverse("api-disagreement-list", args=[campaign.pk])
    ).json()
    assert isinstance(disagreements, list)
    for row in disagreements:
        assert set(row) == {"comparison_id", "prompt", "a", "b", "labels"}
        assert all(
            set(label) == {"annotator_id", "choice", "rationale"}
            for label in row["labels"]
        )


@pytest.mark.django_db
def test_gold_is_marked_over_json_only(make_user: Any, api_client_for: Any) -> None:
    """A null choice (unmark) has no form encoding: a form post is refused
    with 415 (the schema lists JSON only) and changes nothing."""
    [pair] = make_pairs(CampaignFactory(), 1)
    reviewer = api_client_for(make_user(REVIEWER))
    url = reverse("api-comparison-gold", args=[pair.pk])
    assert reviewer.post(url, {"choice": "a"}).status_code == 415
    pair.refresh_from_db()
    assert pair.is_gold is False
    unmarked = reviewer.post(url, {"choice": None}, format="json")
    assert unmarked.status_code == 200
    assert unmarked.json() == {
        "comparison_id": pair.pk,
        "is_gold": False,
        "gold_choice": None,
    }
