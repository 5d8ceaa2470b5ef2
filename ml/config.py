"""Run configurations: plain dataclasses, importable without torch.

Django validates job forms with these classes and stores ``to_dict()`` as JSON
on the job; the runner rebuilds them with ``from_dict()``. Every field carries
``metadata={"help": ...}`` and ``__post_init__`` raises ``ValueError`` whose
message starts with the offending field's name (``peft.r`` for nested ones).

Defaults target a non-expert on a CPU with LoRA: learning rates in the
5e-4..2e-3 range that LoRA needs (TRL's own 1e-6 defaults are for full
fine-tuning and barely move an adapter), a KL anchor of 0.2 for the online
methods, and short generations.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

PEFT_TYPES = ("lora", "ia3", "prompt_tuning")
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "robust",
    "sigmoid_norm",
    "apo_zero",
    "apo_down",
)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is list:
        return "list of " + _type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    return isinstance(value, tp)


def _check_types(obj: Any, prefix: str = "") -> None:
    """Raise ValueError when a field's value does not match its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        options = (
            typing.get_args(tp)
            if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
            else (tp,)
        )
        value = getattr(obj, f.name)
        if not any(_matches(value, option) for option in options):
            wanted = " or ".join(_type_name(o) for o in options)
            raise ValueError(f"{prefix}{f.name} must be {wanted}, got {value!r}")
        if float in options and isinstance(value, int) and not isinstance(value, bool):
            setattr(obj, f.name, float(value))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class PeftSettings:
    """Which parameter-efficient adapter to train, and its size."""

    peft_type: str = field(
        default="lora",
        metadata=_help(
            "Adapter kind: 'lora' (low-rank updates, the safe default), 'ia3' "
            "(learned rescaling vectors, tiny), or 'prompt_tuning' (learned "
            "virtual prompt tokens). Not every method supports every kind."
        ),
    )
    # LoRA
    r: int = field(
        default=16, metadata=_help("LoRA rank: size of each low-rank update.")
    )
    lora_alpha: int = field(
        default=32,
        metadata=_help("LoRA scaling numerator; the update is scaled by alpha / r."),
    )
    lora_dropout: float = field(
        default=0.05, metadata=_help("Dropout on the LoRA input, in [0, 1).")
    )
    # LoRA and IA3
    target_modules: list[str] | str | None = field(
        default=None,
        metadata=_help(
            "Module names to adapt (LoRA and IA3). None picks them from the base "
            "architecture: llama/mistral/qwen -> q,k,v,o,gate,up,down projections; "
            "gpt2 -> c_attn,c_proj,c_fc; bert -> query,key,value,dense; other "
            "architectures -> 'all-linear' for LoRA."
        ),
    )
    feedforward_modules: list[str] | None = field(
        default=None,
        metadata=_help(
            "IA3 only: which of the target modules are feed-forward layers (scaled "
            "on their input). None picks them from the architecture."
        ),
    )
    # Prompt tuning
    num_virtual_tokens: int = field(
        default=16,
        metadata=_help("Prompt tuning only: number of learned virtual tokens."),
    )

    def __post_init__(self) -> None:
        _check_types(self, "peft.")
        _require(
            self.peft_type in PEFT_TYPES,
            f"peft.peft_type must be one of {', '.join(PEFT_TYPES)}, got {self.peft_type!r}",
        )
        _require(self.r >= 1, "peft.r must be >= 1")
        _require(self.lora_alpha >= 1, "peft.lora_alpha must be >= 1")
        _require(0.0 <= self.lora_dropout < 1.0, "peft.lora_dropout must be in [0, 1)")
        _require(self.num_virtual_tokens >= 1, "peft.num_virtual_tokens must be >= 1")
        if isinstance(self.target_modules, str):
            _require(
                bool(self.target_modules.strip()),
                "peft.target_modules must not be empty",
            )
        elif self.target_modules is not None:
            _require(
                bool(self.target_modules)
                and all(m.strip() for m in self.target_modules),
                "peft.target_modules must be a non-empty list of module names",
            )
        if self.feedforward_modules is not None:
            _require(
                self.peft_type == "ia3",
                "peft.feedforward_modules is only used with peft_type 'ia3'",
            )
            if isinstance(self.target_modules, list):
                extra = set(self.feedforward_modules) - set(self.target_modules)
                _require(
                    not extra,
                    f"peft.feedforward_modules must be a subset of target_modules; "
                    f"not targeted: {sorted(extra)}",
                )


