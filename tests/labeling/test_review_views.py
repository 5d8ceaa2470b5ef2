"""Reviewer pages: the labels browser and its export, the pair page with
gold marked from the sides as shown, adjudication from the quality page."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, REVIEWER
from labeling.models import Comparison, Preference
from models_hub.services.reports import campaign_reports_refresh
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, make_pairs


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _label(
    pair: Comparison,
    user: Any,
    choice: str,
    *,
    a_on_left: bool = True,
    source: str = Preference.Source.ANNOTATOR,
    days_ago: int = 0,
) -> Preference:
    preference = Preference.objects.create(
        comparison=pair,
        annotator=user,
        choice=choice,
        a_on_left=a_on_left,
        source=source,
    )
    if days_ago:
        Preference.objects.filter(pk=preference.pk).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )
    return preference


@pytest.fixture
def labeled(make_user: Any) -> dict[str, Any]:
    """Three pairs: one both annotators agree on, one they disagree on, one
    with a single label (a gold pair, answered a week ago)."""
    campaign = CampaignFactory(overlap_k=2)
    agreed, disputed, single = make_pairs(campaign, 3)
    ann, bea = make_user(username="ann"), make_user(username="bea")
    Comparison.objects.filter(pk=single.pk).update(is_gold=True, gold_choice="a")
    prefs = {
        "ann_agreed": _label(agreed, ann, "a"),
        "bea_agreed": _label(agreed, bea, "a", a_on_left=False),
        "ann_disputed": _label(disputed, ann, "a"),
        "bea_disputed": _label(disputed, bea, "b"),
        "ann_single": _label(single, ann, "b", days_ago=7),
    }
    return {
        "campaign": campaign,
        "pairs": {"agreed": agreed, "disputed": disputed, "single": single},
        "ann": ann,
        "bea": bea,
        "prefs": prefs,
        "reviewer": make_user(REVIEWER, username="rita"),
    }


def _listed(response: Any) -> set[int]:
    return {p.pk for p in response.context["page"].object_list}


@pytest.mark.django_db
def test_labels_browser_filters_by_annotator_choice_agreement_gold_and_date(
    labeled: dict[str, Any],
) -> None:
    """Each filter narrows the list to the labels it names; bad input is a
    400 with the reason, never a 500."""
    client = _client(labeled["reviewer"])
    url = reverse("labeling:campaign-labels", args=[labeled["campaign"].pk])
    p = {k: v.pk for k, v in labeled["prefs"].items()}
    everything = client.get(url)
    assert everything.status_code == 200 and _listed(everything) == set(p.values())
    assert _listed(client.get(url, {"annotator": labeled["bea"].pk})) == {
        p["bea_agreed"],
        p["bea_disputed"],
    }
    assert _listed(client.get(url, {"choice": "b"})) == {
        p["bea_disputed"],
        p["ann_single"],
    }
    assert _listed(client.get(url, {"agreement": "agreed"})) == {
        p["ann_agreed"],
        p["bea_agreed"],
    }
    assert _listed(client.get(url, {"agreement": "disagreed"})) == {
        p["ann_disputed"],
        p["bea_disputed"],
    }
    assert _listed(client.get(url, {"agreement": "single"})) == {p["ann_single"]}
    assert _listed(client.get(url, {"gold": "yes"})) == {p["ann_single"]}
    assert p["ann_single"] not in _listed(client.get(url, {"gold": "no"}))
    today = timezone.localdate()
    assert _listed(client.get(url, {"since": today.isoformat()})) == set(p.values()) - {
        p["ann_single"]
    }
    assert _listed(
        client.get(url, {"until": (today - timedelta(days=3)).isoformat()})
    ) == {p["ann_single"]}
    bad = client.get(url, {"agreement": "mostly", "since": "yesterday"})
    assert bad.status_code == 400
    assert b"Select a valid choice" in bad.content and b"valid date" in bad.content


@pytest.mark.django_db
def test_labels_browser_paginates_and_keeps_the_filters_in_page_links(
    make_user: Any,
) -> None:
    campaign = CampaignFactory()
    ann = make_user(username="ann")
    for pair in make_pairs(campaign, 55):
        _label(pair, ann, "a")
    client = _client(make_user(REVIEWER))
    url = reverse("labeling:campaign-labels", args=[campaign.pk])
    first = client.get(url, {"choice": "a"})
    assert len(first.context["page"].object_list) == 50
    assert "?choice=a&amp;page=2" in first.content.decode()
    second = client.get(url, {"choice": "a", "page": 2})
    assert len(second.context["page"].object_list) == 5
    assert not _listed(first) & _listed(second)


@pytest.mark.django_db
def test_labels_pages_are_for_reviewers_only(
    labeled: dict[str, Any], make_user: Any
) -> None:
    campaign, pair = labeled["campaign"], labeled["pairs"]["agreed"]
    annotator = _client(labeled["ann"])
    for url in (
        reverse("labeling:campaign-labels", args=[campaign.pk]),
        reverse("labeling:campaign-labels-export", args=[campaign.pk]),
        reverse("labeling:comparison-detail", args=[campaign.pk, pair.pk]),
    ):
        assert annotator.get(url).status_code == 403
    gold = reverse("labeling:comparison-gold", args=[campaign.pk, pair.pk])
    assert annotator.post(gold, {"answer": "left", "a_on_left": "1"}).status_code == (
        403
    )
    assert Comparison.objects.get(pk=pair.pk).is_gold is False


@pytest.mark.django_db
def test_export_of_the_filtered_labels_streams_the_training_rows_of_those_labels(
    labeled: dict[str, Any],
) -> None:
    """The export holds the filtered labels only, in the training export's
    format and under its rules (gold pairs are never training rows)."""
    client = _client(labeled["reviewer"])
    campaign = labeled["campaign"]
    url = reverse("labeling:campaign-labels-export", args=[campaign.pk])
    response = client.get(url, {"annotator": labeled["bea"].pk, "include_golden": "on"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    rows = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    prefs = labeled["prefs"]
    assert sorted(r["preference_id"] for r in rows) == sorted(
        [prefs["bea_agreed"].pk, prefs["bea_disputed"].pk]
    )
    disputed = labeled["pairs"]["disputed"]
    (row,) = [r for r in rows if r["comparison_id"] == disputed.pk]
    assert set(row) >= {"prompt", "chosen", "rejected"}
    assert row["chosen"] == disputed.completion_b.text
    gold_only = client.get(url, {"gold": "yes", "include_golden": "on"})
    assert b"".join(gold_only.streaming_content) == b""
    page = client.get(
        reverse("labeling:campaign-labels", args=[campaign.pk]), {"choice": "a"}
    )
    assert 'name="choice" value="a"' in page.content.decode()


@pytest.mark.django_db
def test_pair_page_shows_both_texts_its_word_diff_and_every_label_as_sides(
    labeled: dict[str, Any],
) -> None:
    campaign, pair = labeled["campaign"], labeled["pairs"]["disputed"]
    pair.completion_a.text = "The cat sat down"
    pair.completion_a.save()
    pair.completion_b.text = "The dog sat down"
    pair.completion_b.save()
    client = _client(labeled["reviewer"])
    url = reverse("labeling:comparison-detail", args=[campaign.pk, pair.pk])
    page = client.get(url).content.decode()
    assert "<del>cat</del>" in page and "<ins>dog</ins>" in page
    assert page.index("The cat sat down") < page.index("The dog sat down")
    assert "ann" in page and "bea" in page
    flipped = client.get(url, {"sides": "ba"})
    labels = flipped.context["labels"]
    # ann chose A: on the flipped page A is on the right.
    assert [(x["preference"].annotator.username, x["side"]) for x in labels] == [
        ("ann", "right"),
        ("bea", "left"),
    ]
    text = flipped.content.decode()
    assert text.index("The dog sat down") < text.index("The cat sat down")


@pytest.mark.django_db
def test_gold_is_marked_from_the_side_as_shown_and_mapped_to_the_completion(
    labeled: dict[str, Any],
) -> None:
    """ "Left is the right answer" stores whichever completion was on the
    left of the reviewer's screen; Tie and Not gold do what they say; a
    free-text answer is refused with a message, not a constraint error."""
    campaign, pair = labeled["campaign"], labeled["pairs"]["agreed"]
    client = _client(labeled["reviewer"])
    url = reverse("labeling:comparison-gold", args=[campaign.pk, pair.pk])

    response = client.post(url, {"answer": "left", "a_on_left": "0"})
    assert response.status_code == 302 and response["Location"].endswith("?sides=ba")
    pair.refresh_from_db()
    assert (pair.is_gold, pair.gold_choice) == (True, "b")

    client.post(url, {"answer": "left", "a_on_left": "1"})
    pair.refresh_from_db()
    assert pair.gold_choice == "a"

    client.post(url, {"answer": "right", "a_on_left": "1"})
    pair.refresh_from_db()
    assert pair.gold_choice == "b"

    client.post(url, {"answer": "tie", "a_on_left": "1"})
    pair.refresh_from_db()
    assert pair.gold_choice == "tie"

    bad = client.post(url, {"answer": "a", "a_on_left": "1"}, follow=True)
    assert "Answer with left, right, tie or none" in bad.content.decode()
    pair.refresh_from_db()
    assert pair.gold_choice == "tie"

    client.post(url, {"answer": "none", "a_on_left": "1"})
    pair.refresh_from_db()
    assert (pair.is_gold, pair.gold_choice) == (False, "")


@pytest.mark.django_db
def test_gold_by_htmx_answers_with_the_gold_panel_in_the_sides_shown(
    labeled: dict[str, Any],
) -> None:
    campaign, pair = labeled["campaign"], labeled["pairs"]["agreed"]
    client = _client(labeled["reviewer"])
    response = client.post(
        reverse("labeling:comparison-gold", args=[campaign.pk, pair.pk]),
        {"answer": "right", "a_on_left": "0"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert "the right answer is right" in body and "is a gold pair" in body
    pair.refresh_from_db()
    assert pair.gold_choice == "a"


@pytest.mark.django_db
def test_an_untouched_ruling_form_records_nothing_and_says_so(
    labeled: dict[str, Any],
) -> None:
    campaign, pair = labeled["campaign"], labeled["pairs"]["disputed"]
    client = _client(labeled["reviewer"])
    url = reverse("labeling:comparison-adjudicate", args=[campaign.pk, pair.pk])
    response = client.post(url, {"choice": "", "rationale": ""}, follow=True)
    assert "Pick a ruling first" in response.content.decode()
    assert not Preference.objects.filter(source="adjudication").exists()
    response = client.post(url, {"choice": "b", "rationale": "B is right"})
    assert response.status_code == 302
    ruling = Preference.objects.get(source="adjudication")
    assert (ruling.comparison_id, ruling.choice, ruling.annotator) == (
        pair.pk,
        "b",
        labeled["reviewer"],
    )


@pytest.mark.django_db
def test_a_reviewer_who_voted_is_told_who_else_could_and_an_admin_rules_with_a_note(
    labeled: dict[str, Any], make_user: Any
) -> None:
    campaign, pair = labeled["campaign"], labeled["pairs"]["disputed"]
    boss = make_user(ADMIN, username="boss")
    _label(pair, boss, "a", source=Preference.Source.REVIEWER)
    client = _client(boss)
    url = reverse("labeling:comparison-adjudicate", args=[campaign.pk, pair.pk])

    refused = client.post(url, {"choice": "b"}, follow=True).content.decode()
    assert "You labeled this pair yourself" in refused
    assert "rita could adjudicate it" in refused
    assert "as an admin you can still rule" in refused
    assert not Preference.objects.filter(source="adjudication").exists()

    rita = _client(labeled["reviewer"])
    _label(pair, labeled["reviewer"], "a", source=Preference.Source.REVIEWER)
    refused = rita.post(url, {"choice": "b"}, follow=True).content.decode()
    assert "no other reviewer is free to adjudicate it" in refused
    assert "an admin can rule with a recorded note" in refused

    client.post(url, {"choice": "b", "admin_note": "only reviewer on duty"})
    ruling = Preference.objects.get(source="adjudication")
    assert ruling.annotator == boss and ruling.choice == "b"
    assert ruling.rationale == (
        "Admin ruling over their own reviewer (blind review) label (A is better): "
        "only reviewer on duty"
    )
    assert Preference.objects.filter(comparison=pair, source="annotator").count() == 2


@pytest.mark.django_db
def test_quality_page_cards_have_no_default_ruling_and_show_the_word_diff(
    labeled: dict[str, Any],
) -> None:
    campaign, pair = labeled["campaign"], labeled["pairs"]["disputed"]
    pair.completion_a.text = "Rome is the capital"
    pair.completion_a.save()
    pair.completion_b.text = "Milan is the capital"
    pair.completion_b.save()
    Comparison.objects.filter(pk=pair.pk).update(label_count=2)
    assert campaign_reports_refresh(campaign_id=campaign.pk)
    client = _client(labeled["reviewer"])
    html = client.get(
        reverse("labeling:campaign-quality", args=[campaign.pk])
    ).content.decode()
    card = html[html.index(f'id="disagreement-{pair.pk}"') :]
    assert '<option value="" selected>choose a ruling…</option>' in card
    assert "<del>Rome</del>" in card and "<ins>Milan</ins>" in card
    assert "admin_note" not in card  # only admins may rule over their own label


@pytest.mark.django_db
def test_gold_accuracy_over_too_few_answers_says_too_few(
    labeled: dict[str, Any],
) -> None:
    """One gold answer is no finding: the pages say "too few", not 0.00."""
    campaign = labeled["campaign"]
    assert campaign_reports_refresh(campaign_id=campaign.pk)
    client = _client(labeled["reviewer"])
    quality = client.get(
        reverse("labeling:campaign-quality", args=[campaign.pk])
    ).content.decode()
    assert "too few" in quality and "n=1; 5 needed" in quality
    assert "0.00 <span" not in quality
    annotator = client.get(
        reverse("labeling:annotator-detail", args=[campaign.pk, labeled["ann"].pk])
    ).content.decode()
    assert "too few" in annotator
