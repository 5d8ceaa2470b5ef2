"""One answer written token by token, its text so far handed to a callback.

``generate_streaming`` runs the same model, adapter switching and decoding
settings as ``AdapterGenerator.generate`` for a single prompt, and calls
``on_text(text_so_far)`` every ``every`` new tokens (and once at the end), so
a worker can write the partial answer where a page reads it. ``on_text`` may
raise to stop the generation (a cancel): the exception leaves this function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from ml.generation import AdapterGenerator, DecodingParams, Prompt
from ml.loading import end_token_ids

logger = logging.getLogger(__name__)


class _TextCollector(BaseStreamer):
    """Receives the prompt's ids first (ignored), then each new token."""

    def __init__(
        self, tokenizer: Any, on_text: Callable[[str], None], every: int
    ) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.every = max(1, every)
        self.ids: list[int] = []
        self._prompt_seen = False
        self._sent = 0

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        if len(self.ids) - self._sent >= self.every:
            self._sent = len(self.ids)
            self.on_text(self.text())

    def end(self) -> None:
        """Called by ``generate`` once it stops; the final text is sent by
        ``generate_streaming`` itself (after the end token is trimmed)."""


class PromptTooLong(ValueError):
    """The prompt and the answer would not fit the model's context."""


def _check_fits(generator: AdapterGenerator, prompt_tokens: int, new: int) -> None:
    limit = getattr(generator.base.config, "max_position_embeddings", None)
    if isinstance(limit, int) and prompt_tokens + new > limit:
        raise PromptTooLong(
            f"the conversation is {prompt_tokens} tokens long and an answer may "
            f"take {new} more, past this model's context of {limit} tokens; "
            "end the conversation here or start a new one"
        )


def generate_streaming(
    generator: AdapterGenerator,
    prompt: Prompt,
    *,
    adapter: tuple[str, str] | None,
    params: DecodingParams,
    on_text: Callable[[str], None],
    every: int = 4,
) -> tuple[str, dict[str, Any]]:
    """The answer to ``prompt`` by ``adapter`` ``(key, path)`` (the base alone
    when None), with ``on_text`` called as it is written. Returns the text and
    the generation record ``AdapterGenerator.generate`` would give (decoding
    parameters, seed, ``finished``, ``new_tokens``, device)."""
    collector = _TextCollector(generator.tokenizer, on_text, every)
    with generator.lock:
        if adapter is not None:
            generator._activate(*adapter)
        enc = generator._encode([prompt])
        _check_fits(generator, enc["input_ids"].shape[1], params.max_new_tokens)
        torch.manual_seed(params.seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": generator.tokenizer.pad_token_id,
            "streamer": collector,
        }
        if params.do_sample:
            kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p
            )
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode(), generator._version(adapter) as model:
            out = model.generate(**enc, **kwargs)
        ids = out[0, enc["input_ids"].shape[1] :].tolist()
        stops = end_token_ids(generator.base, generator.tokenizer)
    ended = next((i for i, t in enumerate(ids) if t in stops), None)
    length = ended + 1 if ended is not None else len(ids)
    text = generator.tokenizer.decode(ids[:length], skip_special_tokens=True).strip()
    on_text(text)
    record = {
        **params.as_dict(),
        "batch_seed": params.seed,
        "device": generator.device,
        "finished": ended is not None,
        "new_tokens": length,
        "streamed": True,
    }
    return text, record
