"""Create the demo users and campaign (idempotent). Passwords are generated
once, kept in <data dir>/demo-credentials.json and printed on every start.

The demo campaign asks for two labels a pair (overlap 2). When it is
created, alice and bob answer the first nine pairs the labeling queue serves
them, as scripted in labeling/demo/demo_labels.json, and three of those pairs
are then marked gold (as a reviewer does from the pair page), so the quality
page has agreement and gold accuracy to show; the other pairs wait for
whoever tries the demo. Twelve of those labels count towards the demo's
training policy (labels on held-out prompts do not), so eight more start the
first DPO run.

It lives in `training`, the top app layer, because the demo seeds every app."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.people import DEMO_CREDENTIALS_FILE
from core.roles import ADMIN, ANNOTATOR, REVIEWER
from core.services import roles_ensure, user_create
from labeling.models import Campaign, Comparison
from labeling.services.campaigns import campaign_create
from labeling.services.imports import campaign_import_jsonl
from labeling.services.quality import comparison_gold_set
from labeling.services.queue import comparison_lease_next, preference_record
from models_hub.services.registry import generation_settings_for
from training.models import TrainingPolicy

DEMO_DIR = Path(settings.BASE_DIR) / "labeling" / "demo"
DEMO_FILE = DEMO_DIR / "demo_campaign.jsonl"
DEMO_LABELS = DEMO_DIR / "demo_labels.json"
DEMO_CAMPAIGN = "Demo: everyday assistant"
DEMO_USERS = (
    ("admin", ADMIN),
    ("alice", ANNOTATOR),
    ("bob", ANNOTATOR),
    ("carol", REVIEWER),
)
DEMO_OVERLAP = 2
DEMO_GOLD_RATE = 0.1
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
        creds_path = Path(settings.DATA_DIR) / DEMO_CREDENTIALS_FILE
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

        campaign = Campaign.objects.filter(name=DEMO_CAMPAIGN).first()
        if campaign is None:
            with transaction.atomic():
                self._create_campaign(admin=User.objects.get(username="admin"))
        for username, role in DEMO_USERS:
            password = creds.get(username, "(set before; see demo-credentials.json)")
            self.stdout.write(f"  {role:<10} {username:<8} password: {password}")

    def _create_campaign(self, *, admin: AbstractBaseUser) -> None:
        campaign = campaign_create(
            name=DEMO_CAMPAIGN,
            description="Compare two answers to everyday questions.",
            guidelines=GUIDELINES,
            created_by=admin,
            overlap_k=DEMO_OVERLAP,
            gold_rate=DEMO_GOLD_RATE,
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
        script = json.loads(DEMO_LABELS.read_text())
        lines = _line_numbers()
        comparisons = Comparison.objects.filter(campaign=campaign).select_related(
            "completion_a", "completion_b"
        )
        User = get_user_model()
        labeled = 0
        for username, answers in script["labels"].items():
            annotator = User.objects.get(username=username)
            for _ in answers:
                lease = comparison_lease_next(campaign=campaign, annotator=annotator)
                comparison = lease.comparison
                answer = answers.get(str(_line_of(comparison, lines)))
                if answer is None:
                    raise CommandError(
                        f"demo_labels.json has no answer from {username} for the "
                        f"pair the queue served (comparison {comparison.pk})."
                    )
                preference_record(
                    lease_id=lease.pk,
                    annotator=annotator,
                    choice=_screen_choice(
                        _stored_choice(comparison, answer), a_on_left=lease.a_on_left
                    ),
                    client_request_id=f"demo-seed-{username}-{comparison.pk}",
                )
                labeled += 1
        by_line = {_line_of(c, lines): c for c in comparisons}
        for line, answer in script["gold"].items():
            comparison_gold_set(
                comparison=by_line[int(line)],
                choice=_stored_choice(by_line[int(line)], answer),
            )
        self.stdout.write(
            f"Demo history: {len(script['gold'])} gold pairs, {labeled} labels "
            f"from {', '.join(script['labels'])}."
        )


def _line_numbers() -> dict[tuple[str, str], int]:
    """(completion text, source) → its line number in the demo file."""
    out = {}
    with DEMO_FILE.open() as fh:
        for number, raw in enumerate(fh):
            for item in json.loads(raw)["completions"]:
                out[(item["text"], item["source"])] = number
    return out


def _line_of(comparison: Comparison, lines: dict[tuple[str, str], int]) -> int:
    first = comparison.completion_a
    return lines[(first.text, first.source_label)]


def _stored_choice(comparison: Comparison, answer: str) -> str:
    """A scripted answer (the better completion's source, tie or both_bad)
    as stored against the pair: a, b, tie or both_bad."""
    if answer in ("tie", "both_bad"):
        return answer
    for side, completion in (
        ("a", comparison.completion_a),
        ("b", comparison.completion_b),
    ):
        if completion.source_label == answer:
            return side
    raise CommandError(f"No completion from {answer!r} in comparison {comparison.pk}.")


def _screen_choice(stored: str, *, a_on_left: bool) -> str:
    if stored == "a":
        return "left" if a_on_left else "right"
    if stored == "b":
        return "right" if a_on_left else "left"
    return stored
