from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminIntegerFieldWidget
from django.db.models import QuerySet
from django.forms.renderers import BaseRenderer
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from inventory.models import (
    Factory,
    Product,
    Promise,
    ReorderDecision,
    RestockStatus,
    StockAdjustment,
    StockAlert,
    SuppressedAddress,
)
from inventory.selectors import product_list_for_staff
from inventory.services import count_outcome, set_stock
from nudged.core.admin import ReadOnlyAdmin

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class StaffListed(TypedDict):
    """What product_list_for_staff annotates each product with."""

    alerts_waiting: int
    alerts_notified: int


def per_second(rate: float) -> str:
    """A demand rate as staff read it: 0.62/s, not 0.6240858063379249."""
    return f"{rate:.2f}/s"


def in_seconds(seconds: float) -> str:
    """A lead time as staff read it: 12.3 s."""
    return f"{seconds:.1f} s"


NEEDS_STAFF_HINT = (
    "Sold out and nothing on its way: the factory refused or never answered. Check the "
    "factory, then redrive the dead depletion or set the stock; the next order that finds "
    "the product empty orders again."
)


class SoldOutFilter(admin.SimpleListFilter):
    title = "stock"
    parameter_name = "sold_out"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Sold out"), ("no", "In stock")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(stock=0)
        if self.value() == "no":
            return queryset.filter(stock__gt=0)
        return queryset


class NeedsStaffFilter(admin.SimpleListFilter):
    title = "restock"
    parameter_name = "needs_staff"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Needs staff")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(stock=0, restock_status=RestockStatus.FAILED)
        return queryset


class StockAdjustmentInline(admin.TabularInline):
    model = StockAdjustment
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "reason", "old_quantity", "new_quantity", "note")
    ordering = ["-created_at"]
    verbose_name_plural = "Stock adjustments (audit)"

    def has_add_permission(self, request: HttpRequest, obj: Product | None = None) -> bool:
        return False


# What staff read of a decision: when, how much, why, and the numbers behind it (its rate
# and lead time rounded, by DecisionNumbers).
DECISION_FIELDS = (
    "created_at",
    "quantity",
    "reason",
    "on_hand",
    "on_order",
    "demand",
    "decision_lead_time",
    "reorder_point",
)


class DecisionNumbers:
    """A reorder decision's demand rate and lead time as staff read them (empty: none yet, as
    in the blank row an inline renders)."""

    @admin.display(description="demand rate", ordering="demand_rate", empty_value="-")
    def demand(self, obj: ReorderDecision) -> str | None:
        return None if obj.demand_rate is None else per_second(obj.demand_rate)

    @admin.display(description="lead time", ordering="lead_time", empty_value="-")
    def decision_lead_time(self, obj: ReorderDecision) -> str | None:
        return None if obj.lead_time is None else in_seconds(obj.lead_time)


class ReorderDecisionInline(DecisionNumbers, admin.TabularInline):
    model = ReorderDecision
    extra = 0
    can_delete = False
    fields = readonly_fields = DECISION_FIELDS
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "Last reorder decisions"
    max_num = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReorderDecision]:
        # The latest few, not the product's whole history (a rush makes hundreds).
        assert request.resolver_match is not None  # admin pages are resolved URLs
        product_id = request.resolver_match.kwargs.get("object_id")
        latest = list(
            ReorderDecision.objects.filter(product_id=product_id)  # type: ignore[misc]  # None: add page
            .order_by("-created_at", "-id")
            .values_list("pk", flat=True)[:10]
        )
        return super().get_queryset(request).filter(pk__in=latest)


class SecondsField(forms.FloatField):
    """Seconds shown to a tenth; a value staff leave as shown is not changed."""

    def prepare_value(self, value: Any) -> Any:
        return round(value, 1) if isinstance(value, float) else value

    def has_changed(self, initial: Any, data: Any) -> bool:
        return super().has_changed(self.prepare_value(initial), data)


class FactoryAdminForm(forms.ModelForm):
    class Meta:
        model = Factory
        fields = ["code", "name", "manager_email", "capacity", "reorder_ceiling", "lead_time"]
        field_classes = {"lead_time": SecondsField}


