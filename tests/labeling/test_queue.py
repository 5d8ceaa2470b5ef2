"""The leased queue: one statement, SKIP LOCKED, k respected, leases expire."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.exceptions import (
    CampaignNotAvailable,
    ComparisonFull,
    LabelEditRefused,
    LabelingError,
    LabelNotFound,
    LeaseNotFound,
    NothingToLabel,
)
from labeling.models import (
    Campaign,
    Comparison,
    Lease,
    Preference,
    PreferenceRevision,
    Prompt,
)
from labeling.selectors import preference_export_rows
from labeling.services.queue import (
    comparison_lease_next,
    lease_skip,
    preference_record,
    preference_revise,
)
from tests.labeling.factories import CampaignFactory, make_pairs
from training.services.snapshots import dataset_snapshot_create, snapshot_data_dir


def _run_threads(n: int, target: Any) -> list[Any]:
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - collected and asserted by the test
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.django_db
def test_lease_next_honours_priority_then_age(annotator: Any) -> None:
    campaign = CampaignFactory()
    low = make_pairs(campaign, 2, priority=0)
    high = make_pairs(campaign, 1, priority=5)
    first = comparison_lease_next(campaign=campaign, annotator=annotator)
    assert first.comparison_id == high[0].pk
    preference_record(lease_id=first.pk, annotator=annotator, choice="left")
    second = comparison_lease_next(campaign=campaign, annotator=annotator)
    assert second.comparison_id == low[0].pk


@pytest.mark.django_db
def test_lease_next_returns_the_live_lease_again(annotator: Any) -> None:
    """Two tabs or a reload show the same pair instead of reserving another."""
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    first = comparison_lease_next(campaign=campaign, annotator=annotator)
    again = comparison_lease_next(campaign=campaign, annotator=annotator)
    assert again.pk == first.pk
    assert Lease.objects.count() == 1


@pytest.mark.django_db
def test_lease_next_never_offers_a_pair_the_annotator_labeled(make_user: Any) -> None:
    campaign = CampaignFactory(overlap_k=3)
    make_pairs(campaign, 2)
    alice = make_user()
    seen = []
    for _ in range(2):
        lease = comparison_lease_next(campaign=campaign, annotator=alice)
        seen.append(lease.comparison_id)
        preference_record(lease_id=lease.pk, annotator=alice, choice="tie")
    assert len(set(seen)) == 2
    with pytest.raises(NothingToLabel):
        comparison_lease_next(campaign=campaign, annotator=alice)


@pytest.mark.django_db
def test_skipped_pair_is_not_offered_again_to_that_annotator(make_user: Any) -> None:
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    alice, bob = make_user(), make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=alice)
    lease_skip(lease_id=lease.pk, annotator=alice)
    with pytest.raises(NothingToLabel):
        comparison_lease_next(campaign=campaign, annotator=alice)
    assert (
        comparison_lease_next(campaign=campaign, annotator=bob).comparison_id == pair.pk
    )


@pytest.mark.django_db
def test_expired_lease_frees_its_slot_without_a_sweeper(make_user: Any) -> None:
    campaign = CampaignFactory(overlap_k=1)
    (pair,) = make_pairs(campaign, 1)
    alice, bob = make_user(), make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=alice)
    with pytest.raises(NothingToLabel):
        comparison_lease_next(campaign=campaign, annotator=bob)
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease.pk).update(expires_at=past)
    Comparison.objects.filter(pk=pair.pk).update(lease_expiries=[past])
    assert (
        comparison_lease_next(campaign=campaign, annotator=bob).comparison_id == pair.pk
    )


@pytest.mark.django_db
def test_late_submit_is_accepted_while_the_pair_has_room(make_user: Any) -> None:
    campaign = CampaignFactory(overlap_k=2)
    (pair,) = make_pairs(campaign, 1)
    alice = make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=alice)
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=lease.pk).update(expires_at=past)
    Comparison.objects.filter(pk=pair.pk).update(lease_expiries=[past])
    result = preference_record(lease_id=lease.pk, annotator=alice, choice="right")
    assert result.created
    pair.refresh_from_db()
    assert pair.label_count == 1 and pair.lease_expiries == []


@pytest.mark.django_db
def test_late_submit_on_a_full_pair_is_refused_and_changes_nothing(
    make_user: Any,
) -> None:
    campaign = CampaignFactory(overlap_k=1)
    (pair,) = make_pairs(campaign, 1)
    alice, bob = make_user(), make_user()
    late = comparison_lease_next(campaign=campaign, annotator=alice)
    past = timezone.now() - timedelta(seconds=1)
    Lease.objects.filter(pk=late.pk).update(expires_at=past)
    Comparison.objects.filter(pk=pair.pk).update(lease_expiries=[past])
    bob_lease = comparison_lease_next(campaign=campaign, annotator=bob)
    preference_record(lease_id=bob_lease.pk, annotator=bob, choice="left")
    with pytest.raises(ComparisonFull, match="already has all the labels"):
        preference_record(lease_id=late.pk, annotator=alice, choice="right")
    assert Preference.objects.filter(comparison=pair).count() == 1


@pytest.mark.django_db
def test_choice_is_stored_against_completions_not_screen_sides(annotator: Any) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    pref = preference_record(
        lease_id=lease.pk, annotator=annotator, choice="left", strength=-2
    ).preference
    assert pref.a_on_left == lease.a_on_left
    assert pref.choice == ("a" if lease.a_on_left else "b")
    # -2 on screen = left clearly better; stored sign points at A (-) or B (+).
    assert pref.strength == (-2 if lease.a_on_left else 2)


@pytest.mark.django_db
def test_sides_are_shuffled_per_lease(make_user: Any) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 60)
    user = make_user()
    sides = []
    for _ in range(60):
        lease = comparison_lease_next(campaign=campaign, annotator=user)
        sides.append(lease.a_on_left)
        lease_skip(lease_id=lease.pk, annotator=user)
    # 60 fair coin flips: P(fewer than 12 of either side) < 1e-5.
    assert 12 <= sum(sides) <= 48


@pytest.mark.django_db
def test_submit_for_someone_elses_lease_is_refused(make_user: Any) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    alice, mallory = make_user(), make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=alice)
    with pytest.raises(LeaseNotFound):
        preference_record(lease_id=lease.pk, annotator=mallory, choice="left")
    assert not Preference.objects.exists()


@pytest.mark.django_db
def test_lease_next_is_one_locking_statement_within_a_query_budget(
    annotator: Any, django_assert_max_num_queries: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 50)
    with CaptureQueriesContext(connection) as ctx:
        comparison_lease_next(campaign=campaign, annotator=annotator)
    locking = [q["sql"] for q in ctx.captured_queries if "SKIP LOCKED" in q["sql"]]
    assert len(locking) == 1
    assert len(ctx.captured_queries) <= 6


@pytest.mark.django_db
def test_queue_statement_walks_the_queue_index_without_sorting(annotator: Any) -> None:
    """The real lease statement reads the partial queue index in order, so its
    cost does not grow with the number of pending pairs."""
    from itertools import combinations

    from labeling.services.queue import _LEASE_NEXT_SQL
    from tests.labeling.factories import CompletionFactory, PromptFactory

    campaign = CampaignFactory()
    prompt = PromptFactory(campaign=campaign)
    completions = [CompletionFactory(prompt=prompt) for _ in range(64)]
    Comparison.objects.bulk_create(
        Comparison(
            campaign=campaign,
            prompt=prompt,
            completion_a=a,
            completion_b=b,
            priority=i % 7,
        )
        for i, (a, b) in enumerate(combinations(completions, 2))
    )
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_comparison")
        cursor.execute(
            "EXPLAIN " + _LEASE_NEXT_SQL.format(lock_mode="SKIP LOCKED"),
            {
                "campaign_id": campaign.pk,
                "annotator_id": annotator.pk,
                "k": 1,
                "now": now,
                "expires_at": now + timedelta(minutes=5),
                "exclude_lease": 0,
                "exclude_comparison": 0,
                "want_gold": False,
                "a_on_left": True,
            },
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # The pick is the CTE "picked"; the others read one annotator's leases
    # or (not wanted here, folded away) the gold index.
    picked = plan.split("CTE picked")[1].split("CTE reserved")[0]
    assert "labeling_queue_idx" in picked, plan
    assert "Sort" not in picked, plan


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_get_the_same_pair_beyond_k(make_user: Any) -> None:
    campaign = CampaignFactory(overlap_k=2)
    make_pairs(campaign, 10)
    users = [make_user() for _ in range(8)]

    def work(i: int) -> list[int]:
        taken = []
        for _ in range(5):
            try:
                lease = comparison_lease_next(campaign=campaign, annotator=users[i])
            except NothingToLabel:
                break
            taken.append(lease.comparison_id)
            preference_record(lease_id=lease.pk, annotator=users[i], choice="tie")
        return taken

    results = _run_threads(8, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    per_pair = Counter(Preference.objects.values_list("comparison_id", flat=True))
    assert max(per_pair.values()) <= 2
    assert sum(per_pair.values()) == 20  # 10 pairs x k=2, all labeled
    assert all(len(set(r)) == len(r) for r in results)  # nobody labeled a pair twice


@pytest.mark.django_db(transaction=True)
def test_concurrent_leases_respect_k_while_held(make_user: Any) -> None:
    """12 annotators grab leases at once on 4 pairs with k=2: 8 leases, no more."""
    campaign = CampaignFactory(overlap_k=2)
    make_pairs(campaign, 4)
    users = [make_user() for _ in range(12)]

    def grab(i: int) -> int | None:
        try:
            return comparison_lease_next(
                campaign=campaign, annotator=users[i]
            ).comparison_id
        except NothingToLabel:
            return None

    results = _run_threads(12, grab)
    assert not [r for r in results if isinstance(r, Exception)], results
    taken = Counter(r for r in results if r is not None)
    assert sum(taken.values()) == 8
    assert max(taken.values()) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_submits_give_exactly_one_preference(
    annotator: Any,
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)

    def submit(i: int) -> bool:
        return preference_record(
            lease_id=lease.pk,
            annotator=annotator,
            choice="left" if i % 2 else "right",
            client_request_id="r1",
        ).created

    results = _run_threads(6, submit)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert results.count(True) == 1
    assert Preference.objects.count() == 1
    pair = Comparison.objects.get()
    assert pair.label_count == 1 and pair.status == Comparison.Status.COMPLETE


# ---------------------------------------------------------------- what the annotator meant


def _labeled(annotator: Any, **campaign_kwargs: Any) -> Preference:
    campaign = CampaignFactory(**campaign_kwargs)
    make_pairs(campaign, 2)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    return preference_record(
        lease_id=lease.pk,
        annotator=annotator,
        choice="left",
        strength=-2,
        rationale="cites its source",
    ).preference


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("choice", "strength"),
    [("left", 3), ("left", 1), ("right", -1), ("right", -3), ("tie", 2)],
)
def test_strength_pointing_to_the_other_side_is_refused(
    annotator: Any, choice: str, strength: int
) -> None:
    """Screen strength is negative for left: "left is better" with "right,
    much" contradicts itself and stores nothing."""
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    with pytest.raises(LabelingError, match="strength"):
        preference_record(
            lease_id=lease.pk, annotator=annotator, choice=choice, strength=strength
        )
    assert not Preference.objects.exists()
    assert Comparison.objects.get(pk=lease.comparison_id).label_count == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("choice", "strength"),
    [("left", -3), ("left", 0), ("right", 2), ("tie", 0), ("both_bad", 1)],
)
def test_strength_on_the_chosen_side_is_accepted(
    annotator: Any, choice: str, strength: int
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    result = preference_record(
        lease_id=lease.pk, annotator=annotator, choice=choice, strength=strength
    )
    assert result.created


@pytest.mark.django_db
def test_revise_records_a_new_version_and_keeps_the_earlier_answer(
    annotator: Any,
) -> None:
    pref = _labeled(annotator)
    first_choice, first_strength = pref.choice, pref.strength

    revised = preference_revise(
        preference_id=pref.pk, annotator=annotator, choice="right", strength=1
    )

    pref.refresh_from_db()
    assert pref.version == revised.version == 2
    assert pref.revised_at is not None
    assert pref.choice == ("b" if pref.a_on_left else "a")
    assert pref.strength == (1 if pref.a_on_left else -1)
    assert pref.rationale == "cites its source"  # left out: kept
    old = PreferenceRevision.objects.get(preference=pref)
    assert (old.version, old.choice, old.strength, old.rationale) == (
        1,
        first_choice,
        first_strength,
        "cites its source",
    )
    assert Preference.objects.count() == 1
    assert Comparison.objects.get(pk=pref.comparison_id).label_count == 1


@pytest.mark.django_db
def test_revise_with_a_contradicting_strength_is_refused(annotator: Any) -> None:
    pref = _labeled(annotator)
    with pytest.raises(LabelingError, match="strength says left"):
        # The kept strength (-2, left clearly) contradicts the new choice.
        preference_revise(preference_id=pref.pk, annotator=annotator, choice="right")
    pref.refresh_from_db()
    assert pref.version == 1
    assert not PreferenceRevision.objects.exists()


@pytest.mark.django_db
def test_revise_after_the_edit_window_is_refused(annotator: Any) -> None:
    pref = _labeled(annotator, label_edit_minutes=5)
    Preference.objects.filter(pk=pref.pk).update(
        created_at=timezone.now() - timedelta(minutes=6)
    )
    with pytest.raises(LabelEditRefused, match="5 minutes"):
        preference_revise(
            preference_id=pref.pk, annotator=annotator, choice="tie", strength=None
        )
    pref.refresh_from_db()
    assert pref.version == 1 and not PreferenceRevision.objects.exists()


@pytest.mark.django_db
def test_campaign_with_no_edit_window_never_allows_changes(annotator: Any) -> None:
    pref = _labeled(annotator, label_edit_minutes=0)
    with pytest.raises(LabelEditRefused, match="cannot be changed"):
        preference_revise(preference_id=pref.pk, annotator=annotator, rationale="x")


@pytest.mark.django_db
def test_revise_of_someone_elses_label_is_not_found(make_user: Any) -> None:
    owner, other = make_user(), make_user()
    pref = _labeled(owner)
    with pytest.raises(LabelNotFound):
        preference_revise(preference_id=pref.pk, annotator=other, choice="tie")


@pytest.mark.django_db
def test_label_in_a_snapshot_is_final_and_the_snapshot_has_its_latest_version(
    annotator: Any,
) -> None:
    pref = _labeled(annotator)
    Prompt.objects.filter(campaign_id=pref.comparison.campaign_id).update(split="train")
    preference_revise(
        preference_id=pref.pk, annotator=annotator, choice="right", strength=3
    )
    snapshot = dataset_snapshot_create(campaign=pref.comparison.campaign)

    comparison = pref.comparison
    right_text = (
        comparison.completion_b.text if pref.a_on_left else comparison.completion_a.text
    )
    rows = [
        json.loads(line)
        for line in (snapshot_data_dir(snapshot, "dpo") / "train.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [r["chosen"] for r in rows] == [right_text]
    with pytest.raises(LabelEditRefused, match="snapshot"):
        preference_revise(preference_id=pref.pk, annotator=annotator, choice="tie")
    pref.refresh_from_db()
    assert pref.version == 2


@pytest.mark.django_db
def test_export_reads_the_latest_version(annotator: Any) -> None:
    pref = _labeled(annotator)
    preference_revise(
        preference_id=pref.pk, annotator=annotator, choice="right", strength=2
    )
    (row,) = preference_export_rows(campaign=pref.comparison.campaign)
    comparison = pref.comparison
    right_text = (
        comparison.completion_b.text if pref.a_on_left else comparison.completion_a.text
    )
    assert (row["chosen"], row["version"], row["strength"]) == (right_text, 2, 2)


@pytest.mark.django_db
def test_answering_an_answered_pair_again_changes_the_label_only_when_different(
    annotator: Any,
) -> None:
    """The page submits with ``revise``: the same answer again (a double
    click, a retry) is no new version; a different one is."""
    pref = _labeled(annotator)
    same = preference_record(
        lease_id=pref.lease_id,
        annotator=annotator,
        choice="left",
        strength=-2,
        rationale="cites its source",
        revise=True,
    )
    assert not same.created and not same.revised and same.preference.version == 1
    changed = preference_record(
        lease_id=pref.lease_id,
        annotator=annotator,
        choice="both_bad",
        revise=True,
    )
    assert changed.revised and changed.preference.version == 2
    assert changed.preference.choice == "both_bad"
    # Without ``revise`` (the API's idempotent POST) nothing changes.
    again = preference_record(lease_id=pref.lease_id, annotator=annotator, choice="tie")
    assert not again.revised and again.preference.choice == "both_bad"
    assert PreferenceRevision.objects.filter(preference=pref).count() == 1


# ---------------------------------------------------------------- late submit
# A pair leased while its campaign was active and submitted after an admin
# paused or archived the campaign is recorded (nothing submitted is lost);
# no new pair is served. Service, API and page agree.


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Campaign.Status.PAUSED, Campaign.Status.ARCHIVED])
def test_a_pair_leased_before_a_pause_is_recorded_after_it(
    annotator: Any, status: str
) -> None:
    """The lease, not the campaign's current status, lets its annotator answer."""
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    Campaign.objects.filter(pk=campaign.pk).update(status=status)

    result = preference_record(lease_id=lease.pk, annotator=annotator, choice="left")

    assert result.created
    pair.refresh_from_db()
    lease.refresh_from_db()
    assert pair.label_count == 1 and pair.status == Comparison.Status.COMPLETE
    assert lease.status == Lease.Status.SUBMITTED


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Campaign.Status.PAUSED, Campaign.Status.ARCHIVED])
def test_a_paused_campaign_serves_no_pair_not_even_the_live_lease(
    annotator: Any, status: str
) -> None:
    """After a pause the queue hands out nothing, not the annotator's live
    lease either, and reserves no slot."""
    campaign = CampaignFactory(overlap_k=2)
    make_pairs(campaign, 3)
    comparison_lease_next(campaign=campaign, annotator=annotator)
    campaign.status = status
    campaign.save(update_fields=["status", "updated_at"])

    with pytest.raises(CampaignNotAvailable, match="not accepting labels"):
        comparison_lease_next(campaign=campaign, annotator=annotator)
    assert Lease.objects.filter(campaign=campaign).count() == 1
    assert sum(len(c.lease_expiries) for c in campaign.comparisons.all()) == 1


