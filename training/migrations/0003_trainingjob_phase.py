from django.db import migrations, models


def finished_jobs_are_done(apps, schema_editor):
    TrainingJob = apps.get_model("training", "TrainingJob")
    TrainingJob.objects.filter(status="succeeded").update(phase="done")


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0002_policy_on_by_default"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="phase",
            field=models.CharField(
                choices=[
                    ("queued", "waiting for a GPU worker"),
                    ("converting", "converting the base model"),
                    ("loading", "loading the base model"),
                    ("training", "training"),
                    ("evaluating", "evaluating on the validation split"),
                    ("saving", "saving the adapter"),
                    ("done", "done"),
                ],
                default="queued",
                help_text="What the run is doing: queued, converting, loading, "
                "training, evaluating, saving or done.",
                max_length=16,
            ),
        ),
        migrations.RunPython(finished_jobs_are_done, migrations.RunPython.noop),
    ]
