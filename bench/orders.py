"""Orders/s of the Sales API against a minimal view, with the whole system running.

    .venv/bin/python bench/orders.py            # 5 cycles of 20 s rounds (~12 min); rewrites
                                                # the results in docs/performance.md
    .venv/bin/python bench/orders.py --quick    # 2 cycles of 5 s rounds (~4 min); no doc

The system runs as `make run` starts it (bench/stack.py), on a database and ports of its own.
k6 keeps 32 connections posting one-unit orders of one product back to back, each order from a
customer of its own (X-Forwarded-For, through 127.0.0.1 as the trusted proxy). Each cycle,
web and cluster restarted for each setting: a round of POST /api/orders/ with production's
default purchase limit, rate limit and limit store (Redis); with limits off, a round of the
API and one of the baseline view (bench/baseline.py), in alternating order; a round of the
API with BENCH_EVENTS_ENABLED=0. Then a sell-out round on each path. It prints side by side
orders/s, p50/p90/p99 and the CPU each part spent per order (medians over rounds), the ratios
against their targets, the relay lag (published_at − created_at of the API's orders), oversell
(after every round the stock taken must equal the units ordered) and events lost (API orders
of events-on rounds whose order.completed never reached the operations queue).
Exit 1 on an oversell or a lost event; 2 if the system could not run.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import BIN, Config, OpsReader, Stack, cpu_spent, sqs_client  # noqa: E402

K6_SCRIPT = ROOT / "bench" / "k6" / "orders.js"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
# docs/performance.md: what lies between these markers is rewritten; the rest is by hand.
DOC_START, DOC_END = "<!-- results -->", "<!-- /results -->"
SKU = "CP-502102"
# Each sell-out on a product of its own: no restock the other set off arrives during it.
SELLOUT_SKUS = {"prod": "CP-502103", "baseline": "CP-502104"}
# Sides whose orders are announced (events on): each must reach the operations queue.
ANNOUNCED = ("prod", "api")
LARGE_STOCK = 10_000_000
DRAIN_TIMEOUT = 60
PATHS = {
    "prod": "/api/orders/",
    "api": "/api/orders/",
    "baseline": "/bench/baseline/orders/",
    "off": "/api/orders/",
}
SIDES = {
    "prod": "production defaults",
    "api": "limits off",
    "baseline": "baseline",
    "off": "events off",
}
PARTS = ("web", "mysql", "cluster", "moto")


@dataclass(frozen=True)
class Plan:
    cycles: int
    seconds: int
    warmup: int
    sellout_seconds: int


FULL = Plan(cycles=5, seconds=20, warmup=3, sellout_seconds=6)
QUICK = Plan(cycles=2, seconds=5, warmup=1, sellout_seconds=3)


def say(text: str) -> None:
    print(f"[orders {time.strftime('%H:%M:%S', time.gmtime())}] {text}", flush=True)


def stats(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        return round(ordered[round(q * (len(ordered) - 1))], 3) if ordered else None

    return {"p50_s": at(0.5), "p99_s": at(0.99), "max_s": at(1)}


# --- The database (this process, through the ORM) --------------------------------------------


def last_order() -> int:
    from django.db.models import Max

    from shop.models import Order

    return Order.objects.aggregate(last=Max("id"))["last"] or 0


def reset_stock(sku: str, quantity: int) -> tuple[int, int]:
    """Set the stock; return the last order and stock adjustment ids, where the round starts."""
    from django.db.models import Max

    from inventory.models import StockAdjustment
    from inventory.services import set_stock

    set_stock(sku=sku, quantity=quantity, note="bench/orders.py")
    return last_order(), StockAdjustment.objects.aggregate(last=Max("id"))["last"]


def reconcile(*, sku: str, start: int, after: tuple[int, int], created: int) -> dict[str, Any]:
    """The stock taken in a round against the units of its orders (arrivals added back)."""
    from django.db.models import Count, Min, Sum

    from inventory.models import Product, StockAdjustment
    from shop.models import Order

    stock = Product.objects.values_list("stock", flat=True).get(sku=sku)
    done = Order.objects.filter(pk__gt=after[0]).aggregate(
        n=Count("id"), units=Sum("quantity"), low=Min("remaining_stock")
    )
    arrivals = StockAdjustment.objects.filter(
        pk__gt=after[1], product__sku=sku, reason=StockAdjustment.Reason.ARRIVAL
    )
    arrived = sum(new - old for old, new in arrivals.values_list("old_quantity", "new_quantity"))
    taken, units = start + arrived - stock, done["units"] or 0
    lowest = min(stock, stock if done["low"] is None else done["low"])
    return {
        "stock_taken": taken,
        "units_ordered": units,
        "arrived": arrived,
        "lowest_stock": lowest,
        "unacknowledged": done["n"] - created,  # order rows without a 201, or the reverse
        "oversold": taken != units or lowest < 0,
    }


def round_orders(after_id: int, *, announced: bool) -> list[int]:
    """The round's orders. An events-off round's are sales nobody announces: they are marked
    published, or the relay would send them all in the next events-on round."""
    from django.db.models import F

    from shop.models import Order

    orders = Order.objects.filter(pk__gt=after_id)
    if not announced:
        orders.filter(published_at__isnull=True).update(published_at=F("created_at"))
    return list(orders.values_list("id", flat=True))


def published(order_ids: set[int]) -> float | None:
    """Seconds until the relay had marked every order published (None: not in time)."""
    from shop.models import Order

    started = time.monotonic()
    if not order_ids:
        return 0.0
    waiting = Order.objects.filter(
        pk__gte=min(order_ids), pk__lte=max(order_ids), published_at__isnull=True
    )
    while waiting.exists():
        if time.monotonic() - started > DRAIN_TIMEOUT:
            return None
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def relay_lag(order_ids: set[int], ops: OpsReader) -> dict[str, Any]:
    """published_at − created_at of the orders (from the database), and the time until the
    operations queue had their events (its SentTimestamp)."""
    from shop.models import Order

    rows = Order.objects.filter(pk__in=order_ids).values_list("id", "created_at", "published_at")
    lag, to_ops, unmarked = [], [], 0
    with ops.lock:
        for pk, created, published in rows:
            if published is None:
                unmarked += 1
            else:
                lag.append((published - created).total_seconds())
            if pk in ops.orders:
                to_ops.append(ops.seen[ops.orders[pk]][0] - created.timestamp())
    return {"orders": len(order_ids), "not_marked_published": unmarked, **stats(lag)} | {
        "to_ops_queue": stats(to_ops)
    }


# --- Rounds ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, stack: Stack, ops: OpsReader) -> None:
        self.args, self.plan, self.stack, self.ops = args, plan, stack, ops
        self.rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        self.sellout: dict[str, dict[str, Any]] = {}
        # API orders placed with events on: each must reach the operations queue.
        self.announced: set[int] = set()
        self.k6_runs = 0

    def k6(self, path: str, seconds: int, sku: str = SKU) -> dict[str, Any]:
        self.k6_runs += 1
        summary = self.stack.workdir / f"k6-{self.k6_runs}.json"
        env = {
            "PATH": os.environ["PATH"],
            "K6_NO_USAGE_REPORT": "true",
            "TARGET_URL": self.stack.base_url + path,
            "SKU": sku,
            "VUS": str(self.args.vus),
            "DURATION": f"{seconds}s",
            "SUMMARY_PATH": str(summary),
            "RUN": str(self.k6_runs),
        }
        cmd = [str(BIN / "k6"), "run", "--quiet", "--no-color", str(K6_SCRIPT)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
        if done.returncode or not summary.exists():
            raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
        data = json.loads(summary.read_text())
        metrics, seconds_run = data["metrics"], data["state"]["testRunDurationMs"] / 1000
        latency = metrics["http_req_duration"]["values"]
        count = {
            name: int(metrics.get(f"orders_{name}", {}).get("values", {}).get("count", 0))
            for name in ("created", "refused", "failed")
        }
        return {
            "orders_per_s": round(count["created"] / seconds_run, 1),
            **{f"p{q}_ms": round(latency[f"p({q})"], 1) for q in (50, 90, 99)},
            **count,
        }

    def load(self, side: str, label: str, *, stock: int, seconds: int, sku: str = SKU) -> dict:
        """One round: k6 on the side's path, the relay's tail, CPU per order, the books.

        The CPU counted runs from the round's start until the relay has published every
        order of it; the operations queue is read after that, by the benchmark's reader.
        """
        after = reset_stock(sku, stock)
        self.ops.pause()
        before = self.stack.cpu()
        result = {"round": label, **self.k6(PATHS[side], seconds, sku)}
        orders = round_orders(after[0], announced=self.stack.events)
        if side in ANNOUNCED:
            result["publish_s"] = published(set(orders))
        spent = cpu_spent(before, self.stack.cpu())
        self.ops.resume()
        if side in ANNOUNCED:
            self.announced.update(orders)
            result["drain_s"] = self.drain(set(orders))
        per_order = {p: spent.get(p, 0.0) * 1000 / max(1, result["created"]) for p in PARTS}
        per_order["total"] = sum(per_order.values())
        result["cpu_ms_per_order"] = {k: round(v, 3) for k, v in per_order.items()}
        result["cpu_s"] = spent
        result.update(reconcile(sku=sku, start=stock, after=after, created=result["created"]))
        say(
            f"{label:<18} {result['orders_per_s']:7.1f} orders/s  p50 {result['p50_ms']:6.1f}  "
            f"p99 {result['p99_ms']:6.1f} ms  201={result['created']} 409={result['refused']} "
            f"other={result['failed']}  CPU ms/order {per_order['total']:.2f}  other processes "
            f"{spent['other']:.1f} s" + ("  OVERSOLD" if result["oversold"] else "")
        )
        return result

    def drain(self, order_ids: set[int]) -> float | None:
        """Seconds until the operations queue had every order's event (None: not in time)."""
        started = time.monotonic()
        while self.ops.missing(order_ids):
            if time.monotonic() - started > DRAIN_TIMEOUT:
                return None
            time.sleep(0.1)
        return round(time.monotonic() - started, 2)

    def warm_up(self, *sides: str) -> None:
        """A few seconds of each path after a restart, and their events out of the way."""
        for side in sides:
            after = last_order()
            self.k6(PATHS[side], self.plan.warmup)
            orders = round_orders(after, announced=self.stack.events)
            if side in ANNOUNCED:
                self.drain(set(orders))

    def run(self) -> None:
        """Each cycle: production defaults (limits on), then limits off with the baseline, in
        alternating order, then events off; web and cluster restart for each setting."""
        for n in range(1, self.plan.cycles + 1):
            pair = ["api", "baseline"] if n % 2 else ["baseline", "api"]
            groups = [["prod"], pair] if n % 2 else [pair, ["prod"]]
            for group in [*groups, ["off"]]:
                self.stack.restart(events=group != ["off"], limits=group == ["prod"])
                self.warm_up(*group)
                for side in group:
                    label = f"{SIDES[side]} #{n}"
                    result = self.load(side, label, stock=LARGE_STOCK, seconds=self.plan.seconds)
                    self.rounds[side].append(result)
        self.stack.restart(events=True, limits=True)
        self.warm_up("prod", "baseline")
        for side in ("prod", "baseline"):
            # About half a round's worth: the rest of the round is refusals at zero stock.
            rate = statistics.median(r["orders_per_s"] for r in self.rounds[side])
            stock = max(20, round(rate * self.plan.sellout_seconds / 2))
            seconds, sku = self.plan.sellout_seconds, SELLOUT_SKUS[side]
            result = self.load(side, f"{side} sell-out", stock=stock, seconds=seconds, sku=sku)
            self.sellout[side] = {**result, "stock": stock}


