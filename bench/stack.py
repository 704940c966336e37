"""What the benchmarks share: the whole system started as `make run` (bin/run) starts it, on
the benchmark's own ports and database (dropped and recreated, so its name must contain
"bench"), in an environment of its own; the CPU each process used (/proc); k6; a reader of the
operations queue; percentiles, Markdown tables and the docs' generated sections.

Each service runs in a session of its own and is stopped, or killed by a drill, through its own
id only.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
import environ
import MySQLdb
import requests
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PY = str(BIN / "python")
K6 = [str(BIN / "k6"), "run", "--quiet", "--no-color"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MYSQL = ("mariadbd", "mysqld")
# What a benchmark's processes take from the caller's environment.
PASSED = ("PATH", "HOME", "LANG", "TMPDIR")
QUEUES = {
    "SNS_STOCK_TOPIC": "stock-events",
    "SNS_SALES_TOPIC": "sales-events",
    "SQS_RESTOCK_QUEUE": "restock",
    "SQS_RESTOCK_DLQ": "restock-dlq",
    "SQS_OPS_QUEUE": "ops",
    "SQS_NOTIFY_QUEUE": "notify",
    "SQS_NOTIFY_DLQ": "notify-dlq",
}


def say(text: str, who: str = "bench") -> None:
    print(f"[{who} {time.strftime('%H:%M:%S', time.gmtime())}] {text}", flush=True)


def percentile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def spread(values: list[float], qs: Iterable[int] = (50, 99, 100), digits: int = 3) -> dict:
    """Percentiles by name (p50, …; 100 is the max), rounded; None without values."""
    at = {"max" if q == 100 else f"p{q}": percentile(values, q) for q in qs}
    return {k: None if v is None else round(v, digits) for k, v in at.items()}


def md_row(cells: Iterable[Any]) -> str:
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def md_table(head: list[str], rows: Iterable[Iterable[Any]], align: str = "") -> str:
    """A Markdown table; `align` has an l or r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(head) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return "\n".join([md_row(head), rule, *map(md_row, rows)])


def write_section(doc: Path, marker: str, text: str) -> None:
    """Put `text` between `<!-- marker -->` and `<!-- /marker -->` in `doc`."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    old = doc.read_text()
    a, b = old.find(start), old.find(end)
    if not -1 < a < b:
        raise RuntimeError(f"{doc.name} lacks the markers {start} {end}")
    doc.write_text(f"{old[:a]}{start}\n{text}\n{end}{old[b + len(end) :]}")


def k6_summary(script: str, env: dict[str, str], summary: Path, timeout: float) -> dict:
    """Run a k6 script to its end; its summary (handleSummary writes it to SUMMARY_PATH)."""
    env = {"PATH": os.environ["PATH"], "K6_NO_USAGE_REPORT": "true", **env}
    env["SUMMARY_PATH"] = str(summary)
    cmd = [*K6, str(ROOT / "bench" / "k6" / script)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode or not summary.exists():
        raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(summary.read_text())


# --- The database ----------------------------------------------------------------------------


def db_config(url: str) -> dict[str, Any]:
    cfg = environ.Env.db_url_config(url)
    return {
        "host": cfg["HOST"] or "127.0.0.1",
        "port": int(cfg["PORT"] or 3306),
        "user": cfg["USER"],
        "passwd": cfg["PASSWORD"] or "",
        "db": cfg["NAME"],
    }


def connect(url: str, *, database: bool = True) -> MySQLdb.Connection:
    cfg = db_config(url)
    if not database:
        cfg.pop("db")
    return MySQLdb.connect(charset="utf8mb4", connect_timeout=3, autocommit=True, **cfg)


def recreate_database(url: str) -> None:
    """Drop and create the benchmark's database; only one whose name says it is a benchmark's."""
    name = db_config(url)["db"]
    if "bench" not in name:
        raise RuntimeError(f"refusing to recreate database {name!r}: its name lacks 'bench'")
    conn = connect(url, database=False)
    try:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()


def django_setup(url: str, **env: str) -> None:
    """This process on the benchmark's (recreated, migrated, catalogued) database."""
    recreate_database(url)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings", DEBUG="0", DATABASE_URL=url, LOG_LEVEL="WARNING"
    )
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    call_command("load_catalog", verbosity=0)


# --- CPU, from /proc -------------------------------------------------------------------------


