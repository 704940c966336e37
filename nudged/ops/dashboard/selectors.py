"""The dashboard's reads: time series of the last hour or day, aggregated by the database.

Every query is bounded by the window: rows are grouped per bucket in SQL (a minute over the
last hour, five minutes over the last day) and only the groups reach Python, never the
window's orders one by one. Nothing here is sampled on purpose: each series is derived from
rows the shop writes anyway —

- served orders: the order rows; refused and limited orders: the `orders.refused` counts the
  estimates loop writes to the outbox every refresh that saw refusals;
- stock: the stock each order left (`remaining_stock`) and each stock adjustment's new count;
- sold-out periods: the orders that took stock to zero and the adjustments that refilled it;
- restock lead times: restock requests fulfilled, from their reorder decision to the arrival;
- relay lag: outbox events and orders (the sales) published, from creation to publication;
- DLQ depth: the failed-message rows, from when a message was first seen dead until staff
  redrove or discarded it (a message that died again after a redrive counts as dead since
  it first died).
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import (
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    IntegerField,
    Max,
    Min,
    Q,
    Sum,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from factory_bridge.infrastructure import dead_letter_queues
from factory_bridge.models import FailedMessage, RestockRequest
from inventory import events
from inventory.models import Product, Promise, StockAdjustment
from nudged.core.models import OutboxEvent
from shop.models import Order

# Name: (span, bucket width), in seconds.
WINDOWS = {"hour": (3600, 60), "day": (86400, 300)}
# Most restocks drawn in one chart (the latest).
MAX_RESTOCKS = 1000
# Most rows read for the sold-out periods (each one a product running out or refilled).
MAX_ZERO_CROSSINGS = 5000


@dataclass(frozen=True)
class Window:
    name: str
    start: datetime
    end: datetime
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        return int((self.end - self.start).total_seconds()) // self.bucket_seconds

    def bucket_end(self, index: int) -> datetime:
        return self.start + timedelta(seconds=self.bucket_seconds * (index + 1))


def window(name: str, *, now: datetime | None = None) -> Window:
    """The last hour or day up to the end of the current bucket; KeyError for another name."""
    span, width = WINDOWS[name]
    now = now or timezone.now()
    end = datetime.fromtimestamp(math.ceil(now.timestamp() / width) * width, tz=now.tzinfo)
    return Window(name=name, start=end - timedelta(seconds=span), end=end, bucket_seconds=width)


class _Bucket(Func):
    """The index of the window's bucket a datetime column falls in."""

    template = "FLOOR(TIMESTAMPDIFF(SECOND, %(expressions)s) / %(width)s)"
    output_field = IntegerField()

    def __init__(self, column: str, window: Window) -> None:
        super().__init__(
            Value(window.start, output_field=DateTimeField()),
            F(column),
            width=int(window.bucket_seconds),
        )


class _Seconds(Func):
    """Seconds from one datetime column to another, to the microsecond."""

    template = "(TIMESTAMPDIFF(MICROSECOND, %(expressions)s) / 1000000.0)"
    output_field = FloatField()

    def __init__(self, start: str, end: str) -> None:
        super().__init__(F(start), F(end))


def _in(column: str, window: Window) -> Q:
    return Q(**{f"{column}__gte": window.start, f"{column}__lt": window.end})


def _per_bucket(window: Window, rows: list[tuple[int, float]]) -> list[float]:
    values = [0.0] * window.buckets
    for bucket, value in rows:
        if 0 <= bucket < window.buckets:
            values[bucket] += float(value or 0)
    return values


@dataclass
class OrderRates:
    """Orders per minute in each bucket (a basket is one order), and the units served."""

    served: list[float]
    units: list[float]
    refused: list[float]
    limited: list[float]


def order_rates(window: Window) -> OrderRates:
    """Orders served (a basket once, whatever its lines), their units, and orders refused for
    lack of stock and refused by the purchase limit, per minute."""
    served = list(
        Order.objects.filter(_in("created_at", window), status=Order.Status.COMPLETED)
        .order_by()
        .annotate(bucket=_Bucket("created_at", window))
        .values("bucket")
        .annotate(
            n=Count("id", filter=Q(basket__isnull=True)) + Count("basket", distinct=True),
            units=Sum("quantity"),
        )
        .values_list("bucket", "n", "units")
    )
    refusals = (
        OutboxEvent.objects.filter(_in("created_at", window), event_type=events.ORDERS_REFUSED)
        .order_by()
        .annotate(bucket=_Bucket("created_at", window))
        .values("bucket")
        .annotate(
            refused=Sum(Cast(KT("body__refused_orders"), IntegerField())),
            limited=Sum(Cast(KT("body__limited_orders"), IntegerField())),
        )
        .values_list("bucket", "refused", "limited")
    )
    rows = list(refusals)
    minutes = window.bucket_seconds / 60

    def rate(pairs: list[tuple[int, float]]) -> list[float]:
        return [n / minutes for n in _per_bucket(window, pairs)]

    return OrderRates(
        served=rate([(bucket, n) for bucket, n, _ in served]),
        units=rate([(bucket, units) for bucket, _, units in served]),
        refused=rate([(bucket, refused) for bucket, refused, _ in rows]),
        limited=rate([(bucket, limited) for bucket, _, limited in rows]),
    )


