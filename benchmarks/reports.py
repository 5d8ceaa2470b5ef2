"""Cached reports: refresh cost, and page/API latency with 50k labels.

Usage::

    ./arbiter bench reports [--labels 50000] [--versions 5] [--annotators 20]
        [--requests 40] [--refreshes 3]

Builds (once; reused while its label count matches) a campaign with
``--labels`` human labels between the outputs of ``--versions`` model
versions (a base model and its adapters, one of them champion) by
``--annotators`` annotators: every pair is labeled twice, so agreement and
kappa have data, and 2 % of the pairs are gold. Then:

1. times the refresh task's computation (``campaign_reports_refresh``, the
   body of ``models_hub.reports_refresh``): loading the outcomes, the
   leaderboard (Bradley-Terry + 200 bootstrap fits, win rates with 1,000
   resamples per pair) and the quality report, ``--refreshes`` times;
2. times GET of the leaderboard, quality and side-by-side pages and their
   API endpoints through Django's test client (the whole request: URL
   resolution, middleware, session or token auth, the cached read, template
   or JSON rendering; no network), ``--requests`` times each after 3
   untimed ones, and prints p50/p95 and the p95 ratio to the 100 ms target;
3. counts Bradley-Terry fits and win-rate bootstraps during those GETs
   (must be 0).

It runs its own embedded PostgreSQL and Redis under ``.data/bench-reports``
with ``DJANGO_DEBUG=false`` and stops them at the end. No Celery worker is
needed: the refresh is called directly, and pages find the report current.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, sys.path[0] is benchmarks/: keep only the project root,
# so no sibling script can shadow a module of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

DATA_DIR = ROOT / ".data" / "bench-reports"
TARGET_MS = 100.0
CAMPAIGN = "bench-reports"
TRUE_STRENGTH_STEP = 0.25  # version i is i * step stronger than the base


def log(message: str) -> None:
    print(f"[reports] {message}", flush=True)


def setup_django() -> None:
    from core.embedded import ensure_services

    for var in ("DATABASE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(var, None)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    ensure_services(DATA_DIR)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="bench-reports-" + "k" * 40,
        DJANGO_ALLOWED_HOSTS="testserver",
        DJANGO_SECURE_SSL_REDIRECT="false",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build(labels: int, n_versions: int, n_annotators: int) -> Any:
    """The benchmark campaign; rebuilt when its label count differs."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from labeling.models import Campaign, Comparison, Completion, Preference, Prompt
    from models_hub.models import Adapter, BaseModelVersion

    campaign = Campaign.objects.filter(name=CAMPAIGN).first()
    if campaign is not None:
        have = Preference.objects.filter(comparison__campaign=campaign).count()
        if have == labels:
            log(f"reusing campaign {campaign.pk} with {have:,} labels")
            return campaign
        log(f"rebuilding: campaign has {have:,} labels, want {labels:,}")
        Preference.objects.filter(comparison__campaign=campaign).delete()
        Comparison.objects.filter(campaign=campaign).delete()
        Completion.objects.filter(prompt__campaign=campaign).delete()
        Adapter.objects.filter(campaign=campaign).delete()
        campaign.delete()

    started = time.perf_counter()
    rng = random.Random(7)
    User = get_user_model()
    with transaction.atomic():
        campaign = Campaign.objects.create(name=CAMPAIGN, overlap_k=2)
        base, _ = BaseModelVersion.objects.get_or_create(
            name="bench-base", defaults={"source": "/m"}
        )
        adapters = [
            Adapter.objects.create(
                campaign=campaign,
                base_model=base,
                role=Adapter.Role.POLICY,
                version=i,
                name=f"bench-dpo-v{i}",
                method="dpo",
                peft_type="lora",
                storage_path=f"adapters/bench-{i}",
                status=Adapter.Status.CHAMPION
                if i == n_versions - 2
                else Adapter.Status.CANDIDATE,
            )
            for i in range(1, n_versions)
        ]
        versions: list[Adapter | None] = [None, *adapters]
        names = [f"bench-annotator-{i:03d}" for i in range(n_annotators)]
        User.objects.filter(username__in=names).delete()
        annotators = User.objects.bulk_create(
            [User(username=name, password="!") for name in names]  # unusable
        )
        pairs = labels // 2
        per_prompt = n_versions * (n_versions - 1) // 2
        n_prompts = -(-pairs // per_prompt)
        prompts = Prompt.objects.bulk_create(
            [
                Prompt(
                    campaign=campaign,
                    text=f"Bench prompt {i}?",
                    content_hash=f"bench-prompt-{i}",
                    split=Prompt.Split.TRAIN,
                    is_golden=i < 20,
                )
                for i in range(n_prompts)
            ],
            batch_size=5000,
        )
        completions = Completion.objects.bulk_create(
            [
                Completion(
                    prompt=prompt,
                    text=f"Answer of version {v} to prompt {prompt.pk}.",
                    content_hash=f"bench-{prompt.pk}-{v}",
                    origin=Completion.Origin.MODEL,
                    source_label=f"v{v}",
                    adapter=versions[v],
                    base_model=base,
                )
                for prompt in prompts
                for v in range(n_versions)
            ],
            batch_size=5000,
        )
        by_prompt = [
            completions[i * n_versions : (i + 1) * n_versions] for i in range(n_prompts)
        ]
        version_pairs = [
            (x, y) for x in range(n_versions) for y in range(x + 1, n_versions)
        ]
        comparisons = []
        for i in range(pairs):
            x, y = version_pairs[i % per_prompt]
            if rng.random() < 0.5:
                x, y = y, x
            gold = i % 50 == 0
            comparisons.append(
                Comparison(
                    campaign=campaign,
                    prompt=prompts[i // per_prompt],
                    completion_a=by_prompt[i // per_prompt][x],
                    completion_b=by_prompt[i // per_prompt][y],
                    label_count=2,
                    status=Comparison.Status.COMPLETE,
                    is_gold=gold,
                    gold_choice="a" if gold and x > y else ("b" if gold else ""),
                )
            )
        comparisons = Comparison.objects.bulk_create(comparisons, batch_size=5000)
        preferences = []
        for comparison in comparisons:
            x = int(comparison.completion_a.source_label[1:])
            y = int(comparison.completion_b.source_label[1:])
            p_a = 1 / (1 + pow(2.718281828, -(x - y) * TRUE_STRENGTH_STEP))
            for annotator in rng.sample(annotators, 2):
                r = rng.random()
                choice = "tie" if r < 0.08 else ("a" if rng.random() < p_a else "b")
                a_on_left = rng.random() < 0.5
                preferences.append(
                    Preference(
                        comparison=comparison,
                        annotator=annotator,
                        choice=choice,
                        a_on_left=a_on_left,
                        time_spent_ms=rng.randint(3000, 40000),
                    )
                )
        Preference.objects.bulk_create(preferences, batch_size=5000)
    from django.db import connection

    with connection.cursor() as cursor:
        # A campaign with 50k labels has been running for weeks: spread them
        # over 30 days, so "labels in the last hour" is the usual handful.
        cursor.execute(
            "UPDATE labeling_preference p SET created_at = now() - random() * "
            "interval '30 days' FROM labeling_comparison c "
            "WHERE p.comparison_id = c.id AND c.campaign_id = %s",
            [campaign.pk],
        )
        cursor.execute("ANALYZE")
    log(
        f"built campaign {campaign.pk}: {len(preferences):,} labels, "
        f"{len(comparisons):,} pairs, {n_versions} versions, {n_annotators} "
        f"annotators in {time.perf_counter() - started:.1f} s"
    )
    return campaign


def time_refresh(campaign: Any, repeats: int) -> list[float]:
    from core.models import Report
    from labeling.selectors.quality import quality_report
    from models_hub.selectors import version_outcomes
    from models_hub.services.reports import (
        campaign_reports_refresh,
        leaderboard_report,
    )

    seconds = []
    for _ in range(repeats):
        Report.objects.filter(campaign=campaign).update(stale=True)
        started = time.perf_counter()
        assert campaign_reports_refresh(campaign_id=campaign.pk)
        seconds.append(time.perf_counter() - started)
    parts = {}
    started = time.perf_counter()
    outcomes = version_outcomes(campaign=campaign)
    parts["load outcomes"] = time.perf_counter() - started
    started = time.perf_counter()
    leaderboard_report(campaign=campaign, outcomes=outcomes)
    parts["leaderboard (BT + 200 bootstrap fits, win rates)"] = (
        time.perf_counter() - started
    )
    started = time.perf_counter()
    quality_report(campaign=campaign)
    parts["quality report"] = time.perf_counter() - started
    log(
        f"refresh task computation: median {statistics.median(seconds):.2f} s "
        f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})"
    )
    for name, value in parts.items():
        log(f"  {name}: {value:.2f} s")
    return seconds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_pages(campaign: Any, n_requests: int) -> dict[str, tuple[float, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from rest_framework.authtoken.models import Token

    from core import stats
    from core.roles import REVIEWER
    from core.services import roles_ensure, user_create
    from models_hub.models import Adapter

    roles_ensure()
    reviewer = get_user_model().objects.filter(username="bench-reviewer").first()
    if reviewer is None:
        reviewer = user_create(
            username="bench-reviewer", password="bench-reviewer-pw", role=REVIEWER
        )
    token, _ = Token.objects.get_or_create(user=reviewer)
    page = Client()
    page.force_login(reviewer)
    api = Client(headers={"Authorization": f"Token {token.key}"})
    adapter = Adapter.objects.filter(campaign=campaign).order_by("version").last()
    base_id = adapter.base_model_id
    query = f"?left=adapter:{adapter.pk}&right=base:{base_id}"
    pk = campaign.pk
    targets = [
        ("leaderboard page", page, reverse("models_hub:leaderboard", args=[pk])),
        ("quality page", page, reverse("labeling:campaign-quality", args=[pk])),
        (
            "side-by-side page",
            page,
            reverse("models_hub:compare", args=[pk]) + query,
        ),
        ("leaderboard API", api, reverse("api-leaderboard", args=[pk])),
        ("quality API", api, reverse("api-campaign-quality", args=[pk])),
        ("side-by-side API", api, reverse("api-compare", args=[pk]) + query),
    ]

    fits = {"n": 0}
    real_fit, real_win_rate = stats._fit, stats._win_rate

    def counted(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            fits["n"] += 1
            return fn(*args, **kwargs)

        return wrapper

    stats._fit, stats._win_rate = counted(real_fit), counted(real_win_rate)
    results = {}
    try:
        for name, client, url in targets:
            for _ in range(3):
                response = client.get(url, secure=True)
                assert response.status_code == 200, (name, response.status_code)
            assert b"omputing" not in response.content, name
            samples = []
            for _ in range(n_requests):
                started = time.perf_counter()
                response = client.get(url, secure=True)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            results[name] = (_percentile(samples, 0.5), _percentile(samples, 0.95))
    finally:
        stats._fit, stats._win_rate = real_fit, real_win_rate
    log(f"Bradley-Terry fits and win-rate bootstraps during the GETs: {fits['n']}")
    print()
    print(f"{'page':<20} {'p50 ms':>8} {'p95 ms':>8} {'p95 / 100 ms':>13}")
    for name, (p50, p95) in results.items():
        print(f"{name:<20} {p50:8.1f} {p95:8.1f} {p95 / TARGET_MS:13.2f}")
    print()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=50_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--refreshes", type=int, default=3)
    args = parser.parse_args()
    setup_django()
    campaign = build(args.labels, args.versions, args.annotators)
    time_refresh(campaign, args.refreshes)
    results = time_pages(campaign, args.requests)
    # The side-by-side page reads its win rate from the cache too, but it is
    # not a report page: its time goes to two completion lookups and a word
    # diff per golden prompt, which the 100 ms target does not cover.
    worst = max(p95 for name, (_, p95) in results.items() if "side-by-side" not in name)
    log(
        f"worst p95 of the leaderboard and quality pages and APIs {worst:.1f} ms: "
        f"{'within' if worst < TARGET_MS else 'OVER'} "
        f"the {TARGET_MS:.0f} ms target (ratio {worst / TARGET_MS:.2f})"
    )


if __name__ == "__main__":
    main()
