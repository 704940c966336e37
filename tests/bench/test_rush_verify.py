"""The rush's invariants and replenishment numbers on recorded runs, in both replenishment
modes."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.rush_report import replenishment
from bench.rush_verify import Snapshot, verify

START = datetime(2026, 1, 1)
T0 = START.replace(tzinfo=UTC).timestamp()


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def event(kind: str, seconds: float, **body: Any) -> dict[str, Any]:
    return {
        "event_type": kind,
        "sku": "A",
        "body": {"event_id": f"{kind}-{seconds}", **body},
        "created_at": at(seconds),
        "published_at": at(seconds + 0.2),
        "attempts": 1,
    }


def restock(key: str, *, created: float, fulfilled: float, pk: int = 1) -> dict[str, Any]:
    return {
        "id": pk,
        "sku": "A",
        "quantity": 10,
        "status": "fulfilled",
        "depletion_key": key,
        "replaces_id": None,
        "created_at": at(created),
        "fulfilled_at": at(fulfilled),
    }


def order(pk: int, quantity: int, remaining: int, seconds: float) -> dict:
    """A completed order, published by the relay 0.3 s after it was placed."""
    return {
        "id": pk,
        "sku": "A",
        "quantity": quantity,
        "status": "completed",
        "remaining_stock": remaining,
        "created_at": at(seconds),
        "published_at": at(seconds + 0.3),
    }


def arrival(seconds: float) -> dict[str, Any]:
    return {
        "sku": "A",
        "reason": "arrival",
        "old_quantity": 0,
        "new_quantity": 10,
        "note": "",
        "created_at": at(seconds),
    }


def product(**counters: int) -> dict[str, dict[str, Any]]:
    refusals = {"orders_refused": 0, "units_refused": 0, "orders_limited": 0}
    return {
        "A": {"sku": "A", "stock": 10, "depleted_at": None, "on_order": 0, "units_sold": 3}
        | refusals
        | counters
    }


def at_zero() -> Snapshot:
    """The product ran out; its restock answers the depletion."""
    outbox = [event("stock.depleted", 1), event("stock.replenished", 11)]
    return Snapshot(
        products=product(),
        orders=[order(1, 3, 0, 1)],
        arrivals=[arrival(11)],
        counts=[],
        outbox=outbox,
        restocks=[restock("stock.depleted-1", created=1.5, fulfilled=11)],
        failed=[],
    )


def adaptive() -> Snapshot:
    """Refusals are counters with an orders.refused event; a stock.low decision, written with
    the depletion, brings the restock; the depletion is absorbed by it."""
    outbox = [
        event("stock.depleted", 1),
        event("stock.low", 1.001, decision_id=7, quantity=10),
        event("orders.refused", 5, refused_orders=4, refused_units=6, limited_orders=1),
        event("stock.replenished", 11),
    ]
    return Snapshot(
        products=product(orders_refused=4, units_refused=6, orders_limited=1),
        orders=[order(1, 3, 0, 1)],
        arrivals=[arrival(11)],
        counts=[],
        outbox=outbox,
        restocks=[restock("stock.low-1.001", created=1.5, fulfilled=11)],
        failed=[],
    )


def sales(snap: Snapshot) -> dict[int, str]:
    """The order.completed events the ops queue had, by order id."""
    return {o["id"]: f"sale-{o['id']}" for o in snap.orders}


def check(snap: Snapshot, ops_orders: dict[int, str] | None = None) -> dict[str, Any]:
    result = verify(
        snap,
        initial_stock={"A": 3},
        t0=T0,
        load_end=T0 + 20,
        ops_seen={
            **{e["body"]["event_id"]: (T0 + 1, e["event_type"]) for e in snap.outbox},
            **{f"sale-{o['id']}": (T0 + 2, "order.completed") for o in snap.orders},
        },
        ops_orders=ops_orders if ops_orders is not None else sales(snap),
        ops_duplicates=0,
        dlq_messages=0,
        factory_jobs=[{"callback_url": f"/cb/{r['id']}", "status": 201} for r in snap.restocks],
        http={"server_errors": 0, "no_answer": 0, "db_window": None},
        drill_windows=[],
    )
    return {"verdicts": {v.name: v.ok for v in result.verdicts}, "facts": result.facts}


@pytest.mark.parametrize("recorded", [at_zero, adaptive])
def test_invariants_hold_in_either_mode(recorded) -> None:
    assert all(check(recorded())["verdicts"].values())


def test_depletion_restocked_by_its_own_request_or_absorbed_by_a_decision() -> None:
    assert check(at_zero())["facts"]["depletions"] == {"restocked": 1}
    facts = check(adaptive())["facts"]
    assert facts["depletions"] == {"absorbed": 1}
    assert facts["decisions"] == {"restocked": 1}


def test_order_whose_event_never_reached_the_ops_queue_is_lost() -> None:
    result = check(adaptive(), ops_orders={})
    assert not result["verdicts"]["lost events"]
    assert result["facts"]["events"]["orders_without_event"] == 1


def test_relay_lag_of_sales_published_from_the_order_rows() -> None:
    snap = at_zero()
    snap.outbox = []
    snap.restocks = []
    lag = check(snap)["facts"]["relay"]
    assert lag["lag_s"]["p99"] == 0.3
    assert lag["to_ops_queue_s"]["p99"] == 1.0


def test_refusals_counted_and_not_reported_are_lost() -> None:
    snap = adaptive()
    snap.products["A"]["orders_refused"] = 5
    assert not check(snap)["verdicts"]["lost events"]


def test_decision_without_its_restock_is_lost() -> None:
    snap = adaptive()
    snap.outbox.append(event("stock.low", 12, decision_id=8, quantity=10))
    assert not check(snap)["verdicts"]["lost events"]


def test_decision_dead_in_the_dlq_is_accounted_for() -> None:
    snap = adaptive()
    snap.outbox.append(event("stock.low", 12, decision_id=8, quantity=10))
    snap.failed.append(
        {"status": "dead", "body": '{"Message": "{\\"event_id\\": \\"stock.low-12\\"}"}'}
    )
    result = check(snap)
    assert result["verdicts"]["lost events"]
    assert result["facts"]["decisions"] == {"restocked": 1, "in_dlq": 1}


def test_restock_answering_no_event_is_a_duplicate() -> None:
    snap = adaptive()
    extra = restock("stock.low-99", created=12, fulfilled=15, pk=2)
    extra["status"] = "requested"
    snap.restocks.append(extra)
    assert not check(snap)["verdicts"]["duplicate restocks"]


def test_units_sold_counter_must_match_the_orders() -> None:
    snap = adaptive()
    snap.products["A"]["units_sold"] = 4
    assert not check(snap)["verdicts"]["oversell"]


def test_replenishment_numbers() -> None:
    snap = adaptive()
    facts = check(snap)["facts"]
    numbers = replenishment(
        http={"requests": 10, "served": 1},
        facts=facts,
        snap=snap,
        at_load_end={"stock": {"A": 1}, "in_production": {"A": 2}},
    )
    assert numbers["fill_rate"] == 0.1
    assert numbers["units_sold"] == 3
    assert numbers["left_at_load_end"]["ratio"] == 1.0
    assert numbers["left_after_drain"] == {
        "on_hand": 10,
        "in_production": 0,
        "ratio": 3.333,
        "per_product": {"A": [10, 0]},
    }
    assert numbers["counted"] == {"orders_refused": 4, "units_refused": 6, "orders_limited": 1}
