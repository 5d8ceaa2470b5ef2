# An AdapterEvent records switching an adapter off and on for serving.
# Choices only: no SQL runs.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("models_hub", "0005_serving_and_deployments"),
    ]

    operations = [
        migrations.AlterField(
            model_name="adapterevent",
            name="action",
            field=models.CharField(
                choices=[
                    ("registered", "registered"),
                    ("promoted", "promoted"),
                    ("rolled_back", "rolled back"),
                    ("retired", "retired"),
                    ("refused", "refused by its guardrails"),
                    ("serving_off", "switched off for serving"),
                    ("serving_on", "switched on for serving"),
                ],
                max_length=16,
            ),
        ),
    ]
