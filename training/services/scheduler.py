"""The training scheduler: per-campaign policies checked by Celery beat."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from labeling.models import Campaign, Preference
from training.exceptions import NoTrainingData, PipelineAlreadyRunning
from training.models import DatasetSnapshot, TrainingPipeline, TrainingPolicy
from training.services.jobs import JobCannotBePlaced, pipeline_launch

logger = logging.getLogger(__name__)


def policy_new_preferences(*, policy: TrainingPolicy) -> int:
    last = (
        DatasetSnapshot.objects.filter(campaign=policy.campaign)
        .order_by("-last_preference_id")
        .first()
    )
    since = last.last_preference_id if last else 0
    return Preference.objects.filter(
        comparison__campaign=policy.campaign,
        id__gt=since,
        comparison__prompt__is_golden=False,
    ).count()


def policies_ensure() -> int:
    """Give every active campaign without a policy the default one, so a new
    campaign trains with no setting touched. Returns how many were created."""
    missing = Campaign.objects.filter(
        status=Campaign.Status.ACTIVE, training_policy__isnull=True
    ).values_list("pk", flat=True)
    created = TrainingPolicy.objects.bulk_create(
        [TrainingPolicy(campaign_id=pk) for pk in missing], ignore_conflicts=True
    )
    return len(created)


def scheduler_tick() -> int:
    """Launch a pipeline for every enabled policy whose thresholds are met
    and whose campaign has no pipeline running. Safe to run concurrently:
    each policy row is locked (SKIP LOCKED) while it is decided."""
    policies_ensure()
    launched = 0
    for policy_id in TrainingPolicy.objects.filter(enabled=True).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            policy = (
                TrainingPolicy.objects.select_for_update(skip_locked=True)
                .select_related("campaign")
                .filter(pk=policy_id, enabled=True)
                .first()
            )
            if policy is None:
                continue
            now = timezone.now()
            if policy.last_triggered_at and now - policy.last_triggered_at < timedelta(
                minutes=policy.min_interval_minutes
            ):
                continue
            if TrainingPipeline.objects.filter(
                campaign=policy.campaign, status=TrainingPipeline.Status.RUNNING
            ).exists():
                continue
            if policy_new_preferences(policy=policy) < policy.min_new_preferences:
                continue
            try:
                with transaction.atomic():
                    pipeline_launch(
                        campaign=policy.campaign,
                        kind=policy.pipeline,
                        base_model=policy.base_model,
                        config_overrides=policy.config_overrides,
                        tie_policy=policy.tie_policy,
                        triggered_by="scheduler",
                    )
            except (NoTrainingData, PipelineAlreadyRunning, JobCannotBePlaced) as exc:
                logger.info(
                    "training.scheduler.skip campaign=%s reason=%s",
                    policy.campaign_id,
                    exc,
                )
                continue
            policy.last_triggered_at = now
            policy.save(update_fields=["last_triggered_at", "updated_at"])
            launched += 1
            logger.info("training.scheduler.launched campaign=%s", policy.campaign_id)
    return launched
