"""After the rush: read what the system recorded and check the invariants.

Everything here comes from the database (orders, stock adjustments, outbox, restock requests,
failed messages), the operations queue as the bench consumed it, the DLQ and the factory
simulator's own list of what it was asked — never from the app's opinion of itself.
"""

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.stack import connect, spread

REORDER_SEPARATOR = "/reorder-"
ORDER_COMPLETED = "order.completed"
# An order's states that nothing changes any more.
FINAL = ("completed", "cancelled", "rejected")
# The events a restock answers: a depletion, or a reorder decision.
TRIGGERS = ("stock.depleted", "stock.low")
# A decision written in the same transaction as the depletion it answers may carry a
# timestamp a moment later than it.
SAME_DECISION_S = 1.0
# The events that tell the ops feed of a pre-order: accepted, and cancelled.
BACKORDERED, CANCELLED = "order.backordered", "order.cancelled"
# The product's refusal counters and their fields in the orders.refused events.
REFUSAL_COUNTERS = {
    "orders_refused": "refused_orders",
    "units_refused": "refused_units",
    "orders_limited": "limited_orders",
}


def ts(value: datetime | None) -> float | None:
    """A naive UTC datetime from MySQL as a Unix timestamp."""
    return value.replace(tzinfo=UTC).timestamp() if value else None


def is_preorder(order: dict[str, Any]) -> bool:
    """An order promised from production: it carries the time it was promised for."""
    return order.get("ready_by") is not None


def promise_outcome(order: dict[str, Any], *, end: float) -> str:
    """kept: completed by the time it was promised (as its 201 told, else its ready_by);
    late: completed after it; cancelled; waiting: not served yet and not due at `end`;
    overdue: not served and past its time at `end`."""
    ready_by = ts(order.get("ready_by_told") or order["ready_by"]) or 0
    if order["status"] == "completed":
        return "kept" if (ts(order["fulfilled_at"]) or float("inf")) <= ready_by else "late"
    if order["status"] == "cancelled":
        return "cancelled"
    return "overdue" if end > ready_by else "waiting"


@dataclass
class Snapshot:
    products: dict[str, dict[str, Any]]
    orders: list[dict[str, Any]]
    arrivals: list[dict[str, Any]]
    counts: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    restocks: list[dict[str, Any]]
    failed: list[dict[str, Any]]


SNAPSHOT = {
    "products": "SELECT * FROM inventory_product WHERE sku IN %s",
    # Every column of the order, and a pre-order's promise: the time promised, its batch, why
    # it was cancelled and the address its notices go to.
    "orders": "SELECT o.*, p.sku, pr.ready_by, pr.batch_id, pr.reason AS cancel_reason, pr.email, "
    "b.reference AS basket_reference "
    "FROM shop_order o JOIN inventory_product p ON p.id = o.product_id "
    "LEFT JOIN inventory_promise pr ON pr.id = o.promise_id "
    "LEFT JOIN shop_basket b ON b.id = o.basket_id",
    "adjustments": "SELECT p.sku, a.reason, a.old_quantity, a.new_quantity, a.note, a.created_at "
    "FROM inventory_stockadjustment a JOIN inventory_product p ON p.id = a.product_id "
    "ORDER BY a.id",
    "outbox": "SELECT event_type, sku, body, created_at, published_at, attempts "
    "FROM factory_bridge_outboxevent",
    "restocks": "SELECT r.*, p.sku FROM factory_bridge_restockrequest r "
    "JOIN inventory_product p ON p.id = r.product_id",
    "failed": "SELECT fingerprint, sqs_message_id, event_type, sku, status, times_dead, body "
    "FROM factory_bridge_failedmessage",
}


def read_snapshot(database_url: str, skus: tuple[str, ...]) -> Snapshot:
    conn = connect(database_url)
    got: dict[str, list[dict[str, Any]]] = {}
    try:
        cur = conn.cursor()
        for name, sql in SNAPSHOT.items():
            cur.execute(sql, (skus,) if "%s" in sql else None)
            columns = [d[0] for d in cur.description]
            got[name] = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
    for row in got["outbox"]:
        row["body"] = json.loads(row["body"])
    adjustments = got.pop("adjustments")
    return Snapshot(
        **got | {"products": {r["sku"]: r for r in got["products"]}},
        arrivals=[a for a in adjustments if a["reason"] == "arrival"],
        counts=[a for a in adjustments if a["reason"] == "count"],
    )


