"""Tests for ``core.stats``: pure functions, no database needed."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable

import pytest

from core.stats import (
    Outcome,
    WinRate,
    bootstrap_bradley_terry,
    bradley_terry,
    cohen_kappa,
    is_position_biased,
    krippendorff_alpha_nominal,
    left_pick_rate,
    wilson_interval,
    win_rate,
    win_rate_matrix,
    win_rates,
)

TRUE_STRENGTHS = {"v0": 0.0, "v1": 0.5, "v2": 1.0, "v3": -0.5, "v4": 1.5}

# With 4,000 comparisons (about 400 per pair) the largest error of any
# estimated difference to the anchor v0, measured over seeds 0-29, was 0.174
# without ties and 0.150 with 20% ties; the ranking was exact every time.
TOLERANCE = 0.25


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _simulate(seed: int, n: int, tie_rate: float = 0.0) -> list[Outcome]:
    """Comparisons over random pairs with P(a beats b) = sigmoid(s_a - s_b).

    With ``tie_rate`` t a tie happens with probability t and otherwise a wins
    with probability (sigmoid - t/2) / (1 - t), so a's expected score is still
    sigmoid(s_a - s_b): exactly what ties-as-half-wins Bradley-Terry models.
    """
    rng = random.Random(seed)
    names = sorted(TRUE_STRENGTHS)
    outcomes = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        p = _sigmoid(TRUE_STRENGTHS[a] - TRUE_STRENGTHS[b])
        if tie_rate and rng.random() < tie_rate:
            outcomes.append(Outcome(a, b, 0.5))
            continue
        p_win = (p - tie_rate / 2.0) / (1.0 - tie_rate)
        outcomes.append(Outcome(a, b, 1.0 if rng.random() < p_win else 0.0))
    return outcomes


# --------------------------------------------------------------------------
# Wilson
# --------------------------------------------------------------------------


def test_wilson_interval_matches_known_values() -> None:
    """5/10 gives (0.2366, 0.7634) and 0/10 gives (0, 0.2775), as tabulated."""
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - 0.2775, abs=1e-4)


def test_wilson_interval_without_data_is_uninformative() -> None:
    """n == 0 gives the whole unit interval."""
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_rejects_impossible_counts() -> None:
    """More successes than trials, or negative counts, raise ValueError."""
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


# --------------------------------------------------------------------------
# Bradley-Terry
# --------------------------------------------------------------------------


@pytest.mark.parametrize("tie_rate", [0.0, 0.2])
def test_bradley_terry_recovers_known_strengths(tie_rate: float) -> None:
    """Differences to the anchor are within TOLERANCE and the order is exact."""
    estimate = bradley_terry(_simulate(7, 4000, tie_rate), anchor="v0")
    assert estimate["v0"] == 0.0
    for name, true in TRUE_STRENGTHS.items():
        assert estimate[name] == pytest.approx(true, abs=TOLERANCE), name
    assert sorted(estimate, key=estimate.__getitem__) == sorted(
        TRUE_STRENGTHS, key=TRUE_STRENGTHS.__getitem__
    )


def test_bradley_terry_centres_on_the_mean_without_anchor() -> None:
    """Without an anchor (or with one that is absent) the strengths average 0,
    and differences are the same as with an anchor."""
    outcomes = _simulate(1, 1000)
    anchored = bradley_terry(outcomes, anchor="v3")
    for free in (bradley_terry(outcomes), bradley_terry(outcomes, anchor="nope")):
        assert math.fsum(free.values()) == pytest.approx(0.0, abs=1e-9)
        for name in TRUE_STRENGTHS:
            assert free[name] - free["v3"] == pytest.approx(anchored[name], abs=1e-6)


def test_bradley_terry_accepts_plain_tuples_in_either_order() -> None:
    """(a, b, r) and (b, a, 1 - r) are the same outcome; tuples work too."""
    outcomes = _simulate(2, 500)
    flipped = [(o.b, o.a, 1.0 - o.result) for o in outcomes]
    assert bradley_terry(flipped) == pytest.approx(bradley_terry(outcomes), abs=1e-7)


def test_bradley_terry_of_nothing_is_empty() -> None:
    """No outcomes, no versions."""
    assert bradley_terry([]) == {}
    assert bootstrap_bradley_terry([]) == {}


def test_bradley_terry_handles_disconnected_graph_and_unbeaten_version() -> None:
    """Two components that never met, plus a version that never lost, still
    get finite strengths; within a component the stronger side is ahead."""
    outcomes = (
        [Outcome("a", "b", 1.0)] * 7
        + [Outcome("a", "b", 0.0)] * 3
        + [Outcome("c", "d", 1.0)] * 5  # c never lost
        + [Outcome("c", "d", 0.5)] * 2
    )
    estimate = bradley_terry(outcomes, anchor="a")
    assert set(estimate) == {"a", "b", "c", "d"}
    assert all(math.isfinite(s) for s in estimate.values())
    assert estimate["a"] > estimate["b"]
    assert estimate["c"] > estimate["d"]
    boot = bootstrap_bradley_terry(outcomes, n_boot=50, anchor="a")
    assert all(math.isfinite(x) for triple in boot.values() for x in triple)


def test_bradley_terry_without_prior_is_the_mle_when_it_exists() -> None:
    """prior=0 matches the regularised fit closely on well-connected data and
    refuses data for which the MLE does not exist."""
    outcomes = _simulate(3, 2000)
    assert bradley_terry(outcomes, prior=0.0) == pytest.approx(
        bradley_terry(outcomes), abs=0.02
    )
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry([Outcome("a", "b", 1.0), Outcome("b", "c", 0.5)], prior=0.0)


def test_bradley_terry_rejects_malformed_outcomes() -> None:
    """A version compared with itself or a result outside [0, 1] is an error."""
    with pytest.raises(ValueError):
        bradley_terry([Outcome("a", "a", 1.0)])
    with pytest.raises(ValueError):
        bradley_terry([Outcome("a", "b", 2.0)])


@pytest.mark.parametrize("tie_rate", [0.0, 0.2])
def test_bootstrap_intervals_contain_the_true_strengths(tie_rate: float) -> None:
    """95% intervals contain the truth for nearly all versions (over seeds 0-9
    at most one of five versions was missed), bracket the point estimate,
    and the anchor's interval is exactly 0."""
    boot = bootstrap_bradley_terry(_simulate(7, 4000, tie_rate), anchor="v0", seed=1)
    assert boot["v0"] == (0.0, 0.0, 0.0)
    assert boot.keys() == TRUE_STRENGTHS.keys()
    point = bradley_terry(_simulate(7, 4000, tie_rate), anchor="v0")
    misses = 0
    for name, (estimate, lower, upper) in boot.items():
        assert estimate == pytest.approx(point[name], abs=1e-6)
        assert lower <= estimate <= upper
        misses += not lower <= TRUE_STRENGTHS[name] <= upper
    assert misses <= 1


