"""Placing orders: take stock atomically or refuse, and record what happened."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from factory_bridge import events
from inventory.exceptions import InvalidQuantity
from inventory.services import mark_depleted, take_stock
from shop.exceptions import OutOfStock
from shop.models import Order

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderResult:
    order: Order
    sku: str
    remaining_stock: int


def place_order(*, sku: str, quantity: int, channel: str = Order.Channel.API) -> OrderResult:
    """Take `quantity` units of `sku`; raise OutOfStock (order recorded as rejected) if short."""
    if not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
        raise InvalidQuantity(
            f"Quantity must be between 1 and {settings.ORDER_MAX_QUANTITY} (got {quantity})."
        )
    with transaction.atomic():
        taken, stock = take_stock(sku=sku, quantity=quantity)
        # Opened before the order row is written: that insert takes a shared lock on the
        # product (foreign key), and two refusals holding it would deadlock on this update.
        opened = (
            stock.remaining == 0
            and not stock.depleted
            and mark_depleted(product_id=stock.product_id)
        )
        status = Order.Status.COMPLETED if taken else Order.Status.REJECTED
        order = Order.objects.create(
            product_id=stock.product_id,
            quantity=quantity,
            status=status,
            channel=channel,
            remaining_stock=stock.remaining,
        )
        happened = [events.order_placed(order=order, stock=stock)]
        if opened:
            happened.append(events.depleted(stock=stock))
            logger.info("stock depleted sku=%s order=%s", stock.sku, order.pk)
        events.record(happened)
    if not taken:
        logger.info(
            "order rejected order=%s sku=%s quantity=%s stock=%s",
            order.pk,
            stock.sku,
            quantity,
            stock.remaining,
        )
        raise OutOfStock(order=order, sku=stock.sku, available=stock.remaining)
    # Completed orders are the bulk of the traffic; their rows and events are the record.
    logger.debug(
        "order completed order=%s sku=%s quantity=%s stock=%s",
        order.pk,
        stock.sku,
        quantity,
        stock.remaining,
    )
    return OrderResult(order=order, sku=stock.sku, remaining_stock=stock.remaining)
