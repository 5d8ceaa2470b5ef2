"""The method runners on a tiny random-weight Llama: mechanics and learning signal."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from ml.callbacks import EventCallback
from ml.data import read_train_val
from ml.runners import RunDataError, run
from ml.tiny import build_tiny_model

PROBE = "Q: tell me about the cat and the dog . A: small cloud follows kindly ."
PHASES_OK = ["loading", "training", "evaluating", "saving", "done"]


# ---------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_base(base: str, task: str) -> torch.nn.Module:
    if task == "SEQ_CLS":
        torch.manual_seed(1234)  # the fresh score head must be identical across loads
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        model.config.pad_token_id = AutoTokenizer.from_pretrained(base).pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(base)
    return model.eval()


@torch.no_grad()
def last_logits(model: torch.nn.Module, tok: Any) -> torch.Tensor:
    out = model(**tok(PROBE, return_tensors="pt"))
    return out.logits[:, -1].float()


def assert_adapter_trained(base: str, out: Path, *, task: str, peft_type: str) -> None:
    """Plain PEFT folder that reloads; adapter moved, base weights untouched."""
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "arbiter_run.json",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == peft_type.upper()
    assert config["task_type"] == task
    info = json.loads((out / "arbiter_run.json").read_text())
    assert info["peft_type"] == peft_type and info["task_type"] == task

    tensors = load_file(out / "adapter_model.safetensors")
    if peft_type == "lora":
        lora_b = [t for k, t in tensors.items() if "lora_B" in k]
        assert lora_b and all(t.abs().max() > 0 for t in lora_b), "LoRA B is still zero"
    elif peft_type == "ia3":
        ia3 = [t for k, t in tensors.items() if "ia3_l" in k]
        assert ia3 and any((t - 1).abs().max() > 0 for t in ia3), (
            "IA3 is still all ones"
        )
    else:
        prompt = tensors["prompt_embeddings"]
        vocab = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
        assert torch.cdist(prompt, vocab).min() > 0, (
            "virtual tokens still equal vocab rows"
        )
    if task == "SEQ_CLS":
        assert any("score" in k for k in tensors), "score head not saved in the adapter"

    tok = AutoTokenizer.from_pretrained(out)
    reference = last_logits(load_base(base, task), tok)
    model = PeftModel.from_pretrained(load_base(base, task), str(out)).eval()
    with model.disable_adapter():
        assert torch.allclose(last_logits(model, tok), reference, atol=1e-5)
    assert (last_logits(model, tok) - reference).abs().max() > 1e-4


def assert_events(log: Any, result: Any, *, phases: list[str] = PHASES_OK) -> None:
    assert [p["phase"] for p in log.of("status")] == phases
    progress = log.of("progress")
    assert [p["step"] for p in progress] == list(range(1, result.steps + 1))
    assert all(p["total"] == progress[0]["total"] for p in progress)
    assert log.of("metrics"), "no metrics events"
    assert all(
        isinstance(v, float) for p in log.of("metrics") for v in p["metrics"].values()
    )


def reversed_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r, chosen=r["rejected"], rejected=r["chosen"]) for r in rows]


@torch.no_grad()
def reward_accuracy(base: str, adapter: Path, rows: list[dict[str, Any]]) -> float:
    """Held-out accuracy of a reloaded reward adapter, scoring text + EOS."""
    tok = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(load_base(base, "SEQ_CLS"), str(adapter)).eval()

    def score(text: str) -> float:
        return (
            model(**tok(text + tok.eos_token, return_tensors="pt")).logits[0, 0].item()
        )

    return statistics.mean(
        score(r["prompt"] + r["chosen"]) > score(r["prompt"] + r["rejected"])
        for r in rows
    )


@torch.no_grad()
def dpo_accuracy(base: str, adapter: Path, rows: list[dict[str, Any]]) -> float:
    """Held-out implicit-reward accuracy of a reloaded DPO adapter (ref = adapter off)."""
    tok = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(load_base(base, "CAUSAL_LM"), str(adapter)).eval()

    def logp(prompt: str, completion: str) -> float:
        prompt_ids = tok(prompt)["input_ids"]
        ids = torch.tensor(
            [prompt_ids + tok(completion)["input_ids"] + [tok.eos_token_id]]
        )
        logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        token_logps = logps.gather(1, ids[0, 1:, None])[:, 0]
        return token_logps[len(prompt_ids) - 1 :].sum().item()

    def implicit_reward(prompt: str, completion: str) -> float:
        policy = logp(prompt, completion)
        with model.disable_adapter():
            return policy - logp(prompt, completion)

    return statistics.mean(
        implicit_reward(r["prompt"], r["chosen"])
        > implicit_reward(r["prompt"], r["rejected"])
        for r in rows
    )


# ---------------------------------------------------------------- tests


def test_reward_run_trains_a_seq_cls_adapter_with_its_score_head(
    reward_run: tuple[Any, Any, Path], llama_info: tuple[str, str]
) -> None:
    """Reward runs save a SEQ_CLS LoRA (score head inside), report accuracy and events."""
    result, log, _ = reward_run
    base, weights_hash = llama_info
    assert not result.cancelled and result.task_type == "SEQ_CLS" and result.steps == 32
    assert result.metrics["eval_accuracy"] >= 0.9 and result.metrics["eval_margin"] > 0
    assert {"train_loss", "eval_loss", "train_accuracy"} <= set(result.metrics)
    assert_events(log, result)
    assert_adapter_trained(base, result.output_dir, task="SEQ_CLS", peft_type="lora")
    assert sha256(Path(base) / "model.safetensors") == weights_hash
    info = json.loads((result.output_dir / "arbiter_run.json").read_text())
    assert info["method"] == "reward" and info["metrics"] == result.metrics
    assert info["config"]["base_model"] == base


def test_dpo_run_trains_a_causal_lm_adapter(
    dpo_run: tuple[Any, Any, Path], llama_info: tuple[str, str]
) -> None:
    """DPO with defaults saves a CAUSAL_LM LoRA and reports implicit-reward metrics."""
    result, log, _ = dpo_run
    base, weights_hash = llama_info
    assert not result.cancelled and result.task_type == "CAUSAL_LM"
    assert result.metrics["eval_accuracy"] >= 0.9 and result.metrics["eval_margin"] > 0
    assert_events(log, result)
    assert_adapter_trained(base, result.output_dir, task="CAUSAL_LM", peft_type="lora")
    assert sha256(Path(base) / "model.safetensors") == weights_hash


@pytest.mark.parametrize("peft_type", ["lora", "ia3", "prompt_tuning"])
def test_sft_trains_every_peft_type(
    peft_type: str,
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path: Path,
    events: Any,
) -> None:
    """SFT supports LoRA, IA3 and prompt tuning; the adapter reloads and moved."""
    result = run(
        "sft",
        {"base_model": llama_dir, "max_steps": 6, "peft": {"peft_type": peft_type}},
        data_dir=make_data("sft", 48, 16),
        output_dir=tmp_path,
        on_event=events,
    )
    assert result.peft_type == peft_type and result.steps == 6
    assert {"train_loss", "eval_loss"} <= set(result.metrics)
    assert_events(events, result)
    assert_adapter_trained(llama_dir, tmp_path, task="CAUSAL_LM", peft_type=peft_type)


@pytest.mark.parametrize("peft_type", ["ia3", "prompt_tuning"])
def test_dpo_trains_ia3_and_prompt_tuning(
    peft_type: str, llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """DPO learns with IA3 and prompt tuning at their default learning rates.

    Measured (seeds 0-2, 3 epochs on 64 pairs): held-out implicit-reward
    accuracy 1.0 for both; prompt tuning needs the virtual-token logits cut
    off, which the runner does.
    """
    result = run(
        "dpo",
        {"base_model": llama_dir, "peft": {"peft_type": peft_type}},
        data_dir=make_data("pref", 64, 32, seed=31),
        output_dir=tmp_path,
    )
    assert result.metrics["eval_accuracy"] >= 0.75
    assert result.metrics["eval_margin"] > 0
    assert_adapter_trained(llama_dir, tmp_path, task="CAUSAL_LM", peft_type=peft_type)


def test_reward_trains_ia3(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """Reward models support IA3 (the score head is still saved in the adapter)."""
    result = run(
        "reward",
        {"base_model": llama_dir, "max_steps": 8, "peft": {"peft_type": "ia3"}},
        data_dir=make_data("pref", 64, 16),
        output_dir=tmp_path,
    )
    assert result.task_type == "SEQ_CLS"
    assert_adapter_trained(llama_dir, tmp_path, task="SEQ_CLS", peft_type="ia3")


@pytest.mark.parametrize("peft_type", ["lora", "prompt_tuning"])
def test_rloo_trains_against_the_reward_adapter(
    peft_type: str,
    reward_run: tuple[Any, Any, Path],
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path: Path,
    events: Any,
) -> None:
    """RLOO scores samples with the merged reward adapter and reports reward and KL."""
    result = run(
        "rloo",
        {
            "base_model": llama_dir,
            "reward_adapter": str(reward_run[0].output_dir),
            "max_steps": 3,
            "max_completion_length": 8,
            "peft": {"peft_type": peft_type},
        },
        data_dir=make_data("prompts", 32, 0),
        output_dir=tmp_path,
        on_event=events,
    )
    assert result.steps == 3 and result.task_type == "CAUSAL_LM"
    assert {"reward_mean", "reward_start", "kl"} <= set(result.metrics)
    assert_events(events, result, phases=["loading", "training", "saving", "done"])
    assert_adapter_trained(llama_dir, tmp_path, task="CAUSAL_LM", peft_type=peft_type)


def test_ppo_trains_a_policy_adapter_and_discards_the_value_model(
    reward_run: tuple[Any, Any, Path],
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path: Path,
    events: Any,
) -> None:
    """PPO (trl.experimental, trl 1.12) saves only the LoRA policy adapter."""
    result = run(
        "ppo",
        {
            "base_model": llama_dir,
            "reward_adapter": str(reward_run[0].output_dir),
            "max_steps": 3,
            "response_length": 8,
        },
        data_dir=make_data("prompts", 32, 0),
        output_dir=tmp_path,
        on_event=events,
    )
    assert result.steps == 3 and result.task_type == "CAUSAL_LM"
    assert {"reward_mean", "reward_start", "kl"} <= set(result.metrics)
    assert_events(events, result, phases=["loading", "training", "saving", "done"])
    assert_adapter_trained(llama_dir, tmp_path, task="CAUSAL_LM", peft_type="lora")
    keys = load_file(tmp_path / "adapter_model.safetensors")
    assert all("lora_" in k for k in keys), (
        "value model or head leaked into the adapter"
    )


def test_online_runners_refuse_an_adapter_that_is_not_a_reward_model(
    dpo_run: tuple[Any, Any, Path],
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A causal-LM adapter passed as reward_adapter is refused by name."""
    with pytest.raises(ValueError, match="not a reward-model adapter"):
        run(
            "rloo",
            {"base_model": llama_dir, "reward_adapter": str(dpo_run[0].output_dir)},
            data_dir=make_data("prompts", 8, 0),
            output_dir=tmp_path,
        )
    assert not (tmp_path / "adapter_config.json").exists()


