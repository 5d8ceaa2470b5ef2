from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from labeling.exceptions import LabelingError
from labeling.models import Campaign

EDITABLE_FIELDS = (
    "name",
    "description",
    "guidelines",
    "criteria",
    "overlap_k",
    "lease_ttl_seconds",
    "label_edit_minutes",
    "gold_rate",
    "status",
    "mode",
)


def _criteria_error(message: str) -> LabelingError:
    # ``field`` lets the HTML form put the message under the criteria input.
    return LabelingError(message, extra={"field": "criteria"})


def _validate_criteria(criteria: Any) -> list[dict[str, str]]:
    if not isinstance(criteria, list):
        raise _criteria_error("criteria must be a list.")
    names = set()
    for item in criteria:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not item["name"].strip()
        ):
            raise _criteria_error('criteria: each item needs a "name".')
        if item["name"] in names:
            raise _criteria_error(f"criteria: {item['name']!r} appears twice.")
        names.add(item["name"])
    cleaned = [
        {"name": c["name"].strip(), "description": str(c.get("description", ""))}
        for c in criteria
    ]
    # PostgreSQL's jsonb cannot store U+0000; refuse it here instead of a 500.
    if any("\x00" in c["name"] + c["description"] for c in cleaned):
        raise _criteria_error(
            "criteria: a name or description contains a NUL character."
        )
    return cleaned


@transaction.atomic
def campaign_create(
    *,
    name: str,
    created_by: AbstractBaseUser | None,
    description: str = "",
    guidelines: str = "",
    criteria: Sequence[Mapping[str, str]] = (),
    overlap_k: int = 1,
    lease_ttl_seconds: int = 600,
    gold_rate: float = 0.0,
    status: str = Campaign.Status.ACTIVE,
    annotator_ids: Sequence[int] = (),
    mode: str = Campaign.Mode.PAIR,
) -> Campaign:
    """Create a campaign. Raises ``ValidationError`` keyed by field (a taken
    name, a value out of range) and ``LabelingError`` for bad criteria.
    ``mode`` is "pair" (A/B) or "rank" (3 to 9 completions ordered)."""
    campaign = Campaign(
        name=name,
        mode=mode,
        status=status,
        description=description,
        guidelines=guidelines,
        criteria=_validate_criteria(list(criteria)),
        overlap_k=overlap_k,
        lease_ttl_seconds=lease_ttl_seconds,
        gold_rate=gold_rate,
        created_by=created_by,
    )
    campaign.full_clean()
    campaign.save()
    if annotator_ids:
        campaign.annotators.set(annotator_ids)
    return campaign


@transaction.atomic
def campaign_update(*, campaign: Campaign, data: Mapping[str, Any]) -> Campaign:
    """Update the editable fields present in ``data``. Lowering ``overlap_k``
    does not close pairs already labeled more often."""
    fields = [f for f in EDITABLE_FIELDS if f in data]
    if (
        "mode" in fields
        and data["mode"] != campaign.mode
        and campaign.comparisons.exists()
    ):
        # Its comparisons (pairs or ranked) were made for the current mode.
        raise LabelingError(
            "The mode of a campaign cannot change once it has comparisons.",
            extra={"field": "mode"},
        )
    for name in fields:
        value = data[name]
        if name == "criteria":
            value = _validate_criteria(value)
        setattr(campaign, name, value)
    campaign.full_clean()
    campaign.save(update_fields=[*fields, "updated_at"])
    if "annotator_ids" in data:
        campaign.annotators.set(data["annotator_ids"])
    return campaign
