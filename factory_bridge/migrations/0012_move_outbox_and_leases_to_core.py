"""OutboxEvent and WorkerLease now belong to nudged.core (core 0001), with the same tables:
state only. Their content types move with them, so permissions granted on them (retrying
dead events) and their admin history stay."""

from django.db import migrations

MOVED = ("outboxevent", "workerlease")


def to_core(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="factory_bridge", model__in=MOVED).update(
        app_label="core"
    )


def to_factory_bridge(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="core", model__in=MOVED).update(
        app_label="factory_bridge"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("factory_bridge", "0011_dlq_jobs_order_tally"),
        ("core", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="OutboxEvent"),
                migrations.DeleteModel(name="WorkerLease"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(to_core, to_factory_bridge),
    ]