@pytest.mark.parametrize(
    ("method", "peft_type"), [("reward", "prompt_tuning"), ("ppo", "prompt_tuning")]
)
def test_unsupported_peft_combinations_are_refused_before_loading(
    method: str, peft_type: str, llama_dir: str, tmp_path: Path
) -> None:
    """Prompt tuning cannot score (reward) or align with PPO's logits: refused clearly."""
    config = {"base_model": llama_dir, "peft": {"peft_type": peft_type}}
    if method == "ppo":
        config["reward_adapter"] = str(tmp_path)
    with pytest.raises(
        ValueError, match=rf"^peft\.peft_type '{peft_type}' is not supported"
    ):
        run(method, config, data_dir=tmp_path, output_dir=tmp_path)


def test_cancel_stops_within_a_step_and_saves_nothing(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path, events: Any
) -> None:
    """should_stop is honoured at the next step boundary; no adapter is written."""
    result = run(
        "dpo",
        {"base_model": llama_dir, "gradient_accumulation_steps": 2, "max_steps": 50},
        data_dir=make_data("pref", 64, 16),
        output_dir=tmp_path / "out",
        on_event=events,
        should_stop=lambda: len(events.of("progress")) >= 2,
    )
    assert result.cancelled and result.steps == 2
    assert events.of("status")[-1]["phase"] == "cancelled"
    assert "evaluating" not in [p["phase"] for p in events.of("status")]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cancel_before_the_first_step(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """A stop requested during loading ends the run before any optimizer step."""
    result = run(
        "sft",
        {"base_model": llama_dir},
        data_dir=make_data("sft", 16, 0),
        output_dir=tmp_path / "out",
        should_stop=lambda: True,
    )
    assert result.cancelled and result.steps == 0
    assert not (tmp_path / "out").exists()


def test_cancel_ppo(
    reward_run: tuple[Any, Any, Path],
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path: Path,
    events: Any,
) -> None:
    """PPO's loop ignores should_training_stop; the runner still stops after the step."""
    result = run(
        "ppo",
        {
            "base_model": llama_dir,
            "reward_adapter": str(reward_run[0].output_dir),
            "max_steps": 20,
            "response_length": 4,
        },
        data_dir=make_data("prompts", 32, 0),
        output_dir=tmp_path / "out",
        on_event=events,
        should_stop=lambda: bool(events.of("progress")),
    )
    assert result.cancelled and result.steps == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["reward", "dpo"])
