"""Order throughput benchmark; docs/performance.md explains it and holds the last results.

    .venv/bin/python bench/orders.py            # full run, ~20 minutes; rewrites the doc
    .venv/bin/python bench/orders.py --quick    # smoke run, ~4 minutes; results JSON only

Three comparisons, each interleaved round by round (A, B, A, B, ...) so that drift on a
shared machine hits both sides, reported as medians:

1. POST /api/orders/ against shop/baseline.py, a raw-SQL view sending the same statements.
2. The Sales API with the event pipeline (outbox + relay via django-q2 to SNS) on and off.
3. The outbox relay publishing N pending events with PublishBatch and with one Publish each.

Everything it starts listens on 127.0.0.1 and is stopped on exit: a moto server, gunicorn and
a django-q2 cluster, on a database of its own, dropped and recreated at the start. After
every load round the stock is reconciled with the completed orders; an oversell exits 1.
"""

import argparse
import contextlib
import functools
import json
import logging
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
K6_SCRIPT = ROOT / "bench" / "k6" / "orders.js"
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / "run" / "bench"
DOC = ROOT / "docs" / "performance.md"

SKU = "CP-502102"
LARGE_STOCK = 10_000_000
API_PATH = "/api/orders/"
BASELINE_PATH = "/bench/baseline/orders/"
BATCH_PUBLISHER = "factory_bridge.publishers.SnsPublisher"
ONE_BY_ONE_PUBLISHER = "bench.publishers.OneByOnePublisher"
API_TARGET = 0.75
PIPELINE_TARGET = 0.9
# A hand-written analysis in docs/performance.md between these markers survives a rewrite.
ANALYSIS_START, ANALYSIS_END = "<!-- analysis -->", "<!-- /analysis -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Where an order's CPU goes: gunicorn, MariaDB, the django-q2 cluster (relay), moto (SNS).
CPU_PARTS = ("web", "mysql", "cluster", "moto")
Q_WORKERS = 7  # django-q2 workers: the Q_WORKERS default of nudged/settings/base.py

log = logging.getLogger("bench.orders")


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: int
    warmup: int
    sellout_seconds: int
    relay_events: int
    relay_rounds: int
    drain_timeout: int


FULL = Plan(
    rounds=5,
    seconds=20,
    warmup=3,
    sellout_seconds=6,
    relay_events=2000,
    relay_rounds=5,
    drain_timeout=120,
)
QUICK = Plan(
    rounds=2,
    seconds=5,
    warmup=1,
    sellout_seconds=3,
    relay_events=200,
    relay_rounds=2,
    drain_timeout=60,
)


class BenchError(Exception):
    """The benchmark could not run (port taken, a server did not start, k6 failed)."""


# --- Processes -------------------------------------------------------------------------------


class Service:
    """A process group this script started, stopped through its own id only."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self.log = self.log_path.open("ab")
        self.offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode(errors="replace")

    def members(self) -> list[int]:
        """Processes still in this service's session (its workers)."""
        return [pid for pid, fields in _proc_stats().items() if int(fields[4]) == self.proc.pid]

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the leader (it stops its workers); SIGKILL to the group if it lingers."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing its process group", self.name, timeout)
        if self.members():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: Any, timeout: float, what: str, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and not service.alive:
            raise BenchError(f"{what}: the process exited; see {service.log_path}")
        if check():
            return
        time.sleep(0.2)
    raise BenchError(
        f"{what}: not ready after {timeout}s" + (f"; see {service.log_path}" if service else "")
    )


def _proc_stats() -> dict[int, list[str]]:
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        comm_end = text.rindex(")")
        stats[int(entry.name)] = [
            text[text.index("(") + 1 : comm_end],
            *text[comm_end + 2 :].split(),
        ]
    return stats


