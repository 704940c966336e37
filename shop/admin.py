from django.contrib import admin

from nudged.admin import ReadOnlyAdmin
from shop.models import Order


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "product",
        "quantity",
        "status",
        "channel",
        "remaining_stock",
        "published_at",
    ]
    list_filter = ["status", "channel", "product", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "product__sku"]
    list_select_related = ["product"]
