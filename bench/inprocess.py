"""CPU per order request in one process: POST /api/orders/ against the baseline view.

    .venv/bin/python bench/inprocess.py                  # 3 interleaved rounds of 1000 each
    .venv/bin/python bench/inprocess.py --profile 40     # then cProfile of the API, top 40
    .venv/bin/python bench/inprocess.py --events off     # BENCH_EVENTS_ENABLED=0
    .venv/bin/python bench/inprocess.py --limits production  # production's limits, Redis
    .venv/bin/python bench/inprocess.py --limits production --basket 3  # and 3-donut baskets

No server, no load generator: Django's test client sends the requests through the whole
middleware stack; the process's own CPU, MariaDB's and Redis's (/proc: anything else they
serve meanwhile counts too) is divided by the requests. With `--limits production` every
request comes from its own address. The relay loop's lease is kept fresh, as a running
cluster keeps it, so that commits queue no relay tasks, and nothing is published. With
`--basket N`, a third side orders baskets of N donuts (one unit each, N products) through
the same endpoint, and its CPU per order is compared with the one-donut order's.
"""

import argparse
import cProfile
import itertools
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import django_setup, named_cpu  # noqa: E402

SKU = "CP-502102"
PATHS = {"api": "/api/orders/", "baseline": "/bench/baseline/orders/"}


def cpu_of(names: tuple[str, ...]) -> float:
    return sum(named_cpu(names).values())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", choices=["on", "off"], default="on")
    parser.add_argument("--limits", choices=["off", "production"], default="off")
    parser.add_argument("--basket", type=int, default=0, metavar="N", help="N-donut baskets too")
    parser.add_argument("--profile", type=int, metavar="LINES", help="profile the API after")
    parser.add_argument("--sort", default="cumulative", help="the profile's order (pstats)")
    parser.add_argument(
        "--database-url",
        default="mysql://root@127.0.0.1:3306/nudged_bench_inprocess",
        help="dropped and recreated first",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    django_setup(
        args.database_url,
        BENCH_EVENTS_ENABLED="1" if args.events == "on" else "0",
        BENCH_LIMITS=args.limits,
        ALLOWED_HOSTS="testserver",
        # Nothing is published; an endpoint nobody answers makes sure of it.
        AWS_ENDPOINT_URL="http://127.0.0.1:1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    from django.test import Client
    from django.utils import timezone

    from inventory.models import Product
    from inventory.outbox import RELAY_LOOP
    from nudged.core.models import WorkerLease

    skus = [SKU, *Product.objects.exclude(sku=SKU).order_by("sku").values_list("sku", flat=True)]
    Product.objects.filter(sku__in=skus[: max(1, args.basket)]).update(stock=10_000_000)
    client = Client()
    sides = {side: (path, {"sku": SKU, "quantity": 1}) for side, path in PATHS.items()}
    if args.basket:
        items = [{"sku": sku, "quantity": 1} for sku in skus[: args.basket]]
        sides["basket"] = (PATHS["api"], {"items": items})
    addresses = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))

    def send(side: str, count: int) -> None:
        path, body = sides[side][0], json.dumps(sides[side][1])
        for sent in range(count):
            if sent % 200 == 0:
                WorkerLease.objects.update_or_create(
                    name=RELAY_LOOP, defaults={"owner": "bench", "heartbeat_at": timezone.now()}
                )
            answer = client.post(
                path, body, content_type="application/json", REMOTE_ADDR=next(addresses)
            )
            if answer.status_code != 201:
                raise SystemExit(f"{path} answered {answer.status_code}: {answer.content!r}")

    for side in sides:
        send(side, 100)  # warm-up: connections, caches, lazy imports
    servers = {"mariadbd": ("mariadbd", "mysqld"), "redis-server": ("redis-server",)}
    cpu: dict[str, dict[str, list[float]]] = {
        side: {part: [] for part in ("web", *servers)} for side in sides
    }
    for _ in range(args.rounds):
        for side in sides:
            start = time.process_time()
            served = {name: cpu_of(names) for name, names in servers.items()}
            send(side, args.requests)
            cpu[side]["web"].append((time.process_time() - start) / args.requests * 1000)
            for name, names in servers.items():
                cpu[side][name].append((cpu_of(names) - served[name]) / args.requests * 1000)
    print(f"limits {args.limits}, events {args.events}; ms CPU per request, median of rounds")
    for side, parts in cpu.items():
        medians = {part: statistics.median(values) for part, values in parts.items()}
        line = "  ".join(f"{part} {value:.3f}" for part, value in medians.items())
        print(f"{side:9} total {sum(medians.values()):.3f}  {line}")
    ratio = statistics.median(cpu["baseline"]["web"]) / statistics.median(cpu["api"]["web"])
    print(f"baseline ÷ api, web CPU: {ratio:.2f}")
    if args.basket:
        total = {side: sum(statistics.median(v) for v in cpu[side].values()) for side in cpu}
        print(
            f"{args.basket}-donut basket ÷ one donut, CPU per order: "
            f"{total['basket'] / total['api']:.2f}"
        )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(send, "api", args.requests)
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
