"""CPU per order request in one process: POST /api/orders/ against the baseline view.

    .venv/bin/python bench/inprocess.py                  # 3 interleaved rounds of 1000 each
    .venv/bin/python bench/inprocess.py --profile 40     # then cProfile of the API, top 40
    .venv/bin/python bench/inprocess.py --events off     # BENCH_EVENTS_ENABLED=0

No server, no load generator: Django's test client sends the requests through the whole
middleware stack, and the process's own CPU time is divided by the requests. It isolates
what the web side of an order costs, which bench/orders.py measures under load together
with MariaDB, the relay and moto. The database (its name must contain "bench") is dropped
and recreated; the relay loop's lease is kept fresh, as a running cluster keeps it, so that
commits queue no relay tasks, and nothing is published.
"""

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import recreate_database  # noqa: E402

SKU = "CP-502102"
PATHS = {"api": "/api/orders/", "baseline": "/bench/baseline/orders/"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", choices=["on", "off"], default="on")
    parser.add_argument("--profile", type=int, metavar="LINES", help="profile the API after")
    parser.add_argument(
        "--database-url",
        default="mysql://root@127.0.0.1:3306/nudged_bench_inprocess",
        help="dropped and recreated first",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    recreate_database(args.database_url)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DEBUG="0",
        DATABASE_URL=args.database_url,
        BENCH_EVENTS_ENABLED="1" if args.events == "on" else "0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="testserver",
        # Nothing is published; an endpoint nobody answers makes sure of it.
        AWS_ENDPOINT_URL="http://127.0.0.1:1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from factory_bridge.models import WorkerLease
    from factory_bridge.services.outbox import RELAY_LOOP
    from inventory.models import Product

    call_command("migrate", "--noinput", verbosity=0)
    call_command("load_catalog", verbosity=0)
    Product.objects.filter(sku=SKU).update(stock=10_000_000)
    client = Client()
    body = json.dumps({"sku": SKU, "quantity": 1})

    def send(path: str, count: int) -> None:
        WorkerLease.objects.update_or_create(
            name=RELAY_LOOP, defaults={"owner": "bench", "heartbeat_at": timezone.now()}
        )
        for _ in range(count):
            answer = client.post(path, body, content_type="application/json")
            if answer.status_code != 201:
                raise SystemExit(f"{path} answered {answer.status_code}: {answer.content!r}")

    for path in PATHS.values():
        send(path, 100)  # warm-up: connections, caches, lazy imports
    cpu: dict[str, list[float]] = {side: [] for side in PATHS}
    for _ in range(args.rounds):
        for side, path in PATHS.items():
            start = time.process_time()
            send(path, args.requests)
            cpu[side].append((time.process_time() - start) / args.requests * 1000)
    for side, values in cpu.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{side:9} {statistics.median(values):.2f} ms CPU per request (rounds: {rounds})")
    ratio = statistics.median(cpu["baseline"]) / statistics.median(cpu["api"])
    print(f"baseline ÷ api: {ratio:.2f} (events {args.events})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(send, PATHS["api"], args.requests)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
