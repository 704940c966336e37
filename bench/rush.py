"""A scripted rush against the whole system, with fault drills; docs/rush.md has the results.

    .venv/bin/python bench/rush.py                      # both modes, 200 customers, 3 min each
    .venv/bin/python bench/rush.py --all-drills --think 10  # every fault drill
    .venv/bin/python bench/rush.py --quick              # 1-minute smoke runs

It starts the system as `make run` does (bench/stack.py) on its own ports (8300-8301,
4800-4801) and database (`nudged_bench_rush`, dropped and recreated), with the app's AWS
endpoint behind a small TCP proxy that the outage drill takes down. k6 ramps to 200 customers
ordering a few products with small stock, each customer from its own address; a sampler
records stock, units in production, the event backlog and queue depths every second; the
operations queue is read as the operations team would. After the load it waits for the
pipeline to drain, then measures the fill rate, the time each product was sold out and the
stock left over, and checks from the database, the ops queue, the DLQ and the factory's own
log:

  oversell == 0, 5xx == 0 (outside a MySQL restart), lost events == 0, duplicate restocks == 0

With `--backorder-share` some customers (all: 1, half: 0.5) take a donut from the next batch
when the shelf is empty; after the batches have landed the bench reads from the database which
promises were kept, late or cancelled, and checks that none was made without production behind
it, cancelled without notice, lost or served twice.

It does all this once per replenishment mode (`--modes`) and share (`--backorder-share`), each
on a fresh stack, and prints one table with the runs side by side. It exits 1 if an invariant
fails (2 if the stack could not be started). Everything it starts is stopped on exit, Ctrl-C
included.
"""

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rush_report import (  # noqa: E402
    PREORDER_TARGETS,
    TARGETS,
    Sampler,
    event_rates,
    ops_unread,
    plot,
    preorders,
    rates,
    read_k6_csv,
    read_mails,
    replenishment,
)
from bench.rush_verify import hold_to_told, read_snapshot, verify  # noqa: E402
from bench.stack import (  # noqa: E402
    BIN,
    PY,
    REAL_AWS,
    Config,
    OpsReader,
    Stack,
    connect,
    cpu_spent,
    db_config,
    mysql_cpu,
    port_open,
    sqs_client,
    wait_for,
)

K6_SCRIPT = ROOT / "bench" / "k6" / "rush.js"
PAGES_SCRIPT = ROOT / "bench" / "k6" / "pages.js"
DEFAULT_SKUS = "CP-502101,CP-502102,CP-502103"
MODES = ("adaptive", "at_zero")
# k6's answers per order: kept for the checks, left out of the JSON.
PER_ORDER = ("timeline", "references", "ready_by_told")
MYSQL_GRACE = 2.0  # seconds after MySQL answers again that in-flight requests may still fail


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Rush the whole system with k6 and check its invariants.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=int, default=180, help="seconds of load, ramps included")
    p.add_argument("--ramp", type=int, default=30, help="seconds to ramp up to --vus")
    p.add_argument("--vus", type=int, default=200, help="concurrent customers at the plateau")
    p.add_argument(
        "--think", type=float, default=5.0, help="mean seconds between a customer's orders"
    )
    p.add_argument("--skus", default=DEFAULT_SKUS, help="products the customers order")
    p.add_argument("--stock", type=int, default=20, help="stock of each product at the start")
    p.add_argument("--restock-quantity", type=int, default=20, help="units per factory order")
    p.add_argument("--max-quantity", type=int, default=2, help="customers order 1..N units")
    p.add_argument(
        "--web-workers", type=int, default=os.cpu_count() or 2, help="gunicorn workers (make run's)"
    )
    p.add_argument(
        "--q-workers", type=int, default=7, help="django-q2 workers (five hold the loops)"
    )
    p.add_argument(
        "--factory-delay", type=float, default=10.0, help="seconds to the callback (make run's)"
    )
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="replenishment modes to run one after the other, each on a fresh stack",
    )
    p.add_argument(
        "--purchase-limit",
        type=int,
        default=0,
        help="PURCHASE_LIMIT: units per customer and product per window (0: no limit)",
    )
    p.add_argument(
        "--purchase-window", type=int, help="PURCHASE_LIMIT_WINDOW seconds (default: the app's)"
    )
    p.add_argument(
        "--backorder-share",
        default="0",
        help="share of customers who take one from the next batch when the shelf is empty "
        "(1: every one, 0.5: half, 0: none); several, comma-separated, run one after the other",
    )
    p.add_argument(
        "--emails",
        action="store_true",
        help="customers who take the next batch leave an email address; a mail sink keeps "
        "what the shop sends, and every cancellation must have its mail",
    )
    p.add_argument(
        "--rate-limit",
        default="off",
        help="ORDER_RATE_LIMIT per client address (one per customer), e.g. 20/s (off: none)",
    )
    drills = p.add_argument_group("fault drills")
    drills.add_argument("--aws-outage", action="store_true", help="AWS endpoint down mid-rush")
    drills.add_argument("--outage-seconds", type=int, default=30)
    drills.add_argument(
        "--kill-worker", action="store_true", help="SIGKILL the qcluster mid-batch, restart it"
    )
    drills.add_argument(
        "--factory-failures", action="store_true", help="the factory fails half its requests"
    )
    drills.add_argument(
        "--redrive-every",
        type=int,
        default=30,
        help="with --factory-failures: seconds between `redrive_dlq --all` (0: never)",
    )
    drills.add_argument("--mysql-restart", action="store_true", help="restart MySQL once")
    drills.add_argument("--all-drills", action="store_true", help="every drill above")
    p.add_argument(
        "--open-pages",
        type=int,
        default=100,
        help="storefront pages open during the rush, each polling GET /api/products/ every 5 s",
    )
    p.add_argument("--quick", action="store_true", help="a 60 s smoke run (15 s outage)")
    p.add_argument("--plot", type=Path, help="write the timeline plot (PNG) here")
    p.add_argument("--json", type=Path, help="write every number and the timelines here")
    p.add_argument("--workdir", type=Path, default=ROOT / "run" / "rush", help="logs and k6 data")
    p.add_argument(
        "--database-url",
        default="mysql://root@127.0.0.1:3306/nudged_bench_rush",
        help="dropped and recreated; its name must contain 'bench'",
    )
    p.add_argument(
        "--aws-endpoint",
        help="use this SNS/SQS endpoint instead of starting moto ('aws' = real AWS, no proxy)",
    )
    p.add_argument("--prefix", default="nudged-rush", help="prefix of topic and queue names")
    p.add_argument("--web-port", type=int, default=8300)
    p.add_argument("--factory-port", type=int, default=8301)
    p.add_argument("--moto-port", type=int, default=4800)
    p.add_argument("--proxy-port", type=int, default=4801)
    p.add_argument("--mail-port", type=int, default=4802, help="the mail sink's (with --emails)")
    p.add_argument("--drain-timeout", type=int, default=600, help="seconds to wait after load")
    p.add_argument("--pytest-wait", type=int, default=600, help="seconds to wait for test runs")
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the app's processes")
    args = p.parse_args(argv)
    if args.all_drills:
        args.aws_outage = args.kill_worker = args.factory_failures = args.mysql_restart = True
    if args.quick:
        args.duration, args.ramp, args.outage_seconds = 60, 15, 15
    if args.aws_outage and args.aws_endpoint == REAL_AWS:
        p.error("--aws-outage needs a proxy in front of the endpoint: not with --aws-endpoint aws")
    if args.vus < 1 or args.duration < args.ramp + 20:
        p.error("--duration must leave at least 20 s after --ramp")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES) or len(set(args.modes)) < len(args.modes):
        p.error(f"--modes: one or more of {', '.join(MODES)}, each once")
    if args.purchase_limit < 0:
        p.error("--purchase-limit must be 0 (no limit) or more")
    try:
        args.backorder_shares = [float(x) for x in args.backorder_share.split(",") if x.strip()]
    except ValueError:
        p.error("--backorder-share: numbers from 0 to 1, comma-separated")
    shares = args.backorder_shares
    if not shares or any(not 0 <= x <= 1 for x in shares) or len(set(shares)) < len(shares):
        p.error("--backorder-share: numbers from 0 to 1, comma-separated, each once")
    return args


