from django.contrib import admin

from factory_bridge.models import RestockRequest
from inventory.models import Factory, Product, StockAdjustment
from inventory.selectors import product_list


class SoldOutFilter(admin.SimpleListFilter):
    title = "stock"
    parameter_name = "sold_out"

    def lookups(self, request, model_admin):  # type: ignore[no-untyped-def]
        return [("yes", "Sold out"), ("no", "In stock")]

    def queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        if self.value() == "yes":
            return queryset.filter(stock=0)
        if self.value() == "no":
            return queryset.filter(stock__gt=0)
        return queryset


class StockAdjustmentInline(admin.TabularInline):
    model = StockAdjustment
    extra = 0
    can_delete = False
    fields = ["created_at", "reason", "old_quantity", "new_quantity", "note"]
    readonly_fields = fields
    ordering = ["-created_at"]
    verbose_name_plural = "Stock adjustments (audit)"

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class OpenRestockInline(admin.TabularInline):
    model = RestockRequest
    fk_name = "product"
    extra = 0
    can_delete = False
    fields = [
        "id",
        "status",
        "quantity",
        "created_at",
        "requested_at",
        "factory_job_id",
        "last_error",
    ]
    readonly_fields = fields
    verbose_name_plural = "Open restock requests"

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return super().get_queryset(request).filter(status__in=RestockRequest.OPEN)

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Factory)
class FactoryAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "manager_email"]
    search_fields = ["code", "name", "manager_email"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = [
        "sku",
        "name",
        "price",
        "stock",
        "incoming",
        "restock_quantity",
        "factory",
        "depleted_at",
    ]
    list_editable = ["stock"]
    list_filter = [SoldOutFilter, "factory"]
    search_fields = ["sku", "name"]
    list_select_related = ["factory"]
    readonly_fields = ["depleted_at", "updated_at"]
    inlines = [OpenRestockInline, StockAdjustmentInline]

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return product_list()

    @admin.display(description="incoming", ordering="incoming")
    def incoming(self, obj: Product) -> int:
        return obj.incoming


@admin.register(StockAdjustment)
class StockAdjustmentAdmin(admin.ModelAdmin):
    list_display = ["created_at", "product", "reason", "old_quantity", "new_quantity", "note"]
    list_filter = ["reason"]
    search_fields = ["product__sku", "note"]
    list_select_related = ["product"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
