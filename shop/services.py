"""Placing orders: take stock atomically or refuse, and record what happened."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from factory_bridge.services import outbox
from inventory.exceptions import InvalidQuantity
from inventory.services import StockState, count_limited, take_stock
from nudged.logs import add_to_log_context
from shop.exceptions import OutOfStock, PurchaseLimitReached
from shop.models import Order

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderResult:
    order: Order
    sku: str
    name: str
    remaining_stock: int


def place_order(
    *,
    sku: str,
    quantity: int,
    channel: str = Order.Channel.API,
    customer: str = "",
    address: str = "",
) -> OrderResult:
    """Take `quantity` units of `sku`, or raise OutOfStock (counted on the product).

    With a `customer`, the purchase limit applies: PurchaseLimitReached when this order
    would take them past it (nothing is taken; the product counts the limited order).
    `address` is the hashed client address: a refusal counts as demand per address (or per
    customer without one) only up to what that client could buy, so a flood of refused
    orders cannot buy factory production.

    A refusal writes no order row and no event of its own: in a rush on a sold-out donut
    it would cost both per request. The product counts it, and the ops feed hears of
    refusals in aggregate. What the order set off (a depletion, a reorder) inventory
    decides and announces in the same transaction.
    """
    if not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
        raise InvalidQuantity(
            f"Quantity must be between 1 and {settings.ORDER_MAX_QUANTITY} (got {quantity})."
        )
    try:
        with transaction.atomic():
            outcome = take_stock(sku=sku, quantity=quantity, client=address or customer)
            stock = outcome.state
            if outcome.taken:
                if customer:
                    # Under the product's row lock: one customer's orders of it are counted
                    # one at a time. Raising rolls the take back.
                    _check_limit(stock=stock, customer=customer, quantity=quantity)
                order = _insert_order(
                    product_id=stock.product_id,
                    quantity=quantity,
                    unit_price=stock.price,
                    status=Order.Status.COMPLETED,
                    channel=channel,
                    remaining_stock=stock.remaining,
                    customer=customer,
                )
                outbox.sold()
    except PurchaseLimitReached as limited:
        count_limited(product_id=stock.product_id)
        logger.info(
            "order limited sku=%s quantity=%s bought=%s", sku[:32], quantity, limited.bought
        )
        raise
    if not outcome.taken:
        logger.info(
            "order refused sku=%s quantity=%s stock=%s", stock.sku, quantity, stock.remaining
        )
        raise OutOfStock(
            sku=stock.sku, name=stock.name, available=stock.remaining, requested=quantity
        )
    # The rest of the request logs it too (Django's, gunicorn's access line).
    add_to_log_context(order=order.pk)
    # Completed orders are the bulk of the traffic; their rows and events are the record.
    logger.debug(
        "order completed order=%s sku=%s quantity=%s stock=%s",
        order.pk,
        stock.sku,
        quantity,
        stock.remaining,
    )
    return OrderResult(order=order, sku=stock.sku, name=stock.name, remaining_stock=stock.remaining)


ORDER_SQL = (
    "INSERT INTO `shop_order` (`product_id`, `quantity`, `status`, `channel`, `unit_price`, "
    "`remaining_stock`, `customer`, `reference`, `created_at`) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING `id`"
)


def _insert_order(**fields: object) -> Order:
    order = Order(**fields)
    order.created_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            ORDER_SQL,
            [
                order.product_id,
                order.quantity,
                order.status,
                order.channel,
                order.unit_price,
                order.remaining_stock,
                order.customer,
                order.reference,
                connection.ops.adapt_datetimefield_value(order.created_at),
            ],
        )
        order.pk = cursor.fetchone()[0]
    order._state.adding = False
    return order


def purchase_limit(stock: StockState) -> int:
    """Units one customer may buy of this product per window; 0 means no limit."""
    return settings.PURCHASE_LIMIT if stock.purchase_limit is None else stock.purchase_limit


def _check_limit(*, stock: StockState, customer: str, quantity: int) -> None:
    limit = purchase_limit(stock)
    if not limit:
        return
    window = settings.PURCHASE_LIMIT_WINDOW
    since = timezone.now() - timedelta(seconds=window)
    bought = (
        Order.objects.filter(
            customer=customer, product_id=stock.product_id, created_at__gte=since
        ).aggregate(units=Sum("quantity"))["units"]
        or 0
    )
    if bought + quantity > limit:
        raise PurchaseLimitReached(
            sku=stock.sku, name=stock.name, limit=limit, window=window, bought=bought
        )
