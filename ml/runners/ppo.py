"""PPO (``trl.experimental.ppo``, trl 1.12) of a causal-LM adapter.

Four models, as trl 1.12's PPOTrainer needs them:

- policy: the base causal LM with a fresh adapter (LoRA or IA3);
- reference: the same model with the adapter disabled (``ref_model=None``);
- reward: reward base + reward adapter, merged into a plain classifier;
- value: a sequence classifier (``num_labels=1``) on the policy base, trained
  in full alongside the policy and discarded at the end.

PPO feeds token ids straight from the policy to the reward model, so both must
share one tokenizer. PPO has no evaluation loop, so ``val.jsonl`` is ignored.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer

from ml import adapters, callbacks, data, loading, merge, runtime
from ml.config import PPORunConfig
from ml.result import RunDataError, RunResult
from ml.runners.finish import MetricNames, finish_run

logger = logging.getLogger(__name__)

METRIC_NAMES = MetricNames(
    train={
        "objective/scores": "reward_mean",
        "objective/kl": "kl",
        "objective/rlhf_reward": "rlhf_reward",
        "loss/policy_avg": "policy_loss",
        "loss/value_avg": "value_loss",
    },
    first={"objective/scores": "reward_start"},
)


def _ppo_classes() -> tuple[Any, Any]:
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    return PPOConfig, PPOTrainer


def tokenize_prompts(
    rows: list[dict[str, Any]], tok: PreTrainedTokenizerBase, max_prompt_tokens: int
) -> Dataset:
    """Pre-tokenised ``{"input_ids"}`` rows, keeping the end of long prompts."""
    ids: list[list[int]] = []
    for row in rows:
        prompt = row["prompt"]
        enc: Any
        if isinstance(prompt, list):
            enc = tok.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        else:
            enc = tok(text=prompt)
        ids.append(list(enc["input_ids"])[-max_prompt_tokens:])
    if any(not x for x in ids):
        raise RunDataError("train.jsonl has an empty prompt")
    return Dataset.from_dict({"input_ids": ids})


def run(
    config: PPORunConfig,
    *,
    data_dir: Path,
    output_dir: Path,
    on_event: callbacks.EventFn,
    should_stop: callbacks.StopFn,
) -> RunResult:
    """Train a CAUSAL_LM adapter with PPO on ``{"prompt"}`` rows."""
    PPOConfig, PPOTrainer = _ppo_classes()
    runtime.setup_runtime(config, config.reward_base, config.reward_adapter)
    train_rows, _ = data.read_train_val(data_dir, required=("prompt",))
    on_event("status", {"phase": "loading", "train_rows": len(train_rows)})

    tok = loading.load_tokenizer(config.base_model, padding_side="left")
    data.check_chat_template(tok, train_rows, config.base_model)
    reward_base = config.reward_base or config.base_model
    if reward_base != config.base_model:
        reward_tok = loading.load_tokenizer(reward_base)
        if reward_tok.get_vocab() != tok.get_vocab():
            raise ValueError(
                "reward_base must use the same tokenizer as base_model for PPO "
                "(it scores the policy's token ids directly); use rloo instead"
            )
    if tok.pad_token_id == tok.eos_token_id:
        logger.warning(
            "Tokenizer of %s pads with its eos token; PPO will treat EOS as padding and "
            "score completions without it",
            config.base_model,
        )
    dataset = tokenize_prompts(
        train_rows, tok, config.max_length - config.response_length
    )

    reward_model = merge.load_merged_reward_model(
        reward_base, config.reward_adapter, pad_token_id=tok.pad_token_id
    )
    value_model = loading.load_sequence_classifier(
        config.base_model, pad_token_id=tok.pad_token_id
    )
    policy = loading.load_causal_lm(config.base_model)
    peft_config = adapters.build_peft_config(
        config.peft, model_type=policy.config.model_type, task_type="CAUSAL_LM"
    )
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    if len(dataset) < batch:
        raise RunDataError(
            f"train.jsonl has {len(dataset)} prompts; PPO needs at least one batch "
            f"({batch} = per_device_train_batch_size x gradient_accumulation_steps)"
        )
    total_episodes = config.total_episodes
    if config.max_steps > 0:
        total_episodes = config.max_steps * batch
    callback = callbacks.EventCallback(on_event, should_stop, raise_on_stop=True)
    with tempfile.TemporaryDirectory(prefix="arbiter-ppo-") as scratch:
        args = PPOConfig(
            **runtime.training_kwargs(config, Path(scratch), has_eval=False),
            total_episodes=total_episodes,
            response_length=config.response_length,
            stop_token="eos",  # noqa: S106 - a token name, not a secret
            kl_coef=config.kl_coef,
            num_ppo_epochs=config.num_ppo_epochs,
            num_mini_batches=config.num_mini_batches,
            temperature=config.temperature,
            missing_eos_penalty=config.missing_eos_penalty,
            vf_coef=config.vf_coef,
            num_sample_generations=0,
        )
        trainer = PPOTrainer(
            args=args,
            processing_class=tok,
            model=policy,
            ref_model=None,
            reward_model=reward_model,
            train_dataset=dataset,
            value_model=value_model,
            callbacks=[callback],
            peft_config=peft_config,
        )

        def policy_adapter(t: Trainer) -> Any:
            return t.accelerator.unwrap_model(t.model).policy

        return finish_run(
            trainer,
            callback,
            config=config,
            tokenizer=tok,
            output_dir=output_dir,
            task_type="CAUSAL_LM",
            metric_names=METRIC_NAMES,
            adapter_of=policy_adapter,
        )
