"""Ranked comparisons (campaign mode "rank"): leasing, recording, implied
preferences, imports, exports, progress, gold and agreement."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.rank_stats import kendall_tau_b, kendall_w, krippendorff_alpha_ordinal
from labeling.exceptions import (
    ComparisonFull,
    ImportFailed,
    LabelingError,
    LeaseNotFound,
    NothingToLabel,
)
from labeling.models import (
    Campaign,
    Comparison,
    ComparisonItem,
    Completion,
    Lease,
    Preference,
    Ranking,
)
from labeling.selectors import (
    annotator_card_progress,
    annotator_progress,
    campaign_stats,
    preference_export_rows,
)
from labeling.selectors.quality import (
    annotator_reliability,
    quality_report,
    ranking_agreement,
    ranking_gold_scores,
)
from labeling.selectors.ranking import ranking_card, ranking_export_rows
from labeling.services import queue
from labeling.services.imports import campaign_import_jsonl
from labeling.services.ranking import (
    implied_choice,
    ranked_comparison_create,
    ranked_gold_set,
    ranking_lease_next,
    ranking_record,
    ranking_record_and_lease_next,
    ranking_submit,
)
from tests.labeling.factories import (
    CampaignFactory,
    ComparisonFactory,
    CompletionFactory,
    PromptFactory,
)

pytestmark = pytest.mark.django_db


def make_ranked(campaign: Campaign, k: int = 4, **kwargs: Any) -> Comparison:
    prompt = PromptFactory(campaign=campaign)
    completions = [CompletionFactory(prompt=prompt) for _ in range(k)]
    return ranked_comparison_create(
        campaign=campaign, prompt=prompt, completions=completions, **kwargs
    )


def rank_campaign(**kwargs: Any) -> Campaign:
    return CampaignFactory(mode=Campaign.Mode.RANK, **kwargs)


def test_ranking_of_four_implies_six_preferences(annotator: Any) -> None:
    """A ranking of 4 with one tie yields 6 implied preferences: the better
    ranked completion wins each pair, the tied pair is a tie, and each
    records which of the two was shown first."""
    campaign = rank_campaign()
    comparison = make_ranked(campaign)
    leased = ranking_lease_next(campaign=campaign, annotator=annotator)
    assert leased.lease.comparison_id == comparison.pk
    assert sorted(leased.lease.order) == sorted(
        comparison.items.values_list("completion_id", flat=True)
    )
    assert [letter for letter, _html in leased.card.items] == ["A", "B", "C", "D"]
    assert leased.card.k == 4
    ranks = [2, 1, 3, 2]
    ranking = ranking_record(lease=leased.lease, user=annotator, ranks=ranks)
    assert ranking.order == leased.lease.order and ranking.ranks == ranks
    rank_of = dict(zip(leased.lease.order, ranks, strict=True))
    shown_at = {cid: i for i, cid in enumerate(leased.lease.order)}
    prefs = Preference.objects.filter(ranking=ranking).select_related("comparison")
    assert prefs.count() == 6
    choices = []
    for pref in prefs:
        a, b = pref.comparison.completion_a_id, pref.comparison.completion_b_id
        assert pref.choice == implied_choice(rank_of[a], rank_of[b])
        assert pref.choice == (
            "a"
            if rank_of[a] < rank_of[b]
            else "b"
            if rank_of[b] < rank_of[a]
            else "tie"
        )
        assert pref.a_on_left == (shown_at[a] < shown_at[b])
        assert pref.source == Preference.Source.RANKING
        assert pref.comparison.status == Comparison.Status.IMPLIED
        assert pref.comparison.parent_id == comparison.pk
        choices.append(pref.choice)
    assert sorted(choices).count("tie") == 1
    comparison.refresh_from_db()
    assert comparison.label_count == 1
    assert comparison.status == Comparison.Status.COMPLETE
    assert Lease.objects.get(pk=leased.lease.pk).status == Lease.Status.SUBMITTED


def test_card_shows_items_in_the_lease_order(annotator: Any) -> None:
    """The card lists the completions in the lease's stored order, blind
    (letters only), and the live lease keeps its order when asked again."""
    campaign = rank_campaign()
    make_ranked(campaign, k=5)
    first = ranking_lease_next(campaign=campaign, annotator=annotator)
    again = ranking_lease_next(campaign=campaign, annotator=annotator)
    assert again.lease.pk == first.lease.pk
    assert again.lease.order == first.lease.order
    texts = dict(Completion.objects.values_list("pk", "text"))
    assert first.card.texts == [texts[c] for c in first.lease.order]
    assert [letter for letter, _ in first.card.items] == list("ABCDE")
    card = ranking_card(lease=Lease.objects.get(pk=first.lease.pk))
    assert card.texts == first.card.texts


def test_positions_are_shuffled_per_lease(make_user: Any) -> None:
    """Different leases of the same comparison get their own shuffled
    order (a permutation of its items); over 12 leases not all agree."""
    campaign = rank_campaign(overlap_k=12)
    comparison = make_ranked(campaign, k=6)
    items = sorted(comparison.items.values_list("completion_id", flat=True))
    orders = set()
    for _ in range(12):
        lease = ranking_lease_next(campaign=campaign, annotator=make_user()).lease
        assert sorted(lease.order) == items
        orders.add(tuple(lease.order))
    assert len(orders) > 1


def test_submit_is_idempotent(annotator: Any) -> None:
    """A second submit (double click, retry) returns the first ranking and
    writes nothing more."""
    campaign = rank_campaign()
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    first = ranking_submit(lease_id=lease.pk, annotator=annotator, ranks=[1, 2, 3, 4])
    second = ranking_submit(lease_id=lease.pk, annotator=annotator, ranks=[4, 3, 2, 1])
    assert first.created and not second.created
    assert second.ranking.pk == first.ranking.pk
    assert second.ranking.ranks == [1, 2, 3, 4]
    assert Ranking.objects.count() == 1
    assert Preference.objects.count() == 6
    assert Comparison.objects.get(is_ranked=True).label_count == 1


@pytest.mark.parametrize(
    ("ranks", "match"),
    [
        ([1, 2, 3], "one rank per completion"),
        ([1, 2, 3, 4, 5], "one rank per completion"),
        ([0, 1, 2, 3], "between 1"),
        ([1, 2, 3, 5], "between 1"),
        ([1, 2, "3", 4], "integers"),
    ],
)
def test_invalid_ranks_are_refused_and_change_nothing(
    annotator: Any, ranks: list[Any], match: str
) -> None:
    """Ranks not one per shown completion, or outside 1..K, are refused."""
    campaign = rank_campaign()
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    with pytest.raises(LabelingError, match=match):
        ranking_submit(lease_id=lease.pk, annotator=annotator, ranks=ranks)
    assert not Ranking.objects.exists() and not Preference.objects.exists()
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE


def test_a_lease_of_someone_else_is_not_found(make_user: Any) -> None:
    campaign = rank_campaign()
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=make_user()).lease
    with pytest.raises(LeaseNotFound):
        ranking_submit(lease_id=lease.pk, annotator=make_user(), ranks=[1, 2, 3, 4])


def test_pairs_and_rankings_refuse_each_others_answers(annotator: Any) -> None:
    """A ranked lease takes no A/B choice, and a pair lease no ranking."""
    campaign = rank_campaign()
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    with pytest.raises(LabelingError, match="ranking"):
        queue.preference_record(lease_id=lease.pk, annotator=annotator, choice="left")
    pairs = CampaignFactory()
    ComparisonFactory(campaign=pairs)
    pair_lease = queue.comparison_lease_next(campaign=pairs, annotator=annotator)
    with pytest.raises(LabelingError, match="pair"):
        ranking_submit(lease_id=pair_lease.pk, annotator=annotator, ranks=[1, 2, 3])
    assert not Preference.objects.exists()


def test_k_is_never_exceeded_and_implied_pairs_never_leased(make_user: Any) -> None:
    """With k = 1 a leased ranked comparison is nobody else's; implied pairs
    never enter the queue; an expired lease submitted after someone else
    filled k is refused."""
    campaign = rank_campaign(overlap_k=1)
    make_ranked(campaign)
    first, second = make_user(), make_user()
    lease = ranking_lease_next(campaign=campaign, annotator=first).lease
    with pytest.raises(NothingToLabel):
        ranking_lease_next(campaign=campaign, annotator=second)
    # The first lease expires; the second annotator takes and answers it.
    Lease.objects.filter(pk=lease.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    Comparison.objects.filter(is_ranked=True).update(lease_expiries=[])
    other = ranking_lease_next(campaign=campaign, annotator=second).lease
    ranking_submit(lease_id=other.pk, annotator=second, ranks=[1, 2, 3, 4])
    with pytest.raises(ComparisonFull):
        ranking_submit(lease_id=lease.pk, annotator=first, ranks=[1, 2, 3, 4])
    assert Ranking.objects.count() == 1
    with pytest.raises(NothingToLabel):
        ranking_lease_next(campaign=campaign, annotator=make_user())


def test_record_and_lease_next_serves_the_next_ranking(annotator: Any) -> None:
    campaign = rank_campaign()
    make_ranked(campaign)
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    outcome = ranking_record_and_lease_next(
        lease_id=lease.pk, annotator=annotator, ranks=[1, 1, 2, 3]
    )
    assert outcome.record.created and outcome.next is not None
    assert outcome.next.lease.comparison_id != lease.comparison_id
    assert outcome.next.card.k == 4
    last = ranking_record_and_lease_next(
        lease_id=outcome.next.lease.pk, annotator=annotator, ranks=[4, 3, 2, 1]
    )
    assert last.next is None and last.no_next == "empty"


def test_none_acceptable_is_stored_and_left_out_of_exports_by_default(
    make_user: Any,
) -> None:
    """A "none acceptable" ranking keeps its reason and its implied
    preferences, which exports (pairwise and listwise) leave out unless
    asked for."""
    campaign = rank_campaign(overlap_k=2)
    make_ranked(campaign)
    good, picky = make_user(), make_user()
    lease = ranking_lease_next(campaign=campaign, annotator=good).lease
    ranking_record(lease=lease, user=good, ranks=[1, 2, 3, 4])
    lease = ranking_lease_next(campaign=campaign, annotator=picky).lease
    flagged = ranking_record(
        lease=lease,
        user=picky,
        ranks=[1, 2, 3, 4],
        none_acceptable=True,
        reason="  all of them are wrong  ",
    )
    flagged.refresh_from_db()
    assert flagged.none_acceptable and flagged.reason == "all of them are wrong"
    assert Preference.objects.filter(ranking=flagged).count() == 6

    rows = list(preference_export_rows(campaign=campaign))
    assert len(rows) == 6 and {r["annotator_id"] for r in rows} == {good.pk}
    everything = list(
        preference_export_rows(campaign=campaign, include_unacceptable=True)
    )
    assert len(everything) == 12
    listwise = list(ranking_export_rows(campaign=campaign))
    assert [r["annotator_id"] for r in listwise] == [good.pk]
    assert len(ranking_export_rows_all(campaign)) == 2


def ranking_export_rows_all(campaign: Campaign) -> list[dict[str, Any]]:
    return list(ranking_export_rows(campaign=campaign, include_unacceptable=True))


def test_listwise_export_lists_completions_best_first(annotator: Any) -> None:
    campaign = rank_campaign()
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    ranking_record(lease=lease, user=annotator, ranks=[3, 1, 4, 1])
    texts = dict(Completion.objects.values_list("pk", "text"))
    [row] = ranking_export_rows(campaign=campaign)
    order = lease.order
    assert row["ranks"] == [1, 1, 3, 4]
    assert set(row["completions"][:2]) == {texts[order[1]], texts[order[3]]}
    assert row["completions"][2:] == [texts[order[0]], texts[order[2]]]
    assert row["none_acceptable"] is False
    json.dumps(row)


def test_progress_counts_a_ranking_once(annotator: Any) -> None:
    """Label counts and campaign stats count rankings, not implied pairs."""
    campaign = rank_campaign()
    make_ranked(campaign)
    make_ranked(campaign)
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    ranking_record(lease=lease, user=annotator, ranks=[1, 2, 3, 4])
    progress = annotator_progress(campaign=campaign, annotator=annotator)
    assert progress["labels_total"] == 1 and progress["pairs_left"] == 1
    card = annotator_card_progress(campaign=campaign, annotator=annotator)
    assert card["labels_today"] == 1 and card["pairs_left"] == 1
    stats = campaign_stats(campaign=campaign)
    assert stats["comparisons"] == 2 and stats["comparisons_open"] == 1
    assert stats["rankings"] == 1 and stats["preferences"] == 6
    assert stats["annotators"][0]["labels"] == 1


def _jsonl(*lines: dict[str, Any]) -> list[str]:
    return [json.dumps(line) + "\n" for line in lines]


def test_import_makes_ranked_comparisons_atomically() -> None:
    """Rank lines become one ranked comparison each (with items and implied
    pairs; gold_ranks makes it gold); a bad line is named and nothing is
    written; importing again adds nothing."""
    campaign = rank_campaign()
    good = _jsonl(
        {"prompt": "p1", "completions": ["a", "b", "c", "d"]},
        {
            "prompt": "p2",
            "completions": ["x", "y", "z"],
            "gold_ranks": [2, 1, 2],
        },
        {"prompt": "pool only"},
    )
    bad = [*good, *_jsonl({"prompt": "p3", "completions": ["only", "two"]})]
    with pytest.raises(ImportFailed, match="line 4: completions: a ranking needs 3"):
        campaign_import_jsonl(campaign=campaign, lines=bad)
    assert not Comparison.objects.exists() and not Completion.objects.exists()
    with pytest.raises(ImportFailed, match="line 1: gold_ranks"):
        campaign_import_jsonl(
            campaign=campaign,
            lines=_jsonl(
                {"prompt": "q", "completions": ["a", "b", "c"], "gold_ranks": [1, 4, 2]}
            ),
        )

    result = campaign_import_jsonl(campaign=campaign, lines=good)
    assert result.comparisons_created == 2 and result.completions_created == 7
    ranked = Comparison.objects.filter(is_ranked=True).order_by("pk")
    assert ranked.count() == 2
    assert Comparison.objects.filter(status=Comparison.Status.IMPLIED).count() == 9
    assert ranked[0].items.count() == 4
    gold = ranked[1]
    assert gold.is_gold and gold.gold_choice == "rank"
    assert list(
        gold.items.order_by("position").values_list("gold_rank", flat=True)
    ) == [2, 1, 2]
    assert sorted(gold.implied_pairs.values_list("gold_choice", flat=True)) == [
        "a",
        "b",
        "tie",
    ]
    again = campaign_import_jsonl(campaign=campaign, lines=good)
    assert again.comparisons_created == 0 and again.duplicates_skipped == 2
    with pytest.raises(ImportFailed, match="line 1: gold_ranks: unknown field"):
        campaign_import_jsonl(
            campaign=CampaignFactory(),
            lines=_jsonl({"prompt": "q", "completions": ["a", "b"], "gold_ranks": []}),
        )


class _GoldEveryTime:
    """Stands in for the queue's generator: every draw is below gold_rate."""

    def random(self) -> float:
        return 0.1


