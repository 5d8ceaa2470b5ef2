"""The drift watch: served versions evaluated after their promotion, alerts
opened on an injected shift (and sent to a webhook), none on a stable
series, resolved when the series returns; the evaluation end to end on the
real gpu worker with the tiny model; the page, the campaign list and the
API with their permissions."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from core.exceptions import Conflict
from labeling.models import Campaign, Preference, Prompt
from models_hub.models import (
    Adapter,
    BaseModelVersion,
    DriftAlert,
    DriftPoint,
    DriftPolicy,
    ServedResponse,
)
from models_hub.services.drift import (
    drift_check,
    drift_evaluate,
    drift_evaluate_request,
    drift_heldout_prompts,
    drift_policy_update,
    drift_tick,
)
from models_hub.services.registry import (
    adapter_promote,
    adapter_register,
    generation_settings_for,
)
from tests.labeling.factories import CampaignFactory, ComparisonFactory, PromptFactory

# ---------------------------------------------------------------- helpers


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server in a thread: (its URL, the JSON bodies it got)."""
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _base() -> BaseModelVersion:
    return BaseModelVersion.objects.create(
        name=f"drift-base-{uuid.uuid4().hex[:6]}", source="/nowhere"
    )


def _champion(campaign: Campaign, base: BaseModelVersion, **fields: Any) -> Adapter:
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path=fields.pop("storage_path", f"adapters/none-{uuid.uuid4().hex}"),
        metrics={},
    )
    return adapter_promote(
        adapter=adapter, actor=None, override=True, reason="test champion"
    )


