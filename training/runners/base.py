"""Shared machinery for the method runners.

Loading (tokenizer, causal LM, sequence classifier, merged reward model),
runtime setup (threads, seed, offline hub), the PEFT config builder, the data
readers for ``data_dir``, the ``TrainerCallback`` that reports events and
honours ``should_stop``, and ``train_and_save`` which trains, evaluates, keeps
the best weights, saves the adapter and builds the ``RunResult``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import torch
from peft import IA3Config, LoraConfig, PeftConfig, PeftModel, PromptTuningConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging as hf_logging

from training.runners.config import PeftSettings, RunConfig
from training.runners.result import RunDataError, RunResult

logger = logging.getLogger(__name__)

EventFn = Callable[[str, dict[str, Any]], None]
StopFn = Callable[[], bool]

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


class RunCancelled(Exception):
    """Raised inside trainers that ignore ``control.should_training_stop`` (PPO)."""


# ---------------------------------------------------------------- runtime


def use_offline_hub_if_local(*names: str | None) -> None:
    """Force hub offline mode when every model reference is a local folder."""
    given = [n for n in names if n]
    if given and all(Path(n).exists() for n in given):
        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True


def setup_runtime(config: RunConfig, *extra_models: str | None) -> None:
    """Threads, seeds, offline mode and quiet progress bars for one run."""
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    use_offline_hub_if_local(config.base_model, *extra_models)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # transformers 5 renamed gradient_checkpointing; TRL 1.12 still uses the old name.
    warnings.filterwarnings(
        "ignore",
        message=r".*gradient_checkpointing` is deprecated",
        category=FutureWarning,
    )
    set_seed(config.seed)


def use_cuda() -> bool:
    return torch.cuda.is_available()


def training_kwargs(
    config: RunConfig, scratch_dir: Path, *, has_eval: bool
) -> dict[str, Any]:
    """TrainingArguments fields every TRL config accepts, CPU-safe."""
    cuda = use_cuda()
    bf16 = (
        config.bf16
        if config.bf16 is not None
        else cuda and torch.cuda.is_bf16_supported()
    )
    return {
        "output_dir": str(scratch_dir),
        "seed": config.seed,
        "data_seed": config.seed,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "epoch" if has_eval and config.eval_each_epoch else "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": not cuda,
        "bf16": bool(bf16),
        "gradient_checkpointing": config.gradient_checkpointing,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


# ---------------------------------------------------------------- loading


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


def load_sequence_classifier(name: str, *, pad_token_id: int | None) -> PreTrainedModel:
    """Scalar-output sequence classifier (``num_labels=1``); the head is new."""
    model = AutoModelForSequenceClassification.from_pretrained(
        name, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = pad_token_id
    return model


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ValueError(f"reward_adapter {adapter_dir} has no adapter_config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def load_merged_reward_model(
    reward_base: str, reward_adapter: str | Path, *, pad_token_id: int | None
) -> PreTrainedModel:
    """Reward base + reward adapter, merged into a plain sequence classifier."""
    adapter_config = read_adapter_config(reward_adapter)
    if adapter_config.get("task_type") != "SEQ_CLS":
        raise ValueError(
            f"reward_adapter {reward_adapter} is not a reward-model adapter "
            f"(task_type {adapter_config.get('task_type')!r}, expected 'SEQ_CLS')"
        )
    base = load_sequence_classifier(reward_base, pad_token_id=pad_token_id)
    merged = PeftModel.from_pretrained(base, str(reward_adapter)).merge_and_unload()
    merged.config.pad_token_id = pad_token_id
    merged.eval()
    for param in merged.parameters():
        param.requires_grad_(False)
    return merged


# ---------------------------------------------------------------- PEFT


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


# ---------------------------------------------------------------- data


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunDataError(
                    f"{path.name} line {lineno}: invalid JSON ({exc.msg})"
                ) from None
            if not isinstance(row, dict):
                raise RunDataError(f"{path.name} line {lineno}: expected a JSON object")
            rows.append(row)
    return rows


def read_split(
    data_dir: Path,
    split: str,
    *,
    required: Iterable[str],
    optional: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> list[dict[str, Any]] | None:
    """Rows of ``<split>.jsonl`` restricted to the known keys, or None if absent.

    Text keys hold either strings or message lists (``[{"role", "content"}]``)
    and must use one format across the whole file. ``numeric`` keys (such as
    ``margin``) are kept when every row has a number. Other keys are ignored.
    """
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        if split == "train":
            raise RunDataError(f"{path} does not exist")
        return None
    raw = read_jsonl(path)
    if not raw:
        if split == "train":
            raise RunDataError(f"{path.name} has no rows")
        return None
    required, optional, numeric = list(required), list(optional), list(numeric)
    text_keys = required + [k for k in optional if all(k in r for r in raw)]
    keep_numeric = [
        k
        for k in numeric
        if all(
            isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool)
            for r in raw
        )
    ]
    conversational: bool | None = None
    rows = []
    for lineno, row in enumerate(raw, 1):
        out: dict[str, Any] = {}
        for key in text_keys:
            if key not in row:
                raise RunDataError(f"{path.name} row {lineno}: missing key {key!r}")
            value = row[key]
            if isinstance(value, str):
                is_chat = False
            elif _is_messages(value):
                is_chat = True
            else:
                raise RunDataError(
                    f"{path.name} row {lineno}: {key!r} must be a string or a list of "
                    "{role, content} messages"
                )
            if conversational is None:
                conversational = is_chat
            elif conversational != is_chat:
                raise RunDataError(
                    f"{path.name} row {lineno}: mixes plain-text and message-list fields"
                )
            out[key] = value
        for key in keep_numeric:
            out[key] = float(row[key])
        rows.append(out)
    return rows


def read_train_val(
    data_dir: Path,
    *,
    required: Iterable[str],
    optional: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``train.jsonl`` rows (required) and ``val.jsonl`` rows (or None)."""
    keys = {
        "required": tuple(required),
        "optional": tuple(optional),
        "numeric": tuple(numeric),
    }
    train = read_split(data_dir, "train", **keys)
    if train is None:  # read_split raises for a missing train split
        raise RunDataError(f"{data_dir} has no training rows")
    return train, read_split(data_dir, "val", **keys)


