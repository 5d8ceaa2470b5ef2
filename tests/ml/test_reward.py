"""ml.reward: one reward scorer for RLOO, the generation rounds and active selection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ml.adapters import RUN_INFO_FILE
from ml.config import RLOORunConfig
from ml.reward import RewardScorer
from ml.runners.rloo import load_scorer


def load_reward_base(base: str) -> torch.nn.Module:
    torch.manual_seed(1234)  # the fresh score head must be identical across loads
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = AutoTokenizer.from_pretrained(base).pad_token_id
    return model.eval()


def test_generation_scores_equal_the_rloo_reward_on_plain_and_chat_prompts(
    reward_run: tuple[Any, Any, Path],
    llama_dir: str,
    pairs: Callable[[int, int], list[dict[str, Any]]],
) -> None:
    """The scorer the generation rounds load (base + adapter, nothing else) gives
    exactly the reward RLOO optimised, for plain prompts and for chat prompts
    (through the chat template, with TRL's message-list completions on the
    RLOO side and plain strings on the generation side), at the max_length the
    reward model was trained with."""
    adapter = reward_run[0].output_dir
    trained = json.loads((Path(adapter) / RUN_INFO_FILE).read_text())["config"][
        "max_length"
    ]
    rloo = load_scorer(
        RLOORunConfig(
            base_model=llama_dir, reward_adapter=str(adapter), max_length=trained
        )
    )
    generation_side = RewardScorer.load(llama_dir, adapter)
    assert generation_side.max_length == rloo.max_length == trained

    rows = pairs(6, 3)
    plain = [r["prompt"] for r in rows]
    chat = [[{"role": "user", "content": p}] for p in plain]
    texts = [r["chosen"] for r in rows[:3]] + [r["rejected"] for r in rows[3:]]
    replies = [[{"role": "assistant", "content": t}] for t in texts]

    rloo_plain = rloo(prompts=plain, completions=texts)
    rloo_chat = rloo(prompts=chat, completions=replies)
    assert generation_side.score(plain, texts) == pytest.approx(rloo_plain, abs=1e-6)
    assert generation_side.score(chat, texts) == pytest.approx(rloo_chat, abs=1e-6)
    # The chat template, not a "\n".join of the messages, decides a chat score.
    assert rloo_chat != pytest.approx(rloo_plain, abs=1e-3)


def test_long_inputs_keep_their_end_at_max_length(
    reward_run: tuple[Any, Any, Path], llama_dir: str
) -> None:
    """Truncation keeps the last max_length ids: the reward head reads the end."""
    scorer = RewardScorer.load(llama_dir, reward_run[0].output_dir, max_length=16)
    ids = scorer.token_ids("word " * 200, " small cat runs kindly .")
    full = RewardScorer.load(llama_dir, reward_run[0].output_dir, max_length=100_000)
    assert ids == full.token_ids("word " * 200, " small cat runs kindly .")[-16:]


def test_rloo_reward_callable_scores_exactly_like_the_trained_reward_model(
    reward_run: tuple[Any, Any, Path],
    llama_dir: str,
    pairs: Callable[[int, int], list[dict[str, Any]]],
) -> None:
    """The merged, batched scorer appends EOS like RewardTrainer (notes' gotcha G2)."""
    from ml.merge import load_merged_reward_model
    from ml.reward import RewardScorer

    adapter = reward_run[0].output_dir
    tok = AutoTokenizer.from_pretrained(llama_dir)
    merged = load_merged_reward_model(llama_dir, adapter, pad_token_id=tok.pad_token_id)
    scorer = RewardScorer(merged, tok, max_length=512, batch_size=4)
    rows = pairs(5, 77)
    prompts = [r["prompt"] for r in rows] * 2
    completions = [r["chosen"] for r in rows] + [
        r["rejected"] + " extra words" for r in rows
    ]
    scores = scorer(prompts=prompts, completions=completions)

    unmerged = PeftModel.from_pretrained(
        load_reward_base(llama_dir), str(adapter)
    ).eval()
    with torch.no_grad():
        expected = [
            unmerged(**tok(p + c + tok.eos_token, return_tensors="pt"))
            .logits[0, 0]
            .item()
            for p, c in zip(prompts, completions, strict=True)
        ]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert all(c > r for c, r in zip(scores[:5], scores[5:], strict=True))
