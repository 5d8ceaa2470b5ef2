from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from core import roles
from labeling.models import (
    Campaign,
    Comparison,
    Completion,
    Lease,
    Preference,
    PreferenceRevision,
    Prompt,
)
from labeling.selectors.quality import campaign_agreement, gold_scores
from training.management.commands.seed_demo import DEMO_CAMPAIGN
from training.models import TrainingPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path
    return tmp_path


def _seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _row_counts() -> dict[str, int]:
    models = (
        get_user_model(),
        Group,
        Campaign,
        Prompt,
        Completion,
        Comparison,
        Lease,
        Preference,
        PreferenceRevision,
        TrainingPolicy,
    )
    return {m.__name__: m.objects.count() for m in models}


def test_seeded_demo_campaign_has_agreement_and_gold_accuracy(data_dir: Path) -> None:
    _seed()
    campaign = Campaign.objects.get(name=DEMO_CAMPAIGN)
    assert campaign.overlap_k == 2
    assert campaign.gold_rate == pytest.approx(0.1)

    agreement = campaign_agreement(campaign=campaign)
    assert agreement["items"] == 6
    assert agreement["alpha"] is not None
    [pair] = agreement["pairs"]
    assert sorted(pair["annotators"]) == ["alice", "bob"]
    assert pair["items"] == 6
    assert pair["raw_agreement"] == pytest.approx(4 / 6)
    assert pair["kappa"] is not None

    User = get_user_model()
    scores = gold_scores(campaign=campaign)
    alice = scores[User.objects.get(username="alice").pk]
    bob = scores[User.objects.get(username="bob").pk]
    assert (alice.correct, alice.n) == (3, 3)
    assert (bob.correct, bob.n) == (2, 3)
    assert Comparison.objects.filter(campaign=campaign, is_gold=True).count() == 3

    # Every seeded label came through the queue: one submitted lease each.
    labels = Preference.objects.filter(comparison__campaign=campaign)
    assert labels.count() == 18
    assert not labels.filter(lease__isnull=True).exists()
    assert not labels.exclude(lease__status=Lease.Status.SUBMITTED).exists()
    # Labeled pairs are complete (gold ones stay open, as gold does); the rest wait.
    assert (
        Comparison.objects.filter(
            campaign=campaign, status=Comparison.Status.COMPLETE
        ).count()
        == 6
    )
    assert (
        Comparison.objects.filter(
            campaign=campaign, status=Comparison.Status.OPEN, is_gold=False
        ).count()
        == 52 - 9
    )


def test_seed_demo_creates_a_reviewer_with_only_the_reviewer_role(
    data_dir: Path,
) -> None:
    output = _seed()
    User = get_user_model()
    carol = User.objects.get(username="carol")
    assert set(carol.groups.values_list("name", flat=True)) == {roles.REVIEWER}
    assert not carol.is_superuser and not carol.is_staff
    assert roles.is_reviewer(carol) and not roles.is_admin(carol)
    creds = json.loads((data_dir / "demo-credentials.json").read_text())
    assert set(creds) == {"admin", "alice", "bob", "carol"}
    assert carol.check_password(creds["carol"])
    assert f"carol    password: {creds['carol']}" in output
    assert User.objects.get(username="admin").is_superuser
    for name in ("alice", "bob"):
        groups = User.objects.get(username=name).groups.values_list("name", flat=True)
        assert set(groups) == {roles.ANNOTATOR}


def test_second_seed_demo_run_changes_no_row_counts(data_dir: Path) -> None:
    _seed()
    before = _row_counts()
    creds = (data_dir / "demo-credentials.json").read_text()
    _seed()
    assert _row_counts() == before
    assert (data_dir / "demo-credentials.json").read_text() == creds


def test_login_page_names_demo_accounts_only_after_seeding(data_dir: Path) -> None:
    client = Client()
    page = client.get(reverse("login")).content.decode()
    assert "demo-accounts" not in page
    _seed()
    page = client.get(reverse("login")).content.decode()
    assert "Demo accounts: admin, alice, bob, carol." in page
    assert "demo-credentials.json" in page
    creds = json.loads((data_dir / "demo-credentials.json").read_text())
    assert not any(password in page for password in creds.values())
