"""Merging an adapter into its base: for reward scoring and for export.

One place loads "base + adapter, merged": the reward model that RLOO and PPO
optimise against, the scorer the generation rounds use, and the merged
full-model export all come through ``load_merged``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel

from ml.adapters import read_adapter_config
from ml.loading import load_causal_lm, load_sequence_classifier, load_tokenizer

logger = logging.getLogger(__name__)

REWARD_TASK_TYPE = "SEQ_CLS"


def load_merged(
    base: str, adapter_dir: str | Path, *, pad_token_id: int | None = None
) -> PreTrainedModel:
    """``base`` + the adapter in ``adapter_dir``, merged into a plain model.

    A reward adapter (task type ``SEQ_CLS``) merges into a scalar sequence
    classifier whose ``pad_token_id`` is set (a reward head reads the last
    non-pad token); any other adapter into a causal LM.
    """
    task_type = read_adapter_config(adapter_dir).get("task_type")
    if task_type == REWARD_TASK_TYPE:
        model = load_sequence_classifier(base, pad_token_id=pad_token_id)
    else:
        model = load_causal_lm(base)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if task_type == REWARD_TASK_TYPE:
        merged.config.pad_token_id = pad_token_id
    return merged


def load_merged_reward_model(
    reward_base: str, reward_adapter: str | Path, *, pad_token_id: int | None
) -> PreTrainedModel:
    """Reward base + reward adapter, merged, frozen and in eval mode."""
    task_type = read_adapter_config(reward_adapter).get("task_type")
    if task_type != REWARD_TASK_TYPE:
        raise ValueError(
            f"reward_adapter {reward_adapter} is not a reward-model adapter "
            f"(task_type {task_type!r}, expected {REWARD_TASK_TYPE!r})"
        )
    merged = load_merged(reward_base, reward_adapter, pad_token_id=pad_token_id)
    merged.eval()
    for param in merged.parameters():
        param.requires_grad_(False)
    return merged


def export_merged(base: str, adapter_dir: str | Path, out_dir: str | Path) -> None:
    """Save the merged model and the base tokenizer as a plain HF folder in
    ``out_dir`` (which the caller creates fresh and moves into place)."""
    tokenizer = load_tokenizer(base)
    merged = load_merged(base, adapter_dir, pad_token_id=tokenizer.pad_token_id)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    logger.info("ml.merge.exported adapter=%s out=%s", adapter_dir, out_dir)
