"""Writes to stock and every decision about it: orders, counts, arrivals and reorders."""

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import monotonic, sleep

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from inventory import events, outbox, policy, promises
from inventory.catalog import FACTORIES, PRODUCTS
from inventory.exceptions import InvalidNote, InvalidQuantity, UnknownSku
from inventory.models import (
    DemandSnapshot,
    Factory,
    Product,
    Promise,
    RefusedDemand,
    ReorderDecision,
    StockAdjustment,
)

logger = logging.getLogger(__name__)

# The statements of every order, written out: they run on each request, and the ORM spends
# several times the database's own time building and compiling them. Units sold and refused
# are counted in the same statements; the demand estimate reads their growth later. A raw
# UPDATE skips auto_now: taking stock sets `updated_at` itself (UTC, as Django stores it). A
# refusal also counts its units as the client's demand in the purchase-limit window, at most
# `cap` of them (REFUSED_DEMAND_SQL's parameters: product, client, window, then units and cap
# 4 times).
TAKE_SQL = (
    "UPDATE `inventory_product` SET `stock` = `stock` - %s, `units_sold` = `units_sold` + %s, "
    "`updated_at` = UTC_TIMESTAMP(6) WHERE `sku` = %s AND `stock` >= %s"
)
REFUSE_SQL = (
    "UPDATE `inventory_product` SET `units_refused` = `units_refused` + %s, "
    "`orders_refused` = `orders_refused` + 1 WHERE `sku` = %s"
)
# GREATEST keeps the room at zero when staff lowered the limit below what was counted.
_ROOM = "LEAST(%s, GREATEST(%s, `units`) - `units`)"
REFUSED_DEMAND_SQL = (
    "INSERT INTO `inventory_refuseddemand` "
    "(`product_id`, `client`, `window_start`, `units`, `pending`) "
    "VALUES (%s, %s, %s, LEAST(%s, %s), LEAST(%s, %s)) ON DUPLICATE KEY UPDATE "
    f"`pending` = `pending` + {_ROOM}, `units` = `units` + {_ROOM}"
)
STOCK_FIELDS = (
    "`p`.`id`, `p`.`sku`, `p`.`name`, `p`.`stock`, `p`.`depleted_at` IS NOT NULL, "
    "`p`.`restock_quantity`, `f`.`code`, `p`.`factory_id`, `p`.`replenishment_mode`, "
    "`p`.`on_order`, `p`.`demand_rate`, `p`.`reorder_point`, `p`.`min_order_quantity`, "
    "`p`.`max_order_quantity`, `p`.`purchase_limit`, `p`.`price`, "
    "COALESCE(`p`.`reorder_ceiling`, `f`.`reorder_ceiling`), `p`.`promised`"
)
STOCK_FROM = (
    "FROM `inventory_product` `p` INNER JOIN `inventory_factory` `f` ON `f`.`id` = `p`.`factory_id`"
)
STOCK_COLUMNS = f"{STOCK_FIELDS} {STOCK_FROM}"
STOCK_SQL = f"SELECT {STOCK_COLUMNS} WHERE `p`.`sku` = %s"
# Each pair goes in one round trip: the change, then the state under the row lock it took
# (with ROW_COUNT(), whether the change matched), and what the caller reads with it
# (take_stock's `also`: its columns after the state's).
TAKE_READ_SQL = (
    f"{TAKE_SQL}; SELECT ROW_COUNT(), {STOCK_FIELDS}{{columns}} {STOCK_FROM} WHERE `p`.`sku` = %s"
)
# An order's common case, settled by the UPDATE alone (quiet_take): stock left above zero (no
# depletion to open) and, for an adaptive product, its position at or above the reorder point
# (no reorder to decide: policy.needs_order, which a test holds this to).
# `{units}` is the row's units: a parameter for one product, a CASE over several.
QUIET_TAKE_SQL = (
    "UPDATE `inventory_product` `p` SET `p`.`stock` = `p`.`stock` - {units}, "
    "`p`.`units_sold` = `p`.`units_sold` + {units}, `p`.`updated_at` = UTC_TIMESTAMP(6) "
    "WHERE {rows} AND `p`.`stock` > {units} AND (`p`.`replenishment_mode` <> %s "
    "OR `p`.`stock` - {units} + `p`.`on_order` - `p`.`promised` >= `p`.`reorder_point`){also}"
)
# The product's row first: the upsert's foreign key check then needs no lock of its own on it
# (two refusals each holding a shared lock and waiting to update the row would deadlock).
REFUSE_READ_SQL = f"{REFUSE_SQL}; {REFUSED_DEMAND_SQL}; {STOCK_SQL}"
STATE_SQL = f"SELECT {STOCK_COLUMNS} WHERE `p`.`id` = %s"


