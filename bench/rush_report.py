"""The rush's instruments and presentation: the per-second sampler, the summary table and the
plot."""

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from bench.rush_verify import PREORDER_TARGETS, TARGETS
from bench.stack import connect

# One snapshot: the products, the units their waiting orders wait for (and of those, the units
# tied to no open batch), and the batches promised beyond their units.
SQL_PRODUCTS = (
    "SELECT sku, stock, on_order, promised, reorder_point, demand_rate "
    "FROM inventory_product WHERE sku IN %s"
)
SQL_WAITING = (
    "SELECT p.sku, COALESCE(SUM(o.quantity), 0), COALESCE(SUM(CASE WHEN d.id IS NULL OR "
    "d.settled_at IS NOT NULL THEN o.quantity ELSE 0 END), 0) "
    "FROM shop_order o JOIN inventory_product p ON p.id = o.product_id "
    "LEFT JOIN inventory_promise pr ON pr.id = o.promise_id "
    "LEFT JOIN inventory_reorderdecision d ON d.id = pr.batch_id "
    "WHERE o.status = 'backordered' AND p.sku IN %s GROUP BY p.sku"
)
SQL_OVERFULL = (
    "SELECT COUNT(*) FROM inventory_reorderdecision d JOIN ("
    "SELECT pr.batch_id, SUM(o.quantity) AS units FROM shop_order o "
    "JOIN inventory_promise pr ON pr.id = o.promise_id "
    "WHERE o.status = 'backordered' GROUP BY pr.batch_id) w ON w.batch_id = d.id "
    "WHERE w.units > d.quantity"
)
# What the relay has to publish: outbox rows and sales (a pre-order waiting for its batch is
# no sale yet; one served goes out whatever its id).
SQL_BACKLOG = (
    "SELECT (SELECT COUNT(*) FROM factory_bridge_outboxevent WHERE published_at IS NULL) + "
    "(SELECT COUNT(*) FROM shop_order WHERE published_at IS NULL AND status <> 'backordered')"
)
# Counts outside the snapshot; django_q_ormq: tasks queued and not yet taken by a worker.
SQL_COUNTS = {
    "backlog": SQL_BACKLOG,
    "dead_rows": "SELECT COUNT(*) FROM factory_bridge_failedmessage WHERE status = 'dead'",
    "task_queue": "SELECT COUNT(*) FROM django_q_ormq",
}
SQL_RESTOCKS = "SELECT status, COUNT(*) FROM factory_bridge_restockrequest GROUP BY status"
DEPTHS = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
}


class Sampler(threading.Thread):
    """Every second: stock, production and promises per product, the event backlog, restock
    states and queue depths, from the database and moto directly so that a drill does not
    blind it."""

    def __init__(self, *, database_url: str, skus: tuple, sqs: Any, queues: dict[str, str]) -> None:
        super().__init__(name="rush-sampler", daemon=True)
        self.database_url, self.skus, self.sqs, self.queues = database_url, skus, sqs, queues
        self.samples: list[dict[str, Any]] = []
        self.stopping, self.lock, self.conn = threading.Event(), threading.Lock(), None

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            sample = {"t": started, **self.database(), **self.depths()}
            with self.lock:
                self.samples.append(sample)
            self.stopping.wait(max(0.0, 1.0 - (time.time() - started)))

    def latest(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.samples[-1]) if self.samples else {}

    def database(self) -> dict[str, Any]:
        try:
            self.conn = self.conn or connect(self.database_url)
            cur = self.conn.cursor()
            # Promised units and the orders that hold them compared at one moment.
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute(SQL_PRODUCTS, (self.skus,))
            products = cur.fetchall()
            cur.execute(SQL_WAITING, (self.skus,))
            waiting = {sku: (int(units), int(untied)) for sku, units, untied in cur.fetchall()}
            cur.execute(SQL_OVERFULL)
            sample: dict[str, Any] = {"overfull_batches": int(cur.fetchone()[0])}
            cur.execute("COMMIT")
            for name, sql in SQL_COUNTS.items():
                cur.execute(sql)
                sample[name] = int(cur.fetchone()[0])
            cur.execute(SQL_RESTOCKS)
            sample["restocks"] = {status: int(n) for status, n in cur.fetchall()}
        except Exception as exc:  # MySQL may be down (the restart drill): again next second
            with contextlib.suppress(Exception):
                self.conn.close()  # type: ignore[union-attr]
            self.conn = None
            return {"db_error": str(exc)[:200]}
        for i, name in enumerate(("stock", "in_production", "promised", "reorder_point")):
            sample[name] = {row[0]: int(row[i + 1]) for row in products}
        sample["demand_rate"] = {row[0]: round(float(row[5]), 2) for row in products}
        for i, name in enumerate(("waiting", "untied")):
            sample[name] = {row[0]: waiting.get(row[0], (0, 0))[i] for row in products}
        return sample

    def depths(self) -> dict[str, Any]:
        try:
            got = {
                label: self.sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=[*DEPTHS.values()]
                )
                for label, url in self.queues.items()
            }
        except Exception as exc:  # moto unreachable: a gap in the timeline
            return {"queue_error": str(exc)[:200]}
        return {
            "queues": {
                label: {k: int(a["Attributes"].get(name, 0)) for k, name in DEPTHS.items()}
                for label, a in got.items()
            }
        }


