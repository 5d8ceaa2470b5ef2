"""Campaign create/update through the API: annotator ids are checked."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR
from labeling.models import Campaign
from tests.labeling.factories import CampaignFactory


@pytest.mark.django_db
def test_unknown_annotator_ids_are_a_400_naming_them(
    make_user: Any, api_client_for: Any
) -> None:
    """POST and PATCH with ids of no user answer 400 naming those ids (was a
    500 IntegrityError) and change nothing; known ids are assigned."""
    admin = api_client_for(make_user(ADMIN))
    annotator = make_user(ANNOTATOR)
    campaign = CampaignFactory()
    created = admin.post(
        reverse("api-campaign-list"),
        {"name": "Bad ids", "annotator_ids": [annotator.pk, 999999, 999998]},
        format="json",
    )
    assert created.status_code == 400
    assert created.json()["annotator_ids"] == ["Unknown user ids: 999998, 999999."]
    assert not Campaign.objects.filter(name="Bad ids").exists()
    detail = reverse("api-campaign-detail", args=[campaign.pk])
    patched = admin.patch(detail, {"annotator_ids": [999999]}, format="json")
    assert patched.status_code == 400 and "999999" in str(patched.json())
    assert not campaign.annotators.exists()
    ok = admin.patch(detail, {"annotator_ids": [annotator.pk]}, format="json")
    assert ok.status_code == 200
    assert list(campaign.annotators.values_list("pk", flat=True)) == [annotator.pk]
