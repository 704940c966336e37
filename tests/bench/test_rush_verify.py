"""The rush's invariants and replenishment numbers on recorded runs, in both replenishment
modes."""

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.mail import EmailMessage

from bench.rush_verify import (
    Snapshot,
    event_rates,
    hold_to_told,
    preorders,
    read_k6_csv,
    read_mails,
    replenishment,
    verify,
)

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


def check(
    snap: Snapshot, ops_orders: dict[int, str] | None = None, undrained_after: float | None = None
) -> dict[str, Any]:
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
        undrained_after=undrained_after,
    )
    return {
        "verdicts": {v.name: v.ok for v in result.verdicts},
        "values": {v.name: v.value for v in result.verdicts},
        "details": {v.name: v.detail for v in result.verdicts},
        "facts": result.facts,
    }


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
    detail = result["details"]["lost events"]
    assert "1 completed orders whose order.completed the ops queue never had" in detail
    assert result["values"]["lost events"] == 1


def test_events_of_a_pipeline_that_did_not_drain_are_not_proven_delivered() -> None:
    result = check(adaptive(), undrained_after=600)
    assert not result["verdicts"]["lost events"]
    assert result["details"]["lost events"].startswith("NOT DRAINED within 600 s, ")
    assert check(adaptive())["verdicts"]["lost events"]


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


@pytest.mark.parametrize(("retry_due", "fate"), [(None, "given_up"), (at(40), "unaccounted")])
def test_decision_whose_reorder_failed_for_good_is_given_up_not_lost(retry_due, fate) -> None:
    """At the re-order cap the sweep fails a restock for good (no retry due) and hands it to
    staff; one that failed with a retry still due has not been given up."""
    snap = adaptive()
    snap.outbox.append(event("stock.low", 12, decision_id=8, quantity=10))
    first = restock("stock.low-12", created=12.5, fulfilled=0, pk=2) | {"status": "overdue"}
    again = restock("stock.low-12/reorder-2", created=30, fulfilled=0, pk=3)
    again |= {"status": "failed", "replaces_id": 2, "next_attempt_at": retry_due}
    snap.restocks += [first | {"fulfilled_at": None}, again | {"fulfilled_at": None}]
    result = check(snap)
    assert result["facts"]["decisions"] == {"restocked": 1, fate: 1}
    assert result["verdicts"]["lost events"] is (fate == "given_up")


def test_restock_answering_no_event_is_a_duplicate() -> None:
    snap = adaptive()
    extra = restock("stock.low-99", created=12, fulfilled=15, pk=2)
    extra["status"] = "requested"
    snap.restocks.append(extra)
    assert not check(snap)["verdicts"]["duplicate restocks"]


def test_units_sold_counter_must_match_the_orders() -> None:
    """The counter is of the shelf's sales: a pre-order served from its batch is not in it."""
    snap = waiting_list()
    assert check_pre(snap)["verdicts"]["oversell"]
    snap.products["A"]["units_sold"] = 5
    assert not check_pre(snap)["verdicts"]["oversell"]
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
        "promised": 0,
        "ratio": 3.333,
        "per_product": {"A": [10, 0]},
    }
    assert numbers["counted"] == {"orders_refused": 4, "units_refused": 6, "orders_limited": 1}


# --- pre-orders -----------------------------------------------------------------------------


def preorder(pk: int, quantity: int, seconds: float, *, ready: float, **row: Any) -> dict:
    """An order promised from production at `seconds`, due at `ready`; completed at
    `fulfilled` unless another status is given."""
    fulfilled = row.pop("fulfilled", None)
    return {
        "id": pk,
        "sku": "A",
        "quantity": quantity,
        "status": "completed" if fulfilled is not None else "backordered",
        "remaining_stock": 0,
        "reference": f"ref-{pk}",
        "email": "",
        "created_at": at(seconds),
        "ready_by": at(ready),
        "fulfilled_at": at(fulfilled) if fulfilled is not None else None,
        "published_at": at(fulfilled + 0.3) if fulfilled is not None else None,
        **row,
    }


def waiting_list() -> Snapshot:
    """Three units sold from the shelf, then a pre-order of 2 promised for second 17 and
    served at 11 from a batch of 10, whose other 8 went on the shelf."""
    snap = adaptive()
    snap.orders[0]["reference"] = "ref-1"
    snap.orders.append(preorder(2, 2, 2, ready=17, fulfilled=11))
    snap.arrivals[0]["new_quantity"] = 8
    snap.products["A"].update(stock=8, units_sold=3, promised=0)  # the shelf's sales
    return snap


