"""Drift statistics (ml.drift): refusal-like outputs, PSI, the mean shift in
standard deviations, and the checks of one point against its baseline."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from ml.drift import (
    DriftThresholds,
    PointData,
    drift_findings,
    is_refusal,
    mean_shift,
    output_figures,
    psi,
)


def _scores(seed: int, n: int, mean: float = 0.0, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def _point(seed: int, *, n: int = 64, mean: float = 0.0, empty: int = 0) -> PointData:
    texts = ["" if i < empty else "a fine answer of some length" for i in range(n)]
    return PointData(
        scores=_scores(seed, n, mean),
        lengths=[float(len(t)) for t in texts],
        figures=output_figures(texts, finished=[True] * n),
    )


def test_refusal_like_outputs_are_recognised_near_their_start_only() -> None:
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("  As an AI language model, I have no opinion.")
    assert is_refusal("I can\u2019t assist with this request.")
    assert not is_refusal("The river flows kindly to the sea.")
    assert not is_refusal("x " * 200 + "I cannot help")


def test_output_figures_count_empty_cut_and_refusal_shares() -> None:
    figures = output_figures(
        ["", "I cannot help with that.", "a long answer", "cut"],
        finished=[True, True, True, False],
    )
    assert figures["n"] == 4
    assert figures["empty_rate"] == 0.25
    assert figures["refusal_rate"] == 0.25
    assert figures["truncated_rate"] == 0.25
    assert figures["degenerate_rate"] == 0.25  # the empty one


def test_psi_is_small_for_the_same_population_and_large_for_a_shifted_one() -> None:
    base = _scores(1, 300)
    assert psi(base, _scores(2, 64)) < 0.25
    assert psi(base, _scores(3, 64, mean=3.0)) > 1.0
    assert psi(base, _scores(4, 20)) is None  # too few to say


def test_mean_shift_counts_standard_deviations_of_the_mean() -> None:
    baseline = [_scores(s, 64) for s in range(3)]
    stable = mean_shift(baseline, _scores(9, 64))
    assert stable is not None and abs(stable.sds) < 3
    dropped = mean_shift(baseline, _scores(10, 64, mean=-3.0))
    assert dropped is not None and dropped.sds < -10
    # A flat baseline (greedy decoding) and the same values: no shift at all.
    flat = mean_shift([[1.0, 1.0], [1.0, 1.0]], [1.0, 1.0])
    assert flat is not None and flat.sds == 0.0
    assert mean_shift([], [1.0]) is None


def test_a_drop_of_the_reward_scores_breaches_mean_and_psi_checks() -> None:
    baseline = [_point(s) for s in range(3)]
    found = {
        f.metric: f
        for f in drift_findings(baseline, _point(7, mean=-3.0), DriftThresholds())
    }
    assert found["rm_mean"].breached and "lower" in found["rm_mean"].message
    assert found["rm_psi"].breached
    assert not found["empty_rate"].breached


def test_a_burst_of_empty_outputs_breaches_the_empty_rate_check() -> None:
    baseline = [_point(s) for s in range(3)]
    found = {
        f.metric: f
        for f in drift_findings(baseline, _point(7, empty=20), DriftThresholds())
    }
    assert found["empty_rate"].breached
    assert found["empty_rate"].baseline == 0.0
    assert found["empty_rate"].value == pytest.approx(20 / 64)


def test_a_stable_series_breaches_nothing() -> None:
    """Twenty evaluations drawn from one population: no check fires."""
    limits = DriftThresholds()
    baseline = [_point(s) for s in range(3)]
    for seed in range(100, 120):
        findings = drift_findings(baseline, _point(seed), limits)
        assert {f.metric for f in findings} >= {"rm_mean", "rm_psi", "empty_rate"}
        assert not [f for f in findings if f.breached], findings


def test_win_rate_alerts_only_when_the_previous_champion_is_clearly_preferred() -> None:
    limits = DriftThresholds()
    clear = PointData(win_rate={"rate": 0.2, "lower": 0.1, "upper": 0.35, "n": 40})
    unsure = PointData(win_rate={"rate": 0.4, "lower": 0.2, "upper": 0.6, "n": 40})
    few = PointData(win_rate={"rate": 0.0, "lower": 0.0, "upper": 0.0, "n": 3})
    assert [f.breached for f in drift_findings([], clear, limits)] == [True]
    assert [f.breached for f in drift_findings([], unsure, limits)] == [False]
    assert drift_findings([], few, limits) == []


def test_the_statistics_import_no_torch() -> None:
    """The web process draws and checks the series with this module."""
    code = "import sys, ml.drift; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
