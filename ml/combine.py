"""Combining LoRA adapters of one base into a new adapter (PEFT's
``add_weighted_adapter``).

``combine_check`` reads only each parent's ``adapter_config.json``: the web
process calls it to refuse a combination before a job is queued, and it
imports neither torch nor PEFT. ``combine_adapters`` loads the base once,
every parent by name, adds the weighted combination and saves only that
adapter as an ordinary PEFT folder (``PeftModel.from_pretrained`` loads it)
with the tokenizer and ``arbiter_run.json``, like a trained adapter.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METHODS = (
    "linear",
    "cat",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
# PEFT sums the parents' A and B matrices position by position for these, so
# every parent needs the same rank; cat stacks them and the svd variants
# factorise the weighted sum, so any ranks do.
EQUAL_RANK_METHODS = frozenset(
    {"linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"}
)
# Methods that prune the task vectors: they need the share of values kept.
DENSITY_METHODS = frozenset(
    {
        "ties",
        "ties_svd",
        "dare_linear",
        "dare_ties",
        "dare_linear_svd",
        "dare_ties_svd",
        "magnitude_prune",
        "magnitude_prune_svd",
    }
)
COMBINED_NAME = "default"  # saved at the folder's root, as a trained adapter is

OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ParentAdapter:
    """What a parent's ``adapter_config.json`` says about it."""

    path: str
    weight: float
    peft_type: str
    task_type: str | None
    base_model: str | None
    ranks: tuple[int, ...]
    target_modules_type: str

    @property
    def rank(self) -> int:
        return max(self.ranks)


def _read_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ValueError(f"{adapter_dir} has no adapter_config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from exc


def _parent(adapter_dir: str | Path, weight: float) -> ParentAdapter:
    config = _read_config(adapter_dir)
    r = config.get("r")
    ranks = (int(r), *(int(v) for v in (config.get("rank_pattern") or {}).values()))
    targets = config.get("target_modules")
    return ParentAdapter(
        path=str(adapter_dir),
        weight=weight,
        peft_type=str(config.get("peft_type", "")).upper(),
        task_type=config.get("task_type"),
        base_model=config.get("base_model_name_or_path"),
        ranks=ranks if r is not None else (),
        target_modules_type="pattern" if isinstance(targets, str) else "list",
    )


def combine_check(
    *,
    adapter_dirs: Sequence[str | Path],
    weights: Sequence[float],
    method: str,
    density: float | None = None,
) -> list[ParentAdapter]:
    """The parents if PEFT can combine them with ``method``; otherwise a
    ``ValueError`` naming the problem. Reads only ``adapter_config.json``."""
    if len(adapter_dirs) < 2:
        raise ValueError("Combining needs at least two adapters.")
    if len(weights) != len(adapter_dirs):
        raise ValueError(
            f"{len(weights)} weights for {len(adapter_dirs)} adapters: give one "
            "weight per adapter."
        )
    if any(not math.isfinite(w) for w in weights):
        raise ValueError("Every weight must be a finite number.")
    if method not in METHODS:
        raise ValueError(
            f"Unknown combination method {method!r}; choose one of {', '.join(METHODS)}."
        )
    if method in DENSITY_METHODS:
        if density is None or not 0 < density <= 1:
            raise ValueError(
                f"The {method} method prunes: give a density in (0, 1] (the share "
                f"of values kept); got {density}."
            )
    elif density is not None:
        raise ValueError(
            f"The {method} method does not prune, so it takes no density; "
            f"density applies to {', '.join(sorted(DENSITY_METHODS))}."
        )
    parents = [_parent(d, float(w)) for d, w in zip(adapter_dirs, weights, strict=True)]
    not_lora = [p for p in parents if p.peft_type != "LORA"]
    if not_lora:
        kinds = ", ".join(sorted({p.peft_type or "unknown" for p in not_lora}))
        raise ValueError(
            f"Only LoRA adapters combine; {len(not_lora)} of these are {kinds}."
        )
    bases = {p.base_model for p in parents}
    if len(bases) > 1:
        raise ValueError(
            "The adapters were trained on different base models ("
            + ", ".join(sorted(str(b) for b in bases))
            + "); only adapters of one base combine."
        )
    task_types = {p.task_type for p in parents}
    if len(task_types) > 1:
        raise ValueError(
            "The adapters have different task types ("
            + ", ".join(sorted(str(t) for t in task_types))
            + "): a policy and a reward model cannot be combined."
        )
    if len({p.target_modules_type for p in parents}) > 1:
        raise ValueError(
            "Some adapters name their target modules as a list and others as a "
            "pattern; PEFT cannot combine such a mix."
        )
    if method in EQUAL_RANK_METHODS and len({p.ranks for p in parents}) > 1:
        ranks = ", ".join(str(p.rank) for p in parents)
        raise ValueError(
            f"The {method} method needs adapters of equal rank, and these have ranks "
            f"{ranks}; use cat or an svd method (svd, ties_svd, dare_linear_svd, "
            "dare_ties_svd, magnitude_prune_svd), which take any ranks."
        )
    return parents


def combine_adapters(
    *,
    base_dir: str | Path,
    adapters: Sequence[tuple[str | Path, float]],
    method: str,
    density: float | None = None,
    output_dir: str | Path,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """Write the weighted combination of ``adapters`` (path, weight) over
    ``base_dir`` into ``output_dir`` as a plain PEFT adapter folder.

    Returns what was made: method, density, rank, peft and task type and the
    parents with their weights (also written to ``arbiter_run.json``).
    Raises ``ValueError`` when ``combine_check`` refuses the combination.
    """
    emit = on_event or (lambda kind, payload: None)
    parents = combine_check(
        adapter_dirs=[path for path, _ in adapters],
        weights=[weight for _, weight in adapters],
        method=method,
        density=density,
    )
    emit("status", {"phase": "loading"})
    from peft import PeftModel

    from ml.adapters import RUN_INFO_FILE
    from ml.loading import load_causal_lm, load_sequence_classifier, load_tokenizer
    from ml.runtime import library_versions

    tokenizer = load_tokenizer(str(base_dir))
    if parents[0].task_type == "SEQ_CLS":
        base = load_sequence_classifier(
            str(base_dir), pad_token_id=tokenizer.pad_token_id
        )
    else:
        base = load_causal_lm(str(base_dir))
    names = [f"parent{i}" for i in range(len(parents))]
    model = PeftModel.from_pretrained(base, parents[0].path, adapter_name=names[0])
    for name, parent in zip(names[1:], parents[1:], strict=True):
        model.load_adapter(parent.path, adapter_name=name)
    emit("status", {"phase": "combining"})
    model.add_weighted_adapter(
        adapters=names,
        weights=[p.weight for p in parents],
        adapter_name=COMBINED_NAME,
        combination_type=method,
        density=density,
    )
    model.set_adapter(COMBINED_NAME)
    for name in names:
        model.delete_adapter(name)
    emit("status", {"phase": "saving"})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    combined = model.peft_config[COMBINED_NAME]
    info: dict[str, Any] = {
        "method": "combine",
        "combination": {"method": method, "density": density},
        "parents": [
            {"path": p.path, "weight": p.weight, "rank": p.rank} for p in parents
        ],
        "rank": combined.r,
        "peft_type": "LORA",
        "task_type": parents[0].task_type,
        "config": {"base_model": str(base_dir)},
        "metrics": {},
        "versions": library_versions(),
    }
    tmp = out / (RUN_INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(out / RUN_INFO_FILE)
    logger.info(
        "ml.combine.saved method=%s parents=%s rank=%s",
        method,
        len(parents),
        combined.r,
    )
    return info
