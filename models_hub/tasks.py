from __future__ import annotations

from celery import shared_task

from models_hub.services.combine import combine_job_execute, combine_job_sweep_stale
from models_hub.services.exports import adapter_merge_export_run
from models_hub.services.generation import (
    bootstrap_tick,
    generation_job_execute,
    generation_job_redispatch_lost,
    generation_job_sweep_stale,
)
from models_hub.services.promotion import promotion_tick
from models_hub.services.reports import campaign_reports_refresh


@shared_task(name="models_hub.generation_job_run", acks_late=True, ignore_result=True)
def generation_job_run(job_id: int) -> None:
    """Run one generation job on the gpu queue. Idempotent: only a QUEUED job starts."""
    generation_job_execute(job_id=job_id)


@shared_task(name="models_hub.bootstrap_tick", ignore_result=True)
def generation_bootstrap_tick() -> int:
    return bootstrap_tick()


@shared_task(name="models_hub.sweep_stale_generation_jobs", ignore_result=True)
def generation_sweep_stale_jobs() -> int:
    """Fail RUNNING jobs whose worker died; send QUEUED jobs whose message
    was lost again. Returns how many rows it acted on."""
    return generation_job_sweep_stale() + generation_job_redispatch_lost()


@shared_task(name="models_hub.promotion_tick", ignore_result=True)
def adapter_promotion_tick() -> int:
    return promotion_tick()


@shared_task(name="models_hub.merge_export", acks_late=True, ignore_result=True)
def merge_export(adapter_id: int) -> str:
    return adapter_merge_export_run(adapter_id=adapter_id)


@shared_task(name="models_hub.active_selection", acks_late=True, ignore_result=True)
def active_selection() -> int:
    from models_hub.services.active import active_selection_run

    return active_selection_run()


@shared_task(name="models_hub.active_selection_tick", ignore_result=True)
def active_selection_tick() -> bool:
    """Beat, on the default queue: queue one active-selection run on the gpu
    queue unless a copy already waits there or runs."""
    from models_hub.services.active import active_selection_enqueue

    return active_selection_enqueue()


@shared_task(name="models_hub.reports_refresh", ignore_result=True)
def reports_refresh(campaign_id: int) -> bool:
    """Recompute a campaign's cached leaderboard and quality reports."""
    return campaign_reports_refresh(campaign_id=campaign_id)


@shared_task(name="models_hub.combine_job_run", acks_late=True, ignore_result=True)
def combine_job_run(job_id: int) -> None:
    """Run one combine job on the gpu queue. Idempotent: only a QUEUED job starts."""
    combine_job_execute(job_id=job_id)


@shared_task(name="models_hub.sweep_stale_combine_jobs", ignore_result=True)
def combine_sweep_stale_jobs() -> int:
    return combine_job_sweep_stale()


@shared_task(name="models_hub.drift_tick", ignore_result=True)
def drift_tick() -> int:
    """Beat, on the default queue: request the drift evaluations that are due."""
    from models_hub.services.drift import drift_tick as tick

    return tick()


@shared_task(name="models_hub.drift_evaluate", acks_late=True, ignore_result=True)
def drift_evaluate(campaign_id: int) -> int:
    """Evaluate a campaign's served versions on the gpu queue and check them
    for drift. Idempotent: only a pending request runs."""
    from models_hub.services.drift import drift_evaluate_run

    return drift_evaluate_run(campaign_id=campaign_id)


@shared_task(
    name="models_hub.conversation_turn_generate", acks_late=True, ignore_result=True
)
def conversation_turn_generate(turn_id: int, attempt: int) -> None:
    """Write the two answers of a live-conversation turn on the gpu queue.
    Idempotent: only a QUEUED turn of this attempt starts."""
    from models_hub.services.conversation_generation import (
        conversation_turn_generate_run,
    )

    conversation_turn_generate_run(turn_id=turn_id, attempt=attempt)
