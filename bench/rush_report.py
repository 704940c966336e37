"""The rush's instruments and numbers: the sampler, k6's per-request CSV, per-second
timelines, the summary and the plot."""

import contextlib
import csv
import email
import email.policy
import gzip
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.rush_verify import (
    REFUSAL_COUNTERS,
    Snapshot,
    is_preorder,
    percentile,
    promise_outcome,
    ts,
)
from bench.stack import connect

SQL_PRODUCTS = (
    "SELECT sku, stock, on_order, promised, reorder_point, demand_rate "
    "FROM inventory_product WHERE sku IN %s"
)
# Per product: the units its waiting orders wait for, and those of them tied to no open batch.
SQL_WAITING = (
    "SELECT p.sku, COALESCE(SUM(o.quantity), 0), COALESCE(SUM(CASE WHEN d.id IS NULL OR "
    "d.settled_at IS NOT NULL THEN o.quantity ELSE 0 END), 0) "
    "FROM shop_order o JOIN inventory_product p ON p.id = o.product_id "
    "LEFT JOIN inventory_promise pr ON pr.id = o.promise_id "
    "LEFT JOIN inventory_reorderdecision d ON d.id = pr.batch_id "
    "WHERE o.status = 'backordered' AND p.sku IN %s GROUP BY p.sku"
)
# Batches whose waiting orders wait for more units than the batch brings: a unit promised twice.
SQL_OVERFULL = (
    "SELECT COUNT(*) FROM inventory_reorderdecision d JOIN ("
    "SELECT pr.batch_id, SUM(o.quantity) AS units FROM shop_order o "
    "JOIN inventory_promise pr ON pr.id = o.promise_id "
    "WHERE o.status = 'backordered' GROUP BY pr.batch_id) w ON w.batch_id = d.id "
    "WHERE w.units > d.quantity"
)
# What the relay has to publish: the outbox rows, and the sales (a pre-order waiting for its
# batch is none yet; one served goes out whatever its id).
SQL_BACKLOG = (
    "SELECT (SELECT COUNT(*) FROM factory_bridge_outboxevent WHERE published_at IS NULL) + "
    "(SELECT COUNT(*) FROM shop_order WHERE published_at IS NULL AND status <> 'backordered')"
)
SQL_RESTOCKS = "SELECT status, COUNT(*) FROM factory_bridge_restockrequest GROUP BY status"
SQL_DEAD = "SELECT COUNT(*) FROM factory_bridge_failedmessage WHERE status = 'dead'"
# django-q2's ORM broker: tasks queued and not yet taken by a worker (relays, poller handovers).
SQL_TASKS = "SELECT COUNT(*) FROM django_q_ormq"


class Sampler(threading.Thread):
    """Every second: stock and units in production per product, the event backlog, restock
    states and queue depths. It reaches the database directly and the AWS endpoint past the
    outage proxy, so that a drill does not blind it."""

    def __init__(
        self, *, database_url: str, skus: tuple[str, ...], sqs: Any, queues: dict[str, str]
    ) -> None:
        super().__init__(name="rush-sampler", daemon=True)
        self.database_url = database_url
        self.skus = skus
        self.sqs = sqs
        self.queues = queues  # label -> queue url
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._conn: Any = None

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            sample = {"t": started, **self._database(), **self._queues()}
            with self.lock:
                self.samples.append(sample)
            self.stopping.wait(max(0.0, 1.0 - (time.time() - started)))

    def latest(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.samples[-1]) if self.samples else {}

    def _database(self) -> dict[str, Any]:
        try:
            self._conn = self._conn or connect(self.database_url)
            cur = self._conn.cursor()
            # One snapshot for the products and their waiting orders, so that promised units
            # and the orders that hold them are compared at one moment.
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute(SQL_PRODUCTS, (self.skus,))
            products = cur.fetchall()
            cur.execute(SQL_WAITING, (self.skus,))
            waiting = {sku: (int(units), int(untied)) for sku, units, untied in cur.fetchall()}
            cur.execute(SQL_OVERFULL)
            overfull = int(cur.fetchone()[0])
            cur.execute("COMMIT")
            counts = {}
            for name, sql in (
                ("backlog", SQL_BACKLOG),
                ("dead_rows", SQL_DEAD),
                ("task_queue", SQL_TASKS),
            ):
                cur.execute(sql)
                counts[name] = int(cur.fetchone()[0])
            cur.execute(SQL_RESTOCKS)
            restocks = {status: int(n) for status, n in cur.fetchall()}
        except Exception as exc:  # the database may be down (MySQL drill): try again next tick
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            return {"db_error": str(exc)[:200]}
        return {
            "stock": {r[0]: int(r[1]) for r in products},
            "in_production": {r[0]: int(r[2]) for r in products},
            "promised": {r[0]: int(r[3]) for r in products},
            # The policy's guess: what it keeps on hand and on order, and the demand behind it.
            "reorder_point": {r[0]: int(r[4]) for r in products},
            "demand_rate": {r[0]: round(float(r[5]), 2) for r in products},
            "waiting": {sku: waiting.get(sku, (0, 0))[0] for sku, *_ in products},
            "untied": {sku: waiting.get(sku, (0, 0))[1] for sku, *_ in products},
            "overfull_batches": overfull,
            "restocks": restocks,
            **counts,
        }

    def _queues(self) -> dict[str, Any]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        try:
            depths = {}
            for label, url in self.queues.items():
                got = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
                visible, in_flight = (int(got["Attributes"].get(n, 0)) for n in names)
                depths[label] = {"visible": visible, "in_flight": in_flight}
            return {"queues": depths}
        except Exception as exc:  # the endpoint may be unreachable: a gap in the timeline
            return {"queue_error": str(exc)[:200]}


