"""Peak resident memory of a training run, estimated before it starts.

Django-free and torch-free: the web process calls it to check a launch, the
worker to explain a kill. The estimate is the sum of

- the runtime: Python with torch, transformers, TRL and the dataset
  (``RUNTIME_BYTES``, measured);
- the base weights, loaded in float32 (``ml.loading``), once per model the
  method holds (PPO and RLOO also load the reward model; PPO trains a full
  value model with its AdamW state);
- the adapter's trainable parameters with their gradient and AdamW state
  (16 bytes each);
- activations kept for the backward pass:
  ``sequences x length x hidden x layers x ACTIVATION_BYTES``;
- the logits, ``sequences x length x vocab x 4`` bytes, times
  ``LOGIT_COPIES`` (log-softmax, its gradient, the gathered log-probs). DPO's
  reference pass (adapter disabled, no gradient) adds nothing at the peak:
  its logits are reduced to log-probs and freed before the policy pass.

``sequences`` is the micro-batch (``per_device_train_batch_size``), doubled
for DPO and reward models (chosen and rejected go through together), and
``length`` is ``max_length``: the estimate is for the worst case, a batch
whose every sequence is cut at ``max_length``. Shorter data uses less, since
batches are padded only to their longest row.

The factors were calibrated on SmolLM2-135M on CPU at 128 tokens, batches
2 and 4 (benchmarks/memory.py prints estimate against measured peak RSS;
the same run measures up to 0.5 GB apart from one try to the next, and the
estimate fell between 0.9 and 1.2 times the measured peak). For the DPO
launch of issue 17 (batch 8, 512 tokens) it says 23 GB; the worker had
reached 22.8 GB at step 3 when the kernel killed it. On a GPU worker the figures
describe host memory only roughly (weights and activations live on the
device).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.config import RunConfig

GIB = 1024**3
MIB = 1024**2

#: Python + torch + transformers + peft + trl + datasets imported, with the
#: tokenizer and dataset loaded (the intercept of the measured runs).
RUNTIME_BYTES = 750 * MIB
#: Bytes kept per (token x hidden unit x layer) for the backward pass:
#: float32 norms, projections, LoRA dropout copies and MLP intermediates
#: (SmolLM2's intermediate is 2.7 x hidden); the slope of the reward runs,
#: which have no vocabulary logits.
ACTIVATION_BYTES = 120.0
#: Copies of the float32 logits alive at the peak of a step with gradients
#: (the slope of SFT and DPO runs beyond their activations: 3 to 4 copies
#: across repeated runs; the higher keeps the estimate on the safe side).
LOGIT_COPIES = 4.0
#: Bytes per trainable parameter: float32 weight, gradient, AdamW m and v.
TRAINABLE_BYTES = 16
FLOAT32 = 4

#: Methods that forward chosen and rejected together.
PAIRED_METHODS = frozenset({"reward", "dpo"})


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model's config.json."""

    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    tie_word_embeddings: bool = True
    max_positions: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // max(self.num_heads, 1)

    @property
    def parameters(self) -> int:
        """Parameter count of the causal LM (embeddings, blocks, head)."""
        h, i, layers = self.hidden_size, self.intermediate_size, self.num_layers
        kv = self.num_kv_heads * self.head_dim
        if self.model_type == "gpt2":
            block = 4 * h * h + 2 * h * i + 9 * h + i
            embeddings = self.vocab_size * h + self.max_positions * h
        else:  # Llama-style: q, k, v, o; gate, up, down; two norms
            block = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
            embeddings = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embeddings + layers * block + h + head


#: The built-in base (ml.smollm2) before its folder is converted.
SMOLLM2_135M = ModelShape(
    model_type="llama",
    hidden_size=576,
    num_layers=30,
    vocab_size=49152,
    num_heads=9,
    num_kv_heads=3,
    intermediate_size=1536,
    tie_word_embeddings=True,
    max_positions=8192,
)


def model_shape(model_dir: str | Path) -> ModelShape:
    """Read ``config.json`` of a local Hugging Face folder. Raises
    ``FileNotFoundError`` without one and ``ValueError`` when a size is
    missing."""
    path = Path(model_dir) / "config.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    model_type = str(data.get("model_type", ""))

    def pick(*names: str, default: int | None = None) -> int:
        for name in names:
            if data.get(name) is not None:
                return int(data[name])
        if default is None:
            raise ValueError(f"{path}: none of {', '.join(names)} is set")
        return default

    hidden = pick("hidden_size", "n_embd", "d_model")
    heads = pick("num_attention_heads", "n_head")
    return ModelShape(
        model_type=model_type,
        hidden_size=hidden,
        num_layers=pick("num_hidden_layers", "n_layer"),
        vocab_size=pick("vocab_size"),
        num_heads=heads,
        num_kv_heads=pick("num_key_value_heads", default=heads),
        intermediate_size=pick("intermediate_size", "n_inner", default=4 * hidden),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", True)),
        max_positions=pick("max_position_embeddings", "n_positions", default=0),
    )


