"""Placing orders: take stock atomically or refuse, and record what happened."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from factory_bridge import events
from inventory.exceptions import InvalidQuantity
from inventory.services import take_stock
from shop.exceptions import OutOfStock
from shop.models import Order

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderResult:
    order: Order
    sku: str
    name: str
    remaining_stock: int


def place_order(*, sku: str, quantity: int, channel: str = Order.Channel.API) -> OrderResult:
    """Take `quantity` units of `sku`, or raise OutOfStock (counted on the product).

    A refusal writes no order row and no event of its own: in a rush on a sold-out donut
    it would cost both per request. The product counts it, and the ops feed hears of
    refusals in aggregate. What the order set off (a depletion, a reorder) inventory
    decides and announces in the same transaction.
    """
    if not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
        raise InvalidQuantity(
            f"Quantity must be between 1 and {settings.ORDER_MAX_QUANTITY} (got {quantity})."
        )
    with transaction.atomic():
        outcome = take_stock(sku=sku, quantity=quantity)
        stock = outcome.state
        if outcome.taken:
            order = Order.objects.create(
                product_id=stock.product_id,
                quantity=quantity,
                status=Order.Status.COMPLETED,
                channel=channel,
                remaining_stock=stock.remaining,
            )
            events.record([events.order_completed(order=order, stock=stock)])
    if not outcome.taken:
        logger.info(
            "order refused sku=%s quantity=%s stock=%s", stock.sku, quantity, stock.remaining
        )
        raise OutOfStock(
            sku=stock.sku, name=stock.name, available=stock.remaining, requested=quantity
        )
    # Completed orders are the bulk of the traffic; their rows and events are the record.
    logger.debug(
        "order completed order=%s sku=%s quantity=%s stock=%s",
        order.pk,
        stock.sku,
        quantity,
        stock.remaining,
    )
    return OrderResult(order=order, sku=stock.sku, name=stock.name, remaining_stock=stock.remaining)
