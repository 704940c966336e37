"""/metrics: Prometheus's text format, for the holder of METRICS_TOKEN only (a 404 to anyone
else), with the shop's numbers read from the database and SQS at the scrape."""

import threading
from collections.abc import Iterator
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.db.models import F
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from factory_bridge.factory import FactoryError
from factory_bridge.models import FailedMessage, OrderTally, RestockRequest
from factory_bridge.services.outbox import relay_outbox
from factory_bridge.services.restock.factory_order import place_factory_order
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product
from nudged.ops import metrics
from shop.models import Order
from tests.factory_bridge.sqs import queue_url, sqs_client

pytestmark = pytest.mark.django_db

TOKEN = "scrape-me-8c1f0a"
CLOSED_URL = "http://127.0.0.1:1"


@pytest.fixture(autouse=True)
def metrics_token(settings):  # type: ignore[no-untyped-def]
    settings.METRICS_TOKEN = TOKEN


@pytest.fixture(autouse=True)
def fresh_queue_counts() -> Iterator[None]:
    metrics.queue_counts.clear()
    yield
    metrics.queue_counts.clear()


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def scrape(client) -> dict[str, dict[tuple, float]]:  # type: ignore[no-untyped-def]
    """Every sample of a scrape: {sample name: {sorted label pairs: value}}."""
    response = client.get("/metrics", **bearer(TOKEN))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def order(client, sku: str, quantity: int = 1) -> int:  # type: ignore[no-untyped-def]
    response = client.post(
        "/api/orders/", {"sku": sku, "quantity": quantity}, content_type="application/json"
    )
    return response.status_code


@pytest.fixture
def sold_out(factory) -> Product:  # type: ignore[no-untyped-def]
    return Product.objects.create(
        sku="CP-502105", name="딸기 도넛", price=3900, stock=0, factory=factory
    )


def test_nobody_without_the_token_sees_the_metrics(client, admin_user, settings):
    for headers in ({}, bearer("wrong"), bearer(""), {"HTTP_AUTHORIZATION": TOKEN}):
        assert client.get("/metrics", **headers).status_code == 404
    client.force_login(admin_user)
    assert client.get("/metrics").status_code == 404

    settings.METRICS_TOKEN = ""

    assert client.get("/metrics", **bearer("")).status_code == 404
    assert client.get("/metrics", **bearer(TOKEN)).status_code == 404


def test_only_get_is_answered(client):
    assert client.post("/metrics", **bearer(TOKEN)).status_code == 405
    assert client.post("/metrics").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_get_405_or_404_not_the_csrf_page(method):
    csrf_checking = Client(enforce_csrf_checks=True)

    with_token = csrf_checking.generic(method, "/metrics", **bearer(TOKEN))
    without = csrf_checking.generic(method, "/metrics")

    assert with_token.status_code == 405
    assert with_token["Allow"] == "GET, HEAD"
    assert without.status_code == 404
    assert b"CSRF" not in with_token.content + without.content


def answered(status: str, suffix: str = "_total") -> float:
    """Order requests this process answered with `status` so far (other tests' included)."""
    labels = {"view": "api:order-create", "method": "POST", "status": status}
    name = "nudged_http_requests" if suffix == "_total" else "nudged_http_request_duration_seconds"
    return REGISTRY.get_sample_value(name + suffix, labels) or 0.0