@dataclass
class ProductStock:
    sku: str
    name: str
    # Units on hand at the end of each bucket.
    values: list[int]
    # When the product was sold out within the window: (start, end) pairs.
    sold_out: list[tuple[datetime, datetime]] = field(default_factory=list)


@dataclass(frozen=True)
class _Change:
    at: datetime
    before: int
    after: int


def _bucket_changes(window: Window) -> dict[int, dict[int, tuple[_Change, _Change]]]:
    """Per product and bucket, the first and the last stock change (orders and adjustments)."""
    changes: dict[int, dict[int, tuple[_Change, _Change]]] = defaultdict(dict)

    def merge(product_id: int, bucket: int, first: _Change, last: _Change) -> None:
        known = changes[product_id].get(bucket)
        if known:
            first = min(first, known[0], key=lambda c: c.at)
            last = max(last, known[1], key=lambda c: c.at)
        changes[product_id][bucket] = (first, last)

    completed = Order.objects.filter(status=Order.Status.COMPLETED)
    for rows_of, read in (
        (completed, ("created_at", "remaining_stock", "quantity")),
        (StockAdjustment.objects.all(), ("created_at", "old_quantity", "new_quantity")),
    ):
        model = rows_of.model
        groups = list(
            rows_of.filter(_in("created_at", window))
            .order_by()
            .annotate(bucket=_Bucket("created_at", window))
            .values("product_id", "bucket")
            .annotate(first=Min("id"), last=Max("id"))
            .values_list("product_id", "bucket", "first", "last")
        )
        ids = {pk for _, _, first, last in groups for pk in (first, last)}
        rows = {}
        for pk, at, a, b in model.objects.filter(pk__in=ids).values_list("pk", *read):
            # An order leaves `remaining_stock` after taking `quantity`; an adjustment
            # goes from its old quantity to its new one.
            rows[pk] = _Change(at, a + b, a) if model is Order else _Change(at, a, b)
        for product_id, bucket, first, last in groups:
            merge(product_id, bucket, rows[first], rows[last])
    return changes


def stock(window: Window) -> list[ProductStock]:
    """Every product's stock at the end of each bucket, and its sold-out periods."""
    changes = _bucket_changes(window)
    products = []
    for product in Product.objects.order_by("sku").only("pk", "sku", "name", "stock"):
        buckets = changes.get(product.pk, {})
        # Before its first change in the window a product held what that change started
        # from; a product that did not change holds what it holds now.
        level = buckets[min(buckets)][0].before if buckets else product.stock
        start_level = level
        values = []
        for index in range(window.buckets):
            if index in buckets:
                level = buckets[index][1].after
            values.append(level)
        products.append(
            ProductStock(
                sku=product.sku,
                name=product.name,
                values=values,
                sold_out=_sold_out(window, product.pk, start_level == 0),
            )
        )
    return products


def _sold_out(
    window: Window, product_id: int, empty_at_start: bool
) -> list[tuple[datetime, datetime]]:
    """When stock stood at zero: from the change that emptied it to the one that refilled it."""
    emptied = Order.objects.filter(
        _in("created_at", window),
        product_id=product_id,
        status=Order.Status.COMPLETED,
        remaining_stock=0,
    ).values_list("created_at", flat=True)
    crossings = [(at, False) for at in emptied[:MAX_ZERO_CROSSINGS]]
    adjustments = StockAdjustment.objects.filter(
        _in("created_at", window), product_id=product_id
    ).filter(Q(old_quantity=0) | Q(new_quantity=0))
    for at, new in adjustments.values_list("created_at", "new_quantity")[:MAX_ZERO_CROSSINGS]:
        crossings.append((at, new > 0))
    periods = []
    began = window.start if empty_at_start else None
    for at, refilled in sorted(crossings, key=lambda c: c[0]):
        if refilled and began is not None:
            periods.append((began, at))
            began = None
        elif not refilled and began is None:
            began = at
    if began is not None:
        periods.append((began, min(timezone.now(), window.end)))
    return periods


@dataclass(frozen=True)
class Restock:
    sku: str
    arrived_at: datetime
    lead_seconds: float


def restock_lead_times(window: Window) -> list[Restock]:
    """Restocks that arrived in the window: seconds from the reorder decision to the arrival."""
    rows = (
        RestockRequest.objects.filter(_in("fulfilled_at", window))
        .order_by("-fulfilled_at")
        .annotate(
            began=Coalesce("decision__created_at", "created_at"),
            lead=_Seconds("began", "fulfilled_at"),
        )
        .values_list("product__sku", "fulfilled_at", "lead")[:MAX_RESTOCKS]
    )
    return [Restock(sku, at, max(float(lead), 0.0)) for sku, at, lead in rows]  # type: ignore[arg-type]  # filtered on fulfilled_at


