"""Campaign create/update through the API: annotator ids are checked."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR
from labeling.models import Campaign, Prompt
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


def _upload(body: bytes) -> io.BytesIO:
    payload = io.BytesIO(body)
    payload.name = "rows.jsonl"
    return payload


@pytest.mark.django_db
def test_import_with_a_bom_counts_lines_from_the_first_and_imports_it(
    make_user: Any, api_client_for: Any
) -> None:
    """A BOM before line 1 is not part of line 1's JSON; a bad line after it
    is still reported by its own number, and a good file imports fully."""
    admin = api_client_for(make_user(ADMIN))
    campaign = CampaignFactory()
    url = reverse("api-campaign-import", args=[campaign.pk])
    good = json.dumps({"prompt": "Größe?", "completions": ["groß", "klein"]})
    bad = admin.post(
        url, {"file": _upload(f"\ufeff{good}\n{{}}\n".encode())}, format="multipart"
    )
    assert bad.status_code == 400
    assert (bad.json()["line"], bad.json()["field"]) == (2, "prompt")
    assert not Prompt.objects.filter(campaign=campaign).exists()
    ok = admin.post(
        url, {"file": _upload(f"\ufeff{good}\n".encode())}, format="multipart"
    )
    assert ok.status_code == 201 and ok.json()["comparisons_created"] == 1
    assert Prompt.objects.get(campaign=campaign).text == "Größe?"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"prompt": "p", "metadata": {"k": ["\u0000"]}}, "metadata"),
        (
            {"prompt": "p", "completions": [{"text": "a", "source": "\u0000"}, "b"]},
            "completions[0].source",
        ),
        (
            {"prompt": "p", "completions": [{"text": "a", "metadata": 1}, "b"]},
            "completions[0].metadata",
        ),
    ],
)
def test_import_values_postgres_cannot_store_are_a_400_naming_the_field(
    make_user: Any, api_client_for: Any, line: dict[str, Any], field: str
) -> None:
    """NUL characters (jsonb and text refuse them) were a 500."""
    admin = api_client_for(make_user(ADMIN))
    campaign = CampaignFactory()
    response = admin.post(
        reverse("api-campaign-import", args=[campaign.pk]),
        {"file": _upload((json.dumps(line) + "\n").encode())},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    assert (response.json()["line"], response.json()["field"]) == (1, field)
    assert not Prompt.objects.filter(campaign=campaign).exists()


@pytest.mark.django_db
def test_import_refuses_nan_and_utf16(make_user: Any, api_client_for: Any) -> None:
    admin = api_client_for(make_user(ADMIN))
    campaign = CampaignFactory()
    url = reverse("api-campaign-import", args=[campaign.pk])
    nan = admin.post(
        url,
        {"file": _upload(b'{"prompt": "p", "priority": NaN}\n')},
        format="multipart",
    )
    assert nan.status_code == 400 and "NaN" in nan.json()["detail"]
    utf16 = admin.post(
        url,
        {"file": _upload('{"prompt": "p"}\n'.encode("utf-16"))},
        format="multipart",
    )
    assert utf16.status_code == 400 and "UTF-16" in utf16.json()["detail"]
    assert not Prompt.objects.filter(campaign=campaign).exists()


@pytest.mark.django_db
def test_criteria_errors_name_the_field_and_a_nul_is_a_400(
    make_user: Any, api_client_for: Any
) -> None:
    admin = api_client_for(make_user(ADMIN))
    response = admin.post(
        reverse("api-campaign-list"),
        {"name": "Nul", "criteria": [{"name": "a\u0000"}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "criteria"
    assert not Campaign.objects.filter(name="Nul").exists()
