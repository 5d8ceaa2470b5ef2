"""The loop of one campaign, read as rounds: what each policy adapter's round
did, which version serves, and what the loop waits for right now.

A round is one policy adapter (creation order): the snapshot its training
read, the training job(s) of its pipeline, the adapter, its candidate
generation job with the guardrail figures, the labels on its pairs, and the
gate's decision. Reads only (a campaign whose policy or generation settings
were never saved is read with the defaults, nothing is created), in a fixed
number of queries whatever the number of rounds.

Win rates come from ``models_hub.selectors.version_outcomes`` (labels on
held-out prompts only) and ``core.stats.win_rate``, exactly as the promotion
gate reads them (``adapter_gate_evidence``); the outcomes are read once and grouped per pair
here instead of once per adapter. ``win_rate`` resamples a multinomial over
the (at most three) distinct scores of a pair, so its cost does not grow
with the labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Q
from django.utils import timezone

from core import charts
from core.exceptions import NotFound
from core.stats import Outcome, win_rate
from labeling.models import Campaign, Comparison, Preference
from models_hub.models import Adapter, AdapterEvent, GenerationJob, GenerationSettings
from models_hub.selectors import version_outcomes
from models_hub.versions import InvalidVersionKey, VersionKey
from training.models import (
    DatasetSnapshot,
    TrainingJob,
    TrainingPipeline,
    TrainingPolicy,
)

# ---------------------------------------------------------------- the shapes


@dataclass(frozen=True)
class WinRateFigure:
    """The round's human win rate against one opponent. ``rate``, ``lower``
    and ``upper`` (95% bootstrap interval) are None until a label exists."""

    opponent: str
    opponent_label: str
    n: int
    wins: int
    losses: int
    ties: int
    rate: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class SnapshotStep:
    id: int
    created_at: datetime
    labels: int  # non-golden labels up to its last preference (the scheduler's count)
    preference_rows: int  # rows in its preference files (after tie policy)


@dataclass(frozen=True)
class TrainingStep:
    id: int
    method: str
    status: str
    progress_step: int
    progress_total: int
    started_at: datetime | None
    finished_at: datetime | None
    wall_seconds: float | None  # finished: start to finish; running: so far
    error: str


@dataclass(frozen=True)
class GenerationStep:
    id: int
    kind: str
    status: str
    phase: str
    prompts_done: int
    prompts_total: int
    tokens_per_second: float | None
    comparisons_created: int
    guardrails: dict[str, Any]
    passed: bool | None  # None until measured
    violations: list[str]
    error: str


@dataclass(frozen=True)
class GateStep:
    """``decision`` is promoted, refused (by its guardrails), retired, or
    waiting; ``n`` of ``needed`` are the labeled comparisons against
    ``opponent`` (for a promotion: as recorded on its event)."""

    decision: str
    text: str
    reason: str
    override: bool
    at: datetime | None
    opponent: str
    n: int
    needed: int
    rate: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class Round:
    number: int
    adapter_id: int
    adapter_name: str
    adapter_status: str
    method: str
    created_at: datetime
    snapshot: SnapshotStep | None
    training: list[TrainingStep]
    training_wall_seconds: float | None
    generation: GenerationStep | None
    labels: int  # labels on pairs with one of its completions, so far
    gate: GateStep
    vs_base: WinRateFigure
    vs_previous_champion: WinRateFigure
    promoted: bool


@dataclass(frozen=True)
class PendingRound:
    """The newest pipeline when it has produced no policy adapter (yet)."""

    pipeline_id: int
    kind: str
    status: str
    created_at: datetime
    snapshot: SnapshotStep | None
    training: list[TrainingStep]


@dataclass(frozen=True)
class Champion:
    """The version that serves: the policy champion, else the base model."""

    key: str
    label: str
    adapter_id: int | None
    since: datetime | None


@dataclass(frozen=True)
class Waiting:
    """What the loop waits for: ``sentence`` in words and the figures behind
    it. ``state`` is off, training, generating, gate, labels, interval or
    scheduler."""

    state: str
    sentence: str
    policy_enabled: bool
    labels_since_snapshot: int
    min_new_preferences: int
    labels_needed: int
    min_interval_minutes: int
    next_training_at: datetime | None
    open_pairs: int
    training_job_id: int | None = None
    step: int | None = None
    total: int | None = None
    generation_job_id: int | None = None
    prompts_done: int | None = None
    prompts_total: int | None = None
    adapter_id: int | None = None
    comparisons: int | None = None
    comparisons_needed: int | None = None


@dataclass(frozen=True)
class CampaignLoop:
    campaign: Campaign
    rounds: list[Round]
    next_round: PendingRound | None
    champion: Champion
    waiting: Waiting
    bootstrap: GenerationStep | None  # the bootstrap round queued or running
    auto_promote: bool
    gate_min_comparisons: int
    active: bool  # a training or generation job is queued or running
    chart: charts.Chart = field(repr=False)


# ---------------------------------------------------------------- reading


def campaign_loop_get(*, campaign_id: int) -> CampaignLoop:
    """The loop of campaign ``campaign_id``; ``NotFound`` when it does not
    exist. Reviewers see every campaign, so no narrower scope applies."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound("No such campaign.")
    now = timezone.now()
    policy = TrainingPolicy.objects.filter(campaign=campaign).first()
    if policy is None:  # the scheduler creates the default one on its next tick
        policy = TrainingPolicy(campaign=campaign)
    settings_row = GenerationSettings.objects.filter(campaign=campaign).first()
    if settings_row is None:
        settings_row = GenerationSettings(campaign=campaign)

    adapters = list(
        Adapter.objects.filter(campaign=campaign, role=Adapter.Role.POLICY)
        .select_related("base_model")
        .order_by("created_at", "id")
    )
    jobs = list(
        TrainingJob.objects.filter(campaign=campaign)
        .select_related("snapshot")
        .order_by("created_at", "id")
    )
    latest_pipeline = (
        TrainingPipeline.objects.filter(campaign=campaign)
        .select_related("snapshot")
        .order_by("-created_at", "-id")
        .first()
    )
    generation_jobs = list(
        GenerationJob.objects.filter(campaign=campaign)
        .filter(
            Q(kind=GenerationJob.Kind.CANDIDATE)
            | Q(kind=GenerationJob.Kind.BOOTSTRAP, status__in=GenerationJob.ACTIVE)
        )
        .order_by("created_at", "id")
    )
    events = list(
        AdapterEvent.objects.filter(
            adapter__campaign=campaign, adapter__role=Adapter.Role.POLICY
        ).order_by("created_at", "id")
    )
    outcomes = version_outcomes(campaign=campaign, held_out_only=True)
    last_snapshot_id = DatasetSnapshot.objects.filter(campaign=campaign).aggregate(
        last=Max("last_preference_id")
    )["last"]
    snapshots = {j.snapshot_id: j.snapshot for j in jobs}
    if latest_pipeline is not None:
        snapshots[latest_pipeline.snapshot_id] = latest_pipeline.snapshot
    label_counts = _label_counts(
        campaign=campaign, snapshots=snapshots.values(), since=last_snapshot_id or 0
    )
    open_pairs = Comparison.objects.filter(
        campaign=campaign, status=Comparison.Status.OPEN, is_gold=False
    ).count()

    context = _Context(
        now=now,
        adapters=adapters,
        jobs=jobs,
        generation_jobs=generation_jobs,
        events=events,
        outcomes=outcomes,
        label_counts=label_counts,
        settings_row=settings_row,
    )
    rounds = [context.build_round(i + 1, a) for i, a in enumerate(adapters)]
    next_round = context.pending(latest_pipeline)
    bootstrap = next(
        (
            _generation_step(g)
            for g in reversed(generation_jobs)
            if g.kind == GenerationJob.Kind.BOOTSTRAP and g.is_active
        ),
        None,
    )
    waiting = _waiting(
        campaign=campaign,
        policy=policy,
        settings_row=settings_row,
        context=context,
        rounds=rounds,
        labels_since=label_counts["since"],
        open_pairs=open_pairs,
    )
    active = (
        any(j.is_active for j in jobs)
        or any(g.is_active for g in generation_jobs)
        or (next_round is not None and next_round.status == "running")
    )
    return CampaignLoop(
        campaign=campaign,
        rounds=rounds,
        next_round=next_round,
        champion=context.champion(),
        waiting=waiting,
        bootstrap=bootstrap,
        auto_promote=settings_row.auto_promote,
        gate_min_comparisons=max(settings_row.gate_min_comparisons, 1),
        active=active,
        chart=campaign_loop_chart(rounds=rounds),
    )


