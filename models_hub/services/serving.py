"""The inference API's Django side: which version answers a model name, the
record of every answer, and served traffic turned into comparisons.

Model names (``GET /v1/models`` lists the ones a caller can use):

- ``base``: the default base model alone; it answers as ``base-<id>``.
- ``base-<id>``: that base model version alone.
- ``adapter-<id>``: a policy adapter on its base (``Adapter.served_name``).
- ``adapter-<id>-merged``: the same adapter's merged export, once exported.
- ``campaign-<id>/champion``: the campaign's deployment, an alias: its policy
  champion (the base while it has none) and, by the deployment's mode, the
  candidate for ``candidate_share`` of the requests (canary) or half of them
  (A/B). A request that names a ``user`` keeps one arm: the arm is picked by
  a hash of the deployment and the user, not by a draw.

Concrete names are immutable per version (an adapter's weights never change
under its name), so a prefix cache keyed by name never serves stale entries;
aliases move, weights never.

What is not served (``ModelNotFound``, 404): unknown names, reward-model
adapters, adapters switched off for serving, **retired** adapters (they
failed their gate or guardrails or were retired by hand; the deployment
rules say a retired version may not serve again, and applications should not
keep calling one by name), adapters whose files are missing, merged exports
that do not exist, archived campaigns, and versions over another base than
the one the inference process loaded (one process serves one base: the
default base model version).

``served_response_record`` writes one ``ServedResponse`` per answer. With a
deployment's ``sample_share`` above 0, a share of the alias's requests is
also answered by the other version (the inference process does that after
answering, in the background) and ``traffic_pair_record`` turns the two
answers into a queued comparison with lineage ``{"source": "traffic"}``.

Nothing here loads a model (the web process may import it).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.artifacts import artifact_store
from core.exceptions import NotFound
from labeling.models import Campaign, Comparison, Prompt, content_hash
from labeling.services.splits import split_for_hash
from models_hub.models import Adapter, BaseModelVersion, Deployment, ServedResponse
from models_hub.services.deployments import AB_SHARE
from models_hub.services.generation import (
    comparison_pair_queue,
    model_completion_store,
    version_lineage,
)
from models_hub.services.registry import (
    adapter_champion,
    adapter_files_present,
    adapter_path,
    base_model_default,
    generation_settings_for,
)

logger = logging.getLogger(__name__)

BASE_ALIAS = "base"
TRAFFIC_SOURCE = "traffic"

_BASE = re.compile(r"base-(\d{1,18})")
_ADAPTER = re.compile(r"adapter-(\d{1,18})(-merged)?")
_ALIAS = re.compile(r"campaign-(\d{1,18})/champion")


class ModelNotFound(NotFound):
    """The model name serves nothing here (404 ``model_not_found``)."""


@dataclass(frozen=True)
class ServedVersion:
    """One concrete version: a base alone, base + adapter, or a merged export."""

    name: str  # immutable: base-<id>, adapter-<id>, adapter-<id>-merged
    base_model: BaseModelVersion
    adapter: Adapter | None = None
    merged: bool = False

    @property
    def adapter_path(self) -> str | None:
        if self.adapter is None or self.merged:
            return None
        return str(adapter_path(self.adapter))

    @property
    def merged_path(self) -> str | None:
        if self.adapter is None or not self.merged:
            return None
        return str(artifact_store().path(self.adapter.merged_path))

    @property
    def label(self) -> str:
        if self.adapter is None:
            return f"{self.base_model.name} (base)"
        suffix = " merged" if self.merged else ""
        return f"{self.adapter.name} v{self.adapter.version}{suffix}"


@dataclass(frozen=True)
class DeploymentState:
    """What a campaign's alias routes between, read once (``alias_state``)
    so that routing itself (``route_pick``) touches no database."""

    campaign: Campaign
    deployment_id: int | None
    mode: str
    candidate_share: float
    sample_share: float
    champion: ServedVersion
    candidate: ServedVersion | None

    @property
    def share(self) -> float:
        """The candidate's share of requests."""
        if self.candidate is None or self.mode == Deployment.Mode.CHAMPION:
            return 0.0
        if self.mode == Deployment.Mode.AB:
            return AB_SHARE
        return self.candidate_share


@dataclass(frozen=True)
class Route:
    """Which version answers one request, and what traffic sampling compares
    it with."""

    requested: str
    version: ServedVersion
    campaign: Campaign | None = None
    arm: str = ServedResponse.Arm.NONE
    other: ServedVersion | None = None  # the other side of a sampled pair
    sample: bool = False


