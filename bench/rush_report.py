"""The rush's instruments and numbers: the sampler, k6's per-request CSV, per-second
timelines, what limited a run, the summary table and the plot."""

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

from bench.rush_verify import REFUSAL_COUNTERS, Snapshot, is_preorder, promise_outcome, ts
from bench.stack import connect, percentile, spread

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
        self.database_url, self.skus, self.sqs = database_url, skus, sqs
        self.queues = queues  # label -> queue url
        self.samples: list[dict[str, Any]] = []
        self.stopping, self.lock = threading.Event(), threading.Lock()
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
            for name, sql in (("backlog", SQL_BACKLOG), ("dead_rows", SQL_DEAD)):
                cur.execute(sql)
                counts[name] = int(cur.fetchone()[0])
            cur.execute(SQL_TASKS)
            counts["task_queue"] = int(cur.fetchone()[0])
            cur.execute(SQL_RESTOCKS)
            restocks = {status: int(n) for status, n in cur.fetchall()}
        except Exception as exc:  # the database may be down (MySQL drill): try again next tick
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            return {"db_error": str(exc)[:200]}
        # The policy's guess too: what it keeps on hand and on order, and the demand behind it.
        columns = ("stock", "in_production", "promised", "reorder_point")
        sample = {name: {r[0]: int(r[i + 1]) for r in products} for i, name in enumerate(columns)}
        sample["demand_rate"] = {r[0]: round(float(r[5]), 2) for r in products}
        for i, name in enumerate(("waiting", "untied")):
            sample[name] = {sku: waiting.get(sku, (0, 0))[i] for sku, *_ in products}
        return sample | {"overfull_batches": overfull, "restocks": restocks, **counts}

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
    totals: dict[str, int] = defaultdict(int)
    bins: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    latencies: dict[int, list[float]] = defaultdict(list)
    samples: list[str] = []
    references: dict[str, str] = {}  # reference of every order taken -> its answer
    told: dict[str, str] = {}  # reference of every pre-order -> the ready_by it was told
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["metric_name"] != "order_ms":
                continue
            at = int(row["timestamp"]) / 1000
            tags = dict(tag.split("=", 1) for tag in row["extra_tags"].split("&") if tag)
            kind, second = tags["outcome"], int(at - t0)
            if tags.get("reference"):
                references[tags["reference"]] = kind
            if tags.get("ready_by"):
                told[tags["reference"]] = tags["ready_by"]
            in_db = db_window is not None and db_window[0] <= at <= db_window[1]
            failed = kind in ("server_errors", "no_answer")
            totals[f"{kind}_in_db_window" if in_db and failed else kind] += 1
            totals["requests"] += 1
            bins[second][kind] += 1
            bins[second]["requests"] += 1
            if kind != "no_answer":
                latencies[second].append(float(row["metric_value"]))
            if kind in ("server_errors", "no_answer", "unexpected") and len(samples) < 10:
                samples.append(f"t={at - t0:.1f}s {kind}")
    timeline = [
        {
            "s": second,
            **{k: bins[second].get(k, 0) for k in (*KINDS, "requests")},
            "p50_ms": percentile(latencies[second], 50),
            "p99_ms": percentile(latencies[second], 99),
        }
        for second in sorted(bins)
    ]
    durations = [v for values in latencies.values() for v in values]
    in_window = ("server_errors_in_db_window", "no_answer_in_db_window")
    return {
        **{k: totals.get(k, 0) for k in (*KINDS, "requests", *in_window)},
        "db_window": [round(w - t0, 1) for w in db_window] if db_window else None,
        "latency_ms": spread(durations, (50, 90, 99, 100), digits=1),
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
    return spread(values, (1, 50, 99), digits=1)


def recovery_windows(
    samples: list[dict[str, Any]], windows: list[tuple[str, float, float]], *, threshold: float
) -> list[tuple[str, float, float, float | None]]:
    """Each drill window with the moment the event backlog was back under `threshold`."""
    return [
        (
            name,
            start,
            end,
            next(
                (
                    s["t"]
                    for s in samples
                    if s["t"] >= end and s.get("backlog", threshold + 1) <= threshold
                ),
                None,
            ),
        )
        for name, start, end in windows
    ]


def backlog_peak(samples: list[dict[str, Any]], t0: float, windows: list) -> dict[str, Any]:
    def peak(rows: list[dict[str, Any]]) -> dict[str, Any]:
        best = max(rows, key=lambda s: s["backlog"], default=None)
        if best is None:
            return {"events": 0, "at_s": None}
        return {"events": best["backlog"], "at_s": round(best["t"] - t0, 1)}

    rows = [s for s in samples if "backlog" in s and s["t"] >= t0]
    calm = [s for s in rows if not any(a <= s["t"] <= b for _, a, b in windows)]
    return {"all": peak(rows), "outside_drills": peak(calm)}  # drills and their recovery


def sustained_peak(per_second: dict[int, int], *, window: int) -> float:
    """The busiest `window` seconds, per second: the relay marks a whole claim at once."""
    if not per_second:
        return 0.0
    first, last = min(per_second), max(per_second)
    best = max(
        sum(per_second.get(s, 0) for s in range(start, start + window))
        for start in range(first, last + 1)
    )
    return round(best / window, 1)


def limit_reading(result: dict[str, Any]) -> str:
    """Which part limited the run, read from the numbers (the summary prints them all)."""
    backlog = result["backlog_peak"]["outside_drills"]["events"]
    lag = result["relay"]["lag_outside_drills_s"]["p99"] or 0
    share = result["cpu_share"]
    busy = f"the machine was {1 - share.get('idle', 0):.0%} busy"
    if backlog > max(50, 2 * result["events_written_per_s"]) or lag > 5:
        return (
            f"the event pipeline: the backlog reached {backlog} events (lag p99 {lag} s) while "
            f"the app wrote {result['events_written_per_s']} events/s and the relay published up "
            f"to {result['relay_published_peak_per_s']}/s (best 10 s); the cluster took "
            f"{share.get('cluster', 0):.0%} of the CPU, moto {share.get('moto', 0):.0%}; {busy}"
        )
    settings, latency = result["settings"], result["http"]["latency_ms"]["p50"] or 0
    offered = settings["vus"] / (settings["think_s"] + latency / 1000)
    kept_up = f"the relay kept up (backlog peak {backlog} events, lag p99 {lag} s)"
    if result["rates"]["orders_per_s"] >= 0.85 * offered:
        return (
            f"the customers' own pace: {settings['vus']} customers pausing "
            f"{settings['think_s']:g} s between orders offer about {offered:.0f} orders/s and got "
            f"them (p50 {latency} ms); {kept_up}; {busy}"
        )
    return (
        f"the web tier: {kept_up}, so orders/s is what the web tier answered at p50 {latency} ms "
        f"with {settings['vus']} customers waiting for their answers; {busy}"
    )


# --- The summary -----------------------------------------------------------------------------


def title(args: Any) -> str:
    drills = {"AWS outage": args.aws_outage, "worker kill": args.kill_worker}
    drills |= {"factory 50% failures": args.factory_failures, "MySQL restart": args.mysql_restart}
    on = ", ".join(name for name, fired in drills.items() if fired)
    return f"Rush: {args.vus} customers, {args.duration} s, factory {args.factory_delay:g} s" + (
        f" — drills: {on}" if on else ""
    )


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def _mark(value: float | None, target: float, *, at_most: bool = False) -> str:
    if value is None:
        return ""
    return " ok" if (value <= target if at_most else value >= target) else " MISS"


def _at_most(value: float | None, target: float, digits: int = 0) -> str:
    return _pct(value, digits) + _mark(value, target, at_most=True)


# The summary's rows, label|target|value, filled in per run by _rows().
ROWS = """\
orders asked||{h[requests]}
  served (201)||{h[served]}
  promised from production (201)||{h[backordered]}
  out of stock (409)||{h[out_of_stock]}
  purchase limit||{h[purchase_limit]}
  throttled (429)||{h[throttled]}
  5xx / no answer / other||{h[server_errors]} / {h[no_answer]} / {h[unexpected]}
fill rate (shelf / asked)|>= {t[fill_rate]:g}|{rep[fill_rate]}{fill_mark}
sold out, worst product|<= {t[sold_out_share]:.0%}|{worst}
{sold_out}
served (shelf + kept) / asked|>= {pt[served]:g}|{pre[served_share]}{served_mark}
promises broken / promises|<= {pt[promises_broken]:.0%}|{broken} ({pre[late]} late, \
{pre[cancelled]} cancelled, {waiting} waiting of {pre[promised]}; {pre[moved]} moved)
promise / wait p50, s||{pre[promise_s][p50]} / {pre[waited_s][p50]} \
(slack min {pre[slack_s][min]})
units sold||{rep[units_sold]}
left at load end / sold|<= {t[leftover_ratio]:.0%}|{left_at_load_end}
left after drain / sold|<= {t[leftover_ratio]:.0%}|{left_after_drain}
  with pre-orders|<= {pt[leftover_ratio]:.0%}|{preorder_left} \
({rep[left_at_load_end][promised]} promised at load end)
refusals counted on products||{c[orders_refused]} refused, {c[orders_limited]} limited
stock.low decisions||{decisions}
stock.depleted||{depletions}
restocks||{f[restocks][fulfilled]} fulfilled, {f[restocks][factory_jobs_accepted]} jobs, \
{f[restocks][reorders]} reorders
DLQ messages||{f[dlq][messages_in_dlq]}
orders/s plateau (peak)||{r[rates][orders_per_s]} ({r[rates][peak_orders_per_s]})
latency p50 / p99 ms||{h[latency_ms][p50]} / {h[latency_ms][p99]}
open pages, poll p50 / p99 ms||{p[pages]}, {p[poll_p50_ms]} / {p[poll_p99_ms]}
events / backlog peak||{f[events][events]} / {r[backlog_peak][all][events]}
relay lag p99 s||{r[relay][lag_s][p99]}
drain s||{r[drain][seconds]}{not_done}
machine busy||{busy}"""


def _rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One run's column of the summary: (label, target, value)."""
    rep, f, t, pt, pre = r["replenishment"], r["facts"], TARGETS, PREORDER_TARGETS, r["preorders"]
    left = {
        k: f"{_at_most(rep[k]['ratio'], t['leftover_ratio'])} ({rep[k]['on_hand']} + "
        f"{rep[k]['in_production']} in prod.)"
        for k in ("left_at_load_end", "left_after_drain")
    }
    sold_out = (
        f"  {sku}||{_pct(o['sold_out_share'])} ({o['times']}x, mean {o['mean_window_s']} s)"
        for sku, o in f["sold_out"].items()
    )
    text = ROWS.format_map(
        {"r": r, "h": r["http"], "rep": rep, "f": f, "t": t, "pt": pt, "pre": pre, **left}
        | {"c": rep["counted"], "p": r["open_pages"], "sold_out": "\n".join(sold_out)}
        | {
            "fill_mark": _mark(rep["fill_rate"], t["fill_rate"]),
            "worst": _at_most(rep["sold_out_worst"], t["sold_out_share"]),
            "served_mark": _mark(pre["served_share"], pt["served"]),
            "broken": _at_most(pre["broken_share"], pt["promises_broken"], 1),
            "waiting": pre["overdue"] + pre["waiting"],
            "preorder_left": _at_most(rep["left_at_load_end"]["ratio"], pt["leftover_ratio"]),
            "decisions": _outcomes(f["decisions"]),
            "depletions": _outcomes(f["depletions"]),
            "not_done": "" if r["drain"]["settled"] else " NOT DONE",
            "busy": _pct(1 - r["cpu_share"].get("idle", 0)),
        }
    )
    rows = [line.split("|", 2) for line in text.splitlines() if line]
    rows += [
        [v["name"], "0", f"{'PASS' if v['ok'] else 'FAIL'} {v['value']}"] for v in r["invariants"]
    ]
    return [(label, target, value) for label, target, value in rows]


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "0"


def summary(runs: dict[str, dict[str, Any]], heading: str) -> str:
    """One table, a column per run, the targets beside the numbers; then each run's details."""
    columns = [_rows(r) for r in runs.values()]
    widths = [
        max(len(m), *(len(str(v)) for *_, v in c)) + 2 for m, c in zip(runs, columns, strict=True)
    ]
    header = f"{'':<34}{'target':<9}" + "".join(
        f"{m:<{w}}" for m, w in zip(runs, widths, strict=True)
    )
    rule = "=" * max(78, len(header))
    lines = ["", rule, heading, rule, header, "-" * len(rule)]
    for i, (label, target, _) in enumerate(columns[0]):
        values = "".join(f"{c[i][2]!s:<{w}}" for c, w in zip(columns, widths, strict=True))
        lines.append(f"{label:<34}{target:<9}{values}")
    for mode, r in runs.items():
        lines += ["-" * len(rule), f"{mode}: {r['workdir']}", f"  limited by    {r['limit']}"]
        shares = sorted(r["cpu_share"].items(), key=lambda kv: -kv[1])
        lines.append("  cpu share     " + ", ".join(f"{k} {v:.0%}" for k, v in shares))
        if dead := [name for name, up in r["alive_after_load"].items() if not up]:
            lines.append(f"  DIED          {', '.join(dead)} exited during the load")
        lines += [f"  drill         {name}: {outcome}" for name, outcome in r["drills"].items()]
        for v in r["invariants"]:
            lines.append(f"  {'PASS' if v['ok'] else 'FAIL'}  {v['name']:<19} {v['detail']}")
    ok = all(r["ok"] for r in runs.values())
    return "\n".join([*lines, rule, "ALL INVARIANTS HOLD" if ok else "INVARIANT FAILED"])


# --- The plot --------------------------------------------------------------------------------


def plot(path: Path, *, runs: dict[str, dict[str, Any]], title: str) -> None:
    """A column per run: stock and units in production, sold-out windows, orders per second
    by answer, latency, and the queues; the rows share their scales."""
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
        _plot_run(grid[:, column], mode, run, plt.cm.tab10.colors)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_run(axes: Any, mode: str, run: dict[str, Any], palette: Any) -> None:
    stock_ax, gantt_ax, orders_ax, lat_ax, queue_ax = axes
    timelines, sold_out, end_x = run["timelines"], run["facts"]["sold_out"], run["load_seconds"]
    samples, tl, pre, rep = (
        timelines["samples"],
        timelines["http"],
        run["preorders"],
        run["replenishment"],
    )
    skus = sorted(sold_out)
    colors = dict(zip(skus, palette, strict=False))
    styles = {"stock": ("-", "on hand"), "in_production": ("--", "in production")}
    if pre.get("promised"):
        styles["promised"] = (":", "promised to waiting orders")
    rows = [s for s in samples if "stock" in s]
    for key, (style, label) in styles.items():
        for sku in skus:
            ys = [s.get(key, {}).get(sku) for s in rows]
            stock_ax.step(
                [s["t"] for s in rows], ys, where="post", color=colors[sku], linestyle=style
            )
        stock_ax.plot([], [], color="gray", linestyle=style, label=label)
    for sku in skus:
        stock_ax.plot([], [], color=colors[sku], label=sku)
    left = rep["left_at_load_end"]["ratio"]
    if pre.get("promised"):
        head = f"served {pre['served_share']} (shelf + promises kept), promises broken "
        head += f"{pre['broken_share']:.1%}"
    else:
        head = f"fill rate {rep['fill_rate']}, sold out up to {rep['sold_out_worst']:.0%}"
    stock_ax.set_title(f"{mode}: {head}, left at load end {left} of sold", fontsize=10)
    stock_ax.set_ylabel("units")

    for row, sku in enumerate(skus):
        spans = [(s, (e if e is not None else end_x) - s) for s, e in sold_out[sku]["windows"]]
        gantt_ax.broken_barh(spans, (row - 0.4, 0.8), color=colors[sku])
    gantt_ax.set_yticks(range(len(skus)), skus, fontsize=8)
    gantt_ax.set_ylabel("sold out")

    secs = [b["s"] for b in tl]
    kinds = {
        "served": "green",
        "backordered": "blue",
        "out_of_stock": "orange",
        "purchase_limit": "pink",
    }
    for kind, color in (kinds | {"throttled": "cyan"}).items():
        if any(b[kind] for b in tl):
            orders_ax.plot(
                secs, [b[kind] for b in tl], label=kind.replace("_", " "), color=f"tab:{color}"
            )
    if any(errors := [b["server_errors"] + b["no_answer"] for b in tl]):
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

    lat_ax.plot(secs, [b["p50_ms"] for b in tl], label="p50", color="tab:blue")
    lat_ax.plot(secs, [b["p99_ms"] for b in tl], label="p99", color="tab:red")
    lat_ax.set_ylabel("order latency (ms)")
    lat_ax.set_yscale("log")

    qs = [s for s in samples if "backlog" in s]
    queue_ax.plot([s["t"] for s in qs], [s["backlog"] for s in qs], label="events unpublished")
    qq = [s for s in samples if "queues" in s]
    for label, color in (("restock", "tab:olive"), ("dlq", "tab:red")):
        depth = [sum(s["queues"][label].values()) for s in qq]
        queue_ax.plot([s["t"] for s in qq], depth, label=f"{label} queue", color=color)
    unread = timelines["ops_unread"]
    label = "ops queue (published, not yet read)"
    queue_ax.plot(range(len(unread)), unread, label=label, color="tab:gray")
    tq = [s for s in samples if "task_queue" in s]
    xs, ys = [s["t"] for s in tq], [s["task_queue"] for s in tq]
    queue_ax.plot(xs, ys, label="django-q2 tasks queued", color="tab:brown", linestyle="--")
    queue_ax.set_ylabel("messages / tasks")
    queue_ax.set_yscale("symlog")
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
    for ax in (stock_ax, orders_ax, lat_ax, queue_ax):
        ax.legend(loc="upper right", fontsize=8)
