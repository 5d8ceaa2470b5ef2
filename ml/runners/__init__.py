"""Training runners: one function per method, no Django.

``run(method, config, data_dir=..., output_dir=...)`` trains a PEFT adapter
with TRL and returns a ``RunResult``. Importing this package is cheap: torch,
transformers, peft and trl are imported by the method modules, which ``run``
loads on first use. The Celery task and ``python -m ml.runners`` both
call ``run``.

Methods and their adapters
--------------------------
- ``sft``: causal-LM adapter trained on prompt/completion pairs.
- ``reward``: sequence-classification adapter (task_type ``SEQ_CLS``, the
  score head is saved inside the adapter) trained on preference pairs.
- ``dpo``: causal-LM adapter trained on preference pairs; the reference model
  is the base with the adapter disabled.
- ``ppo``: causal-LM adapter trained with ``trl.experimental.ppo`` (trl 1.12)
  against a reward adapter merged into its base; a full value model on the
  same base is trained alongside and discarded.
- ``rloo``: causal-LM adapter trained with ``RLOOTrainer`` against the same
  merged reward model, called through a wrapper that scores
  ``prompt + completion + eos`` exactly as the reward model was trained.

Data layout in ``data_dir``
---------------------------
``train.jsonl`` (required) and ``val.jsonl`` (optional), one JSON object per
line. Text fields are either strings (standard format) or message lists
``[{"role": "user", "content": "..."}]`` (conversational format; the base
tokenizer then needs a chat template); one file uses one format throughout.

- sft: ``{"prompt": ..., "completion": ...}``
- reward, dpo: ``{"prompt": ..., "chosen": ..., "rejected": ...}``; ``prompt``
  may be omitted (implicit prompt). ``reward`` uses a numeric ``margin`` key
  when every row has one; other keys (``weight``, ids, ...) are ignored.
- ppo, rloo: ``{"prompt": ...}``.

With ``val.jsonl`` the runner evaluates after each epoch, stops early when
``eval_loss`` (rloo: ``eval_reward``) has not improved for
``early_stopping_patience`` evaluations and keeps the best adapter. PPO has
no evaluation loop and ignores ``val.jsonl``.

Output
------
On success ``output_dir`` holds a plain PEFT adapter (``adapter_config.json``
and ``adapter_model.safetensors``, loadable with
``PeftModel.from_pretrained(base, output_dir)``), the tokenizer and
``arbiter_run.json`` (method, config, metrics, versions).

Events and cancellation
-----------------------
``on_event(kind, payload)`` receives, from the main process only:

- ``("status", {"phase": ...})``, the phase event: loading, training,
  evaluating (only with val.jsonl), saving, then done (payload also has
  ``metrics``) or cancelled. Each phase is reported once, when it starts;
  a caller may report earlier phases of its own first (the Celery task
  reports ``converting`` while the built-in base is converted and
  ``loading`` while the training stack is imported) and stores the latest
  as the job's phase;
- ``("progress", {"step", "total"})`` after each optimizer step;
- ``("metrics", {"step", "epoch", "metrics"})`` for every log line, with TRL's
  own metric names (``eval_``-prefixed for evaluations).

``should_stop()`` is polled before training and at every step boundary and
gradient-accumulation micro-batch (two or three calls per step, so keep it
cheap, e.g. a flag refreshed by a timer). Once it returns True the run stops
at the end of the current step and returns ``RunResult(cancelled=True)``
without saving anything: cancellation is a normal return, not an exception.

Errors: an invalid config raises ``ValueError`` naming the field; bad data
raises ``RunDataError`` (a ``ValueError``); anything else propagates.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml.config import (
    METHODS,
    DPORunConfig,
    PeftSettings,
    PPORunConfig,
    RewardRunConfig,
    RLOORunConfig,
    RunConfig,
    SFTRunConfig,
    config_class,
    config_from_dict,
)
from ml.result import RunDataError, RunResult

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "DPORunConfig",
    "PPORunConfig",
    "PeftSettings",
    "RLOORunConfig",
    "RewardRunConfig",
    "RunConfig",
    "RunDataError",
    "RunResult",
    "SFTRunConfig",
    "config_from_dict",
    "run",
]


def _no_event(kind: str, payload: dict[str, Any]) -> None:
    return None


def _never() -> bool:
    return False


def run(
    method: str,
    config: dict[str, Any] | RunConfig,
    *,
    data_dir: str | Path,
    output_dir: str | Path,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train ``method`` with ``config`` on ``data_dir``; save the adapter in ``output_dir``."""
    cls = config_class(method)
    if isinstance(config, dict):
        config = cls.from_dict(config)
    elif not isinstance(config, cls):
        raise ValueError(
            f"config for {method!r} must be a {cls.__name__} or a dict, got {type(config).__name__}"
        )
    module = importlib.import_module(f"ml.runners.{method}")
    logger.info("Starting %s run: data=%s out=%s", method, data_dir, output_dir)
    result: RunResult = module.run(
        config,
        data_dir=Path(data_dir),
        output_dir=Path(output_dir),
        on_event=on_event or _no_event,
        should_stop=should_stop or _never,
    )
    return result
