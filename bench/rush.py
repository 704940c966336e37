"""A scripted rush against the whole system, with fault drills; docs/rush.md has the results.

    .venv/bin/python bench/rush.py                      # both modes, 200 customers, 3 min each
    .venv/bin/python bench/rush.py --all-drills --think 10  # every fault drill
    .venv/bin/python bench/rush.py --quick              # 1-minute smoke runs

Once per replenishment mode (`--modes`) and share of customers taking the next batch
(`--backorder-share`), each on a fresh system (bench/stack.py) with moto behind a proxy the
outage drill takes down: k6 ramps up the customers, a sampler and the operations queue's
reader watch, the pipeline drains, and bench/rush_verify.py checks the invariants (oversell,
5xx, lost events, duplicate restocks, the promises). One table with the runs side by side;
exit 1 if an invariant fails, 2 if the system could not start.
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

from bench import rush_report as report  # noqa: E402
from bench import rush_verify as numbers  # noqa: E402
from bench.stack import (  # noqa: E402
    K6,
    PY,
    Config,
    OpsReader,
    Stack,
    connect,
    cpu_spent,
    db_config,
    named_cpu,
    port_open,
    say,
    wait_for,
)

MODES = ("adaptive", "at_zero")
# k6's answers per order: kept for the checks, left out of the JSON.
PER_ORDER = ("timeline", "references", "ready_by_told")
MYSQL_GRACE = 2.0  # seconds after MySQL answers again that in-flight requests may still fail
DRILL_KEYS = {"AWS down": "aws_outage", "worker killed": "kill_worker"}
DRILL_KEYS["MySQL restart"] = "mysql_restart"
# (flag, default, help); False: a switch.
FLAGS = [
    ("--duration", 180, "seconds of load, ramps included"),
    ("--ramp", 30, "seconds to ramp up to --vus"),
    ("--vus", 200, "concurrent customers at the plateau"),
    ("--think", 5.0, "mean seconds between a customer's orders"),
    ("--skus", "CP-502101,CP-502102,CP-502103", "products the customers order"),
    ("--stock", 20, "stock of each product at the start"),
    ("--restock-quantity", 20, "units per factory order"),
    ("--max-quantity", 2, "customers order 1..N units"),
    ("--web-workers", os.cpu_count() or 2, "gunicorn workers (make run's)"),
    ("--q-workers", 7, "django-q2 workers (five hold the loops)"),
    ("--factory-delay", 10.0, "seconds to the callback (make run's)"),
    ("--modes", ",".join(MODES), "replenishment modes, one after the other, each on a fresh stack"),
    ("--purchase-limit", 0, "PURCHASE_LIMIT: units per customer and product per window (0: none)"),
    ("--purchase-window", None, "PURCHASE_LIMIT_WINDOW seconds (default: the app's)"),
    (
        "--backorder-share",
        "0",
        "share of customers who take one from the next batch when the shelf is empty (1: every "
        "one, 0.5: half, 0: none); several, comma-separated, run one after the other",
    ),
    (
        "--basket-share",
        0.0,
        "share of customers who order a basket of 1 to 3 kinds at once (all or nothing)",
    ),
    (
        "--emails",
        False,
        "customers who take the next batch leave an email address; a mail sink keeps what the "
        "shop sends, and every cancellation must have its mail",
    ),
    ("--rate-limit", "off", "ORDER_RATE_LIMIT per client address (one per customer), e.g. 20/s"),
    ("--open-pages", 100, "storefront pages open, each polling GET /api/products/ every 5 s"),
    ("--quick", False, "a 60 s smoke run (15 s outage)"),
    ("--plot", "", "write the timeline plot (PNG) here"),
    ("--json", "", "write every number and the timelines here"),
    ("--workdir", str(ROOT / "run" / "rush"), "logs and k6 data"),
    ("--database-url", "mysql://root@127.0.0.1:3306/nudged_bench_rush", "dropped and recreated"),
    ("--web-port", 8300, "gunicorn's"),
    ("--factory-port", 8301, "the factory simulator's"),
    ("--moto-port", 4800, "moto's"),
    ("--proxy-port", 4801, "the proxy's in front of moto"),
    ("--mail-port", 4802, "the mail sink's (with --emails)"),
    ("--drain-timeout", 600, "seconds to wait after load"),
    ("--pytest-wait", 600, "seconds to wait for test runs"),
    ("--log-level", "INFO", "LOG_LEVEL of the app's processes"),
    ("--aws-outage", False, "drill: AWS endpoint down mid-rush"),
    ("--outage-seconds", 30, "drill: seconds of the outage"),
    ("--kill-worker", False, "drill: SIGKILL the qcluster mid-batch, restart it"),
    ("--factory-failures", False, "drill: the factory fails half its requests"),
    ("--redrive-every", 30, "with --factory-failures: seconds between `redrive_dlq --all`"),
    ("--mysql-restart", False, "drill: restart MySQL once"),
    ("--all-drills", False, "every drill above"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Rush the whole system with k6 and check its invariants.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, default, text in FLAGS:
        if default is False:
            p.add_argument(flag, action="store_true", help=text)
        else:
            p.add_argument(
                flag, type=int if default is None else type(default), default=default, help=text
            )
    args = p.parse_args(argv)
    if args.all_drills:
        args.aws_outage = args.kill_worker = args.factory_failures = args.mysql_restart = True
    if args.quick:
        args.duration, args.ramp, args.outage_seconds = 60, 15, 15
    if args.vus < 1 or args.duration < args.ramp + 20:
        p.error("--duration must leave at least 20 s after --ramp")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES) or len(set(args.modes)) < len(args.modes):
        p.error(f"--modes: one or more of {', '.join(MODES)}, each once")
    if args.purchase_limit < 0:
        p.error("--purchase-limit must be 0 (no limit) or more")
    if not 0 <= args.basket_share <= 1:
        p.error("--basket-share: a number from 0 to 1")
    try:
        shares = [float(x) for x in args.backorder_share.split(",") if x.strip()]
    except ValueError:
        shares = []
    if not shares or any(not 0 <= x <= 1 for x in shares) or len(set(shares)) < len(shares):
        p.error("--backorder-share: numbers from 0 to 1, comma-separated, each once")
    args.backorder_shares = shares
    return args


def stack_config(args: argparse.Namespace, workdir: Path) -> Config:
    """make run's system, with short timeouts so that failures show within minutes."""
    settings = {
        # Failed factory calls reach the DLQ and lost callbacks are re-ordered within a run,
        # never sooner than the factory takes; the visibility outlasts one factory call.
        "SQS_VISIBILITY_TIMEOUT": "6",
        "SQS_MAX_RECEIVE_COUNT": "3",
        "SQS_WAIT_TIME": "2",
        "FACTORY_CONNECT_TIMEOUT": "1",
        "FACTORY_READ_TIMEOUT": "2",
        "FACTORY_CALLBACK_TIMEOUT": str(max(30, round(3 * args.factory_delay))),
        # Each customer its own address: k6 on this machine stands for the load balancer.
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "PURCHASE_LIMIT": str(args.purchase_limit),
        "ORDER_RATE_LIMIT": args.rate_limit,
        "LOG_LEVEL": args.log_level,
    }
    if args.purchase_window is not None:
        settings["PURCHASE_LIMIT_WINDOW"] = str(args.purchase_window)
    return Config(
        workdir=workdir,
        database_url=args.database_url,
        web_port=args.web_port,
        factory_port=args.factory_port,
        moto_port=args.moto_port,
        proxy_port=args.proxy_port,
        web_workers=args.web_workers,
        q_workers=args.q_workers,
        factory_delay=args.factory_delay,
        factory_failure_rate=0.5 if args.factory_failures else 0.0,
        mail_port=args.mail_port if args.emails else None,  # the rush's own mail sink
        settings=settings,
    )


