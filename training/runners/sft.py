"""Supervised fine-tuning of a causal-LM adapter on prompt/completion rows."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from training.runners import base
from training.runners.config import SFTRunConfig
from training.runners.result import RunResult

logger = logging.getLogger(__name__)

EVAL_MAP = {"eval_loss": "eval_loss", "eval_mean_token_accuracy": "eval_token_accuracy"}
TRAIN_MAP = {"mean_token_accuracy": "train_token_accuracy"}


def run(
    config: SFTRunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: base.EventFn,
    should_stop: base.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter on ``{"prompt", "completion"}`` rows."""
    base.setup_runtime(config)
    train_rows, val_rows = base.read_train_val(
        data_dir, required=("prompt", "completion")
    )
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = base.load_tokenizer(config.base_model)
    base.check_chat_template(tok, train_rows, config.base_model)
    model = base.load_causal_lm(config.base_model)
    peft_config = base.build_peft_config(
        config.peft, model_type=model.config.model_type, task_type="CAUSAL_LM"
    )
    callback = base.EventCallback(
        on_event,
        should_stop,
        early_stopping_patience=config.early_stopping_patience if val_rows else 0,
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-sft-") as scratch:
        args = SFTConfig(
            **base.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
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
        return base.train_and_save(
            trainer,
            callback,
            config=config,
            tokenizer=tok,
            output_dir=output_dir,
            has_eval=bool(val_rows),
            on_event=on_event,
            should_stop=should_stop,
            task_type="CAUSAL_LM",
            eval_map=EVAL_MAP,
            train_map=TRAIN_MAP,
        )