def test_bootstrap_intervals_narrow_with_more_data() -> None:
    """Eight times the comparisons gives clearly narrower intervals (about
    sqrt(8) ~ 2.8 times; measured 0.77-0.85 against 0.26-0.29)."""
    small = bootstrap_bradley_terry(_simulate(1, 500), anchor="v0")
    large = bootstrap_bradley_terry(_simulate(1, 4000), anchor="v0")
    for name in ("v1", "v2", "v3", "v4"):
        assert large[name][2] - large[name][1] < 0.5 * (small[name][2] - small[name][1])


def test_bootstrap_is_deterministic_given_the_seed() -> None:
    """Same seed, same intervals; another seed, other intervals."""
    outcomes = _simulate(4, 600)
    first = bootstrap_bradley_terry(outcomes, n_boot=50, seed=5)
    assert bootstrap_bradley_terry(outcomes, n_boot=50, seed=5) == first
    assert bootstrap_bradley_terry(outcomes, n_boot=50, seed=6) != first


# --------------------------------------------------------------------------
# Win rates
# --------------------------------------------------------------------------


def _mix(wins: int, losses: int, ties: int) -> list[Outcome]:
    return (
        [Outcome("a", "b", 1.0)] * (wins // 2)
        + [Outcome("b", "a", 0.0)] * (wins - wins // 2)
        + [Outcome("a", "b", 0.0)] * losses
        + [Outcome("b", "a", 0.5)] * ties
    )


def test_win_rate_of_a_known_mix() -> None:
    """70 wins, 20 losses, 10 ties is 0.75; the interval contains it and
    excludes 0.5; outcomes with other versions are ignored."""
    outcomes = _mix(70, 20, 10) + [Outcome("a", "c", 0.0)] * 50
    result = win_rate(outcomes, "a", "b")
    assert (result.wins, result.losses, result.ties, result.n) == (70, 20, 10, 100)
    assert result.rate == pytest.approx(0.75)
    assert result.lower < 0.75 < result.upper
    assert result.lower > 0.5
    # A binomial-like spread: sd ~ sqrt(0.75 * 0.25 / 100) ~ 0.04 (ties shrink it a bit).
    assert 0.1 < result.upper - result.lower < 0.2


def test_win_rate_is_symmetric_in_the_order_of_a_and_b() -> None:
    """Swapping a and b swaps wins and losses and mirrors rate and interval."""
    outcomes = _mix(70, 20, 10)
    ab, ba = win_rate(outcomes, "a", "b"), win_rate(outcomes, "b", "a")
    assert (ba.wins, ba.losses, ba.ties, ba.n) == (ab.losses, ab.wins, ab.ties, ab.n)
    assert ba.rate == pytest.approx(1.0 - ab.rate)
    assert ba.lower == pytest.approx(1.0 - ab.upper)
    assert ba.upper == pytest.approx(1.0 - ab.lower)


def test_win_rate_without_outcomes_is_uninformative() -> None:
    """No outcomes between the two gives rate 0.5 on the interval [0, 1]."""
    assert win_rate([Outcome("a", "c", 1.0)], "a", "b") == WinRate(
        0, 0, 0, 0, 0.5, 0.0, 1.0
    )


def test_win_rate_matrix_lists_every_ordered_pair_that_met() -> None:
    """Each ordered pair with outcomes maps to (rate, n); pairs that never met
    are absent; the two directions are complementary."""
    outcomes = (
        _mix(70, 20, 10) + [Outcome("c", "a", 1.0)] * 3 + [Outcome("a", "c", 0.5)]
    )
    matrix = win_rate_matrix(outcomes)
    assert matrix["a"]["b"] == (pytest.approx(0.75), 100)
    assert matrix["b"]["a"] == (pytest.approx(0.25), 100)
    assert matrix["c"]["a"] == (pytest.approx(0.875), 4)
    assert matrix["a"]["c"] == (pytest.approx(0.125), 4)
    assert "c" not in matrix["b"] and "b" not in matrix["c"]
    assert win_rate_matrix([]) == {}


# --------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------


def _table(yy: int, yn: int, ny: int, nn: int) -> list[tuple[str, str]]:
    return [("y", "y")] * yy + [("y", "n")] * yn + [("n", "y")] * ny + [("n", "n")] * nn


def test_cohen_kappa_matches_textbook_values() -> None:
    """Hand-computed 2x2 tables.

    20/5/10/15: p_o = 35/50 = 0.7, rater 1 says yes 25/50, rater 2 30/50, so
    p_e = 0.5*0.6 + 0.5*0.4 = 0.5 and kappa = (0.7 - 0.5) / 0.5 = 0.4.
    45/15/25/15: p_o = 0.6, p_e = 0.6*0.7 + 0.4*0.3 = 0.54, kappa = 0.06/0.46.
    """
    assert cohen_kappa(_table(20, 5, 10, 15)) == pytest.approx(0.4)
    assert cohen_kappa(_table(45, 15, 25, 15)) == pytest.approx(0.06 / 0.46)
    assert cohen_kappa(_table(1, 1, 1, 1)) == pytest.approx(0.0)


def test_cohen_kappa_of_perfect_agreement_is_one() -> None:
    """Identical labels give 1.0, also in the degenerate single-label case."""
    assert cohen_kappa([("a", "a"), ("b", "b"), ("c", "c"), (1, 1)]) == 1.0
    assert cohen_kappa([("a", "a")] * 5) == 1.0


def test_cohen_kappa_needs_two_items() -> None:
    """Fewer than two items give None."""
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "b")]) is None


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
# four observers, twelve units, nominal values 1-5, None = missing.
# Hand check: pairable values n = 40 (unit 12 has only one); disagreement
# within units: unit 2 (2,2,3,2) 6/3, unit 6 (1,2,3,4) 12/3, unit 8
# (1,1,2,1) 6/3, total 8; margins 1:9 2:13 3:10 4:5 5:3, sum of squares 384;
# alpha = 1 - 39 * 8 / (1600 - 384) = 0.7434.
KRIPPENDORFF_2011 = {
    #       A     B     C     D
    1: [1, 1, None, 1],
    2: [2, 2, 3, 2],
    3: [3, 3, 3, 3],
    4: [3, 3, 3, 3],
    5: [2, 2, 2, 2],
    6: [1, 2, 3, 4],
    7: [4, 4, 4, 4],
    8: [1, 1, 2, 1],
    9: [2, 2, 2, 2],
    10: [None, 5, 5, 5],
    11: [None, None, 1, 1],
    12: [None, 3, None, None],
}


