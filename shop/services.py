"""Placing orders: take stock atomically or refuse, and record what happened."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F

from factory_bridge import events
from inventory.exceptions import InvalidQuantity
from inventory.models import Product
from inventory.selectors import product_get
from inventory.services import mark_depleted
from shop.exceptions import OutOfStock
from shop.models import Order

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderResult:
    order: Order
    remaining_stock: int


def place_order(*, sku: str, quantity: int, channel: str = Order.Channel.API) -> OrderResult:
    """Take `quantity` units of `sku`; raise OutOfStock (order recorded as rejected) if short."""
    if not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
        raise InvalidQuantity(
            f"Quantity must be between 1 and {settings.ORDER_MAX_QUANTITY} (got {quantity})."
        )
    product = product_get(sku=sku, with_restock=False)
    with transaction.atomic():
        # One conditional UPDATE: the row lock makes concurrent orders queue here, and the
        # WHERE clause means stock can never go below zero.
        taken = Product.objects.filter(pk=product.pk, stock__gte=quantity).update(
            stock=F("stock") - quantity
        )
        remaining, depleted_at = (
            Product.objects.filter(pk=product.pk).values_list("stock", "depleted_at").get()
        )
        # Opened before the order row is written: that insert takes a shared lock on the
        # product (foreign key), and two refusals holding it would deadlock on this update.
        opened = remaining == 0 and depleted_at is None and mark_depleted(product_id=product.pk)
        status = Order.Status.COMPLETED if taken else Order.Status.REJECTED
        order = Order.objects.create(
            product=product,
            quantity=quantity,
            status=status,
            channel=channel,
            remaining_stock=remaining,
        )
        happened = [events.order_placed(order=order, product=product, remaining=remaining)]
        if opened:
            happened.append(events.depleted(product=product, stock=remaining))
            logger.info("stock depleted sku=%s order=%s", sku, order.pk)
        events.record(happened)
    if not taken:
        logger.info(
            "order rejected order=%s sku=%s quantity=%s stock=%s",
            order.pk,
            sku,
            quantity,
            remaining,
        )
        raise OutOfStock(order=order, available=remaining)
    logger.info(
        "order completed order=%s sku=%s quantity=%s stock=%s", order.pk, sku, quantity, remaining
    )
    return OrderResult(order=order, remaining_stock=remaining)
