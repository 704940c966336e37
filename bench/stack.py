"""What the benchmarks share: the whole system started as `make run` starts it (Procfile.local),
on the benchmark's own ports and database (recreated, so its name must contain "bench"); the CPU
each part used (/proc); k6; a reader of the operations queue; percentiles and Markdown tables.
Each service runs in a session of its own, stopped or killed through its own id only."""

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
from django.conf import settings
from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PY = str(BIN / "python")
K6 = [str(BIN / "k6"), "run", "--quiet", "--no-color"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MYSQL = ("mariadbd", "mysqld")
# The processes of Procfile.local a Stack runs, by its names for them (moto is the `aws` there).
ENTRIES = {"moto": "aws"} | {name: name for name in ("redis", "mail", "factory", "cluster", "web")}


def procfile() -> dict[str, str]:
    """Procfile.local's command of each process, by name, as honcho reads it."""
    return parse_procfile((ROOT / "Procfile.local").read_text()).processes


def say(text: str, who: str = "bench") -> None:
    print(f"[{who} {time.strftime('%H:%M:%S', time.gmtime())}] {text}", flush=True)


def percentile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[round(q / 100 * (len(ordered) - 1))] if ordered else None


def spread(values: list[float], qs: Iterable[int] = (50, 99, 100), digits: int = 3) -> dict:
    """Percentiles by name (p50, …; 100 is the max), rounded; None without values."""
    at = {"max" if q == 100 else f"p{q}": percentile(values, q) for q in qs}
    return {k: None if v is None else round(v, digits) for k, v in at.items()}


def md_table(head: list[str], rows: Iterable[Iterable[Any]], align: str = "") -> str:
    """A Markdown table; `align` has an l or r per column (default: first l, rest r)."""

    def row(cells: Iterable[Any]) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"

    rule = "|" + "|".join(
        "---:" if a == "r" else "---" for a in align or "l" + "r" * (len(head) - 1)
    )
    return "\n".join([row(head), rule + "|", *map(row, rows)])


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
    cmd = [*K6, str(ROOT / "bench" / "k6" / script)]
    done = subprocess.run(
        cmd,
        env=env | {"SUMMARY_PATH": str(summary)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode or not summary.exists():
        raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(summary.read_text())


def db_config(url: str) -> dict[str, Any]:
    cfg = environ.Env.db_url_config(url)
    host, port, passwd = cfg["HOST"] or "127.0.0.1", int(cfg["PORT"] or 3306), cfg["PASSWORD"]
    return {
        "host": host,
        "port": port,
        "user": cfg["USER"],
        "passwd": passwd or "",
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
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")


def django_setup(url: str, **env: str) -> None:
    """This process on the benchmark's (recreated, migrated, catalogued) database."""
    recreate_database(url)
    os.environ.update(DJANGO_SETTINGS_MODULE="bench.settings", DEBUG="0", DATABASE_URL=url)
    os.environ.update({"LOG_LEVEL": "WARNING", **env})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    call_command("load_catalog", verbosity=0)


def proc_stats() -> dict[int, list[str]]:
    """/proc/<pid>/stat from the name on: name, state, ppid, pgrp, session (4), …, utime (12),
    stime, cutime, cstime (15)."""
    stats = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{entry}/stat").read_text()
            end = text.rindex(")")
            stats[int(entry)] = [text[text.index("(") + 1 : end], *text[end + 2 :].split()]
    return stats


def named_cpu(names: tuple[str, ...] = MYSQL) -> dict[int, float]:
    """CPU seconds of each running process of these names."""
    return {
        p: (int(f[12]) + int(f[13])) / CLK_TCK for p, f in proc_stats().items() if f[0] in names
    }


def session_cpu() -> dict[int, float]:
    """CPU seconds per session, reaped children included (django-q2 recycles its workers)."""
    seconds: dict[int, float] = {}
    for f in proc_stats().values():
        seconds[int(f[4])] = seconds.get(int(f[4]), 0.0) + sum(map(int, f[12:16])) / CLK_TCK
    return seconds


def machine_cpu() -> tuple[float, float]:
    """CPU seconds of every core since boot: all, and idle (idle, iowait, steal)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) / CLK_TCK, (ticks[3] + ticks[4] + ticks[7]) / CLK_TCK


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per part between two Stack.cpu() readings; `other`: processes outside the
    benchmark, `machine`: every core's time."""
    spent = {k: max(0.0, v - before.get(k, 0.0)) for k, v in after.items()}
    machine, idle = (after[k] - before[k] for k in ("_machine", "_idle"))
    parts = {k: v for k, v in spent.items() if k[0] != "_"}
    parts["mysql"] = sum(v for k, v in spent.items() if k.startswith("_mysql"))
    parts["other"] = max(0.0, machine - idle - sum(parts.values()))
    return {k: round(v, 3) for k, v in (parts | {"idle": idle, "machine": machine}).items()}


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
    proxy_port: int | None = None  # the outage drill's proxy in front of moto
    web_workers: int = os.cpu_count() or 2  # bin/run's: one per core
    q_workers: int = 7  # the Q_WORKERS default: five hold the loops
    factory_delay: float = 10.0  # bin/run's FACTORY_DELAY
    factory_failure_rate: float = 0.0
    redis_port: int | None = None  # the limit store; None: limits count per process
    mail_port: int | None = None  # the mail sink; None: the app's mail goes nowhere
    settings: dict[str, str] = field(default_factory=dict)  # environment the settings read


class Stack:
    """moto (behind bench/rush_proxy.py if asked), Redis, the mail sink, the database, the
    factory simulator, the django-q2 cluster and gunicorn of one benchmark: started, drilled
    and stopped."""

    def __init__(self, config: Config, *, events: bool = True) -> None:
        self.config, self.events, self.limits = config, events, False
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.retired_cpu: dict[str, float] = {}  # of services already stopped, per name
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base_url = f"http://127.0.0.1:{config.web_port}"
        self.factory_url = f"http://127.0.0.1:{config.factory_port}"

    @property
    def env(self) -> dict[str, str]:
        """What the services' settings read, with Procfile.local's variables as bin/run sets
        them (the virtualenv's programs first; RUN_DIR: the workdir)."""
        c = self.config
        run = dict(PORT=c.web_port, WEB_WORKERS=c.web_workers, RUN_DIR=self.workdir)
        run |= dict(MOTO_PORT=c.moto_port, REDIS_PORT=c.redis_port, MAIL_PORT=c.mail_port)
        run |= dict(FACTORY_PORT=c.factory_port, FACTORY_DELAY=f"{c.factory_delay:g}")
        run |= dict(FACTORY_FAILURE_RATE=f"{c.factory_failure_rate:g}")
        # With a mail sink the local settings send to its MAIL_PORT; without, nowhere.
        nowhere = {"EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend"}
        return {
            **{k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")},
            "PATH": f"{BIN}:{os.environ['PATH']}",
            **{k: str(v) for k, v in run.items() if v is not None},
            **dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"),
            **dict(AWS_DEFAULT_REGION="ap-northeast-2", DJANGO_SETTINGS_MODULE="bench.settings"),
            "DEBUG": "0",
            "DATABASE_URL": c.database_url,
            "BENCH_EVENTS_ENABLED": "1" if self.events else "0",
            "BENCH_LIMITS": "production" if self.limits else "off",
            "CACHE_URL": f"redis://127.0.0.1:{c.redis_port}/0"
            if c.redis_port
            else "locmemcache://",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{c.proxy_port or c.moto_port}",
            "PUBLIC_BASE_URL": self.base_url,
            "FACTORY_API_URL": self.factory_url,
            "FACTORY_LEAD_TIME": f"{c.factory_delay:g}",
            "SQS_OPS_RETENTION": "300",  # as make run: moto slows down as a queue fills
            **({} if c.mail_port else nowhere),
            "Q_WORKERS": str(c.q_workers),
            "PYTHONUNBUFFERED": "1",
            **c.settings,
        }

    def sqs(self) -> Any:
        """The benchmark's own SQS client, past the proxy: an outage does not blind it."""
        config = BotoConfig(connect_timeout=2, read_timeout=15, retries={"max_attempts": 3})
        session = boto3.session.Session("testing", "testing", region_name="ap-northeast-2")
        url = f"http://127.0.0.1:{self.config.moto_port}"
        return session.client("sqs", endpoint_url=url, config=config)

    def use_settings(self) -> None:
        """Django in this process, under the services' settings (logging warnings only): their
        database, their queues' names."""
        os.environ.update(self.env, LOG_LEVEL="WARNING")
        import django

        django.setup()

    def queue_url(self, sqs: Any, setting: str) -> str:
        """The URL of the queue a setting names (after use_settings)."""
        return sqs.get_queue_url(QueueName=getattr(settings, setting))["QueueUrl"]

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.logs[name] = out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        io = {"stdout": out, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env or self.env, start_new_session=True, **io
        )

    def service(self, name: str, port: int, argv: list[str] | None = None) -> None:
        """Its Procfile.local entry, or `argv`, until `port` answers."""
        self.spawn(name, argv or self.command(name))
        wait_for(lambda: port_open(port), timeout=30, what=name)

    def command(self, name: str) -> list[str]:
        """The service's Procfile.local command: it `exec`s its program, the session's leader."""
        return ["bash", "-c", procfile()[ENTRIES[name]]]

    def manage(self, *args: str) -> None:
        """One manage.py command to completion; its output goes to manage.log."""
        done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True)
        with open(self.workdir / "manage.log", "ab") as log:
            log.write(f"$ manage.py {' '.join(args)} -> {done.returncode}\n".encode())
            log.write(done.stdout + done.stderr)
        if done.returncode:
            tail = (done.stderr or done.stdout).decode().strip()[-800:]
            raise RuntimeError(f"manage.py {' '.join(args)} failed ({done.returncode}): {tail}")

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """As make run stops a service: the signal to its leader (SIGKILL: to its group), then
        SIGKILL to whatever is left of the group after `timeout`."""
        if (proc := self.procs.pop(name, None)) is None:
            return
        self.retired_cpu[name] = self.retired_cpu.get(name, 0.0) + session_cpu().get(proc.pid, 0)
        for send, wait in ((sig, timeout), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, send) if send == signal.SIGKILL else proc.send_signal(send)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
        self.logs.pop(name).close()

    def stop_all(self) -> None:
        for name in ("k6", "redrive", "web", "cluster", "factory", "proxy", "moto", *self.procs):
            self.stop(name)

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def start(self, setup: Callable[[], None] | None = None) -> None:
        """A fresh database with the catalog, then `setup` (before any loop runs), then every
        service; the cluster provisions the topics and queues."""
        c = self.config
        ports = [c.web_port, c.factory_port, c.proxy_port, c.redis_port, c.mail_port, c.moto_port]
        if taken := [str(p) for p in ports if p and port_open(p)]:
            raise RuntimeError(f"port(s) {', '.join(taken)} in use: choose others (see --help)")
        self.service("moto", c.moto_port)
        if c.proxy_port:
            proxy = [PY, "bench/rush_proxy.py", str(c.proxy_port), str(c.moto_port)]
            self.service("proxy", c.proxy_port, proxy)
        for name, port in (("redis", c.redis_port), ("mail", c.mail_port)):
            if port:
                self.service(name, port)
        recreate_database(c.database_url)
        self.manage("migrate", "--noinput", "-v0")
        self.manage("load_catalog")
        if setup is not None:
            setup()
        self.service("factory", c.factory_port)
        self.start_worker()
        self.start_web()

    def start_worker(self) -> None:
        """As make run: setup_worker, then the cluster (provision_aws, then qcluster)."""
        self.manage("setup_worker")
        self.spawn("cluster", self.command("cluster"))
        # Master, sentinel, pusher, monitor and the workers: all forked, it is polling.
        pid, wanted = self.procs["cluster"].pid, 4 + self.config.q_workers

        def forked() -> bool:
            return sum(int(f[4]) == pid for f in proc_stats().values()) >= wanted

        wait_for(forked, timeout=60, what="django-q2 cluster")

    def start_web(self) -> None:
        self.spawn("web", self.command("web"))
        healthz = f"{self.base_url}/healthz"
        wait_for(lambda: requests.get(healthz, timeout=2).ok, timeout=60, what="gunicorn")

    def restart(self, *, events: bool, limits: bool = False) -> None:
        """Web and cluster again, events on or off, limits off or at production's defaults."""
        self.stop("web")
        self.stop("cluster")
        self.events, self.limits = events, limits
        self.start_worker()
        self.start_web()

    def aws(self, up: bool) -> None:
        """The outage drill: the proxy in front of moto refuses connections, or serves again."""
        os.kill(self.procs["proxy"].pid, signal.SIGUSR2 if up else signal.SIGUSR1)
        if up:
            wait_for(lambda: port_open(self.config.proxy_port or 0), timeout=10, what="proxy")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per service (stopped ones included), per MariaDB process, of this
        script and its reaped children (k6, commands), and of the machine: for cpu_spent()."""
        sessions, snap = session_cpu(), dict(self.retired_cpu)
        for name, proc in self.procs.items():
            if name != "k6":  # reaped by the script: counted with its children
                snap[name] = snap.get(name, 0.0) + sessions.get(proc.pid, 0.0)
        snap |= {f"_mysql:{pid}": seconds for pid, seconds in named_cpu().items()}
        times = os.times()
        snap |= {
            "bench": times.user + times.system,
            "k6": times.children_user + times.children_system,
        }
        snap["_machine"], snap["_idle"] = machine_cpu()
        return snap


def events_in(body: str) -> list[dict[str, Any]]:
    """The events of one SQS message: an SNS envelope or the raw message; a `sales.batch`
    carries many."""
    message = json.loads(body)
    if message.get("Type") == "Notification" and "Message" in message:
        message = json.loads(message["Message"])
    return list(message["events"]) if message.get("type") == "sales.batch" else [message]


class OpsReader:
    """Reads the operations queue as the operations team would: every event once by its
    event_id, timed by SQS's SentTimestamp, and per order the events that told of it."""

    WAIT = 1  # seconds one receive waits for messages

    def __init__(self, *, sqs: Any, url: str, threads: int = 2) -> None:
        self.sqs, self.url = sqs, url
        self.seen: dict[str, tuple[float, str]] = {}  # event_id -> (queued at, type)
        self.orders: dict[int, str] = {}  # order_id -> event_id of its order.completed
        self.by_order: dict[str, dict[str, set[str]]] = {}  # order id or reference -> type -> ids
        self.deliveries = self.unreadable = self.errors = 0  # deliveries: duplicates included
        self.lock, self.stopping, self.reading = (
            threading.Lock(),
            threading.Event(),
            threading.Event(),
        )
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
        time.sleep(self.WAIT + 0.2)  # the receives under way return

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
                ask = {"MaxNumberOfMessages": 10, "AttributeNames": ["SentTimestamp"]}
                got = self.sqs.receive_message(QueueUrl=self.url, WaitTimeSeconds=self.WAIT, **ask)
                got = got.get("Messages", [])
                with self.lock:
                    for message in got:
                        self._read(message)
                if got:
                    done = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ]
                    self.sqs.delete_message_batch(QueueUrl=self.url, Entries=done)
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
                for key in (event.get("order_id"), event.get("reference")):
                    if key is not None:
                        self.by_order.setdefault(str(key), {}).setdefault(kind, set()).add(event_id)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.unreadable += 1
