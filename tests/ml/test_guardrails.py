"""ml.guardrails: repetition, degeneration, diversity, length and drift checks."""

from __future__ import annotations

from ml.guardrails import (
    GuardrailLimits,
    distinct_n,
    is_degenerate,
    repetition,
    summarize,
    violations,
)

LOOP = "You're not a helpful AI. " * 8
ANSWER = (
    "Paris is the capital of France. It sits on the Seine and has been the "
    "seat of government since the Middle Ages."
)


def test_a_sentence_loop_is_degenerate_and_a_normal_answer_is_not() -> None:
    assert is_degenerate(LOOP)
    assert not is_degenerate(ANSWER)
    assert is_degenerate("   ")
    assert not is_degenerate("Yes.")  # short answers are not loops


def test_repetition_is_near_one_for_a_loop_and_zero_for_varied_text() -> None:
    assert repetition(LOOP) > 0.8
    assert repetition(ANSWER) == 0.0
    assert repetition("") == 0.0


def test_distinct_n_drops_when_every_output_is_the_same() -> None:
    varied = [ANSWER, "Two plus two is four.", "Water boils at 100 degrees."]
    assert distinct_n([ANSWER] * 3, 2) < distinct_n(varied, 2)


def test_summary_counts_shares_and_lengths() -> None:
    summary = summarize(
        [ANSWER, LOOP, "", "Short."], finished=[True, False, True, True]
    )
    assert summary.n == 4
    assert summary.degenerate == 0.5  # the loop and the empty one
    assert summary.empty == 0.25 and summary.truncated == 0.25
    assert summary.length_median > 0 and summary.length_p90 >= summary.length_median


def test_a_looping_candidate_fails_its_guardrails_with_a_reason() -> None:
    base = summarize([ANSWER] * 20)
    candidate = summarize([ANSWER] * 14 + [LOOP] * 6)
    reasons = violations(candidate, base, GuardrailLimits())
    assert len(reasons) == 1 and "30% of its outputs" in reasons[0]
    assert violations(base, base, GuardrailLimits()) == []


def test_drift_and_length_limits() -> None:
    base = summarize([ANSWER] * 10, nll_under_base=2.0)
    far = summarize([ANSWER * 3] * 10, nll_under_base=3.5)
    reasons = violations(far, base, GuardrailLimits())
    assert any("as long" in r for r in reasons)
    assert any("drifted" in r for r in reasons)
