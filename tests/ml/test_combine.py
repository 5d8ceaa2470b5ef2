"""Combining LoRA adapters on the tiny random Llama: the result loads with
plain PEFT and behaves like neither parent; ``combine_check`` refuses what
PEFT cannot combine, naming the reason, without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ml.combine import combine_adapters, combine_check

torch = pytest.importorskip("torch")


def make_lora(base_dir: str, out: Path, *, r: int, seed: int) -> Path:
    """A LoRA adapter with random non-zero A and B (no training needed)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(str(out))
    return out


def logits_of(base_dir: str, adapter_dir: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def parents(llama_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("combine-parents")
    return {
        "a": make_lora(llama_dir, root / "a", r=4, seed=1),
        "b": make_lora(llama_dir, root / "b", r=4, seed=2),
        "c8": make_lora(llama_dir, root / "c8", r=8, seed=3),
    }


@pytest.mark.parametrize(
    ("method", "second", "density", "rank"),
    [
        ("linear", "b", None, 4),
        ("cat", "c8", None, 12),
        ("ties", "b", 0.5, 4),
    ],
)
def test_a_combination_loads_in_plain_peft_and_differs_from_both_parents(
    llama_dir: str,
    parents: dict,
    tmp_path: Path,
    method: str,
    second: str,
    density: float | None,
    rank: int,
) -> None:
    """The combined folder holds one adapter at its root (no parent left in
    it), loads with ``PeftModel.from_pretrained`` and gives logits unlike
    either parent's; ``arbiter_run.json`` records the method, the weights
    and the rank (cat sums the parents' ranks)."""
    out = tmp_path / "combined"
    info = combine_adapters(
        base_dir=llama_dir,
        adapters=[(parents["a"], 0.6), (parents[second], 0.4)],
        method=method,
        density=density,
        output_dir=out,
    )
    assert (out / "adapter_model.safetensors").is_file()
    assert not any(p.is_dir() for p in out.iterdir())  # no parent sub-adapters
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == rank and info["rank"] == rank
    run_info = json.loads((out / "arbiter_run.json").read_text())
    assert run_info["combination"] == {"method": method, "density": density}
    assert [p["weight"] for p in run_info["parents"]] == [0.6, 0.4]

    combined = logits_of(llama_dir, out)
    for parent in (parents["a"], parents[second]):
        assert not torch.allclose(combined, logits_of(llama_dir, parent), atol=1e-4)


def test_linear_over_different_ranks_is_refused_naming_the_ranks(
    parents: dict,
) -> None:
    """Linear, ties, dare and magnitude_prune need equal ranks; the refusal
    names the ranks and the methods that would work."""
    with pytest.raises(ValueError, match=r"equal rank.*ranks 4, 8.*cat"):
        combine_check(
            adapter_dirs=[parents["a"], parents["c8"]],
            weights=[1.0, 1.0],
            method="linear",
        )
    # svd takes any ranks
    combine_check(
        adapter_dirs=[parents["a"], parents["c8"]], weights=[1.0, 1.0], method="svd"
    )


def test_check_refuses_other_bases_types_counts_and_densities(
    parents: dict, tmp_path: Path
) -> None:
    """Each refusal names its problem."""
    other_base = tmp_path / "other-base"
    other_base.mkdir()
    config = json.loads((parents["b"] / "adapter_config.json").read_text())
    (other_base / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "someone/else"})
    )
    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    (ia3 / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    reward = tmp_path / "reward"
    reward.mkdir()
    (reward / "adapter_config.json").write_text(
        json.dumps({**config, "task_type": "SEQ_CLS"})
    )
    a = parents["a"]
    cases = [
        ([a, other_base], [1, 1], "linear", None, "different base models"),
        ([a, ia3], [1, 1], "linear", None, "Only LoRA adapters combine"),
        ([a, reward], [1, 1], "linear", None, "policy and a reward model"),
        ([a, parents["b"]], [1], "linear", None, "1 weights for 2 adapters"),
        ([a], [1], "linear", None, "at least two adapters"),
        ([a, parents["b"]], [1, 1], "ties", None, r"density in \(0, 1\]"),
        ([a, parents["b"]], [1, 1], "dare_linear", 1.5, r"density in \(0, 1\]"),
        ([a, parents["b"]], [1, 1], "linear", 0.5, "takes no density"),
        ([a, parents["b"]], [1, 1], "average", None, "Unknown combination method"),
        ([a, parents["b"]], [1, float("nan")], "linear", None, "finite"),
    ]
    for dirs, weights, method, density, reason in cases:
        with pytest.raises(ValueError, match=reason):
            combine_check(
                adapter_dirs=dirs, weights=weights, method=method, density=density
            )


def test_the_check_imports_no_torch() -> None:
    """The web process calls ``combine_check``; importing it loads no torch."""
    code = (
        "import sys, ml.combine; "
        "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"
