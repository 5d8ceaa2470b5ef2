"""Drift watch statistics: does a served version still answer as it did after
its promotion?

Plain Python (no torch, no numpy), so both the gpu worker that measures a
version and the web process that draws and checks the series import it; it
reuses ``ml.guardrails`` (itself plain Python) for the text measures.

- ``output_figures``: one evaluation's outputs as shares and lengths: empty,
  cut at ``max_new_tokens`` (truncated), refusal-like (``is_refusal``),
  degenerate (``ml.guardrails.is_degenerate``), length mean and p90.
- ``mean_shift``: how far a point's mean moved from the baseline window, in
  standard deviations of what the mean does when nothing changes.
- ``psi``: population-stability index of a point's scores against the
  baseline window's, over quantile bins of the baseline.
- ``drift_findings``: every check of one point against its baseline window,
  each with its value, threshold and whether it is breached.

Defaults (``DriftThresholds``) and why:

- ``mean_drop_sd = 3``: a three-sigma drop of the mean reward-model score
  (one-sided); the spread is the larger of the baseline points' own spread
  and the standard error of the point's mean (``pooled sd / sqrt(n)``), so
  a flat baseline (greedy decoding, the same prompts) does not turn a
  rounding difference into an alert.
- ``psi_limit = 0.25``: the credit-scoring rule of thumb (below 0.1 stable,
  0.1-0.25 moderate, above 0.25 a shifted population). Bins are baseline
  quantiles, at most 10 and at least 25 scores per bin of the smaller
  sample, and no PSI under 50 scores: under no change the PSI is about
  ``(bins - 1) * (1/n + 1/n_base)``, so 10 bins over 32 outputs would sit
  near 0.35 by chance alone. Simulated on normal scores (2,000 stable points
  against 50 baselines of 3 points): no point over 0.25 at n = 64 or 200
  (2.2% at n = 32 with 2 bins, hence the minimum), while a drop of one
  standard deviation exceeds it 97% of the time at n = 64.
- rate limits are increases over the baseline's share (empty +0.05,
  truncated +0.10, refusal-like +0.05), like the guardrails' "more
  degenerate outputs than the opponent": a model that always cuts 20% of its
  answers has not drifted.
- ``min_win_rate = 0.5``: an alert when the upper 95% bound of the human win
  rate against the previous champion is below it (the previous champion is
  now clearly preferred), once ``WIN_RATE_MIN_LABELS`` labels exist.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ml.guardrails import _quantile, is_degenerate

# Lower-cased phrases that open or make up a refusal. The list is short on
# purpose: a refusal-like share that rises is the signal, not each match.
REFUSAL_PHRASES = (
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i can't provide",
    "i cannot provide",
    "i can't do that",
    "i cannot do that",
    "i won't be able",
    "i am not able to",
    "i'm not able to",
    "i am unable to",
    "i'm unable to",
    "i'm sorry, but",
    "i am sorry, but",
    "sorry, i can't",
    "sorry, i cannot",
    "as an ai language model",
    "as an ai, i",
    "i must decline",
    "i'm not comfortable",
)
# A refusal says so early; a long answer that quotes one later is an answer.
REFUSAL_WINDOW = 160
APOSTROPHES = re.compile("[\u2019\u02bc]")

# Fewer scores than this on either side: no PSI (it would be noise).
PSI_MIN_SAMPLES = 50
PSI_MAX_BINS = 10
PSI_PER_BIN = 25
PSI_EPSILON = 1e-4
WIN_RATE_MIN_LABELS = 10


def is_refusal(text: str) -> bool:
    """Whether ``text`` reads like a refusal (a known phrase near its start)."""
    head = APOSTROPHES.sub("'", text.strip().lower()[:REFUSAL_WINDOW])
    return any(phrase in head for phrase in REFUSAL_PHRASES)


def output_figures(
    texts: Sequence[str], *, finished: Sequence[bool] | None = None
) -> dict[str, float]:
    """Shares (0..1) and lengths (characters) of one evaluation's outputs.
    ``finished[i]`` is False when output ``i`` stopped at ``max_new_tokens``."""
    n = len(texts)
    if n == 0:
        return {
            "n": 0,
            "empty_rate": 0.0,
            "truncated_rate": 0.0,
            "refusal_rate": 0.0,
            "degenerate_rate": 0.0,
            "length_mean": 0.0,
            "length_p90": 0.0,
        }
    lengths = [float(len(t)) for t in texts]
    cut = 0 if finished is None else sum(1 for f in finished if not f)
    return {
        "n": n,
        "empty_rate": sum(1 for t in texts if not t.strip()) / n,
        "truncated_rate": cut / n,
        "refusal_rate": sum(1 for t in texts if is_refusal(t)) / n,
        "degenerate_rate": sum(1 for t in texts if is_degenerate(t)) / n,
        "length_mean": statistics.fmean(lengths),
        "length_p90": _quantile(lengths, 0.9),
    }


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where undefined)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Shift:
    """A point's mean against the baseline: ``delta`` (current - baseline)
    in the metric's unit and ``sds`` in standard deviations of ``spread``."""

    baseline: float
    current: float
    delta: float
    spread: float
    sds: float


