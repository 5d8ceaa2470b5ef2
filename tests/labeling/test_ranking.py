"""Ranked comparisons: leasing, recording, implied preferences."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import Campaign, Comparison, Preference
from labeling.services.ranking import (
    ranked_comparison_create,
    ranking_lease_next,
    ranking_record,
)
from tests.labeling.factories import CampaignFactory, CompletionFactory, PromptFactory

pytestmark = pytest.mark.django_db


def make_ranked(campaign: Campaign, k: int = 4, **kwargs: Any) -> Comparison:
    prompt = PromptFactory(campaign=campaign)
    completions = [CompletionFactory(prompt=prompt) for _ in range(k)]
    return ranked_comparison_create(
        campaign=campaign, prompt=prompt, completions=completions, **kwargs
    )


def test_ranking_of_four_implies_six_preferences(annotator: Any) -> None:
    """A ranking of 4 with one tie yields 6 implied preferences: the better
    ranked completion wins each pair, and the tied pair is a tie."""
    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    comparison = make_ranked(campaign)
    leased = ranking_lease_next(campaign=campaign, annotator=annotator)
    assert leased.lease.comparison_id == comparison.pk
    assert sorted(leased.lease.order) == sorted(
        comparison.items.values_list("completion_id", flat=True)
    )
    assert [letter for letter, _html in leased.card.items] == ["A", "B", "C", "D"]
    ranks = [2, 1, 3, 2]
    ranking = ranking_record(lease=leased.lease, user=annotator, ranks=ranks)
    rank_of = dict(zip(leased.lease.order, ranks, strict=True))
    prefs = Preference.objects.filter(ranking=ranking).select_related("comparison")
    assert prefs.count() == 6
    choices = []
    for pref in prefs:
        a, b = pref.comparison.completion_a_id, pref.comparison.completion_b_id
        expected = (
            "a"
            if rank_of[a] < rank_of[b]
            else "b"
            if rank_of[b] < rank_of[a]
            else "tie"
        )
        assert pref.choice == expected
        assert pref.source == Preference.Source.RANKING
        assert pref.comparison.status == Comparison.Status.IMPLIED
        choices.append(pref.choice)
    assert choices.count("tie") == 1
    comparison.refresh_from_db()
    assert comparison.label_count == 1
    assert comparison.status == Comparison.Status.COMPLETE
