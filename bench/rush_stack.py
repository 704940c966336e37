"""The system under test for bench/rush.py, started the way `make run` (bin/run) starts it.

moto server (unless an endpoint is given), a TCP proxy in front of the AWS endpoint (the
outage drill takes it down), the legacy factory simulator, `setup_worker` + `qcluster` and
gunicorn — each on the rush's own ports and database, each in its own process group so it
can be killed (drills) or stopped (always) without touching anything else on the machine.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import environ
import MySQLdb
import requests

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
BIN = ROOT / ".venv" / "bin"
REAL_AWS = "aws"


@dataclass(frozen=True)
class StackConfig:
    workdir: Path
    database_url: str
    web_port: int
    factory_port: int
    moto_port: int
    proxy_port: int
    web_workers: int
    q_workers: int
    factory_delay: float
    factory_failure_rate: float
    skus: tuple[str, ...]
    stock: int
    restock_quantity: int
    # Product.replenishment_mode of the rush's products ("adaptive" or "at_zero").
    mode: str
    purchase_limit: int
    purchase_window: int | None
    rate_limit: str
    # None: start moto server; "aws": real AWS (no proxy); else an http(s) endpoint URL.
    aws_endpoint: str | None
    prefix: str
    log_level: str


def db_config(url: str) -> dict:
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
    conn = MySQLdb.connect(charset="utf8mb4", connect_timeout=3, autocommit=True, **cfg)
    return conn


def columns(conn: MySQLdb.Connection, table: str) -> set[str]:
    cur = conn.cursor()
    cur.execute(f"SHOW COLUMNS FROM `{table}`")
    return {row[0] for row in cur.fetchall()}


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def session_cpu() -> dict[int, float]:
    """CPU seconds (reaped children included) per session id, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        session = int(fields[3])
        seconds[session] = seconds.get(session, 0.0) + sum(int(f) for f in fields[11:15]) / tick
    return seconds


