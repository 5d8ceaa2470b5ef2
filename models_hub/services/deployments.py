"""Managing what a campaign's alias serves: the deployment (champion only, a
canary, an A/B split), its recorded changes and their rollback, the serving
switch of each adapter, and callers' feedback on served responses.

The inference process reads these rows (``models_hub.services.serving``);
nothing here loads a model.

Rules a deployment's candidate must meet (``deployment_update`` and
``deployment_rollback`` check them): a policy adapter of the same campaign,
over the base the campaign serves (its champion's, else the default base),
switched on for serving, and of status ``candidate`` (the champion is
already served and a retired adapter may not come back).

Locks are taken in one order everywhere: the campaign row, then adapter
rows, then deployment rows (``registry`` locks campaign → adapter too and
calls ``deployment_candidate_end`` last), so two writers never deadlock.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.exceptions import Conflict, NotFound
from labeling.models import Campaign
from models_hub.exceptions import DeploymentRefused
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    Deployment,
    DeploymentChange,
    ServedFeedback,
    ServedResponse,
)
from models_hub.selectors import deployment_rollback_target

logger = logging.getLogger(__name__)

AB_SHARE = 0.5
# The fields a change records and a rollback restores.
STATE_FIELDS = ("mode", "candidate", "candidate_share", "sample_share")


REASON_MAX = 500


def _reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > REASON_MAX:
        raise DeploymentRefused(
            f"reason: at most {REASON_MAX} characters (got {len(reason)})."
        )
    return reason


def deployment_get_or_create(campaign: Campaign) -> Deployment:
    """The campaign's deployment, created champion-only on first use."""
    deployment, _ = Deployment.objects.get_or_create(campaign=campaign)
    return deployment


def deployment_snapshot(deployment: Deployment) -> dict[str, Any]:
    """The state a change records as ``before``/``after``: the candidate by
    id (what a rollback restores) and by name (what a person reads)."""
    candidate = deployment.candidate
    return {
        "mode": deployment.mode,
        "candidate": candidate.pk if candidate is not None else None,
        "candidate_name": str(candidate) if candidate is not None else None,
        "candidate_share": deployment.candidate_share,
        "sample_share": deployment.sample_share,
    }


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in STATE_FIELDS)


def campaign_served_base(campaign: Campaign) -> BaseModelVersion:
    """The base the campaign's alias serves: its policy champion's, else
    the default base (as generation does)."""
    # registry imports this module (to end a promoted or retired candidate).
    from models_hub.services.registry import adapter_champion, base_model_default

    champion = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    return champion.base_model if champion is not None else base_model_default()


def candidate_refusal(*, campaign: Campaign, adapter: Adapter) -> str | None:
    """Why ``adapter`` cannot be the campaign's candidate (None: it can)."""
    name = str(adapter)
    if adapter.campaign_id != campaign.pk:
        return f"{name} belongs to another campaign."
    if adapter.role != Adapter.Role.POLICY:
        return f"{name} is a reward model: only a policy adapter answers requests."
    if adapter.status == Adapter.Status.CHAMPION:
        return f"{name} is the champion already: the candidate must be another version."
    if adapter.status == Adapter.Status.RETIRED:
        return f"{name} is retired: it may not serve again."
    if not adapter.serving_enabled:
        return f"{name} is switched off for serving: switch it on first."
    base = campaign_served_base(campaign)
    if adapter.base_model_id != base.pk:
        return (
            f"{name} is trained over the base {adapter.base_model}, but the "
            f"campaign serves the base {base}."
        )
    return None


def _lock_candidate(*, campaign: Campaign, candidate_id: int) -> Adapter:
    adapter = (
        Adapter.objects.select_for_update(of=("self",))
        .select_related("base_model")
        .filter(pk=candidate_id)
        .first()
    )
    if adapter is None:
        raise DeploymentRefused(f"candidate: no adapter has the id {candidate_id}.")
    refusal = candidate_refusal(campaign=campaign, adapter=adapter)
    if refusal is not None:
        raise DeploymentRefused(f"candidate: {refusal}")
    return adapter


def _lock_deployment(campaign: Campaign) -> Deployment:
    deployment_get_or_create(campaign)
    return (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("candidate", "campaign")
        .get(campaign=campaign)
    )


def _record(
    *,
    deployment: Deployment,
    before: dict[str, Any],
    action: str,
    actor: AbstractBaseUser | None,
    reason: str,
) -> DeploymentChange:
    deployment.updated_by = actor
    deployment.full_clean()
    deployment.save()
    change = DeploymentChange.objects.create(
        deployment=deployment,
        action=action,
        before=before,
        after=deployment_snapshot(deployment),
        actor=actor,
        # A caller's own reason is checked by ``_reason``; composed ones are cut.
        reason=reason.strip()[:REASON_MAX],
    )
    logger.info(
        "models_hub.deployment.%s deployment=%s mode=%s candidate=%s",
        action,
        deployment.pk,
        deployment.mode,
        deployment.candidate_id,
    )
    return change


