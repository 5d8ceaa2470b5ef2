"""Generation rounds, each a visible job: the loop's writing half.

- **bootstrap**: prompts that have no open pair are answered by the champion
  (else the base), ``samples_per_prompt`` times with a seed per sample;
  distinct samples become pairs (the reward model's best against its worst
  when there is one), identical texts never. The beat keeps each campaign at
  or above its low-water mark of open pairs (``bootstrap_tick``).
- **candidate**: a new policy adapter and its opponent (the champion, else
  the base) answer the golden prompts and a sample of the pool; their
  guardrails are measured (repetition, empty and cut outputs, length, drift
  from the base) and, when they pass, candidate-vs-opponent pairs are queued.
  A candidate beyond its campaign's limits is refused and retired, with the
  reasons recorded.
- **review**: golden-prompt outputs of two versions for side-by-side review.

In a rank campaign (``Campaign.Mode.RANK``) both rounds write ranked
comparisons instead of pairs (``comparison_ranked_queue``): a bootstrap
answers each prompt ``samples_per_prompt`` times clamped to 3..9 and ranks
its distinct samples; a candidate round answers every prompt at least twice
per side and ranks the candidate's and the opponents' answers together, so
the implied candidate-vs-opponent pairs feed the gate. A rank campaign's
card cannot show a pair, so a prompt with fewer than 3 distinct answers gets
nothing from the round (as a pair of identical texts gets nothing).

``generation_job_launch`` writes the record and enqueues it after commit;
``generation_job_execute`` runs on a GPU worker: it (and the helpers under
it) loads models through the ``ml`` package, imported inside functions so
that the web process, which imports this module to launch, never loads
torch. A job is claimed QUEUED → RUNNING under a row lock (a redelivered
message does nothing), sends heartbeats, reports progress and tokens/s, and
honours cancel between batches. Completions are looked up before they are
written, so a job re-run after a crash duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.enqueue import enqueue
from core.exceptions import ApplicationError, Conflict
from core.heartbeat import Heartbeat, worker_name
from core.jobs import jobs_fail_stale, jobs_redispatch_lost
from labeling.models import Campaign, Comparison, Completion, Prompt, content_hash
from labeling.rendering import completion_html
from labeling.services.ranking import MAX_ITEMS, MIN_ITEMS, ranked_comparison_create
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    GenerationJob,
    GenerationSettings,
)
from models_hub.selectors import campaign_reward_model, version_get
from models_hub.services.deployments import deployment_candidate_end
from models_hub.services.registry import (
    adapter_champion,
    adapter_path,
    base_model_default,
    base_model_local_path,
    generation_settings_for,
)
from models_hub.versions import VersionKey

logger = logging.getLogger(__name__)

EMPTY_TEXT = "(empty completion)"
PROGRESS_SECONDS = 1.0


# Turns of live conversations are chat prompts of the campaign too, written
# by annotators mid-conversation: rounds and bootstrap never sample them.
POOL = ~Q(metadata__contains={"source": "conversation"})


class JobCancelled(Exception):
    """Raised between batches once a cancel was requested."""


# ---------------------------------------------------------------- launching


def generation_job_launch(
    *,
    campaign: Campaign,
    kind: str,
    adapter: Adapter | None = None,
    versions: Sequence[VersionKey] = (),
    actor: AbstractBaseUser | None = None,
) -> GenerationJob:
    """Record a generation job and queue it on the gpu worker after commit.

    Raises ``Conflict`` when the same campaign already has a queued or
    running job of this kind for this version.
    """
    job = GenerationJob(
        campaign=campaign,
        kind=kind,
        adapter=adapter,
        versions=[str(v) for v in versions],
        created_by=actor if actor is not None and actor.is_authenticated else None,
        phase="queued",
    )
    job.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            job.save()
    except IntegrityError:
        active = GenerationJob.objects.filter(
            campaign=campaign,
            kind=kind,
            adapter=adapter,
            status__in=GenerationJob.ACTIVE,
        ).first()
        raise Conflict(
            f"A {job.get_kind_display()} job for this version is already "
            f"{active.status if active else 'queued'} (job #{active.pk if active else '?'})."
        ) from None
    enqueue("models_hub.generation_job_run", job.pk)
    logger.info(
        "models_hub.generation.queued job=%s kind=%s adapter=%s",
        job.pk,
        kind,
        adapter and adapter.pk,
    )
    return job


def generation_round_enqueue(*, adapter: Adapter) -> GenerationJob | None:
    """Queue a new policy adapter's round (after commit); None for others."""
    if adapter.role != Adapter.Role.POLICY or adapter.campaign is None:
        return None
    if not generation_settings_for(adapter.campaign).enabled:
        return None
    return generation_job_launch(
        campaign=adapter.campaign, kind=GenerationJob.Kind.CANDIDATE, adapter=adapter
    )


