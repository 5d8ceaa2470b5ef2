"""Reviewer tools: outputs for side-by-side review and blind votes."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from labeling.models import Campaign, Comparison, Lease, Prompt
from labeling.services.queue import lease_create_for
from models_hub.models import GenerationJob
from models_hub.selectors import (
    review_blind_lease_live,
    version_get,
    version_latest_completion,
)
from models_hub.services.generation import generation_job_launch
from models_hub.versions import SameVersion, VersionKey


def review_outputs_enqueue(
    *, campaign: Campaign, left: VersionKey, right: VersionKey
) -> None:
    """Queue the missing golden-prompt outputs of two different versions on
    the GPU worker. Raises ``SameVersion`` or ``NotFound`` before anything is
    queued."""
    if left == right:
        raise SameVersion(f"Pick two different versions: both sides are {left}.")
    for key in (left, right):
        version_get(key=key)
    generation_job_launch(
        campaign=campaign, kind=GenerationJob.Kind.REVIEW, versions=[left, right]
    )


@transaction.atomic
def review_blind_lease_next(
    *,
    campaign: Campaign,
    reviewer: AbstractBaseUser,
    left_key: VersionKey,
    right_key: VersionKey,
) -> Lease | None:
    """A lease on the next golden-prompt pair between the two versions that
    this reviewer has not judged; the pair is created from the versions'
    latest outputs when it does not exist yet. Sides are shuffled. Returns
    None when the reviewer has judged every available pair. Raises
    ``SameVersion`` when both keys name one version."""
    if left_key == right_key:
        raise SameVersion(f"Pick two different versions: both sides are {left_key}.")
    left, right = version_get(key=left_key), version_get(key=right_key)
    live = review_blind_lease_live(campaign=campaign, reviewer=reviewer)
    if live is not None:
        return live
    now = timezone.now()
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
            # A plain pair: never a ranked item or a ranking's implied pair,
            # which the queue does not lease.
            .filter(
                completion_a__in=[a, b],
                completion_b__in=[a, b],
                is_ranked=False,
                parent__isnull=True,
            )
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