def trainable_parameters(shape: ModelShape, config: RunConfig) -> int:
    """Parameters the adapter trains (LoRA on the default targets, IA3
    vectors or virtual tokens), plus a reward model's score head."""
    peft = config.peft
    h, i, layers = shape.hidden_size, shape.intermediate_size, shape.num_layers
    kv = shape.num_kv_heads * shape.head_dim
    if peft.peft_type == "lora":
        if shape.model_type == "gpt2":
            per_layer = peft.r * ((h + 3 * h) + (h + h) + (h + i) + (i + h))
        else:
            per_layer = peft.r * (4 * h + 2 * (h + kv) + 3 * (h + i))
        trainable = layers * per_layer
    elif peft.peft_type == "ia3":
        trainable = layers * (2 * kv + i)
    else:
        trainable = peft.num_virtual_tokens * h
    if config.method == "reward":
        trainable += h
    return trainable


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part and their total; ``parts`` keeps the display order."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """One line for people: the total, then the parts."""
        inner = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.parts.items())
        return f"about {format_bytes(self.total)} ({inner})"

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "parts": dict(self.parts)}


def estimate_peak_memory(config: RunConfig, shape: ModelShape) -> MemoryEstimate:
    """Peak resident bytes of ``config`` on a model shaped ``shape`` (see the
    module docstring for what is counted)."""
    method = config.method
    batch = config.per_device_train_batch_size
    sequences = batch * (2 if method in PAIRED_METHODS else 1)
    length = config.max_length
    params = shape.parameters
    models = 1
    parts: dict[str, int] = {"runtime": RUNTIME_BYTES}
    if method in ("ppo", "rloo"):
        models += 1  # the merged reward model
    parts["base weights"] = models * params * FLOAT32
    if method == "ppo":
        parts["value model"] = params * TRAINABLE_BYTES
    parts["adapter + AdamW"] = trainable_parameters(shape, config) * TRAINABLE_BYTES
    tokens = sequences * length
    parts["activations"] = int(
        tokens * shape.hidden_size * shape.num_layers * ACTIVATION_BYTES
    )
    if method != "reward":  # a reward model's head has one output, not a vocabulary
        logits = tokens * shape.vocab_size * FLOAT32
        parts["logits"] = int(logits * LOGIT_COPIES)
    return MemoryEstimate(parts=parts)


def format_bytes(value: float) -> str:
    if value >= GIB:
        return f"{value / GIB:.1f} GB"
    return f"{value / MIB:.0f} MB"


# --- what the machine has ---------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_memory_dir() -> tuple[Path, int] | None:
    """(folder, version) of this process's memory cgroup, when mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            for folder in (
                CGROUP_ROOT / "memory" / rel.lstrip("/"),
                CGROUP_ROOT / "memory",
            ):
                if (folder / "memory.limit_in_bytes").exists():
                    return folder, 1
        if controllers == "":
            folder = CGROUP_ROOT / rel.lstrip("/")
            if (folder / "memory.max").exists():
                return folder, 2
    return None


def cgroup_memory_limit() -> int | None:
    """This process's cgroup memory limit in bytes; None when unlimited."""
    found = _cgroup_memory_dir()
    if found is None:
        return None
    folder, version = found
    limit = _read_int(
        folder / ("memory.max" if version == 2 else "memory.limit_in_bytes")
    )
    # cgroup v1 writes "no limit" as a page-rounded 2**63.
    if limit is None or limit >= 2**60:
        return None
    return limit


def cgroup_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this
    cgroup (``oom_kill`` of memory.events or memory.oom_control)."""
    found = _cgroup_memory_dir()
    if found is None:
        return None
    folder, version = found
    name = "memory.events" if version == 2 else "memory.oom_control"
    try:
        text = (folder / name).read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


def total_memory() -> int:
    """The most memory a worker here can ever have: the cgroup limit or RAM."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return min(ram, limit) if limit else ram


def available_memory() -> int:
    """Memory a new process can take now: ``MemAvailable``, capped by what is
    left under the cgroup limit."""
    available = total_memory()
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                available = min(available, int(line.split()[1]) * 1024)
                break
    except OSError:
        pass
    found = _cgroup_memory_dir()
    limit = cgroup_memory_limit()
    if found is not None and limit:
        folder, version = found
        used = _read_int(
            folder / ("memory.current" if version == 2 else "memory.usage_in_bytes")
        )
        if used is not None:
            available = min(available, max(limit - used, 0))
    return available


def suggest_smaller_batch(batch: int, accumulation: int) -> tuple[int, int] | None:
    """Half the micro-batch and twice the accumulation (the effective batch
    stays within one example); None when the micro-batch is already 1."""
    if batch <= 1:
        return None
    smaller = batch // 2
    return smaller, max(1, math.ceil(batch * accumulation / smaller))


def process_rss(pid: int) -> int | None:
    """Resident bytes of process ``pid`` (from /proc); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text(encoding="ascii").split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
