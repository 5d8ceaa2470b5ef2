"""The job reporter's ETA (training/services/execute.py JobReporter)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from tests.training.test_views import make_job
from training.services.execute import ETA_WINDOW_STEPS, JobReporter


@pytest.mark.django_db(transaction=True)
def test_the_eta_follows_the_pace_of_recent_steps_not_the_whole_run() -> None:
    """Ten slow steps (10 s each) then fast ones (1 s each): once the window
    holds only fast steps the ETA is the remaining steps at 1 s, where the
    whole-run average would still say several seconds a step; it only falls
    as steps pass."""
    reporter = JobReporter(make_job(status="running").pk)
    try:
        reporter._training_started = 0.0
        now, etas = 0.0, []
        for step in range(1, 101):
            now += 10.0 if step <= 10 else 1.0
            etas.append(reporter._eta(step=step, total=100, now=now))
        assert etas[0] == 990  # one sample: timed from the start of training
        fast = 10 + ETA_WINDOW_STEPS + 1
        assert etas[fast - 1] == 100 - fast  # 1 s a step, not the average
        assert all(a >= b for a, b in pairwise(etas[fast - 1 :]))
        assert etas[-1] == 0
        assert reporter._eta(step=0, total=100, now=now) is None
    finally:
        reporter.close()