@dataclass
class RelayLag:
    """Seconds from an event's creation to its publication, per bucket of publication."""

    worst: list[float | None]
    mean: list[float | None]


def _lag_groups(window: Window) -> list[tuple[int, int, float, float]]:
    rows: list[tuple[int, int, float, float]] = []
    for model in (OutboxEvent, Order):
        rows += (
            model.objects.filter(_in("published_at", window))
            .order_by()
            .annotate(
                bucket=_Bucket("published_at", window),
                lag=_Seconds("created_at", "published_at"),
            )
            .values("bucket")
            .annotate(n=Count("pk"), total=Sum("lag"), worst=Max("lag"))
            .values_list("bucket", "n", "total", "worst")
        )
    return rows


def relay_lag(window: Window) -> RelayLag:
    counts = [0] * window.buckets
    totals = [0.0] * window.buckets
    worst: list[float | None] = [None] * window.buckets
    for bucket, n, total, high in _lag_groups(window):
        if 0 <= bucket < window.buckets:
            counts[bucket] += n
            totals[bucket] += float(total or 0)
            worst[bucket] = max(float(high or 0), worst[bucket] or 0.0)
    mean = [totals[i] / counts[i] if counts[i] else None for i in range(window.buckets)]
    return RelayLag(worst=worst, mean=mean)


def recent_relay_lag(*, seconds: float) -> tuple[float, float]:
    """The worst and the mean relay lag of what was published in the last `seconds`."""
    since = timezone.now() - timedelta(seconds=seconds)
    worst, total, count = 0.0, 0.0, 0
    for model in (OutboxEvent, Order):
        lag = (
            model.objects.filter(published_at__gte=since)
            .order_by()
            .annotate(lag=_Seconds("created_at", "published_at"))
            .aggregate(n=Count("pk"), total=Sum("lag"), worst=Max("lag"))
        )
        count += lag["n"]
        total += float(lag["total"] or 0)
        worst = max(worst, float(lag["worst"] or 0))
    return worst, (total / count if count else 0.0)


def dlq_depth(window: Window) -> dict[str, list[int]]:
    """Messages dead in each DLQ at the end of each bucket (from the failed-message rows)."""
    dead = FailedMessage.Status.DEAD
    redriven, discarded = FailedMessage.Status.REDRIVEN, FailedMessage.Status.DISCARDED
    queues = list(dead_letter_queues().values())
    at_start = dict(
        FailedMessage.objects.filter(first_seen_at__lt=window.start)
        .filter(
            Q(status=dead)
            | Q(status=redriven, redriven_at__gte=window.start)
            | Q(status=discarded, discarded_at__gte=window.start)
        )
        .order_by()
        .values("dlq")
        .annotate(n=Count("pk"))
        .values_list("dlq", "n")
    )
    moves: dict[str, list[int]] = defaultdict(lambda: [0] * window.buckets)
    for column, status, sign in (
        ("first_seen_at", None, 1),
        ("redriven_at", redriven, -1),
        ("discarded_at", discarded, -1),
    ):
        rows = FailedMessage.objects.filter(_in(column, window))
        if status:
            rows = rows.filter(status=status)
        for dlq, bucket, n in (
            rows.order_by()
            .annotate(bucket=_Bucket(column, window))
            .values("dlq", "bucket")
            .annotate(n=Count("pk"))
            .values_list("dlq", "bucket", "n")
        ):
            if 0 <= bucket < window.buckets:
                moves[dlq][bucket] += sign * n
    depth = {}
    for queue in dict.fromkeys([*queues, *at_start, *moves]):
        level, values = at_start.get(queue, 0), []
        for change in moves[queue] if queue in moves else [0] * window.buckets:
            level = max(level + change, 0)
            values.append(level)
        depth[queue] = values
    return depth


@dataclass(frozen=True)
class PreOrders:
    """Pre-orders now: waiting, units promised, and the waiting ones already past their time;
    and, over the window, those cancelled."""

    waiting: int
    promised: int
    late: int
    cancelled: int


def pre_orders(window: Window) -> PreOrders:
    """What production owes customers now, and what it failed to deliver in the window."""
    now = timezone.now()
    waiting = Promise.objects.filter(state=Promise.State.WAITING).aggregate(
        n=Count("id"),
        units=Coalesce(Sum("quantity"), 0),
        late=Count("id", filter=Q(ready_by__lt=now)),
    )
    cancelled = Promise.objects.filter(
        _in("settled_at", window), state=Promise.State.CANCELLED
    ).count()
    return PreOrders(
        waiting=waiting["n"], promised=waiting["units"], late=waiting["late"], cancelled=cancelled
    )
