from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from labeling.models import Campaign, Comparison, Prompt
from labeling.services.queue import comparison_lease_next, preference_record


@pytest.mark.django_db
def test_import_then_export_round_trip(tmp_path: Path, annotator: Any) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "\n".join(
            json.dumps({"prompt": f"q{i}", "completions": [f"good {i}", f"bad {i}"]})
            for i in range(5)
        )
    )
    call_command("import_jsonl", str(source), campaign="Cmd", create=True)
    campaign = Campaign.objects.get(name="Cmd")
    assert Comparison.objects.filter(campaign=campaign).count() == 5
    for _ in range(5):
        lease = comparison_lease_next(campaign=campaign, annotator=annotator)
        preference_record(
            lease_id=lease.pk,
            annotator=annotator,
            choice="left" if lease.a_on_left else "right",
        )
    out = tmp_path / "out.jsonl"
    call_command("export_preferences", str(out), campaign="Cmd", include_golden=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all(r["chosen"].startswith("good") for r in rows)


@pytest.mark.django_db
def test_import_command_reports_the_bad_line_and_imports_nothing(
    tmp_path: Path,
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(
        json.dumps({"prompt": "ok", "completions": ["a", "b"]}) + "\n{oops\n"
    )
    with pytest.raises(CommandError, match=r"line 2: \(line\): not valid JSON"):
        call_command("import_jsonl", str(source), campaign="Bad", create=True)
    assert not Prompt.objects.exists()
    assert not Campaign.objects.filter(name="Bad").exists()
