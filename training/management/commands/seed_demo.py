"""Create the demo users and campaign (idempotent). Passwords are generated
once, kept in <data dir>/demo-credentials.json and printed on every start.

It lives in `training`, the top app layer, because the demo seeds every app."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from core.roles import ADMIN, ANNOTATOR
from core.services import roles_ensure, user_create
from labeling.models import Campaign
from labeling.services.campaigns import campaign_create
from labeling.services.imports import campaign_import_jsonl
from models_hub.services.registry import generation_settings_for
from training.models import TrainingPolicy

DEMO_FILE = Path(settings.BASE_DIR) / "labeling" / "demo" / "demo_campaign.jsonl"
DEMO_USERS = (("admin", ADMIN), ("alice", ANNOTATOR), ("bob", ANNOTATOR))
GUIDELINES = """\
**Pick the answer you would rather receive.**

1. *Correct* beats fluent: check facts, numbers and code.
2. *Follows the request*: format, length and language asked for.
3. *Helpful and safe*: refuses only what is actually harmful.

Use **tie** when both are about equally good, **both bad** when neither
should be shown to a user. Add a one-line reason when the call is close.
"""


class Command(BaseCommand):
    help = "Create demo admin/annotators and the demo campaign; print the credentials."

    def handle(self, *args: Any, **options: Any) -> None:
        roles_ensure()
        creds_path = Path(settings.DATA_DIR) / "demo-credentials.json"
        creds: dict[str, str] = (
            json.loads(creds_path.read_text()) if creds_path.exists() else {}
        )
        User = get_user_model()
        for username, role in DEMO_USERS:
            if not User.objects.filter(username=username).exists():
                creds[username] = secrets.token_urlsafe(9)
                user = user_create(
                    username=username, password=creds[username], role=role
                )
                if role == ADMIN:
                    user.is_superuser = True
                    user.save(update_fields=["is_superuser"])
        creds_path.parent.mkdir(parents=True, exist_ok=True)
        creds_path.write_text(json.dumps(creds, indent=2))
        creds_path.chmod(0o600)

        campaign = Campaign.objects.filter(name="Demo: everyday assistant").first()
        if campaign is None:
            campaign = campaign_create(
                name="Demo: everyday assistant",
                description="Compare two answers to everyday questions.",
                guidelines=GUIDELINES,
                created_by=User.objects.get(username="admin"),
            )
            with DEMO_FILE.open("rb") as fh:
                result = campaign_import_jsonl(campaign=campaign, lines=fh)
            self.stdout.write(f"Demo campaign loaded: {result.as_dict()}")
            # Close the loop on a CPU: a small DPO run after every 20 new
            # labels, whose adapter writes fresh pairs back into the queue.
            TrainingPolicy.objects.create(
                campaign=campaign,
                enabled=True,
                pipeline="dpo",
                min_new_preferences=20,
                min_interval_minutes=10,
                config_overrides={
                    "dpo": {
                        "num_train_epochs": 1,
                        "max_length": 384,
                        "per_device_train_batch_size": 4,
                    }
                },
            )
            generation = generation_settings_for(campaign)
            generation.prompts_per_round = 8
            generation.max_new_tokens = 96
            generation.save()
        for username, role in DEMO_USERS:
            password = creds.get(username, "(set before; see demo-credentials.json)")
            self.stdout.write(f"  {role:<10} {username:<8} password: {password}")
