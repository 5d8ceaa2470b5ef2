"""Reviewer tools: outputs for side-by-side review and blind votes."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.enqueue import enqueue
from labeling.models import Campaign, Comparison, Lease, Prompt
from labeling.services.queue import lease_create_for
from models_hub.selectors import version_get, version_latest_completion


def review_outputs_enqueue(*, campaign: Campaign, version_keys: Sequence[str]) -> None:
    for key in version_keys:
        version_get(key=key)  # validates before anything is queued
    enqueue("models_hub.generate_versions", campaign.pk, list(version_keys))


@transaction.atomic
def review_blind_lease_next(
    *, campaign: Campaign, reviewer: AbstractBaseUser, left_key: str, right_key: str
) -> Lease | None:
    """A lease on the next golden-prompt pair between the two versions that
    this reviewer has not judged; the pair is created from the versions'
    latest outputs when it does not exist yet. Sides are shuffled. Returns
    None when the reviewer has judged every available pair."""
    left, right = version_get(key=left_key), version_get(key=right_key)
    now = timezone.now()
    live = Lease.objects.filter(
        annotator=reviewer,
        campaign=campaign,
        status=Lease.Status.ACTIVE,
        expires_at__gt=now,
        comparison__prompt__is_golden=True,
    ).first()
    if live is not None:
        return live
    for prompt in Prompt.objects.filter(campaign=campaign, is_golden=True).order_by(
        "id"
    ):
        a, b = (
            version_latest_completion(prompt, left),
            version_latest_completion(prompt, right),
        )
        if a is None or b is None or a.pk == b.pk:
            continue
        comparison = (
            Comparison.objects.select_for_update()
            .filter(completion_a__in=[a, b], completion_b__in=[a, b])
            .first()
        )
        if comparison is None:
            comparison = Comparison.objects.create(
                campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
            )
            comparison = Comparison.objects.select_for_update().get(pk=comparison.pk)
        if (
            reviewer.pk in comparison.done_by
            or comparison.preferences.filter(annotator=reviewer).exists()
        ):
            continue
        return lease_create_for(comparison=comparison, annotator=reviewer, now=now)
    return None
