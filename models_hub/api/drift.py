"""The drift watch over the API: a campaign's series of evaluations, its
drift policy (thresholds, interval, webhook), "evaluate now", and the
alerts with their acknowledgement."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import AdminToWrite, IsAdmin, IsReviewer
from core.schema import ApiAutoSchema, error
from labeling.selectors import campaign_get_for_user, campaign_list_for_user
from models_hub import drift_selectors
from models_hub.api.deployments import PAGE_PARAMETERS, Pages, _page_of
from models_hub.models import DriftAlert, DriftPoint, DriftPolicy
from models_hub.services import drift
from models_hub.versions import VersionKey

CAMPAIGN_ID = re.compile(r"-?\d{1,18}")
NOT_REVIEWER_OR_CAMPAIGN = error(
    "The user lacks the reviewer role (the admin role to change), or the "
    "campaign does not exist or is not open to this user."
)


def _version(adapter_id: int | None, base_model_id: int) -> str:
    return str(VersionKey.of(adapter_id=adapter_id, base_model_id=base_model_id))


@extend_schema_serializer(component_name="DriftPolicy")
class DriftPolicySerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(
        help_text="Every new alert is POSTed here as JSON; empty: none."
    )
    stored = serializers.SerializerMethodField(
        help_text="False: the campaign has no policy row yet and these are the "
        "defaults (the first PUT stores them)."
    )

    class Meta:
        model = DriftPolicy
        fields = [
            *drift.POLICY_FIELDS,
            "evaluation_requested_at",
            "last_evaluated_at",
            "last_error",
            "stored",
        ]
        read_only_fields = fields

    def get_stored(self, policy: DriftPolicy) -> bool:
        return policy.pk is not None


@extend_schema_serializer(component_name="DriftPoint")
class DriftPointSerializer(serializers.ModelSerializer):
    version = serializers.SerializerMethodField(
        help_text="adapter:<id> or base:<id> (the base alone)."
    )
    findings = serializers.SerializerMethodField(
        help_text="The checks against the baseline window: metric, value, "
        "threshold, baseline, breached, message."
    )
    scored = serializers.SerializerMethodField(
        help_text="False: the campaign had no reward model, so no score figures."
    )

    class Meta:
        model = DriftPoint
        fields = [
            "id",
            "version",
            "adapter",
            "base_model",
            "source",
            "taken_at",
            "n",
            "scored",
            "reward_adapter",
            "rm_mean",
            "rm_sd",
            "length_mean",
            "length_p90",
            "empty_rate",
            "truncated_rate",
            "refusal_rate",
            "degenerate_rate",
            "win_rate",
            "win_rate_lower",
            "win_rate_upper",
            "win_rate_n",
            "win_rate_opponent",
            "findings",
        ]

    def get_version(self, point: DriftPoint) -> str:
        return _version(point.adapter_id, point.base_model_id)

    def get_findings(self, point: DriftPoint) -> list[dict[str, Any]]:
        return list(point.details.get("findings", []))

    def get_scored(self, point: DriftPoint) -> bool:
        return bool(point.details.get("scored", point.rm_mean is not None))


@extend_schema_serializer(component_name="DriftAlert")
class DriftAlertSerializer(serializers.ModelSerializer):
    version = serializers.SerializerMethodField(
        help_text="adapter:<id> or base:<id> (the base alone)."
    )
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", allow_null=True, default=None
    )
    is_open = serializers.SerializerMethodField()

    class Meta:
        model = DriftAlert
        fields = [
            "id",
            "campaign",
            "version",
            "adapter",
            "base_model",
            "source",
            "metric",
            "value",
            "threshold",
            "baseline",
            "message",
            "point",
            "opened_at",
            "last_seen_at",
            "resolved_at",
            "is_open",
            "acknowledged_by",
            "acknowledged_at",
            "webhook_status",
            "webhook_detail",
        ]

    def get_version(self, alert: DriftAlert) -> str:
        return _version(alert.adapter_id, alert.base_model_id)

    def get_is_open(self, alert: DriftAlert) -> bool:
        return alert.resolved_at is None


@extend_schema_serializer(component_name="DriftSeries")
class DriftSeriesSerializer(serializers.Serializer):
    campaign = serializers.IntegerField()
    policy = DriftPolicySerializer()
    points = DriftPointSerializer(many=True, help_text="Oldest first.")
    open_alerts = DriftAlertSerializer(many=True)


class CampaignDriftApi(APIView):
    """The campaign's drift series: every evaluation of every served version
    (held-out prompts and served traffic), its policy and its open alerts."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        responses={200: DriftSeriesSerializer, 403: NOT_REVIEWER_OR_CAMPAIGN}
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        series = drift_selectors.drift_series(campaign=campaign)
        body = {
            "campaign": campaign.pk,
            "policy": drift_selectors.drift_policy_for(campaign=campaign),
            "points": sorted(
                (p for s in series for p in s.points), key=lambda p: (p.taken_at, p.pk)
            ),
            "open_alerts": drift_selectors.drift_alert_list(
                campaign=campaign, open_only=True
            ),
        }
        return Response(DriftSeriesSerializer(body).data)


