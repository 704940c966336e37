from django.contrib import admin

from shop.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
