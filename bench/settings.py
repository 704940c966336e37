"""Settings of the benchmarks: the local settings, the baseline's route, limits off.

Every process a benchmark starts (bench/stack.py) and bench/inprocess.py use this module.
BENCH_EVENTS_ENABLED (default on) switches the event pipeline for the events-off rounds of
bench/orders.py; the product's own settings never read EVENTS_ENABLED from the environment.
BENCH_LIMITS=production keeps the purchase and rate limits at production's defaults (those of
nudged.settings.base) for bench/orders.py's production-defaults rounds.
"""

from nudged.settings.local import *  # noqa: F403
from nudged.settings.local import env

ROOT_URLCONF = "bench.urls"
EVENTS_ENABLED = env.bool("BENCH_EVENTS_ENABLED", default=True)
if env("BENCH_LIMITS", default="off") != "production":
    # Off unless a benchmark asks for them (bench/rush.py --purchase-limit, --rate-limit).
    PURCHASE_LIMIT = env.int("PURCHASE_LIMIT", default=0)
    ORDER_RATE_LIMIT = env("ORDER_RATE_LIMIT", default="off")
