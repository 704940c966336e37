"""What one rate-limit check costs a web process: the limit store options side by side.

    .venv/bin/python bench/ratelimits.py         # 5 rounds of 2,000 checks per option

`database`: DRF's SimpleRateThrottle over Django's database cache, what production ran before;
`redis`: nudged.ratelimits over Redis (a Redis of its own, on --redis-port); `memory`:
nudged.ratelimits in the process's memory, the floor. Each check is a new client address, the
options alternate round by round; the medians of CPU and wall µs per check, as a Markdown table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import md_table, port_open, recreate_database, wait_for  # noqa: E402

OPTIONS = ("database", "redis", "memory")
UNITS = {"cpu_us": "cpu µs", "wall_us": "wall µs"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--checks", type=int, default=2000)
    p.add_argument("--redis-port", type=int, default=8190)
    p.add_argument("--database-url", default="mysql://root@127.0.0.1:3306/nudged_ratelimits_bench")
    args = p.parse_args()
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=args.database_url,
        CACHE_URL="dbcache://nudged_cache",
        LOG_LEVEL="WARNING",
    )
    recreate_database(args.database_url)
    redis = subprocess.Popen(
        ["redis-server", "--port", str(args.redis_port), "--save", "", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(args.redis_port), timeout=15, what="Redis")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        rows = measure(args, redis_url)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    cells = {u: [f"{statistics.median(rows[o][u]):.0f}" for o in OPTIONS] for u in UNITS}
    print(md_table(["per check", *OPTIONS], [[UNITS[u], *cells[u]] for u in UNITS]))
    return 0


def measure(args: argparse.Namespace, redis_url: str) -> dict[str, dict[str, list[float]]]:
    import django

    django.setup()
    from django.conf import settings
    from django.test import RequestFactory
    from rest_framework.throttling import SimpleRateThrottle

    from nudged import ratelimits

    class Throttle(SimpleRateThrottle):  # what shop.limits.OrderRateThrottle was
        rate = "20/s"

        def get_cache_key(self, request: Any, view: Any) -> str:
            return f"throttle_orders_{request.META['REMOTE_ADDR']}"

    settings.ORDER_RATE_LIMIT = "20/s"
    requests = RequestFactory()
    rows: dict[str, dict[str, list[float]]] = {o: {"cpu_us": [], "wall_us": []} for o in OPTIONS}
    for n in range(args.rounds):
        for option in OPTIONS[n % 3 :] + OPTIONS[: n % 3]:
            settings.CACHE_URL = redis_url if option == "redis" else "locmemcache://"
            keys = [f"10.{n}.{i >> 8 & 255}.{i & 255}" for i in range(args.checks)]
            posts = [requests.post("/", REMOTE_ADDR=key) for key in keys]
            cpu, wall = time.process_time(), time.perf_counter()
            if option == "database":
                for post in posts:
                    Throttle().allow_request(post, None)
            else:
                for key in keys:
                    ratelimits.check(scope="order", setting="ORDER_RATE_LIMIT", key=key)
            rows[option]["cpu_us"].append((time.process_time() - cpu) / args.checks * 1e6)
            rows[option]["wall_us"].append((time.perf_counter() - wall) / args.checks * 1e6)
    return rows


if __name__ == "__main__":
    sys.exit(main())
