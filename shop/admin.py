from datetime import datetime

from django.contrib import admin

from nudged.core.admin import ReadOnlyAdmin
from shop.models import Order


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
    ]
    # Status "Waiting for the next batch": the pre-orders waiting now.
    list_filter = ["status", "channel", "product", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "=reference", "product__sku"]
    list_select_related = ["product", "promise"]

    @admin.display(description="ready by", ordering="promise__ready_by", empty_value="-")
    def ready_by(self, obj: Order) -> datetime | None:
        return obj.promise.ready_by if obj.promise else None
