"""Drift watch: is each served version still answering as it did after its
promotion?

- ``drift_tick`` (beat, default queue) requests an evaluation for every
  active campaign that serves something to watch (a policy champion, or
  served traffic) whose policy is on and whose interval has passed;
  ``drift_evaluate_request`` does the same for "evaluate now". A request
  stamps the policy row and enqueues ``models_hub.drift_evaluate`` on the
  gpu queue after commit; a second request while one waits is refused.
- ``drift_evaluate_run`` (the gpu task) claims the request and runs
  ``drift_evaluate``: for the champion (else the base) and a deployed
  candidate, answers to held-out prompts (test split first, then golden
  prompts: never trained on) written by the generator the rounds use,
  scored by the campaign's reward model when it has one, and a sample of
  the responses the inference API served since the previous evaluation;
  each becomes a ``DriftPoint`` with the human win rate against the
  previous champion. The reward model's own test-split accuracy is
  refreshed on the way when test labels arrived (``test_metrics``). Then ``drift_check`` compares each point with the
  baseline window after the version's promotion (``ml.drift``): it opens,
  keeps or resolves ``DriftAlert`` rows, and POSTs a new alert to the
  policy's webhook (failures recorded on the alert, never raised).

Torch is imported only inside the gpu functions (``ml.generation``,
``ml.reward``); the statistics in ``ml.drift`` are plain Python.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.enqueue import enqueue
from core.exceptions import Conflict
from labeling.models import Campaign, Prompt
from ml.drift import drift_findings, mean_sd, output_figures
from models_hub.drift_selectors import (
    WatchedVersion,
    drift_baseline,
    drift_policy_for,
    drift_thresholds,
    point_data,
    version_watched_since,
    version_win_rate,
)
from models_hub.models import (
    Adapter,
    Deployment,
    DriftAlert,
    DriftPoint,
    DriftPolicy,
    GenerationSettings,
    ServedResponse,
)
from models_hub.selectors import campaign_reward_model, version_outcomes
from models_hub.services.generation import POOL, _params
from models_hub.services.registry import (
    adapter_champion,
    adapter_path,
    base_model_default,
    base_model_local_path,
    generation_settings_for,
)
from models_hub.services.test_metrics import (
    reward_test_metrics_due,
    reward_test_metrics_update,
)
from models_hub.versions import VersionKey

logger = logging.getLogger(__name__)

TASK = "models_hub.drift_evaluate"
# A request older than this counts as lost (its message or its worker) and
# may be sent again.
REQUEST_LOST_AFTER = timedelta(minutes=30)
WEBHOOK_TIMEOUT_SECONDS = 5.0
SERIES_DECIMALS = 4
POLICY_FIELDS = (
    "enabled",
    "interval_minutes",
    "golden_sample_size",
    "served_sample_size",
    "mean_drop_sd",
    "psi_limit",
    "empty_rate_increase",
    "truncated_rate_increase",
    "refusal_rate_increase",
    "min_win_rate",
    "baseline_points",
    "webhook_url",
)


# ---------------------------------------------------------------- policy


def drift_policy_update(
    *, campaign: Campaign, actor: AbstractBaseUser | None, **fields: Any
) -> DriftPolicy:
    """Set the fields named (see ``POLICY_FIELDS``); creates the row on the
    first save. Raises Django's ``ValidationError`` naming the field."""
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"unknown drift policy fields: {sorted(unknown)}")
    with transaction.atomic():
        policy, _ = DriftPolicy.objects.select_for_update().get_or_create(
            campaign=campaign
        )
        for name, value in fields.items():
            setattr(policy, name, value)
        policy.full_clean()
        policy.save()
    logger.info(
        "models_hub.drift.policy_updated campaign=%s actor=%s fields=%s",
        campaign.pk,
        actor and actor.pk,
        sorted(fields),
    )
    return policy


# ---------------------------------------------------------------- requests


def _request_pending(policy: DriftPolicy) -> bool:
    at = policy.evaluation_requested_at
    return at is not None and timezone.now() - at < REQUEST_LOST_AFTER