@pytest.mark.django_db
def test_late_api_submit_to_a_paused_campaign_is_stored_and_next_is_refused(
    annotator: Any, api_client_for: Any
) -> None:
    """The API: 201 for the late label, then 403 with a reason for the next pair."""
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    api = api_client_for(annotator)
    leased = api.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert leased.status_code == 200
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)

    submitted = api.post(
        f"/api/v1/leases/{leased.data['lease_id']}/preference/",
        {"choice": "right"},
        format="json",
    )
    assert submitted.status_code == 201
    assert Preference.objects.filter(annotator=annotator).count() == 1

    refused = api.post(f"/api/v1/campaigns/{campaign.pk}/next/")
    assert refused.status_code == 403
    assert "not open to you" in refused.data["detail"]
    assert Lease.objects.filter(annotator=annotator).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [False, True])
def test_late_page_submit_to_a_paused_campaign_is_stored_and_says_so(
    annotator: Any, client: Any, htmx: bool
) -> None:
    """The labeling page: the label is stored and the annotator is sent to the
    campaign list with a notice that says so, instead of a 403 that drops it."""
    campaign = CampaignFactory(name="Helpfulness")
    make_pairs(campaign, 2)
    client.force_login(annotator)
    started = client.post(f"/campaigns/{campaign.pk}/label/")
    lease = Lease.objects.get(annotator=annotator, campaign=campaign)
    assert started.status_code == 302
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)

    headers = {"HX-Request": "true"} if htmx else {}
    response = client.post(
        f"/campaigns/{campaign.pk}/label/{lease.pk}/submit/",
        {"choice": "right", "client_request_id": "late-1"},
        headers=headers,
    )

    if htmx:
        assert response.status_code == 200 and response["HX-Redirect"] == "/"
    else:
        assert response.status_code == 302 and response["Location"] == "/"
    assert Preference.objects.filter(annotator=annotator).count() == 1
    assert Lease.objects.filter(annotator=annotator).count() == 1
    page = client.get("/")
    assert "“Helpfulness” is paused: what you just submitted is saved" in (
        page.content.decode()
    )
