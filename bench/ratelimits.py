"""What one rate-limit check costs a web process: the limit store options side by side.

    .venv/bin/python bench/ratelimits.py         # 5 rounds of 2,000 checks per option

`database`: DRF's SimpleRateThrottle over Django's database cache, what production ran before;
`redis`: nudged.core.ratelimits over a Redis of its own; `memory`: the same in the process.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402

OPTIONS = ("database", "redis", "memory")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--checks", type=int, default=2000)
    p.add_argument("--redis-port", type=int, default=8190)
    p.add_argument("--database-url", default="mysql://root@127.0.0.1:3306/nudged_ratelimits_bench")
    args = p.parse_args()
    limits = {"CACHE_URL": "dbcache://nudged_cache", "ORDER_RATE_LIMIT": "20/s"}
    stack.django_setup(args.database_url, **limits)
    from django.conf import settings
    from django.test import RequestFactory
    from rest_framework.throttling import SimpleRateThrottle

    from nudged.core import ratelimits

    class Throttle(SimpleRateThrottle):  # what shop.limits.OrderRateThrottle was
        rate = "20/s"

        def get_cache_key(self, request: object, view: object) -> str:
            return f"throttle_orders_{request.META['REMOTE_ADDR']}"

    port, factory = str(args.redis_port), RequestFactory()
    redis = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen(redis, stdout=subprocess.PIPE, text=True)
    stores = {"redis": f"redis://127.0.0.1:{port}/0"}
    us: dict[str, dict[str, list[float]]] = {o: {"cpu µs": [], "wall µs": []} for o in OPTIONS}
    try:
        next(line for line in server.stdout if "Ready to accept connections" in line)
        for n in range(args.rounds):
            for option in OPTIONS[n % 3 :] + OPTIONS[: n % 3]:  # each round starts with another
                settings.CACHE_URL = stores.get(option, "locmemcache://")
                keys = [f"10.{n}.{i >> 8 & 255}.{i & 255}" for i in range(args.checks)]
                posts = [factory.post("/", REMOTE_ADDR=key) for key in keys]
                cpu, wall = time.process_time(), time.perf_counter()
                if option == "database":
                    for post in posts:
                        Throttle().allow_request(post, None)
                else:
                    for key in keys:
                        ratelimits.check(scope="order", setting="ORDER_RATE_LIMIT", key=key)
                us[option]["cpu µs"].append((time.process_time() - cpu) / args.checks * 1e6)
                us[option]["wall µs"].append((time.perf_counter() - wall) / args.checks * 1e6)
    finally:
        server.terminate()
        server.wait(timeout=10)
    rows = [[unit, *(f"{median(us[o][unit]):.0f}" for o in OPTIONS)] for unit in us["redis"]]
    print(stack.md_table(["per check", *OPTIONS], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
