"""Deployments over the API: what a campaign's alias serves (champion only,
a canary, an A/B split), its changes and their rollback, the serving switch
of an adapter, callers' feedback on served responses and the list of
served responses."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import AdminToWrite, IsAdmin, IsReviewer
from core.schema import ApiAutoSchema, error
from labeling.models import Campaign
from labeling.selectors import campaign_get_for_user
from models_hub import selectors
from models_hub.api.views import AdapterOutputSerializer, _adapter
from models_hub.models import (
    Deployment,
    DeploymentChange,
    ServedFeedback,
    ServedResponse,
)
from models_hub.services import deployments
from models_hub.services.deployments import REASON_MAX


def _reason_field() -> serializers.CharField:
    """The optional ``reason`` every change here records (one field per
    serializer: DRF fields are bound to the serializer that holds them)."""
    return serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=REASON_MAX,
        default="",
        help_text=f"Why (recorded with the change), at most {REASON_MAX} characters.",
    )


class Pages(LimitOffsetPagination):
    """``limit`` (default 50, at most 200) and ``offset``, as DRF's
    limit/offset pagination answers them: ``count``, ``next``,
    ``previous``, ``results``."""

    max_limit = 200


PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit", int, description="Rows per page (default 50, at most 200)."
    ),
    OpenApiParameter("offset", int, description="Rows to skip."),
]


def _page_of(name: str, row: serializers.Serializer) -> type[serializers.Serializer]:
    """The documented body of one page of ``row`` items."""
    page = type(
        name,
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(help_text="Rows in all pages."),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": row,
        },
    )
    return extend_schema_serializer(component_name=name)(page)


@extend_schema_serializer(component_name="DeploymentVersion")
class VersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    served_name = serializers.CharField(
        help_text="The immutable name the inference API serves it under."
    )


@extend_schema_serializer(component_name="DeploymentServedCount")
class ServedCountSerializer(serializers.Serializer):
    arm = serializers.CharField(help_text="champion or candidate.")
    served_model = serializers.CharField()
    adapter = serializers.IntegerField(
        source="adapter_id", allow_null=True, help_text="Null: the base answered."
    )
    label = serializers.CharField()
    last_24h = serializers.IntegerField()
    last_7d = serializers.IntegerField()


@extend_schema_serializer(component_name="DeploymentVersionFeedback")
class VersionFeedbackSerializer(serializers.Serializer):
    served_model = serializers.CharField()
    adapter = serializers.IntegerField(
        source="adapter_id", allow_null=True, help_text="Null: the base answered."
    )
    label = serializers.CharField()
    up = serializers.IntegerField()
    down = serializers.IntegerField()
    prefer_other = serializers.IntegerField()


@extend_schema_serializer(component_name="DeploymentChange")
class DeploymentChangeSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor.username", allow_null=True, default=None
    )

    class Meta:
        model = DeploymentChange
        fields = ["id", "action", "before", "after", "actor", "reason", "created_at"]


@extend_schema_serializer(component_name="Deployment")
class DeploymentOutputSerializer(serializers.Serializer):
    campaign = serializers.IntegerField(source="deployment.campaign_id")
    model = serializers.CharField(
        source="alias",
        help_text="The name applications send as `model` to reach this deployment.",
    )
    mode = serializers.ChoiceField(
        source="deployment.mode", choices=Deployment.Mode.choices
    )
    champion = VersionSerializer(
        allow_null=True,
        help_text="The policy champion; null while the base model serves.",
    )
    candidate = VersionSerializer(
        source="deployment.candidate",
        allow_null=True,
        help_text="The version that gets a share (canary, A/B); null in champion mode.",
    )
    candidate_share = serializers.FloatField(
        source="deployment.candidate_share",
        help_text="Share of requests the candidate answers (canary; A/B is 0.5; "
        "unused in champion mode).",
    )
    sample_share = serializers.FloatField(
        source="deployment.sample_share",
        help_text="Share of served requests also answered by the other arm (the "
        "base while there is no candidate) and queued as a comparison (0: off).",
    )
    updated_by = serializers.CharField(
        source="deployment.updated_by.username", allow_null=True, default=None
    )
    updated_at = serializers.DateTimeField(
        source="deployment.updated_at", allow_null=True
    )
    served = ServedCountSerializer(
        many=True, help_text="Responses per arm over the last 24 hours and 7 days."
    )
    feedback = VersionFeedbackSerializer(
        many=True, help_text="Callers' verdicts per version."
    )
    recent_changes = DeploymentChangeSerializer(source="changes", many=True)
    can_roll_back = serializers.SerializerMethodField(
        help_text="A change exists that a rollback would undo."
    )

    def get_can_roll_back(self, summary: selectors.DeploymentSummary) -> bool:
        return summary.rollback_target is not None


def _summary_response(campaign: Campaign) -> Response:
    summary = selectors.deployment_summary(campaign=campaign)
    return Response(DeploymentOutputSerializer(summary).data)


NOT_REVIEWER_OR_CAMPAIGN = error(
    "The user lacks the reviewer role (the admin role to change), or the "
    "campaign does not exist or is not open to this user."
)


class DeploymentApi(APIView):
    """What the campaign's alias ``campaign-<id>/champion`` serves. PUT sets
    the whole deployment (``mode`` required); PATCH changes the fields it
    names (a candidate left out is kept while the mode still needs one).
    Every change is recorded (see ``changes/``); a request that changes
    nothing records nothing."""

    permission_classes = [IsReviewer, AdminToWrite]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="DeploymentInput")
    class InputSerializer(serializers.Serializer):
        mode = serializers.ChoiceField(
            choices=Deployment.Mode.choices,
            help_text="champion: the champion alone; canary: the candidate gets "
            "candidate_share; ab: the candidate gets half.",
        )
        candidate = serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=1,
            max_value=2**63 - 1,
            help_text="A policy adapter of this campaign, status candidate, over "
            "the campaign's base, switched on for serving; null in champion mode.",
        )
        candidate_share = serializers.FloatField(
            required=False,
            allow_null=True,
            help_text="Canary: strictly between 0 and 1 (left out: the stored "
            "share). A/B: leave out (always 0.5).",
        )
        sample_share = serializers.FloatField(
            required=False,
            allow_null=True,
            min_value=0.0,
            max_value=1.0,
            help_text="Share of served requests also answered by the other arm "
            "(the base while there is no candidate) and queued as comparisons "
            "(left out: unchanged).",
        )
        reason = _reason_field()

    @extend_schema_serializer(component_name="DeploymentPatchInput")
    class PatchSerializer(InputSerializer):
        mode = serializers.ChoiceField(
            choices=Deployment.Mode.choices,
            required=False,
            help_text="Left out: unchanged.",
        )

    @extend_schema(
        responses={
            200: DeploymentOutputSerializer,
            403: NOT_REVIEWER_OR_CAMPAIGN,
        }
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        return _summary_response(campaign)

    def _update(
        self, request: Request, campaign_id: int, serializer: type[Any]
    ) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        data = serializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        deployment = deployments.deployment_get_or_create(campaign)
        mode = given.get("mode", deployment.mode)
        if "candidate" in given:
            candidate = given["candidate"]
        elif mode != Deployment.Mode.CHAMPION and request.method == "PATCH":
            candidate = deployment.candidate_id
        else:
            candidate = None
        deployments.deployment_update(
            deployment=deployment,
            actor=request.user,
            mode=mode,
            candidate=candidate,
            candidate_share=given.get("candidate_share"),
            sample_share=given.get("sample_share"),
            reason=given["reason"],
        )
        return _summary_response(campaign)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: DeploymentOutputSerializer,
            400: error(
                "The change was refused, naming the field: a candidate that is a "
                "reward model, the champion, retired, switched off, of another "
                "campaign or base, or missing for canary/ab; a canary share not "
                "strictly between 0 and 1; an A/B share other than 0.5."
            ),
            403: NOT_REVIEWER_OR_CAMPAIGN,
        },
    )
    def put(self, request: Request, campaign_id: int) -> Response:
        return self._update(request, campaign_id, self.InputSerializer)

    @extend_schema(
        request=PatchSerializer,
        responses={
            200: DeploymentOutputSerializer,
            400: error("The change was refused, naming the field (as for PUT)."),
            403: NOT_REVIEWER_OR_CAMPAIGN,
        },
    )
    def patch(self, request: Request, campaign_id: int) -> Response:
        return self._update(request, campaign_id, self.PatchSerializer)


class ReasonSerializer(serializers.Serializer):
    reason = _reason_field()


class DeploymentRollbackApi(APIView):
    """Undo the newest change of the deployment not yet undone, in one step
    (recorded as ``rolled_back``); rolling back again undoes the change
    before it."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=ReasonSerializer,
        responses={
            200: DeploymentOutputSerializer,
            409: error(
                "Nothing to roll back, or the state to restore names a candidate "
                "that may no longer serve (promoted, retired or switched off)."
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deployments.deployment_rollback(
            deployment=deployments.deployment_get_or_create(campaign),
            actor=request.user,
            reason=data.validated_data["reason"],
        )
        return _summary_response(campaign)


class DeploymentChangeListApi(APIView):
    """The deployment's changes, newest first (``limit``/``offset`` pages)."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={
            200: _page_of(
                "DeploymentChangePage", DeploymentChangeSerializer(many=True)
            ),
            403: NOT_REVIEWER_OR_CAMPAIGN,
        },
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        pages = Pages()
        rows = pages.paginate_queryset(
            selectors.deployment_change_list(campaign=campaign), request, view=self
        )
        return pages.get_paginated_response(
            DeploymentChangeSerializer(rows, many=True).data
        )


class AdapterServingApi(APIView):
    """Switch an adapter off for serving (it stays in the registry and the
    inference API answers 404 for it) or on again; recorded as an adapter
    event. Switching off a deployment's candidate ends that canary or A/B
    split (recorded)."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="AdapterServingInput")
    class InputSerializer(serializers.Serializer):
        enabled = serializers.BooleanField(help_text="true: serve it; false: stop.")
        reason = _reason_field()

    @extend_schema(
        request=InputSerializer,
        responses={
            200: AdapterOutputSerializer,
            400: error(
                "The adapter is a champion: promote another version or roll the "
                "champion back before switching it off."
            ),
        },
    )
    def post(self, request: Request, adapter_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        adapter = deployments.adapter_serving_set(
            adapter=_adapter(adapter_id), actor=request.user, **data.validated_data
        )
        return Response(AdapterOutputSerializer(adapter).data)


@extend_schema_serializer(component_name="ServedFeedback")
class ServedFeedbackSerializer(serializers.ModelSerializer):
    response = serializers.CharField(source="response.public_id")
    served_model = serializers.CharField(source="response.served_model")
    adapter = serializers.IntegerField(
        source="response.adapter_id",
        allow_null=True,
        help_text="The version it counts for (null: the base).",
    )

    class Meta:
        model = ServedFeedback
        fields = [
            "id",
            "response",
            "served_model",
            "adapter",
            "rating",
            "comment",
            "created_at",
        ]


class ServedFeedbackCreateApi(APIView):
    """A caller's verdict on a served response (by its ``id`` from the
    inference API), counted for the version that answered it. Any caller
    with a token may send one."""

    permission_classes = [IsAuthenticated]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="ServedFeedbackInput")
    class InputSerializer(serializers.Serializer):
        rating = serializers.ChoiceField(
            choices=ServedFeedback.Rating.choices,
            help_text="up, down, or prefer_other (the other version's answer "
            "would have been better).",
        )
        comment = serializers.CharField(
            required=False, allow_blank=True, max_length=1000, default=""
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: ServedFeedbackSerializer,
            404: error("No served response has this id."),
        },
    )
    def post(self, request: Request, public_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = deployments.served_feedback_record(
            public_id=public_id, caller=request.user, **data.validated_data
        )
        return Response(
            ServedFeedbackSerializer(feedback).data, status=status.HTTP_201_CREATED
        )


@extend_schema_serializer(component_name="ServedResponse")
class ServedResponseSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    caller = serializers.CharField(
        source="caller.username", allow_null=True, default=None
    )

    class Meta:
        model = ServedResponse
        fields = [
            "id",
            "endpoint",
            "requested_model",
            "served_model",
            "base_model",
            "adapter",
            "merged",
            "campaign",
            "arm",
            "caller",
            "end_user",
            "prompt",
            "text",
            "finish_reason",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "sampled",
            "comparison",
            "created_at",
        ]


class ServedResponseListApi(APIView):
    """Responses the inference API gave, newest first (``limit``/``offset``
    pages), optionally of one campaign's alias or one adapter."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="ServedResponseListFilter")
    class FilterSerializer(serializers.Serializer):
        campaign = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=2**63 - 1,
            help_text="Only responses given through this campaign's alias.",
        )
        adapter = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=2**63 - 1,
            help_text="Only responses this adapter gave.",
        )

    @extend_schema(
        parameters=[FilterSerializer, *PAGE_PARAMETERS],
        responses={
            200: _page_of("ServedResponsePage", ServedResponseSerializer(many=True)),
            400: error("A filter is not a positive integer."),
            403: error(
                "The user lacks the reviewer role, or the campaign does not exist."
            ),
            404: error("No adapter has this id."),
        },
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        campaign_id = params.validated_data.get("campaign")
        adapter_id = params.validated_data.get("adapter")
        pages = Pages()
        rows = pages.paginate_queryset(
            selectors.served_response_list(
                campaign=campaign_get_for_user(
                    user=request.user, campaign_id=campaign_id
                )
                if campaign_id is not None
                else None,
                adapter=_adapter(adapter_id) if adapter_id is not None else None,
            ),
            request,
            view=self,
        )
        return pages.get_paginated_response(
            ServedResponseSerializer(rows, many=True).data
        )
