"""Back-in-stock emails through the pipeline: callback, SNS, the notify queue, the notify loop."""

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from django.core import mail
from django.db import connection
from django.test import Client
from django.utils import timezone

from factory_bridge.models import FailedMessage
from factory_bridge.services import notify, pollers
from factory_bridge.services.dlq import watch_dlq
from factory_bridge.services.notify import consume_notify
from factory_bridge.tools.simulator import FactorySimulator
from inventory import alerts
from inventory.models import Product, StockAlert
from nudged.core import leases
from nudged.core.models import WorkerLease
from tests.factory_bridge.sqs import messages_in, queue_url, sqs_client
from tests.factory_bridge.test_e2e import SKU, buy, restock_poller, wait_until  # noqa: F401
from tests.inventory.test_alert_delivery import Provider, free_port

pytestmark = pytest.mark.e2e


def replenished_envelope(sku: str) -> str:
    """A stock.replenished event wrapped the way SNS delivers it to SQS."""
    event = {"event_id": str(uuid.uuid4()), "type": "stock.replenished", "sku": sku}
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "Message": json.dumps(event),
            "MessageAttributes": {
                "EventType": {"Type": "String", "Value": "stock.replenished"},
                "MessageAttributeProductId": {"Type": "String", "Value": sku},
            },
        }
    )


def send(endpoint: str, queue: str, body: str) -> None:
    sqs_client(endpoint).send_message(QueueUrl=queue_url(endpoint, queue), MessageBody=body)


def confirmed(product: Product, *emails: str) -> None:
    now = timezone.now()
    StockAlert.objects.bulk_create(
        StockAlert(product=product, email=email, mailbox=email, confirmed_at=now)
        for email in emails
    )


def back_in_stock() -> list[str]:
    return [m.to[0] for m in mail.outbox if m.subject.endswith(" is back")]


def test_confirmed_subscribers_of_a_sold_out_donut_get_one_email_each_when_it_is_delivered(
    live_server,
    aws,
    product: Product,
    restock_poller,  # noqa: F811
    settings,
):
    settings.PUBLIC_BASE_URL = live_server.url
    with FactorySimulator(port=0, delay=3.0) as factory:
        settings.FACTORY_API_URL = factory.url
        buy(live_server.url, 3)
        for email in ("a@example.com", "b@example.com", "unconfirmed@example.com"):
            answer = requests.post(
                f"{live_server.url}/api/products/{SKU}/alerts/", json={"email": email}, timeout=5
            )
            assert answer.status_code == 201, answer.text
        consume_notify(wait=0)
        assert sorted(m.to[0] for m in mail.outbox) == [
            "a@example.com",
            "b@example.com",
            "unconfirmed@example.com",
        ]
        for message in mail.outbox[:2]:
            link = next(w for w in message.body.split() if "/alerts/confirm/" in w)
            Client().post(link.removeprefix(live_server.url))
        wait_until(
            lambda: factory.received and factory.received[0]["callback_status"] == "delivered",
            deadline=time.monotonic() + 15,
            what="the factory's callback",
        )
    restock_poller()

    deadline = time.monotonic() + 10
    while len(back_in_stock()) < 2 and time.monotonic() < deadline:
        consume_notify(wait=1)
    assert sorted(back_in_stock()) == ["a@example.com", "b@example.com"]
    assert f"{live_server.url}/alerts/unsubscribe/" in mail.outbox[-1].body

    # The same arrival delivered again: nobody is emailed twice.
    send(aws, "nudged-notify", replenished_envelope(SKU))
    consume_notify(wait=1)
    assert len(back_in_stock()) == 2
    assert messages_in(aws, "nudged-notify") == 0
    assert StockAlert.objects.filter(notified_at__isnull=False).count() == 2


def test_an_arrival_while_smtp_is_down_is_kept_in_the_database_not_the_queue(
    aws, product: Product, settings, monkeypatch
):
    settings.SQS_VISIBILITY_TIMEOUT = 1
    confirmed(product, "a@example.com")
    send(aws, "nudged-notify", replenished_envelope(SKU))

    def smtp_down(*args):  # type: ignore[no-untyped-def]
        raise ConnectionRefusedError("SMTP down")

    monkeypatch.setattr(alerts, "_message", smtp_down)
    assert consume_notify(wait=1) == 0
    time.sleep(1.5)
    # The message is gone: its receive count can no longer decide the notices' fate.
    assert messages_in(aws, "nudged-notify") == 0
    alert = StockAlert.objects.get()
    assert alert.waiting and alert.due_at is not None and alert.attempts == 1

    monkeypatch.undo()
    StockAlert.objects.update(send_after=timezone.now())
    assert consume_notify(wait=0) == 1
    assert back_in_stock() == ["a@example.com"]