def campaign_loop_chart(*, rounds: Sequence[Round]) -> charts.Chart:
    """Win rate per round against the base and against the previous champion
    (rounds without a label there have no point)."""
    return charts.chart(
        id="loop-win-rate",
        title="Human win rate per round",
        kind="line",
        x=charts.axis("round"),
        y=charts.axis("win rate", "share of labels won, ties half", lo=0, hi=1),
        series=[
            charts.series(
                label="vs the base model",
                key="vs_base",
                points=[
                    (r.number, r.vs_base.rate)
                    for r in rounds
                    if r.vs_base.rate is not None
                ],
            ),
            charts.series(
                label="vs the previous champion",
                key="vs_previous_champion",
                points=[
                    (r.number, r.vs_previous_champion.rate)
                    for r in rounds
                    if r.vs_previous_champion.rate is not None
                ],
            ),
        ],
    )


# ---------------------------------------------------------------- helpers


def _label_counts(
    *, campaign: Campaign, snapshots: Any, since: int
) -> dict[str | int, int]:
    """In one query: the non-golden labels up to each snapshot's last
    preference (keyed by snapshot id) and those after ``since`` (``"since"``),
    counted as the scheduler counts them (``policy_new_preferences``)."""
    aggregates = {
        f"s{s.pk}": Count("id", filter=Q(id__lte=s.last_preference_id))
        for s in snapshots
    }
    aggregates["since"] = Count("id", filter=Q(id__gt=since))
    row = Preference.objects.filter(
        comparison__campaign=campaign, comparison__prompt__is_golden=False
    ).aggregate(**aggregates)
    counts: dict[str | int, int] = {"since": row.pop("since")}
    counts.update({int(k[1:]): v for k, v in row.items()})
    return counts