def feed(snap: Snapshot, **extra: dict[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    """The ops queue's events per order: a sale for each completed order, order.backordered
    for each pre-order, and `extra` by order id."""
    by_order: dict[str, dict[str, set[str]]] = {}
    for o in snap.orders:
        kinds = by_order.setdefault(str(o["id"]), {})
        if o["status"] == "completed":
            kinds["order.completed"] = {f"sale-{o['id']}"}
        if o.get("ready_by"):
            kinds["order.backordered"] = {f"backordered-{o['id']}"}
    for pk, kinds in extra.items():
        for kind, ids in kinds.items():
            by_order.setdefault(pk.removeprefix("o"), {}).setdefault(kind, set()).update(ids)
    return by_order


def sample(seconds: float, *, promised: int, on_order: int, waiting: int, untied: int = 0):
    return {
        "t": T0 + seconds,
        "stock": {"A": 0},
        "in_production": {"A": on_order},
        "promised": {"A": promised},
        "waiting": {"A": waiting},
        "untied": {"A": untied},
    }


def check_pre(
    snap: Snapshot,
    *,
    by_order: dict[str, dict[str, set[str]]] | None = None,
    samples: list[dict[str, Any]] | None = None,
    mails: list[dict[str, Any]] | None = None,
    references: dict[str, str] | None = None,
    end: float = 30,
) -> dict[str, Any]:
    result = verify(
        snap,
        initial_stock={"A": 3},
        t0=T0,
        load_end=T0 + 20,
        ops_seen={e["body"]["event_id"]: (T0 + 1, e["event_type"]) for e in snap.outbox},
        ops_orders=sales(snap),
        ops_duplicates=0,
        dlq_messages=0,
        factory_jobs=[{"callback_url": f"/cb/{r['id']}", "status": 201} for r in snap.restocks],
        http={
            "server_errors": 0,
            "no_answer": 0,
            "db_window": None,
            "references": references
            if references is not None
            else {
                o["reference"]: "backordered" if o.get("ready_by") else "served"
                for o in snap.orders
            },
        },
        drill_windows=[],
        ops_by_order=by_order if by_order is not None else feed(snap),
        samples=samples or [sample(5, promised=2, on_order=10, waiting=2)],
        mails=mails,
        end=T0 + end,
    )
    return {
        "verdicts": {v.name: v.ok for v in result.verdicts},
        "values": {v.name: v.value for v in result.verdicts},
        "details": {v.name: v.detail for v in result.verdicts},
        "facts": result.facts,
    }


def test_a_batch_shared_between_a_waiting_order_and_the_shelf_holds_every_invariant() -> None:
    result = check_pre(waiting_list())
    assert all(result["verdicts"].values()), result
    assert result["facts"]["products"]["A"]["to_waiting_orders"] == 2
    assert result["facts"]["promises"]["outcomes"] == {"kept": 1}


def test_units_a_batch_hands_to_waiting_orders_must_come_from_a_restock() -> None:
    snap = waiting_list()
    snap.arrivals[0]["new_quantity"] = 10  # the whole batch on the shelf, and 2 to the order
    snap.products["A"]["stock"] = 10
    assert not check_pre(snap)["verdicts"]["oversell"]


def test_promised_beyond_production_or_a_waiting_order_without_batch_is_unbacked() -> None:
    snap = waiting_list()
    assert check_pre(snap)["verdicts"]["promises backed"]
    over = [sample(5, promised=12, on_order=10, waiting=12)]
    assert check_pre(snap, samples=over)["values"]["promises backed"] == 1
    untied = [sample(5, promised=2, on_order=10, waiting=2, untied=2)]
    assert not check_pre(snap, samples=untied)["verdicts"]["promises backed"]
    unbalanced = [sample(5, promised=2, on_order=10, waiting=4)]
    assert not check_pre(snap, samples=unbalanced)["verdicts"]["promises backed"]
    twice = [{**sample(5, promised=2, on_order=10, waiting=2), "overfull_batches": 1}]
    assert not check_pre(snap, samples=twice)["verdicts"]["promises backed"]


def cancelled(snap: Snapshot, *, email: str = "") -> Snapshot:
    """The pre-order cancelled instead (its batch failed): the 10 units never came."""
    snap.orders[1].update(status="cancelled", fulfilled_at=None, published_at=None, email=email)
    snap.products["A"].update(stock=0)
    snap.arrivals, snap.restocks = [], []
    snap.outbox = [e for e in snap.outbox if e["event_type"] != "stock.replenished"]
    snap.failed.append(
        {"status": "dead", "body": '{"Message": "{\\"event_id\\": \\"stock.low-1.001\\"}"}'}
    )
    return snap


def test_a_cancelled_promise_needs_its_event_in_the_ops_feed_and_a_mail_when_it_had_one() -> None:
    told = {"o2": {"order.cancelled": {"cancelled-2"}}}
    silent = check_pre(cancelled(waiting_list()))
    assert not silent["verdicts"]["promises kept"]
    detail = silent["details"]["promises kept"]
    assert "1 cancelled without order.cancelled in the ops feed" in detail
    snap = cancelled(waiting_list())
    assert check_pre(snap, by_order=feed(snap, **told))["verdicts"]["promises kept"]

    snap = cancelled(waiting_list(), email="Ann@example.com")
    other = [
        {"to": ["ann@example.com"], "text": "Your 부산도너츠 is ready"},
        {"to": ["bob@example.com"], "text": "Your pre-order was cancelled"},
    ]
    result = check_pre(snap, by_order=feed(snap, **told), mails=other)
    assert "1 cancelled without a mail to their address" in result["details"]["promises kept"]
    assert result["values"]["promises kept"] == 1
    for text in ("Your order ref-2 is ready", "Your pre-order of 부산도너츠 was cancelled"):
        mail = [{"to": ["ann@example.com"], "text": text}]
        assert check_pre(snap, by_order=feed(snap, **told), mails=mail)["verdicts"]["promises kept"]


def test_a_promise_served_late_or_still_waiting_is_not_kept() -> None:
    late = waiting_list()
    late.orders[1]["ready_by"] = at(10)
    assert check_pre(late)["facts"]["promises"]["outcomes"] == {"late": 1}
    assert not check_pre(late)["verdicts"]["promises kept"]
    snap = cancelled(waiting_list())
    snap.orders[1]["status"] = "backordered"
    result = check_pre(snap, end=40)
    assert result["facts"]["promises"]["outcomes"] == {"overdue": 1}
    assert not result["verdicts"]["promises kept"]
    assert "1 neither completed nor cancelled after the drain" in result["details"]["orders lost"]


def test_an_order_answered_201_without_its_row_or_its_backordered_event_is_lost() -> None:
    snap = waiting_list()
    taken = {"ref-1": "served", "ref-2": "backordered", "ref-3": "backordered"}
    missing = check_pre(snap, references=taken)
    assert missing["values"]["orders lost"] == 1
    assert missing["details"]["orders lost"].startswith(
        "3 orders answered 201: 1 without their row"
    )
    swapped = {"ref-1": "backordered", "ref-2": "backordered"}
    assert not check_pre(snap, references=swapped)["verdicts"]["orders lost"]
    unheard = feed(snap)
    del unheard["2"]["order.backordered"]
    assert not check_pre(snap, by_order=unheard)["verdicts"]["orders lost"]


def test_an_order_with_two_sales_in_the_feed_was_served_twice() -> None:
    snap = waiting_list()
    doubled = feed(snap, o2={"order.completed": {"another-sale-2"}})
    result = check_pre(snap, by_order=doubled)
    assert not result["verdicts"]["served twice"]
    assert result["details"]["served twice"].startswith("1 orders with more than one")
    # The same event delivered twice is one event: the reader keeps ids, not deliveries.
    assert check_pre(snap, by_order=feed(snap, o2={"order.completed": {"sale-2"}}))["verdicts"][
        "served twice"
    ]


def test_served_counts_the_shelf_and_the_promises_kept_and_broken_counts_the_rest() -> None:
    snap = waiting_list()
    snap.orders += [
        preorder(3, 1, 3, ready=12, fulfilled=14),  # late
        preorder(4, 1, 4, ready=19, status="cancelled"),
        preorder(5, 1, 5, ready=25),  # still waiting, due after the end
        preorder(6, 1, 6, ready=21),  # still waiting, overdue
    ]
    numbers = preorders(
        http={"requests": 10, "served": 1, "backordered": 5}, snap=snap, end=T0 + 22
    )
    assert numbers["promised"] == 5
    assert {k: numbers[k] for k in ("kept", "late", "cancelled", "waiting", "overdue")} == {
        "kept": 1,
        "late": 1,
        "cancelled": 1,
        "waiting": 1,
        "overdue": 1,
    }
    assert numbers["served_share"] == 0.2  # 1 from the shelf + 1 kept, of 10 asked
    assert numbers["broken_share"] == 0.6  # late, cancelled and overdue, of 5 promises
    assert numbers["slack_s"]["min"] == -2.0


def test_units_promised_in_production_are_sold_not_left_over() -> None:
    snap = waiting_list()
    facts = check_pre(snap)["facts"]
    numbers = replenishment(
        http={"requests": 10, "served": 1},
        facts=facts,
        snap=snap,
        at_load_end={"stock": {"A": 0}, "in_production": {"A": 10}, "promised": {"A": 2}},
    )
    assert numbers["units_sold"] == 5
    assert numbers["left_at_load_end"]["in_production"] == 8
    assert numbers["left_at_load_end"]["ratio"] == 1.6


def test_k6_answers_keep_the_reference_of_every_order_taken(tmp_path) -> None:
    rows = [
        "metric_name,timestamp,metric_value,extra_tags",
        f"order_ms,{int(T0 * 1000) + 500},3.1,outcome=served&reference=ref-1",
        f"order_ms,{int(T0 * 1000) + 900},4.0,outcome=backordered&reference=ref-2"
        "&ready_by=2026-01-01T00:00:41.5+00:00",
        f"order_ms,{int(T0 * 1000) + 1200},2.0,outcome=out_of_stock",
    ]
    path = tmp_path / "k6.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(rows) + "\n")
    http = read_k6_csv(path, t0=T0, db_window=None)
    assert http["references"] == {"ref-1": "served", "ref-2": "backordered"}
    assert http["ready_by_told"] == {"ref-2": "2026-01-01T00:00:41.5+00:00"}
    assert (http["served"], http["backordered"], http["out_of_stock"]) == (1, 1, 1)


def test_mails_saved_by_the_sink_are_read_with_their_recipients_and_text(tmp_path) -> None:
    message = EmailMessage(
        subject="부산도너츠: cancelled",
        body="Order ref-2 is cancelled: the factory could not make it.",
        from_email="donuts@nudged.local",
        to=["Ann@Example.com"],
    ).message()
    (tmp_path / "1.eml").write_bytes(message.as_bytes())
    [mail] = read_mails(tmp_path)
    assert mail["to"] == ["Ann@Example.com"]
    assert "ref-2" in mail["text"]


def test_a_promise_moved_to_a_later_batch_is_held_to_the_time_its_201_told() -> None:
    snap = waiting_list()
    snap.orders[1].update(ready_by=at(20), fulfilled_at=at(18))  # moved: due 20, served 18
    hold_to_told(snap, {"ref-2": (START + timedelta(seconds=17)).isoformat() + "Z"})
    assert snap.orders[1]["moved"]
    assert check_pre(snap)["facts"]["promises"]["outcomes"] == {"late": 1}
    numbers = preorders(http={"requests": 2, "served": 1}, snap=snap, end=T0 + 30)
    assert (numbers["moved"], numbers["late"], numbers["slack_s"]["min"]) == (1, 1, -1.0)


def test_a_pre_orders_sale_lags_from_when_its_batch_served_it() -> None:
    # Placed at 2, served at 11, published at 11.3: the nine seconds were production's.
    relay = check_pre(waiting_list())["facts"]["relay"]
    assert relay["lag_s"]["max"] == 0.3


def test_a_cancelled_order_marked_published_is_no_sale_in_the_relay_lag() -> None:
    snap = cancelled(waiting_list())
    snap.orders[1]["published_at"] = at(40)  # marked when cancelled, 38 s after it was placed
    told = feed(snap, o2={"order.cancelled": {"cancelled-2"}})
    assert check_pre(snap, by_order=told)["facts"]["relay"]["lag_s"]["max"] == 0.3
    assert event_rates(snap, t0=T0)["published"] == {1: 3, 5: 1}  # no 40: not a sale


def test_a_basket_answered_201_is_taken_when_its_lines_have_their_rows() -> None:
    snap = waiting_list()
    for line in snap.orders[:2]:
        line["basket_reference"] = "box-1"
    assert check_pre(snap, references={"box-1": "backordered"})["verdicts"]["orders lost"]
    # A basket is a pre-order when any of its lines is one.
    assert not check_pre(snap, references={"box-1": "served"})["verdicts"]["orders lost"]
    lost = check_pre(snap, references={"box-2": "served"})
    assert lost["details"]["orders lost"].startswith("1 orders answered 201: 1 without their row")