def test_gold_rankings_score_annotators_by_kendall_tau(
    make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gold ranked comparison is served like gold pairs; each annotator's
    ranking scores Kendall's tau-b against the gold ranking."""
    monkeypatch.setattr(queue, "_rng", _GoldEveryTime())
    campaign = rank_campaign(gold_rate=0.5)
    comparison = make_ranked(campaign, gold_ranks=[1, 2, 3, 4])
    items = list(
        comparison.items.order_by("position").values_list("completion_id", flat=True)
    )
    exact, reverse = make_user(), make_user()
    for user, gold_order in ((exact, [1, 2, 3, 4]), (reverse, [4, 3, 2, 1])):
        lease = ranking_lease_next(campaign=campaign, annotator=user).lease
        assert lease.comparison_id == comparison.pk
        by_item = dict(zip(items, gold_order, strict=True))
        ranking_record(lease=lease, user=user, ranks=[by_item[c] for c in lease.order])
    scores = ranking_gold_scores(campaign=campaign)
    assert scores[exact.pk].n == 1 and scores[exact.pk].tau == pytest.approx(1.0)
    assert scores[reverse.pk].tau == pytest.approx(-1.0)
    # Gold stays servable and never counts towards k.
    comparison.refresh_from_db()
    assert comparison.status == Comparison.Status.OPEN
    assert annotator_reliability(campaign=campaign) == {exact.pk: 1.0, reverse.pk: 1.0}
    ranked_gold_set(comparison=comparison, ranks=None)
    comparison.refresh_from_db()
    assert not comparison.is_gold
    assert not comparison.implied_pairs.filter(is_gold=True).exists()


def test_agreement_alpha_ordinal_and_kendalls_w(make_user: Any) -> None:
    """Two annotators who rank alike agree (alpha and W near 1); the quality
    report carries the figures for rank campaigns."""
    campaign = rank_campaign(overlap_k=2)
    u1, u2 = make_user(), make_user()
    for _ in range(3):
        comparison = make_ranked(campaign)
        items = list(
            comparison.items.order_by("position").values_list(
                "completion_id", flat=True
            )
        )
        for user_ranks, annotator in (([1, 2, 3, 4], u1), ([1, 2, 4, 3], u2)):
            lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
            by_item = dict(zip(items, user_ranks, strict=True))
            ranking_record(
                lease=lease, user=annotator, ranks=[by_item[c] for c in lease.order]
            )
    agreement = ranking_agreement(campaign=campaign)
    assert agreement["items"] == 3 and agreement["rankings"] == 6
    assert agreement["kendall_w"] == pytest.approx(0.9)
    assert 0.7 < agreement["alpha_ordinal"] < 1
    report = quality_report(campaign=campaign)
    assert report["ranking"]["agreement"] == agreement
    assert report["ranking"]["rankings"] == 6


def test_ranked_comparison_needs_three_to_nine_distinct_completions() -> None:
    campaign = rank_campaign()
    prompt = PromptFactory(campaign=campaign)
    two = [CompletionFactory(prompt=prompt) for _ in range(2)]
    with pytest.raises(LabelingError, match="3 to 9"):
        ranked_comparison_create(campaign=campaign, prompt=prompt, completions=two)
    three = [*two, two[0]]
    with pytest.raises(LabelingError, match="distinct"):
        ranked_comparison_create(campaign=campaign, prompt=prompt, completions=three)
    assert not ComparisonItem.objects.exists()


def test_rank_statistics() -> None:
    """Kendall's tau-b, W and ordinal alpha on textbook cases."""
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 2, 2, 4], [2, 1, 3, 4]) == pytest.approx(0.5477225575)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    assert kendall_w([[1, 2, 3], [1, 2, 3], [1, 2, 3]]) == pytest.approx(1.0)
    assert kendall_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    assert kendall_w([[1, 2, 3]]) is None
    assert krippendorff_alpha_ordinal({1: [1, 1], 2: [2, 2], 3: [3, 3]}) == 1.0
    assert krippendorff_alpha_ordinal({1: [1, 3], 2: [2, 2], 3: [3, 1]}) < 0
    assert krippendorff_alpha_ordinal({1: [1, 1]}) is None


