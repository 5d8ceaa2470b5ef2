"""A policy adapter's held-out test metrics: DPO's implicit reward on the
test split's labels, in the right direction, from test labels only."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from labeling.models import Preference
from models_hub.models import BaseModelVersion
from models_hub.services.registry import adapter_register
from models_hub.services.test_metrics import (
    adapter_test_metrics_due,
    adapter_test_metrics_update,
)
from tests.labeling.factories import CampaignFactory, ComparisonFactory, PromptFactory


def _policy(base_dir: Path, out: Path, *, trained: bool) -> None:
    """A LoRA policy over the tiny Llama: random (``trained``) or the base
    itself (PEFT's default init leaves B at zero)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(
            r=2,
            lora_alpha=64,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=not trained,
        ),
    ).save_pretrained(out)


@pytest.mark.django_db
def test_a_policys_test_metrics_read_test_labels_in_their_direction(
    tiny_base: BaseModelVersion, tiny_model_dir: Path, make_user: Any
) -> None:
    """Each test-split pair is labeled twice, once each way: the implicit
    reward margins come in opposite pairs, so exactly half are above zero
    and they average to zero. A train-split label and a tie are left out;
    the figures are stored beside the validation ones and not due again
    until a new test label arrives."""
    pytest.importorskip("torch")
    campaign = CampaignFactory()
    first, second = make_user(), make_user()
    for i in range(3):
        prompt = PromptFactory(campaign=campaign, split="test", text=f"the cat {i} ?")
        pair = ComparisonFactory(campaign=campaign, prompt=prompt)
        for annotator, choice in ((first, "a"), (second, "b")):
            Preference.objects.create(
                comparison=pair, annotator=annotator, choice=choice, a_on_left=True
            )
    train = ComparisonFactory(
        campaign=campaign, prompt=PromptFactory(campaign=campaign, split="train")
    )
    Preference.objects.create(
        comparison=train, annotator=first, choice="a", a_on_left=True
    )
    tie = ComparisonFactory(
        campaign=campaign, prompt=PromptFactory(campaign=campaign, split="test")
    )
    Preference.objects.create(
        comparison=tie, annotator=first, choice="tie", a_on_left=True
    )

    root = Path(settings.STORAGE_ROOT)
    paths = {k: f"adapters/test-metrics-{k}-{uuid.uuid4().hex}" for k in ("t", "z")}
    try:
        _policy(tiny_model_dir, root / paths["t"], trained=True)
        _policy(tiny_model_dir, root / paths["z"], trained=False)
        trained, untouched = (
            adapter_register(
                campaign=campaign,
                base_model=tiny_base,
                method="dpo",
                peft_type="lora",
                storage_path=paths[k],
                metrics={"eval_rewards/accuracies": 0.75},
            )
            for k in ("t", "z")
        )
        assert adapter_test_metrics_due(adapter=trained)
        figures = adapter_test_metrics_update(adapter=trained)
        same_as_base = adapter_test_metrics_update(adapter=untouched)
    finally:
        for path in paths.values():
            shutil.rmtree(root / path, ignore_errors=True)

    assert figures["test_pairs"] == 6
    assert figures["test_accuracy"] == pytest.approx(0.5)
    assert figures["test_margin"] == pytest.approx(0.0, abs=1e-3)
    # The base against itself: no margin anywhere, so no label is "won".
    assert same_as_base["test_accuracy"] == 0.0
    assert same_as_base["test_margin"] == pytest.approx(0.0, abs=1e-4)
    trained.refresh_from_db()
    assert trained.metrics["eval_rewards/accuracies"] == 0.75
    assert trained.metrics["test_pairs"] == 6
    assert not adapter_test_metrics_due(adapter=trained)