def test_learning_signal_follows_the_preference_rule(
    method: str,
    llama_dir: str,
    tmp_path: Path,
    pairs: Callable[[int, int], list[dict[str, Any]]],
    write_rows: Callable[[Path, list[dict[str, Any]]], None],
) -> None:
    """The method learns "kindly ." > "rudely ." and, retrained, the reverse rule.

    Accuracy is recomputed on 64 held-out pairs from the reloaded adapters.
    Training both directions rules out a lucky random model: the untrained
    reward head already scored 0.94-0.98 on the rule, and so 0.02-0.06 on its
    reverse (DPO starts at 0.0: policy equals reference). Measured with these
    default configs over seeds 0-4: reward 1.0/1.0 and DPO 1.0/1.0
    (rule/reverse) on every seed, 0.6-0.95 s of training each. Threshold 0.9.
    """
    accuracy = reward_accuracy if method == "reward" else dpo_accuracy
    held_out = pairs(64, 200)
    for direction, transform in (("rule", list), ("reverse", reversed_pairs)):
        data = tmp_path / direction / "data"
        write_rows(data / "train.jsonl", transform(pairs(64, 100)))
        result = run(
            method,
            {"base_model": llama_dir, "seed": 0},
            data_dir=data,
            output_dir=tmp_path / direction / "out",
        )
        acc = accuracy(llama_dir, result.output_dir, transform(held_out))
        assert acc >= 0.9, f"{method} {direction}: held-out accuracy {acc:.2f}"
        assert result.metrics["train_accuracy"] >= 0.9
        assert "eval_accuracy" not in result.metrics  # no val.jsonl given


