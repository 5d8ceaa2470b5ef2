"""The loop of a campaign over the API: what ``/training/campaigns/<id>/loop/``
shows, for scripts and the loop benchmark to poll."""

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

from core.permissions import IsReviewer
from core.schema import ApiAutoSchema, ErrorSerializer
from training.loop import Round, campaign_loop_get


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


@extend_schema_serializer(component_name="LoopWinRate")
class WinRateSerializer(serializers.Serializer):
    opponent = serializers.CharField(
        help_text="Version key: base:<id> or adapter:<id>."
    )
    opponent_label = serializers.CharField()
    n = serializers.IntegerField(help_text="Labeled comparisons between the two.")
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    ties = serializers.IntegerField(help_text="Ties and 'both bad' (half a win each).")
    rate = serializers.FloatField(allow_null=True, help_text="Null without labels.")
    lower = serializers.FloatField(
        allow_null=True, help_text="Lower bound of the 95% bootstrap interval."
    )
    upper = serializers.FloatField(
        allow_null=True, help_text="Upper bound of the 95% bootstrap interval."
    )


@extend_schema_serializer(component_name="LoopSnapshot")
class SnapshotSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    labels = serializers.IntegerField(
        help_text="Non-golden labels up to its last preference."
    )
    preference_rows = serializers.IntegerField(
        help_text="Rows in its preference files (after the tie policy)."
    )


@extend_schema_serializer(component_name="LoopTrainingJob")
class TrainingStepSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    method = serializers.CharField()
    status = serializers.CharField()
    progress_step = serializers.IntegerField()
    progress_total = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    wall_seconds = serializers.FloatField(
        allow_null=True, help_text="Start to finish; while running, so far."
    )
    error = serializers.CharField()


@extend_schema_serializer(component_name="LoopGenerationJob")
class GenerationStepSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    phase = serializers.CharField()
    prompts_done = serializers.IntegerField()
    prompts_total = serializers.IntegerField()
    tokens_per_second = serializers.FloatField(allow_null=True)
    comparisons_created = serializers.IntegerField()
    guardrails = serializers.DictField(
        help_text="Guardrail figures of the candidate and its opponent, the "
        "violations and whether it passed."
    )
    passed = serializers.BooleanField(
        allow_null=True, help_text="Null until the guardrails are measured."
    )
    violations = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()


@extend_schema_serializer(component_name="LoopGate")
class GateSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(
        choices=["promoted", "refused", "retired", "waiting"]
    )
    text = serializers.CharField()
    reason = serializers.CharField()
    override = serializers.BooleanField()
    at = serializers.DateTimeField(allow_null=True)
    opponent = serializers.CharField(
        help_text="The gate's opponent (for a promotion: as recorded then)."
    )
    n = serializers.IntegerField(help_text="Labeled comparisons against it.")
    needed = serializers.IntegerField(help_text="Comparisons the gate needs.")
    rate = serializers.FloatField(allow_null=True)
    lower = serializers.FloatField(allow_null=True)
    upper = serializers.FloatField(allow_null=True)


@extend_schema_serializer(component_name="LoopRound")
class RoundSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="1 for the first policy adapter.")
    adapter_id = serializers.IntegerField()
    adapter_name = serializers.CharField()
    adapter_status = serializers.CharField()
    method = serializers.CharField()
    created_at = serializers.DateTimeField()
    snapshot = SnapshotSerializer(allow_null=True)
    labels_in_snapshot = serializers.SerializerMethodField()
    training = TrainingStepSerializer(many=True)
    training_wall_seconds = serializers.FloatField(allow_null=True)
    generation = GenerationStepSerializer(allow_null=True)
    tokens_per_second = serializers.SerializerMethodField()
    guardrails = serializers.SerializerMethodField()
    labels = serializers.IntegerField(help_text="Labels on its pairs so far.")
    gate = GateSerializer()
    vs_base = WinRateSerializer()
    vs_previous_champion = WinRateSerializer()
    promoted = serializers.BooleanField()

    @extend_schema_field(
        serializers.IntegerField(
            allow_null=True, help_text="The snapshot's labels (null: no snapshot)."
        )
    )
    def get_labels_in_snapshot(self, obj: Round) -> int | None:
        return obj.snapshot.labels if obj.snapshot is not None else None

    @extend_schema_field(
        serializers.FloatField(
            allow_null=True, help_text="Its candidate generation job's tokens/s."
        )
    )
    def get_tokens_per_second(self, obj: Round) -> float | None:
        return obj.generation.tokens_per_second if obj.generation else None

    @extend_schema_field(
        serializers.DictField(help_text="Its generation job's guardrails ({} before).")
    )
    def get_guardrails(self, obj: Round) -> dict[str, Any]:
        return obj.generation.guardrails if obj.generation else {}


@extend_schema_serializer(component_name="LoopPendingRound")
class PendingRoundSerializer(serializers.Serializer):
    pipeline_id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    snapshot = SnapshotSerializer(allow_null=True)
    training = TrainingStepSerializer(many=True)


@extend_schema_serializer(component_name="LoopChampion")
class ChampionSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="Version key; the base when no champion.")
    label = serializers.CharField()
    adapter_id = serializers.IntegerField(allow_null=True)
    since = serializers.DateTimeField(allow_null=True)


@extend_schema_serializer(component_name="LoopWaiting")
class WaitingSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=[
            "off",
            "training",
            "generating",
            "gate",
            "labels",
            "interval",
            "scheduler",
        ]
    )
    sentence = serializers.CharField()
    policy_enabled = serializers.BooleanField()
    labels_since_snapshot = serializers.IntegerField()
    min_new_preferences = serializers.IntegerField()
    labels_needed = serializers.IntegerField()
    min_interval_minutes = serializers.IntegerField()
    next_training_at = serializers.DateTimeField(allow_null=True)
    open_pairs = serializers.IntegerField()
    training_job_id = serializers.IntegerField(allow_null=True)
    step = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(allow_null=True)
    generation_job_id = serializers.IntegerField(allow_null=True)
    prompts_done = serializers.IntegerField(allow_null=True)
    prompts_total = serializers.IntegerField(allow_null=True)
    adapter_id = serializers.IntegerField(allow_null=True)
    comparisons = serializers.IntegerField(allow_null=True)
    comparisons_needed = serializers.IntegerField(allow_null=True)


class CampaignLoopApi(APIView):
    """The campaign's loop: one round per policy adapter (snapshot, training
    jobs, candidate generation with guardrails, labels, gate decision, win
    rates against the base and the previous champion), the champion, and
    what the loop waits for right now (``waits_for``)."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="CampaignLoop")
    class OutputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField(source="campaign.pk")
        rounds = RoundSerializer(many=True)
        next_round = PendingRoundSerializer(
            allow_null=True,
            help_text="The newest pipeline while it has no policy adapter.",
        )
        champion = ChampionSerializer()
        waiting = WaitingSerializer()
        waits_for = serializers.CharField(
            source="waiting.sentence", help_text="What the loop waits for, in words."
        )
        bootstrap = GenerationStepSerializer(allow_null=True)
        auto_promote = serializers.BooleanField()
        gate_min_comparisons = serializers.IntegerField()
        active = serializers.BooleanField(
            help_text="A training or generation job is queued or running."
        )

    @extend_schema(
        responses={
            200: OutputSerializer,
            401: _error("No credentials (or invalid ones)."),
            403: _error("The user lacks the reviewer role."),
            404: _error("No campaign has this id."),
        }
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        loop = campaign_loop_get(campaign_id=campaign_id)
        return Response(self.OutputSerializer(loop).data)
