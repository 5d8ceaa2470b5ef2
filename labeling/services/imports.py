"""Bulk import of prompts, completions and pairs from JSONL.

One JSON object per line::

    {"prompt": "text" | [{"role": "user", "content": "..."}, ...],
     "completions": ["text", {"text": "...", "source": "writer-a", "metadata": {}}, ...],
     "golden": false, "priority": 0, "metadata": {}}

Every two completions of a line become a comparison (all pairs, at most
``MAX_COMPLETIONS_PER_LINE`` completions). A line without completions adds a
prompt to the campaign's pool (for generation). Imports are atomic: every
line is validated before anything is written, and the first bad line is
reported with its number and field. Importing the same file twice adds
nothing the second time.

In a rank campaign (``Campaign.mode == "rank"``) a line's completions (3 to
``MAX_RANKED_PER_LINE``) become one ranked comparison instead, with its
implied pairs (``labeling.services.ranking``); an optional ``"gold_ranks":
[2, 1, 3, ...]`` (aligned with the completions, 1 = best, equal = tie) makes
it a gold comparison with that known ranking.

Two completions of one line with byte-identical text (from different
sources) are refused with the line and field: annotators could only guess
between them, so such a pair is never created (generation rounds skip them
too).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from labeling.exceptions import ImportFailed
from labeling.models import (
    Campaign,
    Comparison,
    ComparisonItem,
    Completion,
    Prompt,
    content_hash,
)
from labeling.rendering import completion_html
from labeling.services.ranking import ranked_comparisons_bulk_create, ranked_gold_set
from labeling.services.splits import split_for_hash

logger = logging.getLogger(__name__)

MAX_COMPLETIONS_PER_LINE = 8
MIN_RANKED_PER_LINE = 3
MAX_RANKED_PER_LINE = 9
CHAT_ROLES = {"system", "user", "assistant"}
LINE_KEYS = {"prompt", "completions", "golden", "priority", "metadata"}
RANK_LINE_KEYS = LINE_KEYS | {"gold_ranks"}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class ParsedCompletion:
    text: str
    source: str
    metadata: dict[str, Any]


@dataclass
class ParsedLine:
    number: int
    prompt: str | list[dict[str, str]]
    completions: list[ParsedCompletion]
    golden: bool
    priority: int
    metadata: dict[str, Any]
    # Rank campaigns: the known ranking of a gold line, aligned with completions.
    gold_ranks: list[int] | None = None


@dataclass
class ImportResult:
    lines: int = 0
    prompts_created: int = 0
    completions_created: int = 0
    comparisons_created: int = 0
    duplicates_skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "prompts_created": self.prompts_created,
            "completions_created": self.completions_created,
            "comparisons_created": self.comparisons_created,
            "duplicates_skipped": self.duplicates_skipped,
        }


def _text(value: Any, *, line: int, field_name: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ImportFailed(line=line, field=field_name, message="must be a string")
    if not value.strip() and not allow_empty:
        raise ImportFailed(line=line, field=field_name, message="must not be empty")
    limit = settings.ARBITER_MAX_TEXT_CHARS
    if len(value) > limit:
        raise ImportFailed(
            line=line,
            field=field_name,
            message=f"is {len(value)} characters; the limit is {limit}",
        )
    if "\x00" in value:
        raise ImportFailed(
            line=line, field=field_name, message="contains a NUL character"
        )
    return value


def _prompt(value: Any, *, line: int) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        return _text(value, line=line, field_name="prompt")
    if not isinstance(value, list) or not value:
        raise ImportFailed(
            line=line,
            field="prompt",
            message="must be a string or a non-empty list of messages",
        )
    messages = []
    for i, message in enumerate(value):
        name = f"prompt[{i}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ImportFailed(
                line=line, field=name, message='must be {"role": ..., "content": ...}'
            )
        if message["role"] not in CHAT_ROLES:
            raise ImportFailed(
                line=line,
                field=f"{name}.role",
                message=f"must be one of {sorted(CHAT_ROLES)}",
            )
        messages.append(
            {
                "role": message["role"],
                "content": _text(
                    message["content"], line=line, field_name=f"{name}.content"
                ),
            }
        )
    if messages[-1]["role"] != "user":
        raise ImportFailed(
            line=line,
            field="prompt",
            message="the last message must come from the user",
        )
    return messages


def _refuse_constant(name: str) -> Any:
    # json.loads reads NaN and Infinity, which PostgreSQL's jsonb refuses.
    raise ValueError(f"{name} is not a JSON number")


def _has_nul(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds U+0000, which jsonb
    cannot store. A loop, not recursion: json.loads accepts nesting deeper
    than Python's recursion limit would allow here."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_object(value: Any, *, line: int, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ImportFailed(line=line, field=field_name, message="must be an object")
    if _has_nul(value):
        raise ImportFailed(
            line=line, field=field_name, message="contains a NUL character"
        )
    return value


def parse_line(raw: str, *, number: int, mode: str = "pair") -> ParsedLine | None:
    if not raw.strip():
        return None
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ImportFailed(
            line=number,
            field="(line)",
            message=f"not valid JSON ({exc.msg} at column {exc.colno})",
        ) from None
    except ValueError as exc:
        raise ImportFailed(
            line=number, field="(line)", message=f"not valid JSON ({exc})"
        ) from None
    except RecursionError:
        raise ImportFailed(
            line=number, field="(line)", message="is nested too deeply"
        ) from None
    if not isinstance(data, dict):
        raise ImportFailed(line=number, field="(line)", message="must be a JSON object")
    keys = RANK_LINE_KEYS if mode == "rank" else LINE_KEYS
    unknown = set(data) - keys
    if unknown:
        raise ImportFailed(
            line=number,
            field=sorted(unknown)[0],
            message=f"unknown field; expected {sorted(keys)}",
        )
    if "prompt" not in data:
        raise ImportFailed(line=number, field="prompt", message="is required")
    prompt = _prompt(data["prompt"], line=number)
    raw_completions = data.get("completions", [])
    if not isinstance(raw_completions, list):
        raise ImportFailed(line=number, field="completions", message="must be a list")
    if mode == "rank" and (
        0 < len(raw_completions) < MIN_RANKED_PER_LINE
        or len(raw_completions) > MAX_RANKED_PER_LINE
    ):
        raise ImportFailed(
            line=number,
            field="completions",
            message=f"a ranking needs {MIN_RANKED_PER_LINE} to "
            f"{MAX_RANKED_PER_LINE} completions (or none); this line has "
            f"{len(raw_completions)}",
        )
    if len(raw_completions) == 1:
        raise ImportFailed(
            line=number,
            field="completions",
            message="needs at least two completions to form a pair (or none)",
        )
    if mode != "rank" and len(raw_completions) > MAX_COMPLETIONS_PER_LINE:
        raise ImportFailed(
            line=number,
            field="completions",
            message=f"at most {MAX_COMPLETIONS_PER_LINE} per line",
        )
    completions = []
    for i, item in enumerate(raw_completions):
        name = f"completions[{i}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise ImportFailed(
                line=number,
                field=name,
                message="must be a string or an object with 'text'",
            )
        extra = set(item) - {"text", "source", "metadata"}
        if extra:
            raise ImportFailed(
                line=number, field=f"{name}.{sorted(extra)[0]}", message="unknown field"
            )
        source = item.get("source", "")
        if not isinstance(source, str) or len(source) > 200:
            raise ImportFailed(
                line=number,
                field=f"{name}.source",
                message="must be a string of at most 200 characters",
            )
        if "\x00" in source:
            raise ImportFailed(
                line=number,
                field=f"{name}.source",
                message="contains a NUL character",
            )
        completions.append(
            ParsedCompletion(
                text=_text(item.get("text"), line=number, field_name=f"{name}.text"),
                source=source,
                metadata=_json_object(
                    item.get("metadata", {}), line=number, field_name=f"{name}.metadata"
                ),
            )
        )
    if len({(c.text, c.source) for c in completions}) != len(completions):
        raise ImportFailed(
            line=number,
            field="completions",
            message="contains the same completion twice",
        )
    first_with_text: dict[str, int] = {}
    for index, item in enumerate(completions):
        if item.text in first_with_text:
            raise ImportFailed(
                line=number,
                field=f"completions[{index}].text",
                message=(
                    f"is byte-identical to completions[{first_with_text[item.text]}]"
                    " (from another source); identical answers are never shown as"
                    " a pair, so keep one of them"
                ),
            )
        first_with_text[item.text] = index
    golden = data.get("golden", False)
    if not isinstance(golden, bool):
        raise ImportFailed(line=number, field="golden", message="must be true or false")
    priority = data.get("priority", 0)
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -1_000_000 <= priority <= 1_000_000
    ):
        raise ImportFailed(
            line=number,
            field="priority",
            message="must be an integer between -1000000 and 1000000",
        )
    metadata = _json_object(
        data.get("metadata", {}), line=number, field_name="metadata"
    )
    gold_ranks = data.get("gold_ranks")
    if gold_ranks is not None:
        k = len(completions)
        if (
            not isinstance(gold_ranks, list)
            or len(gold_ranks) != k
            or k == 0
            or any(
                isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= k
                for r in gold_ranks
            )
        ):
            raise ImportFailed(
                line=number,
                field="gold_ranks",
                message=f"must be one rank from 1 (best) to {k} per completion",
            )
    return ParsedLine(
        number, prompt, completions, golden, priority, metadata, gold_ranks
    )


def _decode(lines: Iterable[bytes | str]) -> Iterable[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        if number == 1 and isinstance(raw, bytes) and raw[:2] in UTF16_BOMS:
            raise ImportFailed(
                line=1,
                field="(file)",
                message="is UTF-16 text; save it as UTF-8 and import it again",
            )
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ImportFailed(
                    line=number, field="(line)", message="is not valid UTF-8"
                ) from None
        if number == 1:
            # Editors on Windows save UTF-8 with a byte-order mark.
            raw = raw.removeprefix("\ufeff")
        yield number, raw


@transaction.atomic
def campaign_import_jsonl(
    *,
    campaign: Campaign,
    lines: Iterable[bytes | str],
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import ``lines`` into ``campaign``: all of them, or nothing.

    Raises ``ImportFailed`` naming the first bad line and field.
    """
    parsed: list[ParsedLine] = []
    for number, raw in _decode(lines):
        line = parse_line(raw, number=number, mode=campaign.mode)
        if line is not None:
            parsed.append(line)
        if on_progress is not None and number % 1000 == 0:
            on_progress(number)
    if not parsed:
        raise ImportFailed(line=1, field="(file)", message="contains no JSON lines")

    result = ImportResult(lines=len(parsed))
    prompts: dict[str, Prompt] = {
        p.content_hash: p
        for p in Prompt.objects.filter(campaign=campaign).filter(
            content_hash__in=[content_hash(line.prompt) for line in parsed]
        )
    }
    new_prompts: list[Prompt] = []
    for line in parsed:
        digest = content_hash(line.prompt)
        if digest in prompts:
            continue
        prompt = Prompt(
            campaign=campaign,
            text=line.prompt if isinstance(line.prompt, str) else "",
            messages=line.prompt if isinstance(line.prompt, list) else None,
            content_hash=digest,
            split=split_for_hash(digest),
            is_golden=line.golden,
            metadata=line.metadata,
        )
        prompts[digest] = prompt
        new_prompts.append(prompt)
    Prompt.objects.bulk_create(new_prompts, batch_size=2000)
    result.prompts_created = len(new_prompts)

    prompt_ids = [p.pk for p in prompts.values()]
    completions: dict[tuple[int, str, str], Completion] = {
        (c.prompt_id, c.content_hash, c.source_label): c
        for c in Completion.objects.filter(prompt_id__in=prompt_ids)
    }
    new_completions: list[Completion] = []
    line_completions: list[list[Completion]] = []
    for line in parsed:
        prompt = prompts[content_hash(line.prompt)]
        row = []
        for item in line.completions:
            key = (prompt.pk, content_hash(item.text), item.source)
            if key not in completions:
                completion = Completion(
                    prompt=prompt,
                    text=item.text,
                    html=completion_html(item.text),
                    content_hash=key[1],
                    source_label=item.source,
                    metadata=item.metadata,
                )
                completions[key] = completion
                new_completions.append(completion)
            row.append(completions[key])
        line_completions.append(row)
    Completion.objects.bulk_create(new_completions, batch_size=2000)
    result.completions_created = len(new_completions)

    if campaign.mode == Campaign.Mode.RANK:
        _create_ranked(campaign, parsed, line_completions, prompt_ids, result)
        logger.info(
            "labeling.import.done campaign=%s %s", campaign.pk, result.as_dict()
        )
        return result

    existing_pairs = set(
        Comparison.objects.filter(
            campaign=campaign, prompt_id__in=prompt_ids
        ).values_list("completion_a_id", "completion_b_id")
    )
    new_comparisons = []
    for line, row in zip(parsed, line_completions, strict=True):
        for first, second in itertools.combinations(row, 2):
            pair = (first.pk, second.pk)
            if pair in existing_pairs or pair[::-1] in existing_pairs:
                result.duplicates_skipped += 1
                continue
            existing_pairs.add(pair)
            new_comparisons.append(
                Comparison(
                    campaign=campaign,
                    prompt=first.prompt,
                    completion_a=first,
                    completion_b=second,
                    priority=line.priority,
                )
            )
    Comparison.objects.bulk_create(new_comparisons, batch_size=2000)
    result.comparisons_created = len(new_comparisons)
    logger.info("labeling.import.done campaign=%s %s", campaign.pk, result.as_dict())
    return result


