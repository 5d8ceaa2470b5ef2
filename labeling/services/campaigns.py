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
    "gold_rate",
    "status",
)


def _validate_criteria(criteria: Any) -> list[dict[str, str]]:
    if not isinstance(criteria, list):
        raise LabelingError("criteria must be a list.")
    names = set()
    for item in criteria:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not item["name"].strip()
        ):
            raise LabelingError('criteria: each item needs a "name".')
        if item["name"] in names:
            raise LabelingError(f"criteria: {item['name']!r} appears twice.")
        names.add(item["name"])
    return [
        {"name": c["name"].strip(), "description": str(c.get("description", ""))}
        for c in criteria
    ]


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
    annotator_ids: Sequence[int] = (),
) -> Campaign:
    campaign = Campaign(
        name=name,
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
