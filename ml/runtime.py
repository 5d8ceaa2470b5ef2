"""Process set-up for one run: threads, seeds, offline hub, TrainingArguments."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import torch
from transformers import set_seed
from transformers.utils import logging as hf_logging

from ml.config import RunConfig


def use_offline_hub_if_local(*names: str | None) -> None:
    """Force hub offline mode when every model reference is a local folder."""
    given = [n for n in names if n]
    if given and all(Path(n).exists() for n in given):
        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True


def setup_runtime(config: RunConfig, *extra_models: str | None) -> None:
    """Threads, seeds, offline mode and quiet progress bars for one run."""
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    use_offline_hub_if_local(config.base_model, *extra_models)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # transformers 5 renamed gradient_checkpointing; TRL 1.12 still uses the old name.
    warnings.filterwarnings(
        "ignore",
        message=r".*gradient_checkpointing` is deprecated",
        category=FutureWarning,
    )
    set_seed(config.seed)


def use_cuda() -> bool:
    return torch.cuda.is_available()


def training_kwargs(
    config: RunConfig, scratch_dir: Path, *, has_eval: bool
) -> dict[str, Any]:
    """TrainingArguments fields every TRL config accepts, CPU-safe."""
    cuda = use_cuda()
    bf16 = (
        config.bf16
        if config.bf16 is not None
        else cuda and torch.cuda.is_bf16_supported()
    )
    return {
        "output_dir": str(scratch_dir),
        "seed": config.seed,
        "data_seed": config.seed,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "epoch" if has_eval and config.eval_each_epoch else "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": not cuda,
        "bf16": bool(bf16),
        "gradient_checkpointing": config.gradient_checkpointing,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def timed() -> Callable[[], float]:
    start = time.monotonic()
    return lambda: time.monotonic() - start


def library_versions() -> dict[str, str]:
    import peft
    import transformers
    import trl

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
    }
