"""The training API: filters are checked, writes need the admin role, and
answers have the documented shape."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from core.roles import ADMIN, REVIEWER
from tests.labeling.factories import CampaignFactory
from training.models import TrainingJob


@pytest.mark.django_db
def test_an_invalid_campaign_filter_is_a_400_not_every_job(
    make_user: Any, api_client_for: Any
) -> None:
    """``?campaign=null`` used to list every job; now it is refused, and a
    valid filter lists that campaign's jobs only."""
    reviewer = api_client_for(make_user(REVIEWER))
    url = reverse("api-training-job-list")
    for bad in ("null", "abc", "0", "-1"):
        response = reviewer.get(url, {"campaign": bad})
        assert response.status_code == 400, bad
        assert response.json()["detail"] == "Invalid input."
        assert "campaign" in response.json()
    campaign = CampaignFactory()
    assert reviewer.get(url, {"campaign": campaign.pk}).json() == []


@pytest.mark.django_db
def test_a_reviewer_may_list_jobs_but_not_launch_one(
    make_user: Any, api_client_for: Any
) -> None:
    reviewer = api_client_for(make_user(REVIEWER))
    campaign = CampaignFactory()
    response = reviewer.post(
        reverse("api-training-job-list"),
        {"campaign": campaign.pk, "method": "dpo"},
        format="json",
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "You need the admin role."}
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_launch_input_is_json_only(make_user: Any, api_client_for: Any) -> None:
    """``config`` is an object, which form encoding cannot carry: 415."""
    admin = api_client_for(make_user(ADMIN))
    response = admin.post(
        reverse("api-training-job-list"),
        {"campaign": CampaignFactory().pk, "method": "dpo"},
    )
    assert response.status_code == 415
    assert not TrainingJob.objects.exists()


@pytest.mark.django_db
def test_config_defaults_are_a_list_of_fields(
    make_user: Any, api_client_for: Any
) -> None:
    reviewer = api_client_for(make_user(REVIEWER))
    fields = reviewer.get(reverse("api-training-config", args=["dpo"])).json()
    assert isinstance(fields, list) and fields
    assert all(set(f) == {"name", "default", "help"} for f in fields)
    assert reviewer.get(reverse("api-training-config", args=["nope"])).status_code == (
        404
    )