# ---------------------------------------------------------------- resolving


def served_base() -> BaseModelVersion:
    """The base model version the inference process serves: the default."""
    return base_model_default()


def base_version(base: BaseModelVersion) -> ServedVersion:
    return ServedVersion(name=f"base-{base.pk}", base_model=base)


def _adapter_version(
    adapter: Adapter, *, base: BaseModelVersion, merged: bool, name: str
) -> ServedVersion:
    """``adapter`` as served (refusals raise ``ModelNotFound`` naming why)."""
    if adapter.role != Adapter.Role.POLICY:
        raise ModelNotFound(
            f"The model '{name}' does not exist: adapter {adapter.pk} is a "
            "reward model, which does not answer requests."
        )
    if not adapter.serving_enabled:
        raise ModelNotFound(
            f"The model '{name}' is switched off for serving (it stays in the "
            "registry; an admin can switch it on again)."
        )
    if adapter.status == Adapter.Status.RETIRED:
        raise ModelNotFound(f"The model '{name}' is retired and is not served.")
    if adapter.base_model_id != base.pk:
        raise ModelNotFound(
            f"The model '{name}' is trained over the base {adapter.base_model}; "
            f"this inference service serves the base {base}."
        )
    if merged:
        if not adapter.merged_path or not artifact_store().has(
            adapter.merged_path, "config.json"
        ):
            raise ModelNotFound(
                f"The model '{name}' does not exist: adapter {adapter.pk} has no "
                f"merged export yet (serve 'adapter-{adapter.pk}', or export it)."
            )
    elif not adapter_files_present(adapter):
        raise ModelNotFound(
            f"The model '{name}' cannot be served: its adapter files are "
            "missing from the storage root."
        )
    return ServedVersion(
        name=f"{adapter.served_name}-merged" if merged else adapter.served_name,
        base_model=adapter.base_model,
        adapter=adapter,
        merged=merged,
    )


def served_version_get(*, name: str, base: BaseModelVersion) -> ServedVersion:
    """The concrete version ``name`` serves over ``base`` (not an alias).
    Raises ``ModelNotFound``."""
    if name == BASE_ALIAS:
        return base_version(base)
    if match := _BASE.fullmatch(name):
        if int(match[1]) != base.pk:
            raise ModelNotFound(
                f"The model '{name}' is not served here: this inference service "
                f"serves the base '{base_version(base).name}'."
            )
        return base_version(base)
    if match := _ADAPTER.fullmatch(name):
        adapter = (
            Adapter.objects.select_related("base_model")
            .filter(pk=int(match[1]))
            .first()
        )
        if adapter is None:
            raise ModelNotFound(f"The model '{name}' does not exist.")
        return _adapter_version(adapter, base=base, merged=bool(match[2]), name=name)
    raise ModelNotFound(f"The model '{name}' does not exist.")


def alias_state(*, campaign_id: int, base: BaseModelVersion) -> DeploymentState:
    """The deployment behind ``campaign-<id>/champion``: its champion (the
    base while there is none) and its candidate. A candidate that can no
    longer serve (switched off or retired between the deployment's change
    and now) is left out: the champion answers everything."""
    name = f"campaign-{campaign_id}/champion"
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None or campaign.status == Campaign.Status.ARCHIVED:
        raise ModelNotFound(f"The model '{name}' does not exist.")
    champion_adapter = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    champion = (
        _adapter_version(champion_adapter, base=base, merged=False, name=name)
        if champion_adapter is not None
        else base_version(base)
    )
    deployment = (
        Deployment.objects.select_related("candidate__base_model")
        .filter(campaign=campaign)
        .first()
    )
    candidate = None
    if deployment is not None and deployment.candidate is not None:
        try:
            candidate = _adapter_version(
                deployment.candidate, base=base, merged=False, name=name
            )
        except ModelNotFound:
            logger.warning(
                "models_hub.serving.candidate_unservable deployment=%s adapter=%s",
                deployment.pk,
                deployment.candidate_id,
            )
    return DeploymentState(
        campaign=campaign,
        deployment_id=deployment.pk if deployment is not None else None,
        mode=deployment.mode if deployment is not None else Deployment.Mode.CHAMPION,
        candidate_share=deployment.candidate_share if deployment is not None else 0.0,
        sample_share=deployment.sample_share if deployment is not None else 0.0,
        champion=champion,
        candidate=candidate,
    )