def _serve(
    campaign: Campaign,
    adapter: Adapter,
    n: int,
    *,
    empty: int = 0,
    refusals: int = 0,
    seed: int = 0,
) -> None:
    """``n`` responses of ``adapter`` through the campaign's alias: the first
    ``empty`` empty, the next ``refusals`` refusals, the rest ordinary
    answers of varied length."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i < empty:
            text = ""
        elif i < empty + refusals:
            text = "I'm sorry, but I can't help with that."
        else:
            text = "The river " + "flows kindly " * rng.randint(3, 6) + "."
        rows.append(
            ServedResponse(
                public_id=f"chatcmpl-{uuid.uuid4().hex}",
                endpoint=ServedResponse.Endpoint.CHAT,
                requested_model=f"campaign-{campaign.pk}/champion",
                served_model=adapter.served_name,
                base_model=adapter.base_model,
                adapter=adapter,
                campaign=campaign,
                arm=ServedResponse.Arm.CHAMPION,
                prompt=[{"role": "user", "content": f"tell me about the river {i}"}],
                text=text,
                finish_reason="stop",
                completion_tokens=len(text.split()),
            )
        )
    ServedResponse.objects.bulk_create(rows)


def _golden_point(
    campaign: Campaign,
    adapter: Adapter,
    *,
    mean: float,
    seed: int,
    n: int = 64,
    taken_at: Any = None,
) -> DriftPoint:
    """A held-out-prompt evaluation whose reward scores are N(mean, 1)."""
    rng = random.Random(seed)
    scores = [rng.gauss(mean, 1.0) for _ in range(n)]
    return DriftPoint.objects.create(
        campaign=campaign,
        adapter=adapter,
        base_model=adapter.base_model,
        source=DriftPoint.Source.GOLDEN,
        taken_at=taken_at or timezone.now(),
        n=n,
        rm_mean=sum(scores) / n,
        length_mean=40.0,
        values={"scores": scores, "lengths": [40.0] * n},
        details={"scored": True},
    )


# ---------------------------------------------------------------- checks


@pytest.mark.django_db
def test_a_three_sd_drop_of_reward_scores_opens_alerts_and_calls_the_webhook(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    """After three evaluations (the baseline window after promotion), a point
    whose reward-model scores dropped by 3 standard deviations opens a mean
    and a PSI alert; each is POSTed to the webhook as JSON and marked sent.
    The next point back at the baseline resolves both."""
    url, received = webhook
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    policy = drift_policy_update(campaign=campaign, actor=None, webhook_url=url)
    for seed in range(3):
        assert (
            drift_check(points=[_golden_point(campaign, champion, mean=0.0, seed=seed)])
            == []
        )

    opened = drift_check(
        points=[_golden_point(campaign, champion, mean=-3.0, seed=10)], policy=policy
    )

    assert sorted(a.metric for a in opened) == ["rm_mean", "rm_psi"]
    mean_alert = next(a for a in opened if a.metric == "rm_mean")
    mean_alert.refresh_from_db()
    assert mean_alert.adapter == champion and mean_alert.source == "golden"
    assert mean_alert.threshold == 3.0 and mean_alert.baseline == pytest.approx(
        0.0, abs=0.3
    )
    assert "standard deviations lower" in mean_alert.message
    assert mean_alert.webhook_status == DriftAlert.Webhook.SENT
    assert mean_alert.webhook_detail == "HTTP 204"
    assert sorted(body["metric"] for body in received) == ["rm_mean", "rm_psi"]
    body = next(b for b in received if b["metric"] == "rm_mean")
    assert body["event"] == "drift_alert" and body["campaign"] == campaign.pk
    assert body["version"] == f"adapter:{champion.pk}"
    assert body["alert"] == mean_alert.pk

    # Still beyond: the alert stays open (no second one, no second POST).
    drift_check(points=[_golden_point(campaign, champion, mean=-3.0, seed=11)])
    assert DriftAlert.objects.filter(campaign=campaign).count() == 2
    assert len(received) == 2

    drift_check(points=[_golden_point(campaign, champion, mean=0.0, seed=12)])
    assert not DriftAlert.objects.filter(campaign=campaign, resolved_at__isnull=True)


@pytest.mark.django_db
def test_a_stable_series_opens_no_alert() -> None:
    """Twenty evaluations from one population after the baseline window:
    every check runs (mean, PSI, length, shares) and none fires."""
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    for seed in range(23):
        (point,) = [_golden_point(campaign, champion, mean=0.5, seed=seed)]
        assert drift_check(points=[point]) == []
    point.refresh_from_db()
    checked = {f["metric"] for f in point.details["findings"]}
    assert {"rm_mean", "rm_psi", "length_mean", "empty_rate"} <= checked
    assert not any(f["breached"] for f in point.details["findings"])
    assert not DriftAlert.objects.filter(campaign=campaign).exists()


@pytest.mark.django_db
def test_the_baseline_window_starts_at_the_versions_promotion() -> None:
    """Points taken before the champion's promotion are not its baseline:
    until three points exist after it, nothing but the win rate is checked."""
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    earlier = timezone.now() - timedelta(days=2)
    for seed in range(3):
        _golden_point(campaign, champion, mean=5.0, seed=seed, taken_at=earlier)
    point = _golden_point(campaign, champion, mean=0.0, seed=9)
    assert drift_check(points=[point]) == []
    point.refresh_from_db()
    assert point.details["baseline_points"] == []
    assert point.details["findings"] == []


@pytest.mark.django_db
def test_a_burst_of_empty_and_refusal_outputs_in_served_traffic_opens_alerts(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    """Served responses evaluated without a model (no held-out prompts, no
    reward model): three ordinary batches form the baseline; a batch with a
    third empty and a quarter refusals opens the empty and refusal alerts,
    and the length alert (those answers are short); the webhook gets each;
    an ordinary batch resolves them. Each evaluation reads
    only what was served since the previous one."""
    url, received = webhook
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    policy = drift_policy_update(campaign=campaign, actor=None, webhook_url=url)
    for seed in range(3):
        _serve(campaign, champion, 60, seed=seed)
        points = drift_evaluate(campaign=campaign)
        assert [(p.source, p.n) for p in points] == [("served", 60)]
        assert drift_check(points=points, policy=policy) == []
    assert points[0].rm_mean is None and points[0].details["scored"] is False

    _serve(campaign, champion, 60, empty=20, refusals=15, seed=5)
    points = drift_evaluate(campaign=campaign)
    assert points[0].empty_rate == pytest.approx(20 / 60)
    assert points[0].refusal_rate == pytest.approx(15 / 60)
    opened = drift_check(points=points, policy=policy)

    metrics = ["empty_rate", "length_mean", "refusal_rate"]
    assert sorted(a.metric for a in opened) == metrics
    assert all(a.source == "served" for a in opened)
    assert sorted(b["metric"] for b in received) == metrics
    assert set(
        DriftAlert.objects.filter(campaign=campaign).values_list(
            "webhook_status", flat=True
        )
    ) == {"sent"}

    _serve(campaign, champion, 60, seed=6)
    drift_check(points=drift_evaluate(campaign=campaign), policy=policy)
    assert not DriftAlert.objects.filter(campaign=campaign, resolved_at__isnull=True)


@pytest.mark.django_db
def test_a_webhook_that_fails_is_recorded_on_the_alert_and_never_raises() -> None:
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    # Nothing listens on port 9 of the loopback (discard; refused at once).
    drift_policy_update(
        campaign=campaign, actor=None, webhook_url="http://127.0.0.1:9/"
    )
    for seed in range(3):
        drift_check(points=[_golden_point(campaign, champion, mean=0.0, seed=seed)])
    (alert, *_) = drift_check(
        points=[_golden_point(campaign, champion, mean=-4.0, seed=7)]
    )
    alert.refresh_from_db()
    assert alert.webhook_status == DriftAlert.Webhook.FAILED
    assert alert.webhook_detail


@pytest.mark.django_db
def test_the_win_rate_against_the_previous_champion_needs_no_baseline() -> None:
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    point = _golden_point(campaign, champion, mean=0.0, seed=1)
    DriftPoint.objects.filter(pk=point.pk).update(
        win_rate=0.2, win_rate_lower=0.1, win_rate_upper=0.3, win_rate_n=30
    )
    point.refresh_from_db()
    (alert,) = drift_check(points=[point])
    assert alert.metric == "win_rate" and "upper bound is below 0.5" in alert.message


# ---------------------------------------------------------------- requests


@pytest.mark.django_db
def test_held_out_prompts_are_the_test_split_then_golden_prompts_never_train() -> None:
    campaign = CampaignFactory()
    test = [PromptFactory(campaign=campaign, split="test") for _ in range(3)]
    golden_test = PromptFactory(campaign=campaign, split="test", is_golden=True)
    golden_train = PromptFactory(campaign=campaign, split="train", is_golden=True)
    PromptFactory(campaign=campaign, split="train")
    PromptFactory(campaign=campaign, split="val")
    picked = drift_heldout_prompts(campaign=campaign, count=10)
    assert picked == [golden_test, *test, golden_train]
    assert drift_heldout_prompts(campaign=campaign, count=2) == [golden_test, test[0]]


@pytest.mark.django_db
def test_requests_are_refused_while_one_waits_and_the_tick_requests_due_campaigns() -> (
    None
):
    """ "Evaluate now" stamps the policy; a second request is a Conflict.
    The beat requests an evaluation for an active campaign with a champion
    whose interval passed, not for one evaluated recently, switched off, or
    with nothing served and no champion."""
    due = CampaignFactory()
    _champion(due, _base())
    recent = CampaignFactory()
    _champion(recent, _base())
    drift_policy_update(campaign=recent, actor=None, interval_minutes=60)
    DriftPolicy.objects.filter(campaign=recent).update(last_evaluated_at=timezone.now())
    off = CampaignFactory()
    _champion(off, _base())
    drift_policy_update(campaign=off, actor=None, enabled=False)
    nothing = CampaignFactory()

    assert drift_tick() >= 1
    assert DriftPolicy.objects.get(campaign=due).evaluation_requested_at is not None
    assert DriftPolicy.objects.get(campaign=recent).evaluation_requested_at is None
    assert DriftPolicy.objects.get(campaign=off).evaluation_requested_at is None
    assert not DriftPolicy.objects.filter(campaign=nothing).exists()
    with pytest.raises(Conflict, match="already queued or running"):
        drift_evaluate_request(campaign=due)


# ---------------------------------------------------------------- end to end


def _tiny_adapters(base_dir: Path, policy_dir: Path, reward_dir: Path) -> None:
    """A LoRA policy adapter and a LoRA reward model (score head saved) over
    the tiny Llama, untrained: enough for the generator and the scorer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    policy.save_pretrained(policy_dir)
    reward = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1),
        LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj", "v_proj"]),
    )
    reward.save_pretrained(reward_dir)


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_an_evaluation_runs_on_the_gpu_worker_and_stores_scored_points(
    celery_workers: Any,
    tiny_base: BaseModelVersion,
    tiny_model_dir: Path,
    make_user: Any,
) -> None:
    """ "Evaluate now" on a campaign with a champion, a reward model, test-split
    and golden prompts and served traffic: the real gpu worker answers the
    held-out prompts with the champion, scores them and the served sample
    with the reward model, and stores one point per source."""
    pytest.importorskip("torch")
    campaign = CampaignFactory()
    for i in range(4):
        PromptFactory(
            campaign=campaign, split="test", text=f"tell me about the cat {i} ."
        )
    PromptFactory(
        campaign=campaign,
        split="train",
        is_golden=True,
        text="tell me about the song .",
    )
    PromptFactory(campaign=campaign, split="train", text="tell me about the river .")
    row = generation_settings_for(campaign)
    row.max_new_tokens = 8
    row.save()
    root = Path(settings.STORAGE_ROOT)
    policy_path = f"adapters/test-drift-policy-{uuid.uuid4().hex}"
    reward_path = f"adapters/test-drift-reward-{uuid.uuid4().hex}"
    try:
        _tiny_adapters(tiny_model_dir, root / policy_path, root / reward_path)
        champion = _champion(campaign, tiny_base, storage_path=policy_path)
        reward = adapter_register(
            campaign=campaign,
            base_model=tiny_base,
            method="reward",
            peft_type="lora",
            storage_path=reward_path,
            metrics={},
        )
        pair = ComparisonFactory(
            campaign=campaign,
            prompt=Prompt.objects.filter(campaign=campaign, split="test").first(),
        )
        Preference.objects.create(
            comparison=pair, annotator=make_user(), choice="a", a_on_left=True
        )
        _serve(campaign, champion, 12)
        drift_evaluate_request(campaign=campaign)
        deadline = time.monotonic() + 240
        policy = DriftPolicy.objects.get(campaign=campaign)
        while (
            policy.evaluation_requested_at is not None and time.monotonic() < deadline
        ):
            time.sleep(0.5)
            policy.refresh_from_db()
    finally:
        shutil.rmtree(root / policy_path, ignore_errors=True)
        shutil.rmtree(root / reward_path, ignore_errors=True)

    log = celery_workers["logs"]["gpu"].read_text()[-3000:]
    assert policy.evaluation_requested_at is None, log
    assert policy.last_error == "", policy.last_error
    assert policy.last_evaluated_at is not None
    golden = DriftPoint.objects.get(campaign=campaign, source="golden")
    served = DriftPoint.objects.get(campaign=campaign, source="served")
    assert golden.adapter == champion == served.adapter
    assert golden.n == 5
    assert golden.details["prompts_test"] == 4
    assert golden.details["prompts_golden_other_split"] == 1
    assert golden.reward_adapter is not None and golden.rm_mean is not None
    assert len(golden.values["scores"]) == 5
    assert served.n == 12 and served.rm_mean is not None
    assert golden.win_rate_opponent == f"base:{tiny_base.pk}"
    reward.refresh_from_db()
    assert reward.metrics["test_pairs"] == 1  # its test-split accuracy, on the way