def is_conversational(rows: list[dict[str, Any]]) -> bool:
    return any(isinstance(v, list) for v in rows[0].values())


def check_chat_template(
    tok: PreTrainedTokenizerBase, rows: list[dict[str, Any]], name: str
) -> None:
    if is_conversational(rows) and not tok.chat_template:
        raise RunDataError(
            f"The data is in message-list (conversational) form but the tokenizer of {name} "
            "has no chat template"
        )


# ---------------------------------------------------------------- callback


def _finite(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def clean_metrics(logs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        num = _finite(value)
        if num is not None:
            out[key] = num
    return out


class EventCallback(TrainerCallback):
    """Report metrics/progress through ``on_event``; honour ``should_stop``.

    Events (main process only): ``("progress", {"step", "total"})`` after every
    optimizer step and ``("metrics", {"step", "epoch", "metrics"})`` for every
    log (eval metrics carry the ``eval_`` prefix). ``should_stop`` is polled at
    the start and end of every step and after every gradient-accumulation
    micro-batch; once it returns True the trainer stops without evaluating or
    saving (``raise_on_stop`` raises ``RunCancelled`` instead, for trainers
    that ignore ``should_training_stop``).

    With ``early_stopping_patience > 0`` it also tracks ``best_metric`` over
    evaluations, keeps a copy of the best trainable weights, stops after
    ``patience`` evaluations without improvement, and ``restore_best()`` puts
    the best weights back.
    """

    def __init__(
        self,
        on_event: EventFn,
        should_stop: StopFn,
        *,
        best_metric: str = "eval_loss",
        greater_is_better: bool = False,
        early_stopping_patience: int = 0,
        raise_on_stop: bool = False,
    ) -> None:
        self.on_event = on_event
        self.should_stop = should_stop
        self.best_metric = best_metric
        self.greater_is_better = greater_is_better
        self.patience = early_stopping_patience
        self.raise_on_stop = raise_on_stop
        self.cancelled = False
        self.stopped_early = False
        self.train_logs: list[dict[str, float]] = []
        self.eval_logs: list[dict[str, float]] = []
        self._best_value: float | None = None
        self.best_metrics: dict[str, float] | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._best_step = -1
        self._last_step = 0
        self._bad_evals = 0

    # -- cancel
    def _poll(self, control: TrainerControl) -> None:
        if not self.cancelled and self.should_stop():
            logger.info("Stop requested; ending training")
            self.cancelled = True
        if self.cancelled:
            control.should_training_stop = True
            control.should_evaluate = False
            control.should_save = False
            if self.raise_on_stop:
                raise RunCancelled

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._poll(control)

    def on_substep_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._poll(control)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._last_step = state.global_step
        if state.is_world_process_zero:
            self.on_event(
                "progress", {"step": state.global_step, "total": state.max_steps}
            )
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True  # report the final training window, however short
        self._poll(control)

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._poll(control)

    # -- metrics
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metrics = clean_metrics(logs or {})
        if not metrics:
            return
        if any(k.startswith("eval_") for k in metrics):
            self.eval_logs.append(metrics)
        else:
            self.train_logs.append(metrics)
        if state.is_world_process_zero:
            self.on_event(
                "metrics",
                {"step": state.global_step, "epoch": state.epoch, "metrics": metrics},
            )

    # -- early stopping
    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        model: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if self.patience <= 0 or self.cancelled or model is None:
            return
        value = _finite((metrics or {}).get(self.best_metric))
        if value is None:
            return
        improved = self._best_value is None or (
            value > self._best_value
            if self.greater_is_better
            else value < self._best_value
        )
        if improved:
            self._best_value = value
            self.best_metrics = clean_metrics(metrics or {})
            self._bad_evals = 0
            self._best_step = state.global_step
            self._best_state = {
                n: p.detach().clone()
                for n, p in model.named_parameters()
                if p.requires_grad
            }
            return
        self._bad_evals += 1
        if self._bad_evals >= self.patience:
            logger.info(
                "Early stopping: %s has not improved for %d evaluations (best %.4g)",
                self.best_metric,
                self._bad_evals,
                self._best_value,
            )
            self.stopped_early = True
            control.should_training_stop = True

    def restore_best(self, model: torch.nn.Module | None) -> bool:
        """Load the best evaluated weights back if later steps replaced them."""
        if (
            model is None
            or self._best_state is None
            or self._best_step == self._last_step
        ):
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, saved in self._best_state.items():
                params[name].copy_(saved)
        logger.info(
            "Restored the adapter weights from step %d with the best %s (%.4g)",
            self._best_step,
            self.best_metric,
            self._best_value,
        )
        self._last_step = self._best_step
        return True


def strip_console_callbacks(trainer: Trainer) -> None:
    """Drop the tqdm/print callbacks: events go through ``on_event`` only."""
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


# ---------------------------------------------------------------- finish


def pick_metrics(
    *,
    eval_metrics: dict[str, float],
    train_logs: list[dict[str, float]],
    eval_map: dict[str, str],
    train_map: dict[str, str],
    train_loss: float | None = None,
    first_map: dict[str, str] | None = None,
) -> dict[str, float]:
    """Normalise TRL's metric names to RunResult's (see ``RunResult``)."""
    out: dict[str, float] = {}
    if train_loss is not None and math.isfinite(train_loss):
        out["train_loss"] = float(train_loss)
    for src, dst in eval_map.items():
        if src in eval_metrics:
            out[dst] = eval_metrics[src]
    for src, dst in train_map.items():
        for log in reversed(train_logs):
            if src in log:
                out.setdefault(dst, log[src])
                break
    for src, dst in (first_map or {}).items():
        for log in train_logs:
            if src in log:
                out[dst] = log[src]
                break
    return out


def save_adapter(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    *,
    method: str,
    config: RunConfig,
    result: RunResult,
) -> None:
    """Write the plain PEFT adapter, the tokenizer and ``arbiter_run.json``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, PeftModel):
        raise TypeError(f"Expected a PeftModel to save, got {type(model).__name__}")
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
        "versions": _versions(),
    }
    tmp = output_dir / (RUN_INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(output_dir / RUN_INFO_FILE)


def _versions() -> dict[str, str]:
    import peft
    import transformers
    import trl

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
    }


def timed() -> Callable[[], float]:
    start = time.monotonic()
    return lambda: time.monotonic() - start


def train_and_save(
    trainer: Trainer,
    callback: EventCallback,
    *,
    config: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    has_eval: bool,
    on_event: EventFn,
    should_stop: StopFn,
    task_type: str,
    eval_map: dict[str, str],
    train_map: dict[str, str],
    first_map: dict[str, str] | None = None,
    adapter_of: Callable[[Trainer], torch.nn.Module] | None = None,
) -> RunResult:
    """Train, evaluate, keep the best weights, save; or stop cleanly on cancel."""
    method = config.method
    strip_console_callbacks(trainer)
    result = RunResult(
        method=method,
        output_dir=Path(output_dir),
        peft_type=config.peft.peft_type,
        task_type=task_type,
    )
    elapsed = timed()
    train_loss: float | None = None
    if should_stop():  # requested while the models were loading
        callback.cancelled = True
    else:
        on_event("status", {"phase": "training"})
        try:
            output = trainer.train()
            train_loss = getattr(output, "training_loss", None)
        except RunCancelled:
            callback.cancelled = True
    result.train_runtime = round(elapsed(), 3)
    result.steps = int(trainer.state.global_step)
    result.stopped_early = callback.stopped_early

    eval_metrics: dict[str, float] = {}
    if not callback.cancelled and has_eval and not should_stop():
        on_event("status", {"phase": "evaluating"})
        eval_metrics = clean_metrics(trainer.evaluate())
        if callback.restore_best(trainer.model) and callback.best_metrics:
            eval_metrics = callback.best_metrics
    if callback.cancelled or should_stop():
        logger.info(
            "%s run cancelled after %d steps; nothing saved", method, result.steps
        )
        result.cancelled = True
        on_event("status", {"phase": "cancelled", "step": result.steps})
        return result

    result.metrics = pick_metrics(
        eval_metrics=eval_metrics,
        train_logs=callback.train_logs,
        eval_map=eval_map,
        train_map=train_map,
        train_loss=train_loss,
        first_map=first_map,
    )
    on_event("status", {"phase": "saving"})
    model = (
        adapter_of(trainer)
        if adapter_of
        else trainer.accelerator.unwrap_model(trainer.model)
    )
    save_adapter(
        model, tokenizer, Path(output_dir), method=method, config=config, result=result
    )
    logger.info(
        "%s run finished in %.1fs: %s", method, result.train_runtime, result.metrics
    )
    on_event("status", {"phase": "done", "metrics": result.metrics})
    return result