def title(args: Any) -> str:
    drills = {"AWS outage": args.aws_outage, "worker kill": args.kill_worker}
    drills |= {"factory 50% failures": args.factory_failures, "MySQL restart": args.mysql_restart}
    on = ", ".join(name for name, fired in drills.items() if fired)
    heading = f"Rush: {args.vus} customers, {args.duration} s, factory {args.factory_delay:g} s"
    return heading + (f" — drills: {on}" if on else "")


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def _mark(value: float | None, target: float, *, at_most: bool = False) -> str:
    if value is None:
        return ""
    return " ok" if (value <= target if at_most else value >= target) else " MISS"


def _at_most(value: float | None, target: float, digits: int = 0) -> str:
    return _pct(value, digits) + _mark(value, target, at_most=True)


# The summary's rows, label|target|value, filled in per run.
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


def _rows(r: dict[str, Any]) -> list[list[str]]:
    """One run's column of the summary: [label, target, value] per row."""
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
    outcomes = {
        k: ", ".join(f"{n} {x}" for x, n in sorted(f[k].items())) or "0"
        for k in ("decisions", "depletions")
    }
    text = ROWS.format_map(
        {
            "r": r,
            "h": r["http"],
            "rep": rep,
            "f": f,
            "t": t,
            "pt": pt,
            "pre": pre,
            **left,
            **outcomes,
        }
        | {"c": rep["counted"], "p": r["open_pages"], "sold_out": "\n".join(sold_out)}
        | {
            "fill_mark": _mark(rep["fill_rate"], t["fill_rate"]),
            "worst": _at_most(rep["sold_out_worst"], t["sold_out_share"]),
            "served_mark": _mark(pre["served_share"], pt["served"]),
            "broken": _at_most(pre["broken_share"], pt["promises_broken"], 1),
            "waiting": pre["overdue"] + pre["waiting"],
            "preorder_left": _at_most(rep["left_at_load_end"]["ratio"], pt["leftover_ratio"]),
            "not_done": "" if r["drain"]["settled"] else " NOT DONE",
            "busy": _pct(1 - r["cpu_share"].get("idle", 0)),
        }
    )
    rows = [line.split("|", 2) for line in text.splitlines() if line]
    return rows + [
        [v["name"], "0", f"{'PASS' if v['ok'] else 'FAIL'} {v['value']}"] for v in r["invariants"]
    ]


def summary(runs: dict[str, dict[str, Any]], heading: str) -> str:
    """One table, a column per run, the targets beside the numbers; then each run's details."""
    columns = [_rows(r) for r in runs.values()]
    widths = [max(len(m), *(len(v) for *_, v in c)) + 2 for m, c in zip(runs, columns, strict=True)]
    header = f"{'':<34}{'target':<9}" + "".join(
        f"{m:<{w}}" for m, w in zip(runs, widths, strict=True)
    )
    rule = "=" * max(78, len(header))
    lines = ["", rule, heading, rule, header, "-" * len(rule)]
    for i, (label, target, _) in enumerate(columns[0]):
        values = "".join(f"{c[i][2]:<{w}}" for c, w in zip(columns, widths, strict=True))
        lines.append(f"{label:<34}{target:<9}{values}")
    for mode, r in runs.items():
        lines += ["-" * len(rule), f"{mode}: {r['workdir']}"]
        shares = sorted(r["cpu_share"].items(), key=lambda kv: -kv[1])
        lines.append("  cpu share     " + ", ".join(f"{k} {v:.0%}" for k, v in shares))
        if dead := [name for name, up in r["alive_after_load"].items() if not up]:
            lines.append(f"  DIED          {', '.join(dead)} exited during the load")
        lines += [f"  drill         {name}: {outcome}" for name, outcome in r["drills"].items()]
        lines += [
            f"  {'PASS' if v['ok'] else 'FAIL'}  {v['name']:<19} {v['detail']}"
            for v in r["invariants"]
        ]
    ok = all(r["ok"] for r in runs.values())
    return "\n".join([*lines, rule, "ALL INVARIANTS HOLD" if ok else "INVARIANT FAILED"])


ANSWER_COLORS = {"served": "green", "backordered": "blue", "out_of_stock": "orange"}
ANSWER_COLORS |= {"purchase_limit": "pink", "throttled": "cyan"}


