"""What a run hands back, and the errors it raises. No torch import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RunDataError(ValueError):
    """``train.jsonl``/``val.jsonl`` is missing, empty or malformed."""


@dataclass
class RunResult:
    """Outcome of one ``run()``.

    ``output_dir`` holds the adapter (``adapter_config.json`` +
    ``adapter_model.safetensors``), the tokenizer and ``arbiter_run.json``,
    unless ``cancelled`` is True, in which case nothing was saved there.

    ``metrics`` uses normalised keys (only those the method produced):
    ``train_loss``; ``eval_loss``; ``eval_accuracy`` and ``eval_margin``
    (reward: chosen scored above rejected on val.jsonl; dpo: implicit reward
    accuracy and margin); ``train_accuracy``/``train_margin`` (last logged
    training window, when there is no val.jsonl); ``eval_token_accuracy``
    (sft); ``reward_mean``, ``reward_start`` and ``kl`` (ppo, rloo: reward
    model score over the last and first logged windows, KL to the base).
    """

    method: str
    output_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    peft_type: str = "lora"
    task_type: str = "CAUSAL_LM"
    train_runtime: float = 0.0
    steps: int = 0
    cancelled: bool = False
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "output_dir": str(self.output_dir),
            "metrics": dict(self.metrics),
            "peft_type": self.peft_type,
            "task_type": self.task_type,
            "train_runtime": self.train_runtime,
            "steps": self.steps,
            "cancelled": self.cancelled,
            "stopped_early": self.stopped_early,
        }
