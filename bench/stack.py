"""The whole system for the benchmarks, started the way `make run` (bin/run) starts it.

A moto server (unless an endpoint is given), optionally behind the TCP proxy that the rush's
outage drill takes down (bench/rush_proxy.py); `migrate`, `load_catalog`, `provision_aws`; the
legacy factory simulator; `setup_worker` and `qcluster` (every loop: outbox relay, restock
poller, DLQ watcher, estimates, notify); gunicorn with make run's four workers. All of it on
the benchmark's own ports and database (dropped and recreated, so its name must contain
"bench"), under bench.settings, in an environment of its own: nothing of the caller's shell
leaks in. Each service runs in a session of its own and is stopped, or killed by a drill,
through its own id only.

Also here, for bench/orders.py and bench/rush.py alike: the CPU each part used (from /proc)
and a reader of the operations queue.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import boto3
import environ
import MySQLdb
import requests
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PY = str(BIN / "python")
REAL_AWS = "aws"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# What a benchmark's processes take from the caller's environment.
PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


@dataclass(frozen=True)
class Config:
    workdir: Path
    database_url: str
    web_port: int
    factory_port: int
    moto_port: int
    # A proxy in front of the AWS endpoint (the outage drill); None: the app talks to it directly.
    proxy_port: int | None = None
    web_workers: int = os.cpu_count() or 2  # bin/run's WEB_WORKERS: one per core
    q_workers: int = 7  # the Q_WORKERS default: five hold the loops
    factory_delay: float = 10.0  # bin/run's FACTORY_DELAY
    factory_failure_rate: float = 0.0
    # None: start a moto server; "aws": real AWS (the caller's AWS_* variables); else a URL.
    aws_endpoint: str | None = None
    prefix: str = "nudged"
    # The limit store (a Redis of the benchmark's own); None: none, limits count per process.
    redis_port: int | None = None
    # Settings of this benchmark (environment variables the settings read).
    settings: dict[str, str] = field(default_factory=dict)


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


class Stack:
    """Start, restart, drill and stop the processes of one benchmark."""

    def __init__(self, config: Config, *, events: bool = True) -> None:
        self.config = config
        self.events = events
        self.limits = False
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, IO[bytes]] = {}
        # CPU seconds of services already stopped (restarts, a killed worker), per name.
        self.retired_cpu: dict[str, float] = {}
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)

    # --- endpoints and environment --------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.web_port}"

    @property
    def factory_url(self) -> str:
        return f"http://127.0.0.1:{self.config.factory_port}"

    @property
    def real_aws(self) -> bool:
        return self.config.aws_endpoint == REAL_AWS

    @property
    def direct_endpoint(self) -> str | None:
        """Where the benchmark's own instruments reach AWS: past the proxy, so that an outage
        of the app's endpoint does not blind them (None: real AWS)."""
        if self.real_aws:
            return None
        return self.config.aws_endpoint or f"http://127.0.0.1:{self.config.moto_port}"

    @property
    def app_endpoint(self) -> str:
        """The app's AWS_ENDPOINT_URL ("": real AWS)."""
        if self.config.proxy_port:
            return f"http://127.0.0.1:{self.config.proxy_port}"
        return self.direct_endpoint or ""

    @property
    def names(self) -> dict[str, str]:
        p = self.config.prefix
        return {
            "SNS_STOCK_TOPIC": f"{p}-stock-events",
            "SNS_SALES_TOPIC": f"{p}-sales-events",
            "SQS_RESTOCK_QUEUE": f"{p}-restock",
            "SQS_RESTOCK_DLQ": f"{p}-restock-dlq",
            "SQS_OPS_QUEUE": f"{p}-ops",
            "SQS_NOTIFY_QUEUE": f"{p}-notify",
            "SQS_NOTIFY_DLQ": f"{p}-notify-dlq",
        }

    @property
    def env(self) -> dict[str, str]:
        c = self.config
        env = {k: v for k, v in os.environ.items() if k in PASSED}
        if c.aws_endpoint is None:
            env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        else:
            env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        env.setdefault("AWS_DEFAULT_REGION", "ap-northeast-2")
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            DEBUG="0",
            DATABASE_URL=c.database_url,
            BENCH_EVENTS_ENABLED="1" if self.events else "0",
            BENCH_LIMITS="production" if self.limits else "off",
            CACHE_URL=f"redis://127.0.0.1:{c.redis_port}/0" if c.redis_port else "locmemcache://",
            AWS_ENDPOINT_URL=self.app_endpoint,
            PUBLIC_BASE_URL=self.base_url,
            FACTORY_API_URL=self.factory_url,
            FACTORY_LEAD_TIME=f"{c.factory_delay:g}",
            # As make run: the stand-in endpoint slows down as a queue fills.
            SQS_OPS_RETENTION="300",
            # No one asks to be told when a donut is back: there is nothing to mail.
            EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
            Q_WORKERS=str(c.q_workers),
            PYTHONUNBUFFERED="1",
            **self.names,
        )
        env.update(c.settings)
        return env

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

    def manage(self, *args: str, timeout: float = 600) -> str:
        """Run one manage.py command to completion; its output goes to manage.log."""
        result = subprocess.run(
            [PY, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        with open(self.workdir / "manage.log", "a") as log:
            log.write(f"$ manage.py {' '.join(args)} -> {result.returncode}\n")
            log.write(result.stdout + result.stderr)
        if result.returncode:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result.stdout

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """As make run stops a service: the signal to its leader (SIGKILL: to the whole
        group), then SIGKILL to whatever is left of the group after `timeout`."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        self.retired_cpu[name] = self.retired_cpu.get(name, 0.0) + session_cpu().get(proc.pid, 0)
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.logs.pop(name).close()

    def stop_all(self) -> None:
        for name in ("k6", "redrive", "web", "cluster", "factory", "proxy", "moto"):
            self.stop(name)
        for name in list(self.procs):
            self.stop(name)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    # --- bring-up -------------------------------------------------------------------------
    def check_ports(self) -> None:
        c = self.config
        ports = [c.web_port, c.factory_port, c.proxy_port, c.redis_port]
        if c.aws_endpoint is None:
            ports.append(c.moto_port)
        taken = [str(p) for p in ports if p and port_open(p)]
        if taken:
            raise RuntimeError(
                f"port(s) {', '.join(taken)} already in use (another benchmark running?); "
                "choose others (--help lists the port options)"
            )

    def start_aws(self) -> None:
        c = self.config
        if c.aws_endpoint is None:
            moto = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(c.moto_port)]
            self.spawn("moto", moto)
            wait_for(lambda: port_open(c.moto_port), timeout=30, what="moto server")
        if c.proxy_port:
            target = urlsplit(self.direct_endpoint or "")
            if target.scheme != "http":
                raise RuntimeError("the proxy forwards plain http endpoints only")
            proxy = [PY, str(ROOT / "bench" / "rush_proxy.py"), "--listen", str(c.proxy_port)]
            self.spawn("proxy", [*proxy, "--target", f"{target.hostname}:{target.port or 80}"])
            wait_for(lambda: port_open(c.proxy_port), timeout=15, what="AWS endpoint proxy")

    def start_redis(self) -> None:
        port = self.config.redis_port
        if port:
            redis = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
            self.spawn("redis", redis)
            wait_for(lambda: port_open(port), timeout=15, what="Redis")

    def prepare(self, setup: Callable[[], None] | None = None) -> None:
        """A fresh database with the catalog, then `setup` (before any loop runs), then the
        topics and queues."""
        recreate_database(self.config.database_url)
        self.manage("migrate", "--noinput", "-v0")
        self.manage("load_catalog")
        if setup is not None:
            setup()
        self.manage("provision_aws")

    def start_factory(self) -> None:
        c = self.config
        self.spawn(
            "factory",
            [
                *(PY, "manage.py", "run_factory", "--port", str(c.factory_port)),
                *(
                    "--delay",
                    f"{c.factory_delay:g}",
                    "--failure-rate",
                    f"{c.factory_failure_rate:g}",
                ),
                *("--seed", "7"),
            ],
        )
        wait_for(lambda: port_open(c.factory_port), timeout=30, what="factory simulator")

    def start_worker(self) -> None:
        self.manage("setup_worker")
        self.spawn("cluster", [PY, "manage.py", "qcluster"])
        # Master, sentinel, pusher, monitor and the workers: all forked, it is polling.
        pid, wanted = self.procs["cluster"].pid, 4 + self.config.q_workers

        def forked() -> bool:
            return sum(1 for f in _proc_stats().values() if int(f[4]) == pid) >= wanted

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
        wait_for(
            lambda: requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200,
            timeout=60,
            what="gunicorn",
        )

    def start(self, setup: Callable[[], None] | None = None) -> None:
        self.check_ports()
        self.start_aws()
        self.start_redis()
        self.prepare(setup)
        self.start_factory()
        self.start_worker()
        self.start_web()

    def restart(self, *, events: bool, limits: bool = False) -> None:
        """Web and cluster again, with the event pipeline on or off, and the purchase and
        rate limits off or at production's defaults."""
        self.stop("web")
        self.stop("cluster")
        self.events = events
        self.limits = limits
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

    # --- CPU ------------------------------------------------------------------------------
    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each service (stopped ones included), by each MariaDB
        server process, by this script and its reaped children (k6, commands), and by the
        machine: take one before and one after, and give both to cpu_spent()."""
        sessions = session_cpu()
        snap = dict(self.retired_cpu)
        for name, proc in self.procs.items():
            if name != "k6":  # reaped by the script: counted with its children
                snap[name] = snap.get(name, 0.0) + sessions.get(proc.pid, 0.0)
        for pid, seconds in mysql_cpu().items():
            snap[f"_mysql:{pid}"] = seconds  # per process: a restart drill replaces it
        times = os.times()
        snap["bench"] = times.user + times.system
        snap["k6"] = times.children_user + times.children_system
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:9]]
        snap["_machine"] = sum(ticks[:8]) / CLK_TCK
        snap["_idle"] = (ticks[3] + ticks[4] + ticks[7]) / CLK_TCK  # idle, iowait, steal
        return snap


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per part between two Stack.cpu() snapshots; `other` is what processes
    outside the benchmark used meanwhile, `machine` every core's time."""
    spent = {
        name: round(max(0.0, after[name] - before.get(name, 0.0)), 3)
        for name in after
        if not name.startswith("_")
    }
    spent["mysql"] = round(
        sum(max(0.0, v - before.get(k, 0.0)) for k, v in after.items() if k.startswith("_mysql:")),
        3,
    )
    machine = after["_machine"] - before["_machine"]
    idle = after["_idle"] - before["_idle"]
    spent["other"] = round(max(0.0, machine - idle - sum(spent.values())), 3)
    spent["idle"] = round(idle, 3)
    spent["machine"] = round(machine, 3)
    return spent


def _proc_stats() -> dict[int, list[str]]:
    """Each process's /proc/<pid>/stat fields after its name (state, ppid, pgrp, session, …)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    text = handle.read()
            except OSError:
                continue
            name_end = text.rindex(")")
            stats[int(entry.name)] = [
                text[text.index("(") + 1 : name_end],
                *text[name_end + 2 :].split(),
            ]
    return stats


def session_cpu() -> dict[int, float]:
    """CPU seconds per session id, the reaped children of its processes included (django-q2
    recycles its workers)."""
    seconds: dict[int, float] = {}
    for fields in _proc_stats().values():
        session = int(fields[4])
        seconds[session] = seconds.get(session, 0.0) + sum(map(int, fields[12:16])) / CLK_TCK
    return seconds


def mysql_cpu() -> dict[int, float]:
    return {
        pid: (int(fields[12]) + int(fields[13])) / CLK_TCK
        for pid, fields in _proc_stats().items()
        if fields[0] in ("mariadbd", "mysqld")
    }


def named_cpu(*names: str) -> float:
    """CPU seconds (user and system) the running processes of these names have used."""
    return sum(
        (int(fields[12]) + int(fields[13])) / CLK_TCK
        for fields in _proc_stats().values()
        if fields[0] in names
    )


# --- The operations queue --------------------------------------------------------------------


def sqs_client(endpoint: str | None, env: dict[str, str]) -> Any:
    """An SQS client for the benchmark's own use (`endpoint`: past any proxy)."""
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=env.get("AWS_DEFAULT_REGION", "ap-northeast-2"),
    )
    config = BotoConfig(connect_timeout=2, read_timeout=15, retries={"max_attempts": 3})
    return session.client("sqs", endpoint_url=endpoint, config=config)


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
        self.sqs = sqs
        self.url = url
        self.seen: dict[str, tuple[float, str]] = {}  # event_id -> (queued at, type)
        self.orders: dict[int, str] = {}  # order_id -> event_id of its order.completed
        # Per order (by order_id and by reference), the event ids of each type that told of it.
        self.by_order: dict[str, dict[str, set[str]]] = {}
        self.deliveries = 0  # events received, duplicates included
        self.unreadable = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reading = threading.Event()
        self.reading.set()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def start(self) -> None:
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

    def resume(self) -> None:
        self.reading.set()

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
            except Exception:  # unreachable for a moment: count it and try again
                with self.lock:
                    self.errors += 1
                time.sleep(0.5)
                continue
            with self.lock:
                for message in messages:
                    try:
                        queued = int(message["Attributes"]["SentTimestamp"]) / 1000
                        for event in events_in(message["Body"]):
                            self._add(event, queued)
                    except (ValueError, KeyError, TypeError, AttributeError):
                        self.unreadable += 1
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ]
                try:
                    self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
                except Exception:  # read again later, and counted once by event id
                    with self.lock:
                        self.errors += 1

    def _add(self, event: dict[str, Any], queued: float) -> None:
        event_id, kind = str(event["event_id"]), str(event["type"])
        self.deliveries += 1
        self.seen.setdefault(event_id, (queued, kind))
        if kind == "order.completed":
            self.orders.setdefault(int(event["order_id"]), event_id)
        for key in ("order_id", "reference"):
            if event.get(key) is not None:
                kinds = self.by_order.setdefault(str(event[key]), {})
                kinds.setdefault(kind, set()).add(event_id)