def test_a_scrape_after_orders_reports_the_shop(client, aws, product, sold_out):
    before = {status: answered(status) for status in ("201", "409")}
    timed_before = answered("201", "_count")
    product.purchase_limit = 2
    product.save()
    assert [order(client, product.sku), order(client, product.sku)] == [201, 201]
    assert order(client, product.sku) == 409  # the purchase limit
    assert order(client, sold_out.sku) == 409  # out of stock
    relay_outbox()
    # A sale that waits to be published, 30 s old, and one that went out 12 s after the order.
    waiting = Order.objects.create(
        product=product, quantity=1, status=Order.Status.COMPLETED, unit_price=1, remaining_stock=1
    )
    Order.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    late = Order.objects.filter(published_at__isnull=False).order_by("pk").first()
    Order.objects.filter(pk=late.pk).update(created_at=F("published_at") - timedelta(seconds=12))
    for status in ("requested", "requested", "fulfilled"):
        RestockRequest.objects.create(
            product=product,
            factory=product.factory,
            quantity=10,
            status=status,
            depletion_key=f"key-{status}-{RestockRequest.objects.count()}",
        )
    for status in ("dead", "dead", "redriven"):
        FailedMessage.objects.create(
            fingerprint=f"fp-{FailedMessage.objects.count()}", status=status, body="{}"
        )
    dlq = queue_url(aws, settings.SQS_NOTIFY_DLQ)
    for body in ("one", "two"):
        sqs_client(aws).send_message(QueueUrl=dlq, MessageBody=body)

    samples = scrape(client)

    assert samples["nudged_orders_total"] == {
        (("outcome", "served"),): 3.0,  # the one waiting to be published included
        (("outcome", "refused"),): 1.0,
        (("outcome", "limited"),): 1.0,
    }
    assert samples["nudged_stock"] == {(("sku", "CP-502101"),): 1.0, (("sku", "CP-502105"),): 0.0}
    assert samples["nudged_sold_out"] == {
        (("sku", "CP-502101"),): 0.0,
        (("sku", "CP-502105"),): 1.0,
    }
    assert samples["nudged_restock_requests"] == {
        (("status", "pending"),): 0.0,
        (("status", "requested"),): 2.0,
        (("status", "fulfilled"),): 1.0,
        (("status", "overdue"),): 0.0,
        (("status", "failed"),): 0.0,
    }
    assert samples["nudged_failed_messages"] == {
        (("status", "dead"),): 2.0,
        (("status", "redriven"),): 1.0,
        (("status", "discarded"),): 0.0,
    }
    assert samples["nudged_outbox_pending"][()] == 1.0
    assert 30 <= samples["nudged_outbox_oldest_seconds"][()] < 40
    lag = samples["nudged_relay_lag_seconds"]
    assert 12.0 <= lag[(("stat", "max"),)] < 13.0
    assert 0 < lag[(("stat", "mean"),)] < lag[(("stat", "max"),)]
    messages = samples["nudged_queue_messages"]
    assert messages[(("queue", settings.SQS_NOTIFY_DLQ), ("state", "visible"))] == 2.0
    assert {queue for labels in messages for key, queue in labels if key == "queue"} == {
        settings.SQS_RESTOCK_QUEUE,
        settings.SQS_RESTOCK_DLQ,
        settings.SQS_NOTIFY_QUEUE,
        settings.SQS_NOTIFY_DLQ,
        settings.SQS_OPS_QUEUE,
    }
    assert len(messages) == 5 * 3
    assert set(samples["nudged_queue_up"].values()) == {1.0}
    assert samples["nudged_database_up"][()] == 1.0
    requests = samples["nudged_http_requests_total"]
    created = (("method", "POST"), ("status", "201"), ("view", "api:order-create"))
    refused = (("method", "POST"), ("status", "409"), ("view", "api:order-create"))
    assert requests[created] - before["201"] == 2.0
    assert requests[refused] - before["409"] == 2.0
    durations = samples["nudged_http_request_duration_seconds_count"]
    assert durations[created] - timed_before == 2.0


def test_factory_calls_are_a_histogram_by_outcome_and_errors_by_kind(client, product, settings):
    simulator = FactorySimulator(delay=600)
    simulator.start()
    try:
        settings.FACTORY_API_URL = simulator.url
        for n in range(3):
            place_factory_order(restock(product, n))
        settings.FACTORY_API_URL = CLOSED_URL
        with pytest.raises(FactoryError):
            place_factory_order(restock(product, 3))
    finally:
        simulator.stop()

    samples = scrape(client)

    buckets = samples["nudged_factory_request_seconds_bucket"]
    ok = {
        le: value
        for labels, value in buckets.items()
        for key, le in labels
        if key == "le" and ("outcome", "ok") in labels
    }
    assert ok["+Inf"] == 3.0
    assert ok["0.05"] <= ok["1.0"] <= ok["+Inf"]
    assert samples["nudged_factory_request_seconds_count"] == {
        (("outcome", "connection"),): 1.0,
        (("outcome", "ok"),): 3.0,
    }
    assert 0 < samples["nudged_factory_request_seconds_sum"][(("outcome", "ok"),)] < 3 * 13
    assert samples["nudged_factory_errors_total"] == {
        (("kind", "timeout"),): 0.0,
        (("kind", "connection"),): 1.0,
        (("kind", "status"),): 0.0,
        (("kind", "answer"),): 0.0,
        (("kind", "error"),): 0.0,
    }


def restock(product: Product, n: int) -> RestockRequest:
    return RestockRequest.objects.create(
        product=product, factory=product.factory, quantity=10, depletion_key=f"depletion-{n}"
    )


