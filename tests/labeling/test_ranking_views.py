"""The ranking card's views (campaign mode "rank"): the card, plain and htmx
submits answered with the next card, and bad input refused with nothing
stored."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.forms import competition_ranks
from labeling.models import Campaign, Comparison, Lease, Preference, Ranking
from labeling.services import queue
from labeling.services.ranking import (
    ranked_comparison_create,
    ranked_gold_set,
    ranking_record,
)
from models_hub.services.reports import campaign_reports_refresh
from tests.conftest import PASSWORD
from tests.labeling.factories import (
    CampaignFactory,
    CompletionFactory,
    PromptFactory,
    make_pairs,
)


def make_rankings(campaign: Campaign, n: int, *, k: int = 4) -> list[Comparison]:
    comparisons = []
    for _ in range(n):
        prompt = PromptFactory(campaign=campaign)
        completions = [CompletionFactory(prompt=prompt) for _ in range(k)]
        comparisons.append(
            ranked_comparison_create(
                campaign=campaign, prompt=prompt, completions=completions
            )
        )
    return comparisons


@pytest.fixture
def logged_in(annotator: Any) -> Client:
    client = Client()
    assert client.login(username=annotator.username, password=PASSWORD)
    return client


@pytest.fixture
def leased(logged_in: Client, annotator: Any) -> tuple[Campaign, Lease]:
    """A rank campaign of two comparisons of four answers, the first leased."""
    campaign = CampaignFactory(mode=Campaign.Mode.RANK)
    make_rankings(campaign, 2)
    start = logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    assert start.status_code == 302
    return campaign, Lease.objects.get(annotator=annotator)


def submit_url(campaign: Campaign, lease: Lease) -> str:
    return reverse("labeling:lease-rank-submit", args=[campaign.pk, lease.pk])


def places(*ranks: int) -> dict[str, str]:
    return {f"rank_{i}": str(r) for i, r in enumerate(ranks)}


@pytest.mark.django_db
def test_card_shows_the_answers_lettered_in_the_lease_order(
    logged_in: Client, leased: tuple[Campaign, Lease]
) -> None:
    campaign, lease = leased
    page = logged_in.get(reverse("labeling:lease-detail", args=[campaign.pk, lease.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("data-rank-item") == 4
    texts = Comparison.objects.get(pk=lease.comparison_id).items.values_list(
        "completion_id", "completion__text"
    )
    text_of = dict(texts)
    # Shown in the lease's shuffled order, as A, B, C, D; no source named.
    positions = [html.index(text_of[cid]) for cid in lease.order]
    assert positions == sorted(positions)
    for letter in "ABCD":
        assert f"Answer {letter}</h2>" in html
    assert "writer" not in html
    assert submit_url(campaign, lease) in html


@pytest.mark.django_db
def test_plain_post_stores_the_ranking_and_redirects_to_the_next(
    logged_in: Client, annotator: Any, leased: tuple[Campaign, Lease]
) -> None:
    campaign, lease = leased
    response = logged_in.post(
        submit_url(campaign, lease),
        {
            **places(2, 4, 1, 2),
            "none_acceptable": "1",
            "reason": " All of them invent a date. ",
            "client_request_id": "r1",
            "time_spent_ms": "5400",
        },
    )
    assert response.status_code == 302
    ranking = Ranking.objects.get(annotator=annotator)
    assert ranking.order == lease.order and ranking.ranks == [2, 4, 1, 2]
    assert ranking.none_acceptable and ranking.reason == "All of them invent a date."
    assert ranking.client_request_id == "r1" and ranking.time_spent_ms == 5400
    assert Preference.objects.filter(ranking=ranking).count() == 6
    lease.refresh_from_db()
    assert lease.status == Lease.Status.SUBMITTED
    nxt = Lease.objects.get(annotator=annotator, status=Lease.Status.ACTIVE)
    assert response["Location"] == reverse(
        "labeling:lease-detail", args=[campaign.pk, nxt.pk]
    )
    # Back on the ranked lease: what was given, no form.
    page = logged_in.get(
        reverse("labeling:lease-detail", args=[campaign.pk, lease.pk])
    ).content.decode()
    assert "You already ranked these answers" in page
    assert "C, A = D, B" in page and "none of them acceptable" in page
    assert 'id="rank-form"' not in page


@pytest.mark.django_db
def test_htmx_submit_answers_with_the_next_card_then_done(
    logged_in: Client, annotator: Any, leased: tuple[Campaign, Lease]
) -> None:
    campaign, lease = leased
    response = logged_in.post(
        submit_url(campaign, lease), places(1, 2, 3, 4), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    nxt = Lease.objects.get(annotator=annotator, status=Lease.Status.ACTIVE)
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="comparison-card"')
    assert submit_url(campaign, nxt) in html
    assert response["HX-Push-Url"] == reverse(
        "labeling:lease-detail", args=[campaign.pk, nxt.pk]
    )
    # The same submit again (a retry) stores nothing new.
    again = logged_in.post(
        submit_url(campaign, lease), places(4, 3, 2, 1), HTTP_HX_REQUEST="true"
    )
    assert again.status_code == 200
    assert list(Ranking.objects.values_list("ranks", flat=True)) == [[1, 2, 3, 4]]

    done = logged_in.post(
        submit_url(campaign, nxt), places(1, 1, 1, 1), HTTP_HX_REQUEST="true"
    )
    assert done.status_code == 200
    assert "Nothing left for you here" in done.content.decode()
    assert done["HX-Push-Url"] == reverse("labeling:label-done", args=[campaign.pk])
    assert Ranking.objects.get(lease=nxt).ranks == [1, 1, 1, 1]


@pytest.mark.django_db
def test_skip_gives_the_comparison_back_and_stores_no_ranking(
    logged_in: Client, annotator: Any, leased: tuple[Campaign, Lease]
) -> None:
    campaign, lease = leased
    response = logged_in.post(submit_url(campaign, lease), {"intent": "skip"})
    assert response.status_code == 302
    lease.refresh_from_db()
    assert lease.status == Lease.Status.SKIPPED
    assert not Ranking.objects.exists()


BAD_INPUT = {
    "a place missing": places(1, 2, 3),
    "a place above K": places(1, 2, 3, 5),
    "place zero": places(0, 1, 2, 3),
    "not a number": {**places(1, 2, 3), "rank_3": "x"},
    "a reason too long": {**places(1, 2, 3, 4), "reason": "x" * 1001},
    "a negative time": {**places(1, 2, 3, 4), "time_spent_ms": "-5"},
    "an unknown intent": {**places(1, 2, 3, 4), "intent": "delete"},
}


@pytest.mark.django_db
def test_bad_input_is_refused_with_a_reason_and_stores_nothing(
    logged_in: Client, leased: tuple[Campaign, Lease]
) -> None:
    """Every case, as htmx and as a plain post, on one lease: 400 with the
    card again (the same lease) and an alert; nothing stored."""
    campaign, lease = leased
    for case, data in BAD_INPUT.items():
        for headers in ({"HTTP_HX_REQUEST": "true"}, {}):
            response = logged_in.post(submit_url(campaign, lease), data, **headers)
            assert response.status_code == 400, case
            html = response.content.decode()
            assert 'class="error" role="alert"' in html, case
            assert submit_url(campaign, lease) in html, case
    assert not Ranking.objects.exists() and not Preference.objects.exists()
    lease.refresh_from_db()
    assert lease.status == Lease.Status.ACTIVE


@pytest.mark.django_db
def test_posted_places_are_kept_when_the_submit_is_refused(
    logged_in: Client, leased: tuple[Campaign, Lease]
) -> None:
    campaign, lease = leased
    response = logged_in.post(
        submit_url(campaign, lease),
        {**places(3, 1, 3, 2), "reason": "y" * 1001, "none_acceptable": "1"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    html = response.content.decode()
    for i, place in enumerate((3, 1, 3, 2)):
        select = html[html.index(f'name="rank_{i}"') :]
        select = select[: select.index("</select>")]
        assert f'<option value="{place}" selected>' in select
    assert "data-none checked" in html


@pytest.mark.django_db
def test_another_annotators_lease_or_a_pair_lease_is_not_found(
    logged_in: Client, make_user: Any, leased: tuple[Campaign, Lease]
) -> None:
    campaign, lease = leased
    other = Client()
    assert other.login(username=make_user().username, password=PASSWORD)
    assert (
        other.post(submit_url(campaign, lease), places(1, 2, 3, 4)).status_code == 404
    )

    pairs = CampaignFactory()
    make_pairs(pairs, 1)
    logged_in.post(reverse("labeling:label-start", args=[pairs.pk]))
    pair_lease = Lease.objects.get(campaign=pairs)
    response = logged_in.post(submit_url(pairs, pair_lease), places(1, 2, 3, 4))
    assert response.status_code == 404
    assert not Ranking.objects.exists() and not Preference.objects.exists()
    lease.refresh_from_db()
    assert lease.status == Lease.Status.ACTIVE


def test_posted_places_become_competition_ranks() -> None:
    """Any numbers, best lowest: ties share the better rank (1, 1, 3)."""
    assert competition_ranks([4, 1, 4, 2]) == [3, 1, 3, 2]
    assert competition_ranks([1, 1, 1]) == [1, 1, 1]
    assert competition_ranks([2, 3, 3, 1]) == [2, 3, 3, 1]


@pytest.mark.django_db
def test_campaign_form_creates_a_rank_campaign_and_keeps_its_mode(
    make_user: Any,
) -> None:
    """The mode is chosen on create and shown on the campaign page; once the
    campaign has comparisons a change is refused on the field (400) and the
    mode stays; a form posted without a mode leaves it alone."""
    admin = Client()
    admin.force_login(make_user(ADMIN))
    form = admin.get(reverse("labeling:campaign-create")).content.decode()
    assert 'name="mode"' in form and 'value="rank"' in form
    created = admin.post(
        reverse("labeling:campaign-create"),
        {"name": "Ranked", "status": "active", "mode": "rank"},
    )
    assert created.status_code == 302
    campaign = Campaign.objects.get(name="Ranked")
    assert campaign.mode == Campaign.Mode.RANK
    page = admin.get(reverse("labeling:campaign-detail", args=[campaign.pk]))
    assert (
        '<span class="badge" data-campaign-mode>ranking</span>' in page.content.decode()
    )

    make_rankings(campaign, 1, k=3)
    edit = reverse("labeling:campaign-edit", args=[campaign.pk])
    assert 'value="rank" selected' in admin.get(edit).content.decode()
    refused = admin.post(edit, {"name": "Ranked", "status": "active", "mode": "pair"})
    assert refused.status_code == 400
    assert 'data-field-error="mode"' in refused.content.decode()
    kept = admin.post(edit, {"name": "Ranked again", "status": "active"})
    assert kept.status_code == 302
    campaign.refresh_from_db()
    assert campaign.mode == Campaign.Mode.RANK and campaign.name == "Ranked again"


@pytest.mark.django_db
def test_quality_page_shows_rank_agreement_and_gold_tau(make_user: Any) -> None:
    """Two annotators rank two comparisons the same way; one comparison is
    then made gold: the page shows alpha and W of 1 and tau 1 per annotator."""
    campaign = CampaignFactory(mode=Campaign.Mode.RANK, overlap_k=2)
    comparisons = make_rankings(campaign, 2, k=3)
    canonical = {
        c.pk: list(c.items.order_by("position").values_list("completion_id", flat=True))
        for c in comparisons
    }
    for name in ("ana", "ben"):
        annotator = make_user(ANNOTATOR, username=name)
        for _ in comparisons:
            lease = queue.comparison_lease_next(campaign=campaign, annotator=annotator)
            best_first = canonical[lease.comparison_id]
            ranking_record(
                lease=lease,
                user=annotator,
                ranks=[best_first.index(cid) + 1 for cid in lease.order],
            )
    ranked_gold_set(comparison=comparisons[0], ranks=[1, 2, 3])
    assert campaign_reports_refresh(campaign_id=campaign.pk)

    reviewer = Client()
    reviewer.force_login(make_user(REVIEWER))
    page = reviewer.get(reverse("labeling:campaign-quality", args=[campaign.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    figures = html[
        html.index("data-ranking-quality") : html.index(
            "</section>", html.index("data-ranking-quality")
        )
    ]
    assert "<strong>4</strong> rankings" in figures
    assert "Krippendorff's α (ordinal) <strong>1.000</strong>" in figures
    assert "Kendall's W <strong>1.000</strong>" in figures
    assert "over 1 comparison ranked by ≥ 2" in figures
    gold = html[
        html.index("data-ranking-gold") : html.index(
            "</table>", html.index("data-ranking-gold")
        )
    ]
    assert "<td>ana</td><td>1</td><td>1.00</td>" in gold
    assert "<td>ben</td><td>1</td><td>1.00</td>" in gold
