"""Supervised fine-tuning of a causal-LM adapter on prompt/completion rows."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from ml import adapters, callbacks, data, loading, runtime
from ml.config import SFTRunConfig
from ml.result import RunResult
from ml.runners.finish import MetricNames, finish_run

logger = logging.getLogger(__name__)

METRIC_NAMES = MetricNames(
    evaluation={
        "eval_loss": "eval_loss",
        "eval_mean_token_accuracy": "eval_token_accuracy",
    },
    train={"mean_token_accuracy": "train_token_accuracy"},
)


def run(
    config: SFTRunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: callbacks.EventFn,
    should_stop: callbacks.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter on ``{"prompt", "completion"}`` rows."""
    runtime.setup_runtime(config)
    train_rows, val_rows = data.read_train_val(
        data_dir, required=("prompt", "completion")
    )
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = loading.load_tokenizer(config.base_model)
    data.check_chat_template(tok, train_rows, config.base_model)
    model = loading.load_causal_lm(config.base_model)
    peft_config = adapters.build_peft_config(
        config.peft, model_type=model.config.model_type, task_type="CAUSAL_LM"
    )
    callback = callbacks.EventCallback(
        on_event,
        should_stop,
        early_stopping_patience=config.early_stopping_patience if val_rows else 0,
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-sft-") as scratch:
        args = SFTConfig(
            **runtime.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
            max_length=config.max_length,
            completion_only_loss=config.completion_only_loss,
            packing=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[callback],
        )
        return finish_run(
            trainer,
            callback,
            config=config,
            tokenizer=tok,
            output_dir=output_dir,
            task_type="CAUSAL_LM",
            metric_names=METRIC_NAMES,
        )
