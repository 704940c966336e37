"""The rush's invariants and replenishment numbers on recorded runs, in both shapes the shop
records them: refusals as rows and events, or as product counters and aggregate events."""

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


def order(pk: int, status: str, quantity: int, remaining: int, seconds: float) -> dict:
    return {
        "id": pk,
        "sku": "A",
        "quantity": quantity,
        "status": status,
        "remaining_stock": remaining,
        "created_at": at(seconds),
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


def today() -> Snapshot:
    """Refused orders are rows with an order.rejected event; the restock answers the depletion."""
    outbox = [
        event("order.completed", 1, order_id=1, status="completed"),
        event("stock.depleted", 1),
        event("order.rejected", 2, order_id=2, status="rejected"),
        event("stock.replenished", 11),
    ]
    return Snapshot(
        products={"A": {"sku": "A", "stock": 10, "depleted_at": None}},
        orders=[order(1, "completed", 3, 0, 1), order(2, "rejected", 1, 0, 2)],
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
        event("order.completed", 1, order_id=1, status="completed"),
        event("stock.depleted", 1),
        event("stock.low", 1.001, decision_id=7, quantity=10),
        event("orders.refused", 5, refused_orders=4, refused_units=6, limited_orders=1),
        event("stock.replenished", 11),
    ]
    counters = {"orders_refused": 4, "units_refused": 6, "orders_limited": 1, "units_sold": 3}
    return Snapshot(
        products={"A": {"sku": "A", "stock": 10, "depleted_at": None, "on_order": 0, **counters}},
        orders=[order(1, "completed", 3, 0, 1)],
        arrivals=[arrival(11)],
        counts=[],
        outbox=outbox,
        restocks=[restock("stock.low-1.001", created=1.5, fulfilled=11)],
        failed=[],
    )


def check(snap: Snapshot) -> dict[str, Any]:
    result = verify(
        snap,
        initial_stock={"A": 3},
        t0=T0,
        load_end=T0 + 20,
        ops_seen={e["body"]["event_id"]: (T0, e["event_type"]) for e in snap.outbox},
        ops_duplicates=0,
        dlq_messages=0,
        factory_jobs=[{"callback_url": f"/cb/{r['id']}", "status": 201} for r in snap.restocks],
        http={"server_errors": 0, "no_answer": 0, "db_window": None},
        drill_windows=[],
    )
    return {"verdicts": {v.name: v.ok for v in result.verdicts}, "facts": result.facts}


@pytest.mark.parametrize("recorded", [today, adaptive])
def test_invariants_hold_for_either_shape(recorded) -> None:
    assert all(check(recorded())["verdicts"].values())


def test_depletion_restocked_by_its_own_request_or_absorbed_by_a_decision() -> None:
    assert check(today())["facts"]["depletions"] == {"restocked": 1}
    facts = check(adaptive())["facts"]
    assert facts["depletions"] == {"absorbed": 1}
    assert facts["decisions"] == {"restocked": 1}


def test_rejected_order_without_its_event_is_lost() -> None:
    snap = today()
    snap.outbox = [e for e in snap.outbox if e["event_type"] != "order.rejected"]
    assert not check(snap)["verdicts"]["lost events"]


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
    # Without an on_order column, units in production are the open restocks' quantities.
    older = today()
    facts = check(older)["facts"]
    older.restocks.append({**restock("stock.depleted-12", created=12, fulfilled=0, pk=2)})
    older.restocks[-1]["status"] = "requested"
    numbers = replenishment(
        http={"requests": 2, "served": 1}, facts=facts, snap=older, at_load_end={}
    )
    assert numbers["left_after_drain"]["in_production"] == 10
