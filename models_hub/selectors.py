"""Reads for the model hub: versions, human outcomes between them, the
leaderboard and side-by-side comparisons."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from core import charts
from core.diff import word_diff
from core.exceptions import NotFound
from core.models import Report
from core.reports import CachedReport, report_for_page
from core.stats import (
    NO_WIN_RATE,
    Outcome,
    WinRate,
    bootstrap_bradley_terry,
    win_rate,
    win_rate_matrix,
)
from labeling.models import Campaign, Completion, Lease, Preference, Prompt
from models_hub.models import (
    Adapter,
    BaseModelVersion,
    Deployment,
    DeploymentChange,
    GenerationJob,
    ServedFeedback,
    ServedResponse,
)
from models_hub.versions import (
    SameVersion,
    VersionKey,
    version_names,
    version_pair_parse,
)

RESULT = {
    Preference.Choice.A: 1.0,
    Preference.Choice.B: 0.0,
    Preference.Choice.TIE: 0.5,
    Preference.Choice.BOTH_BAD: 0.5,
}


def version_key(*, adapter_id: int | None, base_model_id: int | None) -> str | None:
    """The formatted key of the version that wrote a completion (see
    ``VersionKey.of``); a string because leaderboard rows and outcomes are
    keyed by it."""
    key = VersionKey.of(adapter_id=adapter_id, base_model_id=base_model_id)
    return str(key) if key is not None else None


@dataclass(frozen=True)
class Version:
    key: str
    label: str
    adapter: Adapter | None
    base_model: BaseModelVersion | None

    @classmethod
    def of_adapter(cls, adapter: Adapter) -> Version:
        return cls(
            str(VersionKey.adapter(adapter.pk)),
            f"{adapter.name} ({adapter.get_status_display()})",
            adapter,
            adapter.base_model,
        )

    @classmethod
    def of_base(cls, base: BaseModelVersion) -> Version:
        return cls(str(VersionKey.base(base.pk)), f"{base.name} (base, v0)", None, base)


def version_get(*, key: VersionKey) -> Version:
    """The version ``key`` names; ``NotFound`` when its row does not exist.
    Parse user input with ``VersionKey.parse`` first."""
    if key.kind == "adapter":
        adapter = (
            Adapter.objects.select_related("base_model", "campaign")
            .filter(pk=key.pk)
            .first()
        )
        if adapter is not None:
            return Version.of_adapter(adapter)
    else:
        base = BaseModelVersion.objects.filter(pk=key.pk).first()
        if base is not None:
            return Version.of_base(base)
    raise NotFound(f"There is no model version {str(key)!r}.")


def version_pair_get(*, left: object, right: object) -> tuple[Version, Version]:
    """Two different, existing versions from raw keys (query or form values).
    Raises ``InvalidVersionKey`` or ``SameVersion`` (400), ``NotFound`` (404)."""
    left_key, right_key = version_pair_parse(left, right)
    return version_get(key=left_key), version_get(key=right_key)


def versions_for_campaign(*, campaign: Campaign) -> list[Version]:
    adapters = Adapter.objects.filter(
        campaign=campaign, role=Adapter.Role.POLICY
    ).select_related("base_model")
    bases = BaseModelVersion.objects.filter(
        pk__in={a.base_model_id for a in adapters}
        | set(
            Completion.objects.filter(
                prompt__campaign=campaign,
                adapter__isnull=True,
                base_model__isnull=False,
            )
            .values_list("base_model_id", flat=True)
            .distinct()
        )
    )
    versions = [Version.of_base(b) for b in bases]
    versions += [Version.of_adapter(a) for a in adapters.order_by("version")]
    return versions


def campaign_reward_model(*, campaign: Campaign) -> Adapter | None:
    """The campaign's reward model: its reward champion, else its newest
    reward adapter that is not retired; None when it has none. Generation
    scores with it, PPO/RLOO train against it, active selection ranks with it."""
    return (
        Adapter.objects.filter(campaign=campaign, role=Adapter.Role.REWARD)
        .exclude(status=Adapter.Status.RETIRED)
        # "champion" sorts before "candidate" descending
        .order_by("-status", "-version")
        .first()
    )


def review_blind_lease_live(
    *, campaign: Campaign, reviewer: AbstractBaseUser
) -> Lease | None:
    """The reviewer's unexpired blind-review lease in this campaign (on a
    golden prompt), if any. Reads only: a new lease is taken by POST."""
    return (
        Lease.objects.filter(
            annotator=reviewer,
            campaign=campaign,
            status=Lease.Status.ACTIVE,
            expires_at__gt=timezone.now(),
            comparison__prompt__is_golden=True,
        )
        .order_by("id")
        .first()
    )


def held_out_prompts(prefix: str = "") -> Q:
    """Prompts no training run sees: the **test** split and the golden set
    (snapshots write only train and validation, never golden prompts).
    ``prefix`` is the path to the prompt, e.g. ``"comparison__prompt__"``."""
    return Q(**{f"{prefix}split": Prompt.Split.TEST}) | Q(
        **{f"{prefix}is_golden": True}
    )


def version_outcomes(
    *, campaign: Campaign, held_out_only: bool = False
) -> list[Outcome]:
    """Every human label between two model-written completions, as outcomes
    between versions (ties and "both bad" count half each way). With
    ``held_out_only``, only labels on held-out prompts (``held_out_prompts``):
    what the promotion gate decides on, so no label it counts comes from a
    prompt that trained the model.

    A ranking's implied preferences are not independent labels: those
    between the same two versions count as one outcome of the ranking, their
    mean score (a ranking of two answers a side that puts the candidate's
    first is one win, not four), so intervals and the gate's count see the
    rankings as the units they are.

    Two two-table reads joined here, not one four-table join: on tables whose
    statistics say "empty" (freshly created, or analysed before a bulk load)
    PostgreSQL planned that join as nested loops filtering whole index scans,
    minutes for 1,200 labels; each read below stays linear whatever the plan.
    """
    labels = Preference.objects.filter(comparison__campaign=campaign)
    if held_out_only:
        labels = labels.filter(held_out_prompts("comparison__prompt__"))
    labels = labels.values_list(
        "choice",
        "comparison__completion_a_id",
        "comparison__completion_b_id",
        "ranking_id",
    )
    versions = {
        pk: version_key(adapter_id=adapter_id, base_model_id=base_model_id)
        for pk, adapter_id, base_model_id in Completion.objects.filter(
            prompt__campaign=campaign, origin=Completion.Origin.MODEL
        ).values_list("pk", "adapter_id", "base_model_id")
    }
    outcomes = []
    ranked: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for choice, a_id, b_id, ranking_id in labels:
        a, b = versions.get(a_id), versions.get(b_id)
        if not (a and b and a != b):
            continue
        if ranking_id is None:
            outcomes.append(Outcome(a, b, RESULT[choice]))
        elif a < b:
            ranked[(ranking_id, a, b)].append(RESULT[choice])
        else:
            ranked[(ranking_id, b, a)].append(1.0 - RESULT[choice])
    for (_, a, b), scores in ranked.items():
        outcomes.append(Outcome(a, b, sum(scores) / len(scores)))
    return outcomes


def campaign_leaderboard(
    *,
    campaign: Campaign,
    n_boot: int = 200,
    outcomes: Sequence[Outcome] | None = None,
) -> dict[str, Any]:
    """Bradley-Terry strengths with bootstrap intervals and the win-rate
    matrix. Resamples: only the reports refresh task calls it (pages read the
    cached ``leaderboard_report``). ``outcomes`` defaults to
    ``version_outcomes(campaign=campaign)``."""
    if outcomes is None:
        outcomes = version_outcomes(campaign=campaign)
    versions = {v.key: v for v in versions_for_campaign(campaign=campaign)}
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.a] = counts.get(o.a, 0) + 1
        counts[o.b] = counts.get(o.b, 0) + 1
    anchor = next(
        (k for k in versions if VersionKey.parse(k).is_base and k in counts), None
    )
    strengths = (
        bootstrap_bradley_terry(outcomes, n_boot=n_boot, anchor=anchor)
        if outcomes
        else {}
    )
    rows = [
        {
            "key": key,
            "label": versions[key].label if key in versions else key,
            "adapter": versions[key].adapter if key in versions else None,
            "strength": est,
            "lower": lo,
            "upper": hi,
            "labels": counts.get(key, 0),
        }
        for key, (est, lo, hi) in strengths.items()
    ]
    rows.sort(key=lambda r: -r["strength"])
    matrix = win_rate_matrix(outcomes)
    keys = [r["key"] for r in rows]
    matrix_rows = [
        (k, [matrix.get(k, {}).get(other) if other != k else None for other in keys])
        for k in keys
    ]
    return {
        "rows": rows,
        "matrix": matrix,
        "matrix_rows": matrix_rows,
        "keys": keys,
        "labels": len(outcomes),
        "anchor": anchor,
    }


def adapter_gate_evidence(*, adapter: Adapter) -> dict[str, Any]:
    """Human win rate of ``adapter`` against what it would replace: its
    campaign's champion for the role, else the base model, on held-out
    prompts only (``version_outcomes(held_out_only=True)``). The promotion
    gate reads ``n`` and the 95% bootstrap interval (``lower``/``upper``)."""
    if adapter.campaign is None:
        return {}
    champion = (
        Adapter.objects.filter(
            campaign=adapter.campaign, role=adapter.role, status=Adapter.Status.CHAMPION
        )
        .exclude(pk=adapter.pk)
        .first()
    )
    opponent = (
        VersionKey.adapter(champion.pk)
        if champion is not None
        else VersionKey.base(adapter.base_model_id)
    )
    result = win_rate(
        version_outcomes(campaign=adapter.campaign, held_out_only=True),
        str(VersionKey.adapter(adapter.pk)),
        str(opponent),
    )
    return {
        "opponent": str(opponent),
        "champion": champion.pk if champion is not None else None,
        "n": result.n,
        "rate": result.rate,
        "lower": result.lower,
        "upper": result.upper,
        "wins": result.wins,
        "losses": result.losses,
        "ties": result.ties,
        "prompts": "held-out",
    }


def adapter_list(*, campaign: Campaign | None = None) -> QuerySet[Adapter]:
    qs = Adapter.objects.select_related("campaign", "base_model", "job").order_by(
        "campaign_id", "role", "-version"
    )
    return qs.filter(campaign=campaign) if campaign is not None else qs


def version_latest_completion(prompt: Prompt, version: Version) -> Completion | None:
    """The newest output of ``version`` on ``prompt``, if any."""
    qs = Completion.objects.filter(prompt=prompt, origin=Completion.Origin.MODEL)
    if version.adapter is not None:
        qs = qs.filter(adapter=version.adapter)
    else:
        qs = qs.filter(adapter__isnull=True, base_model=version.base_model)
    return qs.order_by("-created_at").first()


def side_by_side(
    *, campaign: Campaign, left: Version, right: Version
) -> dict[str, Any]:
    """Both versions' outputs on the campaign's golden prompts, with a word
    diff, reward scores when recorded, and the human win rate between them.
    Raises ``SameVersion`` when both sides are one version."""
    if left.key == right.key:
        raise SameVersion(f"Pick two different versions: both sides are {left.key}.")
    rows = []
    missing = 0
    for prompt in Prompt.objects.filter(campaign=campaign, is_golden=True).order_by(
        "id"
    ):
        lc, rc = (
            version_latest_completion(prompt, left),
            version_latest_completion(prompt, right),
        )
        if lc is None or rc is None:
            missing += 1
        diff = word_diff(lc.text, rc.text) if lc and rc else (None, None)
        rows.append(
            {
                "prompt": prompt,
                "left": lc,
                "right": rc,
                "left_diff": diff[0],
                "right_diff": diff[1],
            }
        )
    rate, as_of = leaderboard_win_rate_cached(
        campaign=campaign, a=left.key, b=right.key
    )
    return {"rows": rows, "missing": missing, "win_rate": rate, "win_rate_as_of": as_of}


def leaderboard_cached(*, campaign: Campaign) -> CachedReport:
    """The cached leaderboard report (``leaderboard_report`` in
    ``models_hub.services.reports``); requests a refresh when it is missing
    or stale. Never fits or resamples."""
    return report_for_page(campaign_id=campaign.pk, kind=Report.Kind.LEADERBOARD)


def leaderboard_win_rate_cached(
    *, campaign: Campaign, a: str, b: str
) -> tuple[WinRate, datetime | None]:
    """``a``'s win rate against ``b`` with its bootstrap interval, from the
    cached leaderboard report (no resampling here), and when it was
    computed; ``(NO_WIN_RATE, None)`` before the first refresh."""
    report = leaderboard_cached(campaign=campaign)
    if report.payload is None:
        return NO_WIN_RATE, None
    found = report.payload.get("win_rates", {}).get(a, {}).get(b)
    return (WinRate(**found) if found else NO_WIN_RATE), report.computed_at


def leaderboard_named(*, board: dict[str, Any]) -> dict[str, Any]:
    """The cached leaderboard with every version called by its current name
    (``version_names``: "base: SmolLM2-135M-Instruct", "dpo-v3") in its
    rows, matrix headers and gate table, instead of the ``base:1`` /
    ``adapter:3`` keys it is computed over. The keys stay in ``key``."""
    keys = {r["key"] for r in board.get("rows", [])}
    keys |= set(board.get("keys", []))
    keys |= {g["key"] for g in board.get("against_champion", [])}
    names = version_names(keys=keys)
    return {
        **board,
        "rows": [{**r, "label": names[r["key"]]} for r in board.get("rows", [])],
        "key_names": [names[k] for k in board.get("keys", [])],
        "matrix_rows": [(names[k], cells) for k, cells in board.get("matrix_rows", [])],
        "against_champion": [
            {**g, "label": names[g["key"]]} for g in board.get("against_champion", [])
        ],
    }


def leaderboard_chart(board: dict[str, Any]) -> charts.Chart:
    """Each version's strength with its bootstrap 95% interval, best first."""
    unit = "log-odds, base model = 0" if board.get("anchor") else "log-odds"
    return charts.chart(
        id="leaderboard",
        title="Strength with 95% interval",
        kind="interval",
        x=charts.axis("Bradley–Terry strength", unit),
        y=charts.axis("model version"),
        series=[
            charts.series(
                label="strength",
                points=[
                    (r["label"], r["strength"], r["lower"], r["upper"])
                    for r in board["rows"]
                ],
            )
        ],
    )


