"""Prometheus metrics for /metrics: requests counted per process, the shop read at scrape time.

Request metrics are counted by each web process. Under gunicorn's several workers they are
written to PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, which
gunicorn.conf.py sets up) and a scrape adds up every worker's files, whichever worker answers
it; without that directory (runserver, tests) they live in the process.

Everything else is read when scraped: orders (a tally, plus the last few minutes'), stock,
restock requests, the factory's calls (which the cluster counts in the database: it may run on
other hosts), the outbox and the sales waiting to be published, the relay's lag and dead
messages from MySQL, and the queues' message counts from SQS, kept QUEUE_COUNTS_MAX_AGE
seconds per process so that scrapes do not hammer it.
Every web process on every host answers the same business numbers.
"""

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from time import monotonic, perf_counter

from botocore.exceptions import ClientError
from django.db import DatabaseError
from django.db.models import Count, F, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from factory_bridge.infrastructure import queue_names
from factory_bridge.models import FailedMessage, OrderTally, RestockRequest
from factory_bridge.queues import QueueError, SqsQueue
from factory_bridge.services import factory_calls
from factory_bridge.services.outbox import backlog
from inventory.models import Product
from nudged.ops.dashboard.selectors import recent_relay_lag
from shop.models import Order

logger = logging.getLogger(__name__)

# Seconds a process reuses the queues' message counts.
QUEUE_COUNTS_MAX_AGE = 10.0
# The relay lag is that of what was published within this many seconds.
RELAY_LAG_WINDOW = 300
# Orders older than this are added to the served tally for good (no transaction with a
# smaller order id is still open by then).
TALLY_SETTLE_SECONDS = 300
FACTORY_ERROR_KINDS = ("timeout", "connection", "status", "answer", factory_calls.ERROR)
QUEUE_STATES = {"visible": "visible", "in_flight": "in_flight", "delayed": "delayed"}
# Every label value of the request metrics comes from a fixed set: each value is a time
# series Prometheus keeps, and a client must not be able to make new ones.
HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
OTHER = "other"