# ---------------------------------------------------------------- page and API


@pytest.fixture
def alerting(db: None) -> dict[str, Any]:
    """A campaign whose champion has three baseline points and an open
    rm_mean alert."""
    campaign = CampaignFactory()
    champion = _champion(campaign, _base())
    for seed in range(3):
        drift_check(points=[_golden_point(campaign, champion, mean=0.0, seed=seed)])
    drift_check(points=[_golden_point(campaign, champion, mean=-3.0, seed=10)])
    alert = DriftAlert.objects.get(campaign=campaign, metric="rm_mean")
    return {"campaign": campaign, "champion": champion, "alert": alert}


@pytest.mark.django_db
def test_the_drift_page_shows_charts_alerts_and_the_form_to_admins(
    client: Any,
    admin_user: Any,
    reviewer: Any,
    annotator: Any,
    alerting: dict[str, Any],
) -> None:
    campaign = alerting["campaign"]
    url = reverse("models_hub:drift", args=[campaign.pk])
    client.force_login(annotator)
    assert client.get(url).status_code == 403

    client.force_login(reviewer)
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert alerting["alert"].message.split(":")[0] in html
    assert 'data-chart="drift-rm"' in html
    assert "drift-no-reward-model" in html  # the campaign has no reward model
    assert "Save thresholds" not in html and "Evaluate now" not in html

    client.force_login(admin_user)
    html = client.get(url).content.decode()
    assert "Save thresholds" in html and "Evaluate now" in html


