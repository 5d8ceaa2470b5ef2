"""The peak-memory estimate and the machine's memory figures (no Django)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml import memory
from ml.config import config_from_dict


def _config(method: str, **fields: object) -> object:
    extra = {"reward_adapter": "-"} if method in ("ppo", "rloo") else {}
    return config_from_dict(method, {"base_model": "-", **extra, **fields})


def test_model_shape_counts_the_parameters_the_model_has(llama_dir: str) -> None:
    """The count from config.json equals the loaded causal LM's, so the
    estimate's weights term is exact."""
    from transformers import AutoModelForCausalLM

    shape = memory.model_shape(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.model_type == "llama" and shape.num_layers >= 1


def test_model_shape_of_a_folder_without_config_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        memory.model_shape(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x"}))
    with pytest.raises(ValueError, match="hidden_size"):
        memory.model_shape(tmp_path)


def test_the_builtin_smollm2_shape_is_135m_parameters() -> None:
    assert 134e6 < memory.SMOLLM2_135M.parameters < 136e6


def test_estimate_grows_with_batch_and_length_and_dpo_costs_most() -> None:
    shape = memory.SMOLLM2_135M
    sft = memory.estimate_peak_memory(
        _config("sft", per_device_train_batch_size=4), shape
    )
    sft8 = memory.estimate_peak_memory(
        _config("sft", per_device_train_batch_size=8), shape
    )
    longer = memory.estimate_peak_memory(
        _config("sft", per_device_train_batch_size=4, max_length=1024), shape
    )
    dpo = memory.estimate_peak_memory(
        _config("dpo", per_device_train_batch_size=4), shape
    )
    reward = memory.estimate_peak_memory(
        _config("reward", per_device_train_batch_size=4), shape
    )
    assert sft.total < sft8.total and sft.total < longer.total
    assert dpo.total > sft.total
    # A reward head has one output: no vocabulary-sized logits.
    assert "logits" not in reward.parts
    assert sft.parts["base weights"] == shape.parameters * 4
    assert "GB" in dpo.describe() and dpo.to_dict()["total"] == dpo.total


def test_the_issue_17_dpo_launch_is_estimated_near_what_killed_the_worker() -> None:
    """DPO at batch 8 and 512 tokens on SmolLM2 had grown a 24 GB worker to
    22.8 GB when the kernel killed it at step 3."""
    estimate = memory.estimate_peak_memory(_config("dpo"), memory.SMOLLM2_135M)
    assert 20 * memory.GIB < estimate.total < 26 * memory.GIB


def test_a_smaller_batch_keeps_the_effective_batch() -> None:
    assert memory.suggest_smaller_batch(8, 1) == (4, 2)
    assert memory.suggest_smaller_batch(4, 3) == (2, 6)
    assert memory.suggest_smaller_batch(1, 8) is None


def test_resident_memory_of_a_live_and_a_finished_process() -> None:
    assert (memory.process_rss(os.getpid()) or 0) > 10 * memory.MIB
    done = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert done.returncode == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert memory.process_rss(child.pid) is None


def test_machine_figures_are_positive_and_consistent() -> None:
    total, available = memory.total_memory(), memory.available_memory()
    assert 0 < available <= total
    limit = memory.cgroup_memory_limit()
    assert limit is None or limit >= total
    kills = memory.cgroup_oom_kills()
    assert kills is None or kills >= 0