def drift_evaluate_request(
    *, campaign: Campaign, actor: AbstractBaseUser | None = None
) -> DriftPolicy:
    """Queue an evaluation of the campaign's served versions now (on the gpu
    worker, after commit). Raises ``Conflict`` while one is queued or running."""
    with transaction.atomic():
        policy, _ = DriftPolicy.objects.select_for_update().get_or_create(
            campaign=campaign
        )
        if _request_pending(policy):
            raise Conflict(
                "A drift evaluation of this campaign is already queued or running "
                f"(since {policy.evaluation_requested_at:%Y-%m-%d %H:%M} UTC)."
            )
        policy.evaluation_requested_at = timezone.now()
        policy.save(update_fields=["evaluation_requested_at", "updated_at"])
        enqueue(TASK, campaign.pk)
    logger.info(
        "models_hub.drift.requested campaign=%s actor=%s",
        campaign.pk,
        actor and actor.pk,
    )
    return policy


def _watchable(campaign: Campaign) -> bool:
    return (
        adapter_champion(campaign=campaign, role=Adapter.Role.POLICY) is not None
        or ServedResponse.objects.filter(campaign=campaign).exists()
    )


def drift_tick() -> int:
    """Beat: request an evaluation for each active campaign whose drift
    policy is on (the default) and due, and that serves something worth
    watching: a policy champion or traffic through its alias. Returns how
    many were requested."""
    now = timezone.now()
    requested = 0
    campaigns = Campaign.objects.filter(status=Campaign.Status.ACTIVE).exclude(
        drift_policy__enabled=False
    )
    for campaign in campaigns:
        policy = drift_policy_for(campaign=campaign)
        if _request_pending(policy):
            continue
        last = policy.last_evaluated_at
        if last is not None and now - last < timedelta(minutes=policy.interval_minutes):
            continue
        if not _watchable(campaign):
            continue
        try:
            drift_evaluate_request(campaign=campaign)
        except Conflict:
            continue
        requested += 1
    return requested


# ---------------------------------------------------------------- evaluating


def drift_watched_versions(*, campaign: Campaign) -> list[WatchedVersion]:
    """The champion policy (the default base while there is none, as the
    alias serves) and the deployment's candidate in canary or A/B mode."""
    champion = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    watched = [
        WatchedVersion(
            "champion",
            champion,
            champion.base_model if champion is not None else base_model_default(),
        )
    ]
    deployment = (
        Deployment.objects.filter(campaign=campaign)
        .select_related("candidate__base_model")
        .first()
    )
    if (
        deployment is not None
        and deployment.mode != Deployment.Mode.CHAMPION
        and deployment.candidate is not None
        and deployment.candidate != champion
    ):
        watched.append(
            WatchedVersion(
                "candidate", deployment.candidate, deployment.candidate.base_model
            )
        )
    return watched


def drift_heldout_prompts(*, campaign: Campaign, count: int) -> list[Prompt]:
    """Up to ``count`` prompts no model trained on: the test split first
    (golden ones first), then golden prompts of the other splits (snapshots
    leave golden prompts out of training whatever their split)."""
    test = list(
        Prompt.objects.filter(
            POOL, campaign=campaign, split=Prompt.Split.TEST
        ).order_by("-is_golden", "id")[:count]
    )
    if len(test) < count:
        test += list(
            Prompt.objects.filter(campaign=campaign, is_golden=True)
            .exclude(split=Prompt.Split.TEST)
            .order_by("id")[: count - len(test)]
        )
    return test


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), SERIES_DECIMALS) for v in values]


def _point(
    *,
    campaign: Campaign,
    version: WatchedVersion,
    source: str,
    texts: Sequence[str],
    finished: Sequence[bool],
    scores: Sequence[float] | None,
    reward: Adapter | None,
    details: dict[str, Any],
    win: dict[str, Any] | None = None,
) -> DriftPoint:
    figures = output_figures(texts, finished=finished)
    mean, sd = mean_sd(list(scores or []))
    win = win or {}
    point = DriftPoint(
        campaign=campaign,
        adapter=version.adapter,
        base_model=version.base_model,
        source=source,
        taken_at=timezone.now(),
        n=len(texts),
        reward_adapter=reward if scores is not None else None,
        rm_mean=mean,
        rm_sd=sd,
        length_mean=figures["length_mean"],
        length_p90=figures["length_p90"],
        empty_rate=figures["empty_rate"],
        truncated_rate=figures["truncated_rate"],
        refusal_rate=figures["refusal_rate"],
        degenerate_rate=figures["degenerate_rate"],
        win_rate=win.get("rate") if win.get("n") else None,
        win_rate_lower=win.get("lower") if win.get("n") else None,
        win_rate_upper=win.get("upper") if win.get("n") else None,
        win_rate_n=win.get("n", 0),
        win_rate_opponent=win.get("opponent", ""),
        values={
            "scores": _rounded(scores or []),
            "lengths": [float(len(t)) for t in texts],
        },
        details={
            **details,
            "role": version.role,
            "scored": scores is not None,
            "win_rate_opponent_label": win.get("opponent_label", ""),
        },
    )
    point.full_clean()
    point.save()
    return point


