"""Orders/s on one donut's row against three donuts', the web tier out of the way.

    .venv/bin/python bench/capacity.py            # 8/16/32/64 connections, 3 rounds of 10 s
                                                  # per shape (~6 min); rewrites docs/deploy.md
    .venv/bin/python bench/capacity.py --quick    # 8 and 32 connections, 1 round of 3 s; no doc

Each connection is a process of its own sending the order's own statement (shop.services),
with production's purchase limits on.
"""

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402

DOC = ROOT / "docs" / "deploy.md"
RATES = (500, 1_000, 5_000)
HOST_VCPU, HOST_BUSY = 4, 0.7  # a web host's cores, and how busy it may run in a rush
SHAPES = """| connections | 1 donut: orders/s | p50 ms | p99 ms | 3 donuts: orders/s | p50 ms \
| p99 ms | 1 ÷ 3 |
|---:|---:|---:|---:|---:|---:|---:|---:|"""
SHAPE = "| {} | {one[orders_per_s]:.0f} | {one[p50_ms]:.1f} | {one[p99_ms]:.1f} | \
{three[orders_per_s]:.0f} | {three[p50_ms]:.1f} | {three[p99_ms]:.1f} | {ratio:.2f} |"
CEILING = "One donut's ceiling: **{ceiling:.0f} orders/s** (at {best} connections). MariaDB CPU \
per order {mysql:.2f} ms (3 donuts, median), this script's {client:.2f} ms. Web CPU per order \
{web:.2f} ms ({source}): {per_core:.0f} orders/s per core."
RUSH = f"""| rush, orders/s | web cores busy | {HOST_VCPU}-vCPU web hosts at {HOST_BUSY:.0%} | \
MariaDB cores busy | one donut's row |
|---:|---:|---:|---:|---|"""


def orders(sku: str, begin: float, start: float, end: float) -> dict:
    """One connection's orders until `end`: the seconds of those that ended from `start` on,
    the count of all it placed and was refused, and its CPU."""
    from django.db import connection

    from shop.models import Order, new_reference
    from shop.services import quick_order

    took, count = [], {"placed": 0, "refused": 0}
    time.sleep(max(0.0, begin - time.monotonic()))
    with connection.cursor() as cursor:  # as Django opens it; MySQLdb's cursor reads the results
        while (began := time.monotonic()) < end:
            key = new_reference()
            who = {"customer": key, "address": key, "reference": new_reference()}
            cursor.execute(*quick_order(sku=sku, quantity=1, channel=Order.Channel.API, **who))
            # START TRANSACTION, UPDATE, INSERT … RETURNING (no row: refused), COMMIT
            cursor.cursor.nextset()
            cursor.cursor.nextset()
            placed = cursor.cursor.fetchone() is not None
            cursor.cursor.nextset()
            count["placed" if placed else "refused"] += 1
            if placed and (ended := time.monotonic()) >= start:
                took.append(ended - began)
    return count | {"took": took, "cpu": time.process_time()}  # a forked process's own


def run(*, skus: list[str], connections: int, seconds: float, warmup: float = 0) -> dict:
    """Orders from `connections` processes spread over `skus`, for warm-up + `seconds`."""
    from django.db import connections as django_connections

    django_connections.close_all()  # each process opens its own
    with multiprocessing.get_context("fork").Pool(connections) as pool:
        begin = time.monotonic() + 0.5 + connections * 0.02
        start, end = begin + warmup, begin + warmup + seconds
        answers = pool.starmap_async(
            orders, [(skus[n % len(skus)], begin, start, end) for n in range(connections)]
        )
        time.sleep(max(0.0, start - time.monotonic()))
        mysql = stack.named_cpu()
        time.sleep(max(0.0, end - time.monotonic()))
        mysql = sum(v - mysql.get(pid, 0.0) for pid, v in stack.named_cpu().items())
        answers = answers.get(timeout=60 + seconds)
    took = [t for a in answers for t in a["took"]]
    placed, refused = (sum(a[k] for a in answers) for k in ("placed", "refused"))
    return {
        "orders_per_s": round(len(took) / seconds, 1),
        **{f"p{q}_ms": round(1000 * (stack.percentile(took, q) or 0.0), 3) for q in (50, 99)},
        "mysql_ms_per_order": round(1000 * mysql / max(1, len(took)), 3),
        "client_ms_per_order": round(1000 * sum(a["cpu"] for a in answers) / max(1, placed), 3),
        "placed": placed,
        "refused": refused,
    }