def no_pytest(limit: float) -> bool:
    """Whether no test run uses this MySQL, waiting up to `limit` seconds for one to end."""
    deadline = time.monotonic() + limit
    while subprocess.run(["pgrep", "-f", "pytest"], capture_output=True).returncode == 0:
        if time.monotonic() >= deadline:
            return False
        say("a test run (pytest) uses this MySQL: waiting for it before the MySQL drill", "rush")
        time.sleep(5)
    return True


class Drills:
    """The fault drills of one run, each fired once at its offset from the start of the load;
    `windows` holds (name, from, to) of each, `outcomes` what it found."""

    def __init__(self, args: argparse.Namespace, stack: Stack, t0: float, sampler: Any) -> None:
        self.args, self.stack, self.t0, self.sampler = args, stack, t0, sampler
        self.windows: list[tuple[str, float, float]] = []
        self.outcomes: dict[str, Any] = {}
        self.since: dict[str, float] = {}
        d, plan = args.duration, []
        if args.aws_outage:
            plan += [(0.25 * d, "aws_down"), (0.25 * d + args.outage_seconds, "aws_up")]
        if args.kill_worker:
            plan += [(0.5 * d, "kill_worker"), (0.5 * d + 5, "start_worker")]
        if args.mysql_restart:
            plan.append((0.68 * d, "mysql"))
        self.plan = sorted(plan)
        self.next_redrive = t0 + args.redrive_every if args.factory_failures else None

    def tick(self) -> None:
        while self.plan and time.time() >= self.t0 + self.plan[0][0]:
            getattr(self, self.plan.pop(0)[1])()
        if self.next_redrive and self.args.redrive_every > 0 and time.time() >= self.next_redrive:
            self.next_redrive = time.time() + self.args.redrive_every
            if not self.stack.alive("redrive"):
                self.stack.stop("redrive")
                self.stack.spawn("redrive", [PY, "manage.py", "redrive_dlq", "--all"])
                redrives = self.outcomes.setdefault("factory_failures", {"redrives": 0})
                redrives["redrives"] += 1

    def ended(self, key: str, name: str, **outcome: Any) -> None:
        start, end = self.since.pop(key), time.time()
        self.windows.append((name, start, end))
        at = {"from_s": round(start - self.t0, 1), "to_s": round(end - self.t0, 1)}
        self.outcomes[key] = self.outcomes.get(key, {}) | at | outcome
        say(f"drill: {name} over after {end - start:.1f} s", "rush")

    def aws_down(self) -> None:
        say(f"drill: AWS endpoint down for {self.args.outage_seconds} s", "rush")
        self.stack.aws(up=False)
        self.since["aws_outage"] = time.time()

    def aws_up(self) -> None:
        self.stack.aws(up=True)
        self.ended("aws_outage", "AWS down")

    def kill_worker(self) -> None:
        def in_flight() -> Any:  # mid-batch: a depletion in flight in the restock queue
            return self.sampler.latest().get("queues", {}).get("restock", {}).get("in_flight")

        with contextlib.suppress(RuntimeError):
            wait_for(in_flight, timeout=8, what="a depletion in flight")
        backlog = self.sampler.latest().get("backlog")
        say("drill: SIGKILL to the django-q2 cluster", "rush")
        self.stack.stop("cluster", sig=signal.SIGKILL, timeout=5)
        killed = self.since["kill_worker"] = time.time()
        self.outcomes["kill_worker"] = {"restock_in_flight": in_flight(), "backlog": backlog}
        # The restart comes 5 s after the planned kill: keep at least 5 s of absence.
        self.plan = sorted((max(at, killed + 5 - self.t0), a) for at, a in self.plan)

    def start_worker(self) -> None:
        self.stack.start_worker()
        self.ended("kill_worker", "worker killed")

    def mysql(self) -> None:
        """Shut MySQL down and start it again while the load goes on."""
        remaining = self.t0 + self.args.duration - 15 - time.time()
        if not no_pytest(max(0.0, min(remaining, self.args.pytest_wait))):
            say("drill: MySQL restart skipped: a test run kept using MySQL", "rush")
            self.outcomes["mysql_restart"] = {"skipped": "a test run kept using MySQL"}
            self.args.mysql_restart = False
            return
        cfg, url = db_config(self.args.database_url), self.args.database_url
        admin = ["mysqladmin", f"-u{cfg['user']}", f"-h{cfg['host']}", f"-P{cfg['port']}"]
        admin += [f"-p{cfg['passwd']}"] if cfg["passwd"] else []
        self.since["mysql_restart"] = time.time()
        say("drill: shutting MySQL down", "rush")
        subprocess.run([*admin, "shutdown"], capture_output=True, timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (port_open(cfg["port"], cfg["host"]) or named_cpu()):
            time.sleep(0.2)
        daemon = ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec"]
        subprocess.run([*daemon, "/usr/sbin/mariadbd"], capture_output=True, timeout=30)

        def back() -> bool:
            connect(url).close()
            return True

        wait_for(back, timeout=120, what="MySQL after the drill")
        self.ended("mysql_restart", "MySQL restart")

    def mysql_window(self) -> tuple[float, float] | None:
        """The restart, and the moments after it when requests in flight may still fail."""
        return next(
            ((a, b + MYSQL_GRACE) for n, a, b in self.windows if n == "MySQL restart"), None
        )

    def finish(self) -> None:
        """Restore what a drill took away if the load ended before its second half."""
        for _, action in self.plan:
            if action in ("aws_up", "start_worker"):
                getattr(self, action)()
        self.plan = []
        self.stack.stop("redrive", timeout=30)


def start_k6(args: argparse.Namespace, stack: Stack, workdir: Path, share: float) -> None:
    env = {"PATH": stack.env["PATH"], "BASE_URL": stack.base_url, "SKUS": args.skus}
    env |= {"VUS": str(args.vus), "RAMP_SECONDS": str(args.ramp), "DOWN_SECONDS": "10"}
    env |= {"HOLD_SECONDS": str(args.duration - args.ramp - 10), "THINK_SECONDS": str(args.think)}
    env |= {"MAX_QUANTITY": str(args.max_quantity), "BACKORDER_SHARE": f"{share:g}"}
    env |= {"BASKET_SHARE": f"{args.basket_share:g}", "EMAILS": "1" if args.emails else "0"}
    env |= {"SUMMARY_PATH": str(workdir / "k6-summary.json"), "K6_NO_USAGE_REPORT": "true"}
    out = ["--system-tags=status,error_code", f"--out=csv={workdir / 'k6.csv.gz'}"]
    env["K6_CSV_TIME_FORMAT"] = "unix_milli"
    stack.spawn("k6", [*K6, "--log-format=json", *out, "bench/k6/rush.js"], env=env)
    if args.open_pages:
        env |= {"OPEN_PAGES": str(args.open_pages), "DURATION_SECONDS": str(args.duration)}
        env["SUMMARY_PATH"] = str(workdir / "k6-pages-summary.json")
        stack.spawn("pages", [*K6, "--log-format=json", "bench/k6/pages.js"], env=env)


def open_pages(pages: int, workdir: Path) -> dict[str, Any]:
    """How many pages polled the product list, and how long k6 waited for the answers."""
    if not pages:
        return {"pages": 0, "poll_p50_ms": None, "poll_p99_ms": None}
    summary = json.loads((workdir / "k6-pages-summary.json").read_text())
    values = summary["metrics"]["poll_ms"]["values"]
    return {
        "pages": pages,
        "poll_p50_ms": round(values["med"], 1),
        "poll_p99_ms": round(values["p(99)"], 1),
    }


def unannounced(conn: Any, ops: OpsReader) -> dict[str, int]:
    """What the ops queue has not had yet: outbox events by event_id, completed orders by their
    order.completed, and refusals counted on products that no orders.refused reported."""
    cur = conn.cursor()

    def rows(sql: str) -> list[Any]:
        cur.execute(sql)
        return [row[0] for row in cur.fetchall()]

    outbox = set(rows("SELECT JSON_VALUE(body, '$.event_id') FROM factory_bridge_outboxevent"))
    orders = set(rows("SELECT id FROM shop_order WHERE status = 'completed'"))
    [waiting] = rows("SELECT COUNT(*) FROM shop_order WHERE status = 'backordered'")
    [counted] = rows("SELECT SUM(orders_refused + orders_limited) FROM inventory_product")
    refused = "SELECT body FROM factory_bridge_outboxevent WHERE event_type = 'orders.refused'"
    reported = sum(
        int(e.get("refused_orders", 0)) + int(e.get("limited_orders", 0))
        for e in map(json.loads, rows(refused))
    )
    return {
        "events_not_in_ops": len(outbox - ops.ids()) + len(ops.missing(orders)),
        "refusals_not_reported": int(counted or 0) - reported,
        "orders_waiting": int(waiting),
    }


def drain(args: argparse.Namespace, sampler: Any, ops: OpsReader) -> dict[str, Any]:
    """Wait until every event is published and read, every depletion settled and every waiting
    order served or cancelled: three seconds in a row with nothing left."""
    started, stable, state, conn = time.time(), 0, {}, None
    while time.time() < started + args.drain_timeout and stable < 3:
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
    if conn is not None:
        conn.close()
    seconds = round(time.time() - started, 1)
    say(f"drain {'done' if stable >= 3 else 'TIMED OUT'} after {seconds} s: {state}", "rush")
    return {"settled": stable >= 3, "seconds": seconds, "last_state": state}


def factory_jobs(stack: Stack) -> list[dict[str, Any]] | None:
    try:
        return requests.get(f"{stack.factory_url}/api/manufactures", timeout=10).json()["requests"]
    except (requests.RequestException, ValueError, KeyError):
        return None


def setup_products(stack: Stack, args: argparse.Namespace, mode: str, skus: tuple) -> None:
    """The rush's products in `mode` before their stock is set (no decision of another mode)."""
    conn = connect(args.database_url)
    with contextlib.closing(conn), conn.cursor() as cur:
        sql = "UPDATE inventory_product SET replenishment_mode = %s, restock_quantity = %s"
        cur.execute(f"{sql} WHERE sku IN %s", (mode, args.restock_quantity, skus))
    code = "from inventory.services import set_stock\nfor sku in {!r}:\n"
    code += "    set_stock(sku=sku, quantity={}, note='rush')"
    stack.manage("shell", "-v0", "-c", code.format(list(skus), args.stock))


def run_mode(args: argparse.Namespace, mode: str, workdir: Path, *, share: float) -> dict | None:
    """One rush on a fresh stack with the products in `mode` and `share` of the customers
    taking the next batch; None if it could not start."""
    args = copy.copy(args)  # a drill may switch itself off for this run only
    skus = tuple(s.strip() for s in args.skus.split(",") if s.strip())
    stack = Stack(stack_config(args, workdir))
    sampler: report.Sampler | None = None
    ops: OpsReader | None = None
    say(f"{mode}: logs and k6 data in {workdir}", "rush")
    try:
        if args.mysql_restart and not no_pytest(args.pytest_wait):
            say("MySQL drill skipped: a test run has used MySQL for too long", "rush")
            args.mysql_restart = False
        try:
            say("starting moto, proxy, database, factory, qcluster and gunicorn", "rush")
            stack.start(setup=lambda: setup_products(stack, args, mode, skus))
        except Exception as exc:  # any failure to start is reported the same way
            say(f"could not start the system: {exc}; logs in {workdir}", "rush")
            return None
        stack.use_settings()
        sqs = stack.sqs()
        initial = numbers.read_snapshot(args.database_url, skus)
        if initial.orders:
            raise RuntimeError("the rush database is not fresh")
        # The ops queue's depth is not polled: counting a deep queue is slow on moto, and
        # published minus read gives the same curve afterwards.
        queues = {"restock": "SQS_RESTOCK_QUEUE", "dlq": "SQS_RESTOCK_DLQ"}
        queues = {label: stack.queue_url(sqs, key) for label, key in queues.items()}
        sampler = report.Sampler(database_url=args.database_url, skus=skus, sqs=sqs, queues=queues)
        ops = OpsReader(sqs=sqs, url=stack.queue_url(sqs, "SQS_OPS_QUEUE"), threads=4)
        sampler.start()

        cpu_before, t0 = stack.cpu(), time.time()
        start_k6(args, stack, workdir, share)
        say(
            f"rush ({mode}): {args.vus} customers for {args.duration} s on {', '.join(skus)} "
            f"(stock {args.stock}, factory {args.factory_delay:g} s, {share:.0%} take the next "
            "batch)",
            "rush",
        )
        drills = Drills(args, stack, t0, sampler)
        k6 = stack.procs["k6"]
        while k6.poll() is None and time.time() < t0 + args.duration + 120:
            drills.tick()
            time.sleep(0.2)
        stack.stop("k6")
        with contextlib.suppress(subprocess.TimeoutExpired, KeyError):
            stack.procs["pages"].wait(timeout=30)
        stack.stop("pages")
        drills.finish()
        load_end, at_load_end = time.time(), sampler.latest()
        alive = {name: stack.alive(name) for name in ("web", "cluster", "factory", "proxy")}
        spent = cpu_spent(cpu_before, stack.cpu())
        say(f"load done after {load_end - t0:.0f} s (k6 exit {k6.returncode}); draining", "rush")
        drained = drain(args, sampler, ops)
        ops.stop()
        sampler.stopping.set()
        sampler.join(timeout=5)

        dlq = sampler.latest().get("queues", {}).get("dlq")
        snap = numbers.read_snapshot(args.database_url, skus)
        http = numbers.read_k6_csv(workdir / "k6.csv.gz", t0=t0, db_window=drills.mysql_window())
        numbers.hold_to_told(snap, http["ready_by_told"])
        with ops.lock:
            seen, ops_orders = dict(ops.seen), dict(ops.orders)
            by_order = {key: dict(kinds) for key, kinds in ops.by_order.items()}
            duplicates = ops.deliveries - len(ops.seen)
        read_at, events = time.time(), numbers.event_rates(snap, t0=t0)
        hold = (args.ramp, args.duration - 10)
        written = sum(v for s, v in events["created"].items() if hold[0] <= s < hold[1])
        events_per_s = round(written / max(1, hold[1] - hold[0]), 1)
        # A drill lasts until the event backlog is back to normal: its window for the "outside
        # drills" figures; the time that took is its recovery time.
        windows = numbers.recovery_windows(
            sampler.samples, drills.windows, threshold=max(50, 2 * events_per_s)
        )
        for name, _, end, back in windows:
            recovered = round(back - end, 1) if back is not None else None
            drills.outcomes.setdefault(DRILL_KEYS[name], {})["backlog_recovered_after_s"] = (
                recovered
            )
        extended = [(name, start, back or time.time()) for name, start, _, back in windows]
        verification = numbers.verify(
            snap,
            initial_stock={sku: p["stock"] for sku, p in initial.products.items()},
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
            mails=numbers.read_mails(workdir / "mail") if args.emails else None,
            end=read_at,
            undrained_after=None if drained["settled"] else drained["seconds"],
        )
        names = ("vus", "stock", "restock_quantity", "web_workers", "q_workers", "purchase_limit")
        settings = {name: getattr(args, name) for name in (*names, "rate_limit", "emails")}
        settings |= {"skus": skus, "duration_s": args.duration, "ramp_s": args.ramp}
        settings |= {"think_s": args.think, "factory_delay_s": args.factory_delay}
        settings |= {"factory_failure_rate": stack.config.factory_failure_rate}
        settings |= {"purchase_window_s": args.purchase_window, "backorder_share": share}
        result = {
            "mode": mode,
            "backorder_share": share,
            "settings": settings,
            "replenishment": numbers.replenishment(
                http=http, facts=verification.facts, snap=snap, at_load_end=at_load_end
            ),
            "preorders": numbers.preorders(http=http, snap=snap, end=read_at),
            "http": {k: v for k, v in http.items() if k not in PER_ORDER},
            "open_pages": open_pages(args.open_pages, workdir),
            "rates": numbers.rates(http, hold=hold),
            "events_written_per_s": events_per_s,
            "relay": verification.facts["relay"],
            "backlog_peak": numbers.backlog_peak(sampler.samples, t0, extended),
            # Share of the machine's CPU time per part over the load (1.0 = every core).
            "cpu_share": {k: round(v / max(1e-9, spent["machine"]), 3) for k, v in spent.items()},
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
        del result["cpu_share"]["machine"]
        result["timelines"] = {
            "http": http["timeline"],
            "samples": [{**s, "t": round(s["t"] - t0, 2)} for s in sampler.samples],
            "events": events,
            "ops_unread": numbers.ops_unread(
                events["published"], [at - t0 for at, _ in seen.values()]
            ),
        }
        say(
            f"{mode}, {share:.0%} take the next batch: fill rate "
            f"{result['replenishment']['fill_rate']}, served {result['preorders']['served_share']}"
            f", invariants {'hold' if verification.ok else 'FAILED'}",
            "rush",
        )
        return result
    finally:
        for thread in (ops, sampler):
            if thread is not None:
                thread.stopping.set()
        say("stopping everything the rush started", "rush")
        stack.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    runs: dict[str, dict[str, Any]] = {}
    try:
        for mode in args.modes:
            for share in args.backorder_shares:
                # A run's column: its mode, and its share taking the next batch unless every
                # run has none.
                label = (
                    f"{mode} {share:.0%} wait" if share or len(args.backorder_shares) > 1 else mode
                )
                result = run_mode(args, mode, workdir / label.replace(" ", "-"), share=share)
                if result is None:
                    return 2
                runs[label] = result
    except KeyboardInterrupt:
        say("interrupted", "rush")
        return 130
    title = report.title(args)
    print(report.summary(runs, title), flush=True)
    for path, write in ((args.plot, report.plot), (args.json, None)):
        if not path:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if write is not None:
            write(Path(path), runs=runs, title=title)
        else:
            command = " ".join([".venv/bin/python", "bench/rush.py", *(argv or sys.argv[1:])])
            out = {"command": command, "machine": f"{os.cpu_count()} cores", "modes": runs}
            out |= {"targets": numbers.TARGETS, "preorder_targets": numbers.PREORDER_TARGETS}
            Path(path).write_text(json.dumps(out, default=str))
        say(f"written to {path}", "rush")
    return 0 if all(r["ok"] for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
