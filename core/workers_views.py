"""The workers page: every worker that reported, live ones first."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.models import WorkerNode
from core.roles import admin_required
from core.workers import LIVE_SECONDS, MULTI_QUEUE, worker_node_is_live


@admin_required
def worker_list(request: HttpRequest) -> HttpResponse:
    nodes = list(WorkerNode.objects.order_by("-heartbeat_at")[:200])
    rows = [{"node": node, "live": worker_node_is_live(node)} for node in nodes]
    rows.sort(key=lambda row: not row["live"])
    return render(
        request,
        "core/workers.html",
        {"rows": rows, "live_seconds": LIVE_SECONDS, "multi_queue": MULTI_QUEUE},
    )