def hold_to_told(snap: Snapshot, told: dict[str, str]) -> None:
    """Give each pre-order the time its 201 promised (ISO 8601), as `ready_by_told`: a
    promise moved to a later batch gets a new ready_by, and is still held to the first."""
    for order in snap.orders:
        answered = told.get(order.get("reference") or "")
        if answered:
            at = datetime.fromisoformat(answered).astimezone(UTC).replace(tzinfo=None)
            order["ready_by_told"] = at
            order["moved"] = order["ready_by"] is not None and order["ready_by"] != at


def _event_id_of(envelope_body: str) -> str | None:
    try:
        return str(json.loads(json.loads(envelope_body)["Message"])["event_id"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Verdict:
    name: str
    ok: bool
    value: Any
    detail: str = ""


@dataclass
class Verification:
    verdicts: list[Verdict] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def check(self, name: str, ok: bool, value: Any, detail: str) -> None:
        self.verdicts.append(Verdict(name, ok, value, detail))


def verify(
    snap: Snapshot,
    *,
    initial_stock: dict[str, int],
    t0: float,
    load_end: float,
    ops_seen: dict[str, tuple[float, str]],
    ops_orders: dict[int, str],
    ops_duplicates: int,
    dlq_messages: int | None,
    factory_jobs: list[dict[str, Any]] | None,
    http: dict[str, Any],
    drill_windows: list[tuple[str, float, float]],
    ops_by_order: dict[str, dict[str, set[str]]] | None = None,
    samples: list[dict[str, Any]] | None = None,
    mails: list[dict[str, Any]] | None = None,
    end: float | None = None,
    undrained_after: float | None = None,
) -> Verification:
    """The invariants of a rush. `ops_by_order`: the event ids the ops queue had per order
    (by order id and by reference) and type; `samples`: the sampler's seconds; `mails`: the
    messages the mail sink saved ({"to": [...], "text": ...}), None when no mail was kept;
    `end`: when the outcome was read (after the drain); `undrained_after`: the seconds the
    pipeline was given to drain if it did not (its events are then not proven delivered)."""
    result = Verification()
    facts = result.facts

    # --- oversell: stock never below zero, and every unit accounted for -------------------
    recounts = [c for c in snap.counts if (ts(c["created_at"]) or 0) >= t0]
    sold, to_waiting, arrived, fulfilled_units = Counter(), Counter(), Counter(), Counter()
    for order in (o for o in snap.orders if o["status"] == "completed"):
        sold[order["sku"]] += order["quantity"]
        # Units a batch handed to its waiting orders on arrival: they never reach the shelf.
        if is_preorder(order):
            to_waiting[order["sku"]] += order["quantity"]
    for arrival in snap.arrivals:
        arrived[arrival["sku"]] += arrival["new_quantity"] - arrival["old_quantity"]
    for r in (r for r in snap.restocks if r["status"] == "fulfilled"):
        fulfilled_units[r["sku"]] += r["quantity"]
    per_product, oversold, books_wrong = {}, 0, []
    for sku, product in snap.products.items():
        shelf_sold = sold[sku] - to_waiting[sku]
        expected = initial_stock[sku] + arrived[sku] - shelf_sold
        oversold += max(0, sold[sku] - initial_stock[sku] - fulfilled_units[sku])
        min_remaining = min(
            (o["remaining_stock"] for o in snap.orders if o["sku"] == sku and not is_preorder(o)),
            default=0,
        )
        if expected != product["stock"] or product["stock"] < 0 or min_remaining < 0:
            books_wrong.append(sku)
        if arrived[sku] + to_waiting[sku] != fulfilled_units[sku]:
            books_wrong.append(
                f"{sku} (arrivals {arrived[sku]} + {to_waiting[sku]} to waiting orders != "
                f"restocked {fulfilled_units[sku]})"
            )
        # The product's counter is of the shelf's sales: promised units are known demand.
        if product["units_sold"] != shelf_sold:
            books_wrong.append(
                f"{sku} (units_sold {product['units_sold']} != sold from the shelf {shelf_sold})"
            )
        per_product[sku] = {
            "initial": initial_stock[sku],
            "sold": sold[sku],
            "to_waiting_orders": to_waiting[sku],
            "arrived": arrived[sku],
            "final": product["stock"],
            "expected_final": expected,
            "still_depleted": product["depleted_at"] is not None,
        }
    facts["products"] = per_product
    result.check(
        "oversell",
        oversold == 0 and not books_wrong and not recounts,
        oversold,
        "stock never < 0; initial + arrivals - sold from the shelf == final, and arrivals "
        "+ units handed to waiting orders == units restocked, for every product"
        + (f"; books wrong: {', '.join(books_wrong)}" if books_wrong else "")
        + (f"; {len(recounts)} stock counts during the run" if recounts else ""),
    )

    # --- 5xx: outside the MySQL restart window -------------------------------------------
    result.check(
        "5xx",
        http["server_errors"] == 0 and http["no_answer"] == 0,
        http["server_errors"],
        f"{http['server_errors']} answers >= 500 and {http['no_answer']} requests without "
        f"an answer outside the MySQL restart window"
        + (
            f"; inside it: {http['server_errors_in_db_window']} >= 500, "
            f"{http['no_answer_in_db_window']} without an answer (not counted)"
            if http.get("db_window")
            else ""
        ),
    )

    # --- lost events: every committed fact reached the operations queue ------------------
    # A sale's event is the order row's (published from it, many per message) or an outbox
    # row's: either way the ops queue must have had an order.completed for every order.
    orders_without_event = [
        o["id"] for o in snap.orders if o["status"] == "completed" and o["id"] not in ops_orders
    ]
    unpublished = [e for e in snap.outbox if e["published_at"] is None]
    outbox_ids = {e["body"]["event_id"] for e in snap.outbox}
    not_in_ops = outbox_ids - set(ops_seen)
    expected = outbox_ids | {ops_orders[o["id"]] for o in snap.orders if o["id"] in ops_orders}
    phantom = set(ops_seen) - expected

    dead_events = {_event_id_of(f["body"]) for f in snap.failed if f["status"] == "dead"}
    decisions, unaccounted_decisions = _decisions(snap, dead_events)
    outcomes: Counter[str] = Counter()
    unaccounted = []
    for depletion in (e for e in snap.outbox if e["event_type"] == "stock.depleted"):
        outcome = _depletion_outcome(depletion, snap, dead_events)
        outcomes[outcome] += 1
        if outcome == "unaccounted":
            unaccounted.append({"event_id": depletion["body"]["event_id"], "sku": depletion["sku"]})
    refusals = _refusals(snap)
    unreported = sum(
        abs(n - refusals["reported"][sku].get(name, 0))
        for sku, counted in refusals["counted"].items()
        for name, n in counted.items()
    )
    facts["depletions"] = dict(outcomes)
    facts["unaccounted_depletions"] = unaccounted[:20]
    facts["decisions"] = dict(decisions)
    facts["unaccounted_decisions"] = unaccounted_decisions[:20]
    facts["refusals"] = refusals
    lost = (
        len(orders_without_event)
        + len(unpublished)
        + len(not_in_ops)
        + len(unaccounted)
        + len(unaccounted_decisions)
        + unreported
    )
    facts["events"] = {
        "events": len(expected) + len(orders_without_event),
        "outbox": len(snap.outbox),
        "by_type": dict(Counter(seen[1] for seen in ops_seen.values())),
        "orders": len(snap.orders),
        "orders_without_event": len(orders_without_event),
        "unpublished": len(unpublished),
        "received_in_ops": len(ops_seen),
        "missing_from_ops": len(not_in_ops),
        "phantom_in_ops": len(phantom),
        "ops_duplicate_deliveries": ops_duplicates,
        "publish_attempts_max": max((e["attempts"] for e in snap.outbox), default=0),
    }
    undrained = f"NOT DRAINED within {undrained_after} s, so not proven delivered: "
    result.check(
        "lost events",
        lost == 0 and undrained_after is None,
        lost,
        ("" if undrained_after is None else undrained)
        + f"{len(snap.orders)} committed orders, {len(snap.outbox)} outbox events: "
        f"{len(orders_without_event)} orders whose order.completed the ops queue never had, "
        f"{len(unpublished)} outbox events unpublished, {len(not_in_ops)} missing from the "
        f"ops queue, {len(unaccounted)} depletions "
        f"neither restocked, absorbed nor in the DLQ, {len(unaccounted_decisions)} "
        f"stock.low decisions without their restock or DLQ message, {unreported} refusals "
        "counted on products and not in orders.refused events",
    )

    # --- duplicate restocks --------------------------------------------------------------
    fulfilled_per_root: Counter[str] = Counter(
        _root(r) for r in snap.restocks if r["status"] == "fulfilled"
    )
    doubled = sum(n - 1 for n in fulfilled_per_root.values() if n > 1)
    # Every restock answers an event (a depletion or a stock.low decision): no other orders.
    triggers = {key for e in snap.outbox if e["event_type"] in TRIGGERS for key in _keys(e)}
    orphans = sum(1 for r in snap.restocks if not r["replaces_id"] and _root(r) not in triggers)
    replenished = sum(1 for e in snap.outbox if e["event_type"] == "stock.replenished")
    fulfilled = sum(fulfilled_per_root.values())
    factory_dupes = 0
    accepted_jobs = 0
    if factory_jobs is not None:
        per_url = Counter(j["callback_url"] for j in factory_jobs if j.get("status") == 201)
        accepted_jobs = sum(per_url.values())
        factory_dupes = sum(n - 1 for n in per_url.values() if n > 1)
    duplicates = doubled + abs(replenished - fulfilled) + factory_dupes + orphans
    facts["restocks"] = {
        "requests": len(snap.restocks),
        "by_status": dict(Counter(r["status"] for r in snap.restocks)),
        "fulfilled": fulfilled,
        "replenished_events": replenished,
        "factory_jobs_accepted": accepted_jobs,
        "factory_jobs_refused": (
            sum(1 for j in factory_jobs if j.get("status") != 201) if factory_jobs else 0
        ),
        "factory_callbacks": (
            dict(Counter(j.get("callback_status") for j in factory_jobs)) if factory_jobs else {}
        ),
        "reorders": sum(1 for r in snap.restocks if r["replaces_id"]),
        "without_event": orphans,
    }
    facts["dlq"] = {
        "dead_rows": sum(1 for f in snap.failed if f["status"] == "dead"),
        "redriven_rows": sum(1 for f in snap.failed if f["status"] == "redriven"),
        "messages_in_dlq": dlq_messages,
    }
    result.check(
        "duplicate restocks",
        duplicates == 0,
        duplicates,
        f"{fulfilled} restocks fulfilled, {replenished} stock.replenished events, "
        f"{doubled} depletions or decisions restocked twice, {factory_dupes} restocks "
        f"ordered twice from the factory, {orphans} restocks answering no event",
    )

    # --- relay and endpoint --------------------------------------------------------------
    facts["relay"] = _relay(snap, ops_seen, ops_orders, drill_windows)
    facts["sold_out"] = sold_out_windows(snap, t0=t0, load_end=load_end)
    _promises(
        result,
        snap,
        references=http.get("references"),
        ops_by_order=ops_by_order,
        samples=samples or [],
        mails=mails,
        end=end if end is not None else load_end,
    )
    return result


def _ops_events(ops_by_order: dict[str, dict[str, set[str]]], order: dict[str, Any]) -> dict:
    """The event ids of each type the ops queue had for `order`, by its id or reference."""
    found: dict[str, set[str]] = defaultdict(set)
    for key in (str(order["id"]), str(order.get("reference") or "")):
        for kind, ids in ops_by_order.get(key, {}).items():
            found[kind] |= ids
    return found


def _unmailed(cancelled: dict[str, list[dict[str, Any]]], mails: list[dict[str, Any]]) -> list[int]:
    """The cancelled orders whose address got no mail about it: a mail naming the order's
    reference, or else one cancellation mail (one that says "cancel") per cancelled order
    of the address."""
    texts: dict[str, list[str]] = defaultdict(list)
    for mail in mails:
        for address in mail["to"]:
            texts[address.lower()].append(mail["text"])
    unmailed = []
    for address, orders in cancelled.items():
        named = [o for o in orders if any(o.get("reference", "") in t for t in texts[address])]
        cancellations = sum(1 for t in texts[address] if "cancel" in t.lower())
        rest = [o for o in orders if o not in named]
        unmailed += [o["id"] for o in rest[max(0, cancellations - len(named)) :]]
    return unmailed


def _promises(
    result: Verification,
    snap: Snapshot,
    *,
    references: dict[str, str] | None,
    ops_by_order: dict[str, dict[str, set[str]]] | None,
    samples: list[dict[str, Any]],
    mails: list[dict[str, Any]] | None,
    end: float,
) -> None:
    """The pre-orders' invariants: promises backed by production, kept or cancelled with
    notice, no order lost, none served twice."""
    facts = result.facts
    promises = [o for o in snap.orders if is_preorder(o)]

    # --- no promise without production behind it ----------------------------------------
    over, untied, unbalanced, overfull, seconds = [], [], [], [], 0
    for sample in samples:
        if "promised" not in sample:
            continue
        seconds += 1
        for sku, promised in sample["promised"].items():
            at = round(sample["t"], 1)
            if promised > sample["in_production"].get(sku, 0):
                over.append((at, sku, promised, sample["in_production"].get(sku, 0)))
            if sample["untied"].get(sku):
                untied.append((at, sku, sample["untied"][sku]))
            if promised != sample["waiting"].get(sku, 0):
                unbalanced.append((at, sku, promised, sample["waiting"].get(sku, 0)))
        if sample.get("overfull_batches"):
            overfull.append((round(sample["t"], 1), sample["overfull_batches"]))
    final_over = [
        sku for sku, p in snap.products.items() if int(p.get("promised") or 0) > p["on_order"]
    ]
    unbacked = len(over) + len(untied) + len(unbalanced) + len(overfull) + len(final_over)
    facts["promises_backed"] = {
        "seconds_sampled": seconds,
        "promised_over_on_order": over[:10],
        "waiting_without_batch": untied[:10],
        "promised_not_waiting_units": unbalanced[:10],
        "batches_promised_beyond_their_units": overfull[:10],
        "promised_peak": max(
            (sum(s["promised"].values()) for s in samples if "promised" in s), default=0
        ),
    }
    result.check(
        "promises backed",
        unbacked == 0,
        unbacked,
        f"every second of {seconds} sampled: promised <= on_order per product "
        f"({len(over)} not), every waiting order tied to a batch ({len(untied)} not), "
        f"promised == units of the waiting orders ({len(unbalanced)} not), no batch "
        f"promised beyond its units ({len(overfull)} seconds with one); after the "
        f"drain {len(final_over)} products with promised > on_order",
    )

    # --- every promise kept, or cancelled with notice ------------------------------------
    outcomes: Counter[str] = Counter(promise_outcome(o, end=end) for o in promises)
    unnoticed_feed, unnoticed_mail = [], []
    cancelled_by_address: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in (o for o in promises if o["status"] == "cancelled"):
        if ops_by_order is not None and not _ops_events(ops_by_order, order).get(CANCELLED):
            unnoticed_feed.append(order["id"])
        if order.get("email"):
            cancelled_by_address[order["email"].lower()].append(order)
    if mails is not None:
        unnoticed_mail = _unmailed(cancelled_by_address, mails)
    broken = outcomes["late"] + outcomes["overdue"] + outcomes["waiting"]
    silent = len(unnoticed_feed) + len(unnoticed_mail)
    facts["promises"] = {
        "outcomes": dict(outcomes),
        "cancelled_without_feed_event": unnoticed_feed[:10],
        "cancelled_without_mail": unnoticed_mail[:10],
        "mails_checked": mails is not None,
        "with_email": sum(1 for o in promises if o.get("email")),
    }
    result.check(
        "promises kept",
        broken + silent == 0,
        broken + silent,
        f"{len(promises)} pre-orders: {outcomes['kept']} completed by their time, "
        f"{outcomes['cancelled']} cancelled ({len(unnoticed_feed)} without order.cancelled "
        f"in the ops feed"
        + (
            f", {len(unnoticed_mail)} without a mail to their address"
            if mails is not None
            else ", mail not checked"
        )
        + f"), {outcomes['late']} completed late, "
        f"{outcomes['overdue'] + outcomes['waiting']} still waiting",
    )

    # --- no order lost ------------------------------------------------------------------
    # An order's reference is its row's; a basket's, its lines' (a pre-order when any is).
    rows: dict[str, list[dict[str, Any]]] = {}
    for o in snap.orders:
        rows.setdefault(o.get("basket_reference") or o.get("reference") or "", []).append(o)
    missing, wrong = [], []
    for reference, kind in (references or {}).items():
        lines = rows.get(reference)
        if not lines:
            missing.append(reference)
        elif (kind == "backordered") != any(is_preorder(line) for line in lines):
            wrong.append(reference)
    unannounced = (
        [o["id"] for o in promises if not _ops_events(ops_by_order, o).get(BACKORDERED)]
        if ops_by_order is not None
        else []
    )
    not_final = [o["id"] for o in snap.orders if o["status"] not in FINAL]
    lost = len(missing) + len(wrong) + len(unannounced) + len(not_final)
    facts["orders_taken"] = {
        "answers_201": len(references or {}),
        "without_row": missing[:10],
        "row_of_another_kind": wrong[:10],
        "preorders_without_backordered_event": unannounced[:10],
        "not_final": not_final[:10],
    }
    result.check(
        "orders lost",
        lost == 0,
        lost,
        f"{len(references or {})} orders answered 201: {len(missing)} without their row, "
        f"{len(wrong)} whose row is of another kind (shelf/pre-order); {len(unannounced)} "
        f"pre-orders whose order.backordered the ops queue never had; {len(not_final)} "
        "orders neither completed nor cancelled after the drain",
    )

    # --- none served twice --------------------------------------------------------------
    twice, cancelled_sold = [], []
    if ops_by_order is not None:
        for order in snap.orders:
            sales = _ops_events(ops_by_order, order).get(ORDER_COMPLETED, set())
            if len(sales) > 1:
                twice.append(order["id"])
            if sales and order["status"] == "cancelled":
                cancelled_sold.append(order["id"])
    doubled = len(twice) + len(cancelled_sold)
    facts["served_twice"] = {"orders": twice[:10], "cancelled_and_sold": cancelled_sold[:10]}
    result.check(
        "served twice",
        doubled == 0,
        doubled,
        f"{len(twice)} orders with more than one order.completed in the ops queue, "
        f"{len(cancelled_sold)} cancelled orders with one",
    )


def _root(restock: dict[str, Any]) -> str:
    """The event a restock answers; re-orders of an overdue request carry its key."""
    decision = restock.get("decision_id")
    return str(decision) if decision else restock["depletion_key"].split(REORDER_SEPARATOR)[0]


def _outcome(keys: set[str], snap: Snapshot) -> dict[str, Any] | None:
    """The request that finally answered an event (re-orders of overdue requests followed)."""
    request = next((r for r in snap.restocks if not r["replaces_id"] and _root(r) in keys), None)
    replaced_by = {r["replaces_id"]: r for r in snap.restocks if r["replaces_id"]}
    while request is not None and request["status"] == "overdue" and request["id"] in replaced_by:
        request = replaced_by[request["id"]]
    return request


def _keys(event: dict[str, Any]) -> set[str]:
    keys = {str(event["body"]["event_id"])}
    if event["body"].get("decision_id") is not None:
        keys.add(str(event["body"]["decision_id"]))
    return keys


def _decisions(snap: Snapshot, dead_events: set[str | None]) -> tuple[Counter[str], list]:
    """Every stock.low decision became exactly one restock, fulfilled, or is dead in the DLQ."""
    outcomes: Counter[str] = Counter()
    unaccounted = []
    for decision in (e for e in snap.outbox if e["event_type"] == "stock.low"):
        request = _outcome(_keys(decision), snap)
        if request is not None and request["status"] == "fulfilled":
            outcomes["restocked"] += 1
        elif decision["body"]["event_id"] in dead_events:
            outcomes["in_dlq"] += 1
        else:
            outcomes["unaccounted"] += 1
            event_id = decision["body"]["event_id"]
            unaccounted.append({"event_id": event_id, "sku": decision["sku"], "request": request})
    return outcomes, unaccounted


def _depletion_outcome(
    depletion: dict[str, Any], snap: Snapshot, dead_events: set[str | None]
) -> str:
    """restocked: its own restock, or one decided after it, brought stock; absorbed: units
    already on order when it happened arrived; in_dlq: its message is dead in the DLQ."""
    request = _outcome(_keys(depletion), snap)
    if request is not None and request["status"] == "fulfilled":
        return "restocked"
    if depletion["body"]["event_id"] in dead_events:
        return "in_dlq"
    if request is not None:
        return "unaccounted"
    at = ts(depletion["created_at"]) or 0
    decided = {
        key: ts(e["created_at"]) or 0
        for e in snap.outbox
        if e["event_type"] in TRIGGERS
        for key in _keys(e)
    }
    arrivals = [
        decided.get(_root(r), ts(r["created_at"]) or 0)
        for r in snap.restocks
        if r["sku"] == depletion["sku"]
        and r["status"] == "fulfilled"
        and (ts(r["fulfilled_at"]) or 0) >= at
    ]
    if not arrivals:
        return "unaccounted"
    return "absorbed" if min(arrivals) <= at + SAME_DECISION_S else "restocked"


def _refusals(snap: Snapshot) -> dict[str, Any]:
    """The products' refusal counters and what the orders.refused events reported of them."""
    counted = {
        sku: {name: int(p[name]) for name in REFUSAL_COUNTERS} for sku, p in snap.products.items()
    }
    reported: dict[str, Counter[str]] = defaultdict(Counter)
    for e in snap.outbox:
        if e["event_type"] == "orders.refused":
            for name, key in REFUSAL_COUNTERS.items():
                reported[e["sku"]][name] += int(e["body"].get(key, 0))
    return {"counted": counted, "reported": {sku: dict(reported[sku]) for sku in counted}}


def _published_sales(snap: Snapshot) -> list[dict[str, Any]]:
    """The orders the relay published as sales (order.completed)."""
    return [o for o in snap.orders if o["published_at"] and o["status"] == "completed"]


def _in_windows(t: float, windows: list[tuple[str, float, float]]) -> bool:
    return any(start <= t <= end for _, start, end in windows)


def _relay(
    snap: Snapshot,
    ops_seen: dict[str, tuple[float, str]],
    ops_orders: dict[int, str],
    windows: list[tuple[str, float, float]],
) -> dict[str, Any]:
    """published_at − created_at of every event: outbox rows, and orders the relay published.

    A pre-order is a sale once its batch served it: its lag counts from `fulfilled_at`, since
    the wait for production before it is the promise's, not the relay's.
    """
    lag, lag_calm, e2e = [], [], []
    events = [(e, e["body"]["event_id"]) for e in snap.outbox]
    # A cancelled order is marked published without being a sale: order.cancelled tells of it.
    events += [(o, ops_orders.get(o["id"])) for o in _published_sales(snap)]
    for e, event_id in events:
        created = ts(e.get("fulfilled_at") or e["created_at"])
        published = ts(e["published_at"])
        if created is None or published is None:
            continue
        lag.append(published - created)
        if not _in_windows(created, windows):
            lag_calm.append(published - created)
        seen = ops_seen.get(event_id or "")
        if seen:
            e2e.append(seen[0] - created)

    return {
        "lag_s": spread(lag),
        "lag_outside_drills_s": spread(lag_calm),
        "to_ops_queue_s": spread(e2e),
    }


def sold_out_windows(snap: Snapshot, *, t0: float, load_end: float) -> dict[str, Any]:
    """When each product had zero stock during the rush, from orders and arrivals."""
    changes: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for order in snap.orders:
        if order["status"] == "completed" and not is_preorder(order):
            changes[order["sku"]].append((ts(order["created_at"]) or 0, order["remaining_stock"]))
    for arrival in snap.arrivals:
        changes[arrival["sku"]].append((ts(arrival["created_at"]) or 0, arrival["new_quantity"]))
    result = {}
    for sku in snap.products:
        windows: list[list[float]] = []
        start = None
        for at, stock in sorted(changes[sku]):
            if stock == 0 and start is None:
                start = at
            elif stock > 0 and start is not None:
                windows.append([start, at])
                start = None
        if start is not None:
            windows.append([start, None])  # type: ignore[list-item]
        clipped = [
            (max(s, t0), min(e if e is not None else load_end, load_end))
            for s, e in windows
            if s < load_end
        ]
        lengths = [e - s for s, e in clipped if e > s]
        closed = [e - s for s, e in windows if e is not None]
        result[sku] = {
            "windows": [
                [round(s - t0, 2), None if e is None else round(e - t0, 2)] for s, e in windows
            ],
            "sold_out_s": round(sum(lengths), 1),
            "sold_out_share": round(sum(lengths) / max(1e-9, load_end - t0), 3),
            "times": len(windows),
            "mean_window_s": round(sum(closed) / len(closed), 2) if closed else None,
            "longest_window_s": round(max(closed), 2) if closed else None,
            "open_at_end": bool(windows and windows[-1][1] is None),
        }
    return result