def generation_job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Ask a queued or running job to stop (a queued one stops at once)."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if job.status == GenerationJob.Status.QUEUED:
            job.status = GenerationJob.Status.CANCELLED
            job.finished_at = timezone.now()
            job.phase = "cancelled before it started"
            job.save(update_fields=["status", "finished_at", "phase", "updated_at"])
        elif job.status == GenerationJob.Status.RUNNING:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested", "updated_at"])
        else:
            raise Conflict(f"This job has already {job.status}.")
    return job


def open_pair_count(*, campaign: Campaign) -> int:
    return Comparison.objects.filter(
        campaign=campaign, status=Comparison.Status.OPEN, is_gold=False
    ).count()


def prompts_without_open_pairs(*, campaign: Campaign) -> Any:
    """Non-golden prompts of the campaign that no open pair asks about, those
    with the fewest pairs so far first (conversation turns left out)."""
    return (
        Prompt.objects.filter(POOL, campaign=campaign, is_golden=False)
        .annotate(
            open_pairs=Count(
                "comparisons", filter=Q(comparisons__status=Comparison.Status.OPEN)
            ),
            pairs=Count("comparisons"),
        )
        .filter(open_pairs=0)
        .order_by("pairs", "id")
    )


def generation_bootstrap_launch(
    *, campaign: Campaign, actor: AbstractBaseUser | None = None
) -> GenerationJob:
    """Start a bootstrap round by hand (an admin, from a page or the API).

    Raises ``Conflict`` when a bootstrap round of this campaign is already
    queued or running, and ``ApplicationError`` (400) when every non-golden
    prompt already has an open pair, so the round would write nothing.
    """
    active = GenerationJob.objects.filter(
        campaign=campaign,
        kind=GenerationJob.Kind.BOOTSTRAP,
        status__in=GenerationJob.ACTIVE,
    ).first()
    if active is not None:
        raise Conflict(
            f"A bootstrap round of this campaign is already {active.status} "
            f"(job #{active.pk}); cancel it or wait for it to finish."
        )
    if not prompts_without_open_pairs(campaign=campaign).exists():
        raise ApplicationError(
            "Every prompt of this campaign already has an open pair (or it has "
            "no prompts): a bootstrap round would write nothing. Import prompts "
            "or wait for the open pairs to be labeled."
        )
    return generation_job_launch(
        campaign=campaign, kind=GenerationJob.Kind.BOOTSTRAP, actor=actor
    )


def bootstrap_tick() -> int:
    """Beat: launch a bootstrap round for every active campaign whose open
    pairs fell below its low-water mark while prompts wait for pairs.
    Returns how many were launched. A campaign whose settings were never
    saved runs on the defaults (bootstrap on): prompts alone start its loop."""
    launched = 0
    campaigns = Campaign.objects.filter(status=Campaign.Status.ACTIVE).exclude(
        generation_settings__bootstrap_enabled=False
    )
    for campaign in campaigns:
        row = generation_settings_for(campaign)
        if GenerationJob.objects.filter(
            campaign=campaign,
            kind=GenerationJob.Kind.BOOTSTRAP,
            status__in=GenerationJob.ACTIVE,
        ).exists():
            continue
        if open_pair_count(campaign=campaign) >= row.low_water_mark:
            continue
        if not prompts_without_open_pairs(campaign=campaign).exists():
            continue
        try:
            generation_job_launch(campaign=campaign, kind=GenerationJob.Kind.BOOTSTRAP)
        except Conflict:
            continue
        launched += 1
    return launched