def say(text: str) -> None:
    print(f"[rush {time.strftime('%H:%M:%S')}] {text}", flush=True)


def stack_config(args: argparse.Namespace, workdir: Path) -> Config:
    """The rush's system: make run's, with short timeouts so that failures show in minutes."""
    settings = {
        # Failed factory calls reach the DLQ, and lost callbacks are re-ordered, within a
        # few-minute run; never shorter than the factory takes.
        "SQS_VISIBILITY_TIMEOUT": "6",
        "SQS_MAX_RECEIVE_COUNT": "3",
        "SQS_WAIT_TIME": "2",
        # The local simulator answers at once; the visibility must outlast one call.
        "FACTORY_CONNECT_TIMEOUT": "1",
        "FACTORY_READ_TIMEOUT": "2",
        "FACTORY_CALLBACK_TIMEOUT": str(max(30, round(3 * args.factory_delay))),
        # Each customer is its own client address: k6's X-Forwarded-For, sent from this
        # machine, which stands for the load balancer.
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "PURCHASE_LIMIT": str(args.purchase_limit),
        "ORDER_RATE_LIMIT": args.rate_limit,
        "LOG_LEVEL": args.log_level,
    }
    if args.purchase_window is not None:
        settings["PURCHASE_LIMIT_WINDOW"] = str(args.purchase_window)
    if args.emails:
        # Mail goes to the bench's own sink (stack's default: nowhere).
        settings.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(args.mail_port),
        )
    return Config(
        workdir=workdir,
        database_url=args.database_url,
        web_port=args.web_port,
        factory_port=args.factory_port,
        moto_port=args.moto_port,
        proxy_port=None if args.aws_endpoint == REAL_AWS else args.proxy_port,
        web_workers=args.web_workers,
        q_workers=args.q_workers,
        factory_delay=args.factory_delay,
        factory_failure_rate=0.5 if args.factory_failures else 0.0,
        aws_endpoint=args.aws_endpoint,
        prefix=args.prefix,
        settings=settings,
    )


def cpu_share(spent: dict[str, float]) -> dict[str, float]:
    """Share of the machine's CPU time per part over the load (1.0 = every core)."""
    machine = max(1e-9, spent.pop("machine"))
    return {name: round(seconds / machine, 3) for name, seconds in spent.items()}


# --- drills ---------------------------------------------------------------------------------


def pytest_running() -> bool:
    return subprocess.run(["pgrep", "-f", "pytest"], capture_output=True).returncode == 0


