"""Guardrails: what a candidate's outputs look like before people see them.

Text-only measures (no model needed), computed over one version's outputs on
the same prompts as its opponent's:

- ``repetition``: per output, the share of word 3-grams that repeat an
  earlier 3-gram of the same output (0 for varied text, near 1 for a loop);
- ``degenerate``: an output that is empty, or longer than a few words and
  either mostly repeated 3-grams or one sentence said at least three times
  (the "You're not a helpful AI." loop DPO fell into on 60 labels);
- ``distinct_1`` / ``distinct_2``: distinct words / word pairs over all
  outputs (low when every answer says the same thing);
- ``empty`` and ``truncated``: outputs with no text, outputs cut at
  ``max_new_tokens`` before the end-of-sequence token;
- ``length``: characters per output (mean, median, 90th percentile).

Drift from the base (the base model's mean per-token negative log-likelihood
of the outputs, a KL proxy) needs the model and is measured by
``ml.generation.AdapterGenerator.negative_log_likelihood``; ``summarize``
takes it as an optional input so one record holds every figure.

Rules of thumb behind the thresholds: repeated n-grams and distinct-n follow
the degeneration literature (Holtzman et al., 2020; Welleck et al., 2020);
RLHFlow found length the main way iterative preference loops go wrong.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

# An output counts as degenerate past these (each measured on SmolLM2 outputs:
# normal answers stay under 0.2 repeated 3-grams; loops sit above 0.6).
DEGENERATE_REPETITION = 0.5
MIN_WORDS_FOR_REPETITION = 12
REPEATED_SENTENCE_TIMES = 3


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repetition(text: str, n: int = 3) -> float:
    """Share of n-grams in ``text`` that repeat an earlier one (0..1)."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def most_repeated_sentence(text: str) -> int:
    """How often the most frequent sentence of ``text`` occurs."""
    sentences = [s.strip().lower() for s in SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        return 0
    return Counter(sentences).most_common(1)[0][1]


def is_degenerate(text: str) -> bool:
    """Empty, or a loop: mostly repeated 3-grams or one sentence said 3+ times."""
    if not text.strip():
        return True
    if len(words(text)) < MIN_WORDS_FOR_REPETITION:
        return False
    return (
        repetition(text) >= DEGENERATE_REPETITION
        or most_repeated_sentence(text) >= REPEATED_SENTENCE_TIMES
    )


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all ``texts`` (0..1)."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    if not grams:
        return 0.0
    return len(set(grams)) / len(grams)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


@dataclass(frozen=True)
class GuardrailSummary:
    """One version's figures over ``n`` outputs (shares are 0..1)."""

    n: int
    degenerate: float
    repetition_mean: float
    distinct_1: float
    distinct_2: float
    empty: float
    truncated: float
    length_mean: float
    length_median: float
    length_p90: float
    nll_under_base: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    texts: Sequence[str],
    *,
    finished: Sequence[bool] | None = None,
    nll_under_base: float | None = None,
) -> GuardrailSummary:
    """Figures for one version's outputs. ``finished[i]`` is False when output
    ``i`` stopped at ``max_new_tokens`` instead of its end-of-sequence token."""
    n = len(texts)
    if n == 0:
        return GuardrailSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    lengths = [float(len(t)) for t in texts]
    cut = 0 if finished is None else sum(1 for f in finished if not f)
    return GuardrailSummary(
        n=n,
        degenerate=sum(is_degenerate(t) for t in texts) / n,
        repetition_mean=statistics.fmean(repetition(t) for t in texts),
        distinct_1=distinct_n(texts, 1),
        distinct_2=distinct_n(texts, 2),
        empty=sum(1 for t in texts if not t.strip()) / n,
        truncated=cut / n,
        length_mean=statistics.fmean(lengths),
        length_median=float(statistics.median(lengths)),
        length_p90=_quantile(lengths, 0.9),
        nll_under_base=nll_under_base,
    )


@dataclass(frozen=True)
class GuardrailLimits:
    """How much worse than its opponent a candidate may look.

    ``max_extra_degenerate``: degenerate share above the opponent's (0.05 =
    five more outputs in a hundred); ``max_length_ratio``: mean length over
    the opponent's; ``max_nll_increase``: nats per token above the
    opponent's own outputs under the base (how far it drifted).
    """

    max_extra_degenerate: float = 0.05
    max_length_ratio: float = 2.0
    max_nll_increase: float = 1.0


def violations(
    candidate: GuardrailSummary,
    opponent: GuardrailSummary,
    limits: GuardrailLimits,
) -> list[str]:
    """Plain-language reasons the candidate fails its guardrails (empty: passes)."""
    reasons: list[str] = []
    extra = candidate.degenerate - opponent.degenerate
    if extra > limits.max_extra_degenerate:
        reasons.append(
            f"{candidate.degenerate:.0%} of its outputs are empty or loops against "
            f"{opponent.degenerate:.0%} for the opponent "
            f"(allowed: {limits.max_extra_degenerate:.0%} more)"
        )
    if (
        opponent.length_mean > 0
        and candidate.length_mean / opponent.length_mean > limits.max_length_ratio
    ):
        reasons.append(
            f"its outputs are {candidate.length_mean / opponent.length_mean:.1f}x as long "
            f"as the opponent's (allowed: {limits.max_length_ratio:.1f}x)"
        )
    if (
        candidate.nll_under_base is not None
        and opponent.nll_under_base is not None
        and candidate.nll_under_base - opponent.nll_under_base > limits.max_nll_increase
    ):
        reasons.append(
            "it drifted from the base: "
            f"{candidate.nll_under_base:.2f} nats/token under the base against "
            f"{opponent.nll_under_base:.2f} (allowed: +{limits.max_nll_increase:.2f})"
        )
    return reasons
