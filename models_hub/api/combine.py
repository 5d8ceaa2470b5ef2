"""Combining adapters over the API: queue a combine job, follow it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import IsAdmin
from core.schema import ApiAutoSchema
from models_hub.api.views import NOT_ADMIN, NOT_LOGGED_IN, _error
from models_hub.models import CombineJob
from models_hub.services.combine import combine_job_create, combine_job_get


class CombineJobOutputSerializer(serializers.ModelSerializer):
    generation_job = serializers.SerializerMethodField(
        help_text="The new adapter's candidate generation round (null until the "
        "job succeeded, or when the campaign's generation is off)."
    )

    class Meta:
        model = CombineJob
        fields = [
            "id",
            "campaign",
            "base_model",
            "method",
            "density",
            "parents",
            "name",
            "status",
            "phase",
            "adapter",
            "generation_job",
            "heartbeat_at",
            "worker",
            "started_at",
            "finished_at",
            "error",
            "created_by",
            "created_at",
        ]

    def get_generation_job(self, job: CombineJob) -> int | None:
        if job.adapter is None:
            return None
        round_ = job.adapter.generation_jobs.order_by("created_at", "id").first()
        return round_.pk if round_ is not None else None


@extend_schema_serializer(component_name="CombineParentInput")
class CombineParentSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The parent adapter's id.")
    weight = serializers.FloatField(
        help_text="Its weight in the combination (may be negative)."
    )


class CombineJobCreateApi(APIView):
    """Combine two or more LoRA policy adapters of one campaign and base into
    a new candidate version (PEFT ``add_weighted_adapter``). Refusals are
    checked before anything is queued and name the reason. The job runs on
    the gpu worker; on success the new adapter's candidate round is queued
    like a trained adapter's (golden outputs, pairs against the champion,
    the gate)."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()
    # ``adapters`` is a list of objects: no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="CombineJobInput")
    class InputSerializer(serializers.Serializer):
        adapters = CombineParentSerializer(
            many=True, help_text="Two or more {id, weight}, in order."
        )
        method = serializers.ChoiceField(
            choices=CombineJob.Method.choices, help_text="PEFT combination_type."
        )
        density = serializers.FloatField(
            required=False,
            allow_null=True,
            help_text="Share of values kept, in (0, 1]: required by ties, dare and "
            "magnitude_prune methods, refused by the others.",
        )
        name = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=200,
            help_text="Display name of the new adapter (default combine-v<version>).",
        )

    @extend_schema(
        request=InputSerializer,
        responses={
            201: CombineJobOutputSerializer,
            400: _error(
                "The adapters cannot be combined this way, with the reason: "
                "different base models, roles or campaigns, a method their "
                "configs cannot take (e.g. linear over different ranks), weights "
                "that do not match the adapters, a density the method needs or "
                "refuses, an unknown adapter id."
            ),
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = combine_job_create(
            parents=[(p["id"], p["weight"]) for p in data.validated_data["adapters"]],
            method=data.validated_data["method"],
            density=data.validated_data.get("density"),
            name=data.validated_data.get("name", ""),
            actor=request.user,
        )
        return Response(
            CombineJobOutputSerializer(job).data, status=status.HTTP_201_CREATED
        )


class CombineJobDetailApi(APIView):
    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        responses={
            200: CombineJobOutputSerializer,
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
            404: _error("No combine job has this id."),
        }
    )
    def get(self, request: Request, combine_job_id: int) -> Response:
        job = combine_job_get(job_id=combine_job_id)
        return Response(CombineJobOutputSerializer(job).data)