def test_queue_counts_are_reused_for_a_few_seconds(client, aws, monotonic_clock):
    dlq = queue_url(aws, settings.SQS_RESTOCK_DLQ)
    sqs_client(aws).send_message(QueueUrl=dlq, MessageBody="first")
    visible = (("queue", settings.SQS_RESTOCK_DLQ), ("state", "visible"))
    assert scrape(client)["nudged_queue_messages"][visible] == 1.0
    sqs_client(aws).send_message(QueueUrl=dlq, MessageBody="second")

    monotonic_clock.advance(metrics.QUEUE_COUNTS_MAX_AGE - 1)
    assert scrape(client)["nudged_queue_messages"][visible] == 1.0
    monotonic_clock.advance(2)
    assert scrape(client)["nudged_queue_messages"][visible] == 2.0


@pytest.fixture
def monotonic_clock() -> Iterator[mock.Mock]:
    """metrics' monotonic clock, moved by the test."""
    now = [1000.0]
    clock = mock.Mock(side_effect=lambda: now[0])
    clock.advance = lambda seconds: now.__setitem__(0, now[0] + seconds)
    with mock.patch("nudged.ops.metrics.monotonic", clock):
        yield clock


def test_sqs_down_still_answers_with_the_queues_down(client, product, settings):
    settings.AWS_ENDPOINT_URL = CLOSED_URL

    samples = scrape(client)

    assert samples["nudged_queue_up"][(("queue", settings.SQS_RESTOCK_QUEUE),)] == 0.0
    assert set(samples["nudged_queue_up"].values()) == {0.0}
    assert "nudged_queue_messages" not in samples
    assert samples["nudged_stock"] == {(("sku", "CP-502101"),): 3.0}


def test_database_down_still_answers_with_the_requests(client, aws):
    with mock.patch("nudged.ops.metrics._database_families", side_effect=OperationalError("gone")):
        samples = scrape(client)

    assert samples["nudged_database_up"][()] == 0.0
    assert "nudged_stock" not in samples
    assert "nudged_http_requests_total" in samples


def test_made_up_methods_share_one_label(client):
    for n in range(20):
        client.generic(f"MADEUP{n}", "/api/products/")
        client.generic(f"MADEUP{n}", "/no/such/path/")
    client.generic("DELETE", "/api/products/")

    requests = scrape(client)["nudged_http_requests_total"]

    methods = {value for labels in requests for key, value in labels if key == "method"}
    assert not {method for method in methods if method.startswith("MADEUP")}
    other = (("method", "other"), ("status", "405"), ("view", "api:product-list"))
    assert requests[other] >= 20.0
    assert requests[(("method", "DELETE"), ("status", "405"), ("view", "api:product-list"))] >= 1
    assert requests[(("method", "other"), ("status", "404"), ("view", "unmatched"))] >= 20.0


def test_served_orders_come_from_a_tally_and_the_orders_placed_since(client, product):
    def sale(minutes_ago: float = 0) -> Order:
        order = Order.objects.create(
            product=product,
            quantity=1,
            status=Order.Status.COMPLETED,
            unit_price=1,
            remaining_stock=1,
        )
        Order.objects.filter(pk=order.pk).update(
            created_at=timezone.now() - timedelta(minutes=minutes_ago)
        )
        return order

    settled = [sale(minutes_ago=10) for _ in range(3)]
    for _ in range(2):
        sale()

    def served() -> float:
        return scrape(client)["nudged_orders_total"][(("outcome", "served"),)]

    assert served() == 5.0
    tally = OrderTally.objects.get()
    assert (tally.through_id, tally.orders) == (settled[-1].pk, 3)
    # A scrape reads the tally and counts only the orders placed since: not every order.
    OrderTally.objects.update(orders=F("orders") + 1000)
    assert served() == 1005.0
    sale()
    assert served() == 1006.0
    assert OrderTally.objects.get().orders == 1003


@pytest.mark.django_db(transaction=True)
def test_the_tally_moves_on_once_when_scrapes_move_it_at_once(product):
    Order.objects.bulk_create(
        Order(
            product=product,
            quantity=1,
            status=Order.Status.COMPLETED,
            unit_price=1,
            remaining_stock=1,
        )
        for _ in range(4)
    )
    later = timezone.now() + timedelta(seconds=metrics.TALLY_SETTLE_SECONDS + 1)
    OrderTally.objects.create(pk=1)
    start = threading.Barrier(4)
    answers: list[object] = [None] * 4

    def scrape_at_once(n: int) -> None:
        try:
            start.wait()
            answers[n] = metrics.served_orders(now=later)
        except Exception as exc:  # handed back to the test
            answers[n] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=scrape_at_once, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert answers == [4, 4, 4, 4]
    assert OrderTally.objects.get().orders == 4
