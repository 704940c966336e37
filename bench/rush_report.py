"""The rush's numbers: k6's per-request CSV, per-second timelines, the summary and the plot."""

import csv
import gzip
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.rush_verify import Snapshot, percentile, ts


def read_k6_csv(path: Path, *, t0: float, db_window: tuple[float, float] | None) -> dict[str, Any]:
    """Classify every order request and bin it per second since the start of the load."""
    totals = defaultdict(int)
    durations: list[float] = []
    bins: dict[int, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    latencies: dict[int, list[float]] = defaultdict(list)
    samples: list[str] = []
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        name_i, time_i, value_i = (
            header.index(c) for c in ("metric_name", "timestamp", "metric_value")
        )
        status_i = header.index("status")
        for row in reader:
            if row[name_i] != "http_req_duration":
                continue
            at = int(row[time_i]) / 1000
            value = float(row[value_i])
            status = int(row[status_i] or 0)
            second = int(at - t0)
            kind = _kind(status)
            in_db = db_window is not None and db_window[0] <= at <= db_window[1]
            if in_db and kind in ("server_errors", "no_answer"):
                totals[f"{kind}_in_db_window"] += 1
            else:
                totals[kind] += 1
            totals["requests"] += 1
            bins[second][kind] += 1
            bins[second]["requests"] += 1
            if status:
                durations.append(value)
                latencies[second].append(value)
            if kind in ("server_errors", "no_answer", "unexpected") and len(samples) < 10:
                samples.append(f"t={at - t0:.1f}s status={status}")
    timeline = []
    for second in sorted(bins):
        lat = latencies.get(second, [])
        timeline.append(
            {
                "s": second,
                **{k: bins[second].get(k, 0) for k in (*_KINDS, "requests")},
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
            }
        )
    return {
        **{k: totals.get(k, 0) for k in (*_KINDS, "requests")},
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
        "timeline": timeline,
    }


_KINDS = ("accepted", "refused", "server_errors", "no_answer", "unexpected")


def _kind(status: int) -> str:
    if status == 201:
        return "accepted"
    if status == 409:
        return "refused"
    if status >= 500:
        return "server_errors"
    if status == 0:
        return "no_answer"
    return "unexpected"


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def rates(http: dict[str, Any], *, hold: tuple[int, int]) -> dict[str, float]:
    """Orders per second over the plateau of the load, and the busiest second."""
    steady = [b for b in http["timeline"] if hold[0] <= b["s"] < hold[1]]
    answered = [b["accepted"] + b["refused"] for b in steady]
    seconds = max(1, hold[1] - hold[0])
    return {
        "orders_per_s": round(sum(answered) / seconds, 1),
        "accepted_per_s": round(sum(b["accepted"] for b in steady) / seconds, 1),
        "peak_orders_per_s": max(answered, default=0),
    }


def event_rates(snap: Snapshot, *, t0: float) -> dict[str, Any]:
    """Events written (app) and published (relay → endpoint) per second."""
    created: dict[int, int] = defaultdict(int)
    published: dict[int, int] = defaultdict(int)
    for e in snap.outbox:
        created[int((ts(e["created_at"]) or t0) - t0)] += 1
        if e["published_at"] is not None:
            published[int((ts(e["published_at"]) or t0) - t0)] += 1
    return {"created": dict(created), "published": dict(published)}


def plot(
    path: Path,
    *,
    samples: list[dict[str, Any]],
    ops_read: list[float],
    http: dict[str, Any],
    events: dict[str, Any],
    sold_out: dict[str, Any],
    drills: list[tuple[str, float, float]],
    t0: float,
    load_end: float,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        5, 1, figsize=(12, 14), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 3, 2, 2]}
    )
    stock_ax, gantt_ax, orders_ax, lat_ax, queue_ax = axes
    skus = sorted(sold_out)
    colors = dict(zip(skus, plt.cm.tab10.colors, strict=False))

    xs = [s["t"] - t0 for s in samples if "stock" in s]
    for sku in skus:
        ys = [s["stock"].get(sku) for s in samples if "stock" in s]
        stock_ax.step(xs, ys, where="post", label=sku, color=colors[sku])
    stock_ax.set_ylabel("stock (units)")
    stock_ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)

    end_x = load_end - t0
    for row, sku in enumerate(skus):
        spans = [(s, (e if e is not None else end_x) - s) for s, e in sold_out[sku]["windows"]]
        gantt_ax.broken_barh(spans, (row - 0.4, 0.8), color=colors[sku])
    gantt_ax.set_yticks(range(len(skus)), skus, fontsize=8)
    gantt_ax.set_ylabel("sold out")

    tl = http["timeline"]
    secs = [b["s"] for b in tl]
    orders_ax.plot(secs, [b["accepted"] for b in tl], label="accepted (201)", color="tab:green")
    orders_ax.plot(secs, [b["refused"] for b in tl], label="refused (409)", color="tab:orange")
    errors = [b["server_errors"] + b["no_answer"] for b in tl]
    if any(errors):
        orders_ax.plot(secs, errors, label="5xx / no answer", color="tab:red")
    last = max([*events["created"], *events["published"], 0]) + 1
    orders_ax.plot(
        range(last),
        [events["published"].get(s, 0) for s in range(last)],
        label="events published/s (relay)",
        color="tab:purple",
        alpha=0.6,
        linewidth=0.8,
    )
    orders_ax.set_ylabel("per second")
    orders_ax.legend(loc="upper right", fontsize=8)

    lat_ax.plot(secs, [b["p50_ms"] for b in tl], label="p50", color="tab:blue")
    lat_ax.plot(secs, [b["p99_ms"] for b in tl], label="p99", color="tab:red")
    lat_ax.set_ylabel("order latency (ms)")
    lat_ax.set_yscale("log")
    lat_ax.legend(loc="upper right", fontsize=8)

    qs = [s for s in samples if "outbox_pending" in s]
    queue_ax.plot(
        [s["t"] - t0 for s in qs], [s["outbox_pending"] for s in qs], label="outbox backlog"
    )
    qq = [s for s in samples if "queues" in s]
    for label, color in (("restock", "tab:olive"), ("dlq", "tab:red")):
        queue_ax.plot(
            [s["t"] - t0 for s in qq],
            [s["queues"][label]["visible"] + s["queues"][label]["in_flight"] for s in qq],
            label=f"{label} queue",
            color=color,
        )
    # Published but not yet read from the ops queue, second by second.
    last = int(max([*events["published"], *(int(t - t0) for t in ops_read[-1:]), 0])) + 1
    unread, published, read_i = [], 0, 0
    for second in range(last):
        published += events["published"].get(second, 0)
        while read_i < len(ops_read) and ops_read[read_i] - t0 < second + 1:
            read_i += 1
        unread.append(max(0, published - read_i))
    queue_ax.plot(
        range(last), unread, label="ops queue (published, not yet read)", color="tab:gray"
    )
    tq = [s for s in samples if "task_queue" in s]
    queue_ax.plot(
        [s["t"] - t0 for s in tq],
        [s["task_queue"] for s in tq],
        label="django-q2 tasks queued",
        color="tab:brown",
        linestyle="--",
    )
    queue_ax.set_ylabel("messages / tasks")
    queue_ax.set_yscale("symlog")
    queue_ax.legend(loc="upper right", fontsize=8)
    queue_ax.set_xlabel("seconds since the rush started")

    for name, start, end in drills:
        for ax in axes:
            ax.axvspan(start - t0, end - t0, color="gray", alpha=0.15)
        stock_ax.annotate(
            name,
            (start - t0, 0.97),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            va="top",
            rotation=90,
        )
    for ax in axes:
        ax.axvline(end_x, color="black", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