def mean_shift(
    baseline_points: Sequence[Sequence[float]], current: Sequence[float]
) -> Shift | None:
    """How far ``current``'s mean moved from the baseline window.

    ``baseline_points`` holds each baseline point's values. The spread is the
    larger of the standard deviation of the baseline points' means (how much
    the mean moves from one evaluation to the next) and the standard error
    of the current mean under the baseline's pooled spread; None without
    values on either side."""
    pooled = [v for point in baseline_points for v in point]
    if not pooled or not current:
        return None
    base = statistics.fmean(pooled)
    now = statistics.fmean(current)
    means = [statistics.fmean(p) for p in baseline_points if p]
    between = statistics.stdev(means) if len(means) > 1 else 0.0
    within = (
        statistics.stdev(pooled) / math.sqrt(len(current)) if len(pooled) > 1 else 0.0
    )
    spread = max(between, within)
    delta = now - base
    if spread <= 0.0:
        sds = 0.0 if delta == 0 else math.copysign(math.inf, delta)
    else:
        sds = delta / spread
    return Shift(baseline=base, current=now, delta=delta, spread=spread, sds=sds)


def psi_bins(n_baseline: int, n_current: int) -> int:
    """How many quantile bins a PSI over these sample sizes can afford."""
    return max(2, min(PSI_MAX_BINS, min(n_baseline, n_current) // PSI_PER_BIN))


def psi(
    baseline: Sequence[float], current: Sequence[float], *, bins: int | None = None
) -> float | None:
    """Population-stability index of ``current`` against ``baseline``:
    sum over bins of (cur - base) * ln(cur / base), with bin edges at the
    baseline's quantiles (empty bins count ``PSI_EPSILON``). None when either
    side has fewer than ``PSI_MIN_SAMPLES`` values."""
    if len(baseline) < PSI_MIN_SAMPLES or len(current) < PSI_MIN_SAMPLES:
        return None
    bins = bins or psi_bins(len(baseline), len(current))
    ordered = sorted(baseline)
    edges = sorted({_quantile(ordered, i / bins) for i in range(1, bins)})

    def shares(values: Sequence[float]) -> list[float]:
        counts = [0] * (len(edges) + 1)
        for v in values:
            counts[_bin(v, edges)] += 1
        return [max(c / len(values), PSI_EPSILON) for c in counts]

    expected, actual = shares(baseline), shares(current)
    return sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True))


