"""Writes to stock: what orders take, physical counts and factory arrivals."""

import logging
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory.catalog import FACTORIES, PRODUCTS
from inventory.exceptions import InvalidQuantity, UnknownSku
from inventory.models import Factory, Product, StockAdjustment

logger = logging.getLogger(__name__)

# The two statements of every order, written out: they run on each request, and the ORM
# spends several times the database's own time building and compiling them.
TAKE_SQL = (
    "UPDATE `inventory_product` SET `stock` = `stock` - %s WHERE `sku` = %s AND `stock` >= %s"
)
STOCK_SQL = (
    "SELECT `p`.`id`, `p`.`sku`, `p`.`stock`, `p`.`depleted_at` IS NOT NULL, "
    "`p`.`restock_quantity`, `f`.`code` FROM `inventory_product` `p` "
    "INNER JOIN `inventory_factory` `f` ON `f`.`id` = `p`.`factory_id` WHERE `p`.`sku` = %s"
)


class StockState(NamedTuple):
    """A product's stock right after an order, and what its events need to say."""

    product_id: int
    sku: str
    remaining: int
    depleted: bool
    restock_quantity: int
    factory_code: str


def take_stock(*, sku: str, quantity: int) -> tuple[bool, StockState]:
    """Take `quantity` units of `sku` if that many are on hand; call inside a transaction.

    One conditional UPDATE: its row lock makes concurrent orders queue, and its WHERE clause
    means stock never goes below zero. The state is then read under that lock. Returns
    whether the units were taken, and the state; raises UnknownSku (nothing changed).
    """
    with connection.cursor() as cursor:
        cursor.execute(TAKE_SQL, [quantity, sku, quantity])
        taken = cursor.rowcount == 1
        cursor.execute(STOCK_SQL, [sku])
        row = cursor.fetchone()
    if row is None:
        raise UnknownSku(sku)
    product_id, sku, remaining, depleted, restock_quantity, factory_code = row
    return taken, StockState(
        product_id, sku, remaining, bool(depleted), restock_quantity, factory_code
    )


def set_stock(*, sku: str, quantity: int, note: str = "") -> StockAdjustment:
    """Set on-hand stock after a physical count and record the adjustment."""
    try:
        Product._meta.get_field("stock").run_validators(quantity)
    except ValidationError as exc:
        raise InvalidQuantity(f"{' '.join(exc.messages)} Got {quantity}.") from exc
    with transaction.atomic():
        product = Product.objects.select_for_update().filter(sku=sku).first()
        if product is None:
            raise UnknownSku(sku)
        adjustment = StockAdjustment.objects.create(
            product=product,
            reason=StockAdjustment.Reason.COUNT,
            old_quantity=product.stock,
            new_quantity=quantity,
            note=note,
        )
        product.stock = quantity
        fields = ["stock", "updated_at"]
        if quantity > 0:
            product.depleted_at = None
            fields.append("depleted_at")
        product.save(update_fields=fields)
    logger.info("stock set sku=%s old=%s new=%s", sku, adjustment.old_quantity, quantity)
    return adjustment


def receive_stock(*, product_id: int, quantity: int, note: str) -> Product:
    """Add arrived units to stock and end the product's depletion; call inside a transaction."""
    product = Product.objects.select_for_update().get(pk=product_id)
    old = product.stock
    Product.objects.filter(pk=product_id).update(stock=F("stock") + quantity, depleted_at=None)
    product.refresh_from_db(fields=["stock", "depleted_at"])
    StockAdjustment.objects.create(
        product=product,
        reason=StockAdjustment.Reason.ARRIVAL,
        old_quantity=old,
        new_quantity=product.stock,
        note=note,
    )
    return product


def mark_depleted(*, product_id: int) -> bool:
    """Open a depletion unless one is open; True when this call opened it."""
    opened = Product.objects.filter(pk=product_id, depleted_at__isnull=True).update(
        depleted_at=timezone.now()
    )
    return opened == 1


def end_depletion(*, product_id: int) -> bool:
    """End an open depletion that no restock will answer; True when one was open.

    The next order that finds the product empty opens a new depletion and emits a new
    `stock.depleted`, instead of the product staying sold out with nothing on its way.
    """
    ended = Product.objects.filter(pk=product_id, depleted_at__isnull=False).update(
        depleted_at=None
    )
    return ended == 1


def load_catalog() -> tuple[int, int]:
    """Create the demo factories and products that are missing; return (created, kept)."""
    created = kept = 0
    with transaction.atomic():
        factories = {}
        for spec in FACTORIES:
            factory, _ = Factory.objects.get_or_create(code=spec["code"], defaults=spec)
            factories[factory.code] = factory
        for spec in PRODUCTS:
            defaults = {**spec, "factory": factories[spec["factory"]]}
            _, made = Product.objects.get_or_create(sku=spec["sku"], defaults=defaults)
            created += made
            kept += not made
    return created, kept
