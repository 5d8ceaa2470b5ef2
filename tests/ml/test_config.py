"""Run-config validation: plain dataclasses, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ml.config import (
    CONFIG_CLASSES,
    DPORunConfig,
    PeftSettings,
    PPORunConfig,
    RewardRunConfig,
    RLOORunConfig,
    SFTRunConfig,
)
from ml.runners import METHODS, config_from_dict

ROOT = Path(__file__).resolve().parents[3]
ONLINE = {"reward_adapter": "/adapters/rm"}


def minimal(method: str) -> dict[str, Any]:
    data: dict[str, Any] = {"base_model": "/models/base"}
    if method in ("ppo", "rloo"):
        data.update(ONLINE)
    return data


@pytest.mark.parametrize(
    ("method", "changes", "field"),
    [
        ("sft", {"learning_rate": 0}, "learning_rate"),
        ("sft", {"learning_rate": -1e-3}, "learning_rate"),
        ("sft", {"base_model": "  "}, "base_model"),
        ("sft", {"num_train_epochs": 0}, "num_train_epochs"),
        ("sft", {"max_steps": 0}, "max_steps"),
        ("sft", {"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ("sft", {"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ("sft", {"max_length": 2}, "max_length"),
        ("sft", {"early_stopping_patience": -1}, "early_stopping_patience"),
        ("sft", {"torch_threads": 0}, "torch_threads"),
        ("sft", {"seed": -1}, "seed"),
        ("sft", {"learning_rate": "1e-3"}, "learning_rate"),
        ("sft", {"max_steps": True}, "max_steps"),
        ("sft", {"peft": {"peft_type": "adalora"}}, "peft.peft_type"),
        ("sft", {"peft": {"r": 0}}, "peft.r"),
        ("sft", {"peft": {"lora_dropout": 1.0}}, "peft.lora_dropout"),
        ("sft", {"peft": {"target_modules": []}}, "peft.target_modules"),
        ("sft", {"peft": {"num_virtual_tokens": 0}}, "peft.num_virtual_tokens"),
        (
            "sft",
            {"peft": {"feedforward_modules": ["down_proj"]}},
            "peft.feedforward_modules",
        ),
        ("dpo", {"beta": 0}, "beta"),
        ("dpo", {"loss_type": "nope"}, "loss_type"),
        ("dpo", {"label_smoothing": 0.5}, "label_smoothing"),
        ("ppo", {"reward_adapter": ""}, "reward_adapter"),
        ("ppo", {"kl_coef": -0.1}, "kl_coef"),
        ("ppo", {"response_length": 0}, "response_length"),
        ("ppo", {"max_length": 64, "response_length": 64}, "max_length"),
        ("ppo", {"num_mini_batches": 3}, "num_mini_batches"),
        ("ppo", {"total_episodes": 0}, "total_episodes"),
        ("rloo", {"num_generations": 1}, "num_generations"),
        ("rloo", {"beta": -1}, "beta"),
        ("rloo", {"per_device_train_batch_size": 6}, "per_device_train_batch_size"),
        ("rloo", {"per_device_eval_batch_size": 6}, "per_device_eval_batch_size"),
        ("rloo", {"temperature": 0}, "temperature"),
    ],
)
def test_invalid_values_raise_naming_the_field(
    method: str, changes: dict[str, Any], field: str
) -> None:
    """Every validation error starts with the offending field's name."""
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        config_from_dict(method, {**minimal(method), **changes})


@pytest.mark.parametrize("method", METHODS)
def test_from_dict_rejects_unknown_keys(method: str) -> None:
    """A typo in a stored config fails loudly instead of being ignored."""
    with pytest.raises(ValueError, match=r"^learnin_rate is not a known setting"):
        config_from_dict(method, {**minimal(method), "learnin_rate": 1e-3})
    with pytest.raises(ValueError, match=r"^peft\.rank is not a known setting"):
        config_from_dict(method, {**minimal(method), "peft": {"rank": 8}})


