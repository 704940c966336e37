"""The rush's numbers, from what the system recorded: the database, the ops queue as the bench
read it, the DLQ, the factory simulator's jobs, the sampler, k6 and the mail sink — never the
app's opinion of itself. The invariants, and the replenishment, pre-order and relay figures."""

import csv
import email.policy
import gzip
import json
from bisect import bisect_left
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

from bench.stack import connect, percentile, spread

Row = dict[str, Any]
Window = tuple[str, float, float]
FINAL = ("completed", "cancelled", "rejected")  # an order's states nothing changes any more
TRIGGERS = ("stock.depleted", "stock.low")  # the events a restock answers
# A decision written in the same transaction as the depletion it answers may carry a
# timestamp a moment later than it.
SAME_DECISION_S = 1.0
# The product's refusal counters and their fields in the orders.refused events.
REFUSAL_COUNTERS = {
    "orders_refused": "refused_orders",
    "units_refused": "refused_units",
    "orders_limited": "limited_orders",
}
# What bench/k6/rush.js tags each order request with; the first five are answers the shop
# means to give (served from the shelf, promised from production, or asked and not served).
ANSWERS = ("served", "backordered", "out_of_stock", "purchase_limit", "throttled")
KINDS = (*ANSWERS, "server_errors", "no_answer", "unexpected")
OUTCOMES = ("kept", "late", "cancelled", "waiting", "overdue")
# Issue 11's targets for the rush with make run's factory; issue 20's at the seed factory's
# 40 s with every customer taking the next batch.
TARGETS = {"fill_rate": 0.9, "sold_out_share": 0.10, "leftover_ratio": 0.25}
PREORDER_TARGETS = {"served": 0.95, "promises_broken": 0.01, "leftover_ratio": 0.20}
# Each invariant and what it counts, in order; it holds when every count is 0.
INVARIANTS = """\
oversell|units sold beyond the stock and restocks|products whose books do not balance (stock, \
units restocked or units_sold not as the orders make them, or below 0)|stock counts during the run
5xx|answers >= 500|requests without an answer
lost events|completed orders whose order.completed the ops queue never had|outbox events \
unpublished|missing from the ops queue|depletions neither restocked, absorbed, given up nor in \
the DLQ|stock.low decisions neither restocked, given up nor in the DLQ|refusals counted on \
products and not in orders.refused events
duplicate restocks|depletions or decisions restocked twice|stock.replenished events more or \
fewer|restocks ordered twice from the factory|restocks answering no event
promises backed|times promised > on_order|times a waiting order had no batch|times promised != \
the waiting orders' units|seconds with a batch promised beyond its units|products with \
promised > on_order after the drain
promises kept|completed late|still waiting|cancelled without order.cancelled in the ops \
feed|cancelled without a mail to their address
orders lost|without their row|whose row is of another kind (shelf/pre-order)|pre-orders whose \
order.backordered the ops queue never had|neither completed nor cancelled after the drain
served twice|orders with more than one order.completed in the ops queue|cancelled orders with one"""
LABELS = {name: labels for name, *labels in (line.split("|") for line in INVARIANTS.splitlines())}


def ts(value: datetime | None) -> float | None:
    """A naive UTC datetime from MySQL as a Unix timestamp."""
    return value.replace(tzinfo=UTC).timestamp() if value else None


def is_preorder(order: Row) -> bool:
    """An order promised from production: it carries the time it was promised for."""
    return order.get("ready_by") is not None


def _told(order: Row) -> datetime:
    """The time a pre-order was promised: as its 201 told, else its ready_by."""
    return order.get("ready_by_told") or order["ready_by"]


def promise_outcome(order: Row, *, end: float) -> str:
    """kept: completed by the time it was promised; late: after it; cancelled; waiting: not
    served and not due at `end`; overdue: not served and past its time at `end`."""
    due = ts(_told(order)) or 0
    if order["status"] == "completed":
        return "kept" if (ts(order["fulfilled_at"]) or float("inf")) <= due else "late"
    if order["status"] == "cancelled":
        return "cancelled"
    return "overdue" if end > due else "waiting"


def where(rows: list[Row], **values: Any) -> list[Row]:
    return [r for r in rows if all(r.get(k) == v for k, v in values.items())]