def user_point(*, deployment_id: int | None, user: str) -> float:
    """A user's fixed point in [0, 1): sha256 of ``"<deployment>:<user>"``.
    The same user lands on the same arm for as long as the shares stay."""
    digest = hashlib.sha256(f"{deployment_id}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route_pick(
    state: DeploymentState, *, requested: str, user: str, rng: random.Random
) -> Route:
    """The arm of one request to an alias (no database): the candidate when
    the user's point (or, without a user, a uniform draw) falls under its
    share. ``sample`` is an independent draw under ``sample_share``; the
    other side of a sampled pair is the other arm (the base when the
    deployment has no candidate)."""
    share = state.share
    point = (
        user_point(deployment_id=state.deployment_id, user=user)
        if user
        else rng.random()
    )
    if state.candidate is not None and point < share:
        arm, version, other = (
            ServedResponse.Arm.CANDIDATE,
            state.candidate,
            state.champion,
        )
    else:
        arm, version = ServedResponse.Arm.CHAMPION, state.champion
        other = state.candidate or base_version(state.champion.base_model)
    if other.name == version.name:  # no champion, no candidate: nothing to compare
        other = None
    sample = other is not None and state.sample_share > 0
    sample = sample and rng.random() < state.sample_share
    return Route(
        requested=requested,
        version=version,
        campaign=state.campaign,
        arm=arm,
        other=other if sample else None,
        sample=sample,
    )


def serving_route(
    *,
    name: str,
    user: str = "",
    base: BaseModelVersion | None = None,
    rng: random.Random | None = None,
) -> Route:
    """Which version answers a request for ``name`` (a concrete name or a
    campaign alias), routed by the alias's deployment. Raises
    ``ModelNotFound``."""
    base = base or served_base()
    if match := _ALIAS.fullmatch(name):
        state = alias_state(campaign_id=int(match[1]), base=base)
        return route_pick(state, requested=name, user=user, rng=rng or random.Random())
    return Route(requested=name, version=served_version_get(name=name, base=base))


@dataclass(frozen=True)
class ListedModel:
    name: str
    kind: str  # base | adapter | merged | alias
    created: int
    target: str = ""  # what an alias answers with now (its champion)


def served_model_list(*, base: BaseModelVersion | None = None) -> list[ListedModel]:
    """Every name a caller can use now: the base (``base`` and ``base-<id>``),
    servable policy adapters over it and their merged exports, and the
    aliases of campaigns that are not archived."""
    base = base or served_base()
    listed = [
        ListedModel(
            name=BASE_ALIAS,
            kind="alias",
            created=int(base.created_at.timestamp()),
            target=base_version(base).name,
        ),
        ListedModel(
            name=base_version(base).name,
            kind="base",
            created=int(base.created_at.timestamp()),
        ),
    ]
    adapters = (
        Adapter.objects.filter(
            base_model=base, role=Adapter.Role.POLICY, serving_enabled=True
        )
        .exclude(status=Adapter.Status.RETIRED)
        .select_related("base_model")
        .order_by("pk")
    )
    for adapter in adapters:
        for merged in (False, True):
            if merged and not adapter.merged_path:
                continue
            try:
                version = _adapter_version(
                    adapter, base=base, merged=merged, name=adapter.served_name
                )
            except ModelNotFound:
                continue
            listed.append(
                ListedModel(
                    name=version.name,
                    kind="merged" if merged else "adapter",
                    created=int(adapter.created_at.timestamp()),
                )
            )
    champions = {
        a.campaign_id: a
        for a in Adapter.objects.filter(
            role=Adapter.Role.POLICY, status=Adapter.Status.CHAMPION
        )
    }
    for campaign in Campaign.objects.exclude(status=Campaign.Status.ARCHIVED).order_by(
        "pk"
    ):
        champion = champions.get(campaign.pk)
        if champion is not None and champion.base_model_id != base.pk:
            continue
        listed.append(
            ListedModel(
                name=f"campaign-{campaign.pk}/champion",
                kind="alias",
                created=int(campaign.created_at.timestamp()),
                target=champion.served_name
                if champion is not None
                else base_version(base).name,
            )
        )
    return listed


# ---------------------------------------------------------------- recording


