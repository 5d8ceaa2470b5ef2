"""PEFT adapters: the config builder, reading their config, saving them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PeftModel, PromptTuningConfig
from transformers import PreTrainedTokenizerBase

from ml.config import PeftSettings, RunConfig
from ml.result import RunResult
from ml.runtime import library_versions

RUN_INFO_FILE = "arbiter_run.json"

# Dense architectures whose blocks use the Llama projection names. Others
# (MoE, fused-projection models such as phi3) fall back to "all-linear".
LLAMA_LIKE = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "olmo",
        "olmo2",
        "granite",
        "smollm3",
    }
)
LLAMA_LORA = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "bert": ["query", "key", "value", "dense"],
}
# (target_modules, feedforward_modules)
IA3_TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
}


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ValueError(f"{adapter_dir} has no adapter_config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def build_peft_config(
    settings: PeftSettings, *, model_type: str, task_type: str
) -> PeftConfig:
    """Translate our ``PeftSettings`` to a PEFT config for ``model_type``."""
    arch = "llama" if model_type in LLAMA_LIKE else model_type
    if settings.peft_type == "lora":
        targets: list[str] | str
        if settings.target_modules:
            targets = settings.target_modules
        elif arch == "llama":
            targets = LLAMA_LORA
        else:
            targets = LORA_TARGETS.get(arch, "all-linear")
        return LoraConfig(
            task_type=task_type,
            r=settings.r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=targets,
            fan_in_fan_out=arch == "gpt2",  # GPT-2 stores weights as Conv1D (in, out)
        )
    if settings.peft_type == "ia3":
        default_targets, default_ff = IA3_TARGETS.get(arch, (None, None))
        targets_ia3 = settings.target_modules or default_targets
        feedforward = settings.feedforward_modules
        if feedforward is None:
            feedforward = default_ff if targets_ia3 == default_targets else []
        return IA3Config(
            task_type=task_type,
            target_modules=targets_ia3,
            feedforward_modules=feedforward,
        )
    # Virtual tokens start as embeddings of random vocabulary tokens: in
    # measurements this learned faster than PEFT's default random init.
    return PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=settings.num_virtual_tokens,
        prompt_tuning_init="SAMPLE_VOCAB",
    )


def drop_virtual_token_logits(model: torch.nn.Module | None) -> None:
    """Make a prompt-tuned model return logits aligned with ``input_ids``.

    PEFT prompt tuning prepends virtual tokens and returns their logits too.
    Trainers that line logits up with ``input_ids`` position by position (DPO)
    then fail on a shape mismatch; this hook cuts the extra leading positions.
    Forward passes with the adapter disabled (the DPO reference) are left as
    they are because their logits already match.
    """

    def hook(
        module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any
    ) -> Any:
        input_ids = kwargs.get("input_ids")
        logits = getattr(output, "logits", None)
        if (
            input_ids is not None
            and logits is not None
            and logits.shape[1] > input_ids.shape[1]
        ):
            output.logits = logits[:, logits.shape[1] - input_ids.shape[1] :]
        return output

    if model is None:
        raise ValueError("The trainer has no model to hook")
    model.register_forward_hook(hook, with_kwargs=True)


def save_adapter(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    *,
    method: str,
    config: RunConfig,
    result: RunResult,
    weights_saved: bool = False,
) -> None:
    """Write the plain PEFT adapter, the tokenizer and ``arbiter_run.json``.
    With ``weights_saved`` the adapter's weights are already in
    ``output_dir`` (gathered from the ranks of a sharded run)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, PeftModel):
        raise TypeError(f"Expected a PeftModel to save, got {type(model).__name__}")
    if not weights_saved:
        model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    info = {
        "method": method,
        "config": config.to_dict(),
        "metrics": result.metrics,
        "peft_type": result.peft_type,
        "task_type": result.task_type,
        "train_runtime": result.train_runtime,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "versions": library_versions(),
    }
    tmp = output_dir / (RUN_INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(output_dir / RUN_INFO_FILE)
