"""Back-in-stock emails through the pipeline: callback, SNS, the notify queue, the notify loop."""

import json
import time
import uuid

import pytest
import requests
from django.core import mail

from factory_bridge.models import FailedMessage
from factory_bridge.services.dlq import watch_dlq
from factory_bridge.services.notify import consume_notify
from factory_bridge.simulator import FactorySimulator
from inventory import alerts
from inventory.models import Product, StockAlert
from tests.factory_bridge.sqs import messages_in, queue_url, sqs_client
from tests.factory_bridge.test_e2e import SKU, buy, restock_poller, wait_until  # noqa: F401

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


def test_subscribers_of_a_sold_out_donut_get_one_email_each_when_the_factory_delivers(
    live_server,
    aws,
    product: Product,
    restock_poller,  # noqa: F811
    settings,
):
    settings.PUBLIC_BASE_URL = live_server.url
    with FactorySimulator(port=0, delay=1.0) as factory:
        settings.FACTORY_API_URL = factory.url
        buy(live_server.url, 3)
        for email in ("a@example.com", "b@example.com"):
            answer = requests.post(
                f"{live_server.url}/api/products/{SKU}/alerts/", json={"email": email}, timeout=5
            )
            assert answer.status_code == 201, answer.text
        wait_until(
            lambda: factory.received and factory.received[0]["callback_status"] == "delivered",
            deadline=time.monotonic() + 15,
            what="the factory's callback",
        )
    restock_poller()

    deadline = time.monotonic() + 10
    while len(mail.outbox) < 2 and time.monotonic() < deadline:
        consume_notify(wait=1)
    assert sorted(m.to[0] for m in mail.outbox) == ["a@example.com", "b@example.com"]
    assert f"{live_server.url}/alerts/unsubscribe/" in mail.outbox[0].body

    # The same arrival delivered again: nobody is emailed twice.
    send(aws, "nudged-notify", replenished_envelope(SKU))
    consume_notify(wait=1)
    assert len(mail.outbox) == 2
    assert messages_in(aws, "nudged-notify") == 0
    assert StockAlert.objects.filter(notified_at__isnull=False).count() == 2


def test_smtp_down_leaves_the_message_to_retry(aws, product: Product, settings, monkeypatch):
    settings.SQS_VISIBILITY_TIMEOUT = 1
    alerts.subscribe_alert(sku=SKU, email="a@example.com")
    send(aws, "nudged-notify", replenished_envelope(SKU))

    def smtp_down(*args):  # type: ignore[no-untyped-def]
        raise ConnectionRefusedError("SMTP down")

    monkeypatch.setattr(alerts, "_message", smtp_down)
    assert consume_notify(wait=1) == 0
    monkeypatch.undo()
    time.sleep(1.5)

    assert consume_notify(wait=1) == 1
    assert [m.to for m in mail.outbox] == [["a@example.com"]]


def test_an_unreadable_message_is_dead_lettered_and_shown_with_the_failed_messages(aws, db):
    send(aws, "nudged-notify", "not an envelope")

    consume_notify(wait=1)
    watch_dlq(wait=2)

    row = FailedMessage.objects.get()
    assert (row.source_queue, row.dlq) == ("nudged-notify", "nudged-notify-dlq")
    assert messages_in(aws, "nudged-notify") == 0
