from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFound
from core.permissions import AdminToWrite, IsAdmin, IsReviewer
from core.schema import ApiAutoSchema, error
from labeling.selectors import campaign_get_for_user
from models_hub import selectors
from models_hub.models import Adapter, AdapterEvent, BaseModelVersion, GenerationJob
from models_hub.services import exports, generation, registry


def _adapter(adapter_id: int) -> Adapter:
    adapter = (
        Adapter.objects.select_related("campaign", "base_model")
        .filter(pk=adapter_id)
        .first()
    )
    if adapter is None:
        raise NotFound("No such adapter.")
    return adapter


class AdapterOutputSerializer(serializers.ModelSerializer):
    job_id = serializers.SerializerMethodField()
    served_name = serializers.CharField(
        read_only=True,
        help_text="The immutable name the inference API serves it under.",
    )

    class Meta:
        model = Adapter
        fields = [
            "id",
            "name",
            "version",
            "campaign",
            "base_model",
            "role",
            "method",
            "peft_type",
            "status",
            "metrics",
            "parent",
            "storage_path",
            "merged_path",
            "job_id",
            "serving_enabled",
            "served_name",
            "created_at",
        ]

    def get_job_id(self, adapter: Adapter) -> int | None:
        job = getattr(adapter, "job", None)
        return job.pk if job is not None else None


class BaseModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaseModelVersion
        fields = ["id", "name", "source", "revision", "dtype", "is_default"]
        # The default base model is chosen by settings, never by a POST.
        read_only_fields = ["is_default"]


class BaseModelListApi(APIView):
    permission_classes = [IsReviewer, AdminToWrite]
    schema = ApiAutoSchema()

    @extend_schema(responses=BaseModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(
            BaseModelSerializer(
                BaseModelVersion.objects.order_by("name"), many=True
            ).data
        )

    @extend_schema(request=BaseModelSerializer, responses={201: BaseModelSerializer})
    def post(self, request: Request) -> Response:
        serializer = BaseModelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        base = registry.base_model_create(**serializer.validated_data)
        return Response(BaseModelSerializer(base).data, status=status.HTTP_201_CREATED)


class AdapterListApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="AdapterListFilter")
    class FilterSerializer(serializers.Serializer):
        campaign = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=2**63 - 1,
            help_text="Only this campaign's adapters.",
        )

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: AdapterOutputSerializer(many=True),
            400: error("The campaign filter is not a positive integer."),
        },
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        campaign_id = params.validated_data.get("campaign")
        campaign = (
            campaign_get_for_user(user=request.user, campaign_id=campaign_id)
            if campaign_id is not None
            else None
        )
        return Response(
            AdapterOutputSerializer(
                selectors.adapter_list(campaign=campaign), many=True
            ).data
        )


class AdapterDetailApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses=AdapterOutputSerializer)
    def get(self, request: Request, adapter_id: int) -> Response:
        return Response(AdapterOutputSerializer(_adapter(adapter_id)).data)


class AdapterActionInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    override = serializers.BooleanField(required=False, default=False)


class AdapterPromoteApi(APIView):
    """Make this adapter the champion (the promotion gate may refuse: 409)."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=AdapterActionInputSerializer,
        responses={
            200: AdapterOutputSerializer,
            409: error(
                "The adapter is already the champion or retired, the promotion "
                "gate refused it (evidence in the body), or an override came "
                "without a reason."
            ),
        },
    )
    def post(self, request: Request, adapter_id: int) -> Response:
        data = AdapterActionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        adapter = registry.adapter_promote(
            adapter=_adapter(adapter_id), actor=request.user, **data.validated_data
        )
        return Response(AdapterOutputSerializer(adapter).data)


class AdapterRetireApi(APIView):
    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=AdapterActionInputSerializer,
        responses={
            200: AdapterOutputSerializer,
            409: error("The adapter is the champion: promote another or roll back."),
        },
    )
    def post(self, request: Request, adapter_id: int) -> Response:
        data = AdapterActionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        adapter = registry.adapter_retire(
            adapter=_adapter(adapter_id),
            actor=request.user,
            reason=data.validated_data["reason"],
        )
        return Response(AdapterOutputSerializer(adapter).data)


class ChampionRollbackApi(APIView):
    """The previous champion of this campaign and role returns, in one step
    (the base model when the current champion was the first)."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="ChampionRollbackInput")
    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(
            choices=Adapter.Role.choices, default=Adapter.Role.POLICY
        )
        reason = serializers.CharField(
            max_length=500, required=False, allow_blank=True, default=""
        )

    @extend_schema_serializer(component_name="ChampionRollbackOutput")
    class OutputSerializer(serializers.Serializer):
        champion = AdapterOutputSerializer(
            allow_null=True,
            help_text="The champion after the rollback; null when the base model serves again.",
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            409: error("There is no champion to roll back; the base model serves."),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        adapter = registry.adapter_rollback(
            campaign=campaign, actor=request.user, **data.validated_data
        )
        return Response(self.OutputSerializer({"champion": adapter}).data)


@extend_schema_serializer(component_name="AdapterEvent")
class AdapterEventSerializer(serializers.ModelSerializer):
    previous_champion_id = serializers.IntegerField(allow_null=True)
    actor_id = serializers.IntegerField(allow_null=True)

    class Meta:
        model = AdapterEvent
        fields = [
            "id",
            "action",
            "previous_champion_id",
            "actor_id",
            "override",
            "reason",
            "evidence",
            "created_at",
        ]


class AdapterEventListApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: AdapterEventSerializer(many=True)})
    def get(self, request: Request, adapter_id: int) -> Response:
        events = AdapterEvent.objects.filter(adapter=_adapter(adapter_id)).values(
            "id",
            "action",
            "previous_champion_id",
            "actor_id",
            "override",
            "reason",
            "evidence",
            "created_at",
        )
        return Response(list(events))


