"""Changing a label: an annotator corrects their own answer within the
campaign's edit window. The change is a new version of the preference; the
earlier answer is kept (PreferenceRevision) and exports read the latest."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import IsAnnotator
from core.schema import ApiAutoSchema
from labeling import selectors
from labeling.services import queue


# One named component: left to the enum naming, the screen sides would
# collide with the API's other "choice" enums (a warning, and a hashed name).
@extend_schema_field(
    {
        "type": "string",
        "enum": list(queue.SCREEN_CHOICES),
        "description": "A side as the annotator saw it, or tie / both_bad.",
    },
    component_name="ScreenChoice",
)
class ScreenChoiceField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=queue.SCREEN_CHOICES, **kwargs)


@extend_schema_serializer(component_name="PreferenceRevisionError")
class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the request was refused.")


class PreferenceRevisionOutputSerializer(serializers.Serializer):
    """The label's latest version, in the sides its annotator saw."""

    preference_id = serializers.IntegerField()
    version = serializers.IntegerField(
        help_text="1 for the first answer, one more per change."
    )
    choice = ScreenChoiceField()
    strength = serializers.IntegerField(
        allow_null=True, help_text="-3 (left much better) .. 3 (right much better)."
    )
    criteria = serializers.DictField(child=ScreenChoiceField())
    rationale = serializers.CharField(allow_blank=True)
    revised_at = serializers.DateTimeField(allow_null=True)
    editable_until = serializers.DateTimeField(
        help_text="After this the label is final (also once it is in a snapshot)."
    )


class PreferenceReviseApi(APIView):
    """Change one of your own labels (PATCH: fields left out keep their value)."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()
    # ``strength`` may be null and ``criteria`` is an object: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="PreferenceReviseInput")
    class InputSerializer(serializers.Serializer):
        choice = ScreenChoiceField(required=False)
        strength = serializers.IntegerField(
            min_value=-3,
            max_value=3,
            required=False,
            allow_null=True,
            help_text="Screen sides: negative means left is better. Must agree "
            "with the choice; null clears it.",
        )
        criteria = serializers.DictField(child=ScreenChoiceField(), required=False)
        rationale = serializers.CharField(
            max_length=1000, required=False, allow_blank=True
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            200: PreferenceRevisionOutputSerializer,
            400: OpenApiResponse(
                ErrorSerializer,
                description="Invalid input, or a strength pointing to the other "
                "side than the choice.",
            ),
            401: OpenApiResponse(ErrorSerializer, description="Not logged in."),
            403: OpenApiResponse(
                ErrorSerializer,
                description="Not an annotator, or the campaign is not open to you.",
            ),
            404: OpenApiResponse(
                ErrorSerializer, description="No label of yours has this id."
            ),
            409: OpenApiResponse(
                ErrorSerializer,
                description="The label is final: the edit window is over, it is "
                "in a training snapshot, or the campaign is not accepting labels.",
            ),
        },
    )
    def patch(self, request: Request, preference_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        preference = queue.preference_revise(
            preference_id=preference_id, annotator=request.user, **data
        )
        answer = selectors.preference_screen_answer(preference=preference)
        campaign = preference.comparison.campaign
        return Response(
            PreferenceRevisionOutputSerializer(
                {
                    "preference_id": preference.pk,
                    "version": preference.version,
                    **answer,
                    "revised_at": preference.revised_at,
                    "editable_until": selectors.preference_editable_until(
                        preference=preference, campaign=campaign
                    ),
                }
            ).data
        )