def proc_stats() -> dict[int, list[str]]:
    """Each process's /proc/<pid>/stat fields from its name on: name, state, ppid, pgrp,
    session, …, utime (13), stime (14), cutime (15), cstime (16)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            end = text.rindex(")")
            stats[int(entry.name)] = [text[text.index("(") + 1 : end], *text[end + 2 :].split()]
    return stats


def named_cpu(names: tuple[str, ...] = MYSQL) -> dict[int, float]:
    """CPU seconds (user and system) of each running process of these names."""
    return {
        pid: (int(f[12]) + int(f[13])) / CLK_TCK for pid, f in proc_stats().items() if f[0] in names
    }


def session_cpu() -> dict[int, float]:
    """CPU seconds per session id, the reaped children of its processes included (django-q2
    recycles its workers)."""
    seconds: dict[int, float] = {}
    for f in proc_stats().values():
        seconds[int(f[4])] = seconds.get(int(f[4]), 0.0) + sum(map(int, f[12:16])) / CLK_TCK
    return seconds


def machine_cpu() -> tuple[float, float]:
    """CPU seconds of every core since boot: all, and idle (idle, iowait, steal)."""
    with open("/proc/stat") as handle:
        ticks = [int(v) for v in handle.readline().split()[1:9]]
    return sum(ticks) / CLK_TCK, (ticks[3] + ticks[4] + ticks[7]) / CLK_TCK


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per part between two Stack.cpu() snapshots; `other` is what processes
    outside the benchmark used meanwhile, `machine` every core's time."""
    spent = {k: round(max(0.0, v - before.get(k, 0.0)), 3) for k, v in after.items() if k[0] != "_"}
    mysql = (max(0.0, v - before.get(k, 0.0)) for k, v in after.items() if k.startswith("_mysql"))
    spent["mysql"] = round(sum(mysql), 3)
    machine, idle = (after[k] - before[k] for k in ("_machine", "_idle"))
    spent["other"] = round(max(0.0, machine - idle - sum(spent.values())), 3)
    return spent | {"idle": round(idle, 3), "machine": round(machine, 3)}


# --- The system ------------------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(check: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


@dataclass(frozen=True)
class Config:
    workdir: Path
    database_url: str
    web_port: int
    factory_port: int
    moto_port: int
    # A proxy in front of moto (the outage drill); None: the app talks to it directly.
    proxy_port: int | None = None
    web_workers: int = os.cpu_count() or 2  # bin/run's WEB_WORKERS: one per core
    q_workers: int = 7  # the Q_WORKERS default: five hold the loops
    factory_delay: float = 10.0  # bin/run's FACTORY_DELAY
    factory_failure_rate: float = 0.0
    prefix: str = "nudged"
    # The limit store (a Redis of the benchmark's own); None: none, limits count per process.
    redis_port: int | None = None
    # Settings of this benchmark (environment variables the settings read).
    settings: dict[str, str] = field(default_factory=dict)


