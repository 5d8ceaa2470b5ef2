"""Reads for the campaign page."""

from __future__ import annotations

from django.db.models import Count, Q

from labeling.models import Campaign, Comparison, Completion, Preference, Prompt


def campaign_counts(*, campaign: Campaign) -> dict[str, int]:
    """What the campaign holds, in four queries: prompts (by split, golden),
    completions, pairs by status and labels."""
    prompts = Prompt.objects.filter(campaign=campaign).aggregate(
        prompts=Count("id"),
        prompts_golden=Count("id", filter=Q(is_golden=True)),
        **{
            f"prompts_{split}": Count("id", filter=Q(split=split))
            for split in Prompt.Split.values
        },
    )
    pairs = Comparison.objects.filter(campaign=campaign).aggregate(
        pairs=Count("id"),
        pairs_open=Count("id", filter=Q(status=Comparison.Status.OPEN)),
        pairs_complete=Count("id", filter=Q(status=Comparison.Status.COMPLETE)),
        pairs_retired=Count("id", filter=Q(status=Comparison.Status.RETIRED)),
        pairs_gold=Count("id", filter=Q(is_gold=True)),
    )
    return {
        **prompts,
        "completions": Completion.objects.filter(prompt__campaign=campaign).count(),
        **pairs,
        "labels": Preference.objects.filter(comparison__campaign=campaign).count(),
    }
