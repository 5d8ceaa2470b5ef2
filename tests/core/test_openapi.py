"""The OpenAPI schema builds without warnings and docs/openapi.yaml is current."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_schema_has_no_warnings_and_the_committed_copy_is_current(
    tmp_path: Path,
) -> None:
    out = tmp_path / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    committed = (ROOT / "docs" / "openapi.yaml").read_text()
    assert out.read_text() == committed, (
        "docs/openapi.yaml is stale: ./arbiter manage spectacular --validate --file docs/openapi.yaml"
    )