@dataclass
class RunConfig:
    """Fields shared by every method. Subclasses set method-specific defaults."""

    method: ClassVar[str] = ""
    #: PEFT types the method's trainer handles correctly (checked in tests).
    supported_peft_types: ClassVar[tuple[str, ...]] = PEFT_TYPES
    #: learning_rate used when the field is None, per PEFT type. Measured on
    #: tiny models: LoRA learns at 5e-4..2e-3, IA3 and prompt tuning need ~10x.
    default_learning_rates: ClassVar[dict[str, float]] = {
        "lora": 1e-3,
        "ia3": 1e-2,
        "prompt_tuning": 3e-2,
    }

    # Model
    base_model: str = field(
        default="",
        metadata=_help(
            "Base model: a local Hugging Face folder (the norm) or a hub id. The "
            "adapter is trained on top of it and the base weights stay frozen."
        ),
    )
    peft: PeftSettings = field(
        default_factory=PeftSettings, metadata=_help("Adapter kind and size.")
    )
    # Optimisation
    seed: int = field(
        default=0, metadata=_help("Random seed for data order and initialisation.")
    )
    learning_rate: float | None = field(
        default=None,
        metadata=_help(
            "Peak AdamW learning rate. None picks the method's default for the "
            "adapter kind (see default_learning_rates): adapters need far higher "
            "rates than full fine-tuning, and IA3 / prompt tuning higher still."
        ),
    )
    num_train_epochs: float = field(
        default=3.0,
        metadata=_help("Passes over train.jsonl (ignored when max_steps > 0)."),
    )
    max_steps: int = field(
        default=-1,
        metadata=_help("Stop after this many optimizer steps; -1 means use epochs."),
    )
    per_device_train_batch_size: int = field(
        default=8, metadata=_help("Examples per optimizer micro-batch.")
    )
    per_device_eval_batch_size: int = field(
        default=8, metadata=_help("Examples per evaluation batch.")
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("Micro-batches summed into one optimizer step.")
    )
    max_length: int = field(
        default=512,
        metadata=_help("Maximum tokens per sequence (prompt plus completion)."),
    )
    # Evaluation
    eval_each_epoch: bool = field(
        default=True,
        metadata=_help("Evaluate on val.jsonl after every epoch, when it exists."),
    )
    early_stopping_patience: int = field(
        default=2,
        metadata=_help(
            "Stop when the validation metric has not improved for this many "
            "evaluations, and keep the best adapter; 0 disables. Needs val.jsonl."
        ),
    )
    # Runtime
    torch_threads: int | None = field(
        default=None,
        metadata=_help("CPU threads for torch; None leaves torch's default."),
    )
    logging_steps: int = field(
        default=5, metadata=_help("Report training metrics every N steps.")
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help(
            "bf16 mixed precision. None: on for GPUs that support it, off on CPU."
        ),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help(
            "Trade compute for memory. Off by default: slower on small models and CPU."
        ),
    )

    def __post_init__(self) -> None:
        if isinstance(self.peft, dict):
            self.peft = _from_dict(PeftSettings, self.peft, "peft.")
        _check_types(self)
        _require(
            bool(self.base_model.strip()),
            "base_model must be a non-empty path or model id",
        )
        _require(
            self.peft.peft_type in self.supported_peft_types,
            f"peft.peft_type {self.peft.peft_type!r} is not supported by {self.method}; "
            f"use one of {', '.join(self.supported_peft_types)}",
        )
        _require(self.seed >= 0, "seed must be >= 0")
        if self.learning_rate is None:
            self.learning_rate = self.default_learning_rates[self.peft.peft_type]
        _require(self.learning_rate > 0, "learning_rate must be > 0")
        _require(self.learning_rate < 1, "learning_rate must be < 1")
        _require(self.num_train_epochs > 0, "num_train_epochs must be > 0")
        _require(
            self.max_steps == -1 or self.max_steps >= 1, "max_steps must be -1 or >= 1"
        )
        _require(
            self.per_device_train_batch_size >= 1,
            "per_device_train_batch_size must be >= 1",
        )
        _require(
            self.per_device_eval_batch_size >= 1,
            "per_device_eval_batch_size must be >= 1",
        )
        _require(
            self.gradient_accumulation_steps >= 1,
            "gradient_accumulation_steps must be >= 1",
        )
        _require(self.max_length >= 8, "max_length must be >= 8")
        _require(
            self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0"
        )
        _require(
            self.torch_threads is None or self.torch_threads >= 1,
            "torch_threads must be None or >= 1",
        )
        _require(self.logging_steps >= 1, "logging_steps must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (nested ``peft`` included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build and validate; unknown keys raise ValueError naming the key."""
        return _from_dict(cls, data, "")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{prefix}{unknown[0]} is not a known setting for {cls.__name__}"
        )
    kwargs = dict(data)
    if "peft" in kwargs and cls is not PeftSettings:
        kwargs["peft"] = _from_dict(PeftSettings, kwargs["peft"], "peft.")
    return cls(**kwargs)


