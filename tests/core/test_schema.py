"""The OpenAPI schema tells the truth about errors and refused input: every
operation of our API views documents the error answers it can give with the
error body, path ids say which values reach the view, request strings say
NUL is refused, and the settings sections say unknown keys are refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from core.roles import ADMIN
from core.schema import NO_NUL, NOT_BLANK_NO_NUL, ApiAutoSchema
from models_hub.models import Adapter, BaseModelVersion
from models_hub.services.registry import adapter_register
from tests.labeling.factories import CampaignFactory

ERROR = {"$ref": "#/components/schemas/ErrorDetail"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def _ours() -> set[tuple[str, str]]:
    """(path, method) of the operations whose view uses ApiAutoSchema."""
    generator = SchemaGenerator()
    generator._initialise_endpoints()
    return {
        (path, method.lower())
        for path, _, method, view in generator._get_paths_and_endpoints()
        if isinstance(view.schema, ApiAutoSchema)
    }


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ours = _ours()
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if (path, method) in ours
    ]


def test_every_operation_documents_its_error_answers(schema: dict[str, Any]) -> None:
    """401 everywhere; 404 with a path id; 400 with a body or query; 403
    where a role applies; each with the error body."""
    checked = 0
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        checked += 1
        assert "401" in responses
        where = f"{method.upper()} {path}"
        parameters = operation.get("parameters", [])
        if any(p["in"] == "path" for p in parameters):
            assert "404" in responses, where
        if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
            assert "400" in responses, where
        for code in ("400", "401", "403", "404"):
            if code in responses and "content" in responses[code]:
                body = responses[code]["content"]["application/json"]["schema"]
                assert body.get("$ref", "").startswith("#/components/schemas/"), where
    assert checked > 45


def test_path_ids_say_they_are_digits(schema: dict[str, Any]) -> None:
    """A negative id never reaches the view (Django's int converter answers
    an HTML 404): the schema says minimum 0."""
    for path, _, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["schema"]["type"] == "integer":
                assert parameter["schema"].get("minimum") == 0, (path, parameter)


def test_request_strings_say_nul_is_refused(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    reason = components["AdapterActionInputRequest"]["properties"]["reason"]
    # Blank allowed: a string without NUL, or the empty string.
    assert reason["oneOf"][0]["pattern"] == NO_NUL
    name = components["CampaignListInputRequest"]["properties"]["name"]
    assert name["pattern"] == NOT_BLANK_NO_NUL


def test_settings_sections_say_unknown_keys_are_refused(
    schema: dict[str, Any],
) -> None:
    components = schema["components"]["schemas"]
    for name in (
        "PatchedCampaignSettingsInputRequest",
        "CampaignSettingsCampaignInputRequest",
        "CampaignSettingsTrainingInputRequest",
        "CampaignSettingsGenerationInputRequest",
    ):
        assert components[name]["additionalProperties"] is False, name


def test_an_import_without_a_file_is_invalid_by_the_schema(
    schema: dict[str, Any],
) -> None:
    body = schema["paths"]["/api/v1/campaigns/{campaign_id}/import/"]["post"][
        "requestBody"
    ]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]


@pytest.mark.django_db
def test_a_reason_with_nul_is_refused_as_the_schema_says(
    make_user: Any, api_client_for: Any
) -> None:
    adapter = adapter_register(
        campaign=CampaignFactory(),
        base_model=BaseModelVersion.objects.create(name="b", source="/b"),
        method="dpo",
        peft_type="lora",
        storage_path="adapters/x",
        metrics={},
    )
    admin = api_client_for(make_user(ADMIN))
    response = admin.post(
        reverse("api-adapter-retire", args=[adapter.pk]),
        {"reason": "bad\x00byte"},
        format="json",
    )
    assert response.status_code == 400
    assert "reason" in response.json()
    assert Adapter.objects.get(pk=adapter.pk).status == Adapter.Status.CANDIDATE