def _served_sample(
    *, campaign: Campaign, version: WatchedVersion, size: int
) -> list[ServedResponse]:
    """The newest ``size`` responses of this version served since its
    previous served point (its promotion, for the first)."""
    qs = ServedResponse.objects.filter(base_model=version.base_model)
    if version.adapter is not None:
        qs = qs.filter(adapter=version.adapter)  # its merged export included
    else:
        qs = qs.filter(adapter__isnull=True, campaign=campaign)
    previous = (
        DriftPoint.objects.filter(
            campaign=campaign,
            base_model=version.base_model,
            source=DriftPoint.Source.SERVED,
        )
        .filter(
            Q(adapter=version.adapter)
            if version.adapter is not None
            else Q(adapter__isnull=True)
        )
        .order_by("-taken_at")
        .values_list("taken_at", flat=True)
        .first()
    )
    since = previous or version_watched_since(adapter=version.adapter)
    if since is not None:
        qs = qs.filter(created_at__gt=since)
    return list(qs.order_by("-created_at", "-id")[:size])


def _served_prompt(row: ServedResponse) -> str | list[dict[str, str]]:
    """The prompt as the reward model reads it: chat messages or text."""
    prompt = row.prompt
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    return json.dumps(prompt, ensure_ascii=False)


def _heldout_answers(
    version: WatchedVersion,
    prompts: Sequence[Prompt],
    *,
    row: GenerationSettings,
    seed: int,
) -> list[tuple[str, dict[str, Any]]]:
    """``version``'s answers to ``prompts``, by the generator the rounds use
    (one base per worker process, adapters switched), with the rounds'
    decoding settings."""
    from ml.generation import get_generator

    generator = get_generator(base_model_local_path(version.base_model))
    spec = (
        (
            str(VersionKey.adapter(version.adapter.pk)),
            str(adapter_path(version.adapter)),
        )
        if version.adapter is not None
        else None
    )
    return generator.generate(
        [p.content for p in prompts], adapter=spec, params=_params(row, seed=seed)
    )


def drift_evaluate(*, campaign: Campaign) -> list[DriftPoint]:
    """Measure every watched version (``drift_watched_versions``) on
    held-out prompts and on recent served traffic; store and return the
    points. Runs on a gpu worker (loads models)."""
    policy = drift_policy_for(campaign=campaign)
    row = generation_settings_for(campaign)
    reward = campaign_reward_model(campaign=campaign)
    scorer = None
    if reward is not None:
        from ml.reward import RewardScorer

        scorer = RewardScorer.load(
            base_model_local_path(reward.base_model), adapter_path(reward)
        )
        if reward_test_metrics_due(adapter=reward):
            reward_test_metrics_update(adapter=reward, scorer=scorer)
    prompts = drift_heldout_prompts(campaign=campaign, count=policy.golden_sample_size)
    evaluation = DriftPoint.objects.filter(
        campaign=campaign, source=DriftPoint.Source.GOLDEN
    ).count()
    # Sampled as the rounds sample, with a new seed per evaluation: the
    # baseline window then holds the sampling noise the checks allow for.
    seed = row.seed + 7919 * (evaluation + 1)
    points: list[DriftPoint] = []
    watched = drift_watched_versions(campaign=campaign)
    drift_alerts_resolve_unwatched(campaign=campaign, watched=watched)
    outcomes = (
        version_outcomes(campaign=campaign)
        if any(v.adapter is not None for v in watched)
        else []
    )
    for version in watched:
        win = version_win_rate(outcomes=outcomes, adapter=version.adapter)
        if prompts:
            outputs = _heldout_answers(version, prompts, row=row, seed=seed)
            texts = [text for text, _ in outputs]
            scores = (
                scorer.score([p.content for p in prompts], texts)
                if scorer is not None
                else None
            )
            points.append(
                _point(
                    campaign=campaign,
                    version=version,
                    source=DriftPoint.Source.GOLDEN,
                    texts=texts,
                    finished=[record["finished"] for _, record in outputs],
                    scores=scores,
                    reward=reward,
                    win=win,
                    details={
                        "prompts_test": sum(
                            p.split == Prompt.Split.TEST for p in prompts
                        ),
                        "prompts_golden_other_split": sum(
                            p.split != Prompt.Split.TEST for p in prompts
                        ),
                        "seed": seed,
                        "max_new_tokens": row.max_new_tokens,
                    },
                )
            )
        served = _served_sample(
            campaign=campaign, version=version, size=policy.served_sample_size
        )
        if served:
            texts = [r.text for r in served]
            scores = (
                scorer.score([_served_prompt(r) for r in served], texts)
                if scorer is not None
                else None
            )
            points.append(
                _point(
                    campaign=campaign,
                    version=version,
                    source=DriftPoint.Source.SERVED,
                    texts=texts,
                    finished=[r.finish_reason != "length" for r in served],
                    scores=scores,
                    reward=reward,
                    details={
                        "from": served[-1].created_at.isoformat(),
                        "to": served[0].created_at.isoformat(),
                    },
                )
            )
    logger.info(
        "models_hub.drift.evaluated campaign=%s points=%s scored=%s",
        campaign.pk,
        len(points),
        reward is not None,
    )
    return points