def test_an_unreadable_message_is_dead_lettered_and_shown_with_the_failed_messages(aws, db):
    send(aws, "nudged-notify", "not an envelope")

    consume_notify(wait=1)
    watch_dlq(wait=2)

    row = FailedMessage.objects.get()
    assert (row.source_queue, row.dlq) == ("nudged-notify", "nudged-notify-dlq")
    assert messages_in(aws, "nudged-notify") == 0


def test_at_its_deadline_the_loop_releases_the_arrivals_it_did_not_reach(
    aws, product: Product, monkeypatch
):
    confirmed(product, "a@example.com")
    StockAlert.objects.update(due_at=timezone.now(), send_after=timezone.now())
    for _ in range(3):
        send(aws, "nudged-notify", replenished_envelope("CP-UNKNOWN"))
    recorded: list[str] = []
    monkeypatch.setattr(notify, "record_arrival", lambda sku: recorded.append(sku) or 0)
    monkeypatch.setattr(leases, "keep_going", lambda: False)

    assert consume_notify(wait=1) == 0

    assert len(recorded) == 1
    # Visible again at once for the successor, and no email started past the deadline.
    assert messages_in(aws, "nudged-notify") == 2
    assert mail.outbox == []
    assert StockAlert.objects.get().claimed_until is None


@pytest.mark.django_db(transaction=True)
def test_a_batch_outlasting_the_visibility_timeout_is_recorded_once_per_message(
    aws, settings, monkeypatch
):
    settings.SQS_VISIBILITY_TIMEOUT = 2
    skus = [f"CP-80{n}" for n in range(4)]
    for sku in skus:
        send(aws, "nudged-notify", replenished_envelope(sku))
    recorded: Counter[str] = Counter()
    lock = threading.Lock()

    def slow_record(*, sku: str) -> int:
        time.sleep(1)
        with lock:
            recorded[sku] += 1
        return 0

    monkeypatch.setattr(notify, "record_arrival", slow_record)

    def consumer() -> None:
        try:
            for _ in range(4):
                consume_notify(wait=1)
        finally:
            connection.close()

    consumers = [threading.Thread(target=consumer) for _ in range(2)]
    for thread in consumers:
        thread.start()
    for thread in consumers:
        thread.join(timeout=60)

    assert recorded == {sku: 1 for sku in skus}
    assert messages_in(aws, "nudged-notify") == 0


class SlowProvider(Provider):
    """A mail server that takes a fifth of a second per email."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.2)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.django_db(transaction=True)
def test_the_notify_loop_beats_per_email_and_leaves_the_rest_at_its_deadline(
    aws, factory, settings
):
    product = Product.objects.create(
        sku="CP-1", name="Glazed", price=1000, stock=0, factory=factory
    )
    emails = [f"c{n}@example.com" for n in range(30)]
    confirmed(product, *emails)
    StockAlert.objects.update(due_at=timezone.now(), send_after=timezone.now())
    provider = SlowProvider()
    port = free_port()
    controller = Controller(provider, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 5
    beats: set[object] = set()
    running = threading.Event()

    def sample() -> None:
        try:
            running.wait(timeout=10)
            while running.is_set():
                beats.add(
                    WorkerLease.objects.filter(name="notify")
                    .values_list("heartbeat_at", flat=True)
                    .first()
                )
                time.sleep(0.05)
        finally:
            connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        running.set()
        pollers.run_poller(name="notify", seconds=2.5, handover=False)
        running.clear()
        sampler.join(timeout=10)

        sent = len(provider.delivered)
        assert 2 <= sent < len(emails)
        # One beat per email, not only one per round (the round took seconds).
        assert len(beats - {None}) >= sent
        rest = StockAlert.objects.filter(waiting=True)
        assert rest.count() == len(emails) - sent
        assert not rest.filter(claimed_until__isnull=False).exists()

        while alerts.send_due_mail():
            pass
    finally:
        running.clear()
        controller.stop()
    assert sorted(provider.delivered) == sorted(emails)