def test_conversational_rows_train(
    llama_dir: str,
    tmp_path: Path,
    pairs: Callable[[int, int], list[dict[str, Any]]],
    write_rows: Callable[[Path, list[dict[str, Any]]], None],
) -> None:
    """Message-list rows go through the tokenizer's chat template (DPO and reward)."""
    rows = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in pairs(32, 5)
    ]
    write_rows(tmp_path / "data" / "train.jsonl", rows)
    for method in ("dpo", "reward"):
        result = run(
            method,
            {"base_model": llama_dir, "max_steps": 3},
            data_dir=tmp_path / "data",
            output_dir=tmp_path / method,
        )
        assert result.steps == 3
        assert (tmp_path / method / "adapter_model.safetensors").is_file()


def test_gpt2_architecture_gets_its_own_lora_targets(
    tmp_path: Path, make_data: Callable[..., Path]
) -> None:
    """target_modules=None picks c_attn/c_proj/c_fc on GPT-2 models."""
    base = str(build_tiny_model(tmp_path / "gpt2", kind="gpt2"))
    run(
        "sft",
        {"base_model": base, "max_steps": 2},
        data_dir=make_data("sft", 16, 0),
        output_dir=tmp_path / "out",
    )
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"c_attn", "c_proj", "c_fc"}
    assert_adapter_trained(base, tmp_path / "out", task="CAUSAL_LM", peft_type="lora")


