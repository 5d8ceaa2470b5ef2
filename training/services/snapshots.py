"""Dataset snapshots: freeze which preferences a run uses and write the files
the runners read, so a run is reproducible from (snapshot, config)."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from core.artifacts import artifact_store
from labeling.models import Campaign, Preference, Prompt
from labeling.selectors import TIE_POLICIES, preference_export_rows
from training.exceptions import NoTrainingData, TrainingError
from training.models import DatasetSnapshot

FILTER_KEYS = {
    "exclude_annotator_ids",
    "min_abs_strength",
    "min_reliability",
    "exclude_position_biased",
    "weighting",
    "include_unacceptable",
}
WEIGHTINGS = ("none", "reliability", "strength", "reliability_strength")
# TRL's preference trainers take no per-example weight, so a weight is
# applied by repeating a row: weight 1.0 → REPEAT_MAX copies, at least one.
REPEAT_MAX = 3
SPLITS = ("train", "val")


def _validate_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(filters) - FILTER_KEYS
    if unknown:
        raise TrainingError(
            f"filters: unknown key {sorted(unknown)[0]!r}; expected {sorted(FILTER_KEYS)}."
        )
    clean: dict[str, Any] = {}
    ids = filters.get("exclude_annotator_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise TrainingError("filters.exclude_annotator_ids must be a list of user ids.")
    if ids:
        clean["exclude_annotator_ids"] = sorted(set(ids))
    strength = filters.get("min_abs_strength")
    if strength is not None:
        if not isinstance(strength, int) or not 0 <= strength <= 3:
            raise TrainingError(
                "filters.min_abs_strength must be an integer from 0 to 3."
            )
        clean["min_abs_strength"] = strength
    reliability = filters.get("min_reliability")
    if reliability is not None:
        if not isinstance(reliability, int | float) or not 0 <= reliability <= 1:
            raise TrainingError("filters.min_reliability must be a number from 0 to 1.")
        clean["min_reliability"] = float(reliability)
    if filters.get("exclude_position_biased"):
        clean["exclude_position_biased"] = True
    weighting = filters.get("weighting", "none")
    if weighting not in WEIGHTINGS:
        raise TrainingError(
            f"filters.weighting must be one of {', '.join(WEIGHTINGS)}."
        )
    if weighting != "none":
        clean["weighting"] = weighting
    # Rankings flagged "none acceptable" (and their implied pairs) are left
    # out of training unless asked for.
    if filters.get("include_unacceptable"):
        clean["include_unacceptable"] = True
    return clean


def _quality_plan(
    campaign: Campaign, clean: dict[str, Any]
) -> tuple[set[int], dict[int, float]]:
    """Annotators to drop and the reliability weight of the rest."""
    from labeling.selectors.quality import annotator_reliability, position_bias

    reliability = annotator_reliability(campaign=campaign)
    dropped = set(clean.get("exclude_annotator_ids", []))
    if "min_reliability" in clean:
        dropped |= {a for a, r in reliability.items() if r < clean["min_reliability"]}
    if clean.get("exclude_position_biased"):
        dropped |= {
            a for a, b in position_bias(campaign=campaign).items() if b["flagged"]
        }
    return dropped, reliability


def _copies(row: dict[str, Any], weighting: str, reliability: dict[int, float]) -> int:
    weight = 1.0
    if weighting in ("reliability", "reliability_strength"):
        weight *= reliability.get(row["annotator_id"], 1.0)
    if (
        weighting in ("strength", "reliability_strength")
        and row["strength"] is not None
    ):
        weight *= (1 + row["strength"]) / 4  # |strength| 0..3 → 0.25..1
    return max(1, round(weight * REPEAT_MAX))


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]], digest: Any) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
            fh.write(line)
            digest.update(line.encode())
            count += 1
    return count


def _chat_prompt(prompt: Any) -> list[dict[str, str]]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _as_chat(row: dict[str, Any]) -> dict[str, Any]:
    def turn(value: Any) -> Any:
        return (
            value
            if isinstance(value, list)
            else [{"role": "assistant", "content": value}]
        )

    return {
        **row,
        "prompt": _chat_prompt(row["prompt"]),
        "chosen": turn(row["chosen"]),
        "rejected": turn(row["rejected"]),
    }


@transaction.atomic
def dataset_snapshot_create(
    *,
    campaign: Campaign,
    created_by: AbstractBaseUser | None = None,
    tie_policy: str = "skip",
    filters: Mapping[str, Any] | None = None,
) -> DatasetSnapshot:
    """Write ``preference/``, ``sft/`` and ``prompts/`` (``train.jsonl`` and
    ``val.jsonl`` each) for ``campaign``'s labels up to now and record them.

    Splits follow each prompt's split; golden prompts are excluded. Each
    label is read at its latest version, and from now on it can no longer be
    changed (``Campaign.snapshot_preference_id``). Raises
    ``NoTrainingData`` when there is no training preference at all.
    """
    if tie_policy not in TIE_POLICIES:
        raise TrainingError(f"tie_policy must be one of {', '.join(TIE_POLICIES)}.")
    clean = _validate_filters(filters or {})
    # Serialises with label changes (labeling.services.queue): a change either
    # lands before this snapshot reads the labels or is refused after it, so
    # a snapshot holds each label's latest version and that label is final.
    # No-key, so new leases and labels referencing the campaign never wait.
    list(
        Campaign.objects.select_for_update(no_key=True)
        .filter(pk=campaign.pk)
        .values_list("pk", flat=True)
    )
    dropped, reliability = _quality_plan(campaign, clean)
    weighting = clean.get("weighting", "none")
    last_id = (
        Preference.objects.filter(comparison__campaign=campaign).aggregate(m=Max("id"))[
            "m"
        ]
        or 0
    )
    relative = Path("snapshots") / f"campaign-{campaign.pk}" / uuid.uuid4().hex
    store = artifact_store()
    tmp = Path(settings.STORAGE_ROOT) / "tmp" / f"snapshot-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    counts: dict[str, dict[str, int]] = {"preference": {}, "sft": {}, "prompts": {}}
    try:
        for kind in counts:
            (tmp / kind).mkdir(parents=True)
        rows_by_split = {
            split: [
                r
                for r in preference_export_rows(
                    campaign=campaign,
                    tie_policy=tie_policy,
                    splits=[split],
                    exclude_annotator_ids=sorted(dropped),
                    include_unacceptable=clean.get("include_unacceptable", False),
                )
                if r["preference_id"] <= last_id
                and (r["strength"] or 0) >= clean.get("min_abs_strength", 0)
            ]
            for split in SPLITS
        }
        prompts_by_split = {
            split: [
                p.content
                for p in Prompt.objects.filter(
                    campaign=campaign, split=split, is_golden=False
                ).order_by("id")
            ]
            for split in SPLITS
        }
        # A runner reads one format per file: when a campaign mixes chat and
        # plain-text prompts, every row becomes a conversation.
        chat = any(
            isinstance(r["prompt"], list)
            for rows in rows_by_split.values()
            for r in rows
        ) or any(
            isinstance(p, list)
            for prompts in prompts_by_split.values()
            for p in prompts
        )
        for split in SPLITS:
            rows = [_as_chat(r) if chat else r for r in rows_by_split[split]]
            weighted = (
                {
                    "prompt": r["prompt"],
                    "chosen": r["chosen"],
                    "rejected": r["rejected"],
                }
                for r in rows
                for _ in range(
                    _copies(r, weighting, reliability) if weighting != "none" else 1
                )
            )
            counts["preference"][split] = _write_jsonl(
                tmp / "preference" / f"{split}.jsonl", weighted, digest
            )
            seen: set[str] = set()
            sft_rows = []
            for r in rows:
                if r["tie"]:
                    continue
                key = json.dumps([r["prompt"], r["chosen"]], sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    sft_rows.append({"prompt": r["prompt"], "completion": r["chosen"]})
            counts["sft"][split] = _write_jsonl(
                tmp / "sft" / f"{split}.jsonl", sft_rows, digest
            )
            counts["prompts"][split] = _write_jsonl(
                tmp / "prompts" / f"{split}.jsonl",
                (
                    {"prompt": _chat_prompt(p) if chat else p}
                    for p in prompts_by_split[split]
                ),
                digest,
            )
        if counts["preference"]["train"] == 0:
            raise NoTrainingData(
                "This campaign has no training preferences yet (golden prompts are never used)."
            )
        # Object storage: the files are uploaded here, before the row exists.
        key = store.stage(tmp, name=str(relative))
        if dropped:
            clean["dropped_annotator_ids"] = sorted(dropped)
        snapshot = DatasetSnapshot(
            campaign=campaign,
            created_by=created_by,
            tie_policy=tie_policy,
            filters=clean,
            last_preference_id=last_id,
            counts=counts,
            content_hash=digest.hexdigest(),
            storage_path=key,
        )
        snapshot.full_clean()
        snapshot.save()
        Campaign.objects.filter(
            pk=campaign.pk, snapshot_preference_id__lt=last_id
        ).update(snapshot_preference_id=last_id)
        # Last step, so a failure above leaves no folder; a rollback after it
        # leaves an unreferenced folder, never a row without files.
        store.commit(tmp, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return snapshot


def snapshot_data_dir(snapshot: DatasetSnapshot, method: str) -> Path:
    kind = {
        "sft": "sft",
        "reward": "preference",
        "dpo": "preference",
        "ppo": "prompts",
        "rloo": "prompts",
    }[method]
    # With object storage this fetches the snapshot into the local cache:
    # the gpu worker calls it before starting the runner.
    return artifact_store().path(snapshot.storage_path) / kind