# --- Results ---------------------------------------------------------------------------------


def summarize(bench: Bench) -> dict[str, Any]:
    med = {}
    for side, rounds in bench.rounds.items():
        keys = ("orders_per_s", "p50_ms", "p90_ms", "p99_ms")
        med[side] = {k: statistics.median(r[k] for r in rounds) for k in keys}
        for part in (*PARTS, "total"):
            med[side][f"cpu_{part}"] = statistics.median(
                r["cpu_ms_per_order"][part] for r in rounds
            )
    every = [r for rounds in bench.rounds.values() for r in rounds] + list(bench.sellout.values())
    missing = bench.ops.missing(bench.announced)
    with bench.ops.lock:
        event_ids = {bench.ops.orders[pk] for pk in bench.announced - missing}
        duplicates = bench.ops.deliveries - len(bench.ops.seen)
        unexpected = len(bench.ops.orders.keys() - bench.announced)
    return {
        "medians": med,
        "ratios": {
            "prod": round(med["prod"]["orders_per_s"] / med["baseline"]["orders_per_s"], 3),
            "api": round(med["api"]["orders_per_s"] / med["baseline"]["orders_per_s"], 3),
            "events": round(med["api"]["orders_per_s"] / med["off"]["orders_per_s"], 3),
            "p99": round(med["prod"]["p99_ms"] / med["baseline"]["p99_ms"], 3),
        },
        "relay_lag": relay_lag(bench.announced, bench.ops),
        "oversold_rounds": [r["round"] for r in every if r["oversold"]],
        "rounds_checked": len(every),
        "failed_requests": sum(r["failed"] for r in every),
        "events": {
            "orders": len(bench.announced),
            # Orders the queue never told of, or told of under one event_id for several.
            "lost": max(len(missing), len(bench.announced) - len(event_ids)),
            "distinct_event_ids": len(event_ids),
            "duplicate_deliveries": duplicates,
            "orders_not_from_events_on_api_rounds": unexpected,
            "unreadable_messages": bench.ops.unreadable,
        },
    }


