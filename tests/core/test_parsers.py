"""JSON bodies nested too deeply for json.loads are a 400, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from core.roles import ADMIN
from labeling.models import Campaign
from tests.labeling.factories import CampaignFactory

DEEP = b"[" * 100_000


@pytest.mark.django_db
def test_a_body_nested_too_deeply_is_400_and_changes_nothing(make_user: Any) -> None:
    campaign = CampaignFactory()
    client = APIClient()
    client.force_authenticate(make_user(ADMIN))
    for method, url in (
        ("post", "/api/v1/campaigns/"),  # the default parsers
        ("patch", f"/api/v1/campaigns/{campaign.pk}/settings/"),  # its own
    ):
        response = getattr(client, method)(url, DEEP, content_type="application/json")
        assert response.status_code == 400, (url, response.content[:200])
        assert "nested too deeply" in response.json()["detail"]
    assert Campaign.objects.count() == 1
