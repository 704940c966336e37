from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inventory.models import Product
from inventory.selectors import ready_in_seconds
from shop.models import Order

SKU_MAX_LENGTH = Product._meta.get_field("sku").max_length


class ProductSerializer(serializers.ModelSerializer):
    in_stock = serializers.BooleanField(read_only=True)
    incoming = serializers.IntegerField(
        read_only=True,
        default=0,
        min_value=0,
        help_text="Units the factory accepted to make and has not delivered yet.",
    )
    ready_in_seconds = serializers.SerializerMethodField(
        help_text="About how many seconds until the incoming units arrive, from the "
        "factory's measured lead time (0: due any moment); null when none are incoming."
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "stock", "in_stock", "incoming", "ready_in_seconds"]
        # Every product row has a stock; the model default would mark it optional.
        extra_kwargs = {"stock": {"required": True}}

    @extend_schema_field(serializers.IntegerField(min_value=0, allow_null=True))
    def get_ready_in_seconds(self, product: Product) -> int | None:
        return ready_in_seconds(product)


class OrderInputSerializer(serializers.Serializer):
    # A SKU that is blank once trimmed is refused as blank before any validator runs;
    # min_length and the pattern put that rule into the schema.
    sku = serializers.CharField(
        min_length=1, max_length=SKU_MAX_LENGTH, validators=[RegexValidator(r"\S")]
    )
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)

    @classmethod
    def clean(cls, data: object) -> dict[str, Any]:
        """The order's `sku` and `quantity`, or ValidationError naming every bad field.

        A body already in its final form (a printable ASCII SKU without surrounding spaces, an
        int quantity in range) is taken as it is: building a serializer costs more than the
        rest of an order's view. Anything else is the serializer's to accept or refuse.
        """
        if isinstance(data, dict):
            sku, quantity = data.get("sku"), data.get("quantity")
            if (
                type(sku) is str
                and 0 < len(sku) <= SKU_MAX_LENGTH
                and sku.isascii()
                and sku.isprintable()
                and sku.strip() == sku
                and type(quantity) is int
                and 1 <= quantity <= cls._declared_fields["quantity"].max_value
            ):
                return {"sku": sku, "quantity": quantity}
        serializer = cls(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class OrderOutputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=SKU_MAX_LENGTH)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)
    status = serializers.CharField(help_text="Always `completed`: a refused order answers 409.")
    remaining_stock = serializers.IntegerField(min_value=0)
    reference = serializers.CharField(
        help_text="The order's unguessable reference: `GET /api/orders/{reference}/`."
    )


class ReceiptSerializer(serializers.ModelSerializer):
    """An order as its customer reads it back: by its reference, never the counting id."""

    reference = serializers.CharField()
    sku = serializers.CharField(source="product.sku", max_length=SKU_MAX_LENGTH)
    name = serializers.CharField(source="product.name")
    quantity = serializers.IntegerField(min_value=1)
    unit_price = serializers.IntegerField(min_value=0, help_text="KRW, as ordered.")
    total_price = serializers.IntegerField(min_value=0, help_text="KRW.")
    status = serializers.CharField()
    created_at = serializers.DateTimeField()

    class Meta:
        model = Order
        fields = [
            "reference",
            "sku",
            "name",
            "quantity",
            "unit_price",
            "total_price",
            "status",
            "created_at",
        ]


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable reason.")
    detail = serializers.CharField(help_text="What went wrong, for a person.")


class InvalidInputSerializer(ErrorSerializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages by field: `body` when the body is not JSON, "
        "`non_field_errors` when it is not an object.",
    )


class UnknownSkuSerializer(ErrorSerializer):
    sku = serializers.CharField()


class OutOfStockSerializer(ErrorSerializer):
    available = serializers.IntegerField(min_value=0)


class PurchaseLimitSerializer(ErrorSerializer):
    scope = serializers.ChoiceField(
        choices=["customer", "address"],
        help_text="Which limit refused the order: `customer`, this customer's own, or "
        "`address`, the ceiling for every customer at this client address, on every order "
        "channel together (PURCHASE_LIMIT_PER_ADDRESS).",
    )
    limit = serializers.IntegerField(
        min_value=1, help_text="Units this customer, or this address, may buy."
    )
    window = serializers.IntegerField(min_value=1, help_text="Seconds the limit counts over.")
    bought = serializers.IntegerField(
        min_value=0, help_text="Units bought in the window (by this customer, or this address)."
    )


class AlertInputSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class AlertOutputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=SKU_MAX_LENGTH)
    email = serializers.EmailField(help_text="The address as this request gave it.")
    status = serializers.ChoiceField(
        choices=["pending"],
        help_text="Always `pending`: the alert starts once the link emailed to the address "
        "is followed.",
    )


class InStockSerializer(ErrorSerializer):
    sku = serializers.CharField(max_length=SKU_MAX_LENGTH)