def generation_job_sweep_stale(*, timeout_seconds: int | None = None) -> int:
    """Fail RUNNING generation jobs whose worker stopped sending heartbeats."""
    return jobs_fail_stale(
        model=GenerationJob,
        error=lambda job, timeout: (
            f"The worker running this job ({job.worker or 'unknown'}) stopped sending "
            f"heartbeats for more than {timeout} s; it was probably killed. The "
            "completions it wrote are kept; launching the round again continues "
            "without duplicating them."
        ),
        timeout_seconds=timeout_seconds,
        log_name="models_hub.generation.stale",
    )


def generation_job_redispatch_lost(*, older_than_seconds: int | None = None) -> int:
    """Send ``models_hub.generation_job_run`` again for QUEUED jobs whose
    message was lost (``core.jobs.jobs_redispatch_lost``)."""
    return jobs_redispatch_lost(
        model=GenerationJob,
        task="models_hub.generation_job_run",
        older_than_seconds=older_than_seconds,
        log_name="models_hub.generation.redispatched",
    )


# ---------------------------------------------------------------- running


class Progress:
    """Progress, tokens/s and ETA written at most once a second; cancel polled."""

    def __init__(self, job: GenerationJob, total: int) -> None:
        self.job_id = job.pk
        self.total = total
        self.done = 0
        self.tokens = 0
        self.started = time.monotonic()
        self._last = 0.0
        GenerationJob.objects.filter(pk=job.pk).update(prompts_total=total)

    def phase(self, text: str) -> None:
        GenerationJob.objects.filter(pk=self.job_id).update(
            phase=text, heartbeat_at=timezone.now()
        )

    def grow(self, prompts: int) -> None:
        """``prompts`` more answers to write than the job started with."""
        self.total += prompts
        GenerationJob.objects.filter(pk=self.job_id).update(prompts_total=self.total)

    def advance(self, prompts: int, tokens: int) -> None:
        self.done += prompts
        self.tokens += tokens
        now = time.monotonic()
        if now - self._last < PROGRESS_SECONDS and self.done < self.total:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        GenerationJob.objects.filter(pk=self.job_id).update(
            prompts_done=self.done,
            new_tokens=self.tokens,
            tokens_per_second=round(self.tokens / elapsed, 2),
            eta_seconds=int((self.total - self.done) / rate) if rate else None,
            heartbeat_at=timezone.now(),
        )

    def check_cancel(self) -> None:
        if GenerationJob.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            raise JobCancelled


def _claim(job_id: int) -> GenerationJob | None:
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != GenerationJob.Status.QUEUED:
            return None
        job.status = GenerationJob.Status.RUNNING
        job.started_at = job.heartbeat_at = timezone.now()
        job.worker = worker_name()
        job.phase = "loading the model"
        job.save(
            update_fields=[
                "status",
                "started_at",
                "heartbeat_at",
                "worker",
                "phase",
                "updated_at",
            ]
        )
        return job


def _finish(job: GenerationJob, status: str, *, phase: str, error: str = "") -> None:
    GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.RUNNING).update(
        status=status,
        phase=phase,
        error=error[-5000:],
        finished_at=timezone.now(),
        eta_seconds=0 if status == GenerationJob.Status.SUCCEEDED else None,
        updated_at=timezone.now(),
    )


def generation_job_execute(*, job_id: int) -> None:
    """Run one generation job (the ``models_hub.generation_job_run`` task)."""
    job = _claim(job_id)
    if job is None:
        logger.info("models_hub.generation.skip job=%s", job_id)
        return
    runners: dict[str, Callable[[GenerationJob], int]] = {
        GenerationJob.Kind.BOOTSTRAP: _run_bootstrap,
        GenerationJob.Kind.CANDIDATE: _run_candidate,
        GenerationJob.Kind.REVIEW: _run_review,
    }
    with Heartbeat(GenerationJob, job.pk):
        try:
            created = runners[job.kind](job)
        except JobCancelled:
            close_old_connections()
            _finish(job, GenerationJob.Status.CANCELLED, phase="cancelled")
            logger.info("models_hub.generation.cancelled job=%s", job.pk)
            return
        except Exception as exc:  # noqa: BLE001 - process edge: record, never crash the worker
            logger.exception("models_hub.generation.failed job=%s", job.pk)
            close_old_connections()
            _finish(
                job,
                GenerationJob.Status.FAILED,
                phase="failed",
                error=f"{type(exc).__name__}: {exc}",
            )
            return
    GenerationJob.objects.filter(pk=job.pk).update(comparisons_created=created)
    _finish(job, GenerationJob.Status.SUCCEEDED, phase="done")
    logger.info("models_hub.generation.succeeded job=%s pairs=%s", job.pk, created)