def test_early_stopping_keeps_the_best_weights() -> None:
    """After `patience` evaluations without improvement training stops; best weights return."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    model = torch.nn.Linear(2, 1)
    state, control = TrainerState(), TrainerControl()
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    callback = EventCallback(
        lambda k, p: None, lambda: False, early_stopping_patience=2
    )
    best = None
    for step, loss in enumerate([1.0, 0.5, 0.6, 0.7], start=1):
        state.global_step = step
        with torch.no_grad():
            model.weight.fill_(float(step))
        callback.on_step_end(args, state, control)
        callback.on_evaluate(
            args, state, control, metrics={"eval_loss": loss}, model=model
        )
        if loss == 0.5:
            best = model.weight.detach().clone()
    assert control.should_training_stop and callback.stopped_early
    assert callback.best_metrics == {"eval_loss": 0.5}
    assert callback.restore_best(model)
    assert torch.equal(model.weight, best)


def test_weights_partitioned_by_zero3_are_not_claimed_as_restored() -> None:
    """Under DeepSpeed ZeRO-3 each rank's parameter is an empty placeholder
    (``ds_id`` set, the shard elsewhere): a copy of it is empty, so restoring
    it would change nothing while the job reported the best evaluation's
    figures for the last step's weights. The callback keeps no copy then,
    and ``restore_best`` says so (the run reports its final evaluation)."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    model = torch.nn.Linear(2, 1)
    model.weight.ds_id = 0  # what deepspeed.zero.Init puts on each parameter
    model.weight.data = torch.empty(0)
    model.bias.requires_grad_(False)
    state, control = TrainerState(), TrainerControl()
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    callback = EventCallback(
        lambda k, p: None, lambda: False, early_stopping_patience=2
    )
    for step, loss in enumerate([1.0, 0.5, 0.6, 0.7], start=1):
        state.global_step = step
        callback.on_step_end(args, state, control)
        callback.on_evaluate(
            args, state, control, metrics={"eval_loss": loss}, model=model
        )
    assert control.should_training_stop and callback.stopped_early
    assert not callback.restore_best(model)


def test_data_errors_are_reported_clearly(
    tmp_path: Path, write_rows: Callable[[Path, list[dict[str, Any]]], None]
) -> None:
    """Missing files, bad JSON, missing keys and mixed formats raise RunDataError."""
    keys = {"required": ("chosen", "rejected"), "optional": ("prompt",)}
    with pytest.raises(RunDataError, match="train.jsonl does not exist"):
        read_train_val(tmp_path, **keys)
    (tmp_path / "train.jsonl").write_text('{"chosen": "a", "rejected": "b"}\n{oops\n')
    with pytest.raises(RunDataError, match="line 2: invalid JSON"):
        read_train_val(tmp_path, **keys)
    write_rows(tmp_path / "train.jsonl", [{"chosen": "a"}])
    with pytest.raises(RunDataError, match="row 1: missing key 'rejected'"):
        read_train_val(tmp_path, **keys)
    message = [{"role": "assistant", "content": "b"}]
    write_rows(tmp_path / "train.jsonl", [{"chosen": "a", "rejected": message}])
    with pytest.raises(RunDataError, match="mixes plain-text and message-list"):
        read_train_val(tmp_path, **keys)


def test_extra_keys_are_ignored_and_margin_is_kept(
    tmp_path: Path, write_rows: Callable[[Path, list[dict[str, Any]]], None]
) -> None:
    """Unknown keys (weight, ids) are dropped; a numeric margin on every row is kept."""
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1, "weight": 2.0}]
    write_rows(tmp_path / "train.jsonl", rows)
    train, val = read_train_val(
        tmp_path,
        required=("chosen", "rejected"),
        optional=("prompt",),
        numeric=("margin",),
    )
    assert train == [{"chosen": "a", "rejected": "b", "prompt": "p", "margin": 1.0}]
    assert val is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dpo_on_gpu_uses_bf16(
    llama_dir: str, make_data: Callable[..., Path], tmp_path: Path
) -> None:
    """On a GPU the runner trains with bf16 autocast and saves a loadable adapter."""
    result = run(
        "dpo",
        {"base_model": llama_dir, "max_steps": 4},
        data_dir=make_data("pref", 32, 16),
        output_dir=tmp_path,
    )
    assert result.steps == 4 and result.metrics["eval_accuracy"] >= 0.5
    assert_adapter_trained(llama_dir, tmp_path, task="CAUSAL_LM", peft_type="lora")