@transaction.atomic
def deployment_update(
    *,
    deployment: Deployment,
    actor: AbstractBaseUser | None,
    mode: str,
    candidate: Adapter | int | None = None,
    candidate_share: float | None = None,
    sample_share: float | None = None,
    reason: str = "",
) -> Deployment:
    """Set the deployment to ``mode``, recorded as an ``updated`` change with
    the state before and after, the actor and the reason.

    - ``champion``: the champion alone; ``candidate`` must be None (the
      stored candidate is cleared) and ``candidate_share`` is kept as is.
    - ``canary``: ``candidate`` answers ``candidate_share`` of the requests,
      strictly between 0 and 1 (None keeps the stored share).
    - ``ab``: ``candidate`` answers half; a share other than 0.5 is refused.

    ``sample_share`` in [0, 1] (None keeps it) is the share of served
    requests the other arm also answers, queued as comparisons (the
    candidate, or the base while there is none; see ``serving.route_pick``).

    A request that changes nothing records nothing and returns the
    deployment as it is. Refusals raise ``DeploymentRefused`` (400) naming
    the field and the reason, and change nothing. Locks the campaign, the
    candidate and the deployment rows.
    """
    reason = _reason(reason)
    campaign = Campaign.objects.select_for_update().get(pk=deployment.campaign_id)
    if mode not in Deployment.Mode.values:
        raise DeploymentRefused(
            f"mode: {mode!r} is not one of {', '.join(Deployment.Mode.values)}."
        )
    candidate_id = candidate.pk if isinstance(candidate, Adapter) else candidate
    if mode == Deployment.Mode.CHAMPION and candidate_id is not None:
        raise DeploymentRefused(
            "candidate: champion-only serves no candidate; choose canary or ab."
        )
    if mode != Deployment.Mode.CHAMPION and candidate_id is None:
        raise DeploymentRefused(
            f"candidate: {Deployment.Mode(mode).label} needs a candidate adapter."
        )
    if mode == Deployment.Mode.AB and candidate_share not in (None, AB_SHARE):
        raise DeploymentRefused(
            "candidate_share: an A/B split is always even (0.5); leave the share "
            f"out (got {candidate_share})."
        )
    if sample_share is not None and not 0.0 <= sample_share <= 1.0:
        raise DeploymentRefused(
            f"sample_share: must be between 0 and 1 (got {sample_share})."
        )
    locked = (
        _lock_candidate(campaign=campaign, candidate_id=candidate_id)
        if candidate_id is not None
        else None
    )
    deployment = _lock_deployment(campaign)
    before = deployment_snapshot(deployment)
    if mode == Deployment.Mode.CANARY:
        share = (
            candidate_share
            if candidate_share is not None
            else deployment.candidate_share
        )
        if not 0.0 < share < 1.0:
            raise DeploymentRefused(
                "candidate_share: a canary needs a share strictly between 0 and 1 "
                f"(got {share})."
            )
        deployment.candidate_share = share
    elif mode == Deployment.Mode.AB:
        deployment.candidate_share = AB_SHARE
    deployment.mode = mode
    deployment.candidate = locked
    if sample_share is not None:
        deployment.sample_share = sample_share
    if _same_state(before, deployment_snapshot(deployment)):
        return deployment
    _record(
        deployment=deployment,
        before=before,
        action=DeploymentChange.Action.UPDATED,
        actor=actor,
        reason=reason,
    )
    return deployment


@transaction.atomic
def deployment_rollback(
    *, deployment: Deployment, actor: AbstractBaseUser | None, reason: str = ""
) -> Deployment:
    """Undo the newest change not yet undone (``deployment_rollback_target``)
    in one step: the deployment returns to that change's ``before``,
    recorded as ``rolled_back``. Raises ``Conflict`` (409) when there is
    nothing to roll back, or when the state to restore names a candidate
    that may no longer serve (promoted, retired or switched off since); then
    nothing changes. Locks the campaign, the candidate and the deployment."""
    reason = _reason(reason)
    campaign = Campaign.objects.select_for_update().get(pk=deployment.campaign_id)
    target = deployment_rollback_target(deployment)
    if target is None:
        raise Conflict("Nothing to roll back: this deployment has no change to undo.")
    restore = target.before
    candidate: Adapter | None = None
    if restore.get("candidate") is not None:
        try:
            candidate = _lock_candidate(
                campaign=campaign, candidate_id=restore["candidate"]
            )
        except DeploymentRefused as exc:
            raise Conflict(
                f"Cannot roll back to {restore.get('mode')} with "
                f"{restore.get('candidate_name')}: {exc.message.removeprefix('candidate: ')}"
            ) from exc
    deployment = _lock_deployment(campaign)
    if deployment_rollback_target(deployment) != target:
        # A candidate's promotion, retirement or switch-off ended the split
        # between reading the target and locking the row.
        raise Conflict("The deployment changed meanwhile; look again and retry.")
    before = deployment_snapshot(deployment)
    deployment.mode = restore.get("mode", Deployment.Mode.CHAMPION)
    deployment.candidate = candidate
    deployment.candidate_share = restore.get(
        "candidate_share", deployment.candidate_share
    )
    deployment.sample_share = restore.get("sample_share", deployment.sample_share)
    _record(
        deployment=deployment,
        before=before,
        action=DeploymentChange.Action.ROLLED_BACK,
        actor=actor,
        reason=f"undoes change #{target.pk} ({target.get_action_display()})"
        + (f": {reason}" if reason else ""),
    )
    return deployment


