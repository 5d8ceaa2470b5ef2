"""RLOO: online RL of a causal-LM adapter against a trained reward adapter."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import RLOOConfig, RLOOTrainer

from training.runners import base
from training.runners.config import RLOORunConfig
from training.runners.result import RunResult

logger = logging.getLogger(__name__)

EVAL_MAP = {"eval_reward": "eval_reward", "eval_kl": "eval_kl"}
TRAIN_MAP = {"reward": "reward_mean", "kl": "kl"}
FIRST_MAP = {"reward": "reward_start"}


class RewardModelScorer:
    """Reward callable for TRL's online trainers, consistent with RewardTrainer.

    RewardTrainer scores ``prompt + completion + eos`` (plain text) or the
    chat-templated conversation (message lists). TRL's built-in model path
    scores decoded text *without* the EOS, which shifts the scores and can
    reward the wrong behaviour, so this wrapper re-adds it.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    def _ids(self, prompt: Any, completion: Any) -> list[int]:
        tok = self.tokenizer
        enc: Any
        if isinstance(prompt, list):
            enc = tok.apply_chat_template(
                prompt + completion, tokenize=True, return_dict=True
            )
        else:
            text = prompt + completion
            if not text.endswith(tok.eos_token):
                text += tok.eos_token
            enc = tok(text=text)
        ids: list[int] = list(enc["input_ids"])
        return ids[-self.max_length :]

    @torch.inference_mode()
    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        scores: list[float | None] = []
        all_ids = [self._ids(p, c) for p, c in zip(prompts, completions, strict=True)]
        for start in range(0, len(all_ids), self.batch_size):
            chunk = all_ids[start : start + self.batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device)
            ).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores


def load_scorer(config: RLOORunConfig) -> RewardModelScorer:
    """The reward adapter merged into its base, wrapped as a reward callable."""
    reward_base = config.reward_base or config.base_model
    reward_tok = base.load_tokenizer(reward_base)
    model = base.load_merged_reward_model(
        reward_base, config.reward_adapter, pad_token_id=reward_tok.pad_token_id
    )
    if base.use_cuda():
        model.cuda()  # type: ignore[call-arg]  # transformers wraps .cuda oddly for mypy
    return RewardModelScorer(model, reward_tok, max_length=config.max_length)


def run(
    config: RLOORunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: base.EventFn,
    should_stop: base.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter with RLOO on ``{"prompt"}`` rows."""
    base.setup_runtime(config, config.reward_base, config.reward_adapter)
    train_rows, val_rows = base.read_train_val(data_dir, required=("prompt",))
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = base.load_tokenizer(config.base_model, padding_side="left")
    base.check_chat_template(tok, train_rows, config.base_model)
    scorer = load_scorer(config)
    model = base.load_causal_lm(config.base_model)
    peft_config = base.build_peft_config(
        config.peft, model_type=model.config.model_type, task_type="CAUSAL_LM"
    )
    callback = base.EventCallback(
        on_event,
        should_stop,
        best_metric="eval_reward",
        greater_is_better=True,
        early_stopping_patience=config.early_stopping_patience if val_rows else 0,
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-rloo-") as scratch:
        args = RLOOConfig(
            **base.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
            beta=config.beta,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
        )
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=scorer,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[callback],
        )
        return base.train_and_save(
            trainer,
            callback,
            config=config,
            tokenizer=tok,
            output_dir=output_dir,
            has_eval=bool(val_rows),
            on_event=on_event,
            should_stop=should_stop,
            task_type="CAUSAL_LM",
            eval_map=EVAL_MAP,
            train_map=TRAIN_MAP,
            first_map=FIRST_MAP,
        )