def served_response_record(
    *,
    public_id: str,
    endpoint: str,
    route: Route,
    caller: AbstractBaseUser | None,
    end_user: str,
    prompt: str | list[dict[str, str]],
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
) -> ServedResponse:
    """Record one answer with the version that gave it; ``sampled`` says
    whether the other version will answer it too (traffic sampling)."""
    version = route.version
    response = ServedResponse(
        public_id=public_id,
        endpoint=endpoint,
        requested_model=route.requested[:200],
        served_model=version.name,
        base_model=version.base_model,
        adapter=version.adapter,
        merged=version.merged,
        campaign=route.campaign,
        arm=route.arm,
        caller=caller if caller is not None and caller.is_authenticated else None,
        end_user=end_user[:200],
        prompt=prompt,
        text=text.replace("\x00", "\ufffd"),
        finish_reason=finish_reason[:16],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
        sampled=route.sample,
    )
    # The related rows come from the database already: no lookup per field.
    response.full_clean(
        exclude=["base_model", "adapter", "campaign", "caller", "comparison"],
        validate_unique=False,
        validate_constraints=False,
    )
    response.save()
    return response


def traffic_prompt_get_or_create(
    *, campaign: Campaign, content: str | list[dict[str, str]]
) -> Prompt:
    """The campaign's prompt with this content (text or chat messages),
    created from served traffic when it has none: split from its content
    hash like every imported prompt, never golden, ``{"source": "traffic"}``."""
    digest = content_hash(content)
    is_chat = isinstance(content, list)
    prompt, _ = Prompt.objects.get_or_create(
        campaign=campaign,
        content_hash=digest,
        defaults={
            "text": "" if is_chat else str(content).replace("\x00", "\ufffd"),
            "messages": content if is_chat else None,
            "split": split_for_hash(digest),
            "metadata": {"source": TRAFFIC_SOURCE},
        },
    )
    return prompt


@transaction.atomic
def traffic_pair_record(
    *,
    public_id: str,
    other: ServedVersion,
    other_text: str,
    other_finish_reason: str,
    other_completion_tokens: int,
    decoding: dict[str, Any],
    rng: random.Random | None = None,
) -> Comparison | None:
    """Turn a sampled answer and the other version's answer to the same
    prompt into a queued comparison of the request's campaign (sides
    shuffled), and point the served response at it. Both completions carry
    the version lineage plus ``{"source": "traffic", "served_response":
    public_id}``. None (nothing queued) when the texts are the same or the
    pair exists already. Locks the served response row; calling it twice
    queues one pair."""
    served = (
        ServedResponse.objects.select_for_update(of=("self",))
        .select_related("campaign", "adapter", "base_model")
        .filter(public_id=public_id)
        .first()
    )
    if served is None or served.campaign is None:
        raise ModelNotFound(f"No sampled served response has the id {public_id}.")
    if served.comparison_id is not None:
        return served.comparison
    campaign = served.campaign
    prompt = traffic_prompt_get_or_create(campaign=campaign, content=served.prompt)
    traffic = {"source": TRAFFIC_SOURCE, "served_response": public_id, **decoding}
    mine = model_completion_store(
        prompt=prompt,
        text=served.text,
        adapter=served.adapter,
        base=served.base_model,
        generation={
            **version_lineage(served.adapter, served.base_model),
            **traffic,
            "served_model": served.served_model,
            "merged": served.merged,
            "arm": served.arm,
            "finish_reason": served.finish_reason,
            "finished": served.finish_reason == "stop",
            "new_tokens": served.completion_tokens,
        },
    )
    theirs = model_completion_store(
        prompt=prompt,
        text=other_text,
        adapter=other.adapter,
        base=other.base_model,
        generation={
            **version_lineage(other.adapter, other.base_model),
            **traffic,
            "served_model": other.name,
            "merged": other.merged,
            "arm": "other",
            "finish_reason": other_finish_reason,
            "finished": other_finish_reason == "stop",
            "new_tokens": other_completion_tokens,
        },
    )
    sides = [mine, theirs]
    (rng or random.Random()).shuffle(sides)
    comparison = comparison_pair_queue(
        campaign=campaign,
        prompt=prompt,
        a=sides[0],
        b=sides[1],
        priority=generation_settings_for(campaign).priority,
    )
    if comparison is not None:
        served.comparison = comparison
        served.save(update_fields=["comparison", "updated_at"])
    logger.info(
        "models_hub.serving.traffic_pair response=%s comparison=%s",
        public_id,
        comparison and comparison.pk,
    )
    return comparison
