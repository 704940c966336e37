"""Orders/s on one donut's row against three donuts', the web tier out of the way.

    .venv/bin/python bench/capacity.py            # 8/16/32/64 connections, 3 rounds of 10 s
                                                  # per shape (~6 min); rewrites docs/deploy.md
    .venv/bin/python bench/capacity.py --quick    # 8 and 32 connections, 1 round of 3 s; no doc

Each connection is a process with a MySQLdb connection of its own sending an order's own
statements, read from the code at run time, as shop.services places them; docs/deploy.md
("Capacity") says what is measured. The database (its name must contain "bench") is recreated.
"""

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import MySQLdb
from MySQLdb.constants.CLIENT import FOUND_ROWS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import (  # noqa: E402
    db_config,
    django_setup,
    machine_cpu,
    md_table,
    named_cpu,
    percentile,
    write_section,
)

DOC = ROOT / "docs" / "deploy.md"
RATES = (500, 1_000, 5_000)
HOST_VCPU, HOST_BUSY = 4, 0.7  # a web host's cores, and how busy it may run in a rush


def pct(values: list[float], q: float) -> float:
    return round(1000 * (percentile(values, q) or 0.0), 3)


def busy_cpu() -> float:
    """CPU seconds every core has spent busy since boot."""
    total, idle = machine_cpu()
    return total - idle


def _orders(db: dict[str, Any], sku: str, begin: float, start: float, end: float, out: Any) -> None:
    """One connection's orders from `begin` until `end`; the CPU it used from `start`."""
    from django.conf import settings

    from shop.models import Order, new_reference
    from shop.services import quick_order

    done: list[tuple[float, float]] = []
    refused, cpu = 0, None
    try:
        opts = settings.DATABASES["default"]["OPTIONS"]  # the connection as Django opens it
        conn = MySQLdb.connect(
            charset="utf8mb4", client_flag=FOUND_ROWS, init_command=opts["init_command"], **db
        )
        cur = conn.cursor()
        cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {opts['isolation_level']}")
        time.sleep(max(0.0, begin - time.monotonic()))
        while (began := time.monotonic()) < end:
            if cpu is None and began >= start:
                cpu = time.process_time()
            key = new_reference()
            sql, params = quick_order(
                sku=sku,
                quantity=1,
                channel=Order.Channel.API,
                customer=key,
                address=key,
                reference=new_reference(),
            )
            cur.execute(sql, params)
            cur.nextset()
            cur.nextset()
            row = cur.fetchone()
            cur.nextset()
            if row is None:
                refused += 1
                continue
            ended = time.monotonic()
            done.append((ended, ended - began))
        conn.close()
        cpu = time.process_time() - (cpu or time.process_time())
        out.put({"done": done, "refused": refused, "cpu": cpu})
    except Exception as exc:  # a statement the code changed fails the run, loudly
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run(
    *, db: dict[str, Any], skus: list[str], connections: int, seconds: float, warmup: float = 0
) -> dict[str, Any]:
    """Orders from `connections` processes spread over `skus` for warm-up + `seconds`: what the
    measured window counted, and every order and refusal of the run (for the books)."""
    from django.db import connections as django_connections

    django_connections.close_all()  # not shared with the forked processes
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    begin = time.monotonic() + 0.5 + connections * 0.02
    start = begin + warmup
    end = start + seconds
    args = [(db, skus[n % len(skus)], begin, start, end, out) for n in range(connections)]
    procs = [fork.Process(target=_orders, args=a) for a in args]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start - time.monotonic()))
    mysql, busy = named_cpu(), busy_cpu()
    time.sleep(max(0.0, end - time.monotonic()))
    mysql_end, busy_end = named_cpu(), busy_cpu()
    answers = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join()
    if errors := [a["error"] for a in answers if "error" in a]:
        raise RuntimeError(f"{len(errors)} of {connections} connections failed: {errors[0]}")
    done = [d for a in answers for d in a["done"]]
    counted = [d for d in done if start <= d[0] <= end]
    n = max(1, len(counted))
    mysql_s = sum(v - mysql.get(pid, 0.0) for pid, v in mysql_end.items())
    client_s = sum(a["cpu"] for a in answers)
    return {
        "orders_per_s": round(len(counted) / seconds, 1),
        "p50_ms": pct([d[1] for d in counted], 50),
        "p99_ms": pct([d[1] for d in counted], 99),
        "mysql_ms_per_order": round(1000 * mysql_s / n, 3),
        "client_ms_per_order": round(1000 * client_s / n, 3),
        # Cores busy with work of neither (another benchmark on the shared machine, say).
        "other_cores": round((busy_end - busy - mysql_s - client_s) / seconds, 2),
        "placed": len(done),
        "refused": sum(a["refused"] for a in answers),
    }


def setup(url: str, stock: int) -> list[str]:
    """The bench database migrated and stocked; three products' skus."""
    django_setup(url)
    from inventory.models import Product

    skus = list(Product.objects.order_by("sku").values_list("sku", flat=True)[:3])
    Product.objects.filter(sku__in=skus).update(stock=stock)
    return skus