def cpu_snapshot(sessions: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named session, MariaDB, k6 (reaped) and the machine."""
    totals = dict.fromkeys([*sessions, "mysql"], 0.0)
    by_session = {sid: name for name, sid in sessions.items()}
    for fields in _proc_stats().values():
        # fields: comm, state, ppid, pgrp, session, ..., utime (12), stime, cutime, cstime
        seconds = (int(fields[12]) + int(fields[13])) / CLK_TCK
        name = by_session.get(int(fields[4]))
        if name is not None:
            # With the reaped children (cutime, cstime): django-q2 recycles its workers.
            totals[name] += seconds + (int(fields[14]) + int(fields[15])) / CLK_TCK
        elif fields[0] in ("mariadbd", "mysqld"):
            totals["mysql"] += seconds
    totals["k6"] = (
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    )
    own = resource.getrusage(resource.RUSAGE_SELF)
    totals["bench"] = own.ru_utime + own.ru_stime
    with open("/proc/stat") as handle:
        cpu = [int(v) for v in handle.readline().split()[1:]]
    idle = cpu[3] + cpu[4]
    steal = cpu[7] if len(cpu) > 7 else 0
    totals["machine_busy"] = (sum(cpu[:8]) - idle - steal) / CLK_TCK
    totals["machine_steal"] = steal / CLK_TCK
    totals["wall"] = time.monotonic()
    return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    # Never negative: a process that restarted (MariaDB) starts counting from zero again.
    delta = {name: round(max(after[name] - before[name], 0.0), 3) for name in before}
    ours = sum(v for k, v in delta.items() if k not in ("machine_busy", "machine_steal", "wall"))
    delta["outside_bench"] = round(max(delta["machine_busy"] - ours, 0.0), 3)
    return delta


class Stack:
    """The servers under test: moto, gunicorn and the django-q2 cluster, all on 127.0.0.1."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.services: dict[str, Service] = {}
        self.events = True
        self.k6_runs = 0
        self.overrides = {}
        if args.relay_debounce is not None:
            self.overrides["OUTBOX_RELAY_DEBOUNCE"] = str(args.relay_debounce)
        if args.relay_linger is not None:
            self.overrides["OUTBOX_RELAY_LINGER"] = str(args.relay_linger)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    def env(self, *, events: bool) -> dict[str, str]:
        """A clean environment: nothing of a developer's shell (run/env.sh) leaks in."""
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        env.update(
            DJANGO_SETTINGS_MODULE="nudged.settings.local",
            DEBUG="0",
            BENCHMARK_BASELINE="1",
            DATABASE_URL=self.args.database_url,
            EVENTS_ENABLED="1" if events else "0",
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.args.moto_port}",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="ap-northeast-2",
            # No restock poller runs; the factory URL points at a port nobody should answer.
            FACTORY_API_URL=f"http://127.0.0.1:{self.args.port + 1}",
            PUBLIC_BASE_URL=self.base_url,
            **self.overrides,
            Q_WORKERS=str(Q_WORKERS),
            PYTHONUNBUFFERED="1",
        )
        return env

    def manage(self, *argv: str) -> str:
        result = subprocess.run(
            [str(BIN / "python"), "manage.py", *argv],
            cwd=ROOT,
            env=self.env(events=True),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode:
            raise BenchError(f"manage.py {' '.join(argv)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, name: str, cmd: list[str], *, events: bool = True) -> Service:
        service = Service(name, cmd, self.env(events=events))
        self.services[name] = service
        return service

    def stop(self, name: str) -> None:
        service = self.services.pop(name, None)
        if service is not None:
            service.stop()

    def stop_all(self) -> None:
        for name in list(self.services):
            self.stop(name)

    def start_moto(self) -> None:
        port = self.args.moto_port
        cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        service = self.start("moto", cmd)
        wait_until(lambda: port_open(port), 30, "moto server", service)
        self.manage("provision_aws")

    def start_web(self, *, events: bool) -> None:
        self.stop("web")
        self.events = events
        cmd = [
            str(BIN / "gunicorn"),
            "nudged.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.args.port}",
            "--workers",
            str(self.args.workers),
            "--graceful-timeout",
            "5",
            "--error-logfile",
            "-",
        ]
        service = self.start("web", cmd, events=events)
        wait_until(self._healthy, 60, "gunicorn", service)

    def start_cluster(self) -> None:
        self.stop("cluster")
        # As `make run` does: schedules and the long-polling loops (the outbox relay among them).
        self.manage("setup_worker")
        service = self.start("cluster", [str(BIN / "python"), "manage.py", "qcluster"])
        # Master, sentinel, pusher, monitor and the workers: all forked means it is polling.
        wanted = 4 + Q_WORKERS
        wait_until(lambda: len(service.members()) >= wanted, 60, "django-q2 cluster", service)

    def configure(self, *, events: bool) -> None:
        """Gunicorn with EVENTS_ENABLED as asked; the cluster runs only when events are on."""
        self.stop("cluster")
        self.start_web(events=events)
        if events:
            self.start_cluster()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def sessions(self) -> dict[str, int]:
        return {name: service.proc.pid for name, service in self.services.items()}

    def k6(self, path: str, seconds: int) -> dict[str, Any]:
        """Run k6 against one path; return throughput, latency and the CPU each side used."""
        self.k6_runs += 1
        summary = self.workdir / f"k6-{self.k6_runs}.json"
        cmd = [
            str(BIN / "k6"),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            "-e",
            f"TARGET_URL={self.base_url}{path}",
            "-e",
            f"SKU={SKU}",
            "-e",
            f"VUS={self.args.vus}",
            "-e",
            f"DURATION={seconds}s",
            "-e",
            f"SUMMARY_PATH={summary}",
            str(K6_SCRIPT),
        ]
        env = {**self.env(events=self.events), "K6_NO_USAGE_REPORT": "true"}
        before = cpu_snapshot(self.sessions())
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
        cpu = cpu_delta(before, cpu_snapshot(self.sessions()))
        if result.returncode or not summary.exists():
            raise BenchError(f"k6 failed ({result.returncode}):\n{result.stderr[-3000:]}")
        data = json.loads(summary.read_text())
        metrics = data["metrics"]
        duration = data["state"]["testRunDurationMs"] / 1000

        def count(name: str) -> int:
            return int(metrics.get(name, {}).get("values", {}).get("count", 0))

        latency = metrics["http_req_duration"]["values"]
        created = count("orders_created")
        return {
            "orders_per_s": round(created / duration, 1),
            "requests_per_s": round(metrics["http_reqs"]["values"]["rate"], 1),
            "p50_ms": round(latency["p(50)"], 2),
            "p99_ms": round(latency["p(99)"], 2),
            "created": created,
            "rejected": count("orders_rejected"),
            "failed": count("orders_failed"),
            "duration_s": round(duration, 2),
            "cpu_s": cpu,
        }


# --- Database checks (in this process, through the ORM) --------------------------------------


def recreate_database(url: str) -> None:
    import environ
    import MySQLdb

    cfg = environ.Env.db_url_config(url)
    name = cfg["NAME"]
    if "bench" not in name:
        raise BenchError(f"refusing to drop database {name!r}: its name must contain 'bench'")
    conn = MySQLdb.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=int(cfg["PORT"] or 3306),
        user=cfg["USER"],
        passwd=cfg["PASSWORD"] or "",
        charset="utf8mb4",
    )
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()


def unsubscribe_ops() -> int:
    """Drop the subscriptions of the operations queue; return how many.

    Nothing consumes nudged-ops here, and moto's SNS-to-SQS delivery slows down with every
    message a subscribed queue holds (PublishBatch fell from ~115 to ~13 events/s at 2,000
    messages), which would turn the benchmark into one of moto. AWS fans out off this machine.
    """
    from django.conf import settings

    from factory_bridge import aws

    sns = aws.client("sns")
    ops = aws.queue_arn(settings.SQS_OPS_QUEUE)
    dropped = 0
    for page in sns.get_paginator("list_subscriptions").paginate():
        for subscription in page["Subscriptions"]:
            if subscription["Endpoint"] == ops:
                sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
                dropped += 1
    return dropped


def reset_stock(quantity: int) -> int:
    """Set the product's stock; return the last order id so the round's orders can be found."""
    from django.db.models import Max

    from inventory.services import set_stock
    from shop.models import Order

    set_stock(sku=SKU, quantity=quantity, note="bench/orders.py")
    return Order.objects.aggregate(last=Max("id"))["last"] or 0


def reconcile(*, start: int, after_id: int, created: int) -> dict[str, Any]:
    """Compare the stock taken with the completed orders of the round (oversell check)."""
    from django.db.models import Count, Min, Sum

    from inventory.models import Product
    from shop.models import Order

    stock = Product.objects.values_list("stock", flat=True).get(sku=SKU)
    orders = Order.objects.filter(product__sku=SKU, pk__gt=after_id)
    done = orders.filter(status=Order.Status.COMPLETED).aggregate(
        n=Count("id"), units=Sum("quantity"), low=Min("remaining_stock")
    )
    units = done["units"] or 0
    taken = start - stock
    lowest = min(stock, done["low"] if done["low"] is not None else stock)
    return {
        "stock_taken": taken,
        "completed_units": units,
        "completed_orders": done["n"],
        "rejected_orders": orders.filter(status=Order.Status.REJECTED).count(),
        "lowest_stock": lowest,
        # 201s seen by k6 that have no completed order, or the reverse: should be 0.
        "unacknowledged": done["n"] - created,
        "oversold": taken != units or lowest < 0,
    }


def drain(timeout: float) -> dict[str, float]:
    """Wait until every event is published and no relay task is queued; say how long it took."""
    from django_q.models import OrmQ

    from factory_bridge.models import OutboxEvent
    from factory_bridge.services.outbox import RELAY_TASK

    def left() -> tuple[int, int]:
        # The long-polling loops stay in the queue while they run: count relay tasks only.
        relays = sum(1 for queued in OrmQ.objects.all() if queued.func() == RELAY_TASK)
        return OutboxEvent.objects.filter(published_at__isnull=True).count(), relays

    started = time.monotonic()
    pending, queued = first = left()
    while (pending or queued) and time.monotonic() - started < timeout:
        time.sleep(0.25)
        pending, queued = left()
    return {
        "pending_at_end": first[0],
        "tasks_queued_at_end": first[1],
        "drain_s": round(time.monotonic() - started, 2),
        "pending_left": pending,
    }


def wait_for_database(timeout: float = 180) -> None:
    """Drop this process's connections and wait until MariaDB answers (it may have restarted)."""
    from django.db import OperationalError, connection, connections

    deadline = time.monotonic() + timeout
    while True:
        connections.close_all()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def normalized(sql: str) -> str:
    sql = re.sub(r"'(?:[^'\\]|\\.)*'", "?", sql)
    sql = re.sub(r"`s\d+_x\d+`", "`savepoint`", sql)
    return re.sub(r"\b\d+(\.\d+)?\b", "?", sql)


def compare_statements() -> dict[str, Any]:
    """Capture the SQL of one order through place_order and through the baseline view."""
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from shop.baseline import create_order
    from shop.exceptions import OutOfStock
    from shop.services import place_order

    def capture(run: Any, stock: int) -> list[str]:
        reset_stock(stock)
        with CaptureQueriesContext(connection) as captured:
            run()
        return [normalized(q["sql"]) for q in captured.captured_queries]

    def api(quantity: int) -> None:
        with contextlib.suppress(OutOfStock):
            place_order(sku=SKU, quantity=quantity)

    def baseline(quantity: int) -> None:
        body = json.dumps({"sku": SKU, "quantity": quantity})
        request = RequestFactory().post(BASELINE_PATH, body, content_type="application/json")
        answer = create_order(request)
        if answer.status_code not in (201, 409):
            raise BenchError(f"baseline view answered {answer.status_code}: {answer.content!r}")

    cases = {}
    # A plain order; the last unit (it also opens a depletion, a second event); a refusal.
    for case, stock, quantity in (
        ("order", LARGE_STOCK, 1),
        ("last_unit", 1, 1),
        ("refused", 1, 2),
    ):
        statements = {
            "api": capture(functools.partial(api, quantity), stock),
            "baseline": capture(functools.partial(baseline, quantity), stock),
        }
        cases[case] = {
            "statements": len(statements["api"]),
            "baseline_statements": len(statements["baseline"]),
            "identical": statements["api"] == statements["baseline"],
            "sql": statements["api"],
        }
        if not cases[case]["identical"]:
            log.warning("baseline SQL differs from place_order (%s):", case)
            for a, b in zip(statements["api"], statements["baseline"], strict=False):
                if a != b:
                    log.warning("  api:      %s\n  baseline: %s", a, b)
    return cases


# --- The three comparisons -------------------------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, plan: Plan) -> None:
        self.stack = stack
        self.plan = plan
        self.oversells: list[str] = []

    def warm_up(self, *paths: str) -> None:
        for path in paths:
            self.stack.k6(path, self.plan.warmup)

    def load_round(self, label: str, path: str, *, stock: int, seconds: int) -> dict[str, Any]:
        """One round; run again once if the database went away or requests failed."""
        from django.db import OperationalError

        retried = False
        while True:
            try:
                result = self._load_round(label, path, stock=stock, seconds=seconds)
            except OperationalError as exc:
                if retried:
                    raise
                log.warning("%s: database error (%s); waiting for it, then again", label, exc)
            else:
                if retried or not result["failed"]:
                    return result
                log.warning("%s: %d answers not 201/409; again", label, result["failed"])
            retried = True
            wait_for_database()

    def _load_round(self, label: str, path: str, *, stock: int, seconds: int) -> dict[str, Any]:
        events = self.stack.events
        if events:
            drain(self.plan.drain_timeout)
        after_id = reset_stock(stock)
        before = cpu_snapshot(self.stack.sessions())
        result = self.stack.k6(path, seconds)
        if events:
            result["relay"] = drain(self.plan.drain_timeout)
        # The load and the relay's tail: everything the round's orders cost, per order.
        spent = cpu_delta(before, cpu_snapshot(self.stack.sessions()))
        result["round_cpu_s"] = spent
        result.update(reconcile(start=stock, after_id=after_id, created=result["created"]))
        if result["created"]:
            per_order = {
                k: round(spent.get(k, 0.0) * 1000 / result["created"], 3) for k in CPU_PARTS
            }
            per_order["total"] = round(sum(per_order.values()), 3)
            result["cpu_ms_per_order"] = per_order
        if result["oversold"]:
            self.oversells.append(
                f"{label}: stock taken {result['stock_taken']}, "
                f"completed units {result['completed_units']}"
            )
        log.info(
            "%-22s %7.1f orders/s  p50 %6.1f ms  p99 %6.1f ms  201=%d 409=%d other=%d  "
            "taken=%d completed=%d%s",
            label,
            result["orders_per_s"],
            result["p50_ms"],
            result["p99_ms"],
            result["created"],
            result["rejected"],
            result["failed"],
            result["stock_taken"],
            result["completed_units"],
            "  OVERSOLD" if result["oversold"] else "",
        )
        log.info(
            "%-22s CPU ms/order %s; CPU s outside the benchmark %.1f%s",
            "",
            result.get("cpu_ms_per_order"),
            result["round_cpu_s"]["outside_bench"],
            f"; relay {result['relay']}" if events else "",
        )
        return result

    def api_vs_baseline(self) -> dict[str, Any]:
        self.stack.configure(events=self.stack.args.api_events == "on")
        self.warm_up(API_PATH, BASELINE_PATH)
        rounds: dict[str, list] = {"api": [], "baseline": []}
        for n in range(1, self.plan.rounds + 1):
            for name, path in (("api", API_PATH), ("baseline", BASELINE_PATH)):
                rounds[name].append(
                    self.load_round(
                        f"{name} #{n}", path, stock=LARGE_STOCK, seconds=self.plan.seconds
                    )
                )
        sellout = {}
        for name, path in (("api", API_PATH), ("baseline", BASELINE_PATH)):
            # Enough stock for about half the round: the rest is refusals under full contention.
            rate = statistics.median(r["orders_per_s"] for r in rounds[name])
            stock = max(20, round(rate * self.plan.sellout_seconds / 2))
            result = self.load_round(
                f"{name} sell-out", path, stock=stock, seconds=self.plan.sellout_seconds
            )
            result["stock"] = stock
            sold = result["completed_units"]
            if sold > stock:
                self.oversells.append(f"{name} sell-out: {sold} units sold of {stock} in stock")
            elif sold < stock:
                log.warning("%s sell-out: only %d of %d units sold", name, sold, stock)
            sellout[name] = result
        return {
            "rounds": rounds,
            "medians": {name: medians(r) for name, r in rounds.items()},
            "ratio": ratio(rounds["api"], rounds["baseline"]),
            "paired_ratio": paired_ratio(rounds["api"], rounds["baseline"]),
            "target": API_TARGET,
            "events": self.stack.args.api_events,
            "sellout": sellout,
        }

    def pipeline(self) -> dict[str, Any]:
        rounds: dict[str, list] = {"on": [], "off": []}
        for n in range(1, self.plan.rounds + 1):
            for name, events in (("on", True), ("off", False)):
                self.stack.configure(events=events)
                self.warm_up(API_PATH)
                rounds[name].append(
                    self.load_round(
                        f"events {name} #{n}",
                        API_PATH,
                        stock=LARGE_STOCK,
                        seconds=self.plan.seconds,
                    )
                )
        self.stack.stop("cluster")
        self.stack.stop("web")
        return {
            "rounds": rounds,
            "medians": {name: medians(r) for name, r in rounds.items()},
            "ratio": ratio(rounds["on"], rounds["off"]),
            "paired_ratio": paired_ratio(rounds["on"], rounds["off"]),
            "target": PIPELINE_TARGET,
        }

    def relay(self) -> dict[str, Any]:
        from django.db import OperationalError

        rounds: dict[str, list] = {"batch": [], "one_by_one": []}
        for n in range(1, self.plan.relay_rounds + 1):
            for name, publisher in (
                ("batch", BATCH_PUBLISHER),
                ("one_by_one", ONE_BY_ONE_PUBLISHER),
            ):
                try:
                    result = relay_round(self.plan.relay_events, publisher, self.stack.sessions())
                except OperationalError as exc:
                    log.warning(
                        "relay %s: database error (%s); waiting for it, then again", name, exc
                    )
                    wait_for_database()
                    result = relay_round(self.plan.relay_events, publisher, self.stack.sessions())
                log.info(
                    "relay %-10s #%d %7.1f events/s  (%d published in %.2f s)",
                    name,
                    n,
                    result["events_per_s"],
                    result["published"],
                    result["seconds"],
                )
                rounds[name].append(result)
        med = {
            name: {"events_per_s": statistics.median(r["events_per_s"] for r in results)}
            for name, results in rounds.items()
        }
        return {
            "events": self.plan.relay_events,
            "rounds": rounds,
            "medians": med,
            "ratio": round(med["batch"]["events_per_s"] / med["one_by_one"]["events_per_s"], 3),
        }


def relay_round(n: int, publisher: str, sessions: dict[str, int]) -> dict[str, Any]:
    """Write n pending events and time relay_outbox() publishing them through `publisher`."""
    from django.conf import settings
    from django.test import override_settings
    from django.utils import timezone

    from factory_bridge.events import ORDER_COMPLETED
    from factory_bridge.models import OutboxEvent
    from factory_bridge.services.outbox import relay_outbox

    OutboxEvent.objects.all().delete()
    now = timezone.now()
    rows = []
    for i in range(n):
        row = OutboxEvent(
            topic=OutboxEvent.Topic.SALES,
            event_type=ORDER_COMPLETED,
            sku=SKU,
            created_at=now,
            next_attempt_at=now,
        )
        row.body = {
            "event_id": str(row.id),
            "type": ORDER_COMPLETED,
            "occurred_at": now.isoformat(),
            "sku": SKU,
            "factory_id": "FF-500294",
            "quantity": 1,
            "order_id": i + 1,
            "status": "completed",
            "stock": n - i,
        }
        row.attributes = {
            "EventType": ORDER_COMPLETED,
            "MessageAttributeProductId": SKU,
            "MessageAttributeFactoryId": "FF-500294",
            "MessageAttributeProductCnt": "1",
            "MessageAttributeRequester": settings.FACTORY_REQUESTER or "nudged",
        }
        rows.append(row)
    OutboxEvent.objects.bulk_create(rows, batch_size=500)
    with override_settings(EVENT_PUBLISHER=publisher):
        before = cpu_snapshot(sessions)
        started = time.perf_counter()
        report = relay_outbox(seconds=600)
        seconds = time.perf_counter() - started
        cpu = cpu_delta(before, cpu_snapshot(sessions))
    if report.published != n or report.failed:
        raise BenchError(f"relay published {report.published} of {n} ({report.failed} failed)")
    return {
        "published": report.published,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds, 1),
        "cpu_s": cpu,
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    summary = {
        key: round(statistics.median(r[key] for r in rounds), 2)
        for key in ("orders_per_s", "p50_ms", "p99_ms")
    }
    for key in (*CPU_PARTS, "total"):
        values = [r["cpu_ms_per_order"][key] for r in rounds if "cpu_ms_per_order" in r]
        if values:
            summary[f"{key}_cpu_ms_per_order"] = round(statistics.median(values), 3)
    return summary


def ratio(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    return round(
        statistics.median(r["orders_per_s"] for r in a)
        / statistics.median(r["orders_per_s"] for r in b),
        3,
    )


def paired_ratio(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    return round(
        statistics.median(x["orders_per_s"] / y["orders_per_s"] for x, y in zip(a, b, strict=True)),
        3,
    )


# --- The machine and the report --------------------------------------------------------------


def machine() -> dict[str, Any]:
    import boto3
    import django
    import gunicorn
    import moto
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@max_connections")
        mysql_version, flush, max_connections = cursor.fetchone()
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    k6 = subprocess.run([str(BIN / "k6"), "version"], capture_output=True, text=True).stdout
    from importlib.metadata import version

    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(total_kb / 1024 / 1024, 1),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "django_q2": version("django-q2"),
        "gunicorn": gunicorn.__version__,
        "mariadb": mysql_version,
        "innodb_flush_log_at_trx_commit": int(flush),
        "mysql_max_connections": int(max_connections),
        "k6": k6.split()[1] if k6 else "?",
        "moto": moto.__version__,
        "boto3": boto3.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def pass_fail(value: float, target: float) -> str:
    return "**pass**" if value >= target else "**FAIL**"


def write_doc(results: dict[str, Any]) -> None:
    """Rewrite docs/performance.md from the results, keeping the hand-written analysis."""
    m = results["machine"]
    a = results["api_vs_baseline"]
    p = results["pipeline"]
    r = results["relay"]
    plan = results["plan"]
    cfg = results["config"]
    sql = results["statements"]
    analysis = ""
    if DOC.exists():
        old = DOC.read_text()
        start, end = old.find(ANALYSIS_START), old.find(ANALYSIS_END)
        if start != -1 and end > start:
            analysis = old[start : end + len(ANALYSIS_END)]
        elif start != -1:
            # No closing marker: everything after the opening one is hand-written.
            analysis = f"{old[start:].rstrip()}\n{ANALYSIS_END}"
    if not analysis:
        analysis = f"{ANALYSIS_START}\n{ANALYSIS_END}"

    def row(label: str, med: dict[str, float]) -> str:
        cpu = " | ".join(
            f"{med.get(f'{part}_cpu_ms_per_order', float('nan')):.1f}"
            for part in (*CPU_PARTS, "total")
        )
        return (
            f"| {label} | {med['orders_per_s']:.0f} | {med['p50_ms']:.0f} | {med['p99_ms']:.0f} "
            f"| {cpu} |"
        )

    def rounds_line(rounds: list[dict[str, Any]]) -> str:
        return ", ".join(f"{x['orders_per_s']:.0f}" for x in rounds)

    def relay_row(name: str) -> str:
        per_round = ", ".join(f"{x['events_per_s']:.0f}" for x in r["rounds"][name])
        return f"{r['medians'][name]['events_per_s']:.0f} | {per_round}"

    sell = a["sellout"]
    total_rounds = sum(len(v) for v in a["rounds"].values()) + sum(
        len(v) for v in p["rounds"].values()
    )
    relay_on = [x["relay"] for x in p["rounds"]["on"]]
    api_ok = pass_fail(a["ratio"], API_TARGET)
    pipe_ok = pass_fail(p["ratio"], PIPELINE_TARGET)
    oversell = f"**{len(results['oversells'])}** in {total_rounds + 2} rounds"
    oversell_ok = "**FAIL**" if results["oversells"] else "**pass**"
    same_sql = (
        "identical after normalising literals"
        if all(case["identical"] for case in sql.values())
        else "**they differ**: see the results JSON"
    )
    header = (
        "| | orders/s | p50 ms | p99 ms | CPU ms/order: web | MySQL | relay (django-q2) "
        "| moto | total |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    load_rounds = [x for side in (a, p) for rounds in side["rounds"].values() for x in rounds]
    outside = statistics.median(
        x["round_cpu_s"]["outside_bench"] / (x["round_cpu_s"]["wall"] * m["nproc"])
        for x in load_rounds
    )
    debounce = "default (0.05 s)" if cfg["relay_debounce"] is None else f"{cfg['relay_debounce']} s"
    linger = cfg.get("relay_linger")
    linger = "default (0.25 s)" if linger is None else f"{linger} s"
    ops = (
        "everything kept as provisioned"
        if cfg["ops_subscribed"]
        else "the two `nudged-ops` subscriptions removed (see the notes)"
    )
    phase1_events = (
        "events on (outbox + relay running, as configured by default)"
        if a["events"] == "on"
        else "events off (`EVENTS_ENABLED=0`, no relay)"
    )
    text = f"""# Performance

Generated by `bench/orders.py` on {results["finished_at"]} (UTC); the section
*Analysis* is written by hand and kept when the file is regenerated.

## Results

| Comparison | Measured | Target | |
|---|---:|---:|---|
| Sales API ÷ baseline (orders/s, medians) | **{a["ratio"]:.2f}** | ≥ {API_TARGET} | {api_ok} |
| Events on ÷ off (orders/s, medians) | **{p["ratio"]:.2f}** | ≥ {PIPELINE_TARGET} | {pipe_ok} |
| Relay: PublishBatch ÷ one Publish per event (events/s) | **{r["ratio"]:.2f}** | — | |
| Oversell (stock taken ≠ completed units, or stock < 0) | {oversell} | 0 | {oversell_ok} |

### 1. Sales API against the baseline view

{plan["rounds"]} interleaved rounds each (api, baseline, api, baseline, …), {cfg["vus"]} virtual
users posting `{{"sku": "{SKU}", "quantity": 1}}` back to back for {plan["seconds"]} s,
{phase1_events}. Medians:

{header}
{rule}
{row("`POST /api/orders/` (DRF + ORM)", a["medians"]["api"])}
{row("`POST /bench/baseline/orders/` (raw SQL)", a["medians"]["baseline"])}

Orders/s per round — api: {rounds_line(a["rounds"]["api"])}; baseline:
{rounds_line(a["rounds"]["baseline"])}. Median of the per-round ratios: {a["paired_ratio"]:.2f}.

Both send the same {sql["order"]["statements"]} statements per order, `BEGIN` and `COMMIT`
included ({same_sql}; {sql["last_unit"]["statements"]} for the order that takes the last unit
and opens a depletion).

Sell-out check ({plan["sellout_seconds"]} s of load on about half a round's worth of stock):
the API sold {sell["api"]["completed_units"]} of {sell["api"]["stock"]} and refused
{sell["api"]["rejected"]}; the baseline sold {sell["baseline"]["completed_units"]} of
{sell["baseline"]["stock"]} and refused {sell["baseline"]["rejected"]}; lowest stock seen
{min(sell["api"]["lowest_stock"], sell["baseline"]["lowest_stock"])}.

### 2. Event pipeline on against off

`POST /api/orders/` only; gunicorn restarted with `EVENTS_ENABLED=1` (and the django-q2
cluster started) or `EVENTS_ENABLED=0` (no cluster) before every round, {plan["rounds"]} rounds
each, interleaved (on, off, on, off, …). Medians:

{header}
{rule}
{row("events on (outbox + relay → SNS)", p["medians"]["on"])}
{row("events off", p["medians"]["off"])}

Orders/s per round — on: {rounds_line(p["rounds"]["on"])}; off: {rounds_line(p["rounds"]["off"])}.
Median of the per-round ratios: {p["paired_ratio"]:.2f}. Relay backlog when the load stopped
(events on): {", ".join(str(x["pending_at_end"]) for x in relay_on)} events, published within
{", ".join(f"{x['drain_s']:.1f}" for x in relay_on)} s.

### 3. Outbox relay: PublishBatch against one Publish per event

`relay_outbox()` in one process publishing {r["events"]} pending `order.completed` events to
the moto server; {plan["relay_rounds"]} rounds each, interleaved. The yardstick is
`bench/publishers.py` `OneByOnePublisher` (one `Publish` call per event).

| Publisher | events/s (median) | rounds |
|---|---:|---|
| `SnsPublisher` (PublishBatch of 10) | {relay_row("batch")} |
| one `Publish` per event | {relay_row("one_by_one")} |

## What is measured

- **Orders/s** are `201 Created` answers per second seen by k6 (closed loop: each virtual user
  sends its next order when the last one is answered, so throughput and latency are two views
  of the same queue). **p50/p99** are k6's `http_req_duration` over every request of the round.
- **The baseline** (`shop/baseline.py`, routed only when `BENCHMARK_BASELINE=1` and never
  with the production settings) runs the statements `place_order` runs — the conditional
  `UPDATE … SET stock = stock - n WHERE sku = … AND stock >= n`, the read of stock,
  `depleted_at` and the factory's code under that row lock, the order `INSERT … RETURNING`,
  the outbox `INSERT` and the relay trigger after commit — through a raw cursor in the same
  transaction, without DRF, serializers, model instances or logging. The benchmark captures
  both statement lists before it starts and compares them.
- **Oversell**: before every round the stock is set (`set_stock`); after it, the stock taken
  must equal the units of the round's completed orders, and neither the stock nor any order's
  `remaining_stock` may be negative. The sell-out rounds start with about half a round's worth of
  stock, so the rest of those rounds is refusals (409) under full contention.
- **CPU ms/order** is the CPU time (from `/proc`) that the gunicorn workers, MariaDB, the
  django-q2 cluster and moto used from the start of the round until the relay had published
  its last event, divided by the orders the round completed. It is less sensitive to other
  work on the machine than orders/s, and says where an order's cost goes.
- Every order is for the same product: all of them queue on one row lock, the worst case.

## Machine and configuration

- {m["nproc"]} vCPU ({m["cpu"]}), {m["memory_gib"]} GiB RAM, Linux {m["kernel"]}; load average
  {", ".join(str(x) for x in m["loadavg_at_start"])} when the run started and
  {", ".join(str(x) for x in m["loadavg_at_end"])} when it ended. Processes outside the
  benchmark (other work on the machine) used a median **{outside:.0%}** of its CPU during the
  load rounds.
- Python {m["python"]}, Django {m["django"]}, django-q2 {m["django_q2"]}, gunicorn
  {m["gunicorn"]} (sync, {cfg["workers"]} workers), MariaDB {m["mariadb"]}
  (`innodb_flush_log_at_trx_commit={m["innodb_flush_log_at_trx_commit"]}`), k6 {m["k6"]},
  moto {m["moto"]} (`moto_server`), boto3 {m["boto3"]}.
- `nudged.settings.local` with `DEBUG=0`, database `{cfg["database"]}` (recreated, migrated,
  `load_catalog`), `CONN_MAX_AGE=60`, `OUTBOX_RELAY_DEBOUNCE` {debounce},
  `OUTBOX_RELAY_LINGER` {linger}; django-q2 with `Q_WORKERS={Q_WORKERS}` (ORM broker), started
  as `make run` starts it (`setup_worker`: the relay loop, and the restock and DLQ pollers,
  which have next to nothing to do: only the sell-out rounds deplete, and their restock
  requests go to a factory URL that nobody answers).
- AWS: `provision_aws` on the benchmark's own moto server, then {ops}.
- k6: {cfg["vus"]} VUs, {plan["seconds"]} s per round, {plan["warmup"]} s warm-up per target
  after every (re)start.

## Reproduce

```sh
bin/setup                                 # .venv with k6, gunicorn, moto (make bench does this)
.venv/bin/python bench/orders.py          # full run (~20 min), rewrites this file
.venv/bin/python bench/orders.py --quick  # smoke run (~4 min), results JSON only
.venv/bin/python bench/orders.py --quick --only api --api-events off   # one comparison
.venv/bin/python bench/orders.py --quick --only pipeline --relay-debounce 1.0
.venv/bin/python bench/orders.py --render bench/results/orders-….json  # this file again
```

MariaDB must answer on 127.0.0.1:3306 as `root` without a password (or pass
`--database-url`; the database name must contain `bench`: it is dropped and recreated). Ports
{cfg["port"]} (gunicorn) and {cfg["moto_port"]} (moto) must be free. Raw results, every round
and the CPU split, go to `bench/results/orders-*.json`; logs of the servers to `run/bench/`.
The command exits 1 if any round oversold.

## Notes

- moto is a stand-in for SNS: a Python server on the same cores that answers every Publish
  and does the SNS → SQS fan-out synchronously. Real SNS answers over the network, with its
  own latency and limits (PublishBatch: 10 messages per call), and fans out elsewhere.
- Nothing consumes `nudged-ops` in the benchmark, and moto's SNS → SQS delivery slows down
  with every message a subscribed queue holds (PublishBatch went from ~115 to ~13 events/s
  at 2,000 queued messages), so the benchmark unsubscribes that queue after provisioning.
  `--keep-ops-subscription` keeps it, to see the effect.
- MariaDB is the machine's shared server: its CPU per order includes whatever other
  databases on it were doing during the round.
- {m["nproc"]} cores are shared by k6, gunicorn, MariaDB, the django-q2 cluster and moto, so the
  absolute numbers are a floor for this box, not a capacity figure; the ratios are what the
  benchmark is for. CPU used outside the benchmark's processes (other work on the machine)
  is recorded per round in the JSON as `outside_bench`.
- Interleaving and medians damp drift, not noise: rerun before reading much into a
  difference of a few percent.

## Analysis

{analysis}
"""
    DOC.write_text(text)


# --- Main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per side (default 5; quick 2)")
    parser.add_argument("--seconds", type=int, help="seconds per round (default 20; quick 5)")
    parser.add_argument("--relay-events", type=int, help="events per relay round")
    parser.add_argument("--vus", type=int, default=32)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["api", "pipeline", "relay"],
        help="run only these comparisons (the doc is rewritten only after all three)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--api-events",
        choices=["on", "off"],
        default="on",
        help="EVENTS_ENABLED while comparing the API with the baseline (default on)",
    )
    parser.add_argument(
        "--keep-ops-subscription",
        action="store_true",
        help="keep nudged-ops subscribed to both topics, as provisioned (moto then slows down)",
    )
    parser.add_argument(
        "--relay-debounce", type=float, help="OUTBOX_RELAY_DEBOUNCE for the servers (seconds)"
    )
    parser.add_argument(
        "--relay-linger", type=float, help="OUTBOX_RELAY_LINGER for the cluster (seconds)"
    )
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--moto-port", type=int, default=4700)
    parser.add_argument(
        "--database-url", default="mysql://root@127.0.0.1:3306/nudged_bench", help="dropped first"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only rewrite docs/performance.md from a full run's results file",
    )
    doc = parser.add_mutually_exclusive_group()
    doc.add_argument("--doc", dest="doc", action="store_true", default=None)
    doc.add_argument("--no-doc", dest="doc", action="store_false", help="default with --quick")
    return parser.parse_args()


def run(args: argparse.Namespace, plan: Plan, stack: Stack) -> int:
    for port in (args.port, args.moto_port):
        if port_open(port):
            raise BenchError(
                f"port {port} is in use on 127.0.0.1; pick another (--port/--moto-port)"
            )
    started_at = datetime.now(UTC)
    log.info("database %s: recreate, migrate, load_catalog", args.database_url)
    recreate_database(args.database_url)
    stack.manage("migrate", "--noinput", "-v0")
    stack.manage("load_catalog")
    stack.start_moto()

    # This process reads and writes the database too; its own app logs would drown the report.
    os.environ.update(stack.env(events=True), LOG_LEVEL="WARNING")
    import django

    django.setup()
    info = machine()
    log.info(
        "machine: %s vCPU, %s GiB, load %s",
        info["nproc"],
        info["memory_gib"],
        info["loadavg_at_start"],
    )
    if not args.keep_ops_subscription:
        log.info(
            "unsubscribed %d operations-queue subscriptions (see unsubscribe_ops)",
            unsubscribe_ops(),
        )
    statements = compare_statements()

    bench = Bench(stack, plan)
    phases = {
        "api": ("Sales API against the baseline view", bench.api_vs_baseline),
        "pipeline": ("event pipeline on against off", bench.pipeline),
        "relay": ("relay: PublishBatch against one Publish per event", bench.relay),
    }
    chosen = args.only or list(phases)
    measured: dict[str, Any] = {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"orders-{'quick-' if args.quick else ''}{started_at:%Y%m%d-%H%M%S}.json"
    for number, phase in enumerate(chosen, 1):
        title, measure = phases[phase]
        log.info("%d/%d %s", number, len(chosen), title)
        measured[phase] = measure()
        log.info("%s ratio = %.3f", phase, measured[phase]["ratio"])
        results = collect(args, plan, started_at, info, statements, measured, bench.oversells)
        # Written after every comparison, so that a crash later keeps what was measured.
        (RESULTS / name).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    log.info("results: %s", RESULTS / name)
    complete = len(measured) == len(phases)
    if complete and (args.doc if args.doc is not None else not args.quick):
        write_doc(results)
        log.info("rewrote %s", DOC.relative_to(ROOT))
    summarize(measured)
    if bench.oversells:
        log.error("OVERSELL: %s", "; ".join(bench.oversells))
        return 1
    return 0


def collect(
    args: argparse.Namespace,
    plan: Plan,
    started_at: datetime,
    info: dict[str, Any],
    statements: dict[str, Any],
    measured: dict[str, Any],
    oversells: list[str],
) -> dict[str, Any]:
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "quick": args.quick,
        "plan": asdict(plan),
        "config": {
            "vus": args.vus,
            "workers": args.workers,
            "port": args.port,
            "moto_port": args.moto_port,
            "database": args.database_url.rsplit("/", 1)[-1],
            "relay_debounce": args.relay_debounce,
            "relay_linger": args.relay_linger,
            "ops_subscribed": args.keep_ops_subscription,
        },
        "machine": {**info, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "statements": statements,
        "api_vs_baseline": measured.get("api"),
        "pipeline": measured.get("pipeline"),
        "relay": measured.get("relay"),
        "oversells": oversells,
    }


def summarize(measured: dict[str, Any]) -> None:
    if "api" in measured:
        med = measured["api"]["medians"]
        log.info(
            "api %.0f orders/s (p50 %.1f ms, p99 %.1f ms), baseline %.0f (p50 %.1f, p99 %.1f): "
            "ratio %.2f, target %s",
            med["api"]["orders_per_s"],
            med["api"]["p50_ms"],
            med["api"]["p99_ms"],
            med["baseline"]["orders_per_s"],
            med["baseline"]["p50_ms"],
            med["baseline"]["p99_ms"],
            measured["api"]["ratio"],
            API_TARGET,
        )
    if "pipeline" in measured:
        med = measured["pipeline"]["medians"]
        log.info(
            "events on %.0f orders/s (p50 %.1f, p99 %.1f), off %.0f (p50 %.1f, p99 %.1f): "
            "ratio %.2f, target %s",
            med["on"]["orders_per_s"],
            med["on"]["p50_ms"],
            med["on"]["p99_ms"],
            med["off"]["orders_per_s"],
            med["off"]["p50_ms"],
            med["off"]["p99_ms"],
            measured["pipeline"]["ratio"],
            PIPELINE_TARGET,
        )
    if "relay" in measured:
        med = measured["relay"]["medians"]
        log.info(
            "relay %.0f events/s batched, %.0f one by one: ratio %.2f",
            med["batch"]["events_per_s"],
            med["one_by_one"]["events_per_s"],
            measured["relay"]["ratio"],
        )


def main() -> int:
    # Under another interpreter, run again with the project's virtualenv.
    python = BIN / "python"
    if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(python, [str(python), *sys.argv])
    sys.path.insert(0, str(ROOT))
    # Its own handler: django.setup() later replaces the root logger's.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    args = parse_args()
    if args.render:
        write_doc(json.loads(args.render.read_text()))
        log.info("rewrote %s from %s", DOC.relative_to(ROOT), args.render)
        return 0
    base = QUICK if args.quick else FULL
    plan = Plan(
        **{
            **asdict(base),
            **{
                k: v
                for k, v in (
                    ("rounds", args.rounds),
                    ("seconds", args.seconds),
                    ("relay_events", args.relay_events),
                )
                if v
            },
        }
    )
    LOGS.mkdir(parents=True, exist_ok=True)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="nudged-bench-") as workdir:
        stack = Stack(args, Path(workdir))
        try:
            return run(args, plan, stack)
        except BenchError as exc:
            log.error("%s", exc)
            return 2
        finally:
            stack.stop_all()


if __name__ == "__main__":
    sys.exit(main())
