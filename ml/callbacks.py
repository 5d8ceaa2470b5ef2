"""The ``TrainerCallback`` that reports events, honours cancel and keeps the best adapter."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

logger = logging.getLogger(__name__)

EventFn = Callable[[str, dict[str, Any]], None]
StopFn = Callable[[], bool]


class RunCancelled(Exception):
    """Raised inside trainers that ignore ``control.should_training_stop`` (PPO)."""


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
            # Only the trainable (adapter) weights, in memory: a few MB, where
            # transformers' load_best_model_at_end would write a checkpoint
            # with optimizer state per evaluation into the job's folder.
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            if any(hasattr(p, "ds_id") for _, p in trainable):
                # DeepSpeed ZeRO-3: each parameter here is an empty placeholder
                # (its shard lives elsewhere); a copy would restore nothing.
                # The run keeps the last step's weights and reports them.
                self._best_state = None
                return
            self._best_state = {n: p.detach().clone() for n, p in trainable}
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