def read_k6_csv(path: Path, *, t0: float, db_window: tuple[float, float] | None) -> dict[str, Any]:
    """Classify every order request by its outcome and bin it per second since the load began."""
    totals = defaultdict(int)
    durations: list[float] = []
    bins: dict[int, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    latencies: dict[int, list[float]] = defaultdict(list)
    samples: list[str] = []
    references: dict[str, str] = {}  # reference of every order taken -> its answer
    told: dict[str, str] = {}  # reference of every pre-order -> the ready_by it was told
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        name_i, time_i, value_i, tags_i = (
            header.index(c) for c in ("metric_name", "timestamp", "metric_value", "extra_tags")
        )
        for row in reader:
            if row[name_i] != "order_ms":
                continue
            at = int(row[time_i]) / 1000
            value = float(row[value_i])
            tags = dict(tag.split("=", 1) for tag in row[tags_i].split("&") if tag)
            kind = tags["outcome"]
            if tags.get("reference"):
                references[tags["reference"]] = kind
            if tags.get("ready_by"):
                told[tags["reference"]] = tags["ready_by"]
            second = int(at - t0)
            in_db = db_window is not None and db_window[0] <= at <= db_window[1]
            if in_db and kind in ("server_errors", "no_answer"):
                totals[f"{kind}_in_db_window"] += 1
            else:
                totals[kind] += 1
            totals["requests"] += 1
            bins[second][kind] += 1
            bins[second]["requests"] += 1
            if kind != "no_answer":
                durations.append(value)
                latencies[second].append(value)
            if kind in ("server_errors", "no_answer", "unexpected") and len(samples) < 10:
                samples.append(f"t={at - t0:.1f}s {kind}")
    timeline = []
    for second in sorted(bins):
        lat = latencies.get(second, [])
        timeline.append(
            {
                "s": second,
                **{k: bins[second].get(k, 0) for k in (*KINDS, "requests")},
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
            }
        )
    return {
        **{k: totals.get(k, 0) for k in (*KINDS, "requests")},
        "server_errors_in_db_window": totals.get("server_errors_in_db_window", 0),
        "no_answer_in_db_window": totals.get("no_answer_in_db_window", 0),
        "db_window": [round(db_window[0] - t0, 1), round(db_window[1] - t0, 1)]
        if db_window
        else None,
        "latency_ms": {
            "p50": _r(percentile(durations, 50)),
            "p90": _r(percentile(durations, 90)),
            "p99": _r(percentile(durations, 99)),
            "max": _r(max(durations) if durations else None),
        },
        "failure_samples": samples,
        "references": references,
        "ready_by_told": told,
        "timeline": timeline,
    }


# What bench/k6/rush.js tags each order request with; the first five are answers the shop
# means to give (served from the shelf, promised from production, or asked and not served).
ANSWERS = ("served", "backordered", "out_of_stock", "purchase_limit", "throttled")
KINDS = (*ANSWERS, "server_errors", "no_answer", "unexpected")


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


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
    created: dict[int, int] = defaultdict(int)
    published: dict[int, int] = defaultdict(int)
    sales = (o for o in snap.orders if o["published_at"] and o["status"] == "completed")
    for e in (*snap.outbox, *sales):
        created[int((ts(e["created_at"]) or t0) - t0)] += 1
        if e["published_at"] is not None:
            published[int((ts(e["published_at"]) or t0) - t0)] += 1
    return {"created": dict(created), "published": dict(published)}


def ops_unread(published: dict[int, int], read_at: list[float]) -> list[int]:
    """Events published and not yet read from the ops queue, second by second."""
    read_at = sorted(read_at)
    last = int(max([*published, *(int(t) for t in read_at[-1:]), 0])) + 1
    unread, total, read_i = [], 0, 0
    for second in range(last):
        total += published.get(second, 0)
        while read_i < len(read_at) and read_at[read_i] < second + 1:
            read_i += 1
        unread.append(max(0, total - read_i))
    return unread


# Issue 11's targets for the rush with make run's factory.
TARGETS = {"fill_rate": 0.9, "sold_out_share": 0.10, "leftover_ratio": 0.25}
# Issue 20's, at the seed factory's 40 s with every customer taking the next batch.
PREORDER_TARGETS = {"served": 0.95, "promises_broken": 0.01, "leftover_ratio": 0.20}


def replenishment(
    *, http: dict[str, Any], facts: dict[str, Any], snap: Snapshot, at_load_end: dict[str, Any]
) -> dict[str, Any]:
    """Fill rate, time sold out and what is left on hand and in production once the crowd
    has gone, as a share of the units sold. Units in production already promised to waiting
    orders are sold, not left over: only the rest of on_order counts."""
    sold = sum(p["sold"] for p in facts["products"].values())

    def left(
        on_hand: dict[str, int], production: dict[str, int], promised: dict[str, int]
    ) -> dict[str, Any]:
        free = {sku: units - promised.get(sku, 0) for sku, units in production.items()}
        units = sum(on_hand.values()) + sum(free.values())
        return {
            "on_hand": sum(on_hand.values()),
            "in_production": sum(free.values()),
            "promised": sum(promised.values()),
            "ratio": round(units / sold, 3) if sold else None,
            "per_product": {sku: [on_hand.get(sku), free.get(sku)] for sku in on_hand},
        }

    shares = {sku: s["sold_out_share"] for sku, s in facts["sold_out"].items()}
    counted = facts["refusals"]["counted"]
    return {
        "asked": http["requests"],
        "served": http["served"],
        "fill_rate": round(http["served"] / http["requests"], 3) if http["requests"] else None,
        "sold_out_share": shares,
        "sold_out_worst": max(shares.values(), default=None),
        "units_sold": sold,
        "left_at_load_end": left(
            at_load_end.get("stock", {}),
            at_load_end.get("in_production", {}),
            at_load_end.get("promised", {}),
        ),
        "left_after_drain": left(
            {sku: p["stock"] for sku, p in snap.products.items()},
            {sku: int(p["on_order"]) for sku, p in snap.products.items()},
            {sku: int(p.get("promised") or 0) for sku, p in snap.products.items()},
        ),
        # The policy's reorder points and demand estimates as the crowd left: what it kept
        # on hand and on order for the demand it guessed.
        "policy_at_load_end": {
            "reorder_point": at_load_end.get("reorder_point", {}),
            "demand_rate": at_load_end.get("demand_rate", {}),
        },
        # What the products counted of the demand they refused (their own counters).
        "counted": {name: sum(c[name] for c in counted.values()) for name in REFUSAL_COUNTERS}
        if counted
        else {},
    }


def preorders(*, http: dict[str, Any], snap: Snapshot, end: float) -> dict[str, Any]:
    """Served (from the shelf, or from production by the promised time) as a share of the
    orders asked, and the promises broken (late, cancelled, or still waiting past their
    time at `end`) as a share of the promises, from the orders' rows after the run."""
    promises = [o for o in snap.orders if is_preorder(o)]
    outcomes = {"kept": 0, "late": 0, "cancelled": 0, "waiting": 0, "overdue": 0}
    for o in promises:
        outcomes[promise_outcome(o, end=end)] += 1
    broken = outcomes["late"] + outcomes["cancelled"] + outcomes["overdue"]
    asked = http["requests"]
    served = http["served"] + outcomes["kept"]
    promised_s = [ts(_told(o)) - ts(o["created_at"]) for o in promises]
    delivered = [o for o in promises if o["status"] == "completed" and o["fulfilled_at"]]
    waited_s = [ts(o["fulfilled_at"]) - ts(o["created_at"]) for o in delivered]
    # How long before its promised time each delivered order was ready (negative: late).
    slack_s = [ts(_told(o)) - ts(o["fulfilled_at"]) for o in delivered]
    reasons: dict[str, int] = defaultdict(int)
    for o in promises:
        if o["status"] == "cancelled":
            reasons[o.get("cancel_reason") or "?"] += 1
    return {
        "asked": asked,
        "from_shelf": http["served"],
        "promised": len(promises),
        "promised_answers": http.get("backordered", 0),
        "promised_units": sum(o["quantity"] for o in promises),
        **outcomes,
        "cancel_reasons": dict(reasons),
        "moved": sum(1 for o in promises if o.get("moved")),
        "served": served,
        "served_share": round(served / asked, 3) if asked else None,
        "broken": broken,
        "broken_share": round(broken / len(promises), 4) if promises else None,
        "promise_s": _spread(promised_s),
        "waited_s": _spread(waited_s),
        "slack_s": {"min": _r(min(slack_s, default=None)), **_spread(slack_s)},
    }


def _told(order: dict[str, Any]) -> Any:
    """The time a pre-order was promised: as its 201 told, else its ready_by."""
    return order.get("ready_by_told") or order["ready_by"]


def read_mails(directory: Path) -> list[dict[str, Any]]:
    """The messages the mail sink saved: their recipients and their text parts."""
    mails = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = str(message["Subject"] or "") + "\n"
        text += "".join(
            part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
        )
        mails.append({"to": [str(a.addr_spec) for a in message["To"].addresses], "text": text})
    return mails


def _spread(values: list[float]) -> dict[str, float | None]:
    return {
        "p1": _r(percentile(values, 1)),
        "p50": _r(percentile(values, 50)),
        "p99": _r(percentile(values, 99)),
    }


def plot(path: Path, *, runs: dict[str, dict[str, Any]], title: str) -> None:
    """A column per mode: stock and units in production, sold-out windows, orders per
    second by answer, latency, and the queues; the rows share their scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(
        5,
        len(runs),
        figsize=(9 * len(runs), 14),
        sharex=True,
        sharey="row",
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.2, 3, 2, 2]},
    )
    fig.suptitle(title)
    for column, (mode, run) in enumerate(runs.items()):
        _plot_run(grid[:, column], mode, run, plt)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_run(axes: Any, mode: str, run: dict[str, Any], plt: Any) -> None:
    stock_ax, gantt_ax, orders_ax, lat_ax, queue_ax = axes
    timelines, sold_out = run["timelines"], run["facts"]["sold_out"]
    samples = timelines["samples"]
    skus = sorted(sold_out)
    colors = dict(zip(skus, plt.cm.tab10.colors, strict=False))
    end_x = run["load_seconds"]
    pre = run.get("preorders") or {}
    preordered = bool(pre.get("promised"))

    rows = [s for s in samples if "stock" in s]
    for sku in skus:
        xs = [s["t"] for s in rows]
        stock_ax.step(xs, [s["stock"].get(sku) for s in rows], where="post", color=colors[sku])
        stock_ax.step(
            xs,
            [s["in_production"].get(sku) for s in rows],
            where="post",
            color=colors[sku],
            linestyle="--",
            alpha=0.6,
        )
        if preordered:
            stock_ax.step(
                xs,
                [s.get("promised", {}).get(sku) for s in rows],
                where="post",
                color=colors[sku],
                linestyle=":",
            )
    stock_ax.plot([], [], color="gray", label="on hand")
    stock_ax.plot([], [], color="gray", linestyle="--", label="in production")
    if preordered:
        stock_ax.plot([], [], color="gray", linestyle=":", label="promised to waiting orders")
    for sku in skus:
        stock_ax.plot([], [], color=colors[sku], label=sku)
    left = run["replenishment"]["left_at_load_end"]["ratio"]
    if preordered:
        stock_ax.set_title(
            f"{mode}: served {pre['served_share']} (shelf + promises kept), promises broken "
            f"{pre['broken_share']:.1%}, left at load end {left} of sold",
            fontsize=10,
        )
    else:
        stock_ax.set_title(
            f"{mode}: fill rate {run['replenishment']['fill_rate']}, sold out up to "
            f"{run['replenishment']['sold_out_worst']:.0%}, left at load end {left} of sold",
            fontsize=10,
        )
    stock_ax.set_ylabel("units")
    stock_ax.legend(loc="upper right", fontsize=8)

    for row, sku in enumerate(skus):
        spans = [(s, (e if e is not None else end_x) - s) for s, e in sold_out[sku]["windows"]]
        gantt_ax.broken_barh(spans, (row - 0.4, 0.8), color=colors[sku])
    gantt_ax.set_yticks(range(len(skus)), skus, fontsize=8)
    gantt_ax.set_ylabel("sold out")

    tl = timelines["http"]
    secs = [b["s"] for b in tl]
    for kind, color in (
        ("served", "tab:green"),
        ("backordered", "tab:blue"),
        ("out_of_stock", "tab:orange"),
        ("purchase_limit", "tab:pink"),
        ("throttled", "tab:cyan"),
    ):
        if any(b[kind] for b in tl):
            orders_ax.plot(secs, [b[kind] for b in tl], label=kind.replace("_", " "), color=color)
    errors = [b["server_errors"] + b["no_answer"] for b in tl]
    if any(errors):
        orders_ax.plot(secs, errors, label="5xx / no answer", color="tab:red")
    published = timelines["events"]["published"]
    last = max([*timelines["events"]["created"], *published, 0]) + 1
    orders_ax.plot(
        range(last),
        [published.get(s, 0) for s in range(last)],
        label="events published/s (relay)",
        color="tab:purple",
        alpha=0.6,
        linewidth=0.8,
    )
    orders_ax.set_ylabel("orders per second")
    orders_ax.legend(loc="upper right", fontsize=8)

    lat_ax.plot(secs, [b["p50_ms"] for b in tl], label="p50", color="tab:blue")
    lat_ax.plot(secs, [b["p99_ms"] for b in tl], label="p99", color="tab:red")
    lat_ax.set_ylabel("order latency (ms)")
    lat_ax.set_yscale("log")
    lat_ax.legend(loc="upper right", fontsize=8)

    qs = [s for s in samples if "backlog" in s]
    queue_ax.plot([s["t"] for s in qs], [s["backlog"] for s in qs], label="events unpublished")
    qq = [s for s in samples if "queues" in s]
    for label, color in (("restock", "tab:olive"), ("dlq", "tab:red")):
        queue_ax.plot(
            [s["t"] for s in qq],
            [s["queues"][label]["visible"] + s["queues"][label]["in_flight"] for s in qq],
            label=f"{label} queue",
            color=color,
        )
    unread = timelines["ops_unread"]
    queue_ax.plot(
        range(len(unread)), unread, label="ops queue (published, not yet read)", color="tab:gray"
    )
    tq = [s for s in samples if "task_queue" in s]
    queue_ax.plot(
        [s["t"] for s in tq],
        [s["task_queue"] for s in tq],
        label="django-q2 tasks queued",
        color="tab:brown",
        linestyle="--",
    )
    queue_ax.set_ylabel("messages / tasks")
    queue_ax.set_yscale("symlog")
    queue_ax.legend(loc="upper right", fontsize=8)
    queue_ax.set_xlabel("seconds since the rush started")

    for name, start, end in run["drill_windows"]:
        for ax in axes:
            ax.axvspan(start, end, color="gray", alpha=0.15)
        stock_ax.annotate(
            name,
            (start, 0.97),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            va="top",
            rotation=90,
        )
    for ax in axes:
        ax.axvline(end_x, color="black", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