def _create_ranked(
    campaign: Campaign,
    parsed: list[ParsedLine],
    line_completions: list[list[Completion]],
    prompt_ids: list[int],
    result: ImportResult,
) -> None:
    """A rank campaign's lines: one ranked comparison per line with
    completions (a set of completions already ranked is skipped)."""
    existing: dict[int, set[int]] = {}
    for comparison_id, completion_id in ComparisonItem.objects.filter(
        comparison__campaign=campaign, comparison__prompt_id__in=prompt_ids
    ).values_list("comparison_id", "completion_id"):
        existing.setdefault(comparison_id, set()).add(completion_id)
    seen = {frozenset(ids) for ids in existing.values()}
    rows = []
    gold = []
    for line, row in zip(parsed, line_completions, strict=True):
        if not row:
            continue
        key = frozenset(c.pk for c in row)
        if key in seen:
            result.duplicates_skipped += 1
            continue
        seen.add(key)
        rows.append((row[0].prompt, row, line.priority))
        gold.append(line.gold_ranks)
    created = ranked_comparisons_bulk_create(campaign=campaign, rows=rows)
    for comparison, ranks in zip(created, gold, strict=True):
        if ranks is not None:
            ranked_gold_set(comparison=comparison, ranks=ranks)
    result.comparisons_created = len(created)
