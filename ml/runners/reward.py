"""Reward model: a scalar score head plus adapter, trained on preference pairs."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from ml import adapters, callbacks, data, loading, runtime
from ml.config import RewardRunConfig
from ml.result import RunDataError, RunResult
from ml.runners.finish import MetricNames, finish_run

logger = logging.getLogger(__name__)

METRIC_NAMES = MetricNames(
    evaluation={
        "eval_loss": "eval_loss",
        "eval_accuracy": "eval_accuracy",
        "eval_margin": "eval_margin",
    },
    train={"accuracy": "train_accuracy", "margin": "train_margin"},
)


def run(
    config: RewardRunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: callbacks.EventFn,
    should_stop: callbacks.StopFn,
) -> RunResult:
    """Train a SEQ_CLS adapter (score head saved in it) on chosen/rejected pairs.

    TRL appends EOS to plain-text pairs, so the model scores
    ``prompt + completion + eos``; the online runners score the same way. A
    numeric ``margin`` column (present on every row) widens the required gap.
    """
    runtime.setup_runtime(config)
    train_rows, val_rows = data.read_train_val(
        data_dir,
        required=("chosen", "rejected"),
        optional=("prompt",),
        numeric=("margin",),
    )
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = loading.load_tokenizer(config.base_model)
    data.check_chat_template(tok, train_rows, config.base_model)
    model = loading.load_sequence_classifier(
        config.base_model, pad_token_id=tok.pad_token_id
    )
    peft_config = adapters.build_peft_config(
        config.peft, model_type=model.config.model_type, task_type="SEQ_CLS"
    )
    callback = callbacks.EventCallback(
        on_event,
        should_stop,
        early_stopping_patience=config.early_stopping_patience if val_rows else 0,
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-reward-") as scratch:
        args = RewardConfig(
            **runtime.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
            max_length=config.max_length,
            center_rewards_coefficient=config.center_rewards_coefficient,
        )
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[callback],
        )
        prepared = trainer.train_dataset
        if isinstance(prepared, Dataset) and len(prepared) == 0:
            raise RunDataError(
                f"Every training pair is longer than max_length={config.max_length} tokens"
            )
        return finish_run(
            trainer,
            callback,
            config=config,
            tokenizer=tok,
            output_dir=output_dir,
            task_type="SEQ_CLS",
            metric_names=METRIC_NAMES,
        )