def _training_step(job: TrainingJob, now: datetime) -> TrainingStep:
    wall = None
    if job.started_at is not None:
        end = job.finished_at or (now if job.is_active else None)
        if end is not None:
            wall = round((end - job.started_at).total_seconds(), 1)
    return TrainingStep(
        id=job.pk,
        method=job.method,
        status=job.status,
        progress_step=job.progress_step,
        progress_total=job.progress_total,
        started_at=job.started_at,
        finished_at=job.finished_at,
        wall_seconds=wall,
        error=job.error,
    )


def _generation_step(job: GenerationJob) -> GenerationStep:
    report = job.guardrails or {}
    passed = report.get("passed")
    return GenerationStep(
        id=job.pk,
        kind=job.kind,
        status=job.status,
        phase=job.phase,
        prompts_done=job.prompts_done,
        prompts_total=job.prompts_total,
        tokens_per_second=job.tokens_per_second,
        comparisons_created=job.comparisons_created,
        guardrails=report,
        passed=passed if isinstance(passed, bool) else None,
        violations=[str(v) for v in report.get("violations") or []],
        error=job.error,
    )


def _snapshot_step(
    snapshot: DatasetSnapshot | None, label_counts: Mapping[str | int, int]
) -> SnapshotStep | None:
    if snapshot is None:
        return None
    rows = (snapshot.counts or {}).get("preference") or {}
    return SnapshotStep(
        id=snapshot.pk,
        created_at=snapshot.created_at,
        labels=label_counts.get(snapshot.pk, 0),
        preference_rows=sum(v for v in rows.values() if isinstance(v, int)),
    )