def wait_for_no_pytest(limit: float) -> bool:
    deadline = time.monotonic() + limit
    announced = False
    while pytest_running():
        if time.monotonic() >= deadline:
            return False
        if not announced:
            say("a test run (pytest) uses this MySQL: waiting for it before the MySQL drill")
            announced = True
        time.sleep(5)
    return True


def restart_mysql(stack: Stack, wait_limit: float) -> dict[str, Any]:
    """Shut MySQL down and start it again; the load keeps going meanwhile."""
    if not wait_for_no_pytest(wait_limit):
        return {"skipped": "a test run kept using MySQL; not restarting it under someone's tests"}
    cfg = db_config(stack.config.database_url)
    admin = ["mysqladmin", f"-u{cfg['user']}", f"-h{cfg['host']}", f"-P{cfg['port']}"]
    if cfg["passwd"]:
        admin.append(f"-p{cfg['passwd']}")
    down = time.time()
    say("drill: shutting MySQL down")
    subprocess.run([*admin, "shutdown"], capture_output=True, timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (port_open(cfg["port"], cfg["host"]) or mysql_cpu()):
        time.sleep(0.2)
    stopped = time.time()
    daemon = ["start-stop-daemon", "--start", "--oknodo", "--background"]
    subprocess.run([*daemon, "--exec", "/usr/sbin/mariadbd"], capture_output=True, timeout=30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connect(stack.config.database_url).close()
            break
        except Exception:  # still starting
            time.sleep(0.2)
    else:
        raise RuntimeError("MySQL did not come back within 120 s after the restart drill")
    up = time.time()
    say(f"drill: MySQL back after {up - down:.1f} s (down for {up - stopped:.1f} s)")
    return {"down_at": down, "stopped_at": stopped, "up_at": up}


class Drills:
    """The fault drills of one run, each fired once at its offset from the start of the load."""

    def __init__(self, args: argparse.Namespace, stack: Stack, t0: float, sampler: Sampler) -> None:
        self.args = args
        self.stack = stack
        self.t0 = t0
        self.sampler = sampler
        self.windows: list[tuple[str, float, float]] = []
        self.outcomes: dict[str, Any] = {}
        d = args.duration
        plan: list[tuple[float, str]] = []
        if args.aws_outage:
            plan += [(0.25 * d, "aws_down"), (0.25 * d + args.outage_seconds, "aws_up")]
        if args.kill_worker:
            plan += [(0.5 * d, "kill_worker"), (0.5 * d + 5, "start_worker")]
        if args.mysql_restart:
            plan.append((0.68 * d, "mysql"))
        self.plan = sorted(plan)
        self.marks: dict[str, float] = {}
        self.next_redrive = t0 + args.redrive_every if args.factory_failures else None

    def tick(self) -> None:
        now = time.time()
        while self.plan and now >= self.t0 + self.plan[0][0]:
            _, action = self.plan.pop(0)
            getattr(self, action)()
            now = time.time()
        if self.next_redrive and self.args.redrive_every > 0 and now >= self.next_redrive:
            self.next_redrive = now + self.args.redrive_every
            if not self.stack.alive("redrive"):
                self.stack.stop("redrive")
                self.stack.spawn("redrive", [PY, "manage.py", "redrive_dlq", "--all"])
                redrives = self.outcomes.setdefault("factory_failures", {"redrives": 0})
                redrives["redrives"] += 1

    def aws_down(self) -> None:
        say(f"drill: AWS endpoint down for {self.args.outage_seconds} s")
        self.stack.aws_down()
        self.marks["aws_down"] = time.time()

    def aws_up(self) -> None:
        self.stack.aws_up()
        up = time.time()
        say("drill: AWS endpoint back")
        self.windows.append(("AWS down", self.marks["aws_down"], up))
        self.outcomes["aws_outage"] = {
            "from_s": round(self.marks["aws_down"] - self.t0, 1),
            "to_s": round(up - self.t0, 1),
        }

    def kill_worker(self) -> None:
        # Mid-batch: wait (briefly) for a depletion in flight in the restock queue.
        deadline = time.time() + 8
        while time.time() < deadline:
            if self.sampler.latest().get("queues", {}).get("restock", {}).get("in_flight"):
                break
            time.sleep(0.2)
        state = self.sampler.latest()
        say("drill: SIGKILL to the django-q2 cluster")
        self.stack.kill_worker()
        self.marks["killed"] = time.time()
        self.outcomes["kill_worker"] = {
            "at_s": round(self.marks["killed"] - self.t0, 1),
            "restock_in_flight": state.get("queues", {}).get("restock", {}).get("in_flight"),
            "backlog": state.get("backlog"),
        }
        # The successor drill fires 5 s after the planned kill; keep at least 5 s of absence.
        self.plan = sorted((max(at, self.marks["killed"] + 5 - self.t0), a) for at, a in self.plan)

    def start_worker(self) -> None:
        self.stack.start_worker()
        back = time.time()
        say("drill: django-q2 cluster restarted (setup_worker + qcluster)")
        self.windows.append(("worker killed", self.marks["killed"], back))
        self.outcomes["kill_worker"]["restarted_s"] = round(back - self.t0, 1)

    def mysql(self) -> None:
        remaining = self.t0 + self.args.duration - 15 - time.time()
        outcome = restart_mysql(self.stack, max(0.0, min(remaining, self.args.pytest_wait)))
        if "skipped" in outcome:
            say(f"drill: MySQL restart skipped: {outcome['skipped']}")
            self.outcomes["mysql_restart"] = outcome
            self.args.mysql_restart = False
            return
        self.windows.append(("MySQL restart", outcome["down_at"], outcome["up_at"]))
        self.outcomes["mysql_restart"] = {
            "from_s": round(outcome["down_at"] - self.t0, 1),
            "to_s": round(outcome["up_at"] - self.t0, 1),
        }

    def mysql_window(self) -> tuple[float, float] | None:
        for name, start, end in self.windows:
            if name == "MySQL restart":
                return start, end + MYSQL_GRACE
        return None

    def finish(self) -> None:
        """Restore what a drill took away if the load ended before its second half."""
        for _, action in self.plan:
            if action in ("aws_up", "start_worker"):
                getattr(self, action)()
        self.plan = []
        self.stack.stop("redrive", timeout=30)


# --- the run --------------------------------------------------------------------------------


def start_k6(
    args: argparse.Namespace, stack: Stack, csv_path: Path, summary: Path, *, share: float
) -> None:
    env = {
        "PATH": stack.env["PATH"],
        "BASE_URL": stack.base_url,
        "SKUS": args.skus,
        "VUS": str(args.vus),
        "RAMP_SECONDS": str(args.ramp),
        "HOLD_SECONDS": str(args.duration - args.ramp - 10),
        "DOWN_SECONDS": "10",
        "THINK_SECONDS": str(args.think),
        "MAX_QUANTITY": str(args.max_quantity),
        "BACKORDER_SHARE": f"{share:g}",
        "EMAILS": "1" if args.emails else "0",
        "SUMMARY_PATH": str(summary),
        "K6_CSV_TIME_FORMAT": "unix_milli",
        "K6_NO_USAGE_REPORT": "true",
    }
    k6 = [str(BIN / "k6"), "run", "--quiet", "--no-color", "--log-format=json"]
    out = ["--system-tags=status,error_code", f"--out=csv={csv_path}", str(K6_SCRIPT)]
    stack.spawn("k6", [*k6, *out], env=env)
    if args.open_pages:
        pages = {
            **env,
            "OPEN_PAGES": str(args.open_pages),
            "DURATION_SECONDS": str(args.duration),
            "SUMMARY_PATH": str(pages_summary(summary)),
        }
        stack.spawn("pages", [*k6, str(PAGES_SCRIPT)], env=pages)


def pages_summary(summary: Path) -> Path:
    return summary.with_name("k6-pages-summary.json")


def open_pages(pages: int, summary: Path) -> dict[str, Any]:
    """How many pages polled the product list, and how long k6 waited for the answers."""
    poll = json.loads(pages_summary(summary).read_text())["metrics"]["poll_ms"] if pages else None
    values = poll["values"] if poll else {}
    return {
        "pages": pages,
        "poll_p50_ms": round(values["med"], 1) if poll else None,
        "poll_p99_ms": round(values["p(99)"], 1) if poll else None,
    }


def unannounced(conn: Any, ops: OpsReader) -> dict[str, int]:
    """Events the ops queue has not had yet: outbox events by event_id, completed orders by
    their order.completed; refusals the products counted and no orders.refused reported."""
    cur = conn.cursor()
    cur.execute("SELECT JSON_VALUE(body, '$.event_id') FROM factory_bridge_outboxevent")
    outbox = {row[0] for row in cur.fetchall()}
    cur.execute("SELECT id FROM shop_order WHERE status = 'completed'")
    orders = {row[0] for row in cur.fetchall()}
    cur.execute("SELECT COUNT(*) FROM shop_order WHERE status = 'backordered'")
    waiting = int(cur.fetchone()[0])
    cur.execute("SELECT SUM(orders_refused + orders_limited) FROM inventory_product")
    counted = int(cur.fetchone()[0] or 0)
    cur.execute("SELECT body FROM factory_bridge_outboxevent WHERE event_type = 'orders.refused'")
    reported = sum(
        int(event.get("refused_orders", 0)) + int(event.get("limited_orders", 0))
        for event in (json.loads(body) for (body,) in cur.fetchall())
    )
    return {
        "events_not_in_ops": len(outbox - ops.ids()) + len(ops.missing(orders)),
        "refusals_not_reported": counted - reported,
        "orders_waiting": waiting,
    }


def drain(args: argparse.Namespace, sampler: Sampler, ops: OpsReader) -> dict[str, Any]:
    """Wait until every event is published and read, every depletion is settled and every
    waiting order served or cancelled (the batches in production have landed)."""
    started = time.time()
    stable = 0
    state: dict[str, Any] = {}
    conn = None
    while time.time() < started + args.drain_timeout:
        time.sleep(1)
        s = sampler.latest()
        try:
            conn = conn or connect(args.database_url)
            missing = unannounced(conn, ops)
        except Exception:  # MySQL may still be coming back from the drill
            conn = None
            continue
        queues, restocks = s.get("queues", {}), s.get("restocks", {})
        dlq = queues.get("dlq", {})
        state = {
            "backlog": s.get("backlog"),
            "restock_queue": sum(queues.get("restock", {}).values()) if queues else None,
            "open_restocks": restocks.get("pending", 0) + restocks.get("requested", 0),
            "dlq_not_recorded": (sum(dlq.values()) - s.get("dead_rows", 0)) if dlq else None,
            **missing,
        }
        stable = stable + 1 if all(v == 0 for v in state.values()) else 0
        if stable >= 3:
            break
    if conn is not None:
        conn.close()
    seconds = round(time.time() - started, 1)
    say(f"drain {'done' if stable >= 3 else 'TIMED OUT'} after {seconds} s: {state}")
    return {"settled": stable >= 3, "seconds": seconds, "last_state": state}


def factory_jobs(stack: Stack) -> list[dict[str, Any]] | None:
    try:
        return requests.get(f"{stack.factory_url}/api/manufactures", timeout=10).json()["requests"]
    except (requests.RequestException, ValueError, KeyError):
        return None


DRILL_KEYS = {
    "AWS down": "aws_outage",
    "worker killed": "kill_worker",
    "MySQL restart": "mysql_restart",
}


def recovery_windows(
    samples: list[dict[str, Any]], windows: list[tuple[str, float, float]], *, threshold: float
) -> list[tuple[str, float, float, float | None]]:
    """Each drill window with the moment the event backlog was back under `threshold`."""
    result = []
    for name, start, end in windows:
        until = next(
            (
                s["t"]
                for s in samples
                if s["t"] >= end and s.get("backlog", threshold + 1) <= threshold
            ),
            None,
        )
        result.append((name, start, end, until))
    return result


def backlog_peak(samples: list[dict[str, Any]], t0: float, windows: list) -> dict[str, Any]:
    def peak(rows: list[dict[str, Any]]) -> dict[str, Any]:
        best = max(rows, key=lambda s: s["backlog"], default=None)
        if best is None:
            return {"events": 0, "at_s": None}
        return {"events": best["backlog"], "at_s": round(best["t"] - t0, 1)}

    rows = [s for s in samples if "backlog" in s and s["t"] >= t0]
    calm = [s for s in rows if not any(a <= s["t"] <= b for _, a, b in windows)]
    return {"all": peak(rows), "outside_drills": peak(calm)}  # drills and their recovery


def sustained_peak(per_second: dict[int, int], *, window: int) -> float:
    """The busiest `window` seconds, per second: the relay marks a whole claim at once."""
    if not per_second:
        return 0.0
    first, last = min(per_second), max(per_second)
    best = max(
        sum(per_second.get(s, 0) for s in range(start, start + window))
        for start in range(first, last + 1)
    )
    return round(best / window, 1)


def limit_reading(result: dict[str, Any]) -> str:
    """Which part limited the run, read from the numbers (the summary prints them all)."""
    backlog = result["backlog_peak"]["outside_drills"]["events"]
    lag = result["relay"]["lag_outside_drills_s"]["p99"] or 0
    share = result["cpu_share"]
    busy = f"the machine was {1 - share.get('idle', 0):.0%} busy"
    if backlog > max(50, 2 * result["events_written_per_s"]) or lag > 5:
        return (
            f"the event pipeline: the backlog reached {backlog} events (lag p99 {lag} s) while "
            f"the app wrote {result['events_written_per_s']} events/s and the relay published up "
            f"to {result['relay_published_peak_per_s']}/s (best 10 s); the cluster took "
            f"{share.get('cluster', 0):.0%} of the CPU, moto {share.get('moto', 0):.0%}; {busy}"
        )
    settings, latency = result["settings"], result["http"]["latency_ms"]["p50"] or 0
    offered = settings["vus"] / (settings["think_s"] + latency / 1000)
    kept_up = f"the relay kept up (backlog peak {backlog} events, lag p99 {lag} s)"
    if result["rates"]["orders_per_s"] >= 0.85 * offered:
        return (
            f"the customers' own pace: {settings['vus']} customers pausing "
            f"{settings['think_s']:g} s between orders offer about {offered:.0f} orders/s and got "
            f"them (p50 {latency} ms); {kept_up}; {busy}"
        )
    return (
        f"the web tier: {kept_up}, so orders/s is what the web tier answered at p50 {latency} ms "
        f"with {settings['vus']} customers waiting for their answers; {busy}"
    )


def setup_products(stack: Stack, args: argparse.Namespace, mode: str, skus: tuple) -> None:
    """The rush's products in `mode` before their stock is set (no decision of another mode)."""
    conn = connect(args.database_url)
    try:
        conn.cursor().execute(
            "UPDATE inventory_product SET replenishment_mode = %s, restock_quantity = %s "
            "WHERE sku IN %s",
            (mode, args.restock_quantity, skus),
        )
    finally:
        conn.close()
    stack.manage(
        "shell",
        "-v0",
        "-c",
        "from inventory.services import set_stock\n"
        f"for sku in {list(skus)!r}:\n"
        f"    set_stock(sku=sku, quantity={args.stock}, note='rush')",
    )


def run_mode(
    args: argparse.Namespace, mode: str, workdir: Path, *, share: float = 0.0
) -> dict[str, Any] | None:
    """One rush on a fresh stack with the products in `mode` and `share` of the customers
    taking the next batch; None if it could not start."""
    args = copy.copy(args)  # a drill may switch itself off for this run only
    skus = tuple(s.strip() for s in args.skus.split(",") if s.strip())
    stack = Stack(stack_config(args, workdir))
    sampler: Sampler | None = None
    ops: OpsReader | None = None
    say(f"{mode}: logs and k6 data in {workdir}")
    try:
        if args.mysql_restart and not wait_for_no_pytest(args.pytest_wait):
            say("MySQL drill skipped: a test run has used MySQL for too long")
            args.mysql_restart = False
        mail_dir = workdir / "mail"
        if args.emails:
            sink = ["manage.py", "run_mail_sink", "--port", str(args.mail_port)]
            stack.spawn("mail", [PY, *sink, "--dir", str(mail_dir)])
        try:
            if args.emails:
                wait_for(lambda: port_open(args.mail_port), timeout=30, what="mail sink")
            say("starting moto, proxy, database, factory, qcluster and gunicorn")
            stack.start(setup=lambda: setup_products(stack, args, mode, skus))
        except Exception as exc:  # any failure to start is reported the same way
            say(f"could not start the system: {exc}; logs in {workdir}")
            return None
        sqs = sqs_client(stack.direct_endpoint, stack.env)
        queues = {
            label: sqs.get_queue_url(QueueName=stack.names[key])["QueueUrl"]
            for label, key in (
                ("restock", "SQS_RESTOCK_QUEUE"),
                ("dlq", "SQS_RESTOCK_DLQ"),
                ("ops", "SQS_OPS_QUEUE"),
            )
        }
        initial = read_snapshot(args.database_url, skus)
        initial_stock = {sku: p["stock"] for sku, p in initial.products.items()}
        if initial.orders:
            raise RuntimeError("the rush database is not fresh")
        # The ops queue's depth is not polled: counting a deep queue is slow on moto (every
        # call scans the whole queue); published-minus-read gives the same curve afterwards.
        sampled = {k: v for k, v in queues.items() if k != "ops"}
        sampler = Sampler(database_url=args.database_url, skus=skus, sqs=sqs, queues=sampled)
        ops = OpsReader(sqs=sqs, url=queues["ops"], threads=4)
        sampler.start()
        ops.start()

        csv_path, summary_path = workdir / "k6.csv.gz", workdir / "k6-summary.json"
        cpu_before = stack.cpu()
        load_before = os.getloadavg()[0]
        t0 = time.time()
        start_k6(args, stack, csv_path, summary_path, share=share)
        say(
            f"rush ({mode}): {args.vus} customers for {args.duration} s on {', '.join(skus)} "
            f"(stock {args.stock}, factory {args.factory_delay:g} s, "
            f"{share:.0%} take the next batch)"
        )
        drills = Drills(args, stack, t0, sampler)
        k6 = stack.procs["k6"]
        while k6.poll() is None:
            drills.tick()
            if time.time() > t0 + args.duration + 120:
                say("k6 overran its schedule; stopping it")
                break
            time.sleep(0.2)
        stack.stop("k6")
        if "pages" in stack.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stack.procs["pages"].wait(timeout=30)
            stack.stop("pages")
        drills.finish()
        load_end = time.time()
        at_load_end = sampler.latest()
        alive = {name: stack.alive(name) for name in ("web", "cluster", "factory", "proxy")}
        spent = cpu_spent(cpu_before, stack.cpu())
        load_after = os.getloadavg()[0]
        say(f"load done after {load_end - t0:.0f} s (k6 exit {k6.returncode}); draining")
        drained = drain(args, sampler, ops)
        ops.stop()
        sampler.stopping.set()
        sampler.join(timeout=5)

        dlq = sampler.latest().get("queues", {}).get("dlq")
        snap = read_snapshot(args.database_url, skus)
        http = read_k6_csv(csv_path, t0=t0, db_window=drills.mysql_window())
        hold_to_told(snap, http["ready_by_told"])
        with ops.lock:
            seen, ops_orders = dict(ops.seen), dict(ops.orders)
            by_order = {key: dict(kinds) for key, kinds in ops.by_order.items()}
            duplicates = ops.deliveries - len(ops.seen)
        read_at = time.time()
        events = event_rates(snap, t0=t0)
        hold = (args.ramp, args.duration - 10)
        written = sum(v for s, v in events["created"].items() if hold[0] <= s < hold[1])
        events_per_s = round(written / max(1, hold[1] - hold[0]), 1)
        # A drill's effect lasts until the event backlog is back to normal: that is its window
        # for "outside drills" figures, and the time it took is the drill's recovery time.
        windows = recovery_windows(
            sampler.samples, drills.windows, threshold=max(50, 2 * events_per_s)
        )
        for name, _, end, until in windows:
            drills.outcomes.setdefault(DRILL_KEYS[name], {})["backlog_recovered_after_s"] = (
                round(until - end, 1) if until is not None else None
            )
        extended = [(name, start, until or time.time()) for name, start, _, until in windows]
        verification = verify(
            snap,
            initial_stock=initial_stock,
            t0=t0,
            load_end=load_end,
            ops_seen=seen,
            ops_orders=ops_orders,
            ops_duplicates=duplicates,
            dlq_messages=sum(dlq.values()) if dlq else None,
            factory_jobs=factory_jobs(stack),
            http=http,
            drill_windows=extended,
            ops_by_order=by_order,
            samples=sampler.samples,
            mails=read_mails(mail_dir) if args.emails else None,
            end=read_at,
        )
        if not drained["settled"]:
            for verdict in verification.verdicts:
                if verdict.name == "lost events":
                    verdict.ok = False
                    verdict.detail = (
                        f"NOT DRAINED within {drained['seconds']} s, so not proven delivered: "
                        + verdict.detail
                    )
        result = {
            "mode": mode,
            "backorder_share": share,
            "settings": {
                "vus": args.vus,
                "duration_s": args.duration,
                "ramp_s": args.ramp,
                "think_s": args.think,
                "skus": skus,
                "stock": args.stock,
                "restock_quantity": args.restock_quantity,
                "web_workers": args.web_workers,
                "q_workers": args.q_workers,
                "factory_delay_s": args.factory_delay,
                "factory_failure_rate": stack.config.factory_failure_rate,
                "purchase_limit": args.purchase_limit,
                "purchase_window_s": args.purchase_window,
                "rate_limit": args.rate_limit,
                "backorder_share": share,
                "emails": args.emails,
            },
            "load_average_1m": {"before": load_before, "after": load_after},
            "replenishment": replenishment(
                http=http, facts=verification.facts, snap=snap, at_load_end=at_load_end
            ),
            "preorders": preorders(http=http, snap=snap, end=read_at),
            "http": {k: v for k, v in http.items() if k not in PER_ORDER},
            "open_pages": open_pages(args.open_pages, summary_path),
            "rates": rates(http, hold=hold),
            "events_written_per_s": events_per_s,
            "relay_published_peak_per_s": sustained_peak(events["published"], window=10),
            "relay": verification.facts["relay"],
            "backlog_peak": backlog_peak(sampler.samples, t0, extended),
            "task_queue_peak": max(
                (x.get("task_queue", 0) for x in sampler.samples if x["t"] >= t0), default=0
            ),
            "cpu_share": cpu_share(spent),
            "drain": drained,
            "drills": drills.outcomes,
            "drill_windows": [(name, start - t0, end - t0) for name, start, end in drills.windows],
            "alive_after_load": alive,
            "facts": verification.facts,
            "invariants": [vars(v) for v in verification.verdicts],
            "ok": verification.ok,
            "load_seconds": round(max(1.0, load_end - t0), 1),
            "workdir": str(workdir),
        }
        result["limit"] = limit_reading(result)
        result["timelines"] = {
            "http": http["timeline"],
            "samples": [{**s, "t": round(s["t"] - t0, 2)} for s in sampler.samples],
            "events": events,
            "ops_unread": ops_unread(events["published"], [at - t0 for at, _ in seen.values()]),
        }
        say(
            f"{mode}, {share:.0%} take the next batch: fill rate "
            f"{result['replenishment']['fill_rate']}, served "
            f"{result['preorders']['served_share']}, invariants "
            + ("hold" if verification.ok else "FAILED")
        )
        return result
    finally:
        for instrument in (ops, sampler):
            if instrument is not None:
                instrument.stopping.set()
        say("stopping everything the rush started")
        stack.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir / time.strftime("%Y%m%d-%H%M%S")

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    runs: dict[str, dict[str, Any]] = {}
    try:
        for mode in args.modes:
            for share in args.backorder_shares:
                label = run_label(mode, share, several=len(args.backorder_shares) > 1)
                result = run_mode(args, mode, workdir / label.replace(" ", "-"), share=share)
                if result is None:
                    return 2
                runs[label] = result
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    print_summary(runs, args)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(args.plot, runs=runs, title=_title(args))
        say(f"plot written to {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": " ".join([".venv/bin/python", "bench/rush.py", *(argv or sys.argv[1:])]),
            "machine": f"{os.cpu_count()} cores",
            "targets": TARGETS,
            "preorder_targets": PREORDER_TARGETS,
            "modes": runs,
        }
        args.json.write_text(json.dumps(report, default=str))
        say(f"results written to {args.json}")
    return 0 if all(r["ok"] for r in runs.values()) else 1


def run_label(mode: str, share: float, *, several: bool) -> str:
    """A run's column: its mode, and its share of customers taking the next batch unless
    every run has none."""
    if share == 0 and not several:
        return mode
    return f"{mode} {share:.0%} wait"


def _title(args: argparse.Namespace) -> str:
    drills = [
        name
        for name, on in (
            ("AWS outage", args.aws_outage),
            ("worker kill", args.kill_worker),
            ("factory 50% failures", args.factory_failures),
            ("MySQL restart", args.mysql_restart),
        )
        if on
    ]
    return f"Rush: {args.vus} customers, {args.duration} s, factory {args.factory_delay:g} s" + (
        f" — drills: {', '.join(drills)}" if drills else ""
    )


def _pct(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def _mark(value: float | None, target: float, *, at_most: bool = False) -> str:
    if value is None:
        return ""
    return " ok" if (value <= target if at_most else value >= target) else " MISS"


def _rows(r: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """One mode's column of the summary: (label, target, value)."""
    h, rep, f, t, pages = r["http"], r["replenishment"], r["facts"], TARGETS, r["open_pages"]
    left = f"<= {t['leftover_ratio']:.0%}"
    counted, restocks = rep["counted"], f["restocks"]
    pre, pt = r["preorders"], PREORDER_TARGETS
    rows = [
        ("orders asked", "", h["requests"]),
        ("  served (201)", "", h["served"]),
        ("  promised from production (201)", "", h["backordered"]),
        ("  out of stock (409)", "", h["out_of_stock"]),
        ("  purchase limit", "", h["purchase_limit"]),
        ("  throttled (429)", "", h["throttled"]),
        (
            "  5xx / no answer / other",
            "",
            f"{h['server_errors']} / {h['no_answer']} / {h['unexpected']}",
        ),
        (
            "fill rate (shelf / asked)",
            f">= {t['fill_rate']:g}",
            f"{rep['fill_rate']}{_mark(rep['fill_rate'], t['fill_rate'])}",
        ),
        (
            "sold out, worst product",
            f"<= {t['sold_out_share']:.0%}",
            _pct(rep["sold_out_worst"])
            + _mark(rep["sold_out_worst"], t["sold_out_share"], at_most=True),
        ),
        *(
            (
                f"  {sku}",
                "",
                f"{_pct(o['sold_out_share'])} ({o['times']}x, mean {o['mean_window_s']} s)",
            )
            for sku, o in f["sold_out"].items()
        ),
        (
            "served (shelf + kept) / asked",
            f">= {pt['served']:g}",
            f"{pre['served_share']}{_mark(pre['served_share'], pt['served'])}",
        ),
        (
            "promises broken / promises",
            f"<= {pt['promises_broken']:.0%}",
            f"{_pct(pre['broken_share'], 1)}"
            f"{_mark(pre['broken_share'], pt['promises_broken'], at_most=True)} "
            f"({pre['late']} late, {pre['cancelled']} cancelled, "
            f"{pre['overdue'] + pre['waiting']} waiting of {pre['promised']}; "
            f"{pre['moved']} moved)",
        ),
        (
            "promise / wait p50, s",
            "",
            f"{pre['promise_s']['p50']} / {pre['waited_s']['p50']} "
            f"(slack min {pre['slack_s']['min']})",
        ),
        ("units sold", "", rep["units_sold"]),
        ("left at load end / sold", left, _leftover(rep["left_at_load_end"])),
        ("left after drain / sold", left, _leftover(rep["left_after_drain"])),
        (
            "  with pre-orders",
            f"<= {pt['leftover_ratio']:.0%}",
            _pct(rep["left_at_load_end"]["ratio"])
            + _mark(rep["left_at_load_end"]["ratio"], pt["leftover_ratio"], at_most=True)
            + f" ({rep['left_at_load_end']['promised']} promised at load end)",
        ),
        (
            "refusals counted on products",
            "",
            f"{counted['orders_refused']} refused, {counted['orders_limited']} limited",
        ),
        ("stock.low decisions", "", _outcomes(f["decisions"])),
        ("stock.depleted", "", _outcomes(f["depletions"])),
        (
            "restocks",
            "",
            f"{restocks['fulfilled']} fulfilled, {restocks['factory_jobs_accepted']} jobs, "
            f"{restocks['reorders']} reorders",
        ),
        ("DLQ messages", "", f["dlq"]["messages_in_dlq"]),
        (
            "orders/s plateau (peak)",
            "",
            f"{r['rates']['orders_per_s']} ({r['rates']['peak_orders_per_s']})",
        ),
        ("latency p50 / p99 ms", "", f"{h['latency_ms']['p50']} / {h['latency_ms']['p99']}"),
        (
            "open pages, poll p50 / p99 ms",
            "",
            f"{pages['pages']}, {pages['poll_p50_ms']} / {pages['poll_p99_ms']}",
        ),
        (
            "events / backlog peak",
            "",
            f"{f['events']['events']} / {r['backlog_peak']['all']['events']}",
        ),
        ("relay lag p99 s", "", r["relay"]["lag_s"]["p99"]),
        ("drain s", "", f"{r['drain']['seconds']}{'' if r['drain']['settled'] else ' NOT DONE'}"),
        ("machine busy", "", _pct(1 - r["cpu_share"].get("idle", 0))),
    ]
    return rows + [
        (v["name"], "0", f"{'PASS' if v['ok'] else 'FAIL'} {v['value']}") for v in r["invariants"]
    ]


def print_summary(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """One table, a column per mode, the targets beside the numbers; then each run's details."""
    columns = [_rows(r) for r in runs.values()]
    widths = [
        max(len(m), *(len(str(v)) for _, _, v in c)) + 2 for m, c in zip(runs, columns, strict=True)
    ]
    header = f"{'':<34}{'target':<9}" + "".join(
        f"{m:<{w}}" for m, w in zip(runs, widths, strict=True)
    )
    rule = "=" * max(78, len(header))
    lines = ["", rule, _title(args), rule, header, "-" * len(rule)]
    for i, (label, target, _) in enumerate(columns[0]):
        values = "".join(f"{c[i][2]!s:<{w}}" for c, w in zip(columns, widths, strict=True))
        lines.append(f"{label:<34}{target:<9}{values}")
    for mode, r in runs.items():
        lines += ["-" * len(rule), f"{mode}: {r['workdir']}", f"  limited by    {r['limit']}"]
        lines.append(
            "  cpu share     "
            + ", ".join(
                f"{k} {v:.0%}" for k, v in sorted(r["cpu_share"].items(), key=lambda kv: -kv[1])
            )
        )
        dead = [name for name, up in r["alive_after_load"].items() if not up]
        if dead:
            lines.append(f"  DIED          {', '.join(dead)} exited during the load")
        for name, outcome in r["drills"].items():
            lines.append(f"  drill         {name}: {outcome}")
        for v in r["invariants"]:
            lines.append(f"  {'PASS' if v['ok'] else 'FAIL'}  {v['name']:<19} {v['detail']}")
    ok = all(r["ok"] for r in runs.values())
    lines += [rule, "ALL INVARIANTS HOLD" if ok else "INVARIANT FAILED"]
    print("\n".join(lines), flush=True)


def _leftover(left: dict[str, Any]) -> str:
    mark = _mark(left["ratio"], TARGETS["leftover_ratio"], at_most=True)
    return f"{_pct(left['ratio'])}{mark} ({left['on_hand']} + {left['in_production']} in prod.)"


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "0"


if __name__ == "__main__":
    sys.exit(main())
