"""Label-quality API: agreement, annotators, gold pairs, disagreements."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFound
from core.parsers import JSONParser
from core.permissions import IsReviewer
from core.schema import ApiAutoSchema, error
from labeling.models import Comparison
from labeling.selectors import campaign_get_for_user
from labeling.selectors import quality as q
from labeling.services.quality import comparison_adjudicate, comparison_gold_set


def _comparison(user: Any, comparison_id: int) -> Comparison:
    comparison = (
        Comparison.objects.filter(pk=comparison_id).select_related("campaign").first()
    )
    if comparison is None:
        raise NotFound("No such comparison.")
    campaign_get_for_user(user=user, campaign_id=comparison.campaign_id)
    return comparison


class CampaignQualityApi(APIView):
    """The cached quality report: agreement (Krippendorff's alpha, pairwise
    Cohen's kappa) and a row per annotator: throughput, median time, gold
    accuracy, agreement, left bias. ``report.status`` is ``computing`` until
    the first refresh (``agreement`` is then null), ``updating`` while a
    newer one is on its way, else ``current``. A rank campaign adds
    ``ranking``: agreement among rankings (Krippendorff's alpha at the
    ordinal level, Kendall's W), gold scores by Kendall's tau per annotator
    id, and how many rankings found nothing acceptable (null elsewhere)."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        report = q.quality_report_cached(campaign=campaign)
        payload = report.payload or {}
        return Response(
            {
                "report": report.meta(),
                "agreement": payload.get("agreement"),
                "ranking": payload.get("ranking"),
                "annotators": [
                    {
                        **{
                            k: r[k]
                            for k in (
                                "annotator_id",
                                "username",
                                "labels",
                                "labels_per_hour",
                                "median_seconds",
                                "gold",
                            )
                        },
                        "agreement_with_others": {
                            "rate": r["agreement"][0],
                            "items": r["agreement"][1],
                        }
                        if r["agreement"]
                        else None,
                        "left_pick": r["left_bias"],
                    }
                    for r in payload.get("annotators", [])
                ],
            }
        )


@extend_schema_serializer(component_name="AnnotatorDay")
class TimelineDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    labels = serializers.IntegerField(help_text="Labels given that day.")
    gold = serializers.IntegerField(help_text="Of them, on gold pairs.")
    gold_accuracy = serializers.FloatField(
        allow_null=True, help_text="Share of gold pairs answered right; null without."
    )


@extend_schema_serializer(component_name="DisagreementLabel")
class DisagreementLabelSerializer(serializers.Serializer):
    annotator_id = serializers.IntegerField()
    choice = serializers.CharField(help_text="a, b, tie or both_bad.")
    rationale = serializers.CharField(allow_blank=True)


@extend_schema_serializer(component_name="Disagreement")
class DisagreementSerializer(serializers.Serializer):
    comparison_id = serializers.IntegerField()
    prompt = serializers.JSONField(help_text="A string, or chat messages.")
    a = serializers.CharField()
    b = serializers.CharField()
    labels = DisagreementLabelSerializer(many=True)


class AnnotatorTimelineApi(APIView):
    """Labels and gold accuracy per day over the last 30 days (days without
    labels are left out; an annotator without labels has an empty list)."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: TimelineDaySerializer(many=True)})
    def get(self, request: Request, campaign_id: int, annotator_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        return Response(
            q.annotator_timeline(campaign=campaign, annotator_id=annotator_id)
        )


class DisagreementListApi(APIView):
    """Pairs whose annotators disagree and that nobody adjudicated yet: those
    the cached quality report found (empty until its first refresh), less
    any adjudicated since."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: DisagreementSerializer(many=True)})
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        report = q.quality_report_cached(campaign=campaign)
        return Response(
            [
                {
                    "comparison_id": d["comparison"].pk,
                    "prompt": d["comparison"].prompt.content,
                    "a": d["comparison"].completion_a.text,
                    "b": d["comparison"].completion_b.text,
                    "labels": [
                        {
                            "annotator_id": p.annotator_id,
                            "choice": p.choice,
                            "rationale": p.rationale,
                        }
                        for p in d["labels"]
                    ],
                }
                for d in q.disagreements(
                    campaign=campaign,
                    among=(report.payload or {}).get("disagreement_ids", []),
                )
            ]
        )


class ComparisonAdjudicateApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="ComparisonAdjudicateInput")
    class InputSerializer(serializers.Serializer):
        choice = serializers.ChoiceField(choices=["a", "b", "tie", "both_bad"])
        rationale = serializers.CharField(
            max_length=1000, required=False, allow_blank=True, default=""
        )

    @extend_schema_serializer(component_name="ComparisonAdjudicateOutput")
    class OutputSerializer(serializers.Serializer):
        preference_id = serializers.IntegerField()
        choice = serializers.CharField()
        source = serializers.CharField(help_text="adjudication")

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            409: error(
                "The pair was already adjudicated, or the reviewer labeled it "
                "themselves."
            ),
        },
    )
    def post(self, request: Request, comparison_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pref = comparison_adjudicate(
            comparison=_comparison(request.user, comparison_id),
            reviewer=request.user,
            **data.validated_data,
        )
        return Response(
            {"preference_id": pref.pk, "choice": pref.choice, "source": pref.source},
            status=status.HTTP_201_CREATED,
        )


class ComparisonGoldApi(APIView):
    """Mark a pair as gold with its known answer, or unmark it (choice null)."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()
    # A null choice (unmark) has no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="ComparisonGoldInput")
    class InputSerializer(serializers.Serializer):
        choice = serializers.ChoiceField(choices=["a", "b", "tie"], allow_null=True)

    @extend_schema_serializer(component_name="ComparisonGoldOutput")
    class OutputSerializer(serializers.Serializer):
        comparison_id = serializers.IntegerField()
        is_gold = serializers.BooleanField()
        gold_choice = serializers.CharField(allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request: Request, comparison_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        comparison = comparison_gold_set(
            comparison=_comparison(request.user, comparison_id),
            choice=data.validated_data["choice"],
        )
        return Response(
            {
                "comparison_id": comparison.pk,
                "is_gold": comparison.is_gold,
                "gold_choice": comparison.gold_choice or None,
            }
        )
