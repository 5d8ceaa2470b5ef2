from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import FileUploadParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import roles
from core.exceptions import ApplicationError
from core.parsers import JSONParser
from core.permissions import AdminToWrite, IsAdmin, IsAnnotator, IsReviewer
from core.schema import ApiAutoSchema, error
from labeling import selectors
from labeling.api.ranking import RankingCardSerializer
from labeling.exceptions import NothingToLabel
from labeling.models import Campaign
from labeling.selectors.ranking import ranking_export_rows
from labeling.services import campaigns as campaign_services
from labeling.services import queue
from labeling.services import ranking as ranking_services
from labeling.services.imports import campaign_import_jsonl


class CampaignOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "description",
            "guidelines",
            "criteria",
            "overlap_k",
            "lease_ttl_seconds",
            "gold_rate",
            "status",
            "mode",
            "created_at",
            "updated_at",
        ]


class CampaignListApi(APIView):
    permission_classes = [IsAnnotator, AdminToWrite]
    schema = ApiAutoSchema()
    # Criteria are objects and annotators a list: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="CampaignListInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(
            max_length=500, required=False, allow_blank=True
        )
        guidelines = serializers.CharField(
            required=False, allow_blank=True, max_length=100_000
        )
        criteria = serializers.ListField(child=serializers.DictField(), required=False)
        overlap_k = serializers.IntegerField(min_value=1, max_value=20, required=False)
        lease_ttl_seconds = serializers.IntegerField(
            min_value=30, max_value=86_400, required=False
        )
        gold_rate = serializers.FloatField(min_value=0.0, max_value=0.5, required=False)
        mode = serializers.ChoiceField(
            choices=Campaign.Mode.choices,
            required=False,
            help_text="pair (A/B) or rank (3 to 9 completions put in order); "
            "fixed once the campaign has comparisons.",
        )
        annotator_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
            required=False,
            help_text="Users who may label this campaign; every id must exist.",
        )

        def validate_annotator_ids(self, value: list[int]) -> list[int]:
            known = set(
                get_user_model()
                .objects.filter(pk__in=value)
                .values_list("pk", flat=True)
            )
            unknown = sorted(set(value) - known)
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown user ids: {', '.join(map(str, unknown))}."
                )
            return value

    @extend_schema(responses=CampaignOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        campaigns = selectors.campaign_list_for_user(user=request.user)
        return Response(CampaignOutputSerializer(campaigns, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: CampaignOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_services.campaign_create(
            created_by=request.user, **serializer.validated_data
        )
        return Response(
            CampaignOutputSerializer(campaign).data, status=status.HTTP_201_CREATED
        )


class CampaignDetailApi(APIView):
    permission_classes = [IsAnnotator, AdminToWrite]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="CampaignDetailInput")
    class InputSerializer(CampaignListApi.InputSerializer):
        """The create fields (all optional here: PATCH is partial) plus status."""

        status = serializers.ChoiceField(
            choices=Campaign.Status.choices, required=False
        )

    @extend_schema(responses=CampaignOutputSerializer)
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.campaign_get_for_user(
            user=request.user, campaign_id=campaign_id
        )
        return Response(CampaignOutputSerializer(campaign).data)

    @extend_schema(request=InputSerializer, responses=CampaignOutputSerializer)
    def patch(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.campaign_get_for_user(
            user=request.user, campaign_id=campaign_id
        )
        serializer = self.InputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_services.campaign_update(
            campaign=campaign, data=serializer.validated_data
        )
        return Response(CampaignOutputSerializer(campaign).data)


class CampaignImportApi(APIView):
    """Bulk import JSONL (prompts, completions, pairs); atomic."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()
    parser_classes = [MultiPartParser, FileUploadParser]

    @extend_schema(
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        responses=inline_serializer(
            "ImportResult",
            {
                "lines": serializers.IntegerField(),
                "prompts_created": serializers.IntegerField(),
                "completions_created": serializers.IntegerField(),
                "comparisons_created": serializers.IntegerField(),
                "duplicates_skipped": serializers.IntegerField(),
            },
        ),
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.campaign_get_for_user(
            user=request.user, campaign_id=campaign_id
        )
        upload = request.data.get("file")
        if upload is None or isinstance(upload, str):
            raise ApplicationError('Send the JSONL as a multipart field named "file".')
        if upload.size > settings.ARBITER_IMPORT_MAX_BYTES:
            raise ApplicationError(
                f"The file is {upload.size} bytes; the limit is {settings.ARBITER_IMPORT_MAX_BYTES}."
            )
        result = campaign_import_jsonl(campaign=campaign, lines=upload)
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class BlindPairSerializer(serializers.Serializer):
    lease_id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    prompt = serializers.JSONField(help_text="A string, or chat messages.")
    is_chat = serializers.BooleanField()
    left = serializers.CharField()
    right = serializers.CharField()
    expires_at = serializers.DateTimeField()


class ComparisonNextApi(APIView):
    """Lease the next pair. Sides are shuffled per lease; no model is named.
    In a rank campaign, the next ranked comparison: its completions in a
    per-lease shuffled order (submit to ``leases/<id>/ranking/``)."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            200: PolymorphicProxySerializer(
                component_name="NextComparison",
                serializers=[BlindPairSerializer, RankingCardSerializer],
                resource_type_field_name=None,
            ),
            204: None,
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.campaign_get_for_annotator(
            user=request.user, campaign_id=campaign_id
        )
        if campaign.mode == Campaign.Mode.RANK:
            try:
                ranked = ranking_services.ranking_lease_next(
                    campaign=campaign, annotator=request.user
                )
            except NothingToLabel:
                return Response(status=status.HTTP_204_NO_CONTENT)
            return Response(RankingCardSerializer(ranked.card).data)
        try:
            leased = queue.comparison_lease_next_pair(
                campaign=campaign, annotator=request.user
            )
        except NothingToLabel:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(BlindPairSerializer(leased.pair).data)


class PreferenceOutputSerializer(serializers.Serializer):
    preference_id = serializers.IntegerField(source="preference.pk")
    created = serializers.BooleanField()
    choice = serializers.SerializerMethodField()

    def get_choice(self, result: queue.RecordResult) -> str:
        # Answer in screen sides, as the annotator expressed it.
        pref = result.preference
        mapping = {
            "a": "left" if pref.a_on_left else "right",
            "b": "right" if pref.a_on_left else "left",
        }
        return mapping.get(pref.choice, pref.choice)


class PreferenceNextOutputSerializer(serializers.Serializer):
    """The label, and with ``?next=1`` the next pair (or null, and why)."""

    preference_id = serializers.IntegerField(source="record.preference.pk")
    created = serializers.BooleanField(source="record.created")
    choice = serializers.SerializerMethodField()
    next = BlindPairSerializer(
        source="next.pair",
        allow_null=True,
        required=False,
        help_text="Only with ?next=1: the next pair leased to you, or null.",
    )
    no_next = serializers.ChoiceField(
        choices=["empty", "closed"],
        allow_blank=True,
        required=False,
        help_text="Only with ?next=1 when next is null: 'empty' (no pair left "
        "for you) or 'closed' (the campaign is paused, archived or no longer "
        "yours; the label is saved).",
    )

    def get_choice(self, outcome: queue.RecordNextResult) -> str:
        return PreferenceOutputSerializer().get_choice(outcome.record)


class PreferenceCreateApi(APIView):
    """Submit a label for a leased pair. Idempotent per pair and annotator."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()
    # Criteria are an object and strength may be null: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="PreferenceCreateInput")
    class InputSerializer(serializers.Serializer):
        choice = serializers.ChoiceField(choices=queue.SCREEN_CHOICES)
        strength = serializers.IntegerField(
            min_value=-3, max_value=3, required=False, allow_null=True
        )
        criteria = serializers.DictField(
            child=serializers.ChoiceField(choices=queue.SCREEN_CHOICES), required=False
        )
        rationale = serializers.CharField(
            max_length=1000, required=False, allow_blank=True
        )
        time_spent_ms = serializers.IntegerField(
            min_value=0, max_value=86_400_000, required=False, allow_null=True
        )
        client_request_id = serializers.CharField(
            max_length=64, required=False, allow_blank=True
        )

    @extend_schema(
        request=InputSerializer,
        parameters=[
            OpenApiParameter(
                "next",
                bool,
                description="Also lease the next pair of the same campaign and "
                "answer with it (`next`), so a label is one round trip.",
            )
        ],
        responses={
            201: PreferenceNextOutputSerializer,
            200: PreferenceNextOutputSerializer,
            409: error("The pair already has all the labels it needs, or is closed."),
        },
    )
    def post(self, request: Request, lease_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if request.query_params.get("next", "").lower() in {"1", "true", "yes"}:
            outcome = queue.preference_record_and_lease_next(
                lease_id=lease_id, annotator=request.user, **serializer.validated_data
            )
            result = outcome.record
            data = PreferenceNextOutputSerializer(outcome).data
        else:
            result = queue.preference_record(
                lease_id=lease_id, annotator=request.user, **serializer.validated_data
            )
            data = PreferenceOutputSerializer(result).data
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(data, status=code)


class LeaseSkipApi(APIView):
    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, lease_id: int) -> Response:
        queue.lease_skip(lease_id=lease_id, annotator=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CampaignStatsApi(APIView):
    """Reviewers see the campaign; annotators see their own progress."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.campaign_get_for_user(
            user=request.user, campaign_id=campaign_id
        )
        data: dict[str, Any] = {
            "me": selectors.annotator_progress(
                campaign=campaign, annotator=request.user
            )
        }
        if roles.is_reviewer(request.user):
            data["campaign"] = selectors.campaign_stats(campaign=campaign)
        return Response(data)


class PreferenceExportApi(APIView):
    """Stream preferences as JSONL in the format TRL trainers read."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="PreferenceExportInput")
    class InputSerializer(serializers.Serializer):
        tie_policy = serializers.ChoiceField(
            choices=selectors.TIE_POLICIES, default="skip"
        )
        split = serializers.MultipleChoiceField(
            choices=["train", "val", "test"], required=False
        )
        exclude_annotator = serializers.ListField(
            child=serializers.IntegerField(), required=False
        )
        include_golden = serializers.BooleanField(default=False)
        layout = serializers.ChoiceField(
            choices=["pairwise", "listwise"], default="pairwise"
        )
        include_unacceptable = serializers.BooleanField(default=False)

    @extend_schema(
        parameters=[
            OpenApiParameter("tie_policy", str, enum=list(selectors.TIE_POLICIES)),
            OpenApiParameter("split", str, many=True, enum=["train", "val", "test"]),
            OpenApiParameter("exclude_annotator", int, many=True),
            OpenApiParameter("include_golden", bool),
            OpenApiParameter(
                "layout",
                str,
                enum=["pairwise", "listwise"],
                description="pairwise (default): TRL preference rows, a "
                "ranking's implied pairs among them; listwise: one row per "
                "ranking, completions best first with their ranks.",
            ),
            OpenApiParameter(
                "include_unacceptable",
                bool,
                description="Also export rankings flagged 'none acceptable' "
                "(and their implied pairs).",
            ),
        ],
        responses={(200, "application/jsonl"): OpenApiTypes.STR},
    )
    def get(self, request: Request, campaign_id: int) -> StreamingHttpResponse:
        campaign = selectors.campaign_get_for_user(
            user=request.user, campaign_id=campaign_id
        )
        params = self.InputSerializer(
            data={
                "tie_policy": request.query_params.get("tie_policy", "skip"),
                "split": request.query_params.getlist("split"),
                "exclude_annotator": request.query_params.getlist("exclude_annotator"),
                "include_golden": request.query_params.get("include_golden", "false"),
                "layout": request.query_params.get("layout", "pairwise"),
                "include_unacceptable": request.query_params.get(
                    "include_unacceptable", "false"
                ),
            }
        )
        params.is_valid(raise_exception=True)
        common = {
            "campaign": campaign,
            "splits": sorted(params.validated_data.get("split", [])),
            "exclude_annotator_ids": params.validated_data.get("exclude_annotator"),
            "include_golden": params.validated_data["include_golden"],
            "include_unacceptable": params.validated_data["include_unacceptable"],
        }
        listwise = params.validated_data["layout"] == "listwise"
        rows = (
            ranking_export_rows(**common)
            if listwise
            else selectors.preference_export_rows(
                tie_policy=params.validated_data["tie_policy"], **common
            )
        )

        def lines() -> Iterator[bytes]:
            for row in rows:
                yield (json.dumps(row, ensure_ascii=False) + "\n").encode()

        response = StreamingHttpResponse(
            lines(), content_type="application/jsonl; charset=utf-8"
        )
        response["Content-Disposition"] = (
            f'attachment; filename="campaign-{campaign.pk}-'
            f'{"rankings" if listwise else "preferences"}.jsonl"'
        )
        return response


class MeApi(APIView):
    schema = ApiAutoSchema()

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        user = request.user
        return Response(
            {
                "id": user.pk,
                "username": user.get_username(),
                "roles": [
                    r
                    for r, check in (
                        ("annotator", roles.is_annotator),
                        ("reviewer", roles.is_reviewer),
                        ("admin", roles.is_admin),
                    )
                    if check(user)
                ],
            }
        )