def report(results: dict) -> str:
    web, (one, three) = results["web_ms_per_order"], results["medians"].values()
    best = max(one, key=lambda c: one[c]["orders_per_s"])
    at = {"best": best, "ceiling": one[best]["orders_per_s"], "web": web, "per_core": 1000 / web}
    at |= {k: median(m[f"{k}_ms_per_order"] for m in three.values()) for k in ("mysql", "client")}
    ratios = {c: one[c]["orders_per_s"] / three[c]["orders_per_s"] for c in one}
    lines = [SHAPES, *(SHAPE.format(c, one=one[c], three=three[c], ratio=ratios[c]) for c in one)]
    lines += ["", CEILING.format(source=results["web_source"], **at), "", RUSH]
    for rate in RATES:
        cores, ceiling, mysql = rate * web / 1000, at["ceiling"], rate * at["mysql"] / 1000
        row = "fits" if rate <= ceiling else f"over: {rate / ceiling:.1f} × its ceiling"
        hosts = math.ceil(cores / (HOST_VCPU * HOST_BUSY))
        lines.append(f"| {rate:,} | {cores:.1f} | {hosts} | {mysql:.1f} | {row} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="8 and 32 connections, 1 round of 3 s")
    p.add_argument("--web-ms", type=float, help="web CPU ms per order (default: orders.json's)")
    p.add_argument("--database-url", default="mysql://root@127.0.0.1:3306/nudged_capacity_bench")
    args = p.parse_args()
    connections, rounds, seconds = ([8, 32], 1, 3) if args.quick else ([8, 16, 32, 64], 3, 10)
    saved = ROOT / "bench" / "results" / "orders.json"
    if not (args.web_ms or saved.exists()):
        raise SystemExit("no bench/results/orders.json: run bench/orders.py or pass --web-ms")
    web = args.web_ms or json.loads(saved.read_text())["summary"]["medians"]["prod"]["cpu_web"]
    # Production's purchase limits: the statement reads each customer's and address's counts.
    stack.django_setup(args.database_url, BENCH_EVENTS_ENABLED="0", BENCH_LIMITS="production")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE inventory_product SET stock = 100000000 ORDER BY sku LIMIT 3")
        cursor.execute("SELECT sku FROM inventory_product ORDER BY sku LIMIT 3")
        skus = [sku for (sku,) in cursor.fetchall()]
    shapes, done = {"1 donut": skus[:1], "3 donuts": skus}, []
    for n, conns in ((n, c) for n in range(rounds) for c in connections):
        for shape in list(shapes)[:: 1 if n % 2 == 0 else -1]:
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE TABLE `shop_order`")
            r = run(skus=shapes[shape], connections=conns, seconds=seconds, warmup=2)
            if r["refused"]:
                raise SystemExit(f"{shape} sold out: raise the stock")
            stack.say(f"#{n + 1} {shape}, {conns} connections: {r}", "capacity")
            done.append({"shape": shape, "connections": conns, **r})

    def medians(shape: str, conns: int) -> dict[str, float]:
        mine = [r for r in done if (r["shape"], r["connections"]) == (shape, conns)]
        return {k: median(r[k] for r in mine) for k, v in mine[0].items() if isinstance(v, float)}

    finished = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    source = "--web-ms" if args.web_ms else saved.name
    results = {"finished_at": finished, "args": vars(args), "web_ms_per_order": web}
    results |= {"web_source": source, "nproc": os.cpu_count(), "rounds": done}
    results["medians"] = {s: {str(c): medians(s, c) for c in connections} for s in shapes}
    out = ROOT / "bench" / "results" / ("capacity-quick.json" if args.quick else "capacity.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{report(results)}\n\nresults: {out.relative_to(ROOT)}")
    if not args.quick:
        head = f"Generated by `bench/capacity.py` on {finished} (UTC), {rounds} rounds of "
        head += f"{seconds:g} s per shape, {os.cpu_count()} vCPU; medians over rounds:"
        stack.write_section(DOC, "capacity", f"{head}\n\n{report(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