@dataclass
class SFTRunConfig(RunConfig):
    """Supervised fine-tuning on prompt/completion pairs."""

    method: ClassVar[str] = "sft"

    completion_only_loss: bool = field(
        default=True,
        metadata=_help("Train only on completion tokens (not on the prompt)."),
    )


@dataclass
class RewardRunConfig(RunConfig):
    """Bradley-Terry reward model: a scalar head plus adapter on the base."""

    method: ClassVar[str] = "reward"
    # Prompt tuning feeds inputs_embeds to the classifier, which then cannot
    # find the last non-pad token and scores padding positions; a prompt-tuned
    # reward adapter also cannot be merged for use by ppo/rloo.
    supported_peft_types: ClassVar[tuple[str, ...]] = ("lora", "ia3")

    num_train_epochs: float = field(
        default=4.0,
        metadata=_help("Passes over train.jsonl; the fresh score head needs several."),
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata=_help(
            "Optional penalty pulling rewards toward zero mean (0.01 is typical); None disables."
        ),
    )


@dataclass
class DPORunConfig(RunConfig):
    """Direct preference optimisation against the frozen base (adapter off)."""

    method: ClassVar[str] = "dpo"
    default_learning_rates: ClassVar[dict[str, float]] = {
        "lora": 5e-4,
        "ia3": 1e-2,
        "prompt_tuning": 3e-2,
    }

    beta: float = field(
        default=0.1,
        metadata=_help(
            "Strength of the pull toward the base model; higher stays closer."
        ),
    )
    loss_type: str = field(
        default="sigmoid",
        metadata=_help(f"DPO loss variant: one of {', '.join(DPO_LOSS_TYPES)}."),
    )
    label_smoothing: float = field(
        default=0.0,
        metadata=_help("Assumed label noise in [0, 0.5) (conservative / robust DPO)."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.beta > 0, "beta must be > 0")
        _require(
            self.loss_type in DPO_LOSS_TYPES,
            f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)}, got {self.loss_type!r}",
        )
        _require(
            0.0 <= self.label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)"
        )