# ---------------------------------------------------------------- generation jobs

# A running job's worker beats every few seconds; silence this long is worth a
# warning on its page well before the sweeper fails the job.
GENERATION_HEARTBEAT_STALE_SECONDS = 30

# Each guardrail measure: its key in ``GuardrailSummary.as_dict()``, its name
# on the page, and how a value is written.
GUARDRAIL_MEASURES: tuple[tuple[str, str, str], ...] = (
    ("n", "outputs compared", "{:.0f}"),
    ("degenerate", "degenerate (empty or looping)", "{:.1%}"),
    ("repetition_mean", "repetition (mean)", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("empty", "empty", "{:.1%}"),
    ("truncated", "cut at max new tokens", "{:.1%}"),
    ("length_mean", "length, mean (characters)", "{:.0f}"),
    ("length_median", "length, median (characters)", "{:.0f}"),
    ("length_p90", "length, 90th percentile (characters)", "{:.0f}"),
    ("nll_under_base", "NLL under the base (nats/token)", "{:.2f}"),
)


@dataclass(frozen=True)
class GuardrailRow:
    measure: str
    candidate: str
    opponent: str


@dataclass(frozen=True)
class GenerationJobSummary:
    """What a generation job's pages show besides the row itself."""

    job: GenerationJob
    version: str
    eta_minutes: int | None
    heartbeat_stale: bool
    can_cancel: bool
    guardrails: list[GuardrailRow]
    opponent: str
    violations: list[str]


def generation_job_list(*, campaign: Campaign | None = None) -> QuerySet[GenerationJob]:
    """Generation jobs, newest first; only ``campaign``'s when given."""
    qs = GenerationJob.objects.select_related("campaign", "adapter").order_by(
        "-created_at", "-id"
    )
    return qs.filter(campaign=campaign) if campaign is not None else qs


def generation_job_get(*, job_id: int) -> GenerationJob:
    """The job ``job_id``; ``NotFound`` when there is none. Jobs are read by
    reviewers, who see every campaign, so no narrower scope applies."""
    job = generation_job_list().filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such generation job.")
    return job


def generation_job_heartbeat_stale(
    *, job: GenerationJob, now: datetime | None = None
) -> bool:
    """Whether a running job's last heartbeat (else its start) is older than
    ``GENERATION_HEARTBEAT_STALE_SECONDS``: its worker may be gone."""
    if job.status != GenerationJob.Status.RUNNING:
        return False
    last = job.heartbeat_at or job.started_at or job.updated_at
    now = now or timezone.now()
    return (now - last).total_seconds() > GENERATION_HEARTBEAT_STALE_SECONDS


def _generation_version_label(job: GenerationJob) -> str:
    if job.adapter is not None:
        return job.adapter.name
    if job.versions:
        return " and ".join(job.versions)
    return "the champion, else the base model"


def _guardrail_value(figures: dict[str, Any], key: str, template: str) -> str:
    value = figures.get(key)
    return "—" if value is None else template.format(value)


def generation_job_summary(
    *, job: GenerationJob, now: datetime | None = None
) -> GenerationJobSummary:
    """The job's version in words, its ETA in whole minutes (rounded up;
    only while running), whether its heartbeat is stale, whether it can be
    cancelled, and its guardrails table (candidate against opponent, empty
    until measured) with the violations found."""
    report = job.guardrails or {}
    candidate, opponent = report.get("candidate"), report.get("opponent")
    rows = (
        [
            GuardrailRow(
                measure=label,
                candidate=_guardrail_value(candidate, key, template),
                opponent=_guardrail_value(opponent, key, template),
            )
            for key, label, template in GUARDRAIL_MEASURES
        ]
        if isinstance(candidate, dict) and isinstance(opponent, dict)
        else []
    )
    running = job.status == GenerationJob.Status.RUNNING
    return GenerationJobSummary(
        job=job,
        version=_generation_version_label(job),
        eta_minutes=math.ceil(job.eta_seconds / 60)
        if running and job.eta_seconds is not None
        else None,
        heartbeat_stale=generation_job_heartbeat_stale(job=job, now=now),
        can_cancel=job.is_active and not job.cancel_requested,
        guardrails=rows,
        opponent=str(report.get("opponent_key") or "the opponent"),
        violations=[str(v) for v in report.get("violations") or []],
    )


# ---------------------------------------------------------------- deployments


def campaign_alias(campaign: Campaign) -> str:
    """The model name applications send to reach the campaign's deployment."""
    return f"campaign-{campaign.pk}/champion"


def deployment_for_campaign(*, campaign: Campaign) -> Deployment:
    """The campaign's deployment; an unsaved champion-only one while it has
    none (reads never create rows)."""
    deployment = (
        Deployment.objects.select_related("candidate", "updated_by")
        .filter(campaign=campaign)
        .first()
    )
    return deployment if deployment is not None else Deployment(campaign=campaign)


def deployment_change_list(*, campaign: Campaign) -> QuerySet[DeploymentChange]:
    """The campaign's deployment changes, newest first."""
    return (
        DeploymentChange.objects.filter(deployment__campaign=campaign)
        .select_related("actor")
        .order_by("-created_at", "-id")
    )


def deployment_rollback_target(deployment: Deployment) -> DeploymentChange | None:
    """The change a rollback undoes: the newest change not yet undone.

    Changes are read newest first as an undo stack: each ``rolled_back``
    change has undone one earlier change, so it is skipped together with
    the newest change before it that is not itself a rollback. A second
    rollback therefore undoes the change before the one the first undid."""
    if deployment.pk is None:
        return None
    pending_undos = 0
    for change in deployment.changes.order_by("-created_at", "-id"):
        if change.action == DeploymentChange.Action.ROLLED_BACK:
            pending_undos += 1
        elif pending_undos:
            pending_undos -= 1
        else:
            return change
    return None


def deployment_candidate_options(*, campaign: Campaign) -> QuerySet[Adapter]:
    """Policy candidates of the campaign that are switched on for serving:
    what the deployment form offers (the service still checks the base)."""
    return Adapter.objects.filter(
        campaign=campaign,
        role=Adapter.Role.POLICY,
        status=Adapter.Status.CANDIDATE,
        serving_enabled=True,
    ).order_by("-version")


@dataclass(frozen=True)
class ServedCount:
    """How many responses one arm's version gave through the alias."""

    arm: str
    served_model: str
    adapter_id: int | None
    label: str
    last_24h: int
    last_7d: int


@dataclass(frozen=True)
class VersionFeedback:
    """Callers' verdicts on one version's responses."""

    served_model: str
    adapter_id: int | None
    label: str
    up: int
    down: int
    prefer_other: int


@dataclass(frozen=True)
class DeploymentSummary:
    deployment: Deployment
    alias: str
    champion: Adapter | None
    served: list[ServedCount]
    feedback: list[VersionFeedback]
    changes: list[DeploymentChange]
    rollback_target: DeploymentChange | None


def _version_labels(adapter_ids: set[int | None]) -> dict[int | None, str]:
    labels: dict[int | None, str] = {None: "base model"}
    for adapter in Adapter.objects.filter(pk__in={i for i in adapter_ids if i}):
        labels[adapter.pk] = str(adapter)
    return labels


def served_counts(
    *, campaign: Campaign, now: datetime | None = None
) -> list[ServedCount]:
    """Responses the campaign's alias gave over the last 24 hours and 7
    days, per arm and version (champion first)."""
    now = now or timezone.now()
    rows = list(
        ServedResponse.objects.filter(
            campaign=campaign, created_at__gte=now - timedelta(days=7)
        )
        .values("arm", "served_model", "adapter_id")
        .annotate(
            last_7d=Count("id"),
            last_24h=Count("id", filter=Q(created_at__gte=now - timedelta(days=1))),
        )
        .order_by("arm", "served_model")
    )
    labels = _version_labels({r["adapter_id"] for r in rows})
    return [
        ServedCount(
            arm=r["arm"],
            served_model=r["served_model"],
            adapter_id=r["adapter_id"],
            label=labels.get(r["adapter_id"], r["served_model"]),
            last_24h=r["last_24h"],
            last_7d=r["last_7d"],
        )
        for r in rows
    ]


def served_feedback_counts(*, campaign: Campaign) -> list[VersionFeedback]:
    """Callers' verdicts per version, over responses given through the
    campaign's alias or by one of its adapters named directly."""
    rating = ServedFeedback.Rating
    rows = list(
        ServedFeedback.objects.filter(
            Q(response__campaign=campaign) | Q(response__adapter__campaign=campaign)
        )
        .values("response__served_model", "response__adapter_id")
        .annotate(
            up=Count("id", filter=Q(rating=rating.UP)),
            down=Count("id", filter=Q(rating=rating.DOWN)),
            prefer_other=Count("id", filter=Q(rating=rating.PREFER_OTHER)),
        )
        .order_by("response__served_model")
    )
    labels = _version_labels({r["response__adapter_id"] for r in rows})
    return [
        VersionFeedback(
            served_model=r["response__served_model"],
            adapter_id=r["response__adapter_id"],
            label=labels.get(r["response__adapter_id"], r["response__served_model"]),
            up=r["up"],
            down=r["down"],
            prefer_other=r["prefer_other"],
        )
        for r in rows
    ]


def deployment_summary(
    *, campaign: Campaign, now: datetime | None = None, changes: int = 10
) -> DeploymentSummary:
    """What the campaign's alias serves now, how much each arm answered,
    callers' feedback per version, the ``changes`` newest changes and the
    change a rollback would undo (None: nothing to roll back)."""
    deployment = deployment_for_campaign(campaign=campaign)
    return DeploymentSummary(
        deployment=deployment,
        alias=campaign_alias(campaign),
        champion=Adapter.objects.select_related("base_model")
        .filter(
            campaign=campaign,
            role=Adapter.Role.POLICY,
            status=Adapter.Status.CHAMPION,
        )
        .first(),
        served=served_counts(campaign=campaign, now=now),
        feedback=served_feedback_counts(campaign=campaign),
        changes=list(deployment_change_list(campaign=campaign)[:changes]),
        rollback_target=deployment_rollback_target(deployment),
    )


def served_response_list(
    *, campaign: Campaign | None = None, adapter: Adapter | None = None
) -> QuerySet[ServedResponse]:
    """Served responses, newest first, optionally of one campaign's alias
    or one adapter."""
    qs = ServedResponse.objects.select_related("adapter", "caller").order_by(
        "-created_at", "-id"
    )
    if campaign is not None:
        qs = qs.filter(campaign=campaign)
    if adapter is not None:
        qs = qs.filter(adapter=adapter)
    return qs
