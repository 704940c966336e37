"""The outbox and its relay: publish committed events to SNS, at least once, stock first.

Events are rows of the outbox, written in the transaction of the change they describe. The
relay has two lanes. Stock events go one SNS message each (the restock and notification
queues filter on them). Sales need no row of their own: the relay reads the completed orders
not yet published and sends their events many to a message, one product each; the sales
topic's rows (pre-orders accepted and cancelled, refusal counts) go the same way. The relay
loop runs the lanes side by side, so a backlog of sales never holds up a stock event.
"""

import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic, sleep
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from factory_bridge.publishers import (
    SNS_BATCH_SIZE,
    Message,
    Publisher,
    PublishError,
    get_publisher,
)
from inventory import events
from inventory.outbox import trigger_relay
from nudged.core import leases
from nudged.core.models import OutboxEvent

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLAIM_SIZE = 50
# What the relay allows for one database write around a publish call (the claim before it,
# recording its outcome after it).
WRITE_SECONDS = 5.0
# One relay call stops after this long, well inside the cluster's task timeout.
RELAY_BUDGET_SECONDS = 20.0
# One round of the relay loop, between two beats of its lease.
RELAY_ROUND_SECONDS = 2.0
# The relay loop's pause when the outbox is empty.
RELAY_IDLE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 300
# Held by the one relay that publishes sales.
SALES_LEASE = "sales-relay"
PURGE_BATCH_SIZE = 1000
# Orders read per sales round.
SALES_CLAIM_SIZE = 2000
# A sales batch's events stay under this many bytes: SNS takes 256 KiB per message
# (attributes included) and per PublishBatch call, so each batch is published on its own.
SALES_MESSAGE_BYTES = 200_000
MAX_SALES_BACKOFF_SECONDS = 60


def claim_lease(publisher: Publisher) -> timedelta:
    """How long claimed events stay hidden from other relays.

    It covers the publisher's slowest call (every attempt waiting out its timeouts) and the
    writes around it; the relay starts a call only while that much of the lease is left and
    hands the rest back, so no second relay takes an event the first is still sending. A relay
    that dies mid-publish leaves its events to be published again after the lease.
    """
    return timedelta(seconds=publisher.max_publish_seconds + 2 * WRITE_SECONDS)


@dataclass
class RelayReport:
    published: int = 0
    failed: int = 0
    dead: int = 0
    # Sales published (order.completed events) and the SNS messages that carried them.
    sales: int = 0
    sales_messages: int = 0
    # Whether the relay stopped because nothing was due (rather than on its time budget).
    drained: bool = False

    def __str__(self) -> str:
        return (
            f"published={self.published} failed={self.failed} dead={self.dead} "
            f"sales={self.sales} sales_messages={self.sales_messages}"
        )

    @property
    def busy(self) -> bool:
        return bool(self.published or self.failed or self.dead or self.sales)


@dataclass
class _Claim:
    events: list[OutboxEvent]
    # The next_attempt_at the claim wrote: the events are this relay's until then.
    until: datetime
    # The same moment on this process's monotonic clock.
    expires: float


def relay_outbox(*, seconds: float = RELAY_BUDGET_SECONDS) -> RelayReport:
    """Publish due events, stock first, until none are left or `seconds` have passed.

    A relay task's way (the sweep, or a commit while the relay loop is down): one lane after
    the other. The loop runs them side by side (`relay_round`).
    """
    report = RelayReport()
    publisher = get_publisher()
    lease = claim_lease(publisher)
    deadline = monotonic() + seconds
    while monotonic() < deadline:
        stock_drained = _relay_stock(publisher, lease, report)
        # Sales after each claim of stock events: a depletion never waits behind a backlog.
        sales_drained = _relay_sales(publisher, deadline, report, paced=False)
        if stock_drained and sales_drained:
            report.drained = True
            break
    if report.busy:
        logger.info("outbox relay %s", report)
    return report


