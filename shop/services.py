"""Placing orders: take stock atomically or refuse, and record what happened."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from inventory import events, outbox
from inventory.models import Promise
from inventory.selectors import product_ids
from inventory.services import (
    Also,
    StockState,
    count_limited,
    count_refused,
    promise,
    quiet_take,
    quiet_take_many,
    rollback,
    row_units,
    take_stock,
)
from nudged.core.logs import add_to_log_context
from shop.exceptions import BasketShort, OutOfStock, PurchaseLimitReached, ShortLine
from shop.models import Basket, Order, new_reference

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderResult:
    """An order placed, as its channels answer it."""

    order_id: int
    reference: str
    status: str
    quantity: int
    sku: str
    remaining_stock: int
    unit_price: int = 0
    # A pre-order's promised time.
    ready_by: datetime | None = None


@dataclass(frozen=True)
class BasketResult:
    """A basket placed: its lines, in the order they were asked for."""

    reference: str
    lines: tuple[OrderResult, ...]

    @property
    def status(self) -> str:
        """Backordered until its last line is ready, completed then."""
        waiting = any(line.status == Order.Status.BACKORDERED for line in self.lines)
        return Order.Status.BACKORDERED if waiting else Order.Status.COMPLETED

    @property
    def total(self) -> int:
        return sum(line.unit_price * line.quantity for line in self.lines)

    @property
    def ready_by(self) -> datetime | None:
        return max((line.ready_by for line in self.lines if line.ready_by), default=None)


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


def place_order(
    *,
    sku: str,
    quantity: int,
    channel: str = Order.Channel.API,
    customer: str = "",
    address: str = "",
    backorder: bool = False,
    email: str = "",
) -> OrderResult:
    """Take `quantity` units of `sku`, or raise OutOfStock (counted on the product).

    The arguments are an order that passed the order path's checks (shop.orders.take_order,
    which every channel calls): validated, and within the client's rate limit.

    With `backorder`, an order the shelf cannot serve is a pre-order instead when production
    can serve it (inventory.services.promise): its row is `backordered` with the promise's
    time, `order.backordered` goes out, and its batch serves it when it lands (or it is
    moved, or cancelled: shop.ports). `email`, a pre-order's, gets its notices. A
    pre-order is no refusal: only when production cannot serve it either is it counted as one.

    With a `customer`, the purchase limit applies, and with an `address` (the client
    address's key, shop.limits.address_key) the ceiling for everyone at that address, on
    every channel together: PurchaseLimitReached when this order would take either past it
    (nothing is taken; the product counts the limited order).
    A refusal counts as demand per address (or per customer without one) only up to what
    that client could buy, so a flood of refused orders cannot buy factory production.

    A refusal writes no order row and no event of its own: in a rush on a sold-out donut
    it would cost both per request. The product counts it, and the ops feed hears of
    refusals in aggregate. What the order set off (a depletion, a reorder) inventory
    decides and announces in the same transaction.
    """
    order = _quick_sell(
        sku=sku, quantity=quantity, channel=channel, customer=customer, address=address
    ) or _place(
        sku=sku,
        quantity=quantity,
        channel=channel,
        customer=customer,
        address=address,
        backorder=backorder,
        email=email,
    )
    # The rest of the request logs it too (Django's, gunicorn's access line).
    add_to_log_context(order=order.order_id)
    # Completed orders are the bulk of the traffic; their rows and events are the record.
    logger.debug(
        "order completed order=%s sku=%s quantity=%s stock=%s",
        order.order_id,
        order.sku,
        quantity,
        order.remaining_stock,
    )
    return order


def _place(
    *,
    sku: str,
    quantity: int,
    channel: str,
    customer: str,
    address: str,
    backorder: bool,
    email: str,
) -> OrderResult:
    """The order decided under the product's row lock in transaction.atomic, with whatever it
    sets off (a refusal counted, a depletion, a reorder, a pre-order, a limit reached)."""
    order = None
    also = _bought_read(customer=customer, address=address) if customer or address else None
    try:
        with transaction.atomic():
            outcome = take_stock(
                sku=sku,
                quantity=quantity,
                client=address or customer,
                count_refusal=not backorder,
                also=also,
            )
            stock = outcome.state
            if not outcome.taken and backorder:
                stock, order = _backorder(
                    sku=sku,
                    quantity=quantity,
                    channel=channel,
                    customer=customer,
                    address=address,
                    email=email,
                )
            elif outcome.taken:
                order = _sell(
                    stock=stock,
                    quantity=quantity,
                    channel=channel,
                    customer=customer,
                    address=address,
                    bought=outcome.also,
                )
    except PurchaseLimitReached as limited:
        count_limited(product_id=stock.product_id)
        logger.info(
            "order limited sku=%s quantity=%s scope=%s bought=%s",
            sku[:32],
            quantity,
            limited.scope,
            limited.bought,
        )
        raise
    if order is None:
        logger.info(
            "order refused sku=%s quantity=%s stock=%s", stock.sku, quantity, stock.remaining
        )
        raise OutOfStock(
            sku=stock.sku, name=stock.name, available=stock.remaining, requested=quantity
        )
    return order


# An order that sets nothing else off, in one round trip: the units taken (quiet_take, with
# the purchase limits as its condition), the order's row written from the product row the
# UPDATE locked, and COMMIT. The row lock is held only while MariaDB runs these statements,
# never across a round trip or the web process's own work. ROW_COUNT() is the UPDATE's.
QUICK_ORDER_SQL = (
    "START TRANSACTION; {take}; INSERT INTO `shop_order` (`product_id`, `quantity`, `status`, "
    "`channel`, `unit_price`, `remaining_stock`, `customer`, `address`, `reference`, "
    "`created_at`) SELECT `p`.`id`, %s, %s, %s, `p`.`price`, `p`.`stock`, %s, %s, %s, %s "
    "FROM `inventory_product` `p` WHERE `p`.`sku` = %s AND ROW_COUNT() = 1 "
    "RETURNING `id`, `remaining_stock`, `unit_price`, (SELECT `q`.`sku` "
    "FROM `inventory_product` `q` WHERE `q`.`id` = `product_id`); COMMIT"
)


def _quick_sell(
    *, sku: str, quantity: int, channel: str, customer: str, address: str
) -> OrderResult | None:
    """The order in one round trip when it sets nothing else off, or None (nothing changed):
    the caller then places it in transaction.atomic (_place). Inside a caller's transaction
    it is always None."""
    if connection.in_atomic_block:
        return None
    reference = new_reference()
    sql, params = quick_order(
        sku=sku,
        quantity=quantity,
        channel=channel,
        customer=customer,
        address=address,
        reference=reference,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            # Read from MySQLdb's cursor under one error wrapper: Django's wraps every call.
            with connection.wrap_database_errors:
                results = cursor.cursor
                results.nextset()  # the UPDATE's
                results.nextset()  # the INSERT's
                row = results.fetchone()
                results.nextset()  # COMMIT's
    except BaseException:
        rollback()
        raise
    if row is None:
        return None
    order_id, remaining, unit_price, canonical_sku = row
    outbox.sold()
    return OrderResult(
        order_id=order_id,
        reference=reference,
        status=Order.Status.COMPLETED,
        quantity=quantity,
        sku=canonical_sku,
        remaining_stock=remaining,
        unit_price=unit_price,
    )


def quick_order(
    *, sku: str, quantity: int, channel: str, customer: str, address: str, reference: str
) -> tuple[str, list[str | int | None]]:
    """QUICK_ORDER_SQL for this order, and its parameters."""
    limits = _within_limits(customer=customer, address=address, quantity=quantity)
    take, params = quiet_take(sku=sku, quantity=quantity, also=limits)
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    params += [quantity, Order.Status.COMPLETED, channel, customer, address, reference]
    params += [created_at, sku]
    return QUICK_ORDER_SQL.format(take=take), params


def _sell(
    *,
    stock: StockState,
    quantity: int,
    channel: str,
    customer: str,
    address: str,
    bought: tuple | None,
) -> OrderResult:
    """The order of units taken, under the product's row lock, within the purchase limits:
    the orders of it from one customer, or one address, are counted one at a time. Raising
    rolls the caller's atomic block back."""
    if customer or address:
        _check_limits(
            stock=stock, customer=customer, address=address, quantity=quantity, bought=bought
        )
    order_id, reference = _insert_order(
        product_id=stock.product_id,
        quantity=quantity,
        unit_price=stock.price,
        channel=channel,
        remaining_stock=stock.remaining,
        customer=customer,
        address=address,
    )
    outbox.sold()
    return OrderResult(
        order_id=order_id,
        reference=reference,
        status=Order.Status.COMPLETED,
        quantity=quantity,
        sku=stock.sku,
        remaining_stock=stock.remaining,
        unit_price=stock.price,
    )


def _backorder(
    *, sku: str, quantity: int, channel: str, customer: str, address: str, email: str
) -> tuple[StockState, OrderResult | None]:
    """Promise the units from production and write the pre-order, or count the refusal."""
    stock, promised = promise(sku=sku, quantity=quantity, email=email)
    if promised is None:
        return count_refused(state=stock, quantity=quantity, client=address or customer), None
    if customer or address:
        # Under the product's row lock, which promise took; raising rolls the promise back.
        _check_limits(stock=stock, customer=customer, address=address, quantity=quantity)
    order = _write_order(
        stock=stock,
        quantity=quantity,
        channel=channel,
        customer=customer,
        address=address,
        promised=promised,
    )
    logger.info(
        "order backordered order=%s sku=%s quantity=%s ready_by=%s",
        order.order_id,
        stock.sku,
        quantity,
        promised.ready_by.isoformat(),
    )
    return stock, order


# MariaDB's codes for a transaction it rolled back to break a deadlock, and for a lock wait
# that timed out: a basket placed again then finds the rows free.
RETRIED = (1213, 1205)
BASKET_ATTEMPTS = 3


def place_basket(
    *,
    lines: list[Line],
    channel: str = Order.Channel.API,
    customer: str = "",
    address: str = "",
    backorder: bool = False,
    email: str = "",
) -> BasketResult:
    """Take every line's units in one transaction, or none of them: BasketShort names each
    line the shelf could not serve (each counted as a refusal on its product).

    Lines are one per product; their rows are locked in the order of their product ids, so
    two baskets of the same donuts never wait for each other in a circle. A deadlock or lock
    timeout MariaDB reports anyway is retried. Each line is an order row of its own, with its
    unit price, its purchase limits (PurchaseLimitReached, nothing taken) and its sale; with
    `backorder`, a line the shelf cannot serve is a pre-order when production can serve it,
    and the basket is ready when its last line is. Raises UnknownSku for a SKU no product has.
    """
    for attempt in range(1, BASKET_ATTEMPTS + 1):
        try:
            quick = _quick_basket(lines=lines, channel=channel, customer=customer, address=address)
            if quick is not None:
                return quick
            return _place_basket(
                lines=lines,
                channel=channel,
                customer=customer,
                address=address,
                backorder=backorder,
                email=email,
            )
        except OperationalError as exc:
            if exc.args[0] not in RETRIED or attempt == BASKET_ATTEMPTS:
                raise
            logger.warning("basket placed again after attempt=%s error=%s", attempt, exc.args[0])
    raise AssertionError("unreachable")


# A basket that sets nothing else off, in one round trip after its products' ids are read:
# every line's units taken in one UPDATE (quiet_take_many, the purchase limits its
# condition), then, only when it took all of them, the basket's row and one order row per
# line from the rows it locked; COMMIT when it took them all, ROLLBACK otherwise, decided by
# MariaDB itself (a compound statement), so the row locks are never held across a round trip.
QUICK_BASKET_SQL = (
    "START TRANSACTION; {take}; SET @taken = ROW_COUNT(); "
    "INSERT INTO `shop_basket` (`reference`, `created_at`) SELECT %s, %s FROM DUAL "
    "WHERE @taken = {lines}; "
    "INSERT INTO `shop_order` (`product_id`, `quantity`, `status`, `channel`, `unit_price`, "
    "`remaining_stock`, `customer`, `address`, `reference`, `created_at`, `basket_id`) "
    "SELECT `p`.`id`, {units}, %s, %s, `p`.`price`, `p`.`stock`, %s, %s, {references}, %s, "
    "LAST_INSERT_ID() FROM `inventory_product` `p` WHERE `p`.`id` IN ({ids}) "
    "AND @taken = {lines} ORDER BY `p`.`id` "
    "RETURNING `id`, `product_id`, `remaining_stock`, `unit_price`, `reference`; "
    "BEGIN NOT ATOMIC IF @taken = {lines} THEN COMMIT; ELSE ROLLBACK; END IF; END"
)


def _quick_basket(
    *, lines: list[Line], channel: str, customer: str, address: str
) -> BasketResult | None:
    """The basket when every line comes from the shelf and sets nothing else off, or None
    (nothing changed): the caller then places it in transaction.atomic. Raises UnknownSku."""
    if connection.in_atomic_block:
        return None
    ids = product_ids(skus=[line.sku for line in lines])
    units = {ids[line.sku.casefold()][0]: line.quantity for line in lines}
    limits = _within_limits(customer=customer, address=address, units=row_units(units))
    take, params = quiet_take_many(units=units, also=limits)
    references = {pk: new_reference() for pk in units}
    reference = new_reference()
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    sql = QUICK_BASKET_SQL.format(
        take=take,
        lines=len(units),
        units=row_units(units),
        references="CASE `p`.`id` " + "WHEN %s THEN %s " * len(units) + "END",
        ids=", ".join(str(pk) for pk in units),
    )
    params += [reference, now, Order.Status.COMPLETED, channel, customer, address]
    params += [value for pair in references.items() for value in pair]
    params.append(now)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            with connection.wrap_database_errors:
                results = cursor.cursor
                for _ in range(4):  # START's, the UPDATE's, SET's, the basket's
                    results.nextset()
                rows = results.fetchall()
                results.nextset()  # COMMIT's or ROLLBACK's
    except BaseException:
        rollback()
        raise
    if not rows:
        return None
    outbox.sold()
    stored = {pk: sku for pk, sku in ids.values()}
    placed = {
        product_id: OrderResult(
            order_id=order_id,
            reference=line_reference,
            status=Order.Status.COMPLETED,
            quantity=units[product_id],
            sku=stored[product_id],
            remaining_stock=remaining,
            unit_price=unit_price,
        )
        for order_id, product_id, remaining, unit_price, line_reference in rows
    }
    return BasketResult(
        reference=reference, lines=tuple(placed[ids[line.sku.casefold()][0]] for line in lines)
    )


def _place_basket(
    *,
    lines: list[Line],
    channel: str,
    customer: str,
    address: str,
    backorder: bool,
    email: str,
) -> BasketResult:
    ids = product_ids(skus=[line.sku for line in lines])
    placed: dict[Line, OrderResult] = {}
    short: list[tuple[Line, StockState]] = []
    stock = None
    try:
        with transaction.atomic():
            basket = Basket.objects.create()
            for line in sorted(lines, key=lambda line: ids[line.sku.casefold()][0]):
                stock, result = _basket_line(
                    line=line,
                    basket=basket,
                    channel=channel,
                    customer=customer,
                    address=address,
                    backorder=backorder,
                    email=email,
                )
                if result is None:
                    short.append((line, stock))
                else:
                    placed[line] = result
            if short:
                transaction.set_rollback(True)
    except PurchaseLimitReached as limited:
        if stock is not None:
            count_limited(product_id=stock.product_id)
        logger.info("basket limited sku=%s scope=%s", limited.sku, limited.scope)
        raise
    if short:
        with transaction.atomic():
            counted = [
                (
                    line,
                    count_refused(state=state, quantity=line.quantity, client=address or customer),
                )
                for line, state in short
            ]
        logger.info("basket refused short=%s", ",".join(line.sku[:32] for line, _ in short))
        raise BasketShort(
            [
                ShortLine(
                    sku=state.sku,
                    name=state.name,
                    requested=line.quantity,
                    available=state.remaining,
                )
                for line, state in counted
            ]
        )
    outbox.sold()
    logger.info("basket placed basket=%s lines=%s", basket.pk, len(lines))
    return BasketResult(reference=basket.reference, lines=tuple(placed[line] for line in lines))


def _basket_line(
    *,
    line: Line,
    basket: Basket,
    channel: str,
    customer: str,
    address: str,
    backorder: bool,
    email: str,
) -> tuple[StockState, OrderResult | None]:
    """One line of a basket, under its product's row lock: its order row, or None when the
    shelf (and, with `backorder`, production) cannot serve it."""
    limited = bool(customer or address)
    outcome = take_stock(
        sku=line.sku,
        quantity=line.quantity,
        count_refusal=False,
        also=_bought_read(customer=customer, address=address) if limited else None,
    )
    stock, promised = outcome.state, None
    if not outcome.taken:
        if not backorder:
            return stock, None
        stock, promised = promise(sku=line.sku, quantity=line.quantity, email=email)
        if promised is None:
            return stock, None
    if limited:
        bought = outcome.also if promised is None else None
        _check_limits(
            stock=stock, customer=customer, address=address, quantity=line.quantity, bought=bought
        )
    return stock, _write_order(
        stock=stock,
        quantity=line.quantity,
        channel=channel,
        customer=customer,
        address=address,
        promised=promised,
        basket=basket,
    )


def _write_order(
    *,
    stock: StockState,
    quantity: int,
    channel: str,
    customer: str,
    address: str,
    promised: Promise | None,
    basket: Basket | None = None,
) -> OrderResult:
    """The row of an order taken under the product's row lock: completed, or a pre-order of
    `promised` (whose order.backordered goes to the outbox with it)."""
    status = Order.Status.BACKORDERED if promised else Order.Status.COMPLETED
    order = Order.objects.create(
        product_id=stock.product_id,
        quantity=quantity,
        unit_price=stock.price,
        status=status,
        channel=channel,
        remaining_stock=stock.remaining,
        customer=customer,
        address=address,
        promise=promised,
        basket=basket,
    )
    if promised is not None:
        outbox.record(
            [
                events.backordered(
                    order_id=order.pk,
                    sku=stock.sku,
                    factory_code=stock.factory_code,
                    quantity=quantity,
                    ready_by=promised.ready_by,
                )
            ]
        )
    return OrderResult(
        order_id=order.pk,
        reference=order.reference,
        status=status,
        quantity=quantity,
        sku=stock.sku,
        remaining_stock=stock.remaining,
        unit_price=stock.price,
        ready_by=promised.ready_by if promised else None,
    )


def complete_pre_orders(*, promise_ids: list[int]) -> int:
    """Their batch served these promises: their orders are completed, their sales published
    with the others. Call in the transaction that kept them; returns how many."""
    completed = Order.objects.filter(
        promise_id__in=promise_ids, status=Order.Status.BACKORDERED
    ).update(status=Order.Status.COMPLETED, fulfilled_at=timezone.now())
    outbox.sold()
    return completed


def cancel_pre_orders(*, reasons: dict[int, str]) -> int:
    """These promises (id: reason) were cancelled: so are their orders, which are no sales
    (marked published), and order.cancelled tells the ops feed. Call in the transaction that
    cancelled them; returns how many."""
    waiting = Order.objects.filter(promise_id__in=reasons, status=Order.Status.BACKORDERED)
    orders = list(waiting.select_related("product__factory"))
    if not orders:
        return 0
    waiting.update(status=Order.Status.CANCELLED, published_at=timezone.now())
    outbox.record(
        [
            events.cancelled(
                order_id=order.pk,
                sku=order.product.sku,
                factory_code=order.product.factory.code,
                quantity=order.quantity,
                reason=reasons[order.promise_id],  # type: ignore[index]  # filtered on promise_id__in
            )
            for order in orders
        ]
    )
    logger.info("pre-orders cancelled orders=%s", ",".join(str(o.pk) for o in orders))
    return len(orders)


ORDER_SQL = (
    "INSERT INTO `shop_order` (`product_id`, `quantity`, `status`, `channel`, `unit_price`, "
    "`remaining_stock`, `customer`, `address`, `reference`, `created_at`) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING `id`"
)


def _insert_order(
    *,
    product_id: int,
    quantity: int,
    unit_price: int,
    channel: str,
    remaining_stock: int,
    customer: str,
    address: str,
) -> tuple[int, str]:
    """Write a completed order's row: its id and reference (no model instance per order)."""
    reference = new_reference()
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    status = Order.Status.COMPLETED
    values: list[int | str | None] = [product_id, quantity, status, channel, unit_price]
    values += [remaining_stock, customer, address, reference, created_at]
    with connection.cursor() as cursor:
        cursor.execute(ORDER_SQL, values)
        return cursor.fetchone()[0], reference


# Customers at one address who may each buy their whole limit in one window unless
# PURCHASE_LIMIT_PER_ADDRESS says otherwise: a household, an office or a classroom behind one
# NAT keeps buying (most customers buy one or two, so twenty or more fit under the default
# ceiling of 50), while a client that drops its cookies gets five customers' share at most.
ADDRESS_CUSTOMERS = 5


def purchase_limit(stock: StockState) -> int:
    """Units one customer may buy of this product per window; 0 means no limit."""
    return settings.PURCHASE_LIMIT if stock.purchase_limit is None else stock.purchase_limit


def address_limit(stock: StockState) -> int:
    """Units everyone at one client address may buy of this product per window; 0: no limit."""
    if settings.PURCHASE_LIMIT_PER_ADDRESS is not None:
        return settings.PURCHASE_LIMIT_PER_ADDRESS
    return ADDRESS_CUSTOMERS * purchase_limit(stock)


# The limits, as expressions over the product `p`: the customer's, then the address's
# ceiling (0: off).
CUSTOMER_LIMIT = "COALESCE(`p`.`purchase_limit`, %s)"
ADDRESS_LIMIT = "COALESCE(%s, %s * COALESCE(`p`.`purchase_limit`, %s))"
# What one customer, or everyone at one address, bought of the product `p` in the window, each
# a range of its own index (waiting pre-orders count, cancelled ones do not). The indexes are
# named: the product's index would read every order of the product instead (the optimizer's
# choice while the table is small).
CUSTOMER_BOUGHT = (
    "(SELECT COALESCE(SUM(`quantity`), 0) FROM `shop_order` FORCE INDEX (`order_customer`) "
    "WHERE `customer` = %s AND `product_id` = `p`.`id` AND `created_at` >= %s "
    "AND `status` <> 'cancelled')"
)
ADDRESS_BOUGHT = (
    "(SELECT COALESCE(SUM(`quantity`), 0) FROM `shop_order` FORCE INDEX (`order_address`) "
    "WHERE `address` = %s AND `product_id` = `p`.`id` AND `created_at` >= %s "
    "AND `status` <> 'cancelled')"
)
# Both counts as columns of take_stock's read of the state, under the product's row lock. A
# count whose limit is off is not read at all: one address's orders, many with no limit on,
# would be a long range.
BOUGHT = (
    f"CASE WHEN {CUSTOMER_LIMIT} > 0 THEN {CUSTOMER_BOUGHT} ELSE 0 END, "
    f"CASE WHEN {ADDRESS_LIMIT} > 0 THEN {ADDRESS_BOUGHT} ELSE 0 END"
)
# The same counts on their own, for a pre-order (promise holds the lock then).
BOUGHT_SQL = f"SELECT {BOUGHT} FROM `inventory_product` `p` WHERE `p`.`id` = %s"
# Each limit as a condition of the order's UPDATE (quiet_take): this order fits under it.
# `{units}`: the order's units of `p` (a parameter, or inventory.services.row_units).
WITHIN_CUSTOMER_LIMIT = (
    f"CASE WHEN {CUSTOMER_LIMIT} > 0 THEN {CUSTOMER_BOUGHT} + {{units}} <= {CUSTOMER_LIMIT} "
    "ELSE 1 END"
)
WITHIN_ADDRESS_LIMIT = (
    f"CASE WHEN {ADDRESS_LIMIT} > 0 THEN {ADDRESS_BOUGHT} + {{units}} <= {ADDRESS_LIMIT} ELSE 1 END"
)


def _bought_read(*, customer: str, address: str) -> Also:
    """What this order's customer and address bought of the product in the purchase-limit
    window, read with take_stock: (customer's units, address's units)."""
    return Also(columns=BOUGHT, params=_bought_params(customer=customer, address=address))


def _within_limits(
    *, customer: str, address: str, quantity: int | None = None, units: str = "%s"
) -> Also | None:
    """quiet_take's condition that this order fits under the customer's limit and the
    address's ceiling (a key not given has none): `quantity` units, or, for several products
    at once, the SQL of each one's `units`."""
    default = settings.PURCHASE_LIMIT
    per_address = settings.PURCHASE_LIMIT_PER_ADDRESS
    since = _since() if customer or address else ""
    given = [] if quantity is None else [quantity]
    conditions, params = [], []
    if customer:
        conditions.append(WITHIN_CUSTOMER_LIMIT.format(units=units))
        params += [default, customer, since, *given, default]
    if address:
        conditions.append(WITHIN_ADDRESS_LIMIT.format(units=units))
        limit = [per_address, ADDRESS_CUSTOMERS, default]
        params += [*limit, address, since, *given, *limit]
    if not conditions:
        return None
    return Also(columns=" AND ".join(conditions), params=params)


def _bought_params(*, customer: str, address: str) -> list[str | int | None]:
    """BOUGHT's parameters. `= NULL` matches no row: the count of a key not given costs
    nothing."""
    default = settings.PURCHASE_LIMIT
    per_address = settings.PURCHASE_LIMIT_PER_ADDRESS
    since = _since()
    return [
        *(default, customer or None, since),
        *(per_address, ADDRESS_CUSTOMERS, default, address or None, since),
    ]


def _since() -> str:
    """The start of the purchase-limit window, as the database compares it."""
    window = timedelta(seconds=settings.PURCHASE_LIMIT_WINDOW)
    return str(connection.ops.adapt_datetimefield_value(timezone.now() - window))


def _check_limits(
    *,
    stock: StockState,
    customer: str,
    address: str,
    quantity: int,
    bought: tuple | None = None,
) -> None:
    """Raise PurchaseLimitReached when this order would pass the customer's limit or the
    address's ceiling (the customer's is named when both would be passed). `bought`, BOUGHT_SQL's
    values when read already under the product's lock; read here otherwise."""
    limits = {
        PurchaseLimitReached.CUSTOMER: purchase_limit(stock) if customer else 0,
        PurchaseLimitReached.ADDRESS: address_limit(stock) if address else 0,
    }
    if not any(limits.values()):
        return
    if bought is None:
        with connection.cursor() as cursor:
            params = _bought_params(customer=customer, address=address)
            cursor.execute(BOUGHT_SQL, [*params, stock.product_id])
            bought = cursor.fetchone()
    counted = dict(zip(limits, (int(units) for units in bought), strict=True))
    for scope, limit in limits.items():
        if limit and counted[scope] + quantity > limit:
            raise PurchaseLimitReached(
                sku=stock.sku,
                name=stock.name,
                limit=limit,
                window=settings.PURCHASE_LIMIT_WINDOW,
                bought=counted[scope],
                scope=scope,
            )