@pytest.mark.django_db
def test_admins_save_thresholds_and_bad_values_are_shown_next_to_the_field(
    client: Any, admin_user: Any, reviewer: Any, alerting: dict[str, Any]
) -> None:
    campaign = alerting["campaign"]
    url = reverse("models_hub:drift-policy", args=[campaign.pk])
    form = {
        "enabled": "on",
        "interval_minutes": "60",
        "golden_sample_size": "16",
        "served_sample_size": "100",
        "mean_drop_sd": "2.5",
        "psi_limit": "0.2",
        "empty_rate_increase": "0.1",
        "truncated_rate_increase": "0.2",
        "refusal_rate_increase": "0.1",
        "min_win_rate": "0.45",
        "baseline_points": "4",
        "webhook_url": "https://hooks.example.com/drift",
    }
    client.force_login(reviewer)
    assert client.post(url, form).status_code == 403
    client.force_login(admin_user)
    assert client.post(url, form).status_code == 302
    policy = DriftPolicy.objects.get(campaign=campaign)
    assert (policy.mean_drop_sd, policy.baseline_points) == (2.5, 4)
    assert policy.webhook_url == "https://hooks.example.com/drift"

    bad = client.post(url, {**form, "psi_limit": "-1", "webhook_url": "ftp://x"})
    assert bad.status_code == 400
    assert "psi_limit-errors" in bad.content.decode()
    policy.refresh_from_db()
    assert policy.psi_limit == 0.2


