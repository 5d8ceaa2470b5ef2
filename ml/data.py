"""Readers for a run's ``data_dir`` (``train.jsonl``, ``val.jsonl``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from ml.result import RunDataError


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunDataError(
                    f"{path.name} line {lineno}: invalid JSON ({exc.msg})"
                ) from None
            if not isinstance(row, dict):
                raise RunDataError(f"{path.name} line {lineno}: expected a JSON object")
            rows.append(row)
    return rows


def read_split(
    data_dir: Path,
    split: str,
    *,
    required: Iterable[str],
    optional: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> list[dict[str, Any]] | None:
    """Rows of ``<split>.jsonl`` restricted to the known keys, or None if absent.

    Text keys hold either strings or message lists (``[{"role", "content"}]``)
    and must use one format across the whole file. ``numeric`` keys (such as
    ``margin``) are kept when every row has a number. Other keys are ignored.
    """
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        if split == "train":
            raise RunDataError(f"{path} does not exist")
        return None
    raw = read_jsonl(path)
    if not raw:
        if split == "train":
            raise RunDataError(f"{path.name} has no rows")
        return None
    required, optional, numeric = list(required), list(optional), list(numeric)
    text_keys = required + [k for k in optional if all(k in r for r in raw)]
    keep_numeric = [
        k
        for k in numeric
        if all(
            isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool)
            for r in raw
        )
    ]
    conversational: bool | None = None
    rows = []
    for lineno, row in enumerate(raw, 1):
        out: dict[str, Any] = {}
        for key in text_keys:
            if key not in row:
                raise RunDataError(f"{path.name} row {lineno}: missing key {key!r}")
            value = row[key]
            if isinstance(value, str):
                is_chat = False
            elif _is_messages(value):
                is_chat = True
            else:
                raise RunDataError(
                    f"{path.name} row {lineno}: {key!r} must be a string or a list of "
                    "{role, content} messages"
                )
            if conversational is None:
                conversational = is_chat
            elif conversational != is_chat:
                raise RunDataError(
                    f"{path.name} row {lineno}: mixes plain-text and message-list fields"
                )
            out[key] = value
        for key in keep_numeric:
            out[key] = float(row[key])
        rows.append(out)
    return rows


def read_train_val(
    data_dir: Path,
    *,
    required: Iterable[str],
    optional: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``train.jsonl`` rows (required) and ``val.jsonl`` rows (or None)."""
    keys = {
        "required": tuple(required),
        "optional": tuple(optional),
        "numeric": tuple(numeric),
    }
    train = read_split(data_dir, "train", **keys)
    if train is None:  # read_split raises for a missing train split
        raise RunDataError(f"{data_dir} has no training rows")
    return train, read_split(data_dir, "val", **keys)


def is_conversational(rows: list[dict[str, Any]]) -> bool:
    return any(isinstance(v, list) for v in rows[0].values())


def check_chat_template(
    tok: PreTrainedTokenizerBase, rows: list[dict[str, Any]], name: str
) -> None:
    if is_conversational(rows) and not tok.chat_template:
        raise RunDataError(
            f"The data is in message-list (conversational) form but the tokenizer of {name} "
            "has no chat template"
        )
