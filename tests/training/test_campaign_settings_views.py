"""The campaign settings page: roles, defaults, htmx and plain POSTs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign
from models_hub.models import GenerationSettings
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory
from training.models import TrainingPolicy


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _url(campaign: Campaign) -> str:
    return reverse("training:campaign-settings", args=[campaign.pk])


def _form_data(page: str) -> dict[str, str]:
    """What a browser submits from the rendered page, unchanged: every input's
    value, ticked checkboxes only, each select's selected option, textareas."""
    data: dict[str, str] = {}
    for tag in re.findall(r"<input [^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or name.group(1) == "csrfmiddlewaretoken":
            continue
        if 'type="checkbox"' in tag:
            if " checked" in tag:
                data[name.group(1)] = "on"
            continue
        value = re.search(r'value="([^"]*)"', tag)
        data[name.group(1)] = value.group(1) if value else ""
    for name, body in re.findall(
        r'<select name="([^"]+)"[^>]*>(.*?)</select>', page, re.S
    ):
        selected = re.search(r'<option value="([^"]*)"[^>]*selected', body)
        data[name] = selected.group(1) if selected else ""
    for name, body in re.findall(
        r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', page, re.S
    ):
        data[name] = body.strip().replace("&quot;", '"')
    return data


@pytest.mark.django_db
def test_annotators_get_a_403_and_anonymous_visitors_the_login_page(
    make_user: Any,
) -> None:
    campaign = CampaignFactory()
    annotator = _client(make_user(ANNOTATOR))
    assert annotator.get(_url(campaign)).status_code == 403
    assert annotator.post(_url(campaign), {}).status_code == 403
    anonymous = Client().get(_url(campaign))
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_a_fresh_campaign_shows_every_default_with_its_help(make_user: Any) -> None:
    campaign = CampaignFactory()
    page = _client(make_user(ADMIN)).get(_url(campaign))
    assert page.status_code == 200
    html = page.content.decode()
    assert "No policy is stored for this campaign yet" in html
    assert "No generation settings are stored for this campaign yet" in html
    assert 'name="training-min_new_preferences" value="40"' in html
    assert 'name="generation-temperature" value="0.7"' in html
    assert 'name="generation-max_length_ratio" value="2.0"' in html
    assert "Default: 40." in html and "Default: 0.7." in html
    assert "New labels since the last snapshot." in html
    assert "Keep at least this many open pairs in the queue (bootstrap)." in html
    for title in ("Bootstrap", "Promotion", "Guardrails", "Training policy"):
        assert title in html
    assert 'hx-post="' + _url(campaign) + '"' in html
    assert "Save all settings" in html
    assert not TrainingPolicy.objects.exists()
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_reviewers_see_the_settings_read_only_and_cannot_post(
    make_user: Any,
) -> None:
    campaign = CampaignFactory()
    reviewer = _client(make_user(REVIEWER))
    page = reviewer.get(_url(campaign))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Read only" in html and "Save all settings" not in html
    assert "hx-post" not in html
    assert re.search(r'name="generation-temperature"[^>]*disabled', html)
    refused = reviewer.post(_url(campaign), {"campaign-overlap_k": "3"})
    assert refused.status_code == 403
    campaign.refresh_from_db()
    assert campaign.overlap_k == 1


@pytest.mark.django_db
def test_plain_post_saves_every_section_and_redirects(make_user: Any) -> None:
    make_user(ANNOTATOR, "fay")
    campaign = CampaignFactory()
    client = _client(make_user(ADMIN))
    data = _form_data(client.get(_url(campaign)).content.decode())
    data.update(
        {
            "campaign-overlap_k": "2",
            "campaign-annotators": "fay",
            "training-min_new_preferences": "12",
            "training-config_overrides": '{"dpo": {"beta": 0.2}}',
            "generation-temperature": "0.4",
        }
    )
    del data["generation-auto_promote"]  # untick the box
    response = client.post(_url(campaign), data)
    assert response.status_code == 302 and response["Location"] == _url(campaign)
    campaign.refresh_from_db()
    assert campaign.overlap_k == 2
    assert list(campaign.annotators.values_list("username", flat=True)) == ["fay"]
    policy = TrainingPolicy.objects.get(campaign=campaign)
    assert policy.min_new_preferences == 12 and policy.min_interval_minutes == 10
    assert policy.config_overrides == {"dpo": {"beta": 0.2}}
    row = GenerationSettings.objects.get(campaign=campaign)
    assert row.temperature == 0.4 and row.auto_promote is False
    assert row.retire_losers is True and row.samples_per_prompt == 2
    after = client.get(response["Location"]).content.decode()
    assert "Saved." in after and "No policy is stored" not in after


@pytest.mark.django_db
def test_plain_post_with_an_error_shows_the_page_again_and_saves_nothing(
    make_user: Any,
) -> None:
    campaign = CampaignFactory()
    client = _client(make_user(ADMIN))
    data = _form_data(client.get(_url(campaign)).content.decode())
    data.update({"campaign-overlap_k": "4", "generation-top_p": "1.5"})
    response = client.post(_url(campaign), data)
    assert response.status_code == 400
    assert "greater than 0 and at most 1" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.overlap_k == 1
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_htmx_post_returns_the_form_fragment_with_errors_next_to_fields(
    make_user: Any,
) -> None:
    make_user(ANNOTATOR, "gus")
    campaign = CampaignFactory()
    client = _client(make_user(ADMIN))
    data = _form_data(client.get(_url(campaign)).content.decode())
    data.update(
        {
            "campaign-overlap_k": "3",
            "campaign-annotators": "gus, nobody, ghost",
            "generation-samples_per_prompt": "1",
        }
    )
    response = client.post(_url(campaign), data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="campaign-settings"')
    assert "<html" not in html and "Saved." not in html
    assert html.count("nothing was changed") == 1
    errors = dict(
        re.findall(r'<div class="error" id="id_([\w-]+)-errors">([^<]*)</div>', html)
    )
    assert errors == {
        "campaign-annotators": "Unknown usernames: ghost, nobody.",
        "generation-samples_per_prompt": "Must be at least 2.",
    }
    campaign.refresh_from_db()
    assert campaign.overlap_k == 1 and not campaign.annotators.exists()
    assert not TrainingPolicy.objects.exists()
    assert not GenerationSettings.objects.exists()


@pytest.mark.django_db
def test_htmx_post_saves_and_returns_the_fragment_with_a_saved_notice(
    make_user: Any,
) -> None:
    campaign = CampaignFactory()
    client = _client(make_user(ADMIN))
    data = _form_data(client.get(_url(campaign)).content.decode())
    data["training-pipeline"] = "sft"
    response = client.post(_url(campaign), data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="campaign-settings"')
    assert 'role="status">Saved.' in html
    assert re.search(r'<option value="sft" selected', html)
    assert TrainingPolicy.objects.get(campaign=campaign).pipeline == "sft"