def _bin(value: float, edges: Sequence[float]) -> int:
    """Index of the bin of ``value``: values equal to an edge go right."""
    lo, hi = 0, len(edges)
    while lo < hi:
        mid = (lo + hi) // 2
        if value < edges[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class DriftThresholds:
    """When a series has moved too far (module docstring: the defaults)."""

    mean_drop_sd: float = 3.0
    psi_limit: float = 0.25
    empty_rate_increase: float = 0.05
    truncated_rate_increase: float = 0.10
    refusal_rate_increase: float = 0.05
    min_win_rate: float = 0.5


@dataclass
class PointData:
    """What a check reads of one drift point."""

    scores: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    win_rate: dict[str, Any] | None = None  # {"rate", "lower", "upper", "n"}


@dataclass(frozen=True)
class Finding:
    """One check: ``breached`` says whether ``value`` is beyond ``threshold``."""

    metric: str
    value: float
    threshold: float
    baseline: float | None
    breached: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(out["value"], float) and not math.isfinite(out["value"]):
            out["value"] = None
        return out


RATES = (
    ("empty_rate", "empty_rate_increase", "empty outputs"),
    ("truncated_rate", "truncated_rate_increase", "outputs cut at the token limit"),
    ("refusal_rate", "refusal_rate_increase", "refusal-like outputs"),
)


def drift_findings(
    baseline: Sequence[PointData], current: PointData, limits: DriftThresholds
) -> list[Finding]:
    """Every check of ``current`` against its ``baseline`` window; a check
    whose data is missing (no reward scores, too few for a PSI) is left out.
    The win rate needs no baseline: it is checked whenever it has
    ``WIN_RATE_MIN_LABELS`` labels."""
    found: list[Finding] = []
    if baseline:
        shift = mean_shift([p.scores for p in baseline], current.scores)
        if shift is not None:
            drop = -shift.sds
            found.append(
                Finding(
                    metric="rm_mean",
                    value=shift.current,
                    threshold=limits.mean_drop_sd,
                    baseline=shift.baseline,
                    breached=drop > limits.mean_drop_sd,
                    message=(
                        f"mean reward-model score {shift.current:.3f} against "
                        f"{shift.baseline:.3f} after promotion: "
                        f"{_sds(drop)} standard deviations "
                        f"{'lower' if drop >= 0 else 'higher'} (alert beyond "
                        f"{limits.mean_drop_sd:g} lower; sd {shift.spread:.3f})"
                    ),
                )
            )
        pooled = [v for p in baseline for v in p.scores]
        index = psi(pooled, current.scores)
        if index is not None:
            found.append(
                Finding(
                    metric="rm_psi",
                    value=index,
                    threshold=limits.psi_limit,
                    baseline=None,
                    breached=index > limits.psi_limit,
                    message=(
                        f"population-stability index of the reward-model scores "
                        f"{index:.3f} against the window after promotion "
                        f"(alert above {limits.psi_limit:g})"
                    ),
                )
            )
        length = mean_shift([p.lengths for p in baseline], current.lengths)
        if length is not None:
            found.append(
                Finding(
                    metric="length_mean",
                    value=length.current,
                    threshold=limits.mean_drop_sd,
                    baseline=length.baseline,
                    breached=abs(length.sds) > limits.mean_drop_sd,
                    message=(
                        f"mean output length {length.current:.0f} characters "
                        f"against {length.baseline:.0f} after promotion: "
                        f"{_sds(abs(length.sds))} standard deviations "
                        f"{'longer' if length.sds >= 0 else 'shorter'} (alert "
                        f"beyond {limits.mean_drop_sd:g} either way)"
                    ),
                )
            )
        for key, limit_name, words in RATES:
            if current.figures.get("n", 0) == 0:
                break
            before = [
                p.figures[key] * p.figures["n"] for p in baseline if p.figures.get("n")
            ]
            n_before = sum(p.figures["n"] for p in baseline if p.figures.get("n"))
            if not n_before:
                break
            base_rate = sum(before) / n_before
            now = current.figures[key]
            limit = getattr(limits, limit_name)
            found.append(
                Finding(
                    metric=key,
                    value=now,
                    threshold=limit,
                    baseline=base_rate,
                    breached=now - base_rate > limit,
                    message=(
                        f"{now:.0%} {words} against {base_rate:.0%} after "
                        f"promotion (alert above +{limit:.0%})"
                    ),
                )
            )
    rate = current.win_rate
    if rate is not None and rate.get("n", 0) >= WIN_RATE_MIN_LABELS:
        found.append(
            Finding(
                metric="win_rate",
                value=rate["rate"],
                threshold=limits.min_win_rate,
                baseline=None,
                breached=rate["upper"] < limits.min_win_rate,
                message=(
                    f"human win rate {rate['rate']:.2f} against "
                    f"{rate.get('opponent_label') or 'the previous champion'} "
                    f"(95% interval {rate['lower']:.2f}-{rate['upper']:.2f} over "
                    f"{rate['n']} labels; alert when the upper bound is below "
                    f"{limits.min_win_rate:g})"
                ),
            )
        )
    return found


def _sds(value: float) -> str:
    return "infinitely many" if math.isinf(value) else f"{value:.1f}"
