from __future__ import annotations

import factory

from labeling.models import Campaign, Comparison, Completion, Prompt, content_hash
from labeling.services.splits import split_for_hash


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    guidelines = "Pick the **better** answer."
    overlap_k = 1
    lease_ttl_seconds = 600


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    campaign = factory.SubFactory(CampaignFactory)
    text = factory.Sequence(lambda n: f"Question number {n}?")
    content_hash = factory.LazyAttribute(lambda o: content_hash(o.text))
    split = factory.LazyAttribute(lambda o: split_for_hash(o.content_hash))


class CompletionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Completion

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Answer {n}.")
    content_hash = factory.LazyAttribute(lambda o: content_hash(o.text))
    source_label = "writer"


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    campaign = factory.SubFactory(CampaignFactory)
    prompt = factory.SubFactory(
        PromptFactory, campaign=factory.SelfAttribute("..campaign")
    )
    completion_a = factory.SubFactory(
        CompletionFactory, prompt=factory.SelfAttribute("..prompt")
    )
    completion_b = factory.SubFactory(
        CompletionFactory, prompt=factory.SelfAttribute("..prompt")
    )


def make_pairs(campaign: Campaign, n: int, *, priority: int = 0) -> list[Comparison]:
    return [ComparisonFactory(campaign=campaign, priority=priority) for _ in range(n)]
