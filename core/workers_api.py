"""The workers over the API: what each reported (GPUs, memory, process
slots, queues) and whether it is live. Admins only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.models import WorkerNode
from core.permissions import IsAdmin
from core.schema import ApiAutoSchema
from core.workers import MULTI_QUEUE, worker_node_is_live, worker_node_words


class WorkerOutputSerializer(serializers.ModelSerializer):
    live = serializers.SerializerMethodField(
        help_text="Reported within the last minute and not stopped."
    )
    takes_multi_process_jobs = serializers.SerializerMethodField(
        help_text=f"Consumes the {MULTI_QUEUE} queue (jobs of several processes)."
    )
    description = serializers.SerializerMethodField(
        help_text="What it has, in words; a worker without a GPU counts its CPU "
        "cores as process slots."
    )

    class Meta:
        model = WorkerNode
        fields = [
            "name",
            "host",
            "pid",
            "queues",
            "gpus",
            "cpu_count",
            "memory_bytes",
            "process_slots",
            "strategies",
            "started_at",
            "heartbeat_at",
            "stopped_at",
            "live",
            "takes_multi_process_jobs",
            "description",
        ]

    def get_live(self, node: WorkerNode) -> bool:
        return worker_node_is_live(node)

    def get_takes_multi_process_jobs(self, node: WorkerNode) -> bool:
        return MULTI_QUEUE in node.queues

    def get_description(self, node: WorkerNode) -> str:
        return worker_node_words(node)


class WorkerListApi(APIView):
    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(responses=WorkerOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        nodes: Any = WorkerNode.objects.order_by("-heartbeat_at")[:200]
        return Response(WorkerOutputSerializer(nodes, many=True).data)