@dataclass
class _OnlineRunConfig(RunConfig):
    """Fields shared by PPO and RLOO: a policy adapter optimised against a reward model."""

    reward_adapter: str = field(
        default="",
        metadata=_help(
            "Folder of a reward adapter produced by a 'reward' run; it is merged "
            "into reward_base to score completions."
        ),
    )
    reward_base: str | None = field(
        default=None,
        metadata=_help("Base model of the reward adapter; None means base_model."),
    )
    num_train_epochs: float = field(
        default=1.0,
        metadata=_help("Passes over the prompts (ignored when max_steps > 0)."),
    )
    max_length: int = field(
        default=512, metadata=_help("Maximum prompt tokens plus generated tokens.")
    )
    temperature: float = field(
        default=1.0, metadata=_help("Sampling temperature for rollouts.")
    )
    early_stopping_patience: int = field(
        default=0,
        metadata=_help("Online methods: off by default; evaluation samples are noisy."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            bool(self.reward_adapter.strip()),
            "reward_adapter must be the folder of a trained reward adapter",
        )
        _require(
            self.reward_base is None or bool(self.reward_base.strip()),
            "reward_base must be None or a non-empty path or model id",
        )
        _require(self.temperature > 0, "temperature must be > 0")


@dataclass
class PPORunConfig(_OnlineRunConfig):
    """PPO (trl.experimental.ppo, trl 1.12): LoRA policy, full value head."""

    method: ClassVar[str] = "ppo"
    # Prompt tuning shifts the logits PPO aligns with generated tokens; TRL's
    # own PPO value-head code refuses prompt learning too.
    supported_peft_types: ClassVar[tuple[str, ...]] = ("lora", "ia3")
    default_learning_rates: ClassVar[dict[str, float]] = {"lora": 5e-4, "ia3": 1e-2}

    kl_coef: float = field(
        default=0.2,
        metadata=_help(
            "KL penalty toward the base model; keeps the policy from reward hacking."
        ),
    )
    response_length: int = field(
        default=64, metadata=_help("Tokens generated per rollout.")
    )
    num_ppo_epochs: int = field(
        default=2, metadata=_help("Optimisation passes over each batch of rollouts.")
    )
    num_mini_batches: int = field(
        default=1, metadata=_help("Mini-batches per rollout batch in each PPO epoch.")
    )
    total_episodes: int | None = field(
        default=None,
        metadata=_help(
            "Prompts to roll out in total; None means num_train_epochs x prompts."
        ),
    )
    temperature: float = field(
        default=0.7, metadata=_help("Sampling temperature for rollouts.")
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata=_help(
            "Subtracted from the score of rollouts that never emit EOS; None disables."
        ),
    )
    vf_coef: float = field(
        default=0.1, metadata=_help("Weight of the value-function loss.")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.kl_coef >= 0, "kl_coef must be >= 0")
        _require(self.response_length >= 1, "response_length must be >= 1")
        _require(
            self.max_length > self.response_length,
            "max_length must be greater than response_length",
        )
        _require(self.num_ppo_epochs >= 1, "num_ppo_epochs must be >= 1")
        _require(self.num_mini_batches >= 1, "num_mini_batches must be >= 1")
        _require(
            (self.per_device_train_batch_size * self.gradient_accumulation_steps)
            % self.num_mini_batches
            == 0,
            "num_mini_batches must divide per_device_train_batch_size x "
            "gradient_accumulation_steps",
        )
        _require(
            self.total_episodes is None or self.total_episodes >= 1,
            "total_episodes must be None or >= 1",
        )
        _require(
            self.missing_eos_penalty is None or self.missing_eos_penalty > 0,
            "missing_eos_penalty must be None or > 0",
        )
        _require(self.vf_coef >= 0, "vf_coef must be >= 0")


@dataclass
class RLOORunConfig(_OnlineRunConfig):
    """RLOO: several samples per prompt, leave-one-out baseline, reward model as judge."""

    method: ClassVar[str] = "rloo"

    per_device_train_batch_size: int = field(
        default=8,
        metadata=_help(
            "Completions (not prompts) per micro-batch; a multiple of num_generations."
        ),
    )
    per_device_eval_batch_size: int = field(
        default=8,
        metadata=_help(
            "Completions per evaluation batch; a multiple of num_generations."
        ),
    )
    beta: float = field(
        default=0.2,
        metadata=_help(
            "KL penalty toward the base model; >= 0.2 resists reward hacking."
        ),
    )
    num_generations: int = field(
        default=4, metadata=_help("Completions sampled per prompt (at least 2).")
    )
    max_completion_length: int = field(
        default=64, metadata=_help("Tokens generated per completion.")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.beta >= 0, "beta must be >= 0")
        _require(self.num_generations >= 2, "num_generations must be >= 2")
        _require(self.max_completion_length >= 1, "max_completion_length must be >= 1")
        _require(
            self.max_length > self.max_completion_length,
            "max_length must be greater than max_completion_length",
        )
        _require(
            (self.per_device_train_batch_size * self.gradient_accumulation_steps)
            % self.num_generations
            == 0,
            "per_device_train_batch_size x gradient_accumulation_steps must be a "
            "multiple of num_generations",
        )
        _require(
            self.per_device_eval_batch_size % self.num_generations == 0,
            "per_device_eval_batch_size must be a multiple of num_generations",
        )


CONFIG_CLASSES: dict[str, type[RunConfig]] = {
    "sft": SFTRunConfig,
    "reward": RewardRunConfig,
    "dpo": DPORunConfig,
    "ppo": PPORunConfig,
    "rloo": RLOORunConfig,
}
METHODS: tuple[str, ...] = tuple(CONFIG_CLASSES)


def config_class(method: str) -> type[RunConfig]:
    try:
        return CONFIG_CLASSES[method]
    except KeyError:
        raise ValueError(
            f"method must be one of {', '.join(METHODS)}, got {method!r}"
        ) from None


def config_from_dict(method: str, data: dict[str, Any]) -> RunConfig:
    """Validate ``data`` as the config of ``method``; ValueError names the bad field."""
    return config_class(method).from_dict(data)