def _params(row: GenerationSettings, *, seed: int | None = None) -> Any:
    from ml.generation import DecodingParams

    return DecodingParams(
        max_new_tokens=row.max_new_tokens,
        temperature=row.temperature,
        top_p=row.top_p,
        seed=row.seed if seed is None else seed,
    )


def version_lineage(adapter: Adapter | None, base: BaseModelVersion) -> dict[str, Any]:
    """What a model completion records of the version that wrote it."""
    lineage: dict[str, Any] = {"base_model": base.pk, "base_source": base.source}
    if adapter is not None:
        lineage.update(
            adapter=adapter.pk,
            adapter_version=adapter.version,
            adapter_name=adapter.name,
            method=adapter.method,
        )
    return lineage


def model_completion_store(
    *,
    prompt: Prompt,
    text: str,
    adapter: Adapter | None,
    base: BaseModelVersion,
    generation: dict[str, Any],
) -> Completion:
    """The completion ``text`` of ``prompt`` by this version (base + adapter,
    or the base alone), created once: the same text from the same version is
    the existing row. ``generation`` is its lineage and decoding record.
    Generation rounds and traffic sampling (``services.serving``) share it."""
    # PostgreSQL text cannot hold NUL; a model that writes one (the tiny test
    # model does) keeps a visible replacement character.
    stored = text.replace("\x00", "\ufffd") or EMPTY_TEXT
    key = str(VersionKey.adapter(adapter.pk) if adapter else VersionKey.base(base.pk))
    completion, _ = Completion.objects.get_or_create(
        prompt=prompt,
        content_hash=content_hash(stored),
        source_label=key,
        defaults={
            "text": stored,
            "html": completion_html(stored),
            "origin": Completion.Origin.MODEL,
            "adapter": adapter,
            "base_model": base,
            "generation": generation,
        },
    )
    return completion


def _write(
    prompts: Sequence[Prompt],
    *,
    adapter: Adapter | None,
    base: BaseModelVersion,
    params: Any,
    progress: Progress,
    extra: dict[str, Any] | None = None,
) -> list[Completion]:
    """One completion per prompt from this version, batch by batch (progress
    and cancel between batches). Identical texts of a prompt and version are
    one completion row."""
    from ml.generation import get_generator

    generator = get_generator(base_model_local_path(base))
    key = str(VersionKey.adapter(adapter.pk) if adapter else VersionKey.base(base.pk))
    spec = (key, str(adapter_path(adapter))) if adapter is not None else None
    lineage = {**version_lineage(adapter, base), **(extra or {})}
    written: list[Completion] = []
    for start in range(0, len(prompts), params.batch_size):
        progress.check_cancel()
        batch = list(prompts[start : start + params.batch_size])
        outputs = generator.generate(
            [p.content for p in batch],
            adapter=spec,
            params=dataclasses.replace(params, seed=params.seed + start),
        )
        for prompt, (text, record) in zip(batch, outputs, strict=True):
            written.append(
                model_completion_store(
                    prompt=prompt,
                    text=text,
                    adapter=adapter,
                    base=base,
                    generation={**record, **lineage},
                )
            )
        progress.advance(len(batch), sum(r["new_tokens"] for _, r in outputs))
    return written


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
    for completion in qs.order_by("created_at", "id"):
        found.setdefault(completion.prompt_id, completion)
    return found


def _answers(
    prompts: Sequence[Prompt],
    *,
    adapter: Adapter | None,
    base: BaseModelVersion,
    params: Any,
    progress: Progress,
) -> dict[int, Completion]:
    """This version's answer to each prompt: the one it wrote before, else a
    new one (so a re-run never duplicates)."""
    have = _existing(prompts, adapter=adapter, base=base)
    todo = [p for p in prompts if p.pk not in have]
    progress.advance(len(prompts) - len(todo), 0)
    for completion in _write(
        todo, adapter=adapter, base=base, params=params, progress=progress
    ):
        have.setdefault(completion.prompt_id, completion)
    return have


