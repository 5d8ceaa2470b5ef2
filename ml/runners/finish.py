"""The end of every run: train, evaluate, keep the best weights, save or stop."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Trainer

from ml.adapters import save_adapter
from ml.callbacks import (
    EventCallback,
    RunCancelled,
    clean_metrics,
    strip_console_callbacks,
)
from ml.config import RunConfig
from ml.result import RunResult
from ml.runtime import timed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricNames:
    """How one method's TRL metric names map to ``RunResult.metrics`` keys.

    ``evaluation`` reads the final evaluation, ``train`` the last training log
    that has the key, ``first`` the first training log that has it (the
    starting point of an online method's reward).
    """

    evaluation: dict[str, str] = field(default_factory=dict)
    train: dict[str, str] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)

    def pick(
        self,
        *,
        eval_metrics: dict[str, float],
        train_logs: list[dict[str, float]],
        train_loss: float | None = None,
    ) -> dict[str, float]:
        """Normalise TRL's metric names to RunResult's (see ``RunResult``)."""
        out: dict[str, float] = {}
        if train_loss is not None and math.isfinite(train_loss):
            out["train_loss"] = float(train_loss)
        for src, dst in self.evaluation.items():
            if src in eval_metrics:
                out[dst] = eval_metrics[src]
        for src, dst in self.train.items():
            for log in reversed(train_logs):
                if src in log:
                    out.setdefault(dst, log[src])
                    break
        for src, dst in self.first.items():
            for log in train_logs:
                if src in log:
                    out[dst] = log[src]
                    break
        return out


def finish_run(
    trainer: Trainer,
    callback: EventCallback,
    *,
    config: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    task_type: str,
    metric_names: MetricNames,
    adapter_of: Callable[[Trainer], torch.nn.Module] | None = None,
) -> RunResult:
    """Train, evaluate, keep the best weights, save; or stop cleanly on cancel.

    Events go through the callback's ``on_event``; cancellation is the
    callback's ``should_stop``. The run evaluates when the trainer has an
    eval dataset. ``adapter_of`` picks the model to save when it is not the
    trainer's own (PPO wraps policy and value model together).
    """
    method = config.method
    on_event, should_stop = callback.on_event, callback.should_stop
    has_eval = getattr(trainer, "eval_dataset", None) is not None
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

    result.metrics = metric_names.pick(
        eval_metrics=eval_metrics,
        train_logs=callback.train_logs,
        train_loss=train_loss,
    )
    on_event("status", {"phase": "saving"})
    model = (
        adapter_of(trainer)
        if adapter_of
        else trainer.accelerator.unwrap_model(trainer.model)
    )
    _save(trainer, model, tokenizer, output_dir, config=config, result=result)
    logger.info(
        "%s run finished in %.1fs: %s", method, result.train_runtime, result.metrics
    )
    on_event("status", {"phase": "done", "metrics": result.metrics})
    return result


def _save(
    trainer: Trainer,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    *,
    config: RunConfig,
    result: RunResult,
) -> None:
    """Write the adapter from rank 0 only (every rank holds the same LoRA
    weights under DDP). Under ZeRO-3 or FSDP the weights are sharded: every
    rank takes part in gathering them (``trainer.save_model``, which writes
    from rank 0), then rank 0 adds the tokenizer and the run info."""
    accelerator = trainer.accelerator
    sharded = bool(
        getattr(trainer, "is_deepspeed_enabled", False)
        or getattr(trainer, "is_fsdp_enabled", False)
    )
    if sharded:
        trainer.save_model(str(output_dir))
    if accelerator.is_main_process:
        save_adapter(
            model,
            tokenizer,
            Path(output_dir),
            method=config.method,
            config=config,
            result=result,
            weights_saved=sharded,
        )
    accelerator.wait_for_everyone()