@dataclass
class Snapshot:
    products: dict[str, Row]
    orders: list[Row]
    arrivals: list[Row]
    counts: list[Row]
    outbox: list[Row]
    restocks: list[Row]
    failed: list[Row]


ADJUSTMENTS = "SELECT a.*, p.sku FROM inventory_stockadjustment a JOIN inventory_product p "
ADJUSTMENTS += "ON p.id = a.product_id WHERE a.reason = '{}' ORDER BY a.id"
SNAPSHOT = {
    "products": "SELECT * FROM inventory_product WHERE sku IN %s",
    # Every column of the order, and a pre-order's promise: the time promised, its batch, why
    # it was cancelled and the address its notices go to.
    "orders": "SELECT o.*, p.sku, pr.ready_by, pr.batch_id, pr.reason AS cancel_reason, pr.email, "
    "b.reference AS basket_reference FROM shop_order o JOIN inventory_product p ON "
    "p.id = o.product_id LEFT JOIN inventory_promise pr ON pr.id = o.promise_id "
    "LEFT JOIN shop_basket b ON b.id = o.basket_id",
    "arrivals": ADJUSTMENTS.format("arrival"),
    "counts": ADJUSTMENTS.format("count"),
    "outbox": "SELECT * FROM factory_bridge_outboxevent",
    "restocks": "SELECT r.*, p.sku FROM factory_bridge_restockrequest r "
    "JOIN inventory_product p ON p.id = r.product_id",
    "failed": "SELECT * FROM factory_bridge_failedmessage",
}


def read_snapshot(database_url: str, skus: tuple[str, ...]) -> Snapshot:
    got: dict[str, list[Row]] = {}
    with closing(connect(database_url)) as conn:
        cur = conn.cursor()
        for name, sql in SNAPSHOT.items():
            cur.execute(sql, (skus,) if "%s" in sql else None)
            columns = [d[0] for d in cur.description]
            got[name] = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    for row in got["outbox"]:
        row["body"] = json.loads(row["body"])
    return Snapshot(**got | {"products": {r["sku"]: r for r in got["products"]}})