# ---------------------------------------------------------------- checking


def drift_check(
    *, points: Sequence[DriftPoint], policy: DriftPolicy | None = None
) -> list[DriftAlert]:
    """Compare each point with its baseline window and open, keep or resolve
    alerts; POST each newly opened alert to the policy's webhook. Returns
    the alerts opened. A point whose window is still filling checks only the
    win rate (which needs no baseline)."""
    opened: list[DriftAlert] = []
    for point in points:
        policy = policy or drift_policy_for(campaign=point.campaign)
        baseline = drift_baseline(point=point, size=policy.baseline_points)
        findings = drift_findings(
            [point_data(p) for p in baseline],
            point_data(point),
            drift_thresholds(policy),
        )
        details = {
            **point.details,
            "baseline_points": [p.pk for p in baseline],
            "findings": [f.as_dict() for f in findings],
        }
        DriftPoint.objects.filter(pk=point.pk).update(details=details)
        point.details = details
        for finding in findings:
            alert = _alert_apply(point=point, finding=finding)
            if alert is not None:
                opened.append(alert)
    for alert in opened:
        drift_webhook_send(alert=alert, url=(policy.webhook_url if policy else ""))
    return opened


def _open_alert(point: DriftPoint, metric: str) -> Any:
    qs = DriftAlert.objects.filter(
        campaign=point.campaign,
        base_model=point.base_model,
        source=point.source,
        metric=metric,
        resolved_at__isnull=True,
    )
    return (
        qs.filter(adapter=point.adapter)
        if point.adapter
        else qs.filter(adapter__isnull=True)
    )


def _alert_apply(*, point: DriftPoint, finding: Any) -> DriftAlert | None:
    """Open (returned), keep (updated) or resolve the alert of one finding."""
    now = timezone.now()
    value = finding.value if math.isfinite(finding.value) else None
    with transaction.atomic():
        existing = _open_alert(point, finding.metric).select_for_update().first()
        if not finding.breached:
            if existing is not None:
                existing.resolved_at = now
                existing.save(update_fields=["resolved_at", "updated_at"])
                logger.info("models_hub.drift.resolved alert=%s", existing.pk)
            return None
        if existing is not None:
            existing.value = value
            existing.last_seen_at = now
            existing.message = finding.message[:500]
            existing.save(
                update_fields=["value", "last_seen_at", "message", "updated_at"]
            )
            return None
        alert = DriftAlert(
            campaign=point.campaign,
            adapter=point.adapter,
            base_model=point.base_model,
            source=point.source,
            metric=finding.metric,
            value=value,
            threshold=finding.threshold,
            baseline=finding.baseline,
            message=finding.message[:500],
            point=point,
            opened_at=now,
            last_seen_at=now,
        )
        try:
            with transaction.atomic():
                alert.save()
        except IntegrityError:
            return None  # another check opened it at the same moment
    logger.warning(
        "models_hub.drift.alert campaign=%s adapter=%s metric=%s message=%s",
        point.campaign_id,
        point.adapter_id,
        finding.metric,
        finding.message,
    )
    return alert


