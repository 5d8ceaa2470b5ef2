"""Generation on a GPU worker: one base model per process, adapters switched.

``AdapterGenerator`` loads the base model once, keeps up to ``max_adapters``
PEFT adapters attached to it (least recently used evicted) and generates in
batches with any of them, or with the base alone ("version 0"). Switching
adapters never reloads the base. Only Celery workers on the ``gpu`` queue
import this module (it imports torch at module level).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from ml.loading import end_token_ids, load_for_inference, load_tokenizer

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class DecodingParams:
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    do_sample: bool = True
    seed: int = 0
    # 32 rows per batch: on 2 CPU cores a decoding step of SmolLM2 is bound by
    # per-call overhead at 8 rows; 32 rows gave 1.8x the tokens/s (66 -> 113-131
    # tok/s, LoRA adapter, 48 new tokens). Merging the LoRA into the base for a
    # round gave nothing measurable there, so adapters stay unmerged (exact).
    batch_size: int = 32

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdapterGenerator:
    base_loads = 0  # class-wide, so tests can assert the base loaded once

    def __init__(
        self, base_path: str, *, max_adapters: int = 4, device: str | None = None
    ) -> None:
        self.base_path = base_path
        self.max_adapters = max_adapters
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if Path(base_path).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = load_tokenizer(base_path, padding_side="left")
        self.base: PreTrainedModel = load_for_inference(base_path, device=self.device)
        type(self).base_loads += 1
        self.model: PeftModel | None = None
        self.adapters: OrderedDict[str, str] = (
            OrderedDict()
        )  # key -> path, most recent last
        self.lock = threading.Lock()

    # ------------------------------------------------------------ adapters
    def _activate(self, key: str, path: str) -> None:
        if key in self.adapters:
            self.adapters.move_to_end(key)
        else:
            if self.model is None:
                self.model = PeftModel.from_pretrained(
                    self.base, path, adapter_name=key
                )
            else:
                self.model.load_adapter(path, adapter_name=key)
            self.adapters[key] = path
            logger.info("generation.adapter.loaded key=%s", key)
        assert self.model is not None
        self.model.set_adapter(key)
        while len(self.adapters) > self.max_adapters:
            oldest = next(iter(self.adapters))
            self.model.delete_adapter(oldest)
            del self.adapters[oldest]
            logger.info("generation.adapter.evicted key=%s", oldest)
        self.model.eval()

    # ------------------------------------------------------------ generation
    def _encode(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        if tok.chat_template:
            texts = [
                tok.apply_chat_template(
                    p if isinstance(p, list) else [{"role": "user", "content": p}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for p in prompts
            ]
            enc = tok(
                texts, return_tensors="pt", padding=True, add_special_tokens=False
            )
        else:
            texts = [
                p if isinstance(p, str) else "\n".join(m["content"] for m in p)
                for p in prompts
            ]
            enc = tok(texts, return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def _generate_batch(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Prompt],
        params: DecodingParams,
        seed: int,
    ) -> list[tuple[str, bool, int]]:
        """(text, finished, new tokens) per prompt; ``finished`` is False when
        the output was cut at ``max_new_tokens`` before its end token."""
        enc = self._encode(prompts)
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.do_sample:
            kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p
            )
        else:
            kwargs.update(do_sample=False)
        out = model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        stops = end_token_ids(self.base, self.tokenizer)
        rows = []
        for ids, text in zip(
            new_tokens.tolist(),
            self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True),
            strict=True,
        ):
            ended = next((i for i, t in enumerate(ids) if t in stops), None)
            length = ended + 1 if ended is not None else len(ids)
            rows.append((text.strip(), ended is not None, length))
        return rows

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        adapter: tuple[str, str] | None,
        params: DecodingParams,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Completions for ``prompts`` with ``adapter`` ``(key, path)``, or the
        base alone when None. Returns (text, generation record) per prompt; the
        record holds the decoding parameters, the batch seed, ``finished``
        (False: cut at ``max_new_tokens``) and ``new_tokens``."""
        results: list[tuple[str, dict[str, Any]]] = []
        with self.lock:
            if adapter is not None:
                self._activate(*adapter)
            for start in range(0, len(prompts), params.batch_size):
                batch = prompts[start : start + params.batch_size]
                seed = params.seed + start
                with self._version(adapter) as model:
                    rows = self._generate_batch(model, batch, params, seed)
                record = {**params.as_dict(), "batch_seed": seed, "device": self.device}
                results.extend(
                    (text, {**record, "finished": finished, "new_tokens": length})
                    for text, finished, length in rows
                )
        return results

    @contextmanager
    def _version(self, adapter: tuple[str, str] | None) -> Iterator[torch.nn.Module]:
        """The model to run: the active adapter, or the base alone."""
        if adapter is not None:
            assert self.model is not None
            yield self.model
        elif self.model is not None:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.base

    def negative_log_likelihood(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        *,
        adapter: tuple[str, str] | None = None,
        batch_size: int = 8,
        per_token: bool = True,
    ) -> list[float]:
        """Mean negative log-likelihood per completion token under a version
        (the base alone by default), each completion read after its prompt
        as the generator wrote it; with ``per_token=False`` the sum over the
        completion's tokens (minus its log-probability). Under the base, a
        candidate's outputs scoring far above the base's own outputs means it
        drifted (a KL proxy)."""
        with self.lock:
            # Loaded outside inference mode: an adapter's weights made there
            # are inference tensors, and PEFT's next load_adapter (which sets
            # requires_grad on every adapter's weights) would fail on them.
            if adapter is not None:
                self._activate(*adapter)
            with torch.inference_mode():
                return self._nll(prompts, completions, adapter, batch_size, per_token)

    def _nll(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        adapter: tuple[str, str] | None,
        batch_size: int,
        per_token: bool,
    ) -> list[float]:
        """``negative_log_likelihood``'s batches (the caller holds the lock,
        the adapter active, inference mode on)."""
        tok = self.tokenizer
        results: list[float] = []
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            texts = completions[start : start + batch_size]
            enc = self._encode(batch)
            prompt_ids = [
                ids[mask.bool()].tolist()
                for ids, mask in zip(
                    enc["input_ids"], enc["attention_mask"], strict=True
                )
            ]
            sequences = []
            for ids, text in zip(prompt_ids, texts, strict=True):
                reply = tok(text, add_special_tokens=False)["input_ids"]
                sequences.append((ids, reply[: max(1, len(reply))]))
            width = max(len(p) + len(r) for p, r in sequences)
            input_ids = torch.full(
                (len(sequences), width), tok.pad_token_id, dtype=torch.long
            )
            attention = torch.zeros_like(input_ids)
            labels = torch.full_like(input_ids, -100)
            for row, (p, r) in enumerate(sequences):
                ids = torch.tensor(p + r)
                input_ids[row, : len(ids)] = ids
                attention[row, : len(ids)] = 1
                labels[row, len(p) : len(ids)] = torch.tensor(r)
            with self._version(adapter) as model:
                logits = model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention.to(self.device),
                ).logits.float()
            shifted = logits[:, :-1].transpose(1, 2)
            target = labels[:, 1:].to(self.device)
            losses = torch.nn.functional.cross_entropy(
                shifted, target, ignore_index=-100, reduction="none"
            )
            counts = (target != -100).sum(dim=1).clamp(min=1)
            totals = losses.sum(dim=1)
            results.extend((totals / counts if per_token else totals).tolist())
        return results


_GENERATORS: OrderedDict[str, AdapterGenerator] = OrderedDict()
_GENERATORS_LOCK = threading.Lock()


def get_generator(
    base_path: str, *, max_bases: int = 1, max_adapters: int = 4
) -> AdapterGenerator:
    """The process's generator for ``base_path`` (loaded on first use)."""
    with _GENERATORS_LOCK:
        generator = _GENERATORS.get(base_path)
        if generator is None:
            generator = AdapterGenerator(base_path, max_adapters=max_adapters)
            _GENERATORS[base_path] = generator
        _GENERATORS.move_to_end(base_path)
        while len(_GENERATORS) > max_bases:
            _GENERATORS.popitem(last=False)
        return generator
