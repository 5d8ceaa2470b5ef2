"""Fixtures for the runner tests: a tiny random model and synthetic data.

Nothing here needs Django or a database. The preference rule is the one from
the TRL notes: ``chosen`` ends in "kindly ." and ``rejected`` in "rudely .",
with otherwise independent random sentences.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may reach the hub
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

ADJ = "small big old new heavy light red blue green".split()
NOUN = "cat dog sun moon star cloud river ocean tree flower".split()
VERB = "follows opens closes runs walks sings reads writes".split()


def sentence(rng: random.Random, end: str) -> str:
    return f" {rng.choice(ADJ)} {rng.choice(NOUN)} {rng.choice(VERB)} {end} ."


def preference_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(NOUN, 2)
        rows.append(
            {
                "prompt": f"Q: tell me about the {a} and the {b} . A:",
                "chosen": sentence(rng, "kindly"),
                "rejected": sentence(rng, "rudely"),
                "weight": 1.0,  # ignored by the runners
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def llama_info(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(folder, sha256 of its weights at build time) of the tiny Llama."""
    from ml.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", seed=0)
    return str(path), hashlib.sha256(
        (path / "model.safetensors").read_bytes()
    ).hexdigest()


@pytest.fixture(scope="session")
def llama_dir(llama_info: tuple[str, str]) -> str:
    return llama_info[0]


@pytest.fixture(scope="session")
def make_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_data(kind, n_train, n_val, seed)`` -> a data_dir for that method family."""

    def make(kind: str, n_train: int = 64, n_val: int = 32, seed: int = 1) -> Path:
        root = tmp_path_factory.mktemp(f"data-{kind}")
        train = preference_rows(n_train, seed)
        val = preference_rows(n_val, seed + 1000) if n_val else []
        if kind == "sft":
            train = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in train]
            val = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in val]
        elif kind == "prompts":
            train = [{"prompt": r["prompt"]} for r in train]
            val = [{"prompt": r["prompt"]} for r in val]
        elif kind != "pref":
            raise ValueError(kind)
        write_jsonl(root / "train.jsonl", train)
        if val:
            write_jsonl(root / "val.jsonl", val)
        return root

    return make


class EventLog:
    """Collects ``on_event`` calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, payload))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.events if k == kind]


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture(scope="session")
def reward_run(
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Any, EventLog, Path]:
    """One reward-model run shared by the reward, rloo and ppo tests."""
    from ml.runners import run

    log = EventLog()
    data = make_data("pref", 64, 64, seed=11)
    out = tmp_path_factory.mktemp("reward-adapter")
    result = run(
        "reward",
        {
            "base_model": llama_dir,
            "num_train_epochs": 8,
            "per_device_train_batch_size": 16,
        },
        data_dir=data,
        output_dir=out,
        on_event=log,
    )
    return result, log, data


@pytest.fixture(scope="session")
def dpo_run(
    llama_dir: str,
    make_data: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Any, EventLog, Path]:
    """One DPO run (LoRA, defaults, with val.jsonl) shared by several tests."""
    from ml.runners import run

    log = EventLog()
    data = make_data("pref", 64, 32, seed=21)
    out = tmp_path_factory.mktemp("dpo-adapter")
    result = run(
        "dpo", {"base_model": llama_dir}, data_dir=data, output_dir=out, on_event=log
    )
    return result, log, data


@pytest.fixture(scope="session")
def pairs() -> Callable[[int, int], list[dict[str, Any]]]:
    """``pairs(n, seed)``: preference rows following the kindly/rudely rule."""
    return preference_rows


@pytest.fixture(scope="session")
def write_rows() -> Callable[[Path, list[dict[str, Any]]], None]:
    """``write_rows(path, rows)``: write a JSONL file."""
    return write_jsonl