@pytest.mark.parametrize("method", METHODS)
def test_to_dict_round_trips(method: str) -> None:
    """to_dict() is JSON-ready and from_dict() rebuilds an equal config."""
    config = config_from_dict(method, {**minimal(method), "peft": {"peft_type": "ia3"}})
    data = config.to_dict()
    assert data["peft"]["peft_type"] == "ia3"
    assert config_from_dict(method, data) == config


def test_unknown_method_is_refused() -> None:
    """Only the five methods exist."""
    with pytest.raises(ValueError, match="method must be one of"):
        config_from_dict("grpo", {"base_model": "x"})


def test_defaults_suit_lora_on_cpu() -> None:
    """Defaults use LoRA-sized learning rates and a KL anchor, not TRL's 1e-6."""
    assert SFTRunConfig(base_model="b").learning_rate == pytest.approx(1e-3)
    assert RewardRunConfig(base_model="b").learning_rate == pytest.approx(1e-3)
    assert DPORunConfig(base_model="b").learning_rate == pytest.approx(5e-4)
    assert DPORunConfig(base_model="b").beta == pytest.approx(0.1)
    ppo = PPORunConfig(base_model="b", reward_adapter="r")
    assert ppo.kl_coef >= 0.2 and ppo.learning_rate == pytest.approx(5e-4)
    rloo = RLOORunConfig(base_model="b", reward_adapter="r")
    assert rloo.beta >= 0.2 and rloo.num_generations == 4
    assert PeftSettings().peft_type == "lora" and PeftSettings().r == 16


def test_learning_rate_default_follows_peft_type() -> None:
    """IA3 and prompt tuning need ~10x the LoRA rate; an explicit value wins."""
    ia3 = DPORunConfig(base_model="b", peft=PeftSettings(peft_type="ia3"))
    prompt = SFTRunConfig(base_model="b", peft={"peft_type": "prompt_tuning"})  # type: ignore[arg-type]
    assert ia3.learning_rate == pytest.approx(1e-2)
    assert prompt.learning_rate == pytest.approx(3e-2)
    assert DPORunConfig(
        base_model="b", learning_rate=2e-3
    ).learning_rate == pytest.approx(2e-3)


@pytest.mark.parametrize(
    ("method", "peft_type"),
    [("reward", "prompt_tuning"), ("ppo", "prompt_tuning")],
)
def test_unsupported_peft_type_is_refused(method: str, peft_type: str) -> None:
    """PEFT kinds a trainer cannot handle are refused at validation time."""
    with pytest.raises(
        ValueError,
        match=rf"^peft\.peft_type '{peft_type}' is not supported by {method}",
    ):
        config_from_dict(method, {**minimal(method), "peft": {"peft_type": peft_type}})


@pytest.mark.parametrize(
    ("method", "peft_type"),
    [
        ("sft", "lora"),
        ("sft", "ia3"),
        ("sft", "prompt_tuning"),
        ("reward", "lora"),
        ("reward", "ia3"),
        ("dpo", "lora"),
        ("dpo", "ia3"),
        ("dpo", "prompt_tuning"),
        ("rloo", "lora"),
        ("rloo", "ia3"),
        ("rloo", "prompt_tuning"),
        ("ppo", "lora"),
        ("ppo", "ia3"),
    ],
)
def test_supported_peft_matrix(method: str, peft_type: str) -> None:
    """The support matrix the runner tests exercise is what the configs accept."""
    assert peft_type in CONFIG_CLASSES[method].supported_peft_types
    config_from_dict(method, {**minimal(method), "peft": {"peft_type": peft_type}})


def test_every_field_has_help() -> None:
    """Forms render the metadata help text of every field."""
    import dataclasses

    for cls in [PeftSettings, *CONFIG_CLASSES.values()]:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_importing_runners_and_configs_does_not_import_torch() -> None:
    """Web processes validate configs without loading the training stack."""
    code = (
        "import sys, ml.runners, ml.config;"
        "ml.config.config_from_dict('dpo', {'base_model': 'x'});"
        "heavy = {'torch', 'transformers', 'peft', 'trl', 'datasets', 'accelerate', 'django'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
