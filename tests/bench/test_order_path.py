"""What an order costs the database, and the yardstick bench/orders.py holds it against.

The order path is measured against a view that runs two statements (bench/baseline.py), so
every statement and round trip the path sends counts: one added to it must fail here first.
"""

import json
import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from rest_framework.test import APIClient

from inventory import outbox
from inventory.models import Product
from shop.models import Order

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "/bench/baseline/orders/"


def statements(captured: CaptureQueriesContext) -> dict[str, str]:
    """Each statement by its verb and first table, in order; savepoints (the test's own
    transaction around the view's) left out."""
    shapes = {}
    for query in captured.captured_queries:
        sql = query["sql"]
        if re.match(r"(RELEASE |ROLLBACK TO )?SAVEPOINT", sql):
            continue
        match = re.match(r"(UPDATE|INSERT INTO|DELETE FROM|SELECT .*? FROM) `?(\w+)`?", sql, re.S)
        assert match, sql
        shapes[f"{match[1].split()[0]} {match[2]}"] = sql
    assert len(shapes) == len(captured) - sum("SAVEPOINT" in q["sql"] for q in captured), shapes
    return shapes


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("limit", [0, 10])
def test_an_order_is_one_round_trip_with_the_limits_in_its_update(
    product, settings, monkeypatch, limit
):
    """With the purchase limit on or off: the limits are conditions of the UPDATE."""
    settings.PURCHASE_LIMIT = limit
    # The relay loop was seen running, as in a running cluster: a commit asks nothing of it.
    monkeypatch.setattr(outbox, "_loop_seen_until", float("inf"))
    with CaptureQueriesContext(connection) as captured:
        answer = APIClient().post("/api/orders/", {"sku": "CP-502101", "quantity": 1}, "json")

    assert answer.status_code == 201
    sent = [query["sql"] for query in captured.captured_queries]
    # One round trip, where the baseline's UPDATE, INSERT and transaction cost five: the row
    # lock is held while MariaDB runs the statements, never across the network.
    assert len(sent) == 1, sent
    begin, take, insert, commit = sent[0].split("; ")
    assert begin == "START TRANSACTION"
    assert take.startswith("UPDATE `inventory_product`")
    assert "`p`.`stock` = `p`.`stock` - 1" in take
    assert "`p`.`stock` > 1" in take
    # Both counts are conditions of the UPDATE (read only when their limit is on: a product
    # may have a limit of its own while the default is off).
    assert "FORCE INDEX (`order_customer`)" in take
    assert "FORCE INDEX (`order_address`)" in take
    assert insert.startswith("INSERT INTO `shop_order`") and "ROW_COUNT() = 1" in insert
    assert commit == "COMMIT"
    order = Order.objects.get()
    # The order row is the sale's record; the relay publishes it later.
    assert order.published_at is None


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="bench.urls")
def test_the_baseline_takes_stock_and_writes_one_published_order_or_refuses(client, product):
    with CaptureQueriesContext(connection) as captured:
        answer = client.post(BASELINE, json.dumps({"sku": "CP-502101", "quantity": 2}), "json")

    assert answer.status_code == 201
    assert list(statements(captured)) == ["UPDATE inventory_product", "INSERT shop_order"]
    order = Order.objects.get()
    assert answer.json() == {
        "sku": "CP-502101",
        "quantity": 2,
        "status": "completed",
        "remaining_stock": 1,
        "reference": order.reference,
    }
    assert (order.unit_price, order.remaining_stock, order.channel) == (19900, 1, "api")
    assert order.published_at == order.created_at

    refused = client.post(BASELINE, json.dumps({"sku": "CP-502101", "quantity": 2}), "json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "out_of_stock"
    last = client.post(BASELINE, json.dumps({"sku": "CP-502101", "quantity": 1}), "json")
    assert last.json()["remaining_stock"] == 0
    sold_out = client.post(BASELINE, json.dumps({"sku": "CP-502101", "quantity": 1}), "json")
    assert sold_out.status_code == 409
    assert Product.objects.get().stock == 0
    assert Order.objects.count() == 2


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="bench.urls")
@pytest.mark.parametrize(
    "body",
    [
        "",
        "[1]",
        '{"sku": "CP-502101"}',
        '{"sku": 1, "quantity": 1}',
        '{"sku": "CP-502101", "quantity": 0}',
        '{"sku": "CP-502101", "quantity": true}',
    ],
)
def test_the_baseline_answers_400_to_a_bad_body(client, product, body):
    answer = client.post(BASELINE, body, "json")
    assert answer.status_code == 400
    assert Product.objects.get().stock == 3


def test_the_product_routes_no_baseline_and_imports_no_benchmark_code():
    from django.urls import Resolver404, resolve

    with pytest.raises(Resolver404):
        resolve(BASELINE)
    product = [ROOT / name for name in ("nudged", "shop", "inventory", "factory_bridge")]
    for path in (p for package in product for p in package.rglob("*.py")):
        assert not re.search(r"^\s*(from|import) bench\b", path.read_text(), re.M), path
