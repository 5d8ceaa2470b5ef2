"""Reward scoring: the one implementation every caller uses.

RewardTrainer scores ``prompt + completion + eos`` for plain text and the
chat-templated conversation for message lists. TRL's online trainers, left to
themselves, score decoded text *without* the EOS, which shifts the scores and
can reward the wrong behaviour (``shared/references/trl-notes.md`` G2). So the
reward callable given to RLOO, the scorer of the generation rounds and active
selection all go through ``RewardScorer``: the same token ids the reward model
was trained on, truncated to the same ``max_length`` (keeping the end, where
the head reads), whatever the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ml.adapters import RUN_INFO_FILE
from ml.loading import load_tokenizer
from ml.merge import load_merged_reward_model

Messages = list[dict[str, str]]
DEFAULT_MAX_LENGTH = 1024


def trained_max_length(adapter_dir: str | Path) -> int:
    """The ``max_length`` the reward adapter was trained with (its run info),
    or ``DEFAULT_MAX_LENGTH`` for an adapter made elsewhere."""
    info = Path(adapter_dir) / RUN_INFO_FILE
    if info.is_file():
        config = json.loads(info.read_text(encoding="utf-8")).get("config", {})
        if isinstance(config.get("max_length"), int):
            return int(config["max_length"])
    return DEFAULT_MAX_LENGTH


class RewardScorer:
    """Scores (prompt, completion) pairs with a merged reward model.

    Prompts are strings or message lists; completions are strings or, in
    TRL's conversational format, message lists. A string completion after a
    message-list prompt becomes one assistant message. Callable with TRL's
    ``reward_funcs`` signature.
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

    @classmethod
    def load(
        cls,
        reward_base: str,
        reward_adapter: str | Path,
        *,
        max_length: int | None = None,
        device: str | None = None,
    ) -> RewardScorer:
        """The reward adapter merged into its base; ``max_length`` defaults to
        the length the adapter was trained with."""
        tokenizer = load_tokenizer(reward_base)
        model = load_merged_reward_model(
            reward_base, reward_adapter, pad_token_id=tokenizer.pad_token_id
        )
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)  # type: ignore[arg-type]
        return cls(
            model,
            tokenizer,
            max_length=max_length or trained_max_length(reward_adapter),
        )

    def token_ids(
        self, prompt: str | Messages, completion: str | Messages
    ) -> list[int]:
        """The ids the reward model reads for one pair (as RewardTrainer built them)."""
        tok = self.tokenizer
        enc: Any
        if isinstance(prompt, list):
            reply = (
                completion
                if isinstance(completion, list)
                else [{"role": "assistant", "content": completion}]
            )
            enc = tok.apply_chat_template(
                prompt + reply, tokenize=True, return_dict=True
            )
        else:
            if not isinstance(completion, str):
                raise ValueError("a plain-text prompt needs a plain-text completion")
            text = prompt + completion
            if not text.endswith(tok.eos_token):
                text += tok.eos_token
            enc = tok(text=text)
        ids: list[int] = list(enc["input_ids"])
        return ids[-self.max_length :]

    @torch.inference_mode()
    def score(
        self,
        prompts: Sequence[str | Messages],
        completions: Sequence[str | Messages],
    ) -> list[float]:
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        all_ids = [
            self.token_ids(p, c) for p, c in zip(prompts, completions, strict=True)
        ]
        scores: list[float] = []
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

    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        return list(self.score(prompts, completions))
