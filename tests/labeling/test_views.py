"""Annotator pages: plain posts and htmx fragments, CSRF, login, escaping."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Completion, Lease, Preference
from labeling.services.queue import comparison_lease_next, preference_record
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, make_pairs


@pytest.fixture
def logged_in(annotator: Any) -> Client:
    client = Client()
    assert client.login(username=annotator.username, password=PASSWORD)
    return client


@pytest.mark.django_db
def test_every_page_needs_login() -> None:
    campaign = CampaignFactory()
    client = Client()
    for url in (
        reverse("labeling:campaign-list"),
        reverse("labeling:label-done", args=[campaign.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(
            reverse("login")
        )
    assert client.get(reverse("login")).status_code == 200


@pytest.mark.django_db
def test_plain_post_flow_labels_and_redirects_to_the_next_pair(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    start = logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    assert start.status_code == 302
    lease = Lease.objects.get(annotator=annotator)
    page = logged_in.get(start["Location"])
    assert page.status_code == 200
    # Left/Right side by side, Top/Bottom once the answers stack (CSS picks).
    assert (
        b'<span class="when-side-by-side">Left</span>'
        b'<span class="when-stacked">Top</span> is better' in page.content
    )
    submit_url = reverse("labeling:lease-submit", args=[campaign.pk, lease.pk])
    response = logged_in.post(
        submit_url,
        {"choice": "right", "client_request_id": "x1", "time_spent_ms": "1200"},
    )
    assert response.status_code == 302
    pref = Preference.objects.get(annotator=annotator)
    assert (
        pref.choice == ("b" if lease.a_on_left else "a") and pref.time_spent_ms == 1200
    )
    assert Lease.objects.filter(annotator=annotator, status="active").count() == 1


@pytest.mark.django_db
def test_htmx_submit_returns_only_the_next_card_and_pushes_its_url(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "tie"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        html.lstrip().startswith('<section id="comparison-card"')
        and "<html" not in html
    )
    next_lease = Lease.objects.get(annotator=annotator, status="active")
    assert response["HX-Push-Url"] == reverse(
        "labeling:lease-detail", args=[campaign.pk, next_lease.pk]
    )


@pytest.mark.django_db
def test_double_submit_gives_one_preference(logged_in: Client, annotator: Any) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    url = reverse("labeling:lease-submit", args=[campaign.pk, lease.pk])
    logged_in.post(url, {"choice": "left"})
    logged_in.post(url, {"choice": "right"})
    assert Preference.objects.filter(annotator=annotator).count() == 1


@pytest.mark.django_db
def test_submit_without_csrf_token_is_rejected(annotator: Any) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    client = Client(enforce_csrf_checks=True)
    client.login(username=annotator.username, password=PASSWORD)
    response = client.post(reverse("labeling:label-start", args=[campaign.pk]))
    assert response.status_code == 403
    assert not Lease.objects.exists()


@pytest.mark.django_db
def test_completion_html_is_escaped_and_markdown_rendered(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    Completion.objects.filter(pk=pair.completion_a_id).update(
        text="**bold** <script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))"
    )
    start = logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    html = logged_in.get(start["Location"]).content.decode()
    assert "<strong>bold</strong>" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img" not in html and 'href="javascript' not in html


@pytest.mark.django_db
def test_another_annotators_lease_page_is_not_found(
    logged_in: Client, make_user: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    from labeling.services.queue import comparison_lease_next

    other = comparison_lease_next(campaign=campaign, annotator=make_user())
    response = logged_in.get(
        reverse("labeling:lease-detail", args=[campaign.pk, other.pk])
    )
    assert response.status_code == 404


@pytest.mark.django_db
def test_missing_choice_is_explained_not_saved(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]), {"choice": ""}
    )
    assert response.status_code == 200
    assert b"Pick left, right, tie or both bad." in response.content
    assert not Preference.objects.exists()


@pytest.mark.django_db
def test_htmx_invalid_submit_answers_400_with_the_card_explaining_why(
    logged_in: Client, annotator: Any
) -> None:
    """label.js swaps this 400 in (htmx skips error responses by default)."""
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "left", "strength": "9"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert (
        response.content.decode().lstrip().startswith('<section id="comparison-card"')
    )
    assert b"strength" in response.content
    assert not Preference.objects.exists()


@pytest.mark.django_db
def test_get_on_the_start_url_shows_the_start_page_and_leases_nothing(
    logged_in: Client, annotator: Any
) -> None:
    """A bookmark or reload of ``label/`` shows the campaign's start button
    (was a blank 405); only the POST behind it leases a pair."""
    campaign = CampaignFactory(name="Start here")
    make_pairs(campaign, 2)
    url = reverse("labeling:label-start", args=[campaign.pk])
    page = logged_in.get(url)
    assert page.status_code == 200
    assert b"Start here" in page.content and b"Start labeling" in page.content
    assert f'action="{url}"'.encode() in page.content
    assert not Lease.objects.exists()
    assert logged_in.post(url).status_code == 302
    assert Lease.objects.filter(annotator=annotator).count() == 1


# ---------------------------------------------------------------- what the annotator meant and saw


def _label_first(logged_in: Client, annotator: Any, campaign: Any) -> Lease:
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "left", "strength": "-1", "client_request_id": "r1"},
    )
    return lease


@pytest.mark.django_db
def test_contradicting_strength_is_refused_on_the_page_with_the_answer_kept(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "left", "strength": "3"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "strength says right is better but the choice is left" in page
    assert '<option value="3" selected>' in page
    assert not Preference.objects.exists()


@pytest.mark.django_db
def test_back_and_answer_again_changes_the_label_as_a_new_version(
    logged_in: Client, annotator: Any
) -> None:
    """The old card (browser Back) still posts to its lease: a different
    answer is a change, recorded, not silently dropped."""
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    lease = _label_first(logged_in, annotator, campaign)

    page = logged_in.get(reverse("labeling:lease-detail", args=[campaign.pk, lease.pk]))
    content = page.content.decode()
    assert "You already answered this pair: <strong>Left is better</strong>" in content
    assert "You can change it until" in content
    assert 'value="left" data-key="1" class="choice" aria-pressed="true"' in content

    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "right", "client_request_id": "r1"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Label changed to “Right is better” (version 2" in response.content.decode()
    pref = Preference.objects.get(annotator=annotator)
    assert pref.version == 2 and pref.choice == ("b" if lease.a_on_left else "a")
    assert pref.revisions.count() == 1
    assert Preference.objects.count() == 1


@pytest.mark.django_db
def test_answered_pair_after_the_window_says_why_it_cannot_change(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory(label_edit_minutes=0)
    make_pairs(campaign, 2)
    lease = _label_first(logged_in, annotator, campaign)

    page = logged_in.get(reverse("labeling:lease-detail", args=[campaign.pk, lease.pk]))
    content = page.content.decode()
    assert "cannot be changed once given" in content
    assert 'id="label-form"' not in content

    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "right"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert "cannot be changed once given" in response.content.decode()
    assert Preference.objects.get(annotator=annotator).version == 1


@pytest.mark.django_db
def test_recent_labels_list_links_to_each_answered_pair(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    lease = _label_first(logged_in, annotator, campaign)
    next_lease = Lease.objects.get(annotator=annotator, status="active")
    page = logged_in.get(
        reverse("labeling:lease-detail", args=[campaign.pk, next_lease.pk])
    ).content.decode()
    # The card carries the list closed; it is read when opened.
    recent_url = reverse("labeling:label-recent", args=[campaign.pk])
    assert "Your recent labels" in page and f'hx-get="{recent_url}"' in page
    assert reverse("labeling:lease-detail", args=[campaign.pk, lease.pk]) not in page
    for headers in ({"HTTP_HX_REQUEST": "true"}, {}):  # htmx, or a page of its own
        recent = logged_in.get(recent_url, **headers)
        assert recent.status_code == 200
        listed = recent.content.decode()
        assert reverse("labeling:lease-detail", args=[campaign.pk, lease.pk]) in listed
        assert "can change until" in listed
    assert ("<html" in listed) and ("<html" not in recent_htmx(logged_in, recent_url))


def recent_htmx(client: Client, url: str) -> str:
    return client.get(url, HTTP_HX_REQUEST="true").content.decode()


@pytest.mark.django_db
def test_recent_labels_are_only_the_annotators_own_in_a_campaign_they_may_see(
    logged_in: Client, annotator: Any, make_user: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    url = reverse("labeling:label-recent", args=[campaign.pk])
    assert "No labels yet" in recent_htmx(logged_in, url)
    somebody = make_user()
    lease = comparison_lease_next(campaign=campaign, annotator=somebody)
    preference_record(lease_id=lease.pk, annotator=somebody, choice="left")
    assert "No labels yet" in recent_htmx(logged_in, url)
    closed = CampaignFactory()
    closed.annotators.add(somebody)  # assigned to somebody else only
    response = logged_in.get(reverse("labeling:label-recent", args=[closed.pk]))
    assert response.status_code == 403


@pytest.mark.django_db
def test_truncated_completion_is_marked_with_its_token_count(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    Completion.objects.filter(pk=pair.completion_a_id).update(
        generation={"max_new_tokens": 96, "finished": False, "new_tokens": 96}
    )
    Completion.objects.filter(pk=pair.completion_b_id).update(
        generation={"max_new_tokens": 96, "finished": True, "new_tokens": 40}
    )
    start = logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    page = logged_in.get(start["Location"]).content.decode()
    assert page.count("cut at 96 tokens") == 1
    lease = Lease.objects.get(annotator=annotator)
    side = "left" if lease.a_on_left else "right"
    section = page.split(f'data-side="{side}"')[1].split("</article>")[0]
    assert "cut at 96 tokens" in section


@pytest.mark.django_db
def test_answers_keep_single_line_breaks_and_table_cells(
    logged_in: Client, annotator: Any
) -> None:
    campaign = CampaignFactory()
    (pair,) = make_pairs(campaign, 1)
    Completion.objects.filter(pk=pair.completion_a_id).update(
        text="Roses are red,\nviolets are blue\n\n| n | x |\n|---|---|\n| 10 | 2 |"
    )
    start = logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    page = logged_in.get(start["Location"]).content.decode()
    assert "Roses are red,<br>\nviolets are blue" in page
    assert "<td>10</td>" in page
    assert 'class="prose answer"' in page


@pytest.mark.django_db
def test_submit_stores_the_campaigns_criteria_and_refuses_an_unknown_one(
    logged_in: Client, annotator: Any
) -> None:
    """The submit reads no campaign before the label: the criteria posted
    are checked against the lease's campaign in the statement that locks the
    pair; one it does not have is a 400 that records nothing."""
    campaign = CampaignFactory(criteria=[{"name": "helpfulness", "description": ""}])
    make_pairs(campaign, 2)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator, status="active")
    response = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, lease.pk]),
        {"choice": "left", "criterion__helpfulness": "right"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert response.content.decode().count('name="criterion__helpfulness"') == 1
    stored = Preference.objects.get(lease=lease)
    right = "b" if lease.a_on_left else "a"
    assert stored.criteria == {"helpfulness": right}

    following = Lease.objects.get(annotator=annotator, status="active")
    refused = logged_in.post(
        reverse("labeling:lease-submit", args=[campaign.pk, following.pk]),
        {"choice": "left", "criterion__made_up": "left"},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 400
    assert "unknown criterion" in refused.content.decode()
    assert Preference.objects.count() == 1


@pytest.mark.django_db
def test_submit_under_another_campaigns_address_is_not_found_and_records_nothing(
    logged_in: Client, annotator: Any
) -> None:
    campaign, other = CampaignFactory(), CampaignFactory()
    make_pairs(campaign, 1)
    logged_in.post(reverse("labeling:label-start", args=[campaign.pk]))
    lease = Lease.objects.get(annotator=annotator)
    for data in ({"choice": "left"}, {"choice": ""}, {"intent": "skip"}):
        response = logged_in.post(
            reverse("labeling:lease-submit", args=[other.pk, lease.pk]),
            data,
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 404, data
    assert not Preference.objects.exists()
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE
