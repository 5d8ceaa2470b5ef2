from __future__ import annotations

import random
from typing import Any

from labeling.models import Campaign, Comparison
from labeling.services.queue import comparison_lease_next, preference_record
from tests.conftest import SUBJECTS
from tests.labeling.factories import CampaignFactory, CompletionFactory, PromptFactory


def labeled_campaign(
    make_user: Any, *, pairs: int = 24, annotators: int = 2
) -> Campaign:
    """A campaign whose annotators always prefer the answer ending in 'kindly'."""
    rng = random.Random(0)
    campaign = CampaignFactory(overlap_k=1)
    for i in range(pairs):
        subject = SUBJECTS[i % len(SUBJECTS)]
        prompt = PromptFactory(
            campaign=campaign,
            text=f"tell me about the {subject} number {i} .",
            split="train" if i % 6 else "val",
        )
        kind = CompletionFactory(prompt=prompt, text=f"the {subject} answers kindly .")
        rude = CompletionFactory(prompt=prompt, text=f"the {subject} answers rudely .")
        a, b = (kind, rude) if rng.random() < 0.5 else (rude, kind)
        Comparison.objects.create(
            campaign=campaign, prompt=prompt, completion_a=a, completion_b=b
        )
    users = [make_user() for _ in range(annotators)]
    done = 0
    while done < pairs:
        user = users[done % annotators]
        lease = comparison_lease_next(campaign=campaign, annotator=user)
        comparison = lease.comparison
        kind_is_a = comparison.completion_a.text.endswith("kindly .")
        kind_on_left = kind_is_a == lease.a_on_left
        preference_record(
            lease_id=lease.pk,
            annotator=user,
            choice="left" if kind_on_left else "right",
        )
        done += 1
    return campaign
