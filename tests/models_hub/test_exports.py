"""Merged exports: merge_and_unload gives a plain model with the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

torch = pytest.importorskip("torch")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from models_hub.models import Adapter, BaseModelVersion  # noqa: E402
from models_hub.services.exports import adapter_merge_export_run  # noqa: E402
from models_hub.services.registry import adapter_register  # noqa: E402
from tests.labeling.factories import CampaignFactory  # noqa: E402


@pytest.mark.django_db
def test_merged_export_matches_the_adapter_on_its_base(tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    relative = Path("adapters") / "merge-test"
    folder = Path(settings.STORAGE_ROOT) / relative
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
        ),
    )
    peft_model.save_pretrained(folder)
    base = BaseModelVersion.objects.create(name="tiny", source=str(tiny_model_dir))
    adapter = adapter_register(
        campaign=CampaignFactory(),
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path=str(relative),
        metrics={},
    )

    merged_path = adapter_merge_export_run(adapter_id=adapter.pk)
    assert Adapter.objects.get(pk=adapter.pk).merged_path == merged_path
    merged = AutoModelForCausalLM.from_pretrained(
        Path(settings.STORAGE_ROOT) / merged_path
    )
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder
    )
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, reference(ids).logits, atol=1e-4)
    assert adapter_merge_export_run(adapter_id=adapter.pk) == merged_path  # idempotent
