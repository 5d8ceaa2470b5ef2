"""Direct preference optimisation of a causal-LM adapter."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from training.runners import base
from training.runners.config import DPORunConfig
from training.runners.result import RunResult

logger = logging.getLogger(__name__)

EVAL_MAP = {
    "eval_loss": "eval_loss",
    "eval_rewards/accuracies": "eval_accuracy",
    "eval_rewards/margins": "eval_margin",
}
TRAIN_MAP = {"rewards/accuracies": "train_accuracy", "rewards/margins": "train_margin"}


def run(
    config: DPORunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: base.EventFn,
    should_stop: base.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter; the reference is the base (adapter disabled)."""
    base.setup_runtime(config)
    train_rows, val_rows = base.read_train_val(
        data_dir, required=("chosen", "rejected"), optional=("prompt",)
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
    with tempfile.TemporaryDirectory(prefix="arbiter-dpo-") as scratch:
        args = DPOConfig(
            **base.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
            max_length=config.max_length,
            beta=config.beta,
            loss_type=[config.loss_type],
            label_smoothing=config.label_smoothing,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[callback],
        )
        if config.peft.peft_type == "prompt_tuning":
            base.drop_virtual_token_logits(trainer.model)
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