class _Context:
    """The rows read once, indexed for building every round in memory."""

    def __init__(
        self,
        *,
        now: datetime,
        adapters: list[Adapter],
        jobs: list[TrainingJob],
        generation_jobs: list[GenerationJob],
        events: list[AdapterEvent],
        outcomes: list[Outcome],
        label_counts: dict[str | int, int],
        settings_row: GenerationSettings,
    ) -> None:
        self.now = now
        self.adapters = {a.pk: a for a in adapters}
        self.jobs = jobs
        self.job_of_adapter = {j.adapter_id: j for j in jobs if j.adapter_id}
        self.jobs_of_pipeline: dict[int, list[TrainingJob]] = defaultdict(list)
        for job in jobs:
            if job.pipeline_id is not None:
                self.jobs_of_pipeline[job.pipeline_id].append(job)
        self.candidate_jobs: dict[int, GenerationJob] = {}
        self.generation_jobs = generation_jobs
        for g in generation_jobs:  # creation order: the newest round wins
            if g.kind == GenerationJob.Kind.CANDIDATE and g.adapter_id is not None:
                self.candidate_jobs[g.adapter_id] = g
        self.events: dict[int, list[AdapterEvent]] = defaultdict(list)
        for event in events:
            self.events[event.adapter_id].append(event)
        self.all_events = events
        self.by_pair: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
        self.labels_of: dict[str, int] = defaultdict(int)
        for o in outcomes:
            self.by_pair[tuple(sorted((o.a, o.b)))].append(o)  # type: ignore[index]
            self.labels_of[o.a] += 1
            self.labels_of[o.b] += 1
        self.label_counts = label_counts
        self.settings_row = settings_row
        self.current_champion = next(
            (a for a in adapters if a.status == Adapter.Status.CHAMPION), None
        )

    # -- versions and win rates

    def label(self, key: str) -> str:
        try:
            parsed = VersionKey.parse(key)
        except InvalidVersionKey:
            return key
        if parsed.is_base:
            for adapter in self.adapters.values():
                if adapter.base_model_id == parsed.pk:
                    return f"the base model ({adapter.base_model.name})"
            return "the base model"
        adapter = self.adapters.get(parsed.pk)
        return adapter.name if adapter is not None else key

    def win_rate(self, key: str, opponent: str) -> WinRateFigure:
        result = win_rate(
            self.by_pair.get(tuple(sorted((key, opponent))), []), key, opponent
        )  # type: ignore[arg-type]
        seen = result.n > 0
        return WinRateFigure(
            opponent=opponent,
            opponent_label=self.label(opponent),
            n=result.n,
            wins=result.wins,
            losses=result.losses,
            ties=result.ties,
            rate=result.rate if seen else None,
            lower=result.lower if seen else None,
            upper=result.upper if seen else None,
        )

    def champion_before(self, moment: datetime) -> int | None:
        """The policy champion just before ``moment``, replayed from the
        promotion and rollback events."""
        champion: int | None = None
        for event in self.all_events:
            if event.created_at >= moment:
                break
            if event.action == AdapterEvent.Action.PROMOTED:
                champion = event.adapter_id
            elif event.action == AdapterEvent.Action.ROLLED_BACK:
                to_base = (event.evidence or {}).get("to") == "base"
                champion = None if to_base else event.adapter_id
        return champion

    def previous_champion_key(self, adapter: Adapter) -> str:
        """What the round paired against: its generation job's opponent, else
        the champion when the adapter was registered, else the base."""
        job = self.candidate_jobs.get(adapter.pk)
        recorded = (job.guardrails or {}).get("opponent_key") if job else None
        if isinstance(recorded, str) and recorded:
            return recorded
        champion = self.champion_before(adapter.created_at)
        if champion is not None and champion != adapter.pk:
            return str(VersionKey.adapter(champion))
        return str(VersionKey.base(adapter.base_model_id))

    def gate_opponent_key(self, adapter: Adapter) -> str:
        """As ``adapter_gate_evidence``: the champion, else the base."""
        champion = self.current_champion
        if champion is not None and champion.pk != adapter.pk:
            return str(VersionKey.adapter(champion.pk))
        return str(VersionKey.base(adapter.base_model_id))

    # -- rounds

    def training_of(
        self, adapter: Adapter
    ) -> tuple[SnapshotStep | None, list[TrainingStep]]:
        job = self.job_of_adapter.get(adapter.pk)
        if job is None:
            return None, []
        round_jobs = (
            self.jobs_of_pipeline[job.pipeline_id]
            if job.pipeline_id is not None
            else [job]
        )
        return (
            _snapshot_step(job.snapshot, self.label_counts),
            [_training_step(j, self.now) for j in round_jobs],
        )

    def gate(
        self, adapter: Adapter, generation: GenerationStep | None
    ) -> tuple[GateStep, WinRateFigure]:
        events = self.events.get(adapter.pk, [])
        needed = max(self.settings_row.gate_min_comparisons, 1)

        def last(action: str) -> AdapterEvent | None:
            return next((e for e in reversed(events) if e.action == action), None)

        promoted = last(AdapterEvent.Action.PROMOTED)
        if promoted is not None:
            evidence = promoted.evidence or {}
            opponent = str(evidence.get("opponent", ""))
            text = "promoted"
            if promoted.override:
                text += f" by override ({promoted.reason})"
            elif promoted.reason:
                text += f" ({promoted.reason})"
            if evidence.get("n"):
                text += (
                    f": win rate {evidence['rate']:.2f} against "
                    f"{self.label(opponent)} over {evidence['n']} labels"
                )
            if adapter.status == Adapter.Status.RETIRED:
                text += "; since rolled back and retired"
            elif adapter.status == Adapter.Status.CANDIDATE:
                text += "; since replaced"
            figure = self.win_rate(
                str(VersionKey.adapter(adapter.pk)),
                opponent or self.gate_opponent_key(adapter),
            )
            return (
                GateStep(
                    decision="promoted",
                    text=text,
                    reason=promoted.reason,
                    override=promoted.override,
                    at=promoted.created_at,
                    opponent=opponent,
                    n=int(evidence.get("n") or 0),
                    needed=needed,
                    rate=evidence.get("rate"),
                    lower=evidence.get("lower"),
                    upper=evidence.get("upper"),
                ),
                figure,
            )
        opponent = self.gate_opponent_key(adapter)
        figure = self.win_rate(str(VersionKey.adapter(adapter.pk)), opponent)
        for action, decision, prefix in (
            (AdapterEvent.Action.REFUSED, "refused", "refused by its guardrails"),
            (AdapterEvent.Action.RETIRED, "retired", "retired"),
        ):
            event = last(action)
            if event is not None:
                return (
                    GateStep(
                        decision=decision,
                        text=f"{prefix}: {event.reason}" if event.reason else prefix,
                        reason=event.reason,
                        override=False,
                        at=event.created_at,
                        opponent=opponent,
                        n=figure.n,
                        needed=needed,
                        rate=figure.rate,
                        lower=figure.lower,
                        upper=figure.upper,
                    ),
                    figure,
                )
        if adapter.status == Adapter.Status.RETIRED:
            text = "retired"
            decision = "retired"
        else:
            decision = "waiting"
            text = self.waiting_text(generation, figure, needed)
        return (
            GateStep(
                decision=decision,
                text=text,
                reason="",
                override=False,
                at=None,
                opponent=opponent,
                n=figure.n,
                needed=needed,
                rate=figure.rate,
                lower=figure.lower,
                upper=figure.upper,
            ),
            figure,
        )

    def waiting_text(
        self, generation: GenerationStep | None, figure: WinRateFigure, needed: int
    ) -> str:
        if generation is None:
            if not self.settings_row.enabled:
                return (
                    "waiting: no generation round (generation is off for this campaign)"
                )
            return "waiting for its generation round"
        if generation.status in GenerationJob.ACTIVE:
            return "waiting for its generation round to finish"
        if generation.status != GenerationJob.Status.SUCCEEDED:
            return f"its generation round {generation.status}: no pairs to compare"
        against = f"against {figure.opponent_label}"
        if figure.n < needed:
            return f"waiting: {figure.n} of {needed} held-out comparisons {against}"
        assert figure.lower is not None and figure.upper is not None
        if figure.lower > 0.5:
            if self.settings_row.auto_promote:
                return (
                    f"passes the gate {against}: promoted at the next promotion check"
                )
            return f"passes the gate {against}: waiting for an admin to promote it"
        if figure.upper < 0.5:
            return f"loses {against} (upper 95% bound {figure.upper:.2f})"
        return (
            f"undecided {against}: win rate {figure.rate:.2f} "
            f"(95% {figure.lower:.2f}–{figure.upper:.2f}) over {figure.n} labels"
        )

    def build_round(self, number: int, adapter: Adapter) -> Round:
        snapshot, training = self.training_of(adapter)
        walls = [t.wall_seconds for t in training if t.wall_seconds is not None]
        job = self.candidate_jobs.get(adapter.pk)
        generation = _generation_step(job) if job is not None else None
        gate, _ = self.gate(adapter, generation)
        key = str(VersionKey.adapter(adapter.pk))
        previous = self.previous_champion_key(adapter)
        return Round(
            number=number,
            adapter_id=adapter.pk,
            adapter_name=adapter.name,
            adapter_status=adapter.status,
            method=adapter.method,
            created_at=adapter.created_at,
            snapshot=snapshot,
            training=training,
            training_wall_seconds=round(sum(walls), 1) if walls else None,
            generation=generation,
            labels=self.labels_of.get(key, 0),
            gate=gate,
            vs_base=self.win_rate(key, str(VersionKey.base(adapter.base_model_id))),
            vs_previous_champion=self.win_rate(key, previous),
            promoted=gate.decision == "promoted",
        )

    def pending(self, pipeline: TrainingPipeline | None) -> PendingRound | None:
        if pipeline is None:
            return None
        jobs = self.jobs_of_pipeline.get(pipeline.pk, [])
        if any(j.adapter_id in self.adapters for j in jobs if j.adapter_id is not None):
            return None
        return PendingRound(
            pipeline_id=pipeline.pk,
            kind=pipeline.kind,
            status=pipeline.status,
            created_at=pipeline.created_at,
            snapshot=_snapshot_step(pipeline.snapshot, self.label_counts),
            training=[_training_step(j, self.now) for j in jobs],
        )

    def champion(self) -> Champion:
        adapter = self.current_champion
        if adapter is None:
            base = next(iter(self.adapters.values()), None)
            return Champion(
                key=str(VersionKey.base(base.base_model_id)) if base else "",
                label=self.label(str(VersionKey.base(base.base_model_id)))
                if base
                else "the base model",
                adapter_id=None,
                since=None,
            )
        since = next(
            (
                e.created_at
                for e in reversed(self.events.get(adapter.pk, []))
                if e.action
                in (AdapterEvent.Action.PROMOTED, AdapterEvent.Action.ROLLED_BACK)
            ),
            None,
        )
        return Champion(
            key=str(VersionKey.adapter(adapter.pk)),
            label=adapter.name,
            adapter_id=adapter.pk,
            since=since,
        )


