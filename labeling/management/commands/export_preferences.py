from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from labeling.models import Campaign, Preference
from labeling.selectors import TIE_POLICIES, preference_export_rows


class Command(BaseCommand):
    help = (
        "Export a campaign's preferences as TRL-ready JSONL (prompt/chosen/rejected)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--campaign", required=True, help="campaign name")
        parser.add_argument("--tie-policy", choices=TIE_POLICIES, default="skip")
        parser.add_argument(
            "--split", action="append", choices=["train", "val", "test"]
        )
        parser.add_argument("--include-golden", action="store_true")

    def handle(
        self,
        *args: Any,
        path: Path,
        campaign: str,
        tie_policy: str,
        split: list[str] | None,
        include_golden: bool,
        **options: Any,
    ) -> None:
        target = Campaign.objects.filter(name=campaign).first()
        if target is None:
            raise CommandError(f"No campaign named {campaign!r}.")
        total = Preference.objects.filter(comparison__campaign=target).count()
        rows = preference_export_rows(
            campaign=target,
            tie_policy=tie_policy,
            splits=split,
            include_golden=include_golden,
        )
        written = 0
        tmp = path.with_suffix(path.suffix + ".part")
        with (
            tmp.open("w", encoding="utf-8") as fh,
            tqdm(total=total, unit="pref", desc="export") as bar,
        ):
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
                bar.update(1)
        tmp.replace(path)
        self.stdout.write(self.style.SUCCESS(f"Wrote {written} rows to {path}"))