class Stack:
    """Start, restart, drill and stop the processes of one benchmark: moto (behind the outage
    proxy, bench/rush_proxy.py, if asked), Redis, `migrate`, `load_catalog`, `provision_aws`,
    the factory simulator, `setup_worker` and `qcluster`, gunicorn."""

    def __init__(self, config: Config, *, events: bool = True) -> None:
        self.config, self.events, self.limits = config, events, False
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, IO[bytes]] = {}
        # CPU seconds of services already stopped (restarts, a killed worker), per name.
        self.retired_cpu: dict[str, float] = {}
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base_url = f"http://127.0.0.1:{config.web_port}"
        self.factory_url = f"http://127.0.0.1:{config.factory_port}"
        # The benchmark's own instruments reach moto past the proxy: an outage does not
        # blind them.
        self.direct_endpoint = f"http://127.0.0.1:{config.moto_port}"
        self.names = {k: f"{config.prefix}-{v}" for k, v in QUEUES.items()}

    @property
    def env(self) -> dict[str, str]:
        c = self.config
        endpoint = f"http://127.0.0.1:{c.proxy_port or c.moto_port}"
        return {
            **{k: v for k, v in os.environ.items() if k in PASSED},
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "ap-northeast-2",
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DEBUG": "0",
            "DATABASE_URL": c.database_url,
            "BENCH_EVENTS_ENABLED": "1" if self.events else "0",
            "BENCH_LIMITS": "production" if self.limits else "off",
            "CACHE_URL": f"redis://127.0.0.1:{c.redis_port}/0"
            if c.redis_port
            else "locmemcache://",
            "AWS_ENDPOINT_URL": endpoint,
            "PUBLIC_BASE_URL": self.base_url,
            "FACTORY_API_URL": self.factory_url,
            "FACTORY_LEAD_TIME": f"{c.factory_delay:g}",
            # As make run: the stand-in endpoint slows down as a queue fills.
            "SQS_OPS_RETENTION": "300",
            # No one asks to be told when a donut is back: there is nothing to mail.
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            "Q_WORKERS": str(c.q_workers),
            "PYTHONUNBUFFERED": "1",
            **self.names,
            **c.settings,
        }

    def sqs(self) -> Any:
        """An SQS client for the benchmark's own use, past the proxy."""
        config = BotoConfig(connect_timeout=2, read_timeout=15, retries={"max_attempts": 3})
        session = boto3.session.Session("testing", "testing", region_name="ap-northeast-2")
        return session.client("sqs", endpoint_url=self.direct_endpoint, config=config)

    def queue_url(self, sqs: Any, name: str) -> str:
        return sqs.get_queue_url(QueueName=self.names[name])["QueueUrl"]

    # --- processes ------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env or self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.logs[name] = out

    def manage(self, *args: str) -> None:
        """Run one manage.py command to completion; its output goes to manage.log."""
        cmd = [PY, "manage.py", *args]
        done = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True)
        with open(self.workdir / "manage.log", "a") as log:
            log.write(f"$ manage.py {' '.join(args)} -> {done.returncode}\n")
            log.write(done.stdout + done.stderr)
        if done.returncode:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """As make run stops a service: the signal to its leader (SIGKILL: to the whole
        group), then SIGKILL to whatever is left of the group after `timeout`."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        self.retired_cpu[name] = self.retired_cpu.get(name, 0.0) + session_cpu().get(proc.pid, 0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.logs.pop(name).close()

    def stop_all(self) -> None:
        for name in ("k6", "redrive", "web", "cluster", "factory", "proxy", "moto", *self.procs):
            self.stop(name)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def service(self, name: str, argv: list[str], port: int) -> None:
        self.spawn(name, argv)
        wait_for(lambda: port_open(port), timeout=30, what=name)

    # --- bring-up -------------------------------------------------------------------------
    def start(self, setup: Callable[[], None] | None = None) -> None:
        """A fresh database with the catalog, then `setup` (before any loop runs), then the
        topics and queues and every service."""
        c = self.config
        ports = [c.web_port, c.factory_port, c.proxy_port, c.redis_port, c.moto_port]
        if taken := [str(p) for p in ports if p and port_open(p)]:
            raise RuntimeError(
                f"port(s) {', '.join(taken)} already in use (another benchmark running?); "
                "choose others (--help lists the port options)"
            )
        self.service(
            "moto",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(c.moto_port)],
            c.moto_port,
        )
        if c.proxy_port:
            proxy = [PY, "bench/rush_proxy.py", "--listen", str(c.proxy_port)]
            self.service("proxy", [*proxy, "--target", f"127.0.0.1:{c.moto_port}"], c.proxy_port)
        if c.redis_port:
            redis = ["redis-server", "--bind", "127.0.0.1", "--save", ""]
            self.service("redis", [*redis, "--port", str(c.redis_port)], c.redis_port)
        recreate_database(c.database_url)
        self.manage("migrate", "--noinput", "-v0")
        self.manage("load_catalog")
        if setup is not None:
            setup()
        self.manage("provision_aws")
        factory = [PY, "manage.py", "run_factory", "--port", str(c.factory_port), "--seed", "7"]
        factory += [
            "--delay",
            f"{c.factory_delay:g}",
            "--failure-rate",
            f"{c.factory_failure_rate:g}",
        ]
        self.service("factory", factory, c.factory_port)
        self.start_worker()
        self.start_web()

    def start_worker(self) -> None:
        self.manage("setup_worker")
        self.spawn("cluster", [PY, "manage.py", "qcluster"])
        # Master, sentinel, pusher, monitor and the workers: all forked, it is polling.
        pid, wanted = self.procs["cluster"].pid, 4 + self.config.q_workers

        def forked() -> bool:
            return sum(1 for f in proc_stats().values() if int(f[4]) == pid) >= wanted

        wait_for(forked, timeout=60, what="django-q2 cluster")

    def start_web(self) -> None:
        c = self.config
        self.spawn(
            "web",
            [
                *(str(BIN / "gunicorn"), "nudged.wsgi:application"),
                *("--bind", f"127.0.0.1:{c.web_port}", "--workers", str(c.web_workers)),
                *("--access-logfile", str(self.workdir / "access.log")),
                *("--error-logfile", "-", "--no-control-socket"),
            ],
        )
        healthz = f"{self.base_url}/healthz"
        wait_for(lambda: requests.get(healthz, timeout=2).ok, timeout=60, what="gunicorn")

    def restart(self, *, events: bool, limits: bool = False) -> None:
        """Web and cluster again, with the event pipeline on or off, and the purchase and
        rate limits off or at production's defaults."""
        self.stop("web")
        self.stop("cluster")
        self.events, self.limits = events, limits
        self.start_worker()
        self.start_web()

    # --- drills ---------------------------------------------------------------------------
    def aws_down(self) -> None:
        os.kill(self.procs["proxy"].pid, signal.SIGUSR1)

    def aws_up(self) -> None:
        os.kill(self.procs["proxy"].pid, signal.SIGUSR2)
        port = self.config.proxy_port or 0
        wait_for(lambda: port_open(port), timeout=10, what="AWS endpoint proxy")

    def kill_worker(self) -> None:
        self.stop("cluster", sig=signal.SIGKILL, timeout=5)

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each service (stopped ones included), by each MariaDB
        server process, by this script and its reaped children (k6, commands), and by the
        machine: take one before and one after, and give both to cpu_spent()."""
        sessions, snap = session_cpu(), dict(self.retired_cpu)
        for name, proc in self.procs.items():
            if name != "k6":  # reaped by the script: counted with its children
                snap[name] = snap.get(name, 0.0) + sessions.get(proc.pid, 0.0)
        # Per process: a restart drill replaces it.
        snap |= {f"_mysql:{pid}": seconds for pid, seconds in named_cpu().items()}
        times = os.times()
        snap["bench"] = times.user + times.system
        snap["k6"] = times.children_user + times.children_system
        snap["_machine"], snap["_idle"] = machine_cpu()
        return snap


# --- The operations queue --------------------------------------------------------------------


def events_in(body: str) -> list[dict[str, Any]]:
    """The events of one SQS message: an SNS envelope (raw delivery off) or the SNS message
    itself (raw delivery on); a `sales.batch` message carries many."""
    message = json.loads(body)
    if message.get("Type") == "Notification" and "Message" in message:
        message = json.loads(message["Message"])
    if message.get("type") == "sales.batch":
        return list(message["events"])
    return [message]


# Seconds one receive of the operations queue waits for messages.
RECEIVE_WAIT = 1


class OpsReader:
    """Reads the operations queue as the operations team would: every event once, by its
    event_id, and which orders the order.completed events told of. Each event's time is
    when the queue got it (SQS's SentTimestamp), so reading later does not add to it."""

    def __init__(self, *, sqs: Any, url: str, threads: int = 2) -> None:
        self.sqs, self.url = sqs, url
        self.seen: dict[str, tuple[float, str]] = {}  # event_id -> (queued at, type)
        self.orders: dict[int, str] = {}  # order_id -> event_id of its order.completed
        # Per order (by order_id and by reference), the event ids of each type that told of it.
        self.by_order: dict[str, dict[str, set[str]]] = {}
        self.deliveries = self.unreadable = self.errors = 0  # deliveries: duplicates included
        self.lock = threading.Lock()
        self.stopping, self.reading = threading.Event(), threading.Event()
        self.reading.set()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.reading.set()
        for thread in self.threads:
            thread.join(timeout=20)

    def pause(self) -> None:
        """Stop reading (a measured round: the reader is the benchmark's, not the system's)."""
        self.reading.clear()
        time.sleep(RECEIVE_WAIT + 0.2)  # the receives under way return

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.seen)

    def missing(self, order_ids: set[int]) -> set[int]:
        with self.lock:
            return order_ids - self.orders.keys()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            if not self.reading.wait(0.5):
                continue
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=RECEIVE_WAIT,
                    AttributeNames=["SentTimestamp"],
                ).get("Messages", [])
                with self.lock:
                    for message in messages:
                        self._read(message)
                if messages:
                    entries = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ]
                    self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
            except Exception:  # unreachable for a moment: read again later, by event id once
                with self.lock:
                    self.errors += 1
                time.sleep(0.5)

    def _read(self, message: dict[str, Any]) -> None:
        try:
            queued = int(message["Attributes"]["SentTimestamp"]) / 1000
            for event in events_in(message["Body"]):
                event_id, kind = str(event["event_id"]), str(event["type"])
                self.deliveries += 1
                self.seen.setdefault(event_id, (queued, kind))
                if kind == "order.completed":
                    self.orders.setdefault(int(event["order_id"]), event_id)
                for key in ("order_id", "reference"):
                    if event.get(key) is not None:
                        kinds = self.by_order.setdefault(str(event[key]), {})
                        kinds.setdefault(kind, set()).add(event_id)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.unreadable += 1