def hold_to_told(snap: Snapshot, told: dict[str, str]) -> None:
    """Give each pre-order the time its 201 promised (ISO 8601), as `ready_by_told`: a
    promise moved to a later batch gets a new ready_by, and is still held to the first."""
    for order in snap.orders:
        if answered := told.get(order.get("reference") or ""):
            at = datetime.fromisoformat(answered).astimezone(UTC).replace(tzinfo=None)
            order["ready_by_told"] = at
            order["moved"] = order["ready_by"] is not None and order["ready_by"] != at


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

    def check(
        self, name: str, *counts: Any, head: str = "", value: Any = None, ok: bool = True
    ) -> None:
        """`name` holds when `ok` and its counts (numbers, or collections' sizes) are all 0;
        its value is their sum unless given."""
        found = [n if isinstance(n, int) else len(n) for n in counts]
        detail = head + ", ".join(
            f"{n} {what}" for n, what in zip(found, LABELS[name], strict=True)
        )
        value = sum(found) if value is None else value
        self.verdicts.append(Verdict(name, ok and not any(found), value, detail))


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
    factory_jobs: list[Row] | None,
    http: dict[str, Any],
    drill_windows: list[Window],
    ops_by_order: dict[str, dict[str, set[str]]] | None = None,
    samples: list[Row] | None = None,
    mails: list[Row] | None = None,
    end: float | None = None,
    undrained_after: float | None = None,
) -> Verification:
    """The invariants of a rush. `ops_by_order`: the event ids the ops queue had per order (by
    id and by reference) and type; `samples`: the sampler's seconds; `mails`: what the mail sink
    saved ({"to": [...], "text": ...}); each None when not kept. `end`: when the outcome was
    read; `undrained_after`: the seconds given to a drain that did not finish (its events are
    then not proven delivered)."""
    result = Verification()
    facts, check = result.facts, result.check
    done = where(snap.orders, status="completed")
    promises = [o for o in snap.orders if is_preorder(o)]

    # --- oversell: stock never below zero, and every unit accounted for -------------------
    sold, to_waiting, arrived, restocked = Counter(), Counter(), Counter(), Counter()
    for order in done:
        sold[order["sku"]] += order["quantity"]
        # Units a batch handed to its waiting orders on arrival: they never reach the shelf.
        to_waiting[order["sku"]] += order["quantity"] if is_preorder(order) else 0
    for arrival in snap.arrivals:
        arrived[arrival["sku"]] += arrival["new_quantity"] - arrival["old_quantity"]
    for restock in where(snap.restocks, status="fulfilled"):
        restocked[restock["sku"]] += restock["quantity"]
    facts["products"] = {
        sku: {"sold": sold[sku], "to_waiting_orders": to_waiting[sku]} for sku in snap.products
    }
    oversold = sum(max(0, sold[s] - initial_stock[s] - restocked[s]) for s in snap.products)
    unbalanced = []
    for sku, product in snap.products.items():
        shelf = sold[sku] - to_waiting[sku]
        shelf_orders = [o for o in snap.orders if o["sku"] == sku and not is_preorder(o)]
        lowest = min([product["stock"], *(o["remaining_stock"] for o in shelf_orders)])
        # The product's counter is of the shelf's sales: promised units are known demand.
        books = (initial_stock[sku] + arrived[sku] - shelf, arrived[sku] + to_waiting[sku], shelf)
        if lowest < 0 or books != (product["stock"], restocked[sku], product["units_sold"]):
            unbalanced.append(sku)
    recounts = [c for c in snap.counts if ts(c["created_at"]) >= t0]
    check("oversell", oversold, unbalanced, recounts, value=oversold)

    # --- 5xx: outside the MySQL restart window -------------------------------------------
    head = "in the MySQL restart window (not counted) {server_errors_in_db_window} >= 500 and "
    head += "{no_answer_in_db_window} without an answer; outside it: "
    head = head.format_map(http) if http.get("db_window") else ""
    check("5xx", http["server_errors"], http["no_answer"], head=head, value=http["server_errors"])

    # --- lost events: every committed fact reached the operations queue ------------------
    # A sale's event is the order row's (published from it, many per message) or an outbox
    # row's: either way the ops queue must have had an order.completed for every order.
    unheard = [o for o in done if o["id"] not in ops_orders]
    outbox = {e["body"]["event_id"] for e in snap.outbox}
    sales = {ops_orders[o["id"]] for o in snap.orders if o["id"] in ops_orders}
    facts["events"] = dict(
        events=len(outbox | sales) + len(unheard), ops_duplicate_deliveries=ops_duplicates
    )
    dead = {_event_id_of(f["body"]) for f in where(snap.failed, status="dead")}
    fates = [
        Counter(_fate(e, snap, dead) for e in where(snap.outbox, event_type=t)) for t in TRIGGERS
    ]
    facts["depletions"], facts["decisions"] = map(dict, fates)
    refused = where(snap.outbox, event_type="orders.refused")
    unreported = sum(
        abs(int(p[name]) - sum(int(e["body"].get(key, 0)) for e in where(refused, sku=sku)))
        for sku, p in snap.products.items()
        for name, key in REFUSAL_COUNTERS.items()
    )
    head = f"{len(snap.orders)} orders, {len(snap.outbox)} outbox events: "
    if undrained_after is not None:
        head = f"NOT DRAINED within {undrained_after} s, so not proven delivered: {head}"
    lost = (where(snap.outbox, published_at=None), outbox - set(ops_seen))
    lost += (fates[0]["unaccounted"], fates[1]["unaccounted"], unreported)
    check("lost events", unheard, *lost, head=head, ok=undrained_after is None)

    # --- duplicate restocks --------------------------------------------------------------
    fulfilled = where(snap.restocks, status="fulfilled")
    replenished = len(where(snap.outbox, event_type="stock.replenished"))
    jobs = Counter(j["callback_url"] for j in factory_jobs or [] if j.get("status") == 201)
    reorders = [r for r in snap.restocks if r["replaces_id"]]
    facts["restocks"] = dict(
        fulfilled=len(fulfilled), factory_jobs_accepted=jobs.total(), reorders=len(reorders)
    )
    facts["dlq"] = {"messages_in_dlq": dlq_messages}
    # Every restock answers an event (a depletion or a stock.low decision): no other orders.
    triggers = {key for e in snap.outbox if e["event_type"] in TRIGGERS for key in _keys(e)}
    orphans = [r for r in snap.restocks if not r["replaces_id"] and _root(r) not in triggers]
    doubled = len(fulfilled) - len({_root(r) for r in fulfilled})
    counts = (doubled, abs(replenished - len(fulfilled)), jobs.total() - len(jobs), orphans)
    head = f"{len(fulfilled)} restocks fulfilled, {replenished} stock.replenished events: "
    check("duplicate restocks", *counts, head=head)

    # --- the relay: published_at − created_at of the outbox's events and of the sales -----
    # A pre-order is a sale once its batch served it: its lag counts from `fulfilled_at`, since
    # the wait for production before it is the promise's, not the relay's.
    lags = defaultdict(list)
    events = [(e, e["body"]["event_id"]) for e in snap.outbox]
    for row, event_id in events + [(o, ops_orders.get(o["id"])) for o in _sales(snap)]:
        if row["published_at"] is None:
            continue
        created = ts(row.get("fulfilled_at") or row["created_at"])
        lags["lag_s"].append(ts(row["published_at"]) - created)
        if not _during(created, drill_windows):
            lags["lag_outside_drills_s"].append(lags["lag_s"][-1])
        if seen := ops_seen.get(event_id or ""):
            lags["to_ops_queue_s"].append(seen[0] - created)
    facts["relay"] = {
        k: spread(lags[k]) for k in ("lag_s", "lag_outside_drills_s", "to_ops_queue_s")
    }
    facts["sold_out"] = sold_out_windows(snap, t0=t0, load_end=load_end)

    # --- promises backed by production, every second sampled and after the drain ---------
    sampled = [s for s in samples or [] if "promised" in s]
    per_sku = [(s, sku, n) for s in sampled for sku, n in s["promised"].items()]
    backed = (
        sum(n > s["in_production"].get(sku, 0) for s, sku, n in per_sku),
        sum(bool(s["untied"].get(sku)) for s, sku, _ in per_sku),
        sum(n != s["waiting"].get(sku, 0) for s, sku, n in per_sku),
        sum(bool(s.get("overfull_batches")) for s in sampled),
        [p for p in snap.products.values() if int(p.get("promised") or 0) > p["on_order"]],
    )
    check("promises backed", *backed, head=f"{len(sampled)} seconds sampled: ")

    # --- every promise kept, or cancelled with notice ------------------------------------
    outcomes = Counter(promise_outcome(o, end=load_end if end is None else end) for o in promises)
    cancelled = where(promises, status="cancelled")
    unfed = [o["id"] for o in cancelled if _heard(ops_by_order, o, "order.cancelled") == set()]
    unmailed = [] if mails is None else _unmailed(cancelled, mails)
    facts["promises"] = {"outcomes": dict(outcomes)}
    head = f"{len(promises)} pre-orders, {outcomes['kept']} kept, {outcomes['cancelled']} cancelled"
    head += ": " if mails is not None else " (mail not checked): "
    waiting = outcomes["overdue"] + outcomes["waiting"]
    check("promises kept", outcomes["late"], waiting, unfed, unmailed, head=head)

    # --- no order lost: every 201 has its row, of the kind answered ----------------------
    # An order's reference is its row's; a basket's, its lines' (a pre-order when any is).
    lines = defaultdict(list)
    for order in snap.orders:
        lines[order.get("basket_reference") or order.get("reference") or ""].append(order)
    taken = http.get("references") or {}
    missing = [ref for ref in taken if ref not in lines]
    wrong = [
        ref
        for ref, kind in taken.items()
        if ref in lines and (kind == "backordered") != any(map(is_preorder, lines[ref]))
    ]
    unannounced = [o for o in promises if _heard(ops_by_order, o, "order.backordered") == set()]
    not_final = [o["id"] for o in snap.orders if o["status"] not in FINAL]
    head = f"{len(taken)} orders answered 201: "
    check("orders lost", missing, wrong, unannounced, not_final, head=head)

    # --- none served twice ---------------------------------------------------------------
    sold_as = {o["id"]: _heard(ops_by_order, o, "order.completed") or () for o in snap.orders}
    twice = [pk for pk, ids in sold_as.items() if len(ids) > 1]
    cancelled = [o for o in where(snap.orders, status="cancelled") if sold_as[o["id"]]]
    check("served twice", twice, cancelled)
    return result


