"""Loading tokenizers and models from a hub id or a local folder."""

from __future__ import annotations

import logging

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

logger = logging.getLogger(__name__)


def load_tokenizer(
    name: str, *, padding_side: str | None = None
) -> PreTrainedTokenizerBase:
    """Tokenizer of ``name`` with a pad token (eos stands in when it has none)."""
    tok = AutoTokenizer.from_pretrained(name)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(
                f"The tokenizer of {name} has neither a pad nor an eos token"
            )
        logger.warning(
            "Tokenizer of %s has no pad token; using eos %r", name, tok.eos_token
        )
        tok.pad_token = tok.eos_token
    if padding_side is not None:
        tok.padding_side = padding_side
    return tok


def load_causal_lm(name: str) -> PreTrainedModel:
    """Causal LM in float32 (bf16 on GPU comes from autocast, not the weights)."""
    return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)


def inference_dtype(device: str) -> torch.dtype:
    """bf16 weights on a GPU, float32 on the CPU (for generation, not training)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_for_inference(name: str, *, device: str) -> PreTrainedModel:
    """Causal LM on ``device`` in eval mode, in ``inference_dtype(device)``."""
    model = AutoModelForCausalLM.from_pretrained(name, dtype=inference_dtype(device))
    model.to(device)
    model.eval()
    return model


def end_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> frozenset[int]:
    """The ids that end an answer: the generation config's eos (one or a
    list), else the tokenizer's."""
    ids = model.generation_config.eos_token_id
    if ids is None:
        ids = tokenizer.eos_token_id
    return frozenset(ids if isinstance(ids, list) else [ids])


def load_sequence_classifier(name: str, *, pad_token_id: int | None) -> PreTrainedModel:
    """Scalar-output sequence classifier (``num_labels=1``); the head is new."""
    model = AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = pad_token_id
    return model