@dataclass(frozen=True)
class StockState:
    """A product's stock right after an order, and what its events and reorders need."""

    product_id: int
    sku: str
    name: str
    remaining: int
    depleted: bool
    restock_quantity: int
    factory_code: str
    factory_id: int = 0
    mode: str = Product.Mode.ADAPTIVE
    on_order: int = 0
    demand_rate: float = 0.0
    reorder_point: int = 0
    min_order_quantity: int = 1
    max_order_quantity: int = 1
    purchase_limit: int | None = None
    price: int = 0
    ceiling: int | None = None
    promised: int = 0

    def policy(self) -> policy.Stock:
        return policy.Stock(
            mode=self.mode,
            on_hand=self.remaining,
            on_order=self.on_order,
            rate=self.demand_rate,
            reorder_point=self.reorder_point,
            review=settings.ESTIMATE_REFRESH_SECONDS,
            restock_quantity=self.restock_quantity,
            min_quantity=self.min_order_quantity,
            max_quantity=self.max_order_quantity,
            ceiling=self.ceiling,
            promised=self.promised,
        )


@dataclass(frozen=True)
class Also:
    """What a caller adds to an order's statement over the product `p`, under its row lock:
    columns of the state's own SELECT (take_stock), or a condition of the UPDATE
    (quiet_take); with their parameters in the statement's order."""

    columns: str
    params: list[str | int | None]


@dataclass(frozen=True)
class StockOutcome:
    """What one order did to stock: whether it took the units, and what it set off."""

    taken: bool
    state: StockState
    depleted: bool
    decision: ReorderDecision | None
    # The values of take_stock's `also`.
    also: tuple | None = None


@dataclass(frozen=True)
class RefusalCount:
    """Refused and limited orders of one product over one refresh interval."""

    sku: str
    factory_code: str
    orders_refused: int
    units_refused: int
    orders_limited: int
    since: datetime
    until: datetime


def _state(row: tuple) -> StockState:
    pk, sku, name, stock, depleted, *rest = row
    return StockState(pk, sku, name, stock, bool(depleted), *rest)


def take_stock(
    *,
    sku: str,
    quantity: int,
    client: str = "",
    count_refusal: bool = True,
    also: Also | None = None,
) -> StockOutcome:
    """Take `quantity` units of `sku` if that many are on hand; call inside a transaction.

    One conditional UPDATE: its row lock makes concurrent orders queue, and its WHERE clause
    means stock never goes below zero. A refusal is counted on the product instead, and as
    `client`'s demand up to what they could buy in the purchase-limit window (all callers
    without a client together: one order's worth), unless `count_refusal` is False (a
    pre-order, which production may still serve: see promise). The state is read under that
    lock in the same round trip, and the depletion and reorder it calls for are made here,
    while the lock is held. Raises UnknownSku (nothing changed).

    `also` is what the caller reads under that lock: it rides in the state's own SELECT, and
    its values are the outcome's `also` (the orders' purchase-limit counts: every statement
    under the lock is one more that the next order of this product waits for).
    """
    taken, state, extra = _take(sku=sku, quantity=quantity, also=also)
    if not taken and count_refusal:
        state = count_refused(state=state, quantity=quantity, client=client)
    depleted = state.remaining == 0 and not state.depleted and _open_depletion(state)
    decision = _decide(state) if policy.needs_order(state.policy()) else None
    return StockOutcome(taken=taken, state=state, depleted=depleted, decision=decision, also=extra)