def test_krippendorff_alpha_matches_the_published_example() -> None:
    """Krippendorff's own nominal example with missing values gives 0.743."""
    alpha = krippendorff_alpha_nominal(KRIPPENDORFF_2011)
    assert alpha == pytest.approx(0.743, abs=0.001)
    assert alpha == pytest.approx(1 - 39 * 8 / 1216)


def test_krippendorff_alpha_ignores_unpairable_units_and_accepts_strings() -> None:
    """Units with a single value do not change alpha; labels may be strings."""
    as_strings = {
        unit: [None if v is None else str(v) for v in values]
        for unit, values in KRIPPENDORFF_2011.items()
    }
    as_strings["extra"] = ["9"]
    assert krippendorff_alpha_nominal(as_strings) == pytest.approx(1 - 39 * 8 / 1216)


def test_krippendorff_alpha_degenerate_cases() -> None:
    """Perfect agreement with variation is 1.0; no variation or fewer than
    two pairable values is None; systematic disagreement is negative."""
    assert krippendorff_alpha_nominal({1: ["a", "a"], 2: ["b", "b", "b"]}) == 1.0
    assert krippendorff_alpha_nominal({1: ["a", "a"], 2: ["a", "a"]}) is None
    assert krippendorff_alpha_nominal({1: ["a"], 2: ["b"]}) is None
    assert krippendorff_alpha_nominal({}) is None
    disagreement = krippendorff_alpha_nominal({1: ["a", "b"], 2: ["b", "a"]})
    assert disagreement is not None and disagreement < 0