@pytest.mark.django_db
def test_evaluate_now_and_acknowledge_from_the_page(
    client: Any, admin_user: Any, reviewer: Any, alerting: dict[str, Any]
) -> None:
    campaign, alert = alerting["campaign"], alerting["alert"]
    client.force_login(reviewer)
    evaluate = reverse("models_hub:drift-evaluate", args=[campaign.pk])
    assert client.post(evaluate).status_code == 403
    assert (
        client.post(
            reverse("models_hub:drift-alert-acknowledge", args=[alert.pk])
        ).status_code
        == 302
    )
    alert.refresh_from_db()
    assert alert.acknowledged_by == reviewer and alert.resolved_at is None

    client.force_login(admin_user)
    assert client.post(evaluate).status_code == 302
    assert (
        DriftPolicy.objects.get(campaign=campaign).evaluation_requested_at is not None
    )
    page = client.get(reverse("models_hub:drift", args=[campaign.pk]), follow=True)
    assert "drift-queued" in page.content.decode()


@pytest.mark.django_db
def test_the_campaign_list_shows_open_alerts_in_one_query(
    client: Any, reviewer: Any, annotator: Any, alerting: dict[str, Any]
) -> None:
    CampaignFactory()  # a second campaign, without alerts
    client.force_login(reviewer)
    html = client.get(reverse("labeling:campaign-list")).content.decode()
    assert html.count('data-testid="drift-alerts"') == 1
    assert "2 drift alerts<" in html  # mean and PSI
    client.force_login(annotator)
    assert (
        'data-testid="drift-alerts"'
        not in client.get(reverse("labeling:campaign-list")).content.decode()
    )


