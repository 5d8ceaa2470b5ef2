from typing import Any

from django.conf import settings
from django.db import migrations, models


def keep_newest_verdict(apps: Any, schema_editor: Any) -> None:
    """Before the constraint: of a caller's several verdicts on one response,
    the newest stands (as the service now records them)."""
    feedback = apps.get_model("models_hub", "ServedFeedback")
    seen: set[tuple[int, int]] = set()
    stale = []
    rows = feedback.objects.filter(caller__isnull=False).order_by("-created_at", "-id")
    for pk, response_id, caller_id in rows.values_list(
        "pk", "response_id", "caller_id"
    ):
        if (response_id, caller_id) in seen:
            stale.append(pk)
        seen.add((response_id, caller_id))
    feedback.objects.filter(pk__in=stale).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("models_hub", "0008_artifact_store"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(keep_newest_verdict, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="servedfeedback",
            constraint=models.UniqueConstraint(
                condition=models.Q(("caller__isnull", False)),
                fields=("response", "caller"),
                name="models_hub_one_feedback_per_caller",
            ),
        ),
    ]