class DriftPolicyApi(APIView):
    """The campaign's drift policy. PUT sets the fields it names (the others
    keep their value; the first PUT stores the defaults for them)."""

    permission_classes = [IsReviewer, AdminToWrite]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="DriftPolicyInput")
    class InputSerializer(serializers.Serializer):
        enabled = serializers.BooleanField(required=False)
        interval_minutes = serializers.IntegerField(
            required=False, min_value=5, max_value=525_600
        )
        golden_sample_size = serializers.IntegerField(
            required=False, min_value=1, max_value=1000
        )
        served_sample_size = serializers.IntegerField(
            required=False, min_value=1, max_value=5000
        )
        mean_drop_sd = serializers.FloatField(
            required=False, min_value=0.1, max_value=1e6
        )
        psi_limit = serializers.FloatField(required=False, min_value=0.0, max_value=1e6)
        empty_rate_increase = serializers.FloatField(
            required=False, min_value=0.0, max_value=1.0
        )
        truncated_rate_increase = serializers.FloatField(
            required=False, min_value=0.0, max_value=1.0
        )
        refusal_rate_increase = serializers.FloatField(
            required=False, min_value=0.0, max_value=1.0
        )
        min_win_rate = serializers.FloatField(
            required=False, min_value=0.0, max_value=1.0
        )
        baseline_points = serializers.IntegerField(
            required=False, min_value=1, max_value=100
        )
        webhook_url = serializers.URLField(
            required=False,
            allow_blank=True,
            max_length=500,
            help_text="http(s) URL every new alert is POSTed to as JSON; empty: none.",
        )

    @extend_schema(
        responses={200: DriftPolicySerializer, 403: NOT_REVIEWER_OR_CAMPAIGN}
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        policy = drift_selectors.drift_policy_for(campaign=campaign)
        return Response(DriftPolicySerializer(policy).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: DriftPolicySerializer,
            400: error("A field is out of range or not a URL (named)."),
            403: NOT_REVIEWER_OR_CAMPAIGN,
        },
    )
    def put(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            policy = drift.drift_policy_update(
                campaign=campaign, actor=request.user, **data.validated_data
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from None
        return Response(DriftPolicySerializer(policy).data)


class DriftEvaluateApi(APIView):
    """Queue an evaluation of the campaign's served versions now (on the gpu
    worker); its points and alerts appear in the series when it is done."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            202: DriftPolicySerializer,
            409: error("An evaluation of this campaign is already queued or running."),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        policy = drift.drift_evaluate_request(campaign=campaign, actor=request.user)
        return Response(
            DriftPolicySerializer(policy).data, status=status.HTTP_202_ACCEPTED
        )


class DriftAlertListApi(APIView):
    """Drift alerts, newest first, of the campaigns open to the caller;
    ``campaign`` narrows to one, ``open=1`` to the open ones (``open=0``: the
    resolved ones)."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        parameters=[
            OpenApiParameter("campaign", int, description="Only this campaign's."),
            OpenApiParameter(
                "open", int, enum=[0, 1], description="1: open only; 0: resolved only."
            ),
            *PAGE_PARAMETERS,
        ],
        responses={
            200: _page_of("PaginatedDriftAlertList", DriftAlertSerializer(many=True)),
            400: error("campaign is not an id, or open is not 0 or 1."),
        },
    )
    def get(self, request: Request) -> Response:
        raw_campaign = request.query_params.get("campaign", "")
        raw_open = request.query_params.get("open", "")
        if raw_campaign and not CAMPAIGN_ID.fullmatch(raw_campaign):
            raise ValidationError({"campaign": "Expected a campaign id."})
        if raw_open not in ("", "0", "1"):
            raise ValidationError(
                {"open": "Expected 1 (open only) or 0 (resolved only)."}
            )
        alerts = drift_selectors.drift_alert_list(
            open_only={"": None, "1": True, "0": False}[raw_open]
        ).filter(campaign__in=campaign_list_for_user(user=request.user))
        if raw_campaign:
            alerts = alerts.filter(campaign_id=int(raw_campaign))
        pages = Pages()
        page = pages.paginate_queryset(alerts, request, view=self)
        return pages.get_paginated_response(DriftAlertSerializer(page, many=True).data)


class DriftAlertAcknowledgeApi(APIView):
    """Record that the caller saw the alert; it stays open until an
    evaluation is back within its threshold. Acknowledging twice keeps the
    first acknowledgement."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            200: DriftAlertSerializer,
            404: error("No such alert in a campaign open to this user."),
            409: error("The alert is already resolved."),
        },
    )
    def post(self, request: Request, alert_id: int) -> Response:
        alert = (
            drift_selectors.drift_alert_list()
            .filter(campaign__in=campaign_list_for_user(user=request.user))
            .filter(pk=alert_id)
            .first()
        )
        if alert is None:
            raise NotFound("There is no such drift alert open to you.")
        alert = drift.drift_alert_acknowledge(alert=alert, actor=request.user)
        return Response(DriftAlertSerializer(alert).data)
