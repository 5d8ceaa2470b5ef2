"""RLOO: online RL of a causal-LM adapter against a trained reward adapter."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from datasets import Dataset
from trl import RLOOConfig, RLOOTrainer

from ml import adapters, callbacks, data, loading, runtime
from ml.config import RLOORunConfig
from ml.result import RunResult
from ml.reward import RewardScorer
from ml.runners.finish import MetricNames, finish_run

logger = logging.getLogger(__name__)

METRIC_NAMES = MetricNames(
    evaluation={"eval_reward": "eval_reward", "eval_kl": "eval_kl"},
    train={"reward": "reward_mean", "kl": "kl"},
    first={"reward": "reward_start"},
)


def load_scorer(config: RLOORunConfig) -> RewardScorer:
    """The reward adapter merged into its base, scoring at the run's max_length."""
    return RewardScorer.load(
        config.reward_base or config.base_model,
        config.reward_adapter,
        max_length=config.max_length,
    )


def run(
    config: RLOORunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: callbacks.EventFn,
    should_stop: callbacks.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter with RLOO on ``{"prompt"}`` rows."""
    runtime.setup_runtime(config, config.reward_base, config.reward_adapter)
    train_rows, val_rows = data.read_train_val(data_dir, required=("prompt",))
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = loading.load_tokenizer(config.base_model, padding_side="left")
    data.check_chat_template(tok, train_rows, config.base_model)
    scorer = load_scorer(config)
    model = loading.load_causal_lm(config.base_model)
    peft_config = adapters.build_peft_config(
        config.peft, model_type=model.config.model_type, task_type="CAUSAL_LM"
    )
    callback = callbacks.EventCallback(
        on_event,
        should_stop,
        best_metric="eval_reward",
        greater_is_better=True,
        early_stopping_patience=config.early_stopping_patience if val_rows else 0,
    )
    with tempfile.TemporaryDirectory(prefix="arbiter-rloo-") as scratch:
        args = RLOOConfig(
            **runtime.training_kwargs(config, Path(scratch), has_eval=bool(val_rows)),
            beta=config.beta,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
        )
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=scorer,
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