def web_ms(given: float | None) -> tuple[float, str]:
    if given:
        return given, "--web-ms"
    path = ROOT / "bench" / "results" / "orders.json"
    if not path.exists():
        raise SystemExit(f"no {path.relative_to(ROOT)}: run bench/orders.py or pass --web-ms")
    return json.loads(path.read_text())["summary"]["medians"]["prod"]["cpu_web"], str(path.name)


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rounds:
        out.setdefault(r["shape"], {}).setdefault(str(r["connections"]), {})
    for shape, by in out.items():
        for conns in by:
            mine = [r for r in rounds if r["shape"] == shape and str(r["connections"]) == conns]
            keys = [k for k, v in mine[0].items() if isinstance(v, float)]
            by[conns] = {k: statistics.median(r[k] for r in mine) for k in keys}
    return out


def report(results: dict[str, Any]) -> str:
    med, web = results["medians"], results["web_ms_per_order"]
    one, three = med["1 donut"], med["3 donuts"]
    head = ["connections", "1 donut: orders/s", "p50 ms", "p99 ms"]
    head += ["3 donuts: orders/s", "p50 ms", "p99 ms", "1 ÷ 3"]
    cols = [("orders_per_s", ".0f"), ("p50_ms", ".1f"), ("p99_ms", ".1f")]
    shapes = [
        [
            c,
            *(format(one[c][k], f) for k, f in cols),
            *(format(three[c][k], f) for k, f in cols),
            f"{one[c]['orders_per_s'] / three[c]['orders_per_s']:.2f}",
        ]
        for c in one
    ]
    best = max(one, key=lambda c: one[c]["orders_per_s"])
    ceiling = one[best]["orders_per_s"]
    db_ms = statistics.median(b["mysql_ms_per_order"] for b in three.values())
    client_ms = statistics.median(b["client_ms_per_order"] for b in three.values())
    rush = []
    for rate in RATES:
        cores = rate * web / 1000
        row = "fits" if rate <= ceiling else f"over: {rate / ceiling:.1f} × its ceiling"
        hosts = math.ceil(cores / (HOST_VCPU * HOST_BUSY))
        rush.append([f"{rate:,}", f"{cores:.1f}", hosts, f"{rate * db_ms / 1000:.1f}", row])
    head2 = ["rush, orders/s", "web cores busy", f"{HOST_VCPU}-vCPU web hosts at {HOST_BUSY:.0%}"]
    head2 += ["MariaDB cores busy", "one donut's row"]
    return (
        f"{md_table(head, shapes, 'r' * len(head))}\n\n"
        f"One donut's ceiling: **{ceiling:.0f} orders/s** (at {best} connections). "
        f"MariaDB CPU per order {db_ms:.2f} ms (3 donuts, median), this script's "
        f"{client_ms:.2f} ms. Web CPU per order {web:.2f} ms ({results['web_source']}): "
        f"{1000 / web:.0f} orders/s per core.\n\n{md_table(head2, rush, 'rrrrl')}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="8 and 32 connections, 1 round of 3 s")
    p.add_argument("--connections", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--web-ms", type=float, help="web CPU ms per order (default: orders.json's)")
    p.add_argument("--database-url", default="mysql://root@127.0.0.1:3306/nudged_capacity_bench")
    args = p.parse_args()
    if args.quick:
        args.connections, args.rounds, args.seconds = [8, 32], 1, 3
    web, source = web_ms(args.web_ms)
    skus = setup(args.database_url, stock=100_000_000)
    from django.db import connection

    db, rounds = db_config(args.database_url), []
    for n in range(args.rounds):
        for conns in args.connections:
            shapes = [("1 donut", skus[:1]), ("3 donuts", skus)]
            for shape, on in shapes[:: 1 if n % 2 == 0 else -1]:
                with connection.cursor() as cursor:
                    cursor.execute("TRUNCATE TABLE `shop_order`")
                r = run(db=db, skus=on, connections=conns, seconds=args.seconds, warmup=2)
                if r["refused"]:
                    raise SystemExit(f"{shape} sold out: raise the stock")
                print(
                    f"#{n + 1} {shape:8} {conns:3} connections: {r['orders_per_s']:7.1f} "
                    f"orders/s p50 {r['p50_ms']:6.1f} p99 {r['p99_ms']:6.1f} ms "
                    f"MariaDB {r['mysql_ms_per_order']:.2f} ms/order, "
                    f"other {r['other_cores']:.2f} cores",
                    flush=True,
                )
                rounds.append({"shape": shape, "connections": conns, **r})
    results = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "args": vars(args),
        "web_ms_per_order": web,
        "web_source": source,
        "nproc": os.cpu_count(),
        "medians": summarize(rounds),
        "rounds": rounds,
    }
    out = ROOT / "bench" / "results" / ("capacity-quick.json" if args.quick else "capacity.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    table = report(results)
    print(f"\n{table}\n\nresults: {out.relative_to(ROOT)}")
    if not args.quick:
        text = (
            f"Generated by `bench/capacity.py` on {results['finished_at']} (UTC), {args.rounds} "
            f"rounds of {args.seconds:g} s per shape, {os.cpu_count()} vCPU; medians over "
            f"rounds:\n\n{table}"
        )
        write_section(DOC, "capacity", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
