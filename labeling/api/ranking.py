"""Ranking API (campaign mode "rank"): the card of a leased ranked
comparison, submitting a ranking, and gold rankings."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import IsAnnotator, IsReviewer
from core.schema import ApiAutoSchema, error
from labeling.api.quality import _comparison
from labeling.selectors.ranking import RankingCard
from labeling.services import ranking as ranking_services


class RankingItemSerializer(serializers.Serializer):
    letter = serializers.CharField(help_text="A, B, C ... in the order shown.")
    text = serializers.CharField()
    html = serializers.CharField(help_text="The text rendered as sanitised HTML.")
    cut_at = serializers.IntegerField(
        allow_null=True,
        help_text="Tokens after which the model was stopped; null when complete.",
    )


class RankingCardSerializer(serializers.Serializer):
    """A leased ranked comparison as its annotator sees it: no model, no
    source; the completions in a per-lease shuffled order."""

    lease_id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    prompt = serializers.JSONField(help_text="A string, or chat messages.")
    is_chat = serializers.BooleanField()
    k = serializers.IntegerField(help_text="How many completions to rank (3 to 9).")
    items = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField()

    @extend_schema_field(RankingItemSerializer(many=True))
    def get_items(self, card: RankingCard) -> list[dict[str, Any]]:
        return [
            {"letter": letter, "text": text, "html": html, "cut_at": cut_at}
            for (letter, html), text, cut_at in zip(
                card.items, card.texts, card.cut_at, strict=True
            )
        ]


class RankingOutputSerializer(serializers.Serializer):
    ranking_id = serializers.IntegerField(source="ranking.pk")
    created = serializers.BooleanField()
    ranks = serializers.ListField(
        child=serializers.IntegerField(),
        source="ranking.ranks",
        help_text="As stored: aligned with the order shown, 1 = best.",
    )
    none_acceptable = serializers.BooleanField(source="ranking.none_acceptable")


class RankingNextOutputSerializer(serializers.Serializer):
    """The ranking, and with ``?next=1`` the next card (or null, and why)."""

    ranking_id = serializers.IntegerField(source="record.ranking.pk")
    created = serializers.BooleanField(source="record.created")
    ranks = serializers.ListField(
        child=serializers.IntegerField(),
        source="record.ranking.ranks",
        help_text="As stored: aligned with the order shown, 1 = best.",
    )
    none_acceptable = serializers.BooleanField(source="record.ranking.none_acceptable")
    next = RankingCardSerializer(
        source="next.card",
        allow_null=True,
        required=False,
        help_text="Only with ?next=1: the next comparison leased to you, or null.",
    )
    no_next = serializers.ChoiceField(
        choices=["empty", "closed"],
        allow_blank=True,
        required=False,
        help_text="Only with ?next=1 when next is null: 'empty' (nothing left "
        "for you) or 'closed' (the campaign is paused, archived or no longer "
        "yours; the ranking is saved).",
    )


class RankingCreateApi(APIView):
    """Submit a ranking for a leased ranked comparison. Idempotent per
    comparison and annotator: a repeat answers 200 with the first ranking."""

    permission_classes = [IsAnnotator]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="RankingCreateInput")
    class InputSerializer(serializers.Serializer):
        ranks = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=9),
            min_length=3,
            max_length=9,
            help_text="One rank per completion in the order shown (A, B, C ...): "
            "1 is best; equal ranks are ties.",
        )
        none_acceptable = serializers.BooleanField(
            default=False, help_text="No completion is acceptable."
        )
        reason = serializers.CharField(
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
                description="Also lease the next comparison of the same campaign "
                "and answer with it (`next`), so a ranking is one round trip.",
            )
        ],
        responses={
            201: RankingNextOutputSerializer,
            200: RankingNextOutputSerializer,
            409: error(
                "The comparison already has all the rankings it needs, or is closed."
            ),
        },
    )
    def post(self, request: Request, lease_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if request.query_params.get("next", "").lower() in {"1", "true", "yes"}:
            outcome = ranking_services.ranking_record_and_lease_next(
                lease_id=lease_id, annotator=request.user, **serializer.validated_data
            )
            result = outcome.record
            data = RankingNextOutputSerializer(outcome).data
        else:
            result = ranking_services.ranking_submit(
                lease_id=lease_id, annotator=request.user, **serializer.validated_data
            )
            data = RankingOutputSerializer(result).data
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(data, status=code)


class ComparisonGoldRankingApi(APIView):
    """Make a ranked comparison gold with its known ranking, or not gold
    (``ranks`` null). Ranks follow the comparison's canonical item order
    (``items``, as imported); annotators are scored by Kendall's tau."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="GoldRankingInput")
    class InputSerializer(serializers.Serializer):
        ranks = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=9),
            min_length=3,
            max_length=9,
            allow_null=True,
            help_text="The known rank of each item (canonical order), or null.",
        )

    class OutputSerializer(serializers.Serializer):
        comparison_id = serializers.IntegerField()
        is_gold = serializers.BooleanField()
        ranks = serializers.ListField(child=serializers.IntegerField(), allow_null=True)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def post(self, request: Request, comparison_id: int) -> Response:
        comparison = _comparison(request.user, comparison_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        comparison = ranking_services.ranked_gold_set(
            comparison=comparison, ranks=serializer.validated_data["ranks"]
        )
        ranks = list(
            comparison.items.order_by("position").values_list("gold_rank", flat=True)
        )
        return Response(
            self.OutputSerializer(
                {
                    "comparison_id": comparison.pk,
                    "is_gold": comparison.is_gold,
                    "ranks": ranks if comparison.is_gold else None,
                }
            ).data
        )