def _event_id_of(envelope_body: str) -> str | None:
    try:
        return str(json.loads(json.loads(envelope_body)["Message"])["event_id"])
    except (ValueError, KeyError, TypeError):
        return None


def _root(restock: Row) -> str:
    """The event a restock answers; re-orders of an overdue request carry its key."""
    return str(restock.get("decision_id") or restock["depletion_key"].split("/reorder-")[0])


def _keys(event: Row) -> set[str]:
    """What a restock answering `event` is keyed by: its id, or its decision's."""
    body = event["body"]
    return {str(body[k]) for k in ("event_id", "decision_id") if body.get(k) is not None}


def _fate(event: Row, snap: Snapshot, dead: set[str | None]) -> str:
    """restocked: its restock brought stock (re-orders followed), or for a depletion one decided
    after it; absorbed: units on order when the depletion happened arrived after it; given_up:
    its restock failed for good at the re-order cap (no retry due; logged as needing staff,
    its pre-orders moved or cancelled); in_dlq: its message is dead in the DLQ; else
    unaccounted."""
    keys = _keys(event)
    request = next((r for r in snap.restocks if not r["replaces_id"] and _root(r) in keys), None)
    replaced_by = {r["replaces_id"]: r for r in snap.restocks if r["replaces_id"]}
    while request is not None and request["status"] == "overdue" and request["id"] in replaced_by:
        request = replaced_by[request["id"]]
    if request is not None and request["status"] == "fulfilled":
        return "restocked"
    if request is not None and request["status"] == "failed" and not request["next_attempt_at"]:
        return "given_up"
    if event["body"]["event_id"] in dead:
        return "in_dlq"
    if request is not None or event["event_type"] == "stock.low":
        return "unaccounted"
    at = ts(event["created_at"])
    decided = {
        k: e["created_at"] for e in snap.outbox if e["event_type"] in TRIGGERS for k in _keys(e)
    }
    restocks = where(snap.restocks, sku=event["sku"], status="fulfilled")
    arrivals = [
        ts(decided.get(_root(r), r["created_at"])) for r in restocks if ts(r["fulfilled_at"]) >= at
    ]
    if not arrivals:
        return "unaccounted"
    return "absorbed" if min(arrivals) <= at + SAME_DECISION_S else "restocked"


