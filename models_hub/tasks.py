from __future__ import annotations

from collections.abc import Sequence

from celery import shared_task

from models_hub.services.exports import adapter_merge_export_run
from models_hub.services.generation import generation_round_run, versions_generate
from models_hub.services.reports import campaign_reports_refresh


@shared_task(name="models_hub.generate_for_adapter", acks_late=True, ignore_result=True)
def generate_for_adapter(adapter_id: int) -> int:
    return generation_round_run(adapter_id=adapter_id)


@shared_task(name="models_hub.generate_versions", acks_late=True, ignore_result=True)
def generate_versions(campaign_id: int, version_keys: Sequence[str]) -> None:
    versions_generate(campaign_id=campaign_id, version_keys=version_keys)


@shared_task(name="models_hub.merge_export", acks_late=True, ignore_result=True)
def merge_export(adapter_id: int) -> str:
    return adapter_merge_export_run(adapter_id=adapter_id)


@shared_task(name="models_hub.active_selection", acks_late=True, ignore_result=True)
def active_selection() -> int:
    from models_hub.services.active import active_selection_run

    return active_selection_run()


@shared_task(name="models_hub.reports_refresh", ignore_result=True)
def reports_refresh(campaign_id: int) -> bool:
    """Recompute a campaign's cached leaderboard and quality reports."""
    return campaign_reports_refresh(campaign_id=campaign_id)
