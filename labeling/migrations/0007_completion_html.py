from django.db import migrations, models


def render_existing(apps, schema_editor):
    """Fill ``html`` of the completions stored before the column existed."""
    from labeling.rendering import completion_html

    Completion = apps.get_model("labeling", "Completion")
    pending = Completion.objects.filter(html="").exclude(text="").order_by("pk")
    last = 0
    while True:
        batch = list(pending.filter(pk__gt=last).only("pk", "text")[:1000])
        if not batch:
            return
        for completion in batch:
            completion.html = completion_html(completion.text)
        Completion.objects.bulk_update(batch, ["html"])
        last = batch[-1].pk


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0006_label_revisions"),
    ]

    operations = [
        migrations.AddField(
            model_name="completion",
            name="html",
            field=models.TextField(
                blank=True,
                default="",
                help_text="The text rendered once as sanitised HTML (labeling.rendering).",
            ),
        ),
        migrations.RunPython(render_existing, migrations.RunPython.noop),
    ]