def quiet_take(*, sku: str, quantity: int, also: Also | None = None) -> tuple[str, list]:
    """QUIET_TAKE_SQL for this order, with the caller's conditions `also` (its `columns`: a
    boolean expression over the product `p`, checked under the row lock the UPDATE takes),
    and its parameters.

    It is take_stock's common case, settled by the database alone: the units are taken only
    when nothing else is due once they are (no depletion to open, no reorder to decide, the
    caller's conditions held). The caller runs it in a transaction of its own and reads
    ROW_COUNT() after it; when no row changed, nothing did, and take_stock decides the order
    inside transaction.atomic (and raises UnknownSku for a SKU no product has).
    """
    sql = QUIET_TAKE_SQL.format(units="%s", rows="`p`.`sku` = %s", also=_also(also))
    params: list[str | int | None] = [quantity, quantity, sku, quantity, Product.Mode.ADAPTIVE]
    return sql, [*params, quantity, *(also.params if also else [])]


def quiet_take_many(*, units: dict[int, int], also: Also | None = None) -> tuple[str, list]:
    """quiet_take for several products at once (`units` by product id): one UPDATE that
    locks their rows in the order of their ids, so that two such orders never wait for each
    other in a circle. ROW_COUNT() after it is the number of products taken: the caller keeps
    the transaction only when it is all of them. `also` may use row_units(units)."""
    ids = ", ".join(str(int(pk)) for pk in units)
    rows = f"`p`.`id` IN ({ids})"
    sql = QUIET_TAKE_SQL.format(units=row_units(units), rows=rows, also=_also(also))
    params: list[str | int | None] = [Product.Mode.ADAPTIVE, *(also.params if also else [])]
    return f"{sql} ORDER BY `p`.`id`", params


def row_units(units: dict[int, int]) -> str:
    """The units of the product `p` in SQL, from `units` by product id (integers, written
    into the statement)."""
    cases = " ".join(f"WHEN {int(pk)} THEN {int(n)}" for pk, n in units.items())
    return f"CASE `p`.`id` {cases} END"


def _also(also: Also | None) -> str:
    return f" AND {also.columns}" if also else ""


def rollback() -> None:
    """End a transaction a caller began in its own statements, changing nothing (a broken
    connection has lost it already)."""
    with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
        cursor.execute("ROLLBACK")


def take_read(
    *, sku: str, quantity: int, also: Also | None = None
) -> tuple[str, list[str | int | None]]:
    """TAKE_READ_SQL for this order, with `also`, and its parameters."""
    params: list[str | int | None] = [quantity, quantity, sku, quantity]
    if also is None:
        return TAKE_READ_SQL.format(columns=""), [*params, sku]
    return TAKE_READ_SQL.format(columns=f", {also.columns}"), [*params, *also.params, sku]


def _take(
    *,
    sku: str,
    quantity: int,
    also: Also | None,
    begin: bool = False,
) -> tuple[bool, StockState, tuple | None]:
    """The UPDATE and the state under its lock (with `also`'s values), in one round trip."""
    sql, params = take_read(sku=sku, quantity=quantity, also=also)
    if begin:
        sql = f"START TRANSACTION; {sql}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Read from MySQLdb's cursor under one error wrapper: Django's wraps every call.
        with connection.wrap_database_errors:
            if begin:
                cursor.cursor.nextset()
            cursor.cursor.nextset()
            row = cursor.cursor.fetchone()
    if row is None:
        raise UnknownSku(sku)
    fields = len(StockState.__dataclass_fields__)
    extra = tuple(row[1 + fields :]) if also else None
    return row[0] == 1, _state(row[1 : 1 + fields]), extra


def count_refused(*, state: StockState, quantity: int, client: str = "") -> StockState:
    """Count a refused order of `quantity` units (see take_stock); call inside a transaction.

    Returns the state read again under the lock the count takes.
    """
    cap = refused_demand_cap(state, client=client)
    window = connection.ops.adapt_datetimefield_value(refused_demand_window(timezone.now()))
    counted = [state.product_id, client, window, *[quantity, cap] * 4]
    with connection.cursor() as cursor:
        cursor.execute(REFUSE_READ_SQL, [quantity, state.sku, *counted, state.sku])
        cursor.nextset()
        cursor.nextset()
        return _state(cursor.fetchone())


def refused_demand_cap(state: StockState, *, client: str) -> int:
    """Refused units of this product `client` may count as demand per window."""
    if not client:
        return settings.ORDER_MAX_QUANTITY
    limit = settings.PURCHASE_LIMIT if state.purchase_limit is None else state.purchase_limit
    return policy.refused_demand_cap(purchase_limit=limit, order_max=settings.ORDER_MAX_QUANTITY)