def _waiting(
    *,
    campaign: Campaign,
    policy: TrainingPolicy,
    settings_row: GenerationSettings,
    context: _Context,
    rounds: Sequence[Round],
    labels_since: int,
    open_pairs: int,
) -> Waiting:
    """The one thing the loop waits for, most immediate first: a training
    job, a candidate's generation round, a candidate's comparisons, then the
    scheduler's thresholds (new labels, the minimum interval)."""
    needed_labels = max(policy.min_new_preferences - labels_since, 0)
    next_at = (
        policy.last_triggered_at + timedelta(minutes=policy.min_interval_minutes)
        if policy.last_triggered_at is not None
        else None
    )
    base = {
        "policy_enabled": policy.enabled,
        "labels_since_snapshot": labels_since,
        "min_new_preferences": policy.min_new_preferences,
        "labels_needed": needed_labels,
        "min_interval_minutes": policy.min_interval_minutes,
        "next_training_at": next_at if next_at and next_at > context.now else None,
        "open_pairs": open_pairs,
    }
    if campaign.status != Campaign.Status.ACTIVE:
        return Waiting(
            state="off",
            sentence=f"loop off: the campaign is {campaign.get_status_display()}",
            **base,
        )
    training = [j for j in context.jobs if j.is_active]
    if training:
        job = training[-1]
        if job.status == TrainingJob.Status.QUEUED:
            sentence = f"training queued: {job.get_method_display()} job {job.pk} waits for the GPU worker"
        elif job.progress_total:
            sentence = (
                f"training step {job.progress_step} of {job.progress_total} "
                f"({job.get_method_display()} job {job.pk})"
            )
        else:
            sentence = f"training: {job.get_method_display()} job {job.pk} is starting"
        return Waiting(
            state="training",
            sentence=sentence,
            training_job_id=job.pk,
            step=job.progress_step,
            total=job.progress_total,
            **base,
        )
    generating = [
        g
        for g in context.generation_jobs
        if g.kind == GenerationJob.Kind.CANDIDATE and g.is_active
    ]
    if generating:
        g = generating[-1]
        adapter = context.adapters.get(g.adapter_id or 0)
        name = adapter.name if adapter is not None else "the candidate"
        if g.status == GenerationJob.Status.QUEUED:
            sentence = f"{name}'s generation round is queued (job {g.pk})"
        else:
            sentence = (
                f"generating {g.prompts_done} of {g.prompts_total or '?'} prompts "
                f"for {name}"
            )
        return Waiting(
            state="generating",
            sentence=sentence,
            generation_job_id=g.pk,
            prompts_done=g.prompts_done,
            prompts_total=g.prompts_total,
            adapter_id=g.adapter_id,
            **base,
        )
    for r in reversed(rounds):
        if r.gate.decision != "waiting" or r.generation is None:
            continue
        if r.generation.status != GenerationJob.Status.SUCCEEDED:
            continue
        gate = r.gate
        against = (
            "the champion" if context.current_champion is not None else "the base model"
        )
        if gate.n < gate.needed:
            sentence = (
                f"waiting for {gate.needed - gate.n} more held-out comparisons of "
                f"{r.adapter_name} vs {against}"
            )
        elif gate.upper is not None and gate.upper < 0.5:
            if not settings_row.retire_losers:
                continue
            sentence = f"retiring {r.adapter_name} at the next promotion check: it loses to {against}"
        elif gate.lower is not None and gate.lower > 0.5:
            sentence = (
                f"promoting {r.adapter_name} at the next promotion check"
                if settings_row.auto_promote
                else f"waiting for an admin to promote {r.adapter_name} (automatic promotion is off)"
            )
        else:
            sentence = (
                f"waiting for more held-out comparisons of {r.adapter_name} vs {against}: "
                f"win rate {gate.rate:.2f} (95% {gate.lower:.2f}–{gate.upper:.2f}) "
                f"over {gate.n} is not decisive yet"
            )
        return Waiting(
            state="gate",
            sentence=sentence,
            adapter_id=r.adapter_id,
            comparisons=gate.n,
            comparisons_needed=gate.needed,
            **base,
        )
    if not policy.enabled:
        return Waiting(
            state="off", sentence="loop off: training policy disabled", **base
        )
    if needed_labels > 0:
        sentence = f"{needed_labels} more labels before the next training"
        if open_pairs == 0:
            sentence += " (no pair is open for labeling)"
        return Waiting(state="labels", sentence=sentence, **base)
    if base["next_training_at"] is not None:
        minutes = -(-(next_at - context.now).total_seconds() // 60)  # type: ignore[operator]
        return Waiting(
            state="interval",
            sentence=(
                f"next training in {int(minutes)} min (at least "
                f"{policy.min_interval_minutes} min between trainings)"
            ),
            **base,
        )
    return Waiting(
        state="scheduler",
        sentence=(
            f"training starts at the scheduler's next check ({labels_since} new labels)"
        ),
        **base,
    )
