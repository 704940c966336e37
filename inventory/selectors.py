"""Reads of the catalog."""

from datetime import datetime
from math import ceil

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory.exceptions import UnknownSku
from inventory.models import Product, StockAlert
from inventory.promises import margin


def product_list() -> QuerySet[Product]:
    """Products in SKU order with their factory.

    Each row carries the restock on its way: `incoming`, the quantity the factory accepted to
    make and has not delivered (an order it has not accepted yet, or refused, is not on its
    way), and `restock_requested_at`, when it accepted the latest of them.
    """
    return Product.objects.select_related("factory").order_by("sku")


def product_list_for_staff() -> QuerySet[Product]:
    """`product_list` plus the back-in-stock alerts waiting and notified.

    Each row also carries `restock_status`, the status of the product's latest restock: a
    sold-out product whose latest restock failed needs staff, as nothing is on its way.
    """
    return product_list().annotate(
        alerts_waiting=_alert_count(waiting=True),
        alerts_notified=_alert_count(notified_at__isnull=False),
    )


def _alert_count(**condition: object) -> Coalesce:
    counts = (
        StockAlert.objects.filter(product=OuterRef("pk"), **condition)
        .order_by()
        .values("product")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(counts), 0)


def product_ids(*, skus: list[str]) -> dict[str, tuple[int, str]]:
    """The id and the SKU as stored of the products with these SKUs, by SKU casefolded (SKUs
    match whatever their case, as the database compares them); UnknownSku for the first that
    none has."""
    found = Product.objects.filter(sku__in=skus).values_list("sku", "pk")
    ids = {sku.casefold(): (pk, sku) for sku, pk in found}
    for sku in skus:
        if sku.casefold() not in ids:
            raise UnknownSku(sku)
    return ids


def product_get(*, sku: str) -> Product:
    """One product by SKU (with its factory), or UnknownSku."""
    product = product_list().filter(sku=sku).first()
    if product is None:
        raise UnknownSku(sku)
    return product


def ready_in_seconds(product: Product, *, now: datetime | None = None) -> int | None:
    """About how many seconds until the restock on its way arrives; None when none is.

    The factory's measured lead time less how long ago it accepted the order, never below 0
    (a late factory is due any moment).
    """
    if not product.incoming or product.restock_requested_at is None:
        return None
    waited = ((now or timezone.now()) - product.restock_requested_at).total_seconds()
    return max(0, ceil(product.factory.lead_time - waited))


def preorder_ready_in_seconds(product: Product, *, now: datetime | None = None) -> int:
    """About how many seconds a pre-order placed now would wait.

    Units on order nobody was promised come with the restock on its way; otherwise a new
    batch takes the factory's lead time. The margin promised on top is included.
    """
    lead_time = product.factory.lead_time
    due = ready_in_seconds(product, now=now) if product.on_order > product.promised else None
    wait = lead_time if due is None else due
    return ceil(wait + margin(lead_time).total_seconds())