def refused_demand_window(now: datetime) -> datetime:
    """Start of the purchase-limit window `now` falls in (fixed windows from the epoch)."""
    seconds = max(settings.PURCHASE_LIMIT_WINDOW, 1)
    start = int(now.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(start, tz=UTC)


def _open_depletion(state: StockState) -> bool:
    """Open a depletion unless one is open; True (and announced) when this call opened it."""
    opened = Product.objects.filter(pk=state.product_id, depleted_at__isnull=True).update(
        depleted_at=timezone.now()
    )
    if opened:
        logger.info("stock depleted sku=%s", state.sku)
        outbox.record([events.depleted(stock=state)])
    return opened == 1


def promise(*, sku: str, quantity: int, email: str = "") -> tuple[StockState, Promise | None]:
    """Promise `quantity` units of `sku` from production; call inside a transaction.

    From the batch due first with that many units nobody was promised, else from a new
    batch decided now (within the factory's capacity, the product's bounds and its reorder
    ceiling). `email` hears when it is kept or cancelled. Returns the product's state under
    its row lock, and the promise, or None when production cannot serve it either (nothing
    changed then).
    """
    locked = Product.objects.select_for_update().filter(sku=sku).values_list("pk", flat=True)
    product_id = locked.first()
    if product_id is None:
        raise UnknownSku(sku)
    with connection.cursor() as cursor:
        cursor.execute(STATE_SQL, [product_id])
        state = _state(cursor.fetchone())
    batch = promises.open_batch(product_id=product_id, quantity=quantity)
    if batch is None:
        batch = _decide(state, promising=quantity)
    if batch is None:
        return state, None
    made = promises.promise_from(batch=batch, quantity=quantity, email=email)
    logger.info(
        "units promised promise=%s batch=%s sku=%s quantity=%s ready_by=%s",
        made.pk,
        batch.pk,
        sku,
        quantity,
        made.ready_by.isoformat(),
    )
    return state, made


def _decide(state: StockState, *, promising: int = 0) -> ReorderDecision | None:
    """Order what the policy asks for (and `promising` units for a pre-order, see
    policy.order); the product's row lock must be held."""
    with connection.cursor() as cursor:
        # The factory's row serialises deciders of its products, so its capacity holds.
        cursor.execute(
            "SELECT `capacity`, `lead_time` FROM `inventory_factory` WHERE `id` = %s FOR UPDATE",
            [state.factory_id],
        )
        capacity, lead_time = cursor.fetchone()
        capacity_left = None
        if capacity:
            cursor.execute(
                "SELECT COALESCE(SUM(`on_order`), 0) FROM `inventory_product` "
                "WHERE `factory_id` = %s",
                [state.factory_id],
            )
            capacity_left = capacity - int(cursor.fetchone()[0])
    wanted = policy.order(state.policy(), capacity_left=capacity_left, promising=promising)
    if wanted is None:
        return None
    decision = ReorderDecision.objects.create(
        due_at=timezone.now() + timedelta(seconds=lead_time),
        product_id=state.product_id,
        quantity=wanted.quantity,
        mode=state.mode,
        reason=wanted.reason,
        on_hand=state.remaining,
        on_order=state.on_order,
        demand_rate=state.demand_rate,
        lead_time=lead_time,
        reorder_point=state.reorder_point,
    )
    Product.objects.filter(pk=state.product_id).update(on_order=F("on_order") + wanted.quantity)
    logger.info(
        "reorder decided decision=%s sku=%s quantity=%s reason=%s",
        decision.pk,
        state.sku,
        wanted.quantity,
        wanted.reason,
    )
    outbox.record([events.low(decision=decision, factory_code=state.factory_code, sku=state.sku)])
    return decision


def review(*, product_id: int) -> ReorderDecision | None:
    """Decide for one product however its stock got where it is (counts, catalog, arrivals)."""
    with transaction.atomic():
        # The product's row first, as orders lock it, then its factory's in _decide.
        if not Product.objects.select_for_update().filter(pk=product_id).exists():
            return None
        with connection.cursor() as cursor:
            cursor.execute(STATE_SQL, [product_id])
            row = cursor.fetchone()
        state = _state(row)
        if not policy.needs_order(state.policy()):
            return None
        return _decide(state)


def count_limited(*, product_id: int) -> None:
    """Count an order refused by the purchase limit (demand seen, not served)."""
    Product.objects.filter(pk=product_id).update(orders_limited=F("orders_limited") + 1)


def set_stock(*, sku: str, quantity: int, note: str = "") -> StockAdjustment:
    """Set on-hand stock after a physical count and record the adjustment.

    Decides nothing itself: the estimates loop reviews the product once the count has
    settled (STOCK_COUNT_SETTLE), if its stock then still calls for an order, so a count
    typed and corrected at once orders nothing.
    """
    try:
        Product._meta.get_field("stock").run_validators(quantity)
    except ValidationError as exc:
        raise InvalidQuantity(f"{' '.join(exc.messages)} Got {quantity}.") from exc
    longest: int = StockAdjustment._meta.get_field("note").max_length  # type: ignore[assignment]  # a CharField's
    if len(note) > longest:
        raise InvalidNote(length=len(note), longest=longest)
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


def count_outcome() -> str:
    """What a count sets off, in words for staff: nothing yet, and when the loop looks."""
    return (
        "No reorder decided now: if the stock still calls for one in "
        f"{settings.STOCK_COUNT_SETTLE:g} s, the estimates loop orders it."
    )


def settling_products(now: datetime) -> set[int]:
    """Products whose stock staff counted less than STOCK_COUNT_SETTLE seconds ago."""
    since = now - timedelta(seconds=settings.STOCK_COUNT_SETTLE)
    return set(
        StockAdjustment.objects.filter(
            reason=StockAdjustment.Reason.COUNT, created_at__gt=since
        ).values_list("product_id", flat=True)
    )


def _less_on_order(quantity: int) -> Case:
    # on_order is unsigned: a late arrival after a re-order must floor at zero, not fail.
    return Case(When(on_order__gt=quantity, then=F("on_order") - quantity), default=Value(0))


def receive_stock(
    *,
    product_id: int,
    quantity: int,
    note: str,
    lead_time: float | None = None,
    batch_id: int | None = None,
) -> Product:
    """Serve waiting pre-orders from arrived units, shelve the rest, and end the product's
    depletion when any reach the shelf; call inside a transaction.

    `batch_id`: the reorder decision the units were ordered for (promises.serve_arrival).
    `lead_time`, seconds from the factory's acceptance to this arrival, is one more measure
    of the factory's lead time.
    """
    product = Product.objects.select_for_update().get(pk=product_id)
    old = product.stock
    arrival = promises.serve_arrival(product_id=product_id, batch_id=batch_id, quantity=quantity)
    promised = product.promised - arrival.served
    changes = {"depleted_at": None} if arrival.shelf else {}
    # Computed under the row lock: on order never drops below what is still promised.
    Product.objects.filter(pk=product_id).update(
        stock=F("stock") + arrival.shelf,
        promised=promised,
        on_order=max(product.on_order - quantity, promised),
        updated_at=timezone.now(),
        **changes,
    )
    product.refresh_from_db(fields=["stock", "depleted_at", "on_order", "promised"])
    StockAdjustment.objects.create(
        product=product,
        reason=StockAdjustment.Reason.ARRIVAL,
        old_quantity=old,
        new_quantity=product.stock,
        note=note,
    )
    if lead_time is not None and lead_time >= 0:
        _measure_lead_time(factory_id=product.factory_id, seconds=lead_time)
    return product


def _measure_lead_time(*, factory_id: int, seconds: float) -> None:
    # The factory's row after the product's, as deciders lock them.
    factory = Factory.objects.select_for_update().get(pk=factory_id)
    samples = [*factory.lead_time_samples, round(seconds, 3)][-policy.LEAD_TIME_SAMPLES :]
    estimate = policy.lead_time(samples=samples, previous=factory.lead_time)
    Factory.objects.filter(pk=factory_id).update(lead_time=estimate, lead_time_samples=samples)


def hold_on_order(*, product_id: int, quantity: int) -> None:
    """Units given up on are on order again (a failed restock staff redrove)."""
    Product.objects.filter(pk=product_id).update(on_order=F("on_order") + quantity)


def release_on_order(*, product_id: int, quantity: int) -> None:
    """Units that will not arrive (a restock given up) no longer count as on order.

    Never below what is still promised: a late arrival may have taken them off already.
    """
    Product.objects.filter(pk=product_id).update(
        on_order=Greatest(_less_on_order(quantity), F("promised"))
    )


def restock_moved(
    *,
    product_id: int,
    restock_id: int,
    status: str,
    incoming: int = 0,
    in_production_since: datetime | None = None,
) -> None:
    """Keep on the product what its restock `restock_id`, just moved to `status`, changes.

    Call in the transaction that moved the restock, the product's row locked. `incoming`:
    the units the move took into production (the factory accepted them) or, negative, out of
    it (arrived, overdue, given up); then `in_production_since` is when the factory accepted
    the latest restock still in production afterwards (None: none is). The status is kept
    only for the product's latest restock (the highest id).
    """
    latest = Q(restock_id__isnull=True) | Q(restock_id__lte=restock_id)
    Product.objects.filter(latest, pk=product_id).update(
        restock_id=restock_id, restock_status=status
    )
    if not incoming:
        return
    # incoming is unsigned: floored at zero, as on_order is.
    Product.objects.filter(pk=product_id).update(
        incoming=F("incoming") + incoming
        if incoming > 0
        else Case(When(incoming__gt=-incoming, then=F("incoming") + incoming), default=Value(0)),
        restock_requested_at=in_production_since,
    )


def batch_accepted(*, batch_id: int | None, at: datetime, lead_time: float) -> None:
    """The factory accepted a batch at `at`: it is due one lead time later."""
    if batch_id is None:
        return
    with transaction.atomic():
        # The product's row first, as a pre-order locks it before promising from the batch.
        # MariaDB's foreign-key check on the batch's update takes a shared lock on the
        # product's row: updating the batch first deadlocked with pre-orders (seen in a rush).
        product_id = (
            ReorderDecision.objects.filter(pk=batch_id).values_list("product_id", flat=True).first()
        )
        list(Product.objects.select_for_update().filter(pk=product_id).values_list("pk"))  # type: ignore[misc]  # None: batch gone, locks nothing
        due_at = at + timedelta(seconds=lead_time)
        ReorderDecision.objects.filter(pk=batch_id, settled_at__isnull=True).update(due_at=due_at)
        # Accepted after retries, the batch may now be due after what it promised: those
        # promises move to a batch due in time, or are cancelled with notice, now rather than
        # once they are already broken.
        late = Promise.objects.filter(
            batch_id=batch_id, state=Promise.State.WAITING, ready_by__lt=due_at
        )
        waiting = list(late.order_by("pk"))
        if waiting:
            promises.rehome(waiting, reason=promises.LATE)


def give_up_batch(*, product_id: int, batch_id: int | None, quantity: int) -> None:
    """Production gave up on a batch: its promises move to another batch due in time or are
    cancelled, and its units leave on order; the product's row lock must be held."""
    if batch_id is not None:
        waiting = Promise.objects.filter(batch_id=batch_id, state=Promise.State.WAITING)
        promises.rehome(list(waiting.order_by("pk")), reason=promises.GIVEN_UP)
        ReorderDecision.objects.filter(pk=batch_id).update(settled_at=timezone.now())
    release_on_order(product_id=product_id, quantity=quantity)


def refresh_estimates() -> list[ReorderDecision]:
    """Refresh demand rates and reorder points from the counters, announce refusals, reorder.

    Runs off the order path (the estimates loop); returns the decisions it made.
    """
    now = timezone.now()
    counts: list[RefusalCount] = []
    due: list[int] = []
    with transaction.atomic():
        snapshots = {s.product_id: s for s in DemandSnapshot.objects.select_for_update()}
        # The products' rows before the clients' refused demand, as a refusal locks them.
        list(Product.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
        refused = _fold_refused_demand(now)
        settling = settling_products(now)
        for product in Product.objects.select_related("factory"):
            snapshot = snapshots.get(product.pk)
            if snapshot is None:
                # First look: no rate yet, but every refusal counted so far is announced.
                snapshot = DemandSnapshot(
                    product=product, units_sold=product.units_sold, taken_at=now
                )
            count = _refresh(product, snapshot, now, refused=refused.get(product.pk, 0))
            if count is not None:
                counts.append(count)
            if product.pk not in settling and policy.needs_order(_state_of(product).policy()):
                due.append(product.pk)
        if counts:
            outbox.record([events.refused(count=count) for count in counts])
    decisions = [review(product_id=pk) for pk in due]
    return [d for d in decisions if d is not None]


def estimates_round() -> int:
    """One round of the estimates loop: refresh, then pause until the next one is due."""
    started = monotonic()
    decisions = refresh_estimates()
    promises.settle_late()
    sleep(max(0.0, settings.ESTIMATE_REFRESH_SECONDS - (monotonic() - started)))
    return len(decisions)


def _fold_refused_demand(now: datetime) -> dict[int, int]:
    """Take the refused units counted as demand since the last refresh, per product.

    The rows read are locked until the refresh commits, and only they are reset: a refusal
    counted meanwhile waits for the next refresh. Windows gone by are forgotten.
    """
    rows = list(
        RefusedDemand.objects.select_for_update()
        .filter(pending__gt=0)
        .values_list("pk", "product_id", "pending")
    )
    refused: dict[int, int] = defaultdict(int)
    for _, product_id, pending in rows:
        refused[product_id] += pending
    if rows:
        RefusedDemand.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(pending=0)
    RefusedDemand.objects.filter(window_start__lt=refused_demand_window(now), pending=0).delete()
    return refused


def _refresh(
    product: Product, snapshot: DemandSnapshot, now: datetime, *, refused: int
) -> RefusalCount | None:
    """Fold the growth since `snapshot` (sales, and `refused` units counted) into estimates."""
    product.demand_rate = policy.demand_rate(
        previous=product.demand_rate,
        units=product.units_sold - snapshot.units_sold + refused,
        seconds=(now - snapshot.taken_at).total_seconds(),
        horizon=settings.DEMAND_HORIZON,
    )
    wanted = policy.reorder_point(
        rate=product.demand_rate,
        lead_time=product.factory.lead_time,
        review=settings.ESTIMATE_REFRESH_SECONDS,
        safety=settings.REORDER_SAFETY,
    )
    ceiling = _ceiling(product)
    if wanted > ceiling and product.reorder_point < ceiling:
        logger.warning(
            "demand above the ceiling sku=%s rate=%.2f/s reorder_point=%s ceiling=%s",
            product.sku,
            product.demand_rate,
            wanted,
            ceiling,
        )
    product.reorder_point = min(wanted, ceiling)
    Product.objects.filter(pk=product.pk).update(
        demand_rate=product.demand_rate, reorder_point=product.reorder_point
    )
    count = RefusalCount(
        sku=product.sku,
        factory_code=product.factory.code,
        orders_refused=product.orders_refused - snapshot.orders_refused,
        units_refused=product.units_refused - snapshot.units_refused,
        orders_limited=product.orders_limited - snapshot.orders_limited,
        since=snapshot.taken_at,
        until=now,
    )
    _advance(snapshot, product, now)
    snapshot.save()
    return count if count.orders_refused or count.orders_limited else None


def _ceiling(product: Product) -> int:
    if product.reorder_ceiling is not None:
        return product.reorder_ceiling
    return product.factory.reorder_ceiling


def _advance(snapshot: DemandSnapshot, product: Product, now: datetime) -> None:
    snapshot.units_sold = product.units_sold
    snapshot.orders_refused = product.orders_refused
    snapshot.units_refused = product.units_refused
    snapshot.orders_limited = product.orders_limited
    snapshot.taken_at = now


def _state_of(product: Product) -> StockState:
    """A product row (with its factory) as the state an order reads back."""
    return StockState(
        product_id=product.pk,
        sku=product.sku,
        name=product.name,
        remaining=product.stock,
        depleted=product.depleted_at is not None,
        restock_quantity=product.restock_quantity,
        factory_code=product.factory.code,
        factory_id=product.factory_id,
        mode=product.replenishment_mode,
        on_order=product.on_order,
        demand_rate=product.demand_rate,
        reorder_point=product.reorder_point,
        min_order_quantity=product.min_order_quantity,
        max_order_quantity=product.max_order_quantity,
        purchase_limit=product.purchase_limit,
        ceiling=_ceiling(product),
        promised=product.promised,
    )


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
