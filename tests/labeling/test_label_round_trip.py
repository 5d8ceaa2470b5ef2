"""One round trip per label: the submit that answers with the next pair
(``POST /api/v1/leases/<id>/preference/?next=1`` and the htmx submit), its
guarantees under concurrency, the statements a label costs, and the
completion HTML stored once."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling.models import Campaign, Comparison, Completion, Lease, Preference
from labeling.rendering import completion_html
from labeling.services.queue import (
    comparison_lease_next,
    preference_record_and_lease_next,
)
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, CompletionFactory, make_pairs
from tests.labeling.statements import count_round_trips

# Statements per label, BEGIN/COMMIT and the CONN_HEALTH_CHECKS probe
# included (before the one-round-trip submit: 23 through the API in two
# requests, 28 through the htmx submit; before the label and the next lease
# became one statement and the health check stopped sending SELECT 1 to a
# quiet connection: 6 and 11).
API_LABEL_BUDGET = 4
API_NEXT_BUDGET = 5
BROWSER_LABEL_BUDGET = 4


def _submit_url(lease_id: int, *, next_pair: bool = True) -> str:
    url = reverse("api-preference-create", args=[lease_id])
    return url + "?next=1" if next_pair else url


@pytest.mark.django_db
def test_submit_with_next_records_the_label_and_answers_with_the_next_pair(
    annotator: Any, api_client_for: Any
) -> None:
    """?next=1: the label is stored, its lease answered, and the body carries
    the next pair, leased to the same annotator in the same campaign."""
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    api = api_client_for(annotator)
    first = api.post(reverse("api-comparison-next", args=[campaign.pk])).json()
    response = api.post(
        _submit_url(first["lease_id"]), {"choice": "left"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True and body["choice"] == "left"
    following = body["next"]
    assert following["campaign_id"] == campaign.pk
    assert following["lease_id"] != first["lease_id"]
    assert set(following) == {
        "lease_id",
        "campaign_id",
        "prompt",
        "is_chat",
        "left",
        "right",
        "expires_at",
    }
    assert Lease.objects.get(pk=first["lease_id"]).status == Lease.Status.SUBMITTED
    new_lease = Lease.objects.get(pk=following["lease_id"])
    assert new_lease.annotator == annotator
    assert new_lease.status == Lease.Status.ACTIVE
    comparison = Comparison.objects.get(pk=new_lease.comparison_id)
    a, b = comparison.completion_a.text, comparison.completion_b.text
    assert (following["left"], following["right"]) == (
        (a, b) if new_lease.a_on_left else (b, a)
    )
    pref = Preference.objects.get(pk=body["preference_id"])
    assert pref.lease_id == first["lease_id"]


@pytest.mark.django_db
def test_submit_without_next_keeps_the_old_answer(
    annotator: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    api = api_client_for(annotator)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    response = api.post(
        _submit_url(lease.pk, next_pair=False), {"choice": "tie"}, format="json"
    )
    assert response.status_code == 201
    assert set(response.json()) == {"preference_id", "created", "choice"}
    assert Lease.objects.count() == 1


@pytest.mark.django_db
def test_retried_submit_with_next_is_idempotent_and_returns_the_same_next_pair(
    annotator: Any, api_client_for: Any
) -> None:
    """A retry (lost response) records nothing twice and leases nothing
    new: the annotator's live lease comes back."""
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    api = api_client_for(annotator)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    first = api.post(_submit_url(lease.pk), {"choice": "right"}, format="json")
    again = api.post(_submit_url(lease.pk), {"choice": "right"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["created"] is False
    assert again.json()["preference_id"] == first.json()["preference_id"]
    assert again.json()["next"]["lease_id"] == first.json()["next"]["lease_id"]
    assert Preference.objects.count() == 1
    assert Lease.objects.filter(status=Lease.Status.ACTIVE).count() == 1


@pytest.mark.django_db
def test_submit_with_next_on_the_last_pair_says_nothing_is_left(
    annotator: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    response = api_client_for(annotator).post(
        _submit_url(lease.pk), {"choice": "left"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["next"] is None
    assert response.json()["no_next"] == "empty"
    assert Preference.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("gold", [False, True])
def test_the_label_and_its_next_lease_never_hand_back_the_pair_just_labeled(
    annotator: Any, gold: bool
) -> None:
    """The label and the next lease are one statement, whose snapshot still
    shows the labeled pair open to the annotator (k=3 leaves it two slots; a
    gold pair has no k): the pair is excluded by id, so the next is the other
    pair, and after that nothing."""
    campaign = CampaignFactory(overlap_k=3, gold_rate=1.0 if gold else 0.0)
    make_pairs(campaign, 2)
    if gold:
        Comparison.objects.filter(campaign=campaign).update(
            is_gold=True, gold_choice="a"
        )
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    first = preference_record_and_lease_next(
        lease_id=lease.pk, annotator=annotator, choice="left"
    )
    assert first.record.created and first.next is not None
    assert first.next.lease.comparison_id != lease.comparison_id
    assert first.next.lease.pk != lease.pk
    second = preference_record_and_lease_next(
        lease_id=first.next.lease.pk, annotator=annotator, choice="right"
    )
    assert second.record.created
    assert second.next is None and second.no_next == "empty"
    assert Lease.objects.filter(status=Lease.Status.ACTIVE).count() == 0
    labeled = Comparison.objects.get(pk=lease.comparison_id)
    assert labeled.label_count == 1 and labeled.done_by == [annotator.pk]
    assert labeled.lease_expiries == []


@pytest.mark.django_db
def test_submit_with_next_after_a_pause_is_saved_and_leases_nothing(
    annotator: Any, api_client_for: Any
) -> None:
    """Nothing submitted is lost; a paused campaign serves no new pair."""
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
    response = api_client_for(annotator).post(
        _submit_url(lease.pk), {"choice": "left"}, format="json"
    )
    assert response.status_code == 201
    assert (response.json()["next"], response.json()["no_next"]) == (None, "closed")
    assert Preference.objects.count() == 1
    assert Lease.objects.count() == 1


@pytest.mark.django_db
def test_submit_with_next_leases_nothing_to_an_annotator_no_longer_assigned(
    make_user: Any, api_client_for: Any
) -> None:
    alice, bob = make_user(), make_user()
    campaign = CampaignFactory()
    campaign.annotators.set([alice, bob])
    make_pairs(campaign, 3)
    lease = comparison_lease_next(campaign=campaign, annotator=alice)
    campaign.annotators.set([bob])
    response = api_client_for(alice).post(
        _submit_url(lease.pk), {"choice": "left"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["no_next"] == "closed"
    assert Lease.objects.filter(annotator=alice).count() == 1


@pytest.mark.django_db
def test_submit_with_next_for_someone_elses_lease_is_refused(
    make_user: Any, api_client_for: Any
) -> None:
    alice, bob = make_user(), make_user()
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    lease = comparison_lease_next(campaign=campaign, annotator=alice)
    response = api_client_for(bob).post(
        _submit_url(lease.pk), {"choice": "left"}, format="json"
    )
    assert response.status_code in (400, 404)
    assert Preference.objects.count() == 0
    assert Lease.objects.filter(annotator=bob).count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_labels_with_next_never_exceed_k_nor_double_lease(
    make_user: Any,
) -> None:
    """Six annotators label a 2-overlap campaign as fast as they can, each
    submit leasing the next pair: no pair gets more than k labels, nobody
    labels a pair twice, nobody ever holds two live leases, nothing is lost."""
    campaign = CampaignFactory(overlap_k=2)
    make_pairs(campaign, 12)
    users = [make_user() for _ in range(6)]
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []
    recorded: Counter[int] = Counter()
    lock = threading.Lock()

    def work(user: Any) -> None:
        try:
            barrier.wait()
            try:
                lease = comparison_lease_next(campaign=campaign, annotator=user)
            except Exception:  # noqa: BLE001 - nothing to label is fine here
                return
            lease_id: int | None = lease.pk
            while lease_id is not None:
                outcome = preference_record_and_lease_next(
                    lease_id=lease_id, annotator=user, choice="left"
                )
                with lock:
                    recorded[user.pk] += int(outcome.record.created)
                live = Lease.objects.filter(
                    annotator=user,
                    status=Lease.Status.ACTIVE,
                    expires_at__gt=timezone.now(),
                ).count()
                assert live <= 1
                lease_id = outcome.next.lease.pk if outcome.next else None
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    per_pair = Counter(Preference.objects.values_list("comparison_id", flat=True))
    assert max(per_pair.values()) <= 2
    assert sum(per_pair.values()) == 24  # every slot of every pair, none lost
    assert sum(recorded.values()) == 24
    pairs = Counter(Preference.objects.values_list("comparison_id", "annotator_id"))
    assert max(pairs.values()) == 1
    for comparison in Comparison.objects.all():
        assert comparison.label_count == per_pair[comparison.pk]
        assert comparison.status == Comparison.Status.COMPLETE


@pytest.mark.django_db(transaction=True)
def test_statements_per_label_through_the_api(
    annotator: Any, api_client_for: Any
) -> None:
    """A label through the API (submit answering with the next pair) costs
    at most API_LABEL_BUDGET statements, transaction control and the health
    check included; the first pair of a session at most API_NEXT_BUDGET."""
    campaign = CampaignFactory()
    make_pairs(campaign, 5)
    api = api_client_for(annotator)
    next_url = reverse("api-comparison-next", args=[campaign.pk])
    lease_id = api.post(next_url).json()["lease_id"]  # warms the token cache
    lease_id = api.post(
        _submit_url(lease_id), {"choice": "left"}, format="json"
    ).json()["next"]["lease_id"]
    with count_round_trips() as label:
        response = api.post(_submit_url(lease_id), {"choice": "left"}, format="json")
    assert response.status_code == 201 and response.json()["next"] is not None
    assert label.total <= API_LABEL_BUDGET, label.describe()
    Lease.objects.filter(annotator=annotator).update(status=Lease.Status.EXPIRED)
    with count_round_trips() as first_pair:
        assert api.post(next_url).status_code == 200
    assert first_pair.total <= API_NEXT_BUDGET, first_pair.describe()


@pytest.mark.django_db(transaction=True)
def test_statements_per_label_through_the_page(annotator: Any) -> None:
    """The htmx submit that answers with the next card costs at most
    BROWSER_LABEL_BUDGET statements, session and user lookups included."""
    campaign = CampaignFactory()
    make_pairs(campaign, 5)
    client = Client()
    assert client.login(username=annotator.username, password=PASSWORD)
    client.post(
        reverse("labeling:label-start", args=[campaign.pk]), HTTP_HX_REQUEST="true"
    )
    lease = Lease.objects.get(annotator=annotator, status=Lease.Status.ACTIVE)
    url = reverse("labeling:lease-submit", args=[campaign.pk, lease.pk])
    with count_round_trips() as label:
        response = client.post(
            url, {"choice": "right", "client_request_id": "b"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert Preference.objects.filter(annotator=annotator).count() == 1
    following = Lease.objects.get(annotator=annotator, status=Lease.Status.ACTIVE)
    assert response["HX-Push-Url"].endswith(f"/{following.pk}/")
    assert label.total <= BROWSER_LABEL_BUDGET, label.describe()


@pytest.mark.django_db
def test_card_shows_the_stored_html_of_each_completion(
    logged_in_annotator: Client, annotator: Any
) -> None:
    """The card uses Completion.html as stored, not a render per card."""
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    Completion.objects.filter(pk=pair.completion_a_id).update(html="<p>stored-a</p>")
    Completion.objects.filter(pk=pair.completion_b_id).update(html="<p>stored-b</p>")
    response = logged_in_annotator.post(
        reverse("labeling:label-start", args=[campaign.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert b"<p>stored-a</p>" in response.content
    assert b"<p>stored-b</p>" in response.content


@pytest.mark.django_db
def test_completion_html_is_the_sanitised_markdown_and_imports_store_it(
    admin_user: Any, api_client_for: Any
) -> None:
    html = completion_html("**bold** <script>alert(1)</script>")
    assert "<strong>bold</strong>" in html and "<script>" not in html
    campaign = CampaignFactory()
    line = {
        "prompt": "Q?",
        "completions": [{"text": "*one*"}, {"text": "two"}],
    }
    upload = io.BytesIO(json.dumps(line).encode())
    upload.name = "data.jsonl"
    response = api_client_for(admin_user).post(
        reverse("api-campaign-import", args=[campaign.pk]),
        {"file": upload},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    stored = dict(Completion.objects.values_list("text", "html"))
    assert stored == {"*one*": "<p><em>one</em></p>\n", "two": "<p>two</p>\n"}


@pytest.mark.django_db
def test_migration_renders_the_html_of_completions_stored_before_it() -> None:
    from importlib import import_module

    migration = import_module("labeling.migrations.0007_completion_html")
    old = CompletionFactory(text="# Title", html="")
    empty = CompletionFactory(text="", html="")
    migration.render_existing(django_apps, None)
    old.refresh_from_db()
    empty.refresh_from_db()
    assert old.html == completion_html("# Title")
    assert empty.html == ""


@pytest.fixture
def logged_in_annotator(annotator: Any) -> Client:
    client = Client()
    assert client.login(username=annotator.username, password=PASSWORD)
    return client


@pytest.mark.django_db
def test_card_footer_lists_the_recent_labels_as_the_annotator_gave_them(
    annotator: Any, make_user: Any
) -> None:
    """The card's count of labels today and the recent labels; each
    recent label reads in screen sides (choice and strength as given), shows
    its latest version, newest first, and only the annotator's own labels in
    this campaign."""
    from labeling import selectors
    from labeling.services.queue import preference_record, preference_revise

    campaign = CampaignFactory(overlap_k=2)
    other_campaign = CampaignFactory()
    make_pairs(campaign, 7)
    make_pairs(other_campaign, 1)
    answers = []
    for i in range(6):
        lease = comparison_lease_next(campaign=campaign, annotator=annotator)
        answers.append(
            preference_record(
                lease_id=lease.pk,
                annotator=annotator,
                choice="left",
                strength=-2 if i == 5 else None,
            ).preference
        )
    preference_revise(preference_id=answers[4].pk, annotator=annotator, choice="tie")
    somebody = make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=somebody)
    preference_record(lease_id=lease.pk, annotator=somebody, choice="right")
    lease = comparison_lease_next(campaign=other_campaign, annotator=annotator)
    preference_record(lease_id=lease.pk, annotator=annotator, choice="right")
    # Labeled before midnight: not today's, still among the latest.
    yesterday = timezone.localtime().replace(hour=0, minute=0) - timedelta(hours=1)
    Preference.objects.filter(pk=answers[0].pk).update(created_at=yesterday)
    Lease.objects.filter(pk=answers[0].lease_id).update(updated_at=yesterday)

    progress = selectors.annotator_card_progress(campaign=campaign, annotator=annotator)
    recent = selectors.annotator_recent_labels(
        campaign=campaign, annotator=annotator, recent=6
    )
    assert progress == {
        "labels_today": 5,
        "pairs_left": 1,
        "pairs_left_more": False,
    }
    assert [r.preference_id for r in recent] == [a.pk for a in answers[::-1]]
    newest, revised = recent[0], recent[1]
    assert (newest.choice, newest.strength, newest.choice_label) == (
        "left",
        -2,
        "Left is better",
    )
    assert (revised.choice, revised.version) == ("tie", 2)
    assert all(r.refusal is None and r.editable_until for r in recent[:5])
    assert recent[5].refusal  # yesterday's: past the window to change it
    assert recent[0].prompt_excerpt and recent[0].lease_id == answers[5].lease_id


@pytest.mark.django_db
def test_card_footer_read_by_the_label_statement_is_the_footer_read_after_it(
    annotator: Any, make_user: Any
) -> None:
    """The htmx submit's progress comes from the label's own statement, which
    cannot see the label it writes: it still counts it and leaves its pair
    out of the pairs left, exactly as a read after it."""
    from labeling import selectors

    campaign = CampaignFactory(overlap_k=2)
    make_pairs(campaign, 9)
    somebody = make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=somebody)
    preference_record_and_lease_next(
        lease_id=lease.pk, annotator=somebody, choice="right"
    )
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    for i in range(7):
        outcome = preference_record_and_lease_next(
            lease_id=lease.pk,
            annotator=annotator,
            choice=["left", "right", "tie"][i % 3],
            card_footer=True,
        )
        read_after = selectors.annotator_card_progress(
            campaign=campaign, annotator=annotator
        )
        assert outcome.card_footer == read_after
        assert read_after == {
            "labels_today": i + 1,
            "pairs_left": 9 - (i + 1),
            "pairs_left_more": False,
        }
        lease = outcome.next.lease


@pytest.mark.django_db
def test_card_counts_pairs_left_up_to_a_cap(
    annotator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card's progress is one statement; past the cap it says "N+"
    instead of counting every pending pair."""
    from labeling import selectors

    campaign = CampaignFactory()
    make_pairs(campaign, 4)
    lease = comparison_lease_next(campaign=campaign, annotator=annotator)
    preference_record_and_lease_next(
        lease_id=lease.pk, annotator=annotator, choice="left"
    )
    progress = selectors.annotator_card_progress(campaign=campaign, annotator=annotator)
    assert progress == {
        "labels_today": 1,
        "pairs_left": 3,
        "pairs_left_more": False,
    }
    monkeypatch.setattr(selectors, "CARD_PAIRS_LEFT_CAP", 2)
    capped = selectors.annotator_card_progress(campaign=campaign, annotator=annotator)
    assert (capped["pairs_left"], capped["pairs_left_more"]) == (2, True)
    client = Client()
    assert client.login(username=annotator.username, password=PASSWORD)
    page = client.get(reverse("labeling:label-done", args=[campaign.pk]))
    assert b"<strong>2+</strong> pairs left" in page.content