@pytest.mark.django_db
def test_api_series_alerts_acknowledge_and_policy(
    api_client_for: Any,
    admin_user: Any,
    reviewer: Any,
    annotator: Any,
    alerting: dict[str, Any],
) -> None:
    campaign, alert, champion = (
        alerting["campaign"],
        alerting["alert"],
        alerting["champion"],
    )
    api = api_client_for(reviewer)

    series = api.get(f"/api/v1/campaigns/{campaign.pk}/drift/")
    assert series.status_code == 200
    body = series.json()
    assert len(body["points"]) == 4 and body["policy"]["stored"] is False
    assert body["points"][-1]["version"] == f"adapter:{champion.pk}"
    assert any(
        f["metric"] == "rm_mean" and f["breached"]
        for f in body["points"][-1]["findings"]
    )
    assert sorted(a["metric"] for a in body["open_alerts"]) == ["rm_mean", "rm_psi"]

    listed = api.get(f"/api/v1/drift-alerts/?campaign={campaign.pk}&open=1").json()
    assert alert.pk in [a["id"] for a in listed["results"]]
    assert listed["count"] == 2 and all(a["is_open"] for a in listed["results"])
    assert api.get("/api/v1/drift-alerts/?open=0").json()["count"] >= 0
    bad = api.get("/api/v1/drift-alerts/?open=yes")
    assert bad.status_code == 400 and "open" in bad.json()

    ack = api.post(f"/api/v1/drift-alerts/{alert.pk}/acknowledge/")
    assert ack.status_code == 200 and ack.json()["acknowledged_by"] == reviewer.username
    alert.refresh_from_db()
    assert alert.acknowledged_by == reviewer
    assert api.post("/api/v1/drift-alerts/999999999/acknowledge/").status_code == 404
    DriftAlert.objects.filter(pk=alert.pk).update(resolved_at=timezone.now())
    assert api.post(f"/api/v1/drift-alerts/{alert.pk}/acknowledge/").status_code == 409

    policy_url = f"/api/v1/campaigns/{campaign.pk}/drift-policy/"
    assert api.get(policy_url).json()["mean_drop_sd"] == 3.0
    assert api.put(policy_url, {"psi_limit": 0.3}, format="json").status_code == 403
    assert (
        api.post(f"/api/v1/campaigns/{campaign.pk}/drift/evaluate/").status_code == 403
    )

    admin = api_client_for(admin_user)
    saved = admin.put(
        policy_url,
        {"psi_limit": 0.3, "webhook_url": "http://127.0.0.1:1/x"},
        format="json",
    )
    assert saved.status_code == 200 and saved.json()["stored"] is True
    assert DriftPolicy.objects.get(campaign=campaign).psi_limit == 0.3
    refused = admin.put(
        policy_url, {"mean_drop_sd": 0, "webhook_url": "nope"}, format="json"
    )
    assert refused.status_code == 400
    assert {"mean_drop_sd", "webhook_url"} <= set(refused.json())
    evaluate = f"/api/v1/campaigns/{campaign.pk}/drift/evaluate/"
    assert admin.post(evaluate).status_code == 202
    assert admin.post(evaluate).status_code == 409

    outsider = api_client_for(annotator)
    assert outsider.get(f"/api/v1/campaigns/{campaign.pk}/drift/").status_code == 403
    assert outsider.get("/api/v1/drift-alerts/").status_code == 403