REQUESTS = Counter(
    "nudged_http_requests",
    "HTTP requests answered, by view, method and status",
    ["view", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "nudged_http_request_duration_seconds",
    "Seconds from a request's arrival to its response, by view, method and status",
    ["view", "method", "status"],
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class RequestMetricsMiddleware:
    """Count every request and time it, labelled by the view that answered it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = perf_counter()
        response = self.get_response(request)
        labels = request_labels(request=request, response=response)
        REQUESTS.labels(*labels).inc()
        REQUEST_SECONDS.labels(*labels).observe(perf_counter() - started)
        return response


def request_labels(*, request: HttpRequest, response: HttpResponse) -> tuple[str, str, str]:
    """The view, method and status labels of an answered request, each from a fixed set.

    The view is a name from the URL configuration: unmatched paths (404s, static files)
    share one label, since their paths are unbounded. A method no server defines is `other`
    (anyone may send `FOO /`). The status is the one the application chose (Django allows
    only 100 to 599), never one the client named.
    """
    match = getattr(request, "resolver_match", None)
    method = request.method if request.method in HTTP_METHODS else OTHER
    return (match.view_name if match else "unmatched", method, str(response.status_code))


class ShopCollector:
    """The shop's state, read from the database and SQS at each scrape."""

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(_database_families())
            up = 1
        except DatabaseError as exc:
            logger.warning("metrics: database down: %s", exc)
            families, up = [], 0
        yield GaugeMetricFamily("nudged_database_up", "Whether the database answered", value=up)
        yield from families
        yield from _queue_families()


def _database_families() -> Iterable[Metric]:
    orders = CounterMetricFamily(
        "nudged_orders",
        "Orders by outcome: served, refused (out of stock), limited (purchase limit)",
        labels=["outcome"],
    )
    counters = Product.objects.aggregate(
        refused=Sum("orders_refused"),
        limited=Sum("orders_limited"),
        units_sold=Sum("units_sold"),
        units_refused=Sum("units_refused"),
    )
    orders.add_metric(["served"], served_orders())
    orders.add_metric(["refused"], counters["refused"] or 0)
    orders.add_metric(["limited"], counters["limited"] or 0)
    yield orders
    units = CounterMetricFamily(
        "nudged_units",
        "Units sold, and units asked by orders refused for lack of stock",
        labels=["outcome"],
    )
    units.add_metric(["sold"], counters["units_sold"] or 0)
    units.add_metric(["refused"], counters["units_refused"] or 0)
    yield units

    stock = GaugeMetricFamily("nudged_stock", "Units on hand", labels=["sku"])
    sold_out = GaugeMetricFamily(
        "nudged_sold_out", "1 while the product is sold out, else 0", labels=["sku"]
    )
    on_order = GaugeMetricFamily(
        "nudged_on_order", "Units ordered from the factory and not arrived", labels=["sku"]
    )
    for sku, units_on_hand, ordered in Product.objects.values_list("sku", "stock", "on_order"):
        stock.add_metric([sku], units_on_hand)
        sold_out.add_metric([sku], 1 if units_on_hand <= 0 else 0)
        on_order.add_metric([sku], ordered)
    yield from (stock, sold_out, on_order)

    yield _by_status(
        "nudged_restock_requests",
        "Restock requests by status",
        RestockRequest.objects.all(),
        RestockRequest.Status.values,
    )
    yield _by_status(
        "nudged_failed_messages",
        "Messages that reached a dead-letter queue, by status (dead: still in it)",
        FailedMessage.objects.all(),
        FailedMessage.Status.values,
    )

    yield from _factory_families()

    outbox = backlog()
    yield GaugeMetricFamily(
        "nudged_outbox_pending",
        "Events and sales waiting to be published to SNS",
        value=outbox["pending"],
    )
    yield GaugeMetricFamily(
        "nudged_outbox_oldest_seconds",
        "Age of the oldest event or sale waiting to be published (0: none)",
        value=outbox["oldest_age_seconds"],
    )
    yield GaugeMetricFamily(
        "nudged_outbox_dead",
        "Events SNS kept refusing, waiting for staff to retry them",
        value=outbox["dead"],
    )
    worst, mean = recent_relay_lag(seconds=RELAY_LAG_WINDOW)
    lag = GaugeMetricFamily(
        "nudged_relay_lag_seconds",
        f"Seconds from commit to publication of the events and sales published in the last "
        f"{RELAY_LAG_WINDOW} s (0: none published)",
        labels=["stat"],
    )
    lag.add_metric(["max"], worst)
    lag.add_metric(["mean"], mean)
    yield lag


def served_orders(*, now: datetime | None = None) -> int:
    """Completed orders: the tally, plus the orders placed since it was last moved on.

    A scrape counts only the orders of the last TALLY_SETTLE_SECONDS or so (an id range),
    never every order ever placed. Orders older than that are added to the tally for good:
    by then every order with a smaller id has committed. Web processes scraped at once may
    both try to move it; only one move counts.
    """
    tally, _ = OrderTally.objects.get_or_create(pk=1)
    completed = Order.objects.filter(status=Order.Status.COMPLETED)
    settled_before = (now or timezone.now()) - timedelta(seconds=TALLY_SETTLE_SECONDS)
    through = (
        completed.filter(pk__gt=tally.through_id, created_at__lt=settled_before)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if through is not None:
        settled = completed.filter(pk__gt=tally.through_id, pk__lte=through).count()
        if OrderTally.objects.filter(pk=1, through_id=tally.through_id).update(
            through_id=through, orders=F("orders") + settled
        ):
            tally.through_id, tally.orders = through, tally.orders + settled
    return tally.orders + completed.filter(pk__gt=tally.through_id).count()


def _by_status(name: str, documentation: str, rows: QuerySet, statuses: list[str]) -> Metric:
    counts = dict(
        rows.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in statuses:
        family.add_metric([status], counts.get(status, 0))
    return family


def _factory_families() -> Iterable[Metric]:
    histograms = factory_calls.call_histograms()
    seconds = HistogramMetricFamily(
        "nudged_factory_request_seconds",
        "Seconds each call to the legacy factory took, by outcome (ok, or the error's kind)",
        labels=["outcome"],
    )
    for outcome, (buckets, total) in histograms.items():
        seconds.add_metric([outcome], buckets, total)
    yield seconds
    errors = CounterMetricFamily(
        "nudged_factory_errors",
        "Calls the legacy factory did not accept, by kind: timeout, connection, status "
        "(not 201), answer (unreadable), error (anything else)",
        labels=["kind"],
    )
    for kind in dict.fromkeys([*FACTORY_ERROR_KINDS, *histograms]):
        if kind != factory_calls.OK:
            buckets = histograms.get(kind, ([("+Inf", 0)], 0.0))[0]
            errors.add_metric([kind], buckets[-1][1])
    yield errors


class _QueueCounts:
    """Each queue's counts (None: not reachable), asked of SQS at most every few seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._counts: dict[str, dict[str, int] | None] = {}

    def get(self) -> dict[str, dict[str, int] | None]:
        with self._lock:
            if monotonic() >= self._until:
                self._counts = self._ask()
                self._until = monotonic() + QUEUE_COUNTS_MAX_AGE
            return self._counts

    def clear(self) -> None:
        with self._lock:
            self._until = 0.0

    @staticmethod
    def _ask() -> dict[str, dict[str, int] | None]:
        counts: dict[str, dict[str, int] | None] = {}
        reachable = True
        for name in queue_names():
            counts[name] = None
            if not reachable:
                continue  # one endpoint: the next queues would only wait out the same failure
            try:
                counts[name] = SqsQueue(name).counts(probe=True)
            except QueueError as exc:
                logger.warning("metrics: queue %s not counted: %s", name, exc)
                # SQS answered (no such queue, say): the other queues may still be counted.
                reachable = isinstance(exc.__cause__, ClientError)
        return counts


queue_counts = _QueueCounts()


def _queue_families() -> Iterable[Metric]:
    counts = queue_counts.get()
    messages = GaugeMetricFamily(
        "nudged_queue_messages",
        "Approximate messages in each SQS queue: visible, in flight (received, not deleted), "
        f"delayed; read at most every {QUEUE_COUNTS_MAX_AGE:g} s",
        labels=["queue", "state"],
    )
    up = GaugeMetricFamily(
        "nudged_queue_up", "Whether SQS answered for the queue (1) or not (0)", labels=["queue"]
    )
    for name, states in counts.items():
        up.add_metric([name], 0 if states is None else 1)
        for state, value in (states or {}).items():
            messages.add_metric([name, QUEUE_STATES.get(state, state)], value)
    yield messages
    yield up


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, and its content type."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(ShopCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
