"""Active selection: pending pairs where the reward champion is least sure
get a priority boost. Runs periodically on a GPU worker, never on the
request path.

Beat does not send the gpu task itself: it sends ``active_selection_tick``
to the default queue every 10 minutes, which queues the gpu run only when no
copy waits or runs (a copy waits behind training jobs for as long as they
take). The copy it queues also expires before the next tick.
"""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from core.enqueue import enqueue
from core.heartbeat import task_messages_pending
from labeling.models import Campaign, Comparison
from models_hub.models import Adapter
from models_hub.selectors import campaign_reward_model
from models_hub.services.generation import _score

logger = logging.getLogger(__name__)

ACTIVE_SELECTION_TASK = "models_hub.active_selection"
# Beat's tick is every 600 s: an unstarted copy is dropped before the next.
ACTIVE_SELECTION_EXPIRES_SECONDS = 540


def active_selection_enqueue() -> bool:
    """Queue one active-selection run on the gpu queue unless one is already
    waiting there or running. Returns whether it queued one. Where the
    broker cannot be read, it queues; the copy's expiry then bounds the
    pile-up to one."""
    pending = task_messages_pending(name=ACTIVE_SELECTION_TASK)
    if pending:
        logger.info("models_hub.active_selection.already_queued")
        return False
    enqueue(ACTIVE_SELECTION_TASK, expires=ACTIVE_SELECTION_EXPIRES_SECONDS)
    return True


def uncertainty_boost(
    score_a: float, score_b: float, *, max_boost: int
) -> tuple[float, int]:
    """Bradley–Terry probability from the two scores → uncertainty in [0, 1]
    (1 = a coin flip) → a priority boost of up to ``max_boost``."""
    p = 1 / (1 + math.exp(-(score_a - score_b)))
    uncertainty = 1 - abs(2 * p - 1)
    return uncertainty, round(uncertainty * max_boost)


def active_selection_run(*, batch_size: int = 512) -> int:
    """Re-score open pairs of campaigns that have a reward model (see
    ``campaign_reward_model``); the least certain get the largest boost.
    Returns how many pairs were updated."""
    updated = 0
    max_boost = settings.ARBITER_ACTIVE_SELECTION_MAX_BOOST
    campaigns = Campaign.objects.filter(
        adapters__role=Adapter.Role.REWARD,
        adapters__status__in=[Adapter.Status.CANDIDATE, Adapter.Status.CHAMPION],
    ).distinct()
    for campaign in campaigns.order_by("id"):
        reward = campaign_reward_model(campaign=campaign)
        if reward is None:
            continue
        pending = list(
            Comparison.objects.filter(
                campaign=campaign, status=Comparison.Status.OPEN, is_gold=False
            )
            .filter(
                ~Q(completion_a__metadata__reward_adapter=reward.pk)
                | ~Q(completion_b__metadata__reward_adapter=reward.pk)
                | Q(reward_uncertainty__isnull=True)
            )
            .select_related("prompt", "completion_a", "completion_b")
            .order_by("id")[:batch_size]
        )
        if not pending:
            continue
        completions = {
            c.pk: c for p in pending for c in (p.completion_a, p.completion_b)
        }
        for c in completions.values():
            c.prompt = next(p.prompt for p in pending if c.prompt_id == p.prompt_id)
        _score(campaign, list(completions.values()), reward=reward)
        with transaction.atomic():
            for comparison in pending:
                a = completions[comparison.completion_a_id].metadata["reward_score"]
                b = completions[comparison.completion_b_id].metadata["reward_score"]
                uncertainty, boost = uncertainty_boost(a, b, max_boost=max_boost)
                Comparison.objects.filter(pk=comparison.pk).update(
                    reward_uncertainty=uncertainty, priority_boost=boost
                )
                updated += 1
        logger.info(
            "models_hub.active_selection campaign=%s pairs=%s",
            campaign.pk,
            len(pending),
        )
    return updated