# ---------------------------------------------------------------- test metrics


@pytest.mark.django_db
def test_a_reward_models_test_metrics_come_from_test_split_labels_only(
    tiny_base: BaseModelVersion, tiny_model_dir: Path, make_user: Any
) -> None:
    """Accuracy and margin of the reward model on the test split's labels
    (ties left out, train-split labels ignored), stored beside its
    validation metrics and recomputed only when test labels arrived."""
    pytest.importorskip("torch")
    from ml.reward import RewardScorer
    from models_hub.services.test_metrics import (
        reward_test_metrics_due,
        reward_test_metrics_update,
    )

    campaign = CampaignFactory()
    annotator = make_user()
    labels = []
    for i, (split, choice) in enumerate(
        [("test", "a"), ("test", "b"), ("test", "a"), ("test", "tie"), ("train", "a")]
    ):
        prompt = PromptFactory(campaign=campaign, split=split, text=f"the cat {i} ?")
        pair = ComparisonFactory(campaign=campaign, prompt=prompt)
        labels.append(
            Preference.objects.create(
                comparison=pair, annotator=annotator, choice=choice, a_on_left=True
            )
        )
    root = Path(settings.STORAGE_ROOT)
    policy_path = f"adapters/test-drift-p-{uuid.uuid4().hex}"
    reward_path = f"adapters/test-drift-r-{uuid.uuid4().hex}"
    try:
        _tiny_adapters(tiny_model_dir, root / policy_path, root / reward_path)
        reward = adapter_register(
            campaign=campaign,
            base_model=tiny_base,
            method="reward",
            peft_type="lora",
            storage_path=reward_path,
            metrics={"eval_accuracy": 0.5},
        )
        assert reward_test_metrics_due(adapter=reward)
        figures = reward_test_metrics_update(adapter=reward)
        scorer = RewardScorer.load(str(tiny_model_dir), root / reward_path)
    finally:
        shutil.rmtree(root / policy_path, ignore_errors=True)
        shutil.rmtree(root / reward_path, ignore_errors=True)

    wins = 0
    for label in labels[:3]:
        pair = label.comparison
        a, b = scorer.score(
            [pair.prompt.text] * 2, [pair.completion_a.text, pair.completion_b.text]
        )
        wins += (a > b) if label.choice == "a" else (b > a)
    assert figures["test_pairs"] == 3
    assert figures["test_accuracy"] == pytest.approx(wins / 3)
    reward.refresh_from_db()
    assert reward.metrics["eval_accuracy"] == 0.5  # validation figures kept
    assert reward.metrics["test_accuracy"] == figures["test_accuracy"]
    assert not reward_test_metrics_due(adapter=reward)


@pytest.mark.django_db
def test_alerts_of_a_version_no_longer_served_are_resolved_by_the_next_evaluation(
    alerting: dict[str, Any],
) -> None:
    """A rollback to the base leaves the old champion's alerts with nothing
    to measure them again: the next evaluation resolves them."""
    from models_hub.services.registry import adapter_rollback

    campaign = alerting["campaign"]
    adapter_rollback(campaign=campaign, role=Adapter.Role.POLICY, actor=None)
    assert drift_evaluate(campaign=campaign) == []  # no prompts, nothing served
    assert not DriftAlert.objects.filter(campaign=campaign, resolved_at__isnull=True)
