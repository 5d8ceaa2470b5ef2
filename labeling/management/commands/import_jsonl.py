from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from tqdm import tqdm

from core.exceptions import ApplicationError
from labeling.models import Campaign
from labeling.services.campaigns import campaign_create
from labeling.services.imports import campaign_import_jsonl


class Command(BaseCommand):
    help = "Import prompts, completions and pairs from a JSONL file into a campaign (atomic)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--campaign", required=True, help="campaign name")
        parser.add_argument(
            "--create", action="store_true", help="create the campaign if missing"
        )

    @transaction.atomic
    def handle(
        self, *args: Any, path: Path, campaign: str, create: bool, **options: Any
    ) -> None:
        # One transaction: a failed import does not even leave the new campaign.
        target = Campaign.objects.filter(name=campaign).first()
        if target is None:
            if not create:
                raise CommandError(f"No campaign named {campaign!r} (use --create).")
            target = campaign_create(name=campaign, created_by=None)
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        with (
            path.open("rb") as fh,
            tqdm(
                total=path.stat().st_size, unit="B", unit_scale=True, desc="import"
            ) as bar,
        ):

            def lines() -> Any:
                for line in fh:
                    bar.update(len(line))
                    yield line

            try:
                result = campaign_import_jsonl(campaign=target, lines=lines())
            except ApplicationError as exc:
                raise CommandError(
                    f"{path}: {exc.message} (nothing was imported)"
                ) from None
        self.stdout.write(
            self.style.SUCCESS(f"Imported into {target.name!r}: {result.as_dict()}")
        )