def relay_round(*, wait: int) -> int:
    """One round of the relay loop: its stock lane here, its sales lane in a thread beside it.

    A stock event (a depletion, a reorder decision) goes out the round it is due, whatever the
    sales lane is doing: a backlog of sales or a slow sales publish holds up only sales.
    Rounds are short so the loop's lease beats often: web processes read it to decide whether
    a commit needs a relay task of its own.
    """
    until = monotonic() + RELAY_ROUND_SECONDS
    sales: list[RelayReport] = []
    lane = threading.Thread(target=_run_sales_lane, args=(until, sales), name="outbox-sales")
    lane.start()
    try:
        stock = stock_lane(until=until, beside=lane)
    finally:
        lane.join()
    return stock.published + sum(r.published + r.sales for r in sales)


def stock_lane(*, until: float, beside: threading.Thread | None = None) -> RelayReport:
    """Publish stock events as they come due until `until`, and on while `beside` still runs."""
    report = RelayReport()
    publisher = get_publisher()
    lease = claim_lease(publisher)
    while True:
        drained = _relay_stock(publisher, lease, report)
        # A sales publish that outlives the round does not stop stock events meanwhile.
        if monotonic() >= until and not (
            beside is not None and beside.is_alive() and leases.keep_going()
        ):
            break
        if drained:
            left = until - monotonic()
            sleep(min(RELAY_IDLE_SECONDS, left) if left > 0 else RELAY_IDLE_SECONDS)
    if report.busy:
        logger.info("outbox relay stock %s", report)
    return report


def sales_lane(*, until: float) -> RelayReport:
    """Publish sales every OUTBOX_SALES_INTERVAL until `until`, so one message carries what
    sold meanwhile."""
    report = RelayReport()
    publisher = get_publisher()
    while True:
        _relay_sales(publisher, until, report, paced=True)
        left = until - monotonic()
        if left <= 0:
            break
        due = sales_pace.wait(paced=True)
        sleep(min(due if due > 0 else RELAY_IDLE_SECONDS, left))
    if report.busy:
        logger.info("outbox relay sales %s", report)
    return report


def _run_sales_lane(until: float, reports: list[RelayReport]) -> None:
    try:
        reports.append(sales_lane(until=until))
    except Exception:
        logger.exception("outbox sales lane failed; the next round starts it again")
    finally:
        # The thread ends here; its database connection must not outlive it.
        connections.close_all()


def _relay_stock(publisher: Publisher, lease: timedelta, report: RelayReport) -> bool:
    """Publish one claim of due stock events; True when no more are due."""
    claim = _claim(CLAIM_SIZE, lease)
    handed_back = _publish_claim(publisher, claim, report) if claim.events else False
    return len(claim.events) < CLAIM_SIZE and not handed_back


def _claim(size: int, lease: timedelta) -> _Claim:
    started = monotonic()
    now = timezone.now()
    with transaction.atomic():
        batch = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(
                topic=OutboxEvent.Topic.STOCK,
                published_at__isnull=True,
                dead_at__isnull=True,
                next_attempt_at__lte=now,
            )
            .order_by("created_at")[:size]
        )
        if batch:
            OutboxEvent.objects.filter(pk__in=[e.pk for e in batch]).update(
                next_attempt_at=now + lease
            )
    return _Claim(events=batch, until=now + lease, expires=started + lease.total_seconds())


def _publish_claim(publisher: Publisher, claim: _Claim, report: RelayReport) -> bool:
    """Publish a claim, one SNS call per chunk; return whether some events were handed back."""
    # Oldest first, marked after every call, so a relay stopped midway re-sends little.
    events = claim.events
    todo: deque[list[OutboxEvent]] = deque(
        events[start : start + SNS_BATCH_SIZE] for start in range(0, len(events), SNS_BATCH_SIZE)
    )
    while todo:
        if monotonic() + publisher.max_publish_seconds + WRITE_SECONDS > claim.expires:
            _hand_back([e.pk for chunk in todo for e in chunk], claim.until)
            return True
        chunk = todo.popleft()
        if not _publish(publisher, chunk, report):
            # SNS refused the whole call: one message in it is bad. Sent one by one, the
            # others go out and only the bad one counts a failure.
            todo.extendleft([e] for e in reversed(chunk))
    return False


