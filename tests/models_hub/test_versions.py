"""Version keys: one value type parses and formats ``base:<id>`` /
``adapter:<id>``."""

from __future__ import annotations

import pytest

from models_hub.versions import (
    InvalidVersionKey,
    SameVersion,
    VersionKey,
    version_pair_parse,
)


def test_keys_round_trip_through_their_string_form() -> None:
    """``str`` and ``parse`` are inverse; ``of`` picks the adapter first."""
    for key in (VersionKey.base(1), VersionKey.adapter(42)):
        assert VersionKey.parse(str(key)) == key
    assert str(VersionKey.of(adapter_id=3, base_model_id=1)) == "adapter:3"
    assert str(VersionKey.of(adapter_id=None, base_model_id=1)) == "base:1"
    assert VersionKey.of(adapter_id=None, base_model_id=None) is None
    assert VersionKey.parse("base:7").is_base


@pytest.mark.parametrize(
    "raw", ["", "nonsense", "base:", "adapter:x", "model:1", "base:-1", "base:١", None]
)
def test_malformed_keys_are_a_400_domain_error(raw: object) -> None:
    """Anything but ``base:<digits>`` / ``adapter:<digits>`` is refused."""
    with pytest.raises(InvalidVersionKey, match="not a model version") as info:
        VersionKey.parse(raw)
    assert info.value.status_code == 400


def test_a_pair_must_name_two_different_versions() -> None:
    """Comparing a version with itself is refused before any query."""
    assert version_pair_parse("base:1", "adapter:1") == (
        VersionKey.base(1),
        VersionKey.adapter(1),
    )
    with pytest.raises(SameVersion, match="two different versions"):
        version_pair_parse("adapter:1", "adapter:1")