def _heard(
    by_order: dict[str, dict[str, set[str]]] | None, order: Row, kind: str
) -> set[str] | None:
    """The ids of the `kind` events the ops queue had for `order` by its id or reference; None
    when the queue was not read per order."""
    if by_order is None:
        return None
    keys = (str(order["id"]), str(order.get("reference") or ""))
    return set().union(*(by_order.get(key, {}).get(kind, ()) for key in keys))


def _unmailed(cancelled: list[Row], mails: list[Row]) -> list[int]:
    """The cancelled orders whose address got no mail about it: one naming the order's
    reference, or else one that says "cancel" per cancelled order of the address."""
    unmailed = []
    for address in dict.fromkeys(o["email"].lower() for o in cancelled if o.get("email")):
        texts = [m["text"] for m in mails for to in m["to"] if to.lower() == address]
        orders = [o for o in cancelled if (o.get("email") or "").lower() == address]
        named = [o for o in orders if any(o.get("reference", "") in t for t in texts)]
        spare = sum("cancel" in t.lower() for t in texts) - len(named)
        unmailed += [o["id"] for o in orders if o not in named][max(0, spare) :]
    return unmailed


def _sales(snap: Snapshot) -> list[Row]:
    """The orders the relay published as sales: a cancelled one is marked published, and
    order.cancelled tells of it."""
    return [o for o in where(snap.orders, status="completed") if o["published_at"]]


def _during(t: float, windows: list[Window]) -> bool:
    return any(start <= t <= end for _, start, end in windows)


def sold_out_windows(snap: Snapshot, *, t0: float, load_end: float) -> dict[str, Any]:
    """When each product had zero stock, from orders and arrivals: its windows (seconds since
    t0; None: open at the end), how many, their mean and their share of the load."""
    changes = defaultdict(list)
    for o in where(snap.orders, status="completed"):
        if not is_preorder(o):
            changes[o["sku"]].append((ts(o["created_at"]), o["remaining_stock"]))
    for a in snap.arrivals:
        changes[a["sku"]].append((ts(a["created_at"]), a["new_quantity"]))
    result = {}
    for sku in snap.products:
        windows: list[list] = []  # [start, end or None]
        for at, stock in sorted(changes[sku]):
            is_open = bool(windows) and windows[-1][1] is None
            if stock == 0 and not is_open:
                windows.append([at, None])
            elif stock > 0 and is_open:
                windows[-1][1] = at
        ends = [(s, load_end if e is None else min(e, load_end)) for s, e in windows]
        during = sum(max(0.0, e - max(s, t0)) for s, e in ends if s < load_end)
        closed = [e - s for s, e in windows if e is not None]
        result[sku] = {
            "windows": [
                [round(s - t0, 2), None if e is None else round(e - t0, 2)] for s, e in windows
            ],
            "sold_out_share": round(during / max(1e-9, load_end - t0), 3),
            "times": len(windows),
            "mean_window_s": round(sum(closed) / len(closed), 2) if closed else None,
        }
    return result