def test_reliable_annotators_agree_more_than_noisy_ones() -> None:
    """Raters who give the true label 90% of the time get higher kappa and
    alpha than raters who do so 40% of the time (else a random label)."""
    rng = random.Random(11)
    labels = ["good", "bad", "same"]
    truth = [rng.choice(labels) for _ in range(300)]

    def rate(accuracy: float) -> list[str]:
        return [t if rng.random() < accuracy else rng.choice(labels) for t in truth]

    reliable = [rate(0.9) for _ in range(3)]
    noisy = [rate(0.4) for _ in range(3)]

    kappa_reliable = cohen_kappa(list(zip(reliable[0], reliable[1], strict=True)))
    kappa_noisy = cohen_kappa(list(zip(noisy[0], noisy[1], strict=True)))
    assert kappa_reliable is not None and kappa_noisy is not None
    assert kappa_reliable > 0.7 > 0.5 > kappa_noisy > 0.0

    def units(raters: list[list[str]]) -> dict[Hashable, list[str]]:
        return {i: [r[i] for r in raters] for i in range(len(truth))}

    alpha_reliable = krippendorff_alpha_nominal(units(reliable))
    alpha_noisy = krippendorff_alpha_nominal(units(noisy))
    assert alpha_reliable is not None and alpha_noisy is not None
    assert alpha_reliable > 0.7 > 0.5 > alpha_noisy > 0.0
    assert alpha_reliable == pytest.approx(kappa_reliable, abs=0.1)


# --------------------------------------------------------------------------
# Position bias
# --------------------------------------------------------------------------


def _picks(p_left: float, n: int, seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < p_left for _ in range(n)]


def test_a_left_biased_picker_is_flagged() -> None:
    """p(left) = 0.7 over 400 picks: rate near 0.7, interval above 0.5."""
    picks = _picks(0.7, 400, seed=1)
    rate, lower, upper = left_pick_rate(picks)
    assert rate == pytest.approx(0.7, abs=0.05)
    assert 0.5 < lower < rate < upper
    assert is_position_biased(picks)
    assert is_position_biased([not p for p in picks])  # right-biased counts too


def test_an_unbiased_picker_is_not_flagged() -> None:
    """p(left) = 0.5 over 400 picks: the interval contains 0.5."""
    picks = _picks(0.5, 400, seed=1)
    rate, lower, upper = left_pick_rate(picks)
    assert lower < 0.5 < upper
    assert not is_position_biased(picks)


def test_position_bias_needs_enough_picks() -> None:
    """Even all-left picks are not flagged below min_n; no picks is (0.5, 0, 1)."""
    assert not is_position_biased([True] * 19)
    assert is_position_biased([True] * 20)
    assert not is_position_biased([True] * 50, min_n=51)
    assert left_pick_rate([]) == (0.5, 0.0, 1.0)


def test_win_rates_match_win_rate_for_every_pair_in_both_orders() -> None:
    """The all-pairs helper gives exactly what win_rate gives pair by pair."""
    outcomes = _simulate(5, 800, tie_rate=0.1)
    every = win_rates(outcomes, n_boot=300, seed=3)
    assert len(every) == 20  # 10 pairs, both orders
    for (a, b), result in every.items():
        assert result == win_rate(outcomes, a, b, n_boot=300, seed=3)


def test_bootstrap_win_rate_interval_matches_the_normal_approximation() -> None:
    """Multinomial resampling has the spread of index resampling: for 0.75
    over 400 outcomes (no ties) the 95% interval is about 0.75 +- 1.96 *
    sqrt(0.75 * 0.25 / 400) = +- 0.042."""
    outcomes = [Outcome("a", "b", 1.0)] * 300 + [Outcome("a", "b", 0.0)] * 100
    result = win_rate(outcomes, "a", "b", n_boot=4000)
    assert result.lower == pytest.approx(0.75 - 0.042, abs=0.006)
    assert result.upper == pytest.approx(0.75 + 0.042, abs=0.006)