def _score(
    campaign: Campaign, completions: Sequence[Completion], reward: Adapter | None = None
) -> None:
    """Record ``reward``'s score (default: the campaign's reward model) on
    each completion that lacks one from that model."""
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


def comparison_pair_queue(
    *, campaign: Campaign, prompt: Prompt, a: Completion, b: Completion, priority: int
) -> Comparison | None:
    """Queue the pair of two different completions (``a`` on the left) once;
    None if it exists in either order or the texts are the same."""
    if a.pk == b.pk or a.content_hash == b.content_hash:
        return None
    if Comparison.objects.filter(
        completion_a__in=[a, b], completion_b__in=[a, b]
    ).exists():
        return None
    return Comparison.objects.create(
        campaign=campaign,
        prompt=prompt,
        completion_a=a,
        completion_b=b,
        priority=priority,
    )


def _pair(
    campaign: Campaign, prompt: Prompt, a: Completion, b: Completion, priority: int
) -> bool:
    return (
        comparison_pair_queue(
            campaign=campaign, prompt=prompt, a=a, b=b, priority=priority
        )
        is not None
    )


def ranked_items_interleave(groups: Sequence[Sequence[Completion]]) -> list[Completion]:
    """The completions of ``groups`` (one per version) taken alternately, one
    from each group in turn, so that a ranking capped at ``MAX_ITEMS`` mixes
    the versions evenly."""
    mixed: list[Completion] = []
    for index in range(max((len(g) for g in groups), default=0)):
        mixed.extend(g[index] for g in groups if index < len(g))
    return mixed


def comparison_ranked_queue(
    *,
    campaign: Campaign,
    prompt: Prompt,
    completions: Sequence[Completion],
    priority: int,
) -> Comparison | None:
    """Queue one ranked comparison of ``prompt`` holding the first
    ``MAX_ITEMS`` distinct texts of ``completions`` (in that order), once:
    None with fewer than ``MIN_ITEMS`` distinct texts, or when a ranked
    comparison of the prompt with the same completions exists (any status).
    Call inside ``atomic()``."""
    items: list[Completion] = []
    for completion in completions:
        if all(c.content_hash != completion.content_hash for c in items):
            items.append(completion)
    items = items[:MAX_ITEMS]
    if len(items) < MIN_ITEMS:
        return None
    ids = [c.pk for c in items]
    same = (
        Comparison.objects.filter(prompt=prompt, is_ranked=True)
        .annotate(
            n=Count("items"), hit=Count("items", filter=Q(items__completion__in=ids))
        )
        .filter(n=len(ids), hit=len(ids))
    )
    if same.exists():
        return None
    return ranked_comparison_create(
        campaign=campaign, prompt=prompt, completions=items, priority=priority
    )


def bootstrap_samples(*, campaign: Campaign, row: GenerationSettings) -> int:
    """Answers per prompt a bootstrap round writes: ``samples_per_prompt``,
    clamped to ``MIN_ITEMS``..``MAX_ITEMS`` in a rank campaign (its samples
    become one ranking)."""
    if campaign.mode == Campaign.Mode.RANK:
        return min(max(row.samples_per_prompt, MIN_ITEMS), MAX_ITEMS)
    return row.samples_per_prompt


# ---------------------------------------------------------------- the kinds


def _run_bootstrap(job: GenerationJob) -> int:
    campaign = job.campaign
    row = generation_settings_for(campaign)
    champion = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    base = champion.base_model if champion is not None else base_model_default()
    prompts = list(
        prompts_without_open_pairs(campaign=campaign)[: row.bootstrap_prompts]
    )
    rank = campaign.mode == Campaign.Mode.RANK
    k = bootstrap_samples(campaign=campaign, row=row)
    progress = Progress(job, len(prompts) * k)
    samples: dict[int, list[Completion]] = {p.pk: [] for p in prompts}
    for sample in range(k):
        progress.phase(f"writing sample {sample + 1} of {k}")
        # Its own seed per sample (and per job, so a later round differs).
        params = _params(row, seed=row.seed + 7919 * (sample + 1) + 104_729 * job.pk)
        for completion in _write(
            prompts,
            adapter=champion,
            base=base,
            params=params,
            progress=progress,
            extra={"sample": sample, "bootstrap_job": job.pk},
        ):
            if all(c.pk != completion.pk for c in samples[completion.prompt_id]):
                samples[completion.prompt_id].append(completion)
    reward = campaign_reward_model(campaign=campaign)
    if reward is not None and k >= 3:
        progress.phase("scoring samples with the reward model")
        _score(campaign, [c for group in samples.values() for c in group], reward)
    created = 0
    with transaction.atomic():
        for prompt in prompts:
            group = samples[prompt.pk]
            if rank:
                created += (
                    comparison_ranked_queue(
                        campaign=campaign,
                        prompt=prompt,
                        completions=group,
                        priority=row.priority,
                    )
                    is not None
                )
                continue
            if reward is not None and len(group) >= 3:
                # Rejection-sampling pairs: the reward model's best vs its worst.
                ranked = sorted(group, key=lambda c: c.metadata.get("reward_score", 0))
                pairs = [(ranked[-1], ranked[0])]
            else:
                pairs = list(zip(group[0::2], group[1::2], strict=False))
            for a, b in pairs:
                created += _pair(campaign, prompt, a, b, row.priority)
    return created