def report(results: dict[str, Any]) -> str:
    """The results as Markdown tables: printed, and written into docs/performance.md."""
    s, rounds = results["summary"], results["rounds"]
    med, r, ev, lag = s["medians"], s["ratios"], s["events"], s["relay_lag"]
    rows = [
        ("orders/s", "orders_per_s", "{:.0f}"),
        *((f"{q} ms", f"{q}_ms", "{:.1f}") for q in ("p50", "p90", "p99")),
        *((f"CPU ms/order: {p}", f"cpu_{p}", "{:.2f}") for p in (*PARTS, "total")),
    ]
    lines = [
        "| | " + " | ".join(SIDES.values()) + " |",
        "|---|" + "---:|" * len(SIDES),
        *(
            f"| {label} | " + " | ".join(fmt.format(med[side][key]) for side in SIDES) + " |"
            for label, key, fmt in rows
        ),
        "| orders/s per round | "
        + " | ".join(", ".join(f"{x['orders_per_s']:.0f}" for x in rounds[side]) for side in SIDES)
        + " |",
        "",
        "| Target | Measured | Wanted | |",
        "|---|---|---|---|",
    ]
    p99 = lag["p99_s"]
    targets = [
        (
            "production defaults ÷ baseline, orders/s",
            f"{r['prod']:.2f}",
            "≥ 0.75",
            r["prod"] >= 0.75,
        ),
        ("limits off ÷ baseline, orders/s", f"{r['api']:.2f}", "≥ 0.8", r["api"] >= 0.8),
        ("events on ÷ off, orders/s", f"{r['events']:.2f}", "≥ 0.9", r["events"] >= 0.9),
        (
            "p99 production defaults ÷ p99 baseline",
            f"{r['p99']:.2f}",
            "≤ 1.5",
            r["p99"] <= 1.5,
        ),
        (
            "relay lag p99",
            "none marked published" if p99 is None else f"{p99:.2f} s",
            "≤ 1 s",
            None if p99 is None else p99 <= 1,
        ),
        (
            "oversold",
            f"{len(s['oversold_rounds'])} of {s['rounds_checked']} rounds",
            "0",
            not s["oversold_rounds"],
        ),
        ("events lost", f"{ev['lost']} of {ev['orders']:,} orders", "0", ev["lost"] == 0),
    ]
    marks = {True: "pass", False: "**FAIL**", None: "—"}
    lines += [f"| {what} | {got} | {want} | {marks[met]} |" for what, got, want, met in targets]
    sell = "; ".join(
        f"{SIDES[side]} sold {x['units_ordered']} of {x['stock']} ({x['arrived']} arrived), "
        f"refused {x['refused']}"
        for side, x in results["sellout"].items()
    )
    lags = {
        where: ", ".join(
            f"{q} {'—' if x[f'{q}_s'] is None else x[f'{q}_s']}" for q in ("p50", "p99", "max")
        )
        for where, x in (("db", lag), ("ops", lag["to_ops_queue"]))
    }
    lines += [
        "",
        f"Relay lag (s) of the {lag['orders']:,} orders with events on: {lags['db']} "
        f"({lag['not_marked_published']} not marked published); until the operations queue "
        f"had them: {lags['ops']}. {ev['distinct_event_ids']:,} distinct "
        f"`event_id`s, {ev['duplicate_deliveries']} delivered twice. Sell-out rounds: {sell}. "
        f"{s['failed_requests']} answers other than 201 and 409.",
    ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        (mariadb,) = cursor.fetchone()
    models = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x]
    k6 = subprocess.run([str(BIN / "k6"), "version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": models[0].split(":", 1)[1].strip() if models else platform.processor(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "mariadb": mariadb,
        "k6": k6.split()[1] if k6 else "?",
        **{name: version(name) for name in ("django", "gunicorn", "moto")},
    }


def write_doc(results: dict[str, Any]) -> None:
    """Put the results between the markers of docs/performance.md; the rest is by hand."""
    m, plan = results["machine"], results["plan"]
    block = (
        f"{DOC_START}\nGenerated by `bench/orders.py` on {results['finished_at']} (UTC), "
        f"{plan['cycles']} cycles of {plan['seconds']} s rounds, {results['config']['vus']} "
        f"connections; {m['nproc']} vCPU ({m['cpu']}), load average "
        f"{', '.join(map(str, m['loadavg_at_start']))} at the start; Django {m['django']}, "
        f"gunicorn {m['gunicorn']}, MariaDB {m['mariadb']}, moto {m['moto']}, k6 {m['k6']}. "
        f"Medians over rounds:\n\n{report(results)}\n{DOC_END}"
    )
    text = DOC.read_text()
    start, end = text.find(DOC_START), text.find(DOC_END)
    if not -1 < start < end:
        raise RuntimeError(f"{DOC.relative_to(ROOT)} lacks the markers {DOC_START} {DOC_END}")
    DOC.write_text(text[:start] + block + text[end + len(DOC_END) :])


# --- Main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 cycles of 5 s rounds, no doc")
    p.add_argument("--cycles", type=int, help="rounds per side (default 5; quick 2)")
    p.add_argument("--seconds", type=int, help="seconds per round (default 20; quick 5)")
    p.add_argument("--vus", type=int, default=32, help="k6 connections")
    p.add_argument(
        "--web-workers", type=int, default=os.cpu_count() or 2, help="gunicorn workers (make run's)"
    )
    p.add_argument(
        "--port", type=int, default=8100, help="web; the factory and Redis get the next two"
    )
    p.add_argument("--moto-port", type=int, default=4700)
    p.add_argument(
        "--database-url", default="mysql://root@127.0.0.1:3306/nudged_bench", help="dropped first"
    )
    p.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the doc from it")
    doc = p.add_mutually_exclusive_group()
    doc.add_argument("--doc", dest="doc", action="store_true", default=None)
    doc.add_argument("--no-doc", dest="doc", action="store_false", help="the default with --quick")
    return p.parse_args()


def main() -> int:
    python = BIN / "python"
    if python.exists() and Path(sys.prefix).resolve() != python.parent.parent.resolve():
        os.execv(python, [str(python), *sys.argv])  # the project's virtualenv
    args = parse_args()
    if args.render:
        write_doc(json.loads(args.render.read_text()))
        say(f"rewrote the results in {DOC.relative_to(ROOT)} from {args.render}")
        return 0
    base = QUICK if args.quick else FULL
    plan = Plan(**asdict(base) | {"cycles": args.cycles or base.cycles})
    plan = Plan(**asdict(plan) | {"seconds": args.seconds or base.seconds})
    config = Config(
        workdir=ROOT / "run" / "bench" / "orders" / time.strftime("%Y%m%d-%H%M%S"),
        database_url=args.database_url,
        web_port=args.port,
        factory_port=args.port + 1,
        redis_port=args.port + 2,
        moto_port=args.moto_port,
        web_workers=args.web_workers,
        # k6 stands for a load balancer's many clients: X-Forwarded-For names each customer.
        settings={"TRUSTED_PROXIES": "127.0.0.1/32"},
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    stack, ops = Stack(config), None
    started = datetime.now(UTC)
    try:
        say(f"starting the system (logs in {config.workdir})")
        stack.start()
        os.environ.update(stack.env, LOG_LEVEL="WARNING")  # this process reads the database
        import django

        django.setup()
        sqs = sqs_client(stack.direct_endpoint, stack.env)
        queue = sqs.get_queue_url(QueueName=stack.names["SQS_OPS_QUEUE"])["QueueUrl"]
        ops = OpsReader(sqs=sqs, url=queue)
        ops.start()
        info = machine()
        bench = Bench(args, plan, stack, ops)
        bench.run()
    except (RuntimeError, OSError) as exc:
        say(f"could not run: {exc}")
        return 2
    finally:
        if ops is not None:
            ops.stop()
        stack.stop_all()
    results = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "plan": asdict(plan),
        "config": {"vus": args.vus, "web_workers": args.web_workers, "database": args.database_url},
        "machine": info,
        "summary": summarize(bench),
        "rounds": bench.rounds,
        "sellout": bench.sellout,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("orders-quick.json" if args.quick else "orders.json")
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\n{report(results)}\n\nresults: {path.relative_to(ROOT)}", flush=True)
    if args.doc if args.doc is not None else not args.quick:
        write_doc(results)
        say(f"rewrote the results in {DOC.relative_to(ROOT)}")
    s = results["summary"]
    return 1 if s["oversold_rounds"] or s["events"]["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
