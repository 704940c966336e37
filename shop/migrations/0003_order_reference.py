import secrets

from django.db import migrations, models

import shop.models


def give_references(apps, schema_editor):
    """Existing orders get a reference and, as the best record left, the product's price."""
    Order = apps.get_model("shop", "Order")
    Product = apps.get_model("inventory", "Product")
    prices = dict(Product.objects.values_list("pk", "price"))
    for pk, product_id in Order.objects.values_list("pk", "product_id").iterator():
        Order.objects.filter(pk=pk).update(
            reference=secrets.token_hex(16), unit_price=prices[product_id]
        )


class Migration(migrations.Migration):

    dependencies = [
        ("inventory", "0003_replenishment"),
        ("shop", "0002_order_customer"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="reference",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="order",
            name="unit_price",
            field=models.PositiveIntegerField(default=0, help_text="Price in KRW when ordered"),
            preserve_default=False,
        ),
        migrations.RunPython(give_references, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="order",
            name="reference",
            field=models.CharField(
                default=shop.models.new_reference, editable=False, max_length=32, unique=True
            ),
        ),
    ]