def _hand_back(pks: list[uuid.UUID], until: datetime) -> None:
    """Make claimed events due again now, unless the lease ran out and another relay took them."""
    OutboxEvent.objects.filter(pk__in=pks, next_attempt_at=until).update(
        next_attempt_at=timezone.now()
    )


def _publish(publisher: Publisher, events: list[OutboxEvent], report: RelayReport) -> bool:
    """Publish one chunk and record each event's outcome.

    Returns False, recording nothing, when SNS refused a chunk of several events as a whole.
    """
    messages = [
        Message(id=e.pk.hex, subject=e.subject, body=e.body, attributes=e.attributes)
        for e in events
    ]
    try:
        outcomes = {o.id: o for o in publisher.publish(topic=events[0].topic, messages=messages)}
    except PublishError as exc:
        if exc.rejected and len(events) > 1:
            return False
        logger.warning(
            "outbox publish failed topic=%s events=%s error=%s", events[0].topic, len(events), exc
        )
        outcomes, error, rejected = {}, str(exc), exc.rejected
    else:
        error, rejected = "no answer for this entry", False
    now = timezone.now()
    done = [e.pk for e in events if e.pk.hex in outcomes and outcomes[e.pk.hex].ok]
    _mark_published(done, now=now, report=report)
    # Failed events back off by their own attempt count: 2, 4, 8 ... MAX_BACKOFF_SECONDS.
    failed: dict[tuple[int, str], list] = {}
    for event in events:
        if event.pk in done:
            continue
        outcome = outcomes.get(event.pk.hex)
        reason = (outcome.error if outcome else error)[:2000]
        attempts = event.attempts + 1
        if (outcome.rejected if outcome else rejected) and attempts >= settings.OUTBOX_MAX_ATTEMPTS:
            _bury(event, attempts=attempts, reason=reason, now=now)
            report.dead += 1
            continue
        failed.setdefault((attempts, reason), []).append(event.pk)
    for (attempts, reason), pks in failed.items():
        delay = min(2**attempts, MAX_BACKOFF_SECONDS)
        OutboxEvent.objects.filter(pk__in=pks).update(
            attempts=attempts, last_error=reason, next_attempt_at=now + timedelta(seconds=delay)
        )
        report.failed += len(pks)
    return True


def _mark_published(pks: list[uuid.UUID], *, now: datetime, report: RelayReport) -> None:
    if pks:
        OutboxEvent.objects.filter(pk__in=pks).update(
            published_at=now, attempts=F("attempts") + 1, last_error=""
        )
        report.published += len(pks)


def _bury(event: OutboxEvent, *, attempts: int, reason: str, now: datetime) -> None:
    OutboxEvent.objects.filter(pk=event.pk).update(
        attempts=attempts, last_error=reason, dead_at=now, next_attempt_at=now
    )
    logger.error(
        "outbox event dead id=%s type=%s sku=%s attempts=%s error=%.500s",
        event.pk,
        event.event_type,
        event.sku,
        attempts,
        reason,
    )


def get_ledger() -> events.SalesLedger:
    """Where the sales come from: the shop's completed orders (registered by the shop)."""
    return events.sales_ledger()


class _SalesPace:
    """When this process may publish sales next.

    After a failed publish: 2, 4, 8 ... 60 seconds later. In the relay loop, also not before
    OUTBOX_SALES_INTERVAL seconds after the last drain started: a sale waits at most that long
    plus one drain, and SNS carries one message per product per interval instead of one per
    round.
    """

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.due_at = 0.0

    def wait(self, *, paced: bool) -> float:
        """Seconds until sales may go out (0 or less: now)."""
        return max(self.retry_at, self.due_at if paced else 0.0) - monotonic()

    def failed(self) -> None:
        self.failures += 1
        self.retry_at = monotonic() + min(2**self.failures, MAX_SALES_BACKOFF_SECONDS)

    def published(self) -> None:
        self.failures, self.retry_at = 0, 0.0

    def drained(self, *, started: float) -> None:
        self.due_at = started + settings.OUTBOX_SALES_INTERVAL

    def reset(self) -> None:
        self.failures, self.retry_at, self.due_at = 0, 0.0, 0.0