MAX_HELD_OUT_SAMPLES = 8


def _round_prompts(campaign: Campaign, *, count: int, seed: int) -> list[Prompt]:
    """The golden prompts, then a seeded sample of ``count`` others: half
    (rounded up) from the held-out test split, which the gate and the
    guardrails read, the rest from train and validation, where the new pairs
    become training data; either half fills up from the other when short."""
    golden = list(
        Prompt.objects.filter(campaign=campaign, is_golden=True).order_by("id")
    )
    rng = random.Random(seed)
    pools = [
        list(
            Prompt.objects.filter(POOL, campaign=campaign, is_golden=False)
            .filter(split_filter)
            .order_by("id")
            .values_list("id", flat=True)
        )
        for split_filter in (Q(split=Prompt.Split.TEST), ~Q(split=Prompt.Split.TEST))
    ]
    test_take = min(len(pools[0]), max(count - len(pools[1]), (count + 1) // 2))
    picked = rng.sample(pools[0], test_take)
    picked += rng.sample(pools[1], min(count - test_take, len(pools[1])))
    return golden + list(Prompt.objects.filter(pk__in=picked).order_by("id"))


def held_out_samples(*, held_out: int, needed: int) -> int:
    """Answers per held-out prompt a candidate round writes for each side,
    so that its held-out pairs can reach the ``needed`` labels of the gate
    (at most ``MAX_HELD_OUT_SAMPLES``; 0 without held-out prompts)."""
    if held_out == 0:
        return 0
    return max(1, min(MAX_HELD_OUT_SAMPLES, -(-needed // held_out)))


def _samples(
    prompts: Sequence[Prompt],
    *,
    adapter: Adapter | None,
    base: BaseModelVersion,
    params: Any,
    count: int,
    progress: Progress,
) -> dict[int, list[Completion]]:
    """Up to ``count`` distinct answers of this version to each prompt: the
    ones it wrote before, then new ones, each sample with its own seed (a
    re-run never duplicates; a sample equal to an earlier one is the same
    row, so a prompt may end with fewer)."""
    have: dict[int, list[Completion]] = {p.pk: [] for p in prompts}
    qs = Completion.objects.filter(prompt__in=prompts, origin=Completion.Origin.MODEL)
    qs = (
        qs.filter(adapter=adapter)
        if adapter is not None
        else qs.filter(adapter__isnull=True, base_model=base)
    )
    for completion in qs.order_by("created_at", "id"):
        have[completion.prompt_id].append(completion)
    for sample in range(1, count):
        todo = [p for p in prompts if len(have[p.pk]) <= sample]
        progress.advance(len(prompts) - len(todo), 0)
        if not todo:
            continue
        seeded = dataclasses.replace(params, seed=params.seed + 7919 * sample)
        for completion in _write(
            todo,
            adapter=adapter,
            base=base,
            params=seeded,
            progress=progress,
            extra={"held_out_sample": sample},
        ):
            group = have[completion.prompt_id]
            if all(c.pk != completion.pk for c in group):
                group.append(completion)
    return {pk: group[:count] for pk, group in have.items()}


def _guardrails(
    prompts: Sequence[Prompt],
    candidate: dict[int, Completion],
    opponent: dict[int, Completion],
    *,
    base: BaseModelVersion,
    row: GenerationSettings,
) -> dict[str, Any]:
    from ml.generation import get_generator
    from ml.guardrails import GuardrailLimits, summarize, violations

    generator = get_generator(base_model_local_path(base))
    common = [p for p in prompts if p.pk in candidate and p.pk in opponent]
    figures = {}
    for name, answers in (("candidate", candidate), ("opponent", opponent)):
        texts = [answers[p.pk].text for p in common]
        raw = ["" if t == EMPTY_TEXT else t for t in texts]
        nll = generator.negative_log_likelihood([p.content for p in common], raw)
        figures[name] = summarize(
            raw,
            finished=[answers[p.pk].generation.get("finished", True) for p in common],
            nll_under_base=sum(nll) / len(nll) if nll else None,
        )
    limits = GuardrailLimits(
        max_extra_degenerate=row.max_extra_degenerate,
        max_length_ratio=row.max_length_ratio,
        max_nll_increase=row.max_nll_increase,
    )
    reasons = violations(figures["candidate"], figures["opponent"], limits)
    return {
        "candidate": figures["candidate"].as_dict(),
        "opponent": figures["opponent"].as_dict(),
        "violations": reasons,
        "passed": not reasons,
    }


def _run_candidate(job: GenerationJob) -> int:
    adapter = job.adapter
    if adapter is None or adapter.campaign is None:
        return 0
    campaign = adapter.campaign
    row = generation_settings_for(campaign)
    prompts = _round_prompts(campaign, count=row.prompts_per_round, seed=adapter.pk)
    champion = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    opponents: list[Adapter | None] = (
        [champion] if champion is not None and champion.pk != adapter.pk else [None]
    )
    if row.compare_against_base and None not in opponents:
        opponents.append(None)
    # Only labels on held-out prompts count at the gate: the candidate and the
    # gate's opponent answer those several times when they are few.
    held_out = [p for p in prompts if p.is_golden or p.split == Prompt.Split.TEST]
    count = held_out_samples(
        held_out=len(held_out), needed=max(row.gate_min_comparisons, 1)
    )
    progress = Progress(job, len(prompts) * (1 + len(opponents)))
    params = _params(row)
    progress.phase("writing the candidate's answers")
    mine = _answers(
        prompts,
        adapter=adapter,
        base=adapter.base_model,
        params=params,
        progress=progress,
    )
    answers: list[tuple[Adapter | None, dict[int, Completion]]] = []
    for opponent in opponents:
        progress.phase(
            f"writing {'the champion' if opponent is not None else 'the base model'}'s answers"
        )
        base = opponent.base_model if opponent is not None else adapter.base_model
        answers.append(
            (
                opponent,
                _answers(
                    prompts,
                    adapter=opponent,
                    base=base,
                    params=params,
                    progress=progress,
                ),
            )
        )
    progress.phase("measuring guardrails")
    report = _guardrails(prompts, mine, answers[0][1], base=adapter.base_model, row=row)
    report["opponent_key"] = str(
        VersionKey.adapter(answers[0][0].pk)
        if answers[0][0] is not None
        else VersionKey.base(adapter.base_model_id)
    )
    GenerationJob.objects.filter(pk=job.pk).update(guardrails=report)
    if not report["passed"]:
        _refuse(adapter, report["violations"])
        return 0
    gate_opponent = answers[0][0]
    rank = campaign.mode == Campaign.Mode.RANK
    # A ranking needs 3 distinct answers: in a rank campaign both sides
    # answer every prompt at least twice (the rest of the round once more),
    # and a held-out prompt gets ``count`` rankings of two answers a side
    # (the gate counts a ranking once, however many pairs it implies).
    rankings = max(1, min(count, MAX_HELD_OUT_SAMPLES // 2))
    count = 2 * rankings if rank else count
    rest = [p for p in prompts if p not in held_out] if rank else []
    if count > 1:
        progress.grow(2 * len(held_out) * (count - 1) + 2 * len(rest))
        progress.phase(f"writing {count} answers per held-out prompt")
    mine_held: dict[int, list[Completion]] = {}
    theirs_held: dict[int, list[Completion]] = {}
    for group, times in ((held_out, count), (rest, 2)):
        mine_held |= _samples(
            group,
            adapter=adapter,
            base=adapter.base_model,
            params=params,
            count=times,
            progress=progress,
        )
        theirs_held |= _samples(
            group,
            adapter=gate_opponent,
            base=gate_opponent.base_model if gate_opponent else adapter.base_model,
            params=params,
            count=times,
            progress=progress,
        )
    progress.phase("queueing rankings" if rank else "queueing pairs")
    extra = [c for group in (*mine_held.values(), *theirs_held.values()) for c in group]
    _score(
        campaign,
        [*mine.values(), *(c for _, a in answers for c in a.values()), *extra],
    )
    if rank:
        return _rank_candidate(
            campaign,
            prompts,
            held_out=held_out,
            sides=[mine_held, theirs_held, *(a for _, a in answers[1:])],
            rankings=rankings,
            row=row,
        )
    created = 0
    with transaction.atomic():
        for index, (_, theirs) in enumerate(answers):
            for prompt in prompts:
                if index == 0 and prompt.pk in mine_held:
                    # Held-out pairs first in the queue: the gate waits on them.
                    pairs = list(
                        zip(mine_held[prompt.pk], theirs_held[prompt.pk], strict=False)
                    )
                    priority = row.priority + 1
                else:
                    pairs = [(mine.get(prompt.pk), theirs.get(prompt.pk))]
                    priority = row.priority
                for a, b in pairs:
                    if a is not None and b is not None:
                        created += _pair(campaign, prompt, a, b, priority)
    return created


def _rank_candidate(
    campaign: Campaign,
    prompts: Sequence[Prompt],
    *,
    held_out: Sequence[Prompt],
    sides: Sequence[dict[int, list[Completion]] | dict[int, Completion]],
    rankings: int,
    row: GenerationSettings,
) -> int:
    """Ranked comparisons mixing the answers of ``sides`` (the candidate's,
    the gate opponent's, then the base's when it is a second opponent),
    taken alternately: one per prompt, and ``rankings`` per held-out prompt
    (each with the next two answers of each side, the first also with the
    base's), those a priority step ahead."""
    created = 0
    with transaction.atomic():
        for prompt in prompts:
            answers = []
            for side in sides:
                answer = side.get(prompt.pk)
                if answer is not None:
                    answers.append(answer if isinstance(answer, list) else [answer])
            chunks = rankings if prompt in held_out else 1
            for chunk in range(chunks):
                groups = [
                    group[2 * chunk : 2 * chunk + 2] if chunks > 1 else group
                    for group in answers
                ]
                created += (
                    comparison_ranked_queue(
                        campaign=campaign,
                        prompt=prompt,
                        completions=ranked_items_interleave([g for g in groups if g]),
                        priority=row.priority + (1 if prompt in held_out else 0),
                    )
                    is not None
                )
    return created


def _refuse(adapter: Adapter, reasons: Sequence[str]) -> None:
    """Guardrails failed: no pairs, the candidate retired, the reasons kept."""
    with transaction.atomic():
        locked = Adapter.objects.select_for_update().get(pk=adapter.pk)
        reason = "; ".join(reasons)[:500]
        AdapterEvent.objects.create(
            adapter=locked,
            action=AdapterEvent.Action.REFUSED,
            reason=reason,
            evidence={"violations": list(reasons)},
        )
        if locked.status == Adapter.Status.CANDIDATE:
            locked.status = Adapter.Status.RETIRED
            locked.save(update_fields=["status", "updated_at"])
            deployment_candidate_end(
                adapter=locked, actor=None, reason=f"{locked} refused: {reason}"
            )
    logger.warning(
        "models_hub.generation.refused adapter=%s reasons=%s", adapter.pk, reasons
    )


def _run_review(job: GenerationJob) -> int:
    campaign = job.campaign
    row = generation_settings_for(campaign)
    params = _params(row)
    prompts = list(
        Prompt.objects.filter(campaign=campaign, is_golden=True).order_by("id")
    )
    progress = Progress(job, len(prompts) * len(job.versions))
    made: list[Completion] = []
    for key in job.versions:
        version = version_get(key=VersionKey.parse(key))
        assert version.base_model is not None
        progress.phase(f"writing {version.label}'s answers")
        made.extend(
            _answers(
                prompts,
                adapter=version.adapter,
                base=version.base_model,
                params=params,
                progress=progress,
            ).values()
        )
    progress.phase("scoring with the reward model")
    _score(campaign, made)
    return 0
