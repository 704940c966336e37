"""CPU per order request in one process: POST /api/orders/ against the baseline view.

    .venv/bin/python bench/inprocess.py                  # 3 interleaved rounds of 1000 each
    .venv/bin/python bench/inprocess.py --profile 40     # then cProfile of the API, top 40
    .venv/bin/python bench/inprocess.py --events off     # BENCH_EVENTS_ENABLED=0
    .venv/bin/python bench/inprocess.py --limits production  # production's limits, Redis
    .venv/bin/python bench/inprocess.py --limits production --basket 3  # and 3-donut baskets

Django's test client sends each request, from an address of its own, through the middleware;
this process's CPU, MariaDB's and Redis's (and whatever else they serve) is divided by them.
"""

import argparse
import cProfile
import itertools
import json
import pstats
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402

SKU, API = "CP-502102", "/api/orders/"
SERVERS = {"mariadbd": ("mariadbd", "mysqld"), "redis-server": ("redis-server",)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="per side and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", choices=["on", "off"], default="on")
    p.add_argument("--limits", choices=["off", "production"], default="off")
    p.add_argument("--basket", type=int, default=0, metavar="N", help="N-donut baskets too")
    p.add_argument("--profile", type=int, metavar="LINES", help="profile the API after")
    p.add_argument("--database-url", default="mysql://root@127.0.0.1:3306/nudged_bench_inprocess")
    args = p.parse_args()
    env = {"BENCH_EVENTS_ENABLED": "1" if args.events == "on" else "0", "BENCH_LIMITS": args.limits}
    # An endpoint nobody answers: nothing is published.
    env |= {"ALLOWED_HOSTS": "testserver", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    stack.django_setup(args.database_url, **env)
    from django.test import Client
    from django.utils import timezone

    from inventory.models import Product
    from inventory.outbox import RELAY_LOOP
    from nudged.core.models import WorkerLease

    skus = [SKU, *Product.objects.exclude(sku=SKU).order_by("sku").values_list("sku", flat=True)]
    Product.objects.filter(sku__in=skus[: max(1, args.basket)]).update(stock=10_000_000)
    one = json.dumps({"sku": SKU, "quantity": 1})
    sides = {"api": (API, one), "baseline": ("/bench/baseline/orders/", one)}
    if args.basket:
        items = [{"sku": sku, "quantity": 1} for sku in skus[: args.basket]]
        sides["basket"] = (API, json.dumps({"items": items}))
    client = Client()
    addresses = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))

    def send(side: str, count: int) -> None:
        path, body = sides[side]
        for sent in range(count):
            if sent % 200 == 0:  # the relay loop's lease fresh: commits queue no relay task
                lease = {"owner": "bench", "heartbeat_at": timezone.now()}
                WorkerLease.objects.update_or_create(name=RELAY_LOOP, defaults=lease)
            answer = client.post(path, body, "application/json", REMOTE_ADDR=next(addresses))
            if answer.status_code != 201:
                raise SystemExit(f"{path} answered {answer.status_code}: {answer.content!r}")

    def spent() -> dict[str, float]:
        servers = {name: sum(stack.named_cpu(names).values()) for name, names in SERVERS.items()}
        return {"web": time.process_time()} | servers

    for side in sides:
        send(side, 100)  # warm-up: connections, caches, lazy imports
    cpu = {side: {part: [] for part in ("web", *SERVERS)} for side in sides}
    for _ in range(args.rounds):
        for side in sides:
            before = spent()
            send(side, args.requests)
            for part, seconds in spent().items():
                cpu[side][part].append(seconds - before[part])
    print(f"limits {args.limits}, events {args.events}; ms CPU per request, median of rounds")
    ms = {}
    for side, parts in cpu.items():
        ms[side] = {part: median(v) * 1000 / args.requests for part, v in parts.items()}
        line = "  ".join(f"{part} {value:.3f}" for part, value in ms[side].items())
        print(f"{side:9} total {sum(ms[side].values()):.3f}  {line}")
    print(f"baseline ÷ api, web CPU: {ms['baseline']['web'] / ms['api']['web']:.2f}")
    if args.basket:
        ratio = sum(ms["basket"].values()) / sum(ms["api"].values())
        print(f"{args.basket}-donut basket ÷ one donut, CPU per order: {ratio:.2f}")
    if args.profile:
        with cProfile.Profile() as profiler:
            send("api", args.requests)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