# --- k6's answers, the rates and what was left ----------------------------------------------


def read_k6_csv(path: Path, *, t0: float, db_window: tuple[float, float] | None) -> dict[str, Any]:
    """Every order request by its outcome, in all and per second since the load began; and by
    reference, the answer to every order taken and the ready_by every pre-order was told."""
    totals, bins, latencies = Counter(), defaultdict(Counter), defaultdict(list)
    references, told = {}, {}
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["metric_name"] != "order_ms":
                continue
            at = int(row["timestamp"]) / 1000
            tags = dict(tag.split("=", 1) for tag in row["extra_tags"].split("&") if tag)
            kind, second, reference = tags["outcome"], int(at - t0), tags.get("reference")
            if reference:
                references[reference] = kind
            if reference and tags.get("ready_by"):
                told[reference] = tags["ready_by"]
            in_db = db_window is not None and db_window[0] <= at <= db_window[1]
            excused = in_db and kind in ("server_errors", "no_answer")
            totals.update(["requests", f"{kind}_in_db_window" if excused else kind])
            bins[second].update(["requests", kind])
            if kind != "no_answer":
                latencies[second].append(float(row["metric_value"]))
    timeline = [
        {"s": s, **{k: bins[s][k] for k in (*KINDS, "requests")}}
        | {"p50_ms": percentile(latencies[s], 50), "p99_ms": percentile(latencies[s], 99)}
        for s in sorted(bins)
    ]
    durations = [v for values in latencies.values() for v in values]
    in_window = ("server_errors_in_db_window", "no_answer_in_db_window")
    return {k: totals[k] for k in (*KINDS, "requests", *in_window)} | {
        "db_window": [round(w - t0, 1) for w in db_window] if db_window else None,
        "latency_ms": spread(durations, (50, 90, 99, 100), digits=1),
        "references": references,
        "ready_by_told": told,
        "timeline": timeline,
    }


def rates(http: dict[str, Any], *, hold: tuple[int, int]) -> dict[str, float]:
    """Orders per second over the plateau of the load, and the busiest second."""
    steady = [b for b in http["timeline"] if hold[0] <= b["s"] < hold[1]]
    answered = [sum(b[k] for k in ANSWERS) for b in steady]
    seconds = max(1, hold[1] - hold[0])
    return {
        "orders_per_s": round(sum(answered) / seconds, 1),
        "served_per_s": round(sum(b["served"] for b in steady) / seconds, 1),
        "peak_orders_per_s": max(answered, default=0),
    }


def event_rates(snap: Snapshot, *, t0: float) -> dict[str, Any]:
    """Events written (app) and published (relay → endpoint) per second: the outbox's, and
    the sales the relay published from the order rows."""
    rows = [*snap.outbox, *_sales(snap)]
    return {
        name: dict(Counter(int(ts(e[column]) - t0) for e in rows if e[column] is not None))
        for name, column in (("created", "created_at"), ("published", "published_at"))
    }


def ops_unread(published: dict[int, int], read_at: list[float]) -> list[int]:
    """Events published and not yet read from the ops queue, second by second."""
    read_at = sorted(read_at)
    last = int(max([*published, *read_at[-1:], 0])) + 1
    totals = accumulate(published.get(second, 0) for second in range(last))
    return [max(0, total - bisect_left(read_at, s + 1)) for s, total in enumerate(totals)]


