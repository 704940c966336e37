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
    ]
    list_filter = ["status", "channel", "product"]
    search_fields = ["=id", "product__sku"]
    list_select_related = ["product"]