def test_missing_implied_pairs_are_made_on_submit(annotator: Any) -> None:
    """A ranked comparison whose implied pairs are missing (made by other
    code than ranked_comparison_create) still yields all its preferences."""
    campaign = rank_campaign()
    comparison = make_ranked(campaign)
    first_two = comparison.implied_pairs.order_by("pk")[:2]
    Comparison.objects.filter(pk__in=[c.pk for c in first_two]).delete()
    lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
    ranking = ranking_record(lease=lease, user=annotator, ranks=[4, 3, 2, 1])
    assert comparison.implied_pairs.count() == 6
    assert Preference.objects.filter(ranking=ranking).count() == 6


@pytest.mark.django_db(transaction=True)
def test_concurrent_rankings_keep_k_and_one_ranking_per_lease(make_user: Any) -> None:
    """Six annotators leasing at once from k = 2 comparisons never exceed k;
    six duplicate submits of one lease give exactly one ranking."""
    from tests.labeling.test_queue import _run_threads

    campaign = rank_campaign(overlap_k=2)
    make_ranked(campaign)
    make_ranked(campaign)
    users = [make_user() for _ in range(6)]

    def lease(i: int) -> int:
        return ranking_lease_next(campaign=campaign, annotator=users[i]).lease.pk

    leased = _run_threads(6, lease)
    served = [r for r in leased if not isinstance(r, Exception)]
    assert len(served) == 4
    assert all(isinstance(r, NothingToLabel) for r in leased if r not in served)
    per_comparison = Lease.objects.values_list("comparison_id", flat=True)
    assert sorted(list(per_comparison).count(c) for c in set(per_comparison)) == [2, 2]

    lease_row = Lease.objects.select_related("annotator").first()
    assert lease_row is not None

    def submit(i: int) -> bool:
        return ranking_submit(
            lease_id=lease_row.pk,
            annotator=lease_row.annotator,
            ranks=[1, 2, 3, 4] if i % 2 else [4, 3, 2, 1],
        ).created

    results = _run_threads(6, submit)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert results.count(True) == 1
    assert Ranking.objects.count() == 1 and Preference.objects.count() == 6
    assert Comparison.objects.get(pk=lease_row.comparison_id).label_count == 1


