from datetime import UTC

from django.conf import settings
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


STATUS_HELP = (
    "`completed`: served (from the shelf, or a pre-order from its batch); `backordered`: a "
    "pre-order waiting for its batch, ready by `ready_by`; `cancelled`: a pre-order "
    "production could not serve in time (`cancel_reason`)."
)


class OrderOutputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=SKU_MAX_LENGTH)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)
    status = serializers.ChoiceField(
        choices=[Order.Status.COMPLETED, Order.Status.BACKORDERED],
        help_text="`completed`: stock taken; `backordered`: a pre-order (`backorder` asked, "
        "shelf short) that production serves by `ready_by`. A refused order answers 409.",
    )
    remaining_stock = serializers.IntegerField(min_value=0)
    reference = serializers.CharField(
        help_text="The order's unguessable reference: `GET /api/orders/{reference}/`."
    )
    ready_by = serializers.DateTimeField(
        required=False,
        help_text="A pre-order's promised time (ISO 8601, UTC): when its batch is due, plus "
        "a margin. Only with `status` `backordered`.",
    )


class BasketLineSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=SKU_MAX_LENGTH)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)
    status = serializers.ChoiceField(
        choices=[Order.Status.COMPLETED, Order.Status.BACKORDERED],
        help_text="`completed`: served from the shelf; `backordered`: waits for its batch.",
    )
    unit_price = serializers.IntegerField(min_value=0, help_text="KRW, as ordered.")
    remaining_stock = serializers.IntegerField(min_value=0)
    ready_by = serializers.DateTimeField(
        required=False, help_text="A pre-order line's promised time (ISO 8601, UTC)."
    )


class BasketOutputSerializer(serializers.Serializer):
    reference = serializers.CharField(
        help_text="The basket's unguessable reference: `GET /api/orders/{reference}/`."
    )
    status = serializers.ChoiceField(
        choices=[Order.Status.COMPLETED, Order.Status.BACKORDERED],
        help_text="`backordered` until its last line is ready, `completed` then.",
    )
    total = serializers.IntegerField(min_value=0, help_text="KRW, every line's.")
    lines = BasketLineSerializer(many=True, help_text="In the order they were asked for.")
    ready_by = serializers.DateTimeField(
        required=False, help_text="When its last pre-order line is promised (ISO 8601, UTC)."
    )


class ReceiptSerializer(serializers.ModelSerializer):
    """An order as its customer reads it back: by its reference, never the counting id."""

    reference = serializers.CharField()
    sku = serializers.CharField(source="product.sku", max_length=SKU_MAX_LENGTH)
    name = serializers.CharField(source="product.name")
    quantity = serializers.IntegerField(min_value=1)
    unit_price = serializers.IntegerField(min_value=0, help_text="KRW, as ordered.")
    total_price = serializers.IntegerField(min_value=0, help_text="KRW.")
    status = serializers.ChoiceField(
        choices=[Order.Status.COMPLETED, Order.Status.BACKORDERED, Order.Status.CANCELLED],
        help_text=STATUS_HELP,
    )
    created_at = serializers.DateTimeField()
    ready_by = serializers.DateTimeField(
        source="promise.ready_by",
        allow_null=True,
        default_timezone=UTC,
        help_text="A pre-order's promised time (UTC); null for an order served at once.",
    )
    fulfilled_at = serializers.DateTimeField(
        allow_null=True,
        default_timezone=UTC,
        help_text="When a pre-order was served; null otherwise.",
    )
    cancel_reason = serializers.CharField(
        source="promise.reason",
        allow_null=True,
        help_text="Why a pre-order was cancelled; empty or null otherwise.",
    )

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
            "ready_by",
            "fulfilled_at",
            "cancel_reason",
        ]


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable reason.")
    detail = serializers.CharField(help_text="What went wrong, for a person.")


class InvalidInputSerializer(ErrorSerializer):
    errors = serializers.DictField(  # type: ignore[assignment]  # the answer's field, never validated
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages by field: `body` when the body is not JSON, "
        "`non_field_errors` when it is not an object.",
    )


class UnknownSkuSerializer(ErrorSerializer):
    sku = serializers.CharField()


class OutOfStockSerializer(ErrorSerializer):
    available = serializers.IntegerField(min_value=0)


class ShortLineSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=SKU_MAX_LENGTH)
    requested = serializers.IntegerField(min_value=1)
    available = serializers.IntegerField(min_value=0)


class BasketShortSerializer(ErrorSerializer):
    lines = ShortLineSerializer(many=True, help_text="Each line the shelf could not serve.")


class PurchaseLimitSerializer(ErrorSerializer):
    sku = serializers.CharField(
        max_length=SKU_MAX_LENGTH, help_text="The donut limited (a basket's line)."
    )
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


class BasketReceiptSerializer(serializers.Serializer):
    """A basket as its customer reads it back: its lines and their total."""

    reference = serializers.CharField()
    status = serializers.ChoiceField(
        choices=[Order.Status.COMPLETED, Order.Status.BACKORDERED, Order.Status.CANCELLED],
        help_text="`backordered` until its last line is ready; `cancelled` when every line "
        "was; `completed` otherwise.",
    )
    total_price = serializers.IntegerField(min_value=0, help_text="KRW, every line's.")
    created_at = serializers.DateTimeField()
    ready_by = serializers.DateTimeField(
        allow_null=True,
        default_timezone=UTC,
        help_text="When its last waiting line is promised (UTC); null when nothing waits.",
    )
    lines = ReceiptSerializer(many=True, help_text="Each line, as an order's receipt.")


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