def deployment_candidate_end(
    *, adapter: Adapter, actor: AbstractBaseUser | None, reason: str
) -> list[Deployment]:
    """Every deployment whose candidate is ``adapter`` returns to
    champion-only, recorded as ``ended`` with ``reason``. Called, inside
    their transaction, by the services that promote, retire or roll back an
    adapter and by the serving switch; call it after locking the adapter
    (lock order campaign → adapter → deployment). Returns the deployments
    it changed."""
    ended = []
    rows = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("candidate")
        .filter(candidate_id=adapter.pk)
        .order_by("pk")
    )
    for deployment in rows:
        before = deployment_snapshot(deployment)
        deployment.mode = Deployment.Mode.CHAMPION
        deployment.candidate = None
        _record(
            deployment=deployment,
            before=before,
            action=DeploymentChange.Action.ENDED,
            actor=actor,
            reason=reason,
        )
        ended.append(deployment)
    return ended


@transaction.atomic
def adapter_serving_set(
    *,
    adapter: Adapter,
    enabled: bool,
    actor: AbstractBaseUser | None,
    reason: str = "",
) -> Adapter:
    """Switch ``adapter`` on or off for serving (it stays in the registry),
    recorded as a ``serving_on``/``serving_off`` AdapterEvent. Switching
    off a champion is refused (``DeploymentRefused``): promote another
    version or roll the champion back first, so the alias always has a
    version to serve. Switching off a deployment's candidate ends that
    canary or A/B split (recorded as ``ended``): it is the quickest way to
    stop a bad candidate. Setting the state it already has records
    nothing. Locks the adapter row."""
    reason = _reason(reason)
    adapter = Adapter.objects.select_for_update(of=("self",)).get(pk=adapter.pk)
    if adapter.serving_enabled == enabled:
        return adapter
    name = str(adapter)
    if not enabled and adapter.status == Adapter.Status.CHAMPION:
        raise DeploymentRefused(
            f"{name} is the champion: promote another version or roll the "
            "champion back before switching it off."
        )
    adapter.serving_enabled = enabled
    adapter.save(update_fields=["serving_enabled", "updated_at"])
    AdapterEvent.objects.create(
        adapter=adapter,
        action=AdapterEvent.Action.SERVING_ON
        if enabled
        else AdapterEvent.Action.SERVING_OFF,
        actor=actor,
        reason=reason,
    )
    if not enabled:
        deployment_candidate_end(
            adapter=adapter,
            actor=actor,
            reason=f"{name} switched off for serving"
            + (f": {reason}" if reason else ""),
        )
    logger.info("models_hub.adapter.serving adapter=%s enabled=%s", adapter.pk, enabled)
    return adapter


def served_response_get(*, public_id: str) -> ServedResponse:
    response = (
        ServedResponse.objects.select_related("adapter")
        .filter(public_id=public_id)
        .first()
    )
    if response is None:
        raise NotFound("No served response has this id.")
    return response


@transaction.atomic
def served_feedback_record(
    *,
    public_id: str,
    caller: AbstractBaseUser | None,
    rating: str,
    comment: str = "",
) -> ServedFeedback:
    """Record a caller's verdict (``up``, ``down`` or ``prefer_other``) on the
    served response ``public_id``; it counts for the version that answered
    it (``response.adapter``, or the base). One verdict per caller: a second
    one replaces the first (a caller cannot outvote others by repeating).
    ``NotFound`` (404) for an unknown id, ``DeploymentRefused`` (400) naming
    the field for a bad rating."""
    response = served_response_get(public_id=public_id)
    if rating not in ServedFeedback.Rating.values:
        raise DeploymentRefused(
            f"rating: {rating!r} is not one of "
            f"{', '.join(ServedFeedback.Rating.values)}."
        )
    feedback = ServedFeedback(
        response=response, rating=rating, comment=comment.strip(), caller=caller
    )
    feedback.full_clean(validate_constraints=False)
    if caller is None:
        feedback.save()
        return feedback
    feedback, _ = ServedFeedback.objects.update_or_create(
        response=response,
        caller=caller,
        defaults={"rating": rating, "comment": feedback.comment},
    )
    return feedback