sales_pace = _SalesPace()


def _relay_sales(
    publisher: Publisher, deadline: float, report: RelayReport, *, paced: bool
) -> bool:
    """Publish unpublished sales until none are left or time is up; True when none are left.

    Sales are the completed orders and the sales topic's outbox rows (pre-orders accepted and
    cancelled, refusal counts), each product's many to a message. Sales not yet due (a failed
    publish's backoff, the loop's interval) count as drained.
    """
    if not settings.EVENTS_ENABLED or sales_pace.wait(paced=paced) > 0:
        return True
    owner = uuid.uuid4().hex
    # Held through the slowest publish, so that no second relay sends the same sales meanwhile.
    if not leases.claim(SALES_LEASE, owner, stale=claim_lease(publisher)):
        return True  # another relay is publishing them
    started = monotonic()
    try:
        ledger = get_ledger()
        while monotonic() < deadline:
            # The rows first: a pre-order's order.backordered before its order.completed.
            rows = _due_sales_rows(SALES_CLAIM_SIZE)
            for chunk in _row_batches(rows):
                if not leases.renew(SALES_LEASE, owner):
                    return True  # taken over: its new holder publishes the rest
                if not _publish_rows(publisher, chunk, report):
                    sales_pace.failed()
                    return True
            sales = ledger.unpublished(limit=SALES_CLAIM_SIZE)
            for batch in _sales_batches(sales):
                if not leases.renew(SALES_LEASE, owner):
                    return True
                if not _publish_sales(publisher, ledger, batch, report):
                    sales_pace.failed()
                    return True
                sales_pace.published()
            if len(sales) < SALES_CLAIM_SIZE and len(rows) < SALES_CLAIM_SIZE:
                sales_pace.drained(started=started)
                return True
        return False
    finally:
        leases.release(SALES_LEASE, owner)


def _due_sales_rows(size: int) -> list[OutboxEvent]:
    """The sales topic's due rows, oldest first.

    Read without a claim: only the holder of the sales lease publishes them.
    """
    return list(
        OutboxEvent.objects.filter(
            topic=OutboxEvent.Topic.SALES,
            published_at__isnull=True,
            dead_at__isnull=True,
            next_attempt_at__lte=timezone.now(),
        ).order_by("created_at")[:size]
    )


def _row_batches(rows: list[OutboxEvent]) -> list[list[OutboxEvent]]:
    """The rows grouped by product, in batches that fit one SNS message each."""
    batches: list[list[OutboxEvent]] = []
    for sku in dict.fromkeys(row.sku for row in rows):
        batches += _fit([row for row in rows if row.sku == sku], body=lambda row: row.body)
    return batches


def _publish_rows(publisher: Publisher, rows: list[OutboxEvent], report: RelayReport) -> bool:
    """Publish sales rows of one product in one message and mark them; False when it failed.

    A message SNS refuses is sent again one event to a message: the others go out, and only
    the bad one counts a failure (and dies after OUTBOX_MAX_ATTEMPTS).
    """
    body, attributes = events.sales_batch([row.body for row in rows])
    message = Message(id=uuid.uuid4().hex, subject="", body=body, attributes=attributes)
    try:
        [outcome] = publisher.publish(topic=OutboxEvent.Topic.SALES, messages=[message])
        error, rejected = outcome.error, outcome.rejected
    except PublishError as exc:
        error, rejected = str(exc), exc.rejected
    if not error:
        _mark_published([row.pk for row in rows], now=timezone.now(), report=report)
        report.sales_messages += 1
        return True
    if rejected:
        for row in rows:
            _publish(publisher, [row], report)
        return True
    logger.warning("sales publish failed sku=%s events=%s error=%s", body["sku"], len(rows), error)
    _back_off(rows, reason=error[:2000], now=timezone.now())
    report.failed += len(rows)
    return False


