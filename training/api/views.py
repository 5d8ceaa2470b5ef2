from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import AdminToWrite, IsAdmin, IsReviewer
from core.schema import ApiAutoSchema, error
from labeling.selectors import campaign_get_for_user
from models_hub.models import Adapter, BaseModelVersion
from training import selectors
from training.models import (
    MAX_PROCESSES,
    METHOD_CHOICES,
    DatasetSnapshot,
    Strategy,
    TrainingJob,
    TrainingPipeline,
)
from training.services import jobs as job_services
from training.services.snapshots import dataset_snapshot_create


class TrainingJobOutputSerializer(serializers.ModelSerializer):
    progress_percent = serializers.IntegerField(read_only=True)
    adapter_id = serializers.IntegerField(allow_null=True, read_only=True)

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "campaign",
            "method",
            "base_model",
            "snapshot",
            "pipeline",
            "reward_adapter",
            "config",
            "status",
            "cancel_requested",
            "phase",
            "progress_step",
            "progress_total",
            "progress_percent",
            "eta_seconds",
            "heartbeat_at",
            "worker",
            "started_at",
            "finished_at",
            "error",
            "log_tail",
            "final_metrics",
            "rss_bytes",
            "peak_rss_bytes",
            "processes",
            "strategy",
            "placement",
            "adapter_id",
            "created_at",
        ]


class TrainingJobListApi(APIView):
    """List jobs (reviewers) and launch one (admins)."""

    permission_classes = [IsReviewer, AdminToWrite]
    schema = ApiAutoSchema()
    # ``config`` is an object: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="TrainingJobListFilter")
    class FilterSerializer(serializers.Serializer):
        campaign = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=2**63 - 1,
            help_text="Only this campaign's jobs.",
        )

    @extend_schema_serializer(component_name="TrainingJobListInput")
    class InputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField()
        method = serializers.ChoiceField(choices=METHOD_CHOICES)
        base_model = serializers.PrimaryKeyRelatedField(
            queryset=BaseModelVersion.objects.all(), required=False
        )
        snapshot = serializers.PrimaryKeyRelatedField(
            queryset=DatasetSnapshot.objects.all(), required=False
        )
        reward_adapter = serializers.PrimaryKeyRelatedField(
            queryset=Adapter.objects.all(), required=False
        )
        config = serializers.DictField(
            required=False, help_text="Overrides of the method's defaults."
        )
        processes = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=MAX_PROCESSES,
            help_text="GPUs (or CPU processes on a worker without a GPU); left "
            "out: the campaign policy's, else what fits the base model's size. "
            "More than any live worker offers is refused (400).",
        )
        strategy = serializers.ChoiceField(
            choices=Strategy.choices,
            required=False,
            help_text="How several processes share the work; left out: the "
            "policy's, else what fits the base model.",
        )

    @extend_schema(
        parameters=[FilterSerializer],
        responses=TrainingJobOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        jobs = selectors.training_job_list(
            campaign_id=params.validated_data.get("campaign")
        )
        return Response(TrainingJobOutputSerializer(jobs[:200], many=True).data)

    @extend_schema(
        request=InputSerializer, responses={201: TrainingJobOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        campaign = campaign_get_for_user(
            user=request.user, campaign_id=data["campaign"]
        )
        job = job_services.training_job_launch(
            campaign=campaign,
            method=data["method"],
            created_by=request.user,
            config=data.get("config", {}),
            base_model=data.get("base_model"),
            snapshot=data.get("snapshot"),
            reward_adapter=data.get("reward_adapter"),
            processes=data.get("processes"),
            strategy=data.get("strategy"),
        )
        return Response(
            TrainingJobOutputSerializer(job).data, status=status.HTTP_201_CREATED
        )


class TrainingJobDetailApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses=TrainingJobOutputSerializer)
    def get(self, request: Request, job_id: int) -> Response:
        return Response(
            TrainingJobOutputSerializer(selectors.training_job_get(job_id=job_id)).data
        )


class TrainingJobCancelApi(APIView):
    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            202: TrainingJobOutputSerializer,
            409: error(
                "The job has already finished (succeeded, failed or cancelled)."
            ),
        },
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = job_services.training_job_cancel(
            job=selectors.training_job_get(job_id=job_id)
        )
        return Response(
            TrainingJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED
        )


class TrainingJobMetricsApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, job_id: int) -> Response:
        job = selectors.training_job_get(job_id=job_id)
        series = selectors.training_job_metric_series(job=job)
        return Response(
            {
                name: [{"step": s, "value": v} for s, v in pts]
                for name, pts in series.items()
            }
        )


class TrainingConfigDefaultsApi(APIView):
    permission_classes = [IsReviewer]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="TrainingConfigField")
    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        default = serializers.JSONField(help_text="The method's default value.")
        help = serializers.CharField(allow_blank=True)

    @extend_schema(
        responses={200: OutputSerializer(many=True)},
    )
    def get(self, request: Request, method: str) -> Response:
        if method not in dict(METHOD_CHOICES):
            return Response(
                {"detail": f"Unknown method {method!r}."},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(job_services.training_config_fields(method))


class SnapshotOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetSnapshot
        fields = [
            "id",
            "campaign",
            "tie_policy",
            "filters",
            "last_preference_id",
            "counts",
            "content_hash",
            "created_at",
        ]


class DatasetSnapshotListApi(APIView):
    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()
    # ``filters`` is an object: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="DatasetSnapshotListInput")
    class InputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField()
        tie_policy = serializers.ChoiceField(
            choices=["skip", "both_orders"], default="skip"
        )
        filters = serializers.DictField(required=False)

    @extend_schema(responses=SnapshotOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(
            SnapshotOutputSerializer(
                DatasetSnapshot.objects.all()[:200], many=True
            ).data
        )

    @extend_schema(request=InputSerializer, responses={201: SnapshotOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        campaign = campaign_get_for_user(
            user=request.user, campaign_id=data["campaign"]
        )
        snapshot = dataset_snapshot_create(
            campaign=campaign,
            created_by=request.user,
            tie_policy=data["tie_policy"],
            filters=data.get("filters", {}),
        )
        return Response(
            SnapshotOutputSerializer(snapshot).data, status=status.HTTP_201_CREATED
        )


class TrainingPipelineLaunchApi(APIView):
    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()
    # ``config_overrides`` is an object: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="TrainingPipelineLaunchInput")
    class InputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField()
        kind = serializers.ChoiceField(choices=TrainingPipeline.Kind.choices)
        config_overrides = serializers.DictField(required=False)

    @extend_schema_serializer(component_name="TrainingPipelineLaunched")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        kind = serializers.CharField()
        status = serializers.CharField()
        jobs = serializers.ListField(
            child=serializers.IntegerField(), help_text="Its training jobs' ids."
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            409: error("A pipeline of this campaign is already queued or running."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        campaign = campaign_get_for_user(
            user=request.user, campaign_id=data["campaign"]
        )
        pipeline = job_services.pipeline_launch(
            campaign=campaign,
            kind=data["kind"],
            created_by=request.user,
            config_overrides=data.get("config_overrides", {}),
        )
        return Response(
            {
                "id": pipeline.pk,
                "kind": pipeline.kind,
                "status": pipeline.status,
                "jobs": list(pipeline.jobs.values_list("pk", flat=True)),
            },
            status=status.HTTP_201_CREATED,
        )