def test_agreement_does_not_depend_on_how_ties_are_numbered(make_user: Any) -> None:
    """The same order written with different tie numbers ([1, 1, 2, 3] from
    the API, [1, 1, 3, 4] from the card, [2, 2, 3, 4]) is full agreement:
    ordinal alpha compares positions, not the numbers chosen for a tie."""
    campaign = rank_campaign(overlap_k=3)
    u1, u2, u3 = make_user(), make_user(), make_user()
    for shift in range(3):
        comparison = make_ranked(campaign)
        items = list(
            comparison.items.order_by("position").values_list(
                "completion_id", flat=True
            )
        )
        items = items[shift:] + items[:shift]
        for user_ranks, annotator in (
            ([1, 1, 2, 3], u1),
            ([1, 1, 3, 4], u2),
            ([2, 2, 3, 4], u3),
        ):
            lease = ranking_lease_next(campaign=campaign, annotator=annotator).lease
            by_item = dict(zip(items, user_ranks, strict=True))
            ranking_record(
                lease=lease, user=annotator, ranks=[by_item[c] for c in lease.order]
            )
    agreement = ranking_agreement(campaign=campaign)
    assert agreement["kendall_w"] == pytest.approx(1.0)
    assert agreement["alpha_ordinal"] == pytest.approx(1.0)