@admin.register(Factory)
class FactoryAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "manager_email",
        "capacity",
        "reorder_ceiling",
        "lead_time_seconds",
    ]
    search_fields = ["code", "name", "manager_email"]
    form = FactoryAdminForm
    fields = [
        "code",
        "name",
        "manager_email",
        "capacity",
        "reorder_ceiling",
        "lead_time",
        "measured_lead_times",
    ]
    readonly_fields = ["measured_lead_times"]

    @admin.display(description="lead time", ordering="lead_time")
    def lead_time_seconds(self, obj: Factory) -> str:
        return in_seconds(obj.lead_time)

    def save_model(
        self, request: HttpRequest, obj: Factory, form: FactoryAdminForm, change: bool
    ) -> None:
        """Save only what staff changed: the lead time callbacks measured meanwhile stays."""
        if not change:
            super().save_model(request, obj, form, change)
        elif form.changed_data:
            obj.save(update_fields=form.changed_data)

    @admin.display(description="last measured lead times")
    def measured_lead_times(self, obj: Factory) -> str:
        """The callbacks' measures the estimate is the median of, oldest first."""
        return ", ".join(f"{seconds:.1f} s" for seconds in obj.lead_time_samples) or "-"


class StockInput(AdminIntegerFieldWidget):
    """A number input that also posts the value it was shown with."""

    def render(
        self,
        name: str,
        value: Any,
        attrs: dict[str, Any] | None = None,
        renderer: BaseRenderer | None = None,
    ) -> SafeString:
        shown = "" if value is None else value
        return super().render(name, value, attrs, renderer) + format_html(
            '<input type="hidden" name="{}_seen" value="{}">', name, shown
        )


class ProductAdminForm(forms.ModelForm):
    class Meta:
        model = Product
        fields = [
            "sku",
            "name",
            "description",
            "price",
            "factory",
            "stock",
            "replenishment_mode",
            "restock_quantity",
            "min_order_quantity",
            "max_order_quantity",
            "reorder_ceiling",
            "purchase_limit",
        ]
        widgets = {"stock": StockInput}

    def stock_edited(self) -> bool:
        """True when staff typed a new stock, not when orders moved it while the form was open."""
        seen = self.data.get(f"{self.add_prefix('stock')}_seen")
        return not seen or str(self.cleaned_data["stock"]) != seen


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = [
        "sku",
        "name",
        "price",
        "stock",
        "on_order",
        "promised",
        "incoming",
        "replenishment_mode",
        "demand",
        "reorder_point",
        "ceiling",
        "lead_time",
        "restock",
        "alerts",
        "factory",
        "depleted_at",
    ]
    list_editable = ["stock"]
    form = ProductAdminForm
    list_filter = [SoldOutFilter, NeedsStaffFilter, "replenishment_mode", "factory"]
    search_fields = ["sku", "name"]
    list_select_related = ["factory"]
    readonly_fields = [
        "on_order",
        "promised",
        "demand",
        "reorder_point",
        "lead_time",
        "units_sold",
        "units_refused",
        "orders_refused",
        "orders_limited",
        "depleted_at",
        "updated_at",
    ]
    # factory_bridge's admin shows these pages with the product's restocks added.
    inlines = [ReorderDecisionInline, StockAdjustmentInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return product_list_for_staff()

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm]:
        return super().get_changelist_form(request, form=ProductAdminForm, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Product, form: ProductAdminForm, change: bool
    ) -> None:
        """Save only what staff changed; a stock change goes through set_stock (audited).

        Writing the whole row would put back the stock the form was loaded with and undo
        the orders placed meanwhile.
        """
        if not change:
            super().save_model(request, obj, form, change)
            return
        fields = [name for name in form.changed_data if name != "stock"]
        if fields:
            obj.save(update_fields=[*fields, "updated_at"])
        if "stock" in form.changed_data and form.stock_edited():
            adjustment = set_stock(
                sku=obj.sku, quantity=form.cleaned_data["stock"], note=f"admin: {request.user}"
            )
            messages.info(
                request,
                f"{obj.sku} counted at {adjustment.new_quantity}. {count_outcome()}",
            )

    @admin.display(description="latest restock", ordering="restock_status")
    def restock(self, obj: Product) -> str:
        if not obj.restock_status:
            return "-"
        label = obj.get_restock_status_display()
        if obj.stock == 0 and obj.restock_status == RestockStatus.FAILED:
            return format_html(
                '<strong class="needs-staff" title="{}">{}</strong>',
                NEEDS_STAFF_HINT,
                label,
            )
        return label

    @admin.display(description="back-in-stock alerts", ordering="alerts_waiting")
    def alerts(self, obj: "WithAnnotations[Product, StaffListed]") -> str:
        url = reverse("admin:inventory_stockalert_changelist") + f"?product__id__exact={obj.pk}"
        return format_html(
            '<a href="{}">{} waiting, {} notified</a>', url, obj.alerts_waiting, obj.alerts_notified
        )

    @admin.display(description="demand", ordering="demand_rate")
    def demand(self, obj: Product) -> str:
        return per_second(obj.demand_rate)

    @admin.display(description="lead time", ordering="factory__lead_time")
    def lead_time(self, obj: Product) -> str:
        return in_seconds(obj.factory.lead_time)

    @admin.display(description="ceiling")
    def ceiling(self, obj: Product) -> str:
        if obj.reorder_ceiling is None:
            return f"{obj.factory.reorder_ceiling} (factory)"
        return str(obj.reorder_ceiling)


