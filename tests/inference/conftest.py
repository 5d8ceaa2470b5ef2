"""Fixtures for the inference API: the tiny base as the default base model,
policy adapters with random LoRA weights in the storage root, a caller's
token, and the API's own URLs and middleware on the test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.authtoken.models import Token

torch = pytest.importorskip("torch")

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from inference.engine import engine_close  # noqa: E402
from inference.ratelimit import limiter  # noqa: E402
from ml.tiny import build_random_lora  # noqa: E402
from models_hub.models import Adapter, BaseModelVersion  # noqa: E402
from models_hub.services.registry import adapter_register  # noqa: E402
from tests.labeling.factories import CampaignFactory  # noqa: E402

ADAPTERS = 3


def merged_export(base_dir: Path, adapter_dir: Path, out: Path) -> Path:
    """What ``adapter_merge_export_run`` writes, made here without a worker."""
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir
    ).merge_and_unload()
    merged.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_folders(tiny_model_dir: Path) -> list[str]:
    """Adapter folders under the storage root, relative to it (built once)."""
    relative = []
    for i in range(ADAPTERS):
        rel = Path("adapters") / f"inference-test-{i}"
        folder = Path(django_settings.STORAGE_ROOT) / rel
        if not (folder / "adapter_config.json").exists():
            build_random_lora(tiny_model_dir, folder, seed=100 + i)
        relative.append(str(rel))
    return relative


@pytest.fixture(scope="session")
def merged_folder(tiny_model_dir: Path, lora_folders: list[str]) -> str:
    rel = Path("exports") / "inference-test-0-merged"
    folder = Path(django_settings.STORAGE_ROOT) / rel
    if not (folder / "config.json").exists():
        merged_export(
            tiny_model_dir, Path(django_settings.STORAGE_ROOT) / lora_folders[0], folder
        )
    return str(rel)


@pytest.fixture(autouse=True)
def inference_urls(settings: Any) -> Iterator[None]:
    """The inference process's URLs and middleware; no rate limit unless a
    test sets one."""
    from inference import settings as inference_settings

    settings.ROOT_URLCONF = inference_settings.ROOT_URLCONF
    settings.MIDDLEWARE = inference_settings.MIDDLEWARE
    settings.ARBITER_INFERENCE_RATE_LIMIT = "off"
    limiter.reset()
    yield
    limiter.reset()


@pytest.fixture(scope="session", autouse=True)
def _close_engine() -> Iterator[None]:
    yield
    engine_close()


@pytest.fixture
def served(
    tiny_base: BaseModelVersion, lora_folders: list[str], make_user: Any
) -> dict[str, Any]:
    """A campaign with three policy adapters (v1 the champion) and a reward
    model over the tiny base, and a caller with an API token."""
    campaign = CampaignFactory()
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=tiny_base,
            method="dpo",
            peft_type="lora",
            storage_path=folder,
            metrics={},
        )
        for folder in lora_folders
    ]
    Adapter.objects.filter(pk=adapters[0].pk).update(status=Adapter.Status.CHAMPION)
    adapters[0].refresh_from_db()
    reward = adapter_register(
        campaign=campaign,
        base_model=tiny_base,
        method="reward",
        peft_type="lora",
        storage_path=lora_folders[1],
        metrics={},
    )
    caller = make_user("annotator")
    token, _ = Token.objects.get_or_create(user=caller)
    return {
        "base": tiny_base,
        "campaign": campaign,
        "adapters": adapters,
        "champion": adapters[0],
        "reward": reward,
        "caller": caller,
        "token": token.key,
    }


@pytest.fixture
def api(served: dict[str, Any]) -> Client:
    """The test client with the caller's token."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {served['token']}")