def drift_alerts_resolve_unwatched(
    *, campaign: Campaign, watched: Sequence[WatchedVersion]
) -> int:
    """Resolve the open alerts of versions the campaign no longer serves (a
    champion replaced or rolled back, a canary ended): no later evaluation
    will measure them. Returns how many."""
    open_alerts = DriftAlert.objects.filter(campaign=campaign, resolved_at__isnull=True)
    for version in watched:
        mine = Q(base_model=version.base_model) & (
            Q(adapter=version.adapter)
            if version.adapter is not None
            else Q(adapter__isnull=True)
        )
        open_alerts = open_alerts.exclude(mine)
    return open_alerts.update(resolved_at=timezone.now(), updated_at=timezone.now())


def drift_alert_payload(alert: DriftAlert) -> dict[str, Any]:
    return {
        "event": "drift_alert",
        "alert": alert.pk,
        "campaign": alert.campaign_id,
        "campaign_name": alert.campaign.name,
        "version": str(
            VersionKey.of(
                adapter_id=alert.adapter_id, base_model_id=alert.base_model_id
            )
        ),
        "source": alert.source,
        "metric": alert.metric,
        "value": alert.value,
        "threshold": alert.threshold,
        "baseline": alert.baseline,
        "message": alert.message,
        "opened_at": alert.opened_at.isoformat(),
    }


def drift_webhook_send(*, alert: DriftAlert, url: str) -> None:
    """POST the alert as JSON to ``url`` (nothing without one) with a short
    timeout; the answer or the error is recorded on the alert, never raised."""
    if not url:
        return
    body = json.dumps(drift_alert_payload(alert)).encode()
    request = urllib.request.Request(  # noqa: S310 - an admin-set http(s) URL (URLField)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "arbiter-drift"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as answer:  # noqa: S310
            status, detail = DriftAlert.Webhook.SENT, f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        status, detail = DriftAlert.Webhook.FAILED, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        status, detail = DriftAlert.Webhook.FAILED, f"{type(exc).__name__}: {exc}"
    DriftAlert.objects.filter(pk=alert.pk).update(
        webhook_status=status, webhook_detail=detail[:500], updated_at=timezone.now()
    )
    alert.webhook_status, alert.webhook_detail = status, detail[:500]
    log = logger.info if status == DriftAlert.Webhook.SENT else logger.warning
    log(
        "models_hub.drift.webhook alert=%s status=%s detail=%s",
        alert.pk,
        status,
        detail,
    )


def drift_alert_acknowledge(
    *, alert: DriftAlert, actor: AbstractBaseUser
) -> DriftAlert:
    """Record that ``actor`` saw the alert (it stays open until a later
    evaluation is back within the threshold). Acknowledging again changes
    nothing; a resolved alert is a ``Conflict``."""
    with transaction.atomic():
        alert = DriftAlert.objects.select_for_update().get(pk=alert.pk)
        if alert.resolved_at is not None:
            raise Conflict("This alert is already resolved.")
        if alert.acknowledged_at is None:
            alert.acknowledged_by = actor  # type: ignore[assignment]
            alert.acknowledged_at = timezone.now()
            alert.save(
                update_fields=["acknowledged_by", "acknowledged_at", "updated_at"]
            )
    return alert


# ---------------------------------------------------------------- the task


def drift_evaluate_run(*, campaign_id: int) -> int:
    """The ``models_hub.drift_evaluate`` task: claim the request (a duplicate
    message finds none and does nothing), evaluate, check. Returns how many
    alerts were opened. A failure is logged and kept on the policy."""
    with transaction.atomic():
        policy = (
            DriftPolicy.objects.select_for_update()
            .select_related("campaign")
            .filter(campaign_id=campaign_id)
            .first()
        )
        if policy is None or policy.evaluation_requested_at is None:
            logger.info("models_hub.drift.skip campaign=%s", campaign_id)
            return 0
    try:
        points = drift_evaluate(campaign=policy.campaign)
        opened = drift_check(points=points, policy=policy)
    except Exception as exc:  # noqa: BLE001 - process edge: record, never crash the worker
        logger.exception("models_hub.drift.failed campaign=%s", campaign_id)
        DriftPolicy.objects.filter(pk=policy.pk).update(
            evaluation_requested_at=None,
            last_error=f"{type(exc).__name__}: {exc}"[-5000:],
            updated_at=timezone.now(),
        )
        return 0
    DriftPolicy.objects.filter(pk=policy.pk).update(
        evaluation_requested_at=None,
        last_evaluated_at=timezone.now(),
        last_error="",
        updated_at=timezone.now(),
    )
    return len(opened)