class AdapterDownloadApi(APIView):
    """The adapter's PEFT folder as a zip."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiTypes.BINARY,
            409: error("The adapter's files are missing from the storage root."),
        }
    )
    def get(self, request: Request, adapter_id: int) -> FileResponse:
        adapter = _adapter(adapter_id)
        return FileResponse(
            exports.adapter_archive(adapter=adapter),
            as_attachment=True,
            filename=f"{adapter.name}.zip",
        )


class AdapterMergeApi(APIView):
    """Queue a merged full-model export (merge_and_unload) on the GPU worker."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(request=None, responses={202: AdapterOutputSerializer})
    def post(self, request: Request, adapter_id: int) -> Response:
        adapter = _adapter(adapter_id)
        exports.adapter_merge_export_enqueue(adapter=adapter)
        return Response(
            AdapterOutputSerializer(adapter).data, status=status.HTTP_202_ACCEPTED
        )


class LeaderboardApi(APIView):
    """The cached leaderboard: Bradley-Terry strengths with bootstrap 95%
    intervals, every pair's win rate with its interval, and candidates
    against the champion. ``report.status`` is ``computing`` until the first
    refresh (then the lists are empty), ``updating`` while a newer one is on
    its way, else ``current``; ``report.computed_at`` says as of when."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        report = selectors.leaderboard_cached(campaign=campaign)
        board = report.payload or {}
        return Response(
            {
                "report": report.meta(),
                "labels": board.get("labels", 0),
                "anchor": board.get("anchor"),
                "versions": [
                    {
                        k: r[k]
                        for k in (
                            "key",
                            "label",
                            "strength",
                            "lower",
                            "upper",
                            "labels",
                        )
                    }
                    for r in board.get("rows", [])
                ],
                "win_rates": board.get("win_rates", {}),
                "champion": board.get("champion"),
                "against_champion": board.get("against_champion", []),
            }
        )


class CompareApi(APIView):
    """Two versions' outputs on the golden prompts, with the human win rate.
    400 when a key is malformed or both name one version; 404 when a version
    does not exist."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "left", str, required=True, description="base:<id> or adapter:<id>"
            ),
            OpenApiParameter(
                "right",
                str,
                required=True,
                description="base:<id> or adapter:<id>, not the same as left",
            ),
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            400: error("A version key is malformed, or both name one version."),
            404: error("No such campaign, or a version does not exist."),
        },
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        left, right = selectors.version_pair_get(
            left=request.query_params.get("left"),
            right=request.query_params.get("right"),
        )
        result = selectors.side_by_side(campaign=campaign, left=left, right=right)
        rate = result["win_rate"]
        return Response(
            {
                "left": left.key,
                "right": right.key,
                "win_rate": {
                    "rate": rate.rate,
                    "lower": rate.lower,
                    "upper": rate.upper,
                    "n": rate.n,
                    "wins": rate.wins,
                    "losses": rate.losses,
                    "ties": rate.ties,
                    "as_of": result["win_rate_as_of"],
                },
                "rows": [
                    {
                        "prompt_id": row["prompt"].pk,
                        "prompt": row["prompt"].content,
                        "left": row["left"].text if row["left"] else None,
                        "right": row["right"].text if row["right"] else None,
                        "left_reward": row["left"].metadata.get("reward_score")
                        if row["left"]
                        else None,
                        "right_reward": row["right"].metadata.get("reward_score")
                        if row["right"]
                        else None,
                    }
                    for row in result["rows"]
                ],
            }
        )


