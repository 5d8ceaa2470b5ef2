"""Direct preference optimisation of a causal-LM adapter."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from ml import adapters, callbacks, data, loading, runtime
from ml.config import DPORunConfig
from ml.result import RunResult
from ml.runners import distributed
from ml.runners.finish import MetricNames, finish_run

logger = logging.getLogger(__name__)

METRIC_NAMES = MetricNames(
    evaluation={
        "eval_loss": "eval_loss",
        "eval_rewards/accuracies": "eval_accuracy",
        "eval_rewards/margins": "eval_margin",
    },
    train={"rewards/accuracies": "train_accuracy", "rewards/margins": "train_margin"},
)


def run(
    config: DPORunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: callbacks.EventFn,
    should_stop: callbacks.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter; the reference is the base (adapter disabled)."""
    runtime.setup_runtime(config)
    train_rows, val_rows = data.read_train_val(
        data_dir, required=("chosen", "rejected"), optional=("prompt",)
    )
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = loading.load_tokenizer(config.base_model)
    data.check_chat_template(tok, train_rows, config.base_model)
    callback = callbacks.EventCallback(
        on_event,
        should_stop,
        early_stopping_patience=config.early_stopping_patience if val_rows else 0,
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-dpo-") as scratch:
        # The arguments before the model: launched with DeepSpeed ZeRO-3
        # (zero3_init_flag) they make from_pretrained shard the weights as
        # they load, instead of every rank holding the whole base first.
        args = DPOConfig(
            **runtime.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
            max_length=config.max_length,
            beta=config.beta,
            loss_type=[config.loss_type],
            label_smoothing=config.label_smoothing,
            **distributed.trainer_overrides(),
        )
        model = loading.load_causal_lm(config.base_model)
        peft_config = adapters.build_peft_config(
            config.peft, model_type=model.config.model_type, task_type="CAUSAL_LM"
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
            adapters.drop_virtual_token_logits(trainer.model)
        return finish_run(
            trainer,
            callback,
            config=config,
            tokenizer=tok,
            output_dir=output_dir,
            task_type="CAUSAL_LM",
            metric_names=METRIC_NAMES,
        )