def _back_off(rows: list[OutboxEvent], *, reason: str, now: datetime) -> None:
    """Rows that failed: each due again after 2, 4, 8 ... MAX_BACKOFF_SECONDS by its attempts."""
    by_attempts: dict[int, list[uuid.UUID]] = {}
    for row in rows:
        by_attempts.setdefault(row.attempts + 1, []).append(row.pk)
    for attempts, pks in by_attempts.items():
        OutboxEvent.objects.filter(pk__in=pks).update(
            attempts=attempts,
            last_error=reason,
            next_attempt_at=now + timedelta(seconds=min(2**attempts, MAX_BACKOFF_SECONDS)),
        )


def _sales_batches(sales: list[events.Sale]) -> list[list[dict]]:
    """The sales' events, grouped by product, in batches that fit one SNS message each."""
    batches: list[list[dict]] = []
    for sku in dict.fromkeys(sale.sku for sale in sales):
        batches += _fit([events.sale_event(sale) for sale in sales if sale.sku == sku])
    return batches


def _fit(batch: list[T], *, body: Callable[[T], Any] = lambda item: item) -> list[list[T]]:
    """`batch`, halved until each part's events take at most SALES_MESSAGE_BYTES as JSON."""
    if len(batch) == 1 or len(json.dumps([body(item) for item in batch])) <= SALES_MESSAGE_BYTES:
        return [batch]
    half = len(batch) // 2
    return _fit(batch[:half], body=body) + _fit(batch[half:], body=body)


def _publish_sales(
    publisher: Publisher, ledger: events.SalesLedger, batch: list[dict], report: RelayReport
) -> bool:
    """Publish one sales batch and mark its orders published; False when it did not go out."""
    body, attributes = events.sales_batch(batch)
    message = Message(id=uuid.uuid4().hex, subject="", body=body, attributes=attributes)
    try:
        [outcome] = publisher.publish(topic=OutboxEvent.Topic.SALES, messages=[message])
        error = outcome.error
    except PublishError as exc:
        error = str(exc)
    if error:
        logger.warning(
            "sales publish failed sku=%s events=%s error=%s", body["sku"], len(batch), error
        )
        report.failed += len(batch)
        return False
    ledger.mark_published(order_ids=[event["order_id"] for event in batch])
    report.sales += len(batch)
    report.sales_messages += 1
    return True


def retry_dead(*, ids: Iterable[uuid.UUID]) -> list[OutboxEvent]:
    """Give the dead events among `ids` a fresh set of attempts, due now; return them."""
    with transaction.atomic():
        revived = list(
            OutboxEvent.objects.select_for_update().filter(pk__in=list(ids), dead_at__isnull=False)
        )
        OutboxEvent.objects.filter(pk__in=[e.pk for e in revived]).update(
            dead_at=None, attempts=0, next_attempt_at=timezone.now()
        )
    if revived:
        logger.info("outbox dead events retried ids=%s", ",".join(str(e.pk) for e in revived))
        trigger_relay()
    return revived


def purge_published(*, before: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete events published before `before`, in short batches; return how many.

    Without `before`, those published more than OUTBOX_RETENTION_DAYS ago. Each batch is its
    own statement, so the purge never holds locks the relay or orders wait on for long.
    Unpublished and dead events are kept whatever their age.
    """
    cutoff = before or timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    old = OutboxEvent.objects.filter(published_at__lt=cutoff).order_by("published_at")
    deleted = 0
    while pks := list(old.values_list("pk", flat=True)[:batch_size]):
        deleted += OutboxEvent.objects.filter(pk__in=pks).delete()[0]
        if len(pks) < batch_size:
            break
    if deleted:
        logger.info("outbox purged published events=%s before=%s", deleted, cutoff.isoformat())
    return deleted


def backlog() -> dict:
    """Events waiting to be published (sales included), the oldest's age in seconds, dead ones."""
    unpublished = OutboxEvent.objects.filter(published_at__isnull=True)
    pending = unpublished.filter(dead_at__isnull=True)
    count = pending.count()
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    if settings.EVENTS_ENABLED:
        sales, oldest_sale = get_ledger().backlog()
        count += sales
        oldest = min(filter(None, (oldest, oldest_sale)), default=None)
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {
        "pending": count,
        "oldest_age_seconds": round(age, 3),
        "dead": unpublished.filter(dead_at__isnull=False).count(),
    }