def wait_for(check, *, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


class Stack:
    """Start, drill and stop the processes of one rush."""

    def __init__(self, config: StackConfig, log: IO[str] = sys.stdout) -> None:
        self.config = config
        self.log = log
        self.procs: dict[str, subprocess.Popen] = {}
        # CPU seconds of processes already stopped (a killed worker), per component.
        self.retired_cpu: dict[str, float] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = self._environment()
        # The mode the products run in: None until prepare(), "at_zero" without the column.
        self.mode: str | None = None

    # --- endpoints ------------------------------------------------------------------------
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
        """Where the bench's own instruments reach AWS: past the proxy, so an outage of the
        app's endpoint does not blind them."""
        if self.real_aws:
            return None
        return self.config.aws_endpoint or f"http://127.0.0.1:{self.config.moto_port}"

    @property
    def app_endpoint(self) -> str:
        """What the app is given as AWS_ENDPOINT_URL ("" = real AWS)."""
        if self.real_aws:
            return ""
        return f"http://127.0.0.1:{self.config.proxy_port}"

    @property
    def names(self) -> dict[str, str]:
        p = self.config.prefix
        return {
            "SNS_STOCK_TOPIC": f"{p}-stock-events",
            "SNS_SALES_TOPIC": f"{p}-sales-events",
            "SQS_RESTOCK_QUEUE": f"{p}-restock",
            "SQS_RESTOCK_DLQ": f"{p}-restock-dlq",
            "SQS_OPS_QUEUE": f"{p}-ops",
        }

    def _environment(self) -> dict[str, str]:
        c = self.config
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SQS_", "SNS_"))}
        env.update(
            DJANGO_SETTINGS_MODULE="nudged.settings.local",
            DEBUG="0",
            DATABASE_URL=c.database_url,
            PUBLIC_BASE_URL=self.base_url,
            FACTORY_API_URL=self.factory_url,
            AWS_ENDPOINT_URL=self.app_endpoint,
            AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "ap-northeast-2"),
            # Short enough that failed factory calls reach the DLQ, and lost callbacks are
            # re-ordered, within a few-minute run; never shorter than the factory takes.
            SQS_VISIBILITY_TIMEOUT="6",
            # The local simulator answers at once; the visibility must outlast one call.
            FACTORY_CONNECT_TIMEOUT="1",
            FACTORY_READ_TIMEOUT="2",
            SQS_MAX_RECEIVE_COUNT="3",
            SQS_WAIT_TIME="2",
            FACTORY_CALLBACK_TIMEOUT=str(max(30, round(3 * c.factory_delay))),
            # What an operator configures for this factory; the app measures it from there.
            FACTORY_LEAD_TIME=f"{c.factory_delay:g}",
            # Each customer is its own client address (X-Forwarded-For from k6's customers).
            NUM_PROXIES="1",
            PURCHASE_LIMIT=str(c.purchase_limit),
            ORDER_RATE_LIMIT=c.rate_limit,
            Q_WORKERS=str(c.q_workers),
            LOG_LEVEL=c.log_level,
            PYTHONUNBUFFERED="1",
            **self.names,
        )
        if c.purchase_window is not None:
            env["PURCHASE_LIMIT_WINDOW"] = str(c.purchase_window)
        if not self.real_aws and not c.aws_endpoint:
            env.setdefault("AWS_ACCESS_KEY_ID", "testing")
            env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        return env

    # --- processes ------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[rush {time.strftime('%H:%M:%S')}] {text}", file=self.log, flush=True)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        self.logs[name] = out
        return proc

    def manage(self, *args: str, timeout: float = 300, check: bool = True) -> str:
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
        if check and result.returncode != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result.stdout

    def stop(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        spent = session_cpu().get(proc.pid, 0.0)
        self.retired_cpu[name] = self.retired_cpu.get(name, 0.0) + spent
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        # Whatever is left of the group (a worker that ignored SIGTERM) is killed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.say(f"{name} (pid {proc.pid}) did not exit after SIGKILL")
        out = self.logs.pop(name, None)
        if out is not None:
            out.close()

    def stop_all(self) -> None:
        for name in ("k6", "redrive", "web", "qcluster", "factory", "proxy", "moto"):
            self.stop(name)
        for name in list(self.procs):
            self.stop(name)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    # --- bring-up -------------------------------------------------------------------------
    def check_ports(self) -> None:
        c = self.config
        ports = [c.web_port, c.factory_port]
        if not self.real_aws:
            ports.append(c.proxy_port)
        if c.aws_endpoint is None:
            ports.append(c.moto_port)
        taken = [p for p in ports if port_open(p)]
        if taken:
            raise RuntimeError(
                f"port(s) {', '.join(map(str, taken))} already in use (another rush running?); "
                "choose others with --web-port / --factory-port / --moto-port / --proxy-port"
            )

    def fresh_database(self) -> None:
        name = db_config(self.config.database_url)["db"]
        if "rush" not in name:
            # The rush drops and recreates its database: never anyone else's.
            raise RuntimeError(
                f"refusing to recreate database {name!r}: its name must contain 'rush'"
            )
        conn = connect(self.config.database_url, database=False)
        try:
            cur = conn.cursor()
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        finally:
            conn.close()

    def start_aws(self) -> None:
        c = self.config
        if c.aws_endpoint is None:
            self.spawn(
                "moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(c.moto_port)]
            )
            wait_for(lambda: port_open(c.moto_port), timeout=30, what="moto server")
        if not self.real_aws:
            target = urlsplit(self.direct_endpoint or "")
            if target.scheme != "http":
                raise RuntimeError("the proxy forwards plain http endpoints only")
            port = target.port or 80
            self.spawn(
                "proxy",
                [
                    PY,
                    str(ROOT / "bench" / "rush_proxy.py"),
                    "--listen",
                    str(c.proxy_port),
                    "--target",
                    f"{target.hostname}:{port}",
                ],
            )
            wait_for(lambda: port_open(c.proxy_port), timeout=15, what="AWS endpoint proxy")

    def prepare(self) -> None:
        """Database, catalog, small stock, topics and queues: everything before the processes."""
        c = self.config
        self.fresh_database()
        self.manage("migrate", "--noinput", "-v0")
        self.manage("load_catalog")
        self.mode = self.set_mode()
        skus = ", ".join(repr(s) for s in c.skus)
        self.manage(
            "shell",
            "-v0",
            "-c",
            "from inventory.models import Product\n"
            "from inventory.services import set_stock\n"
            f"for sku in [{skus}]:\n"
            f"    set_stock(sku=sku, quantity={c.stock}, note='rush')\n"
            f"Product.objects.filter(sku__in=[{skus}]).update(restock_quantity={c.restock_quantity})",
        )
        self.manage("provision_aws")

    def set_mode(self) -> str:
        """Set the rush products' replenishment mode before their stock is set, so that no
        decision of the other mode is made; without the column the app knows only restocking
        at zero."""
        conn = connect(self.config.database_url)
        try:
            if "replenishment_mode" not in columns(conn, "inventory_product"):
                return "at_zero"
            conn.cursor().execute(
                "UPDATE inventory_product SET replenishment_mode = %s WHERE sku IN %s",
                (self.config.mode, self.config.skus),
            )
        finally:
            conn.close()
        return self.config.mode

    def start_factory(self) -> None:
        c = self.config
        self.spawn(
            "factory",
            [
                PY,
                "manage.py",
                "run_factory",
                "--port",
                str(c.factory_port),
                "--delay",
                str(c.factory_delay),
                "--failure-rate",
                str(c.factory_failure_rate),
                "--seed",
                "7",
            ],
        )
        wait_for(lambda: port_open(c.factory_port), timeout=30, what="factory simulator")

    def start_worker(self) -> None:
        self.manage("setup_worker")
        self.spawn("qcluster", [PY, "manage.py", "qcluster"])

    def start_web(self) -> None:
        c = self.config
        self.spawn(
            "web",
            [
                str(BIN / "gunicorn"),
                "nudged.wsgi:application",
                "--bind",
                f"127.0.0.1:{c.web_port}",
                "--workers",
                str(c.web_workers),
                "--access-logfile",
                str(self.workdir / "access.log"),
                "--error-logfile",
                "-",
            ],
        )
        wait_for(
            lambda: requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200,
            timeout=60,
            what="gunicorn",
            interval=0.5,
        )

    def start(self) -> None:
        self.check_ports()
        self.start_aws()
        self.prepare()
        self.start_factory()
        self.start_worker()
        self.start_web()

    # --- drills ---------------------------------------------------------------------------
    def aws_down(self) -> None:
        os.kill(self.procs["proxy"].pid, signal.SIGUSR1)

    def aws_up(self) -> None:
        os.kill(self.procs["proxy"].pid, signal.SIGUSR2)
        wait_for(lambda: port_open(self.config.proxy_port), timeout=10, what="AWS endpoint proxy")

    def kill_worker(self) -> None:
        self.stop("qcluster", sig=signal.SIGKILL, timeout=5)
