"""Combining adapters: refusals before anything is queued (API and page),
the job on the real gpu worker registering an ordinary candidate with its
lineage and queueing its candidate round, and the stale-job sweeper."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, REVIEWER
from labeling.models import Campaign
from models_hub.models import (
    Adapter,
    AdapterEvent,
    BaseModelVersion,
    CombineJob,
    GenerationJob,
)
from models_hub.services.combine import combine_job_sweep_stale
from models_hub.services.registry import adapter_register, generation_settings_for
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, PromptFactory

ROOT = Path(__file__).resolve().parents[2]
CREATE = "/api/v1/models/combine/"


def _lora(
    base_dir: Path, out: Path, *, r: int, seed: int, seq_cls: bool = False
) -> None:
    """A LoRA adapter with random non-zero weights over the tiny Llama."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    loader = AutoModelForSequenceClassification if seq_cls else AutoModelForCausalLM
    kwargs = {"num_labels": 1} if seq_cls else {}
    model = loader.from_pretrained(str(base_dir), dtype=torch.float32, **kwargs)
    config = LoraConfig(
        task_type="SEQ_CLS" if seq_cls else "CAUSAL_LM",
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(str(out))


@pytest.fixture(scope="module")
def lora_dirs(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("combine-loras")
    specs = {"r4a": (4, 1, False), "r4b": (4, 2, False), "r8": (8, 3, False)}
    specs["reward"] = (4, 4, True)
    dirs = {}
    for key, (r, seed, seq_cls) in specs.items():
        dirs[key] = root / key
        _lora(tiny_model_dir, dirs[key], r=r, seed=seed, seq_cls=seq_cls)
    return dirs


@pytest.fixture
def storage() -> Iterator[list[Path]]:
    """Folders written under the storage root, removed afterwards."""
    made: list[Path] = []
    yield made
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def register(lora_dirs: dict[str, Path], storage: list[Path]) -> Any:
    def make(
        campaign: Campaign, base: BaseModelVersion, key: str, *, method: str = "dpo"
    ) -> Adapter:
        relative = f"adapters/test-combine-{uuid.uuid4().hex}"
        folder = Path(settings.STORAGE_ROOT) / relative
        shutil.copytree(lora_dirs[key], folder)
        storage.append(folder)
        return adapter_register(
            campaign=campaign,
            base_model=base,
            method=method,
            peft_type="lora",
            storage_path=relative,
            metrics={},
        )

    return make


def _body(*pairs: tuple[Adapter, float], method: str = "linear", **extra: Any) -> str:
    return json.dumps(
        {
            "adapters": [{"id": a.pk, "weight": w} for a, w in pairs],
            "method": method,
            **extra,
        }
    )


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


# ---------------------------------------------------------------- refusals


@pytest.mark.django_db
def test_the_api_refuses_what_cannot_be_combined_naming_the_reason(
    tiny_base: BaseModelVersion, register: Any, api_client_for: Any, make_user: Any
) -> None:
    """Each refusal is a 400 whose detail names the problem, and no job is
    recorded: different ranks under linear, different base models, a reward
    model with a policy, different campaigns, a density linear does not
    take, ties without one, a missing weight, one adapter, an unknown id."""
    campaign = CampaignFactory()
    a = register(campaign, tiny_base, "r4a")
    b = register(campaign, tiny_base, "r4b")
    r8 = register(campaign, tiny_base, "r8")
    reward = register(campaign, tiny_base, "reward", method="reward")
    other_base = BaseModelVersion.objects.create(name="other", source=tiny_base.source)
    on_other_base = register(campaign, other_base, "r4b")
    elsewhere = register(CampaignFactory(), tiny_base, "r4b")
    api = api_client_for(make_user(ADMIN))
    cases = [
        (_body((a, 1), (r8, 1)), r"equal rank.*ranks 4, 8"),
        (_body((a, 1), (on_other_base, 1)), "different base models"),
        (_body((a, 1), (reward, 1)), "different roles.*policy and a reward"),
        (_body((a, 1), (elsewhere, 1)), "different campaigns"),
        (_body((a, 1), (b, 1), density=0.5), "takes no density"),
        (_body((a, 1), (b, 1), method="ties"), r"density in \(0, 1\]"),
        (_body((a, 1), (b, 1), method="dare_ties", density=0), r"\(0, 1\]"),
        (_body((a, 1), (a, 1)), "only once"),
        (_body((a, 1)), "at least two"),
        (_body((a, 1), (b, 1), method="average"), "valid choice"),
    ]
    for body, reason in cases:
        response = api.post(CREATE, body, content_type="application/json")
        assert response.status_code == 400, (reason, response.json())
        assert re.search(reason, json.dumps(response.json())), response.json()
    missing_weight = api.post(
        CREATE,
        {"adapters": [{"id": a.pk, "weight": 1}, {"id": b.pk}], "method": "linear"},
        format="json",
    )
    assert missing_weight.status_code == 400, missing_weight.json()
    assert "weight" in json.dumps(missing_weight.json()["adapters"]), (
        missing_weight.json()
    )
    unknown = api.post(
        CREATE,
        {
            "adapters": [{"id": a.pk, "weight": 1}, {"id": 999999, "weight": 1}],
            "method": "cat",
        },
        format="json",
    )
    assert unknown.status_code == 400
    assert "No adapter has id 999999" in unknown.json()["detail"]
    assert not CombineJob.objects.exists()
    # svd takes any ranks: the same pair is accepted
    accepted = api.post(
        CREATE,
        _body((a, 0.5), (r8, 0.5), method="svd"),
        content_type="application/json",
    )
    assert accepted.status_code == 201, accepted.json()
    job = CombineJob.objects.get()
    assert job.status == "queued" and job.method == "svd"
    assert job.parents == [
        {"adapter": a.pk, "name": a.name, "version": a.version, "weight": 0.5},
        {"adapter": r8.pk, "name": r8.name, "version": r8.version, "weight": 0.5},
    ]


@pytest.mark.django_db
def test_only_admins_combine_and_read_combine_jobs(
    tiny_base: BaseModelVersion, register: Any, api_client_for: Any, make_user: Any
) -> None:
    """Reviewers get 403, anonymous callers 401; an unknown job is a 404."""
    campaign = CampaignFactory()
    a = register(campaign, tiny_base, "r4a")
    b = register(campaign, tiny_base, "r4b")
    body = _body((a, 1), (b, 1))
    reviewer = api_client_for(make_user(REVIEWER))
    assert (
        reviewer.post(CREATE, body, content_type="application/json").status_code == 403
    )
    assert (
        api_client_for(None)
        .post(CREATE, body, content_type="application/json")
        .status_code
        == 401
    )
    assert not CombineJob.objects.exists()
    admin = api_client_for(make_user(ADMIN))
    job_id = admin.post(CREATE, body, content_type="application/json").json()["id"]
    detail = admin.get(f"{CREATE}{job_id}/")
    assert detail.status_code == 200 and detail.json()["status"] == "queued"
    assert reviewer.get(f"{CREATE}{job_id}/").status_code == 403
    assert admin.get(f"{CREATE}{job_id + 1000}/").status_code == 404


# ---------------------------------------------------------------- the page


@pytest.mark.django_db
def test_the_models_page_combines_and_shows_refusals(
    tiny_base: BaseModelVersion, register: Any, make_user: Any
) -> None:
    """Admins see the form with every method; a refused combination comes
    back as a 400 page with the reason and the choices kept; an accepted one
    redirects to its job page. Reviewers see no form and cannot post."""
    campaign = CampaignFactory()
    a = register(campaign, tiny_base, "r4a")
    r8 = register(campaign, tiny_base, "r8")
    admin = _client(make_user(ADMIN))
    page = admin.get(reverse("models_hub:adapter-list")).content.decode()
    assert "Combine adapters" in page
    shown = re.findall(r'<option value="([a-z_]+)"', page.split("combine-adapters")[1])
    assert shown == list(CombineJob.Method.values)

    url = reverse("models_hub:combine-job-create")
    form = {"adapter": [a.pk, r8.pk], f"weight-{a.pk}": "0.7", f"weight-{r8.pk}": "0.3"}
    refused = admin.post(url, {**form, "method": "linear"})
    assert refused.status_code == 400
    text = refused.content.decode()
    assert "needs adapters of equal rank" in text
    assert 'value="0.7"' in text and 'value="linear" selected' in text
    bad_weight = admin.post(url, {**form, f"weight-{a.pk}": "lots", "method": "cat"})
    assert "The weight of adapter" in bad_weight.content.decode()
    assert not CombineJob.objects.exists()

    done = admin.post(url, {**form, "method": "cat", "name": "blend"})
    job = CombineJob.objects.get()
    assert done.status_code == 302
    assert done["Location"] == reverse("models_hub:combine-job-detail", args=[job.pk])
    assert job.name == "blend" and [p["weight"] for p in job.parents] == [0.7, 0.3]
    detail = admin.get(done["Location"]).content.decode()
    assert "hx-get" in detail and f"{a.name} v{a.version}" in detail

    reviewer = _client(make_user(REVIEWER))
    assert (
        "Combine adapters"
        not in reviewer.get(reverse("models_hub:adapter-list")).content.decode()
    )
    assert reviewer.post(url, {**form, "method": "cat"}).status_code == 403
    assert CombineJob.objects.count() == 1


# ---------------------------------------------------------------- the sweeper


@pytest.mark.django_db
def test_the_sweeper_fails_a_combine_job_whose_worker_went_silent(
    tiny_base: BaseModelVersion,
) -> None:
    campaign = CampaignFactory()
    old = timezone.now() - timedelta(hours=1)
    silent = CombineJob.objects.create(
        campaign=campaign,
        base_model=tiny_base,
        method="cat",
        status="running",
        heartbeat_at=old,
    )
    alive = CombineJob.objects.create(
        campaign=campaign,
        base_model=tiny_base,
        method="cat",
        status="running",
        heartbeat_at=timezone.now(),
    )
    assert combine_job_sweep_stale(timeout_seconds=60) == 1
    silent.refresh_from_db()
    alive.refresh_from_db()
    assert silent.status == "failed" and "stopped sending heartbeats" in silent.error
    assert alive.status == "running"


# ---------------------------------------------------------------- the worker


def _wait(job: Any, workers: dict[str, Any], seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.is_active:
            return
        time.sleep(0.5)
    log = workers["logs"]["gpu"].read_text()[-4000:]
    pytest.fail(f"job #{job.pk} still {job.status} ({job.phase}):\n{log}")


@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_the_gpu_worker_registers_a_candidate_with_lineage_and_queues_its_round(
    celery_workers: Any,
    tiny_base: BaseModelVersion,
    register: Any,
    api_client_for: Any,
    make_user: Any,
    storage: list[Path],
) -> None:
    """A linear combination of two adapters, queued over the API, runs on the
    real gpu worker: the next policy version (method "combine", parent the
    first parent) is registered as a candidate, its event records every
    parent with its weight and the method, the folder loads in plain PEFT and
    answers unlike both parents, and its candidate round is queued."""
    torch = pytest.importorskip("torch")
    campaign = CampaignFactory()
    for subject in ("cat", "river"):
        PromptFactory(campaign=campaign, text=f"tell me about the {subject} .")
    row = generation_settings_for(campaign)
    row.max_new_tokens, row.prompts_per_round = 8, 2
    row.save()
    a = register(campaign, tiny_base, "r4a")
    b = register(campaign, tiny_base, "r4b")
    api = api_client_for(make_user(ADMIN))
    response = api.post(
        CREATE, _body((a, 0.7), (b, 0.3)), content_type="application/json"
    )
    assert response.status_code == 201, response.json()
    job = CombineJob.objects.get(pk=response.json()["id"])
    _wait(job, celery_workers)
    assert job.status == "succeeded", job.error
    new = job.adapter
    assert new is not None
    storage.append(Path(settings.STORAGE_ROOT) / new.storage_path)
    assert (new.method, new.role, new.status, new.version) == (
        "combine",
        "policy",
        "candidate",
        3,
    )
    assert new.parent_id == a.pk and new.campaign_id == campaign.pk
    event = AdapterEvent.objects.get(adapter=new, action="registered")
    assert (
        event.evidence["method"] == "linear" and event.evidence["combine_job"] == job.pk
    )
    assert [(p["adapter"], p["weight"]) for p in event.evidence["parents"]] == [
        (a.pk, 0.7),
        (b.pk, 0.3),
    ]
    assert "combined (linear)" in event.reason

    round_ = GenerationJob.objects.get(adapter=new, kind=GenerationJob.Kind.CANDIDATE)
    assert api.get(f"{CREATE}{job.pk}/").json()["generation_job"] == round_.pk
    _wait(round_, celery_workers)  # nothing left running when the test ends

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])

    def logits(adapter: Adapter) -> Any:
        model = AutoModelForCausalLM.from_pretrained(
            tiny_base.source, dtype=torch.float32
        )
        folder = Path(settings.STORAGE_ROOT) / adapter.storage_path
        with torch.no_grad():
            return (
                PeftModel.from_pretrained(model, str(folder))
                .eval()(input_ids=ids)
                .logits
            )

    combined = logits(new)
    assert not torch.allclose(combined, logits(a), atol=1e-4)
    assert not torch.allclose(combined, logits(b), atol=1e-4)