def plot(path: Path, *, runs: dict[str, dict[str, Any]], title: str) -> None:
    """A column per run, rows sharing their scales: stock, production and promises; sold-out
    windows; orders/s by answer and events published; latency; queues and backlog."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = {"height_ratios": [3, 1.2, 3, 2, 2]}
    fig, grid = plt.subplots(
        5,
        len(runs),
        figsize=(9 * len(runs), 14),
        sharex=True,
        sharey="row",
        squeeze=False,
        gridspec_kw=ratios,
    )
    fig.suptitle(title)
    for column, (mode, run) in enumerate(runs.items()):
        _plot_run(grid[:, column], mode, run)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_run(axes: Any, mode: str, run: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    stock_ax, gantt_ax, orders_ax, lat_ax, queue_ax = axes
    lines = run["timelines"]
    samples, tl, pre, rep = lines["samples"], lines["http"], run["preorders"], run["replenishment"]
    sold_out, skus = run["facts"]["sold_out"], sorted(run["facts"]["sold_out"])
    colors = dict(zip(skus, plt.cm.tab10.colors, strict=False))
    styles = {"stock": ("-", "on hand"), "in_production": ("--", "in production")}
    styles |= {"promised": (":", "promised to waiting orders")} if pre.get("promised") else {}
    rows = [s for s in samples if "stock" in s]
    for key, (style, label) in styles.items():
        for sku in skus:
            ys = [s[key].get(sku) for s in rows]
            stock_ax.step(
                [s["t"] for s in rows], ys, where="post", color=colors[sku], linestyle=style
            )
        stock_ax.plot([], [], color="gray", linestyle=style, label=label)
    for row, sku in enumerate(skus):
        stock_ax.plot([], [], color=colors[sku], label=sku)
        spans = [
            (s, (e if e is not None else run["load_seconds"]) - s)
            for s, e in sold_out[sku]["windows"]
        ]
        gantt_ax.broken_barh(spans, (row - 0.4, 0.8), color=colors[sku])
    if pre.get("promised"):
        head = f"served {pre['served_share']} (shelf + promises kept), broken "
        head += f"{pre['broken_share']:.1%}"
    else:
        head = f"fill rate {rep['fill_rate']}, sold out up to {rep['sold_out_worst']:.0%}"
    left = rep["left_at_load_end"]["ratio"]
    stock_ax.set_title(f"{mode}: {head}, left at load end {left} of sold", fontsize=10)
    gantt_ax.set_yticks(range(len(skus)), skus, fontsize=8)
    secs = [b["s"] for b in tl]
    for kind, color in ANSWER_COLORS.items():
        if any(b[kind] for b in tl):
            orders_ax.plot(
                secs, [b[kind] for b in tl], label=kind.replace("_", " "), color=f"tab:{color}"
            )
    if any(errors := [b["server_errors"] + b["no_answer"] for b in tl]):
        orders_ax.plot(secs, errors, label="5xx / no answer", color="tab:red")
    published = lines["events"]["published"]
    last = max([*lines["events"]["created"], *published, 0]) + 1
    ys = [published.get(s, 0) for s in range(last)]
    orders_ax.plot(
        range(last), ys, label="events published/s (relay)", color="tab:purple", alpha=0.6
    )
    lat_ax.plot(secs, [b["p50_ms"] for b in tl], label="p50", color="tab:blue")
    lat_ax.plot(secs, [b["p99_ms"] for b in tl], label="p99", color="tab:red")
    lat_ax.set_yscale("log")
    curves = {"events unpublished": [(s["t"], s["backlog"]) for s in samples if "backlog" in s]}
    for label in ("restock", "dlq"):
        curves[f"{label} queue"] = [
            (s["t"], sum(s["queues"][label].values())) for s in samples if "queues" in s
        ]
    curves["ops queue (published, not yet read)"] = list(enumerate(lines["ops_unread"]))
    curves["django-q2 tasks queued"] = [
        (s["t"], s["task_queue"]) for s in samples if "task_queue" in s
    ]
    for label, points in curves.items():
        queue_ax.plot([x for x, _ in points], [y for _, y in points], label=label)
    queue_ax.set_yscale("symlog")
    queue_ax.set_xlabel("seconds since the rush started")
    names = ("units", "sold out", "orders per second", "order latency (ms)", "messages / tasks")
    for ax, name in zip(axes, names, strict=True):
        ax.set_ylabel(name)
        ax.axvline(run["load_seconds"], color="black", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
        for _, start, end in run["drill_windows"]:
            ax.axvspan(start, end, color="gray", alpha=0.15)
        if name != "sold out":
            ax.legend(loc="upper right", fontsize=8)
    for name, start, _ in run["drill_windows"]:
        stock_ax.annotate(
            name,
            (start, 0.97),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            va="top",
            rotation=90,
        )
