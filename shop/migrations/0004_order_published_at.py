from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_order_reference")]

    operations = [
        migrations.AddField(
            model_name="order",
            name="published_at",
            field=models.DateTimeField(
                blank=True,
                db_index=True,
                help_text="When the sale went out to the ops feed",
                null=True,
            ),
        ),
        # Orders placed before this had their sales events written to the outbox.
        migrations.RunSQL(
            "UPDATE shop_order SET published_at = created_at", reverse_sql=migrations.RunSQL.noop
        ),
    ]