# ---------------------------------------------------------------- generation jobs


# Other API modules of this app document their errors through these names.
_error = error
NOT_LOGGED_IN = error("No credentials (or invalid ones).")
NOT_REVIEWER = error("The user lacks the reviewer role.")
NOT_ADMIN = error("The user lacks the admin role.")
NO_SUCH_JOB = error("No generation job has this id.")


class GenerationJobOutputSerializer(serializers.ModelSerializer):
    heartbeat_stale = serializers.SerializerMethodField(
        help_text="Running, and no heartbeat for more than 30 s: the worker may "
        "be gone (the sweeper fails the job after the heartbeat timeout)."
    )

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "campaign",
            "kind",
            "adapter",
            "versions",
            "status",
            "phase",
            "cancel_requested",
            "prompts_done",
            "prompts_total",
            "new_tokens",
            "tokens_per_second",
            "eta_seconds",
            "comparisons_created",
            "guardrails",
            "heartbeat_at",
            "heartbeat_stale",
            "worker",
            "started_at",
            "finished_at",
            "error",
            "created_by",
            "created_at",
        ]

    def get_heartbeat_stale(self, job: GenerationJob) -> bool:
        return selectors.generation_job_heartbeat_stale(job=job)


class GenerationJobListApi(APIView):
    """Generation rounds (bootstrap, a candidate's round, review outputs),
    newest first, at most 200."""

    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="GenerationJobListFilter")
    class FilterSerializer(serializers.Serializer):
        campaign = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=2**63 - 1,
            help_text="Only this campaign's jobs.",
        )

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: GenerationJobOutputSerializer(many=True),
            400: error("The campaign filter is not a positive integer."),
            401: NOT_LOGGED_IN,
            403: error(
                "The user lacks the reviewer role, or the campaign does not exist."
            ),
        },
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        campaign_id = params.validated_data.get("campaign")
        campaign = (
            campaign_get_for_user(user=request.user, campaign_id=campaign_id)
            if campaign_id is not None
            else None
        )
        jobs = selectors.generation_job_list(campaign=campaign)[:200]
        return Response(GenerationJobOutputSerializer(jobs, many=True).data)


class GenerationJobDetailApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(
        responses={
            200: GenerationJobOutputSerializer,
            401: NOT_LOGGED_IN,
            403: NOT_REVIEWER,
            404: NO_SUCH_JOB,
        }
    )
    def get(self, request: Request, generation_job_id: int) -> Response:
        job = selectors.generation_job_get(job_id=generation_job_id)
        return Response(GenerationJobOutputSerializer(job).data)


class GenerationJobCancelApi(APIView):
    """Cancel a generation job: a queued one is cancelled at once, a running
    one stops after the batch it is writing (``cancel_requested``). What it
    already wrote is kept; launching the round again duplicates nothing."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            202: GenerationJobOutputSerializer,
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
            404: NO_SUCH_JOB,
            409: error(
                "The job has already finished (succeeded, failed or cancelled)."
            ),
        },
    )
    def post(self, request: Request, generation_job_id: int) -> Response:
        job = generation.generation_job_cancel(
            job=selectors.generation_job_get(job_id=generation_job_id)
        )
        return Response(
            GenerationJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED
        )


class CampaignBootstrapApi(APIView):
    """Queue a bootstrap round: prompts without an open pair are answered by
    the champion (else the base model) and distinct answers become pairs.
    The job is queued for the GPU worker; follow it at its detail URL."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            201: GenerationJobOutputSerializer,
            400: error("Every prompt of the campaign already has an open pair."),
            401: NOT_LOGGED_IN,
            403: error(
                "The user lacks the admin role, or the campaign does not exist."
            ),
            409: error(
                "A bootstrap round of this campaign is already queued or running."
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = campaign_get_for_user(user=request.user, campaign_id=campaign_id)
        job = generation.generation_bootstrap_launch(
            campaign=campaign, actor=request.user
        )
        return Response(
            GenerationJobOutputSerializer(job).data, status=status.HTTP_201_CREATED
        )
