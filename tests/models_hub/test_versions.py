"""Version keys: one value type parses and formats ``base:<id>`` /
``adapter:<id>``."""

from __future__ import annotations

from typing import Any

import pytest

from models_hub.models import BaseModelVersion
from models_hub.services.registry import adapter_register
from models_hub.versions import (
    InvalidVersionKey,
    SameVersion,
    VersionKey,
    version_names,
    version_pair_parse,
)
from tests.labeling.factories import CampaignFactory


def test_keys_round_trip_through_their_string_form() -> None:
    """``str`` and ``parse`` are inverse; ``of`` picks the adapter first."""
    for key in (VersionKey.base(1), VersionKey.adapter(42)):
        assert VersionKey.parse(str(key)) == key
    assert str(VersionKey.of(adapter_id=3, base_model_id=1)) == "adapter:3"
    assert str(VersionKey.of(adapter_id=None, base_model_id=1)) == "base:1"
    assert VersionKey.of(adapter_id=None, base_model_id=None) is None
    assert VersionKey.parse("base:7").is_base


@pytest.mark.parametrize(
    "raw", ["nonsense", "base:", "adapter:x", "model:1", "base:-1", "base:١"]
)
def test_malformed_keys_are_a_400_domain_error(raw: object) -> None:
    """Anything but ``base:<digits>`` / ``adapter:<digits>`` is refused."""
    with pytest.raises(InvalidVersionKey, match="not a model version") as info:
        VersionKey.parse(raw)
    assert info.value.status_code == 400


@pytest.mark.parametrize("raw", ["", "  ", None])
def test_no_version_at_all_asks_for_one_in_words(raw: object) -> None:
    with pytest.raises(InvalidVersionKey, match="^Pick a model version.$"):
        VersionKey.parse(raw)


def test_a_pair_must_name_two_different_versions() -> None:
    """Comparing a version with itself is refused before any query."""
    assert version_pair_parse("base:1", "adapter:1") == (
        VersionKey.base(1),
        VersionKey.adapter(1),
    )
    for same in ("adapter:1", "base:1"):
        with pytest.raises(SameVersion, match="two different versions") as info:
            version_pair_parse(same, same)
        assert info.value.status_code == 400


@pytest.mark.django_db
def test_versions_are_named_as_people_call_them(
    django_assert_num_queries: Any,
) -> None:
    """A base model alone reads "base: <name>", an adapter by its name; a key
    whose row is gone, or a malformed one, names itself. Two queries in all."""
    campaign = CampaignFactory()
    base, _ = BaseModelVersion.objects.get_or_create(
        name="SmolLM2-135M-Instruct", defaults={"source": "/m"}
    )
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=base,
            method="dpo",
            peft_type="lora",
            storage_path=f"a{i}",
            metrics={},
        )
        for i in range(3)
    ]
    keys = [f"base:{base.pk}", *(f"adapter:{a.pk}" for a in adapters)]
    with django_assert_num_queries(2):
        names = version_names(keys=[*keys, "adapter:999999", "base:999999", "x"])
    assert [names[k] for k in keys] == [
        "base: SmolLM2-135M-Instruct",
        "dpo-v1",
        "dpo-v2",
        "dpo-v3",
    ]
    assert names["adapter:999999"] == "adapter:999999" and names["x"] == "x"
    assert names["base:999999"] == "base:999999"
