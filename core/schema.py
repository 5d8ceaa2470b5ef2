"""What the OpenAPI schema says about every API operation, so that it tells
the truth: the error answers each operation can give, with their body, and
the limits the server enforces on input that the serializers alone do not
state.

Each API view sets ``schema = ApiAutoSchema()``. An operation's own
``@extend_schema(responses={...})`` entries win; this class adds the
statuses every operation of its kind can answer:

- 400 when it reads input (a body or query parameters),
- 401 always (no credentials, or invalid ones),
- 403 when a role check or a campaign scope applies,
- 404 when its path names something by id.

All error bodies are ``{"detail": "<why>"}``; a validation error adds the
invalid fields, each with its messages (``core.api.exception_handler``).
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS, AllowAny

from core.permissions import AdminToWrite

# PostgreSQL text cannot hold NUL and DRF refuses it ("Null characters are
# not allowed."); a field that may not be blank needs a character that is
# not whitespace once trimmed.
NO_NUL = "^[^\\u0000]*$"
NOT_BLANK_NO_NUL = "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"

INVALID_INPUT = (
    "The input is invalid: `detail` says why and each invalid field is named "
    "with its messages."
)
NOT_LOGGED_IN = "No credentials (or invalid ones)."
CAMPAIGN_SCOPE = "the campaign does not exist or is not open to this user"


@extend_schema_serializer(component_name="ErrorDetail")
class ErrorSerializer(serializers.Serializer):
    """Every error answer: ``detail`` says why; a validation error adds each
    invalid field with its messages."""

    detail = serializers.CharField(help_text="Why the request was refused.")


def error(description: str, serializer: Any = ErrorSerializer) -> OpenApiResponse:
    """A documented error answer: the shared error body and why it happens."""
    return OpenApiResponse(serializer, description=description)


def _things(names: list[str]) -> str:
    words = [n.removesuffix("_id").replace("_", " ") for n in names]
    return " or ".join(words)


class ApiAutoSchema(AutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for code, description in self._error_answers(operation).items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    error(description), code, direction="response"
                )
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_answers(self, operation: dict[str, Any]) -> dict[str, str]:
        parameters = operation.get("parameters", [])
        path_names = [p["name"] for p in parameters if p["in"] == "path"]
        answers: dict[str, str] = {}
        if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
            answers["400"] = INVALID_INPUT
        permissions = self.view.get_permissions()
        if any(not isinstance(p, AllowAny) for p in permissions):
            answers["401"] = NOT_LOGGED_IN
        reasons = [
            str(p.message)
            for p in permissions
            if getattr(p, "message", None)
            and (not isinstance(p, AdminToWrite) or self.method not in SAFE_METHODS)
        ]
        if "campaign_id" in path_names or self._body_names_campaign():
            reasons.append(CAMPAIGN_SCOPE[0].upper() + CAMPAIGN_SCOPE[1:] + ".")
        if reasons:
            answers["403"] = " Or: ".join(reasons)
        if path_names:
            answers["404"] = f"No such {_things(path_names)}."
        return answers

    def _body_names_campaign(self) -> bool:
        if self.method in SAFE_METHODS:
            return False
        serializer = force_instance(self.get_request_serializer())
        return isinstance(serializer, serializers.Serializer) and (
            "campaign" in serializer.fields
        )

    def _resolve_path_parameters(self, variables: list[str]) -> list[dict[str, Any]]:
        """Django's ``int`` converter matches digits only and ``str`` anything
        but a slash: other values never reach the view (the URL resolver
        answers its HTML 404), so the schema says what the path accepts."""
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            schema = parameter["schema"]
            if schema.get("type") == "integer":
                parameter["schema"] = {**schema, "minimum": 0}
            elif schema.get("type") == "string" and "enum" not in schema:
                parameter["schema"] = {**schema, "pattern": "^[^/]+$"}
        return parameters

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and getattr(
            serializer, "refuses_unknown_fields", False
        ):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(
        self, field: Any, direction: Any, bypass_extensions: bool = False
    ) -> dict[str, Any]:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and schema.get("type") == "string"
            and not {"format", "pattern", "enum"} & set(schema)
            and not any(isinstance(v, RegexValidator) for v in field.validators)
        ):
            blank_ok = field.allow_blank or not field.trim_whitespace
            schema["pattern"] = NO_NUL if blank_ok else NOT_BLANK_NO_NUL
        return schema