# A decision is a batch: what of it is promised to pre-orders, when it is due, and when it
# arrived or was given up.
BATCH_FIELDS = ["promised", "due_at", "settled_at"]


@admin.register(ReorderDecision)
class ReorderDecisionAdmin(DecisionNumbers, ReadOnlyAdmin):
    list_display = [*DECISION_FIELDS[:1], "product", "mode", *DECISION_FIELDS[1:], *BATCH_FIELDS]
    # The page of one decision: the same numbers, rounded alike.
    fields = readonly_fields = (
        *DECISION_FIELDS[:1],
        "product",
        "mode",
        *DECISION_FIELDS[1:],
        *BATCH_FIELDS,
    )
    list_filter = ["mode", "product"]
    search_fields = ["product__sku", "reason"]
    list_select_related = ["product"]


@admin.register(Promise)
class PromiseAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "product",
        "quantity",
        "state",
        "batch",
        "ready_by",
        "settled_at",
        "reason",
    ]
    list_filter = ["state", "product"]
    search_fields = ["=id", "product__sku"]
    list_select_related = ["product", "batch__product"]


@admin.register(StockAdjustment)
class StockAdjustmentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "product", "reason", "old_quantity", "new_quantity", "note"]
    list_filter = ["reason"]
    search_fields = ["product__sku", "note"]
    list_select_related = ["product"]


class AlertStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("unconfirmed", "Waiting for confirmation"),
            ("waiting", "Confirmed, waiting"),
            ("due", "Email due"),
            ("notified", "Notified"),
            ("unsubscribed", "Unsubscribed"),
            ("failed", "Failed"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "unconfirmed":
            return queryset.filter(waiting=True, confirmed_at__isnull=True)
        if value == "waiting":
            return queryset.filter(waiting=True, confirmed_at__isnull=False)
        if value == "due":
            return queryset.filter(waiting=True, due_at__isnull=False)
        if value in ("notified", "unsubscribed", "failed"):
            return queryset.filter(**{f"{value}_at__isnull": False})
        return queryset


@admin.register(StockAlert)
class StockAlertAdmin(ReadOnlyAdmin):
    list_display = [
        "email",
        "product",
        "created_at",
        "confirmed_at",
        "waiting",
        "due_at",
        "attempts",
        "notified_at",
        "unsubscribed_at",
        "failed_at",
        "error",
    ]
    list_filter = [AlertStateFilter, "product"]
    search_fields = ["email", "mailbox", "product__sku"]
    list_select_related = ["product"]


@admin.register(SuppressedAddress)
class SuppressedAddressAdmin(ReadOnlyAdmin):
    """Mailboxes that get no email. Deleting one (staff, on the owner's request) lifts it."""

    list_display = ["mailbox", "reason", "detail", "created_at"]
    list_filter = ["reason"]
    search_fields = ["mailbox"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return bool(request.user.has_perm("inventory.delete_suppressedaddress"))
