"""Serving many adapter versions from one loaded base, per request, batched.

``ServingEngine`` loads one base model, wraps it once in a ``peft.PeftModel``
and attaches LoRA adapters by served name (``load_adapter``), keeping up to
``max_adapters`` of them (least recently used evicted with
``delete_adapter``). Switching versions never reloads the base. Merged
exports are separate full models, up to ``max_merged`` of them.

A scheduler thread runs the requests. Rows for different adapters and the
base share one batch through PEFT's mixed-adapter forward (one adapter name
per row, ``"__base__"`` for the base): the base layers run once for the
whole batch and each LoRA delta once per sub-batch of its rows. Requests for
a merged model batch separately, per merged model.

Batching is continuous: the decode loop is our own (KV cache, left-padded
prefill, then one token per step with per-row position ids and attention
mask), so a request that arrives while a batch is decoding is prefilled and
joins it at the next step (its cache is left-padded to the batch's length),
and a row that finishes (end token, stop string, ``max_tokens``, cancel) leaves
at once. Every row streams its text per token.

Only the inference process and workers import this module (torch at module
level); it imports nothing from Django or our apps.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import queue
import re
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer
from transformers.pytorch_utils import Conv1D

from ml.adapters import read_adapter_config
from ml.loading import (
    end_token_ids,
    load_for_inference,
    load_tokenizer,
)

logger = logging.getLogger(__name__)

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch
PEFT_GROUP = "__peft__"  # batch group of the base and its adapters


class EngineError(Exception):
    """A request the engine cannot serve; the message says why."""


@dataclass(frozen=True)
class ServedModel:
    """A served version. ``name`` is immutable: a new version gets a new name
    (an adapter loaded under a name is never replaced by other weights while a
    row uses it)."""

    name: str
    adapter_path: str | None = None  # PEFT adapter folder; None = the base alone
    merged_path: str | None = None  # a merged full model, used instead of base+adapter


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass
class Completed:
    text: str
    finish_reason: str  # "stop" (end token or stop string) | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


_END = object()  # end of a stream's deltas


class TokenStream:
    """Text deltas of one request as its tokens are decoded.

    Iterate for ``str`` deltas (their join is ``result.text``); ``result`` is
    the completion (it blocks until the request is done). A request the engine
    cannot serve raises ``EngineError`` from both.
    """

    def __init__(self) -> None:
        self._deltas: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: Completed | None = None
        self._error: EngineError | None = None
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._deltas.get()
            if item is _END:
                break
            yield item
        if self._error is not None:
            raise self._error

    @property
    def result(self) -> Completed:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """The client went away: the row stops decoding at the next step."""
        self.cancelled.set()

    # --------------------------------------------------- engine side
    def _put(self, delta: str) -> None:
        if delta:
            self._deltas.put(delta)

    def _finish(self, result: Completed) -> None:
        self._result = result
        self._done.set()
        self._deltas.put(_END)

    def _fail(self, error: EngineError) -> None:
        self._error = error
        self._done.set()
        self._deltas.put(_END)


@dataclass(eq=False)
class _Request:
    model: ServedModel
    prompt_ids: list[int]
    params: SamplingParams
    stream: TokenStream
    submitted_at: float

    @property
    def group(self) -> str:
        if self.model.merged_path:
            return f"merged:{self.model.name}:{self.model.merged_path}"
        return PEFT_GROUP


@dataclass(eq=False)
class _Row:
    """A request while it decodes: generated ids, text, detokeniser offsets."""

    request: _Request
    adapter: str  # PEFT adapter key, or BASE_ROW
    limit: int  # tokens it may generate (max_tokens, capped by the context)
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)
    position: int = 0  # position id of the next token fed to the model
    text: str = ""
    emitted: int = 0  # characters of ``text`` already streamed
    prefix_offset: int = 0  # detokeniser window: ids[prefix_offset:] is decoded
    read_offset: int = 0  # ids up to here are in ``text``
    finish_reason: str | None = None


@dataclass
class _Batch:
    """The rows decoding together, their KV cache and attention mask."""

    group: str
    model: torch.nn.Module
    rows: list[_Row]
    cache: DynamicCache
    mask: torch.Tensor  # [rows, cached + 1] after each step's token is appended
    last: torch.Tensor  # [rows, 1] the token each row feeds next


class ServingEngine:
    """One loaded base serving its adapters (and merged exports) per request.

    ``submit`` is thread-safe and returns at once; a scheduler thread batches
    and decodes. ``counters`` count loads, evictions and batches (read them
    for tests and metrics; only the scheduler writes most of them).
    """

    def __init__(
        self,
        base_path: str,
        *,
        max_adapters: int = 8,
        max_merged: int = 1,
        max_batch: int = 16,
        batch_wait_ms: float = 5.0,
        device: str | None = None,
    ) -> None:
        if max_adapters < 1 or max_merged < 1 or max_batch < 1:
            raise ValueError("max_adapters, max_merged and max_batch must be >= 1")
        self.base_path = base_path
        self.max_adapters = max_adapters
        self.max_merged = max_merged
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "base_loads",
                "adapter_loads",
                "adapter_evictions",
                "merged_loads",
                "merged_evictions",
                "batches",
                "prefills",
                "joined",
                "decode_steps",
                "decode_rows",
                "requests",
                "failed",
                "cancelled",
                "completion_tokens",
            ),
            0,
        )
        if Path(base_path).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = load_tokenizer(base_path)
        # A fast tokenizer shared by threads can raise "Already borrowed" when
        # one encodes while another does (transformers#47085; not reproduced
        # with 5.25 and this code, 8 threads): one call at a time, it is cheap.
        self._tokenizer_lock = threading.Lock()
        self.base = self._load_model(base_path)
        self.counters["base_loads"] += 1
        self.peft = _wrap(self.base)
        self._active = IDLE_ADAPTER  # the adapter PEFT's ordinary path runs
        self._row_adapters: list[str] | None = None  # per row, in a mixed batch
        self._hook_lora_layers()
        self.adapters: OrderedDict[str, str] = OrderedDict()  # key -> path, LRU last
        self.merged: OrderedDict[str, tuple[str, PreTrainedModel]] = OrderedDict()
        self.max_context = _context_length(self.base, self.tokenizer)
        self.stop_ids = end_token_ids(self.base, self.tokenizer)
        # transformers 5.x renames ``past_key_values`` to ``cache`` (the old
        # name warns from 5.2x and goes in 5.40).
        forward_params = inspect.signature(type(self.base).forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"
        # Rows join a running batch by left-padding its per-layer K/V; caches
        # of other shapes (sliding windows, hybrids) run batch after batch.
        probe = DynamicCache(config=self.base.config)
        self.can_join = bool(probe.layers) and all(
            type(layer) is DynamicLayer for layer in probe.layers
        )

        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._batch: _Batch | None = None
        self._thread = threading.Thread(
            target=self._run, name="serving-scheduler", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------ public API
    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The tokenizer's chat template over ``messages``, ready to answer."""
        if not self.tokenizer.chat_template:
            raise EngineError("the base model's tokenizer has no chat template")
        with self._tokenizer_lock:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def submit(
        self, model: ServedModel, prompt: str, params: SamplingParams
    ) -> TokenStream:
        """Queue a request; its stream yields text as the scheduler decodes."""
        stream = TokenStream()
        request = _Request(
            model=model,
            prompt_ids=self._encode(prompt),
            params=params,
            stream=stream,
            submitted_at=time.monotonic(),
        )
        with self._cond:
            if self._closed:
                raise EngineError("the serving engine is closed")
            self.counters["requests"] += 1
            self._pending.append(request)
            self._cond.notify()
        return stream

    def generate(
        self, model: ServedModel, prompt: str, params: SamplingParams
    ) -> Completed:
        return self.submit(model, prompt, params).result

    def close(self) -> None:
        """Stop the scheduler; requests still queued or decoding fail."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # ------------------------------------------------------------ loading
    def _load_model(self, path: str) -> PreTrainedModel:
        return load_for_inference(path, device=self.device)

    def _encode(self, text: str) -> list[int]:
        tok = self.tokenizer
        # A chat prompt already starts with the template's own BOS.
        add_special = not (tok.bos_token and text.startswith(tok.bos_token))
        with self._tokenizer_lock:
            ids = tok(text, add_special_tokens=add_special)["input_ids"]
        if not ids:  # an empty completion prompt: start from BOS (or EOS)
            start = (
                tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            )
            ids = [start]
        return list(ids)

    @staticmethod
    def _adapter_key(name: str) -> str:
        # PEFT keeps adapters in ModuleDicts, whose keys cannot contain ".".
        if re.fullmatch(r"[A-Za-z0-9_\-]+", name) and name != BASE_ROW:
            return name
        return "served_" + hashlib.sha256(name.encode()).hexdigest()[:16]

    def _ensure_adapter(self, key: str, path: str, pinned: set[str]) -> None:
        """Attach the adapter at ``path`` as ``key`` (LRU, never a pinned one
        evicted). Raises EngineError when the folder cannot be served."""
        if self.adapters.get(key) == path:
            self.adapters.move_to_end(key)
            return
        if key in self.adapters:  # same name, other folder: replace it
            self._delete_adapter(key)
        _check_lora_adapter(path)
        try:
            self.peft.load_adapter(path, adapter_name=key, torch_device=self.device)
        except Exception as error:  # noqa: BLE001 - any load error: undo, report
            if key in self.peft.peft_config:
                self.peft.delete_adapter(key)
            raise EngineError(
                f"adapter {path} does not fit the base {self.base_path}: {error}"
            ) from error
        self.peft.eval()
        self._hook_lora_layers()
        self.adapters[key] = path
        self.counters["adapter_loads"] += 1
        logger.info("serving.adapter.loaded key=%s path=%s", key, path)
        while len(self.adapters) > self.max_adapters:
            victim = next((k for k in self.adapters if k not in pinned), None)
            if victim is None:
                break
            self._delete_adapter(victim)
            self.counters["adapter_evictions"] += 1
            logger.info("serving.adapter.evicted key=%s", victim)

    def _route(self, names: list[str]) -> None:
        """Point the LoRA layers at the adapter of each row.

        A batch of one version runs PEFT's ordinary path with that adapter
        active (switched only when it changes; the idle no-op adapter stands
        for the base). A mixed batch runs PEFT's mixed-adapter forward: the
        hooks hand every LoRA layer ``adapter_names``, as
        ``PeftModel.forward(adapter_names=...)`` would, without PEFT's
        registering and removing one hook per layer on every call (a third
        of a decoding step of SmolLM2 on CPU).
        """
        first = names[0]
        if all(name == first for name in names):
            self._row_adapters = None
            active = IDLE_ADAPTER if first == BASE_ROW else first
            if self._active != active:
                self.peft.base_model.set_adapter(active, inference_mode=True)
                self._active = active
        else:
            self._row_adapters = names

    def _hook_lora_layers(self) -> None:
        """Give every LoRA layer (new ones appear with adapters that target
        more modules) the pre-forward hook that routes rows to adapters."""
        for module in self.peft.modules():
            if isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper)) and not (
                getattr(module, "_serving_routed", False)
            ):
                module.register_forward_pre_hook(self._inject_rows, with_kwargs=True)
                module._serving_routed = True

    def _inject_rows(
        self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        if self._row_adapters is not None:
            kwargs["adapter_names"] = self._row_adapters
        return args, kwargs

    def _delete_adapter(self, key: str) -> None:
        if self._active == key:
            self.peft.base_model.set_adapter(IDLE_ADAPTER, inference_mode=True)
            self._active = IDLE_ADAPTER
        self.peft.delete_adapter(key)
        del self.adapters[key]

    def _ensure_merged(self, model: ServedModel) -> PreTrainedModel:
        assert model.merged_path is not None
        entry = self.merged.get(model.name)
        if entry is not None and entry[0] == model.merged_path:
            self.merged.move_to_end(model.name)
            return entry[1]
        if not (Path(model.merged_path) / "config.json").is_file():
            raise EngineError(f"merged model {model.merged_path} has no config.json")
        try:
            loaded = self._load_model(model.merged_path)
        except (OSError, ValueError, RuntimeError) as error:
            raise EngineError(
                f"merged model {model.merged_path} cannot be loaded: {error}"
            ) from error
        if loaded.config.vocab_size != self.base.config.vocab_size:
            raise EngineError(
                f"merged model {model.merged_path} has another vocabulary than "
                f"the base {self.base_path}"
            )
        self.merged[model.name] = (model.merged_path, loaded)
        self.counters["merged_loads"] += 1
        while len(self.merged) > self.max_merged:
            self.merged.popitem(last=False)
            self.counters["merged_evictions"] += 1
        return loaded

    # ------------------------------------------------------------ scheduler
    def _run(self) -> None:
        try:
            while (admitted := self._admit()) is not None:
                if admitted:
                    try:
                        self._prefill(admitted)
                    except Exception as error:  # noqa: BLE001 - the scheduler lives on
                        logger.exception("serving.prefill.failed")
                        self._fail_rows(admitted, error)
                if self._batch is not None:
                    try:
                        self._step()
                    except Exception as error:  # noqa: BLE001 - the scheduler lives on
                        logger.exception("serving.step.failed")
                        self._fail_rows(self._batch.rows, error)
        finally:
            with self._cond:
                self._closed = True
            self._shutdown()

    def _fail_rows(self, rows: Sequence[_Row], error: Exception) -> None:
        """Fail ``rows`` after an error in their forward pass. If any of them
        is in the running batch, its cache may be half-updated: the whole
        batch fails with them."""
        failed = list(rows)
        if self._batch is not None and any(r in self._batch.rows for r in failed):
            failed += [r for r in self._batch.rows if r not in failed]
            self._batch = None
        for row in failed:
            if row.finish_reason is None:
                row.finish_reason = "error"
                self._fail(row.request, EngineError(f"generation failed: {error}"))

    def _admit(self) -> list[_Row] | None:
        """Take the queued requests that can start now (FIFO: the first that
        cannot start blocks those behind it). Waits for work when idle and
        up to ``batch_wait_ms`` to fill a new batch. None: closed."""
        with self._cond:
            if self._batch is None:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                deadline = self._pending[0].submitted_at + self.batch_wait
                while (
                    not self._closed
                    and len(self._pending) < self.max_batch
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(remaining)
                if self._closed:
                    return None
            elif self._closed:
                return None
            elif not self.can_join:
                return []
            taken = self._take_locked()
        return self._start_rows(taken)

    def _take_locked(self) -> list[_Request]:
        running = self._batch.rows if self._batch is not None else []
        group = self._batch.group if self._batch is not None else None
        # Adapters in use, by key: a request needing another adapter than the
        # batch can hold, or other weights under a name in use, waits.
        adapters = {
            r.adapter: r.request.model.adapter_path
            for r in running
            if r.adapter != BASE_ROW
        }
        room = self.max_batch - len(running)
        taken: list[_Request] = []
        while self._pending and room > 0:
            request = self._pending[0]
            if request.stream.cancelled.is_set():
                self._pending.popleft()
                self._finish_cancelled(request)
                continue
            if group is None:
                group = request.group
            elif request.group != group:
                break
            if request.group == PEFT_GROUP and request.model.adapter_path:
                key = self._adapter_key(request.model.name)
                if key in adapters:
                    if adapters[key] != request.model.adapter_path:
                        break
                elif len(adapters) >= self.max_adapters:
                    break
                adapters[key] = request.model.adapter_path
            taken.append(self._pending.popleft())
            room -= 1
        return taken

    def _start_rows(self, requests: Sequence[_Request]) -> list[_Row]:
        """Rows for ``requests`` with their adapter or merged model loaded;
        a request that cannot load fails alone."""
        pinned = {r.adapter for r in self._batch.rows} if self._batch else set()
        pinned |= {
            self._adapter_key(r.model.name)
            for r in requests
            if r.model.adapter_path and not r.model.merged_path
        }
        rows = []
        for request in requests:
            prompt_len = len(request.prompt_ids)
            try:
                adapter = BASE_ROW
                context = self.max_context
                if request.model.merged_path:
                    merged = self._ensure_merged(request.model)
                    context = _context_length(merged, self.tokenizer)
                elif request.model.adapter_path:
                    adapter = self._adapter_key(request.model.name)
                    self._ensure_adapter(adapter, request.model.adapter_path, pinned)
                limit = min(request.params.max_tokens, context - prompt_len)
                if limit < 1:
                    raise EngineError(
                        f"the prompt has {prompt_len} tokens; the model's context "
                        f"is {context}"
                    )
            except EngineError as error:
                self._fail(request, error)
                continue
            except Exception as error:  # noqa: BLE001 - one request fails, not the thread
                logger.exception("serving.request.load_failed")
                self._fail(request, EngineError(f"{request.model.name}: {error}"))
                continue
            generator = None
            if request.params.temperature > 0:
                generator = torch.Generator(device=self.device)
                if request.params.seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(request.params.seed)
            rows.append(
                _Row(
                    request=request,
                    adapter=adapter,
                    limit=limit,
                    generator=generator,
                    position=prompt_len,
                )
            )
        return rows

    def _model_for(self, row: _Row) -> torch.nn.Module:
        request = row.request
        if request.model.merged_path:
            return self.merged[request.model.name][1]
        return self.peft

    def _forward(
        self,
        model: torch.nn.Module,
        rows: Sequence[_Row],
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {self._cache_kwarg: cache}
        if model is self.peft:
            self._route([r.adapter for r in rows])
            model = self.peft.get_base_model()  # LoRA layers route by the hooks
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        return out.logits[:, -1, :].float()

    @torch.inference_mode()
    def _prefill(self, rows: list[_Row]) -> None:
        """Run the new rows' prompts (left-padded), sample their first token
        and add them to the running batch."""
        rows = [r for r in rows if r.finish_reason is None]
        if not rows:
            return
        model = self._model_for(rows[0])
        width = max(len(r.request.prompt_ids) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = row.request.prompt_ids
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        input_ids, mask, positions = (
            t.to(self.device) for t in (input_ids, mask, positions)
        )
        cache = DynamicCache(config=model.config)
        logits = self._forward(model, rows, input_ids, mask, positions, cache)
        self.counters["prefills"] += 1
        tokens = self._sample(rows, logits)
        new = _Batch(
            group=rows[0].request.group,
            model=model,
            rows=rows,
            cache=cache,
            mask=torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1),
            last=tokens.unsqueeze(1),
        )
        if self._batch is None:
            self.counters["batches"] += 1
            self._batch = new
        else:
            self.counters["joined"] += len(rows)
            self._batch = self._join(self._batch, new)
        self._accept(tokens)

    def _join(self, old: _Batch, new: _Batch) -> _Batch:
        """One batch from two: the shorter cache is left-padded (masked)."""
        layers_old, layers_new = old.cache.layers, new.cache.layers
        length = max(old.mask.shape[1], new.mask.shape[1])
        for a, b in zip(layers_old, layers_new, strict=True):
            a.keys = torch.cat(
                [_left_pad(a.keys, length - 1), _left_pad(b.keys, length - 1)]
            )
            a.values = torch.cat(
                [_left_pad(a.values, length - 1), _left_pad(b.values, length - 1)]
            )
        old.mask = torch.cat([_left_pad(old.mask, length), _left_pad(new.mask, length)])
        old.last = torch.cat([old.last, new.last])
        old.rows = old.rows + new.rows
        return old

    @torch.inference_mode()
    def _step(self) -> None:
        """Feed each row its last token: one new token per row."""
        batch = self._batch
        assert batch is not None
        positions = torch.tensor(
            [[r.position] for r in batch.rows], dtype=torch.long, device=self.device
        )
        logits = self._forward(
            batch.model, batch.rows, batch.last, batch.mask, positions, batch.cache
        )
        self.counters["decode_steps"] += 1
        self.counters["decode_rows"] += len(batch.rows)
        for row in batch.rows:
            row.position += 1
        tokens = self._sample(batch.rows, logits)
        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        batch.last = tokens.unsqueeze(1)
        self._accept(tokens)

    def _accept(self, tokens: torch.Tensor) -> None:
        """Record each row's new token, stream its text, drop finished rows."""
        batch = self._batch
        assert batch is not None
        # The new rows were appended last; ``tokens`` are theirs (prefill) or
        # every row's (decode step).
        rows = batch.rows[len(batch.rows) - len(tokens) :]
        for row, token in zip(rows, tokens.tolist(), strict=True):
            self._advance(row, token)
        keep = [i for i, r in enumerate(batch.rows) if r.finish_reason is None]
        if not keep:
            self._batch = None
            return
        if len(keep) < len(batch.rows):
            index = torch.tensor(keep, device=self.device)
            batch.rows = [batch.rows[i] for i in keep]
            batch.cache.batch_select_indices(index)
            batch.mask = batch.mask[index]
            batch.last = batch.last[index]
            # Columns no remaining row attends to (left padding) go.
            unused = int((batch.mask.sum(0) == 0).long().cumprod(0).sum())
            if unused and all(type(x) is DynamicLayer for x in batch.cache.layers):
                for layer in batch.cache.layers:
                    layer.keys = layer.keys[:, :, unused:]
                    layer.values = layer.values[:, :, unused:]
                batch.mask = batch.mask[:, unused:]

    def _sample(self, rows: Sequence[_Row], logits: torch.Tensor) -> torch.Tensor:
        tokens = logits.argmax(dim=-1)
        for i, row in enumerate(rows):
            params = row.request.params
            if params.temperature == 0:
                continue
            probs = torch.softmax(logits[i] / params.temperature, dim=-1)
            order = None
            if params.top_p < 1:  # nucleus: the smallest top set holding top_p
                probs, order = probs.sort(descending=True)
                probs = probs * (probs.cumsum(0) - probs < params.top_p)
            draw = torch.rand(1, generator=row.generator, device=probs.device)
            cdf = probs.cumsum(0)
            pick = torch.searchsorted(cdf, draw * cdf[-1]).clamp(max=len(cdf) - 1)
            tokens[i] = pick if order is None else order[pick]
        return tokens

    # ------------------------------------------------------------ rows
    def _advance(self, row: _Row, token: int) -> None:
        stream = row.request.stream
        row.ids.append(token)
        ended = token in self.stop_ids
        cancelled = stream.cancelled.is_set()
        full = len(row.ids) >= row.limit
        searched = len(row.text)
        row.text += self._decode_delta(row, final=ended or cancelled or full)
        if self._cut_at_stop(row, searched):
            return
        if ended:
            self._close_row(row, "stop")
        elif cancelled:
            self._close_row(row, "cancelled")
        elif full:
            self._close_row(row, "length")
        else:
            end = len(row.text) - _stop_prefix_overlap(
                row.text, row.request.params.stop
            )
            if end > row.emitted:
                stream._put(row.text[row.emitted : end])
                row.emitted = end

    def _cut_at_stop(self, row: _Row, searched: int) -> bool:
        """End the row at the first stop string in its text (only text after
        ``searched`` characters, less a stop's length, is new)."""
        stops = row.request.params.stop
        if not stops:
            return False
        start = max(0, searched - max(len(s) for s in stops) + 1)
        hits = [i for i in (row.text.find(s, start) for s in stops) if i >= 0]
        if not hits:
            return False
        row.text = row.text[: min(hits)]
        self._close_row(row, "stop")
        return True

    def _close_row(self, row: _Row, reason: str) -> None:
        row.finish_reason = reason
        row.request.stream._put(row.text[row.emitted :])
        row.emitted = len(row.text)
        self.counters["completion_tokens"] += len(row.ids)
        if reason == "cancelled":
            self.counters["cancelled"] += 1
        row.request.stream._finish(
            Completed(
                text=row.text,
                finish_reason=reason,
                prompt_tokens=len(row.request.prompt_ids),
                completion_tokens=len(row.ids),
            )
        )

    def _decode_delta(self, row: _Row, *, final: bool = False) -> str:
        """Text the row's newest tokens add (TGI's incremental detokeniser).

        Two decodes over a short window, the one with the new tokens and the
        one without, and the difference: the window's own start (a
        SentencePiece leading space) cancels out, and the text equals a
        one-shot decode without decoding every token at every step. While the
        newest tokens end in an incomplete character (U+FFFD) nothing is
        added, unless ``final``.
        """
        decode = self.tokenizer.decode
        window = row.ids[row.prefix_offset :]
        with self._tokenizer_lock:
            before = decode(
                window[: row.read_offset - row.prefix_offset],
                skip_special_tokens=True,
                clean_up_tokenization_spaces=False,
            )
            now = decode(
                window, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        if len(now) > len(before) and (final or not now.endswith("\ufffd")):
            row.prefix_offset = row.read_offset
            row.read_offset = len(row.ids)
            return now[len(before) :]
        return ""

    def _fail(self, request: _Request, error: EngineError) -> None:
        self.counters["failed"] += 1
        logger.info(
            "serving.request.failed model=%s error=%s", request.model.name, error
        )
        request.stream._fail(error)

    def _finish_cancelled(self, request: _Request) -> None:
        self.counters["cancelled"] += 1
        request.stream._finish(
            Completed(
                text="",
                finish_reason="cancelled",
                prompt_tokens=len(request.prompt_ids),
                completion_tokens=0,
            )
        )

    def _shutdown(self) -> None:
        error = EngineError("the serving engine was closed")
        if self._batch is not None:
            for row in self._batch.rows:
                self._fail(row.request, error)
            self._batch = None
        with self._cond:
            while self._pending:
                self._fail(self._pending.popleft(), error)


IDLE_ADAPTER = "__serving_idle__"


def _wrap(base: PreTrainedModel) -> PeftModel:
    """The base wrapped once in a PeftModel, before any served adapter.

    PEFT needs an adapter to build the wrapper; a rank-1 LoRA with B = 0 (an
    exact no-op, never named by a row) stands in, so that no served adapter
    has to be the one that wraps the base (a failed first load would leave
    the base half-modified) and deleting served adapters never empties it.
    """
    name, module = next(
        (name, module)
        for name, module in base.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D))
        and module is not base.get_output_embeddings()
    )
    config = LoraConfig(
        r=1,
        lora_alpha=1,
        target_modules=[name.rsplit(".", 1)[-1]],
        fan_in_fan_out=isinstance(module, Conv1D),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated ``is_gradient_checkpointing``.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        model = get_peft_model(base, config, adapter_name=IDLE_ADAPTER)
    model.eval()
    return model


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the sequence axis (dim 1 of a mask, dim 2 of K/V) on the left."""
    axis = 1 if tensor.dim() == 2 else 2
    missing = length - tensor.shape[axis]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _stop_prefix_overlap(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins a stop string (held
    back from the stream until it is known not to be a stop)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def _check_lora_adapter(path: str) -> None:
    """EngineError unless ``path`` holds a LoRA adapter that PEFT's
    mixed-adapter batch can run."""
    try:
        raw = read_adapter_config(path)
    except ValueError as error:
        raise EngineError(
            f"adapter folder {path} has no adapter_config.json"
        ) from error
    if raw.get("peft_type") != "LORA":
        raise EngineError(
            f"adapter {path} is {raw.get('peft_type')}; only LoRA adapters are "
            "served per request (serve a merged export of this version instead)"
        )
    if raw.get("use_dora"):
        raise EngineError(
            f"adapter {path} uses DoRA, which PEFT's mixed-adapter batch cannot "
            "run (serve a merged export of this version instead)"
        )
    if raw.get("task_type") not in (None, "CAUSAL_LM"):
        raise EngineError(
            f"adapter {path} is a {raw.get('task_type')} adapter, not a causal LM"
        )
    if not any(Path(path).glob("adapter_model.*")):
        raise EngineError(f"adapter folder {path} has no adapter_model weights")


def _context_length(model: PreTrainedModel, tokenizer: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(min(tokenizer.model_max_length, 2048))


def reload_generate(
    base_path: str,
    model: ServedModel,
    prompt: str,
    params: SamplingParams,
    *,
    device: str | None = None,
) -> Completed:
    """The reload-per-request baseline: load the base (and the adapter or
    merged model) fresh, generate, drop everything."""
    engine = ServingEngine(base_path, max_adapters=1, batch_wait_ms=0, device=device)
    try:
        return engine.generate(model, prompt, params)
    finally:
        engine.close()