def replenishment(
    *, http: dict[str, Any], facts: dict[str, Any], snap: Snapshot, at_load_end: Row
) -> Row:
    """Fill rate, worst time sold out, and what is left on hand and in production once the
    crowd has gone, as a share of the units sold. Units in production already promised to
    waiting orders are sold, not left over: only the rest of on_order counts."""
    sold = sum(p["sold"] for p in facts["products"].values())
    columns = {"stock": "stock", "in_production": "on_order", "promised": "promised"}
    after = {
        k: {s: int(p.get(c) or 0) for s, p in snap.products.items()} for k, c in columns.items()
    }

    def left(at: Row) -> Row:
        on_hand, promised = at.get("stock", {}), at.get("promised", {})
        free = {sku: n - promised.get(sku, 0) for sku, n in at.get("in_production", {}).items()}
        units = sum(on_hand.values()) + sum(free.values())
        return {
            "on_hand": sum(on_hand.values()),
            "in_production": sum(free.values()),
            "promised": sum(promised.values()),
            "ratio": round(units / sold, 3) if sold else None,
            "per_product": {sku: [on_hand.get(sku), free.get(sku)] for sku in on_hand},
        }

    asked, shares = http["requests"], [s["sold_out_share"] for s in facts["sold_out"].values()]
    return {
        "fill_rate": round(http["served"] / asked, 3) if asked else None,
        "sold_out_worst": max(shares, default=None),
        "units_sold": sold,
        "left_at_load_end": left(at_load_end),
        "left_after_drain": left(after),
        # What the products counted of the demand they refused (their own counters).
        "counted": {k: sum(int(p[k]) for p in snap.products.values()) for k in REFUSAL_COUNTERS},
    }


def preorders(*, http: dict[str, Any], snap: Snapshot, end: float) -> dict[str, Any]:
    """Served (from the shelf, or from production by the promised time) as a share of the
    orders asked, and the promises broken (late, cancelled, or still waiting past their
    time at `end`) as a share of the promises, from the orders' rows after the run."""
    promises = [o for o in snap.orders if is_preorder(o)]
    outcomes = Counter(promise_outcome(o, end=end) for o in promises)
    broken = outcomes["late"] + outcomes["cancelled"] + outcomes["overdue"]
    delivered = [o for o in where(promises, status="completed") if o["fulfilled_at"]]
    # How long before its promised time each delivered order was ready (negative: late).
    slack = [ts(_told(o)) - ts(o["fulfilled_at"]) for o in delivered]
    asked, served = http["requests"], http["served"] + outcomes["kept"]
    return {k: outcomes[k] for k in OUTCOMES} | {
        "promised": len(promises),
        "moved": sum(bool(o.get("moved")) for o in promises),
        "served_share": round(served / asked, 3) if asked else None,
        "broken_share": round(broken / len(promises), 4) if promises else None,
        "promise_s": _spread([ts(_told(o)) - ts(o["created_at"]) for o in promises]),
        "waited_s": _spread([ts(o["fulfilled_at"]) - ts(o["created_at"]) for o in delivered]),
        "slack_s": {"min": round(min(slack), 1) if slack else None, **_spread(slack)},
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    return spread(values, (1, 50, 99), digits=1)


def read_mails(directory: Path) -> list[Row]:
    """The messages the mail sink saved: their recipients and their text parts."""
    mails = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        parts = (p.get_content() for p in message.walk() if p.get_content_maintype() == "text")
        text = str(message["Subject"] or "") + "\n" + "".join(parts)
        mails.append({"to": [str(a.addr_spec) for a in message["To"].addresses], "text": text})
    return mails


# --- the sampler's seconds -------------------------------------------


def recovery_windows(
    samples: list[Row], windows: list[Window], *, threshold: float
) -> list[tuple[str, float, float, float | None]]:
    """Each drill window with the moment the event backlog was back under `threshold`."""
    calm = [s["t"] for s in samples if s.get("backlog", threshold + 1) <= threshold]
    return [
        (name, start, end, next((t for t in calm if t >= end), None))
        for name, start, end in windows
    ]


def backlog_peak(samples: list[Row], t0: float, windows: list[Window]) -> dict[str, Any]:
    """The event backlog's peak, over the run and outside the drills and their recovery."""
    rows = [s for s in samples if "backlog" in s and s["t"] >= t0]

    def peak(rows: list[Row]) -> dict[str, Any]:
        best = max(rows, key=lambda s: s["backlog"], default=None)
        return (
            {"events": best["backlog"], "at_s": round(best["t"] - t0, 1)}
            if best
            else {"events": 0, "at_s": None}
        )

    return {
        "all": peak(rows),
        "outside_drills": peak([s for s in rows if not _during(s["t"], windows)]),
    }
