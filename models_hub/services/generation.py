"""The closed loop's last step: a new policy adapter writes completions that
go straight back into the comparison queue, paired against the champion.

``generation_round_run`` and ``versions_generate`` run on a GPU worker: they
(and ``_generate``/``_score`` under them) load models through the ``ml``
package, imported inside the functions so that the web process, which
imports this module to enqueue, never loads torch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from core.enqueue import enqueue
from labeling.models import Campaign, Comparison, Completion, Prompt, content_hash
from models_hub.models import Adapter, BaseModelVersion
from models_hub.selectors import campaign_reward_model
from models_hub.services.registry import (
    adapter_champion,
    adapter_path,
    base_model_local_path,
    generation_settings_for,
)
from models_hub.versions import VersionKey

logger = logging.getLogger(__name__)


def generation_round_enqueue(*, adapter: Adapter) -> None:
    """Schedule completions for a new policy adapter (after commit)."""
    if adapter.role != Adapter.Role.POLICY or adapter.campaign_id is None:
        return
    enqueue("models_hub.generate_for_adapter", adapter.pk)


def _round_prompts(campaign: Campaign, *, count: int, seed: int) -> list[Prompt]:
    golden = list(
        Prompt.objects.filter(campaign=campaign, is_golden=True).order_by("id")
    )
    pool_ids = list(
        Prompt.objects.filter(campaign=campaign, is_golden=False)
        .order_by("id")
        .values_list("id", flat=True)
    )
    picked = sorted(random.Random(seed).sample(pool_ids, min(count, len(pool_ids))))
    return golden + list(Prompt.objects.filter(pk__in=picked).order_by("id"))


def _existing(
    prompts: Sequence[Prompt], *, adapter: Adapter | None, base: BaseModelVersion
) -> dict[int, Completion]:
    qs = Completion.objects.filter(prompt__in=prompts, origin=Completion.Origin.MODEL)
    qs = (
        qs.filter(adapter=adapter)
        if adapter is not None
        else qs.filter(adapter__isnull=True, base_model=base)
    )
    found: dict[int, Completion] = {}
    for completion in qs.order_by("created_at"):
        found.setdefault(completion.prompt_id, completion)
    return found


def _generate(
    prompts: Sequence[Prompt],
    *,
    adapter: Adapter | None,
    base: BaseModelVersion,
    params: Any,
) -> dict[int, Completion]:
    """Completions for the prompts this version has not answered yet."""
    from ml.generation import get_generator

    have = _existing(prompts, adapter=adapter, base=base)
    todo = [p for p in prompts if p.pk not in have]
    if not todo:
        return have
    generator = get_generator(base_model_local_path(base))
    key = str(VersionKey.adapter(adapter.pk) if adapter else VersionKey.base(base.pk))
    spec = (key, str(adapter_path(adapter))) if adapter is not None else None
    outputs = generator.generate([p.content for p in todo], adapter=spec, params=params)
    lineage: dict[str, Any] = {"base_model": base.pk, "base_source": base.source}
    if adapter is not None:
        lineage.update(
            adapter=adapter.pk,
            adapter_version=adapter.version,
            adapter_name=adapter.name,
            method=adapter.method,
        )
    for prompt, (text, record) in zip(todo, outputs, strict=True):
        text = text or "(empty completion)"
        completion, _ = Completion.objects.get_or_create(
            prompt=prompt,
            content_hash=content_hash(text),
            source_label=key,
            defaults={
                "text": text,
                "origin": Completion.Origin.MODEL,
                "adapter": adapter,
                "base_model": base,
                "generation": {**record, **lineage},
            },
        )
        have[prompt.pk] = completion
    return have


def _score(
    campaign: Campaign, completions: Sequence[Completion], reward: Adapter | None = None
) -> None:
    """Record ``reward``'s score (default: the champion, else the newest
    reward model) on each completion that lacks one from that model."""
    reward = reward or campaign_reward_model(campaign=campaign)
    todo = [
        c
        for c in completions
        if reward is not None and c.metadata.get("reward_adapter") != reward.pk
    ]
    if reward is None or not todo:
        return
    from ml.reward import RewardScorer

    scorer = RewardScorer.load(
        base_model_local_path(reward.base_model), adapter_path(reward)
    )
    scores = scorer.score([c.prompt.content for c in todo], [c.text for c in todo])
    for completion, score in zip(todo, scores, strict=True):
        completion.metadata = {
            **completion.metadata,
            "reward_score": score,
            "reward_adapter": reward.pk,
        }
        completion.save(update_fields=["metadata", "updated_at"])


def generation_round_run(*, adapter_id: int) -> int:
    """Generate for a candidate policy adapter and its opponents (the
    champion, else the base; plus the base when configured) on the golden
    prompts and a sample of the pool, then queue candidate-vs-opponent
    comparisons with lineage. Idempotent. Returns comparisons created."""
    from ml.generation import DecodingParams

    adapter = (
        Adapter.objects.select_related("campaign", "base_model")
        .filter(pk=adapter_id)
        .first()
    )
    if (
        adapter is None
        or adapter.role != Adapter.Role.POLICY
        or adapter.campaign is None
    ):
        return 0
    campaign = adapter.campaign
    settings_row = generation_settings_for(campaign)
    if not settings_row.enabled:
        return 0
    params = DecodingParams(
        max_new_tokens=settings_row.max_new_tokens,
        temperature=settings_row.temperature,
        top_p=settings_row.top_p,
        seed=settings_row.seed,
    )
    prompts = _round_prompts(
        campaign, count=settings_row.prompts_per_round, seed=adapter.pk
    )
    champion = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    opponents: list[Adapter | None] = (
        [champion] if champion is not None and champion.pk != adapter.pk else [None]
    )
    if settings_row.compare_against_base and None not in opponents:
        opponents.append(None)

    candidate = _generate(
        prompts, adapter=adapter, base=adapter.base_model, params=params
    )
    created = 0
    for opponent in opponents:
        base = opponent.base_model if opponent is not None else adapter.base_model
        theirs = _generate(prompts, adapter=opponent, base=base, params=params)
        _score(campaign, [*candidate.values(), *theirs.values()])
        with transaction.atomic():
            for prompt in prompts:
                mine, other = candidate.get(prompt.pk), theirs.get(prompt.pk)
                if mine is None or other is None or mine.pk == other.pk:
                    continue
                if Comparison.objects.filter(
                    completion_a__in=[mine, other], completion_b__in=[mine, other]
                ).exists():
                    continue
                Comparison.objects.create(
                    campaign=campaign,
                    prompt=prompt,
                    completion_a=mine,
                    completion_b=other,
                    priority=settings_row.priority,
                )
                created += 1
    logger.info(
        "models_hub.generation.round adapter=%s comparisons=%s", adapter.pk, created
    )
    return created


def versions_generate(*, campaign_id: int, version_keys: Sequence[str]) -> None:
    """Outputs on the golden prompts for the given versions (side-by-side review)."""
    from ml.generation import DecodingParams
    from models_hub.selectors import version_get

    campaign = Campaign.objects.get(pk=campaign_id)
    settings_row = generation_settings_for(campaign)
    params = DecodingParams(
        max_new_tokens=settings_row.max_new_tokens,
        temperature=settings_row.temperature,
        top_p=settings_row.top_p,
        seed=settings_row.seed,
    )
    prompts = list(
        Prompt.objects.filter(campaign=campaign, is_golden=True).order_by("id")
    )
    made = []
    for key in version_keys:
        version = version_get(key=VersionKey.parse(key))
        assert version.base_model is not None
        made.extend(
            _generate(
                prompts, adapter=version.adapter, base=version.base_model, params=params
            ).values()
        )
    _score(campaign, made)
