from datetime import datetime

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from nudged.core.admin import ReadOnlyAdmin
from shop.models import Basket, Order


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "product",
        "quantity",
        "status",
        "ready_by",
        "fulfilled_at",
        "channel",
        "remaining_stock",
        "published_at",
        "basket",
    ]
    # Status "Waiting for the next batch": the pre-orders waiting now.
    list_filter = ["status", "channel", "product", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "=reference", "product__sku"]
    list_select_related = ["product", "promise", "basket"]

    @admin.display(description="ready by", ordering="promise__ready_by", empty_value="-")
    def ready_by(self, obj: Order) -> datetime | None:
        return obj.promise.ready_by if obj.promise else None


class LineInline(admin.TabularInline):
    model = Order
    fields = ("product", "quantity", "unit_price", "status", "remaining_stock", "published_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Basket)
class BasketAdmin(ReadOnlyAdmin):
    """Orders of several donuts, each line an order of its own (the orders list has them)."""

    list_display = ["reference", "created_at", "status", "lines_count", "total_price"]
    search_fields = ["=reference"]
    inlines = [LineInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Basket]:
        return super().get_queryset(request).prefetch_related("lines__product", "lines__promise")

    @admin.display(description="lines")
    def lines_count(self, obj: Basket) -> int:
        return len(obj.lines.all())

    @admin.display(description="total (KRW)")
    def total_price(self, obj: Basket) -> int:
        return obj.total_price
