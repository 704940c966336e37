"""`make run` as a developer uses it: bin/run, then honcho running Procfile.local, on free
ports with a database of its own."""

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import MySQLdb
import pytest
import requests

pytestmark = pytest.mark.run

ROOT = Path(__file__).resolve().parents[1]
OLD_FIXED_PASSWORD = "nudged-admin"
START_TIMEOUT = 240
# honcho kills what has not stopped 5 s after its TERM (nothing should be left by then).
STOP_TIMEOUT = 15
LOCAL_PROCESSES = {"web", "cluster", "aws", "factory", "redis", "mail"}
# Every process a run starts inherits this variable, with a value of its own per run.
MARKER = "NUDGED_TEST_RUN"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    """The checkout's DATABASE_URL with a database of the test's own."""
    url = urlsplit(os.environ.get("DATABASE_URL", "mysql://root@127.0.0.1:3306/nudged"))
    return url._replace(path=f"{url.path}_run").geturl()


def _mysql(url: str) -> MySQLdb.Connection:
    parts = urlsplit(url)
    return MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        passwd=parts.password or "",
    )


def _marked(marker: str) -> list[int]:
    """Live (not zombie) processes started with MARKER=marker in their environment."""
    wanted = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if wanted in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


class Run:
    """One `make run` in a session of its own, as a terminal would start it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.env = env
        self.log = log
        self.run_dir = Path(env["RUN_DIR"])
        self.url = f"http://127.0.0.1:{env['PORT']}"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                ["make", "--no-print-directory", "run"],
                cwd=ROOT,
                env={**env, MARKER: self.marker},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def started(self) -> set[str]:
        """The processes honcho says it started: `system | web.1 started (pid=…)`."""
        return {
            line.split("| ", 1)[1].split(".", 1)[0]
            for line in self.output.splitlines()
            if " system " in line and line.endswith(")") and " started (pid=" in line
        }

    def processes(self) -> list[int]:
        return _marked(self.marker)

    def honcho(self) -> int:
        """honcho's own process: bin/run became it, as make's child."""
        [pid] = [
            pid
            for pid in self.processes()
            if _parent(pid) == self.proc.pid and "honcho" in _command_line(pid)
        ]
        return pid

    def wait_until_running(self, processes: set[str] = LOCAL_PROCESSES) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"make run exited:\n{self.output}"
            if self.started() == processes:
                try:
                    answer = requests.get(f"{self.url}/healthz", timeout=5, allow_redirects=False)
                    if answer.status_code < 500:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.5)
        raise AssertionError(f"make run did not serve within {START_TIMEOUT}s:\n{self.output}")

    def stop(self, signum: int, *, pid: int | None = None) -> list[int]:
        """Send `signum` to `pid`, or to the run's process group (a terminal's Ctrl-C); return
        the processes of the run still there STOP_TIMEOUT seconds later."""
        if pid is None:
            os.killpg(self.proc.pid, signum)
        else:
            os.kill(pid, signum)
        deadline = time.monotonic() + STOP_TIMEOUT
        self.proc.wait(timeout=STOP_TIMEOUT)
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def kill(self) -> None:
        """Leave nothing behind, whatever a failed test left running."""
        for pid in [self.proc.pid, *self.processes()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def run_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a developer's shell: a fresh database, free ports, local settings."""
    database_url = _database_url()
    name = urlsplit(database_url).path.lstrip("/")
    connection = _mysql(database_url)
    connection.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DJANGO_SETTINGS_MODULE",
            "AWS_ENDPOINT_URL",
            "AWS_SESSION_TOKEN",
            "EMAIL_HOST",
            "CACHE_URL",
        }
    }
    env.update(
        DATABASE_URL=database_url,
        RUN_DIR=str(tmp_path_factory.mktemp("run")),
        PORT=str(_free_port()),
        MOTO_PORT=str(_free_port()),
        FACTORY_PORT=str(_free_port()),
        MAIL_PORT=str(_free_port()),
        REDIS_PORT=str(_free_port()),
        WEB_WORKERS="1",
        Q_WORKERS="6",
        FACTORY_DELAY="1",
        LOG_LEVEL="WARNING",
    )
    yield env
    connection.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    connection.close()


@pytest.fixture(scope="module")
def first_run(run_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run = Run(run_env, tmp_path_factory.mktemp("logs") / "first.log")
    try:
        run.wait_until_running()
        yield run
    finally:
        if run.proc.poll() is None or run.processes():
            run.kill()


def _log_in(url: str, username: str, password: str) -> bool:
    session = requests.Session()
    session.get(f"{url}/admin/login/", timeout=10)
    answer = session.post(
        f"{url}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{url}/admin/login/"},
        timeout=10,
    )
    return answer.url.rstrip("/").endswith("/admin") and "sessionid" in session.cookies


def test_make_run_starts_every_process_of_the_local_procfile(first_run: Run) -> None:
    local_procfile = (ROOT / "Procfile.local").read_text()
    declared = {line.split(":", 1)[0] for line in local_procfile.splitlines() if line[:1].isalpha()}
    honcho = first_run.honcho()
    # Each process runs in a session of its own (as make does here), as honcho's grandchild.
    services = [
        pid for pid in first_run.processes() if os.getsid(pid) == pid and pid != first_run.proc.pid
    ]

    assert declared == LOCAL_PROCESSES
    assert first_run.started() == LOCAL_PROCESSES
    assert len(services) == len(LOCAL_PROCESSES)
    assert all(_parent(_parent(pid)) == honcho for pid in services)
    assert "Procfile.local" in _command_line(honcho)
    # The cluster provisions the local endpoint once it answers, then runs the loops.
    deadline = time.monotonic() + 60
    while (health := requests.get(f"{first_run.url}/healthz", timeout=10).json()) != {
        "status": "ok",
        "database": "ok",
        "queues": "ok",
        "outbox": "ok",
        "pollers": "ok",
    }:
        assert time.monotonic() < deadline, health
        time.sleep(1)
    assert "cluster.1 | Provisioning done: changed." in first_run.output
    with socket.create_connection(("127.0.0.1", int(first_run.env["MAIL_PORT"])), timeout=5):
        pass
    assert "Mail         every message is saved in" in first_run.output
    # The rate limits count in make run's own Redis.
    redis_port = int(first_run.env["REDIS_PORT"])
    assert f"Limits       redis://127.0.0.1:{redis_port}/0" in first_run.output
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as redis:
        redis.sendall(b"PING\r\n")
        assert redis.recv(16) == b"+PONG\r\n"


def test_first_start_creates_the_superuser_with_a_random_password(first_run: Run) -> None:
    password_file = first_run.run_dir / "admin-password"
    password = password_file.read_text().strip()

    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert len(password) >= 20 and password != OLD_FIXED_PASSWORD
    assert f"Created superuser admin with password {password}" in first_run.output
    assert _log_in(first_run.url, "admin", password)
    assert not _log_in(first_run.url, "admin", OLD_FIXED_PASSWORD)


def test_env_sh_gives_an_operator_shell_what_the_system_has(first_run: Run) -> None:
    env_sh = first_run.run_dir / "env.sh"
    clean_shell = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}

    provision = subprocess.run(
        ["bash", "-c", 'source "$1" && .venv/bin/python manage.py provision_aws', "-", env_sh],
        cwd=ROOT,
        env={**clean_shell, "LOG_LEVEL": "DEBUG", "SQS_OPS_RETENTION": "60"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert stat.S_IMODE(env_sh.stat().st_mode) == 0o600
    assert provision.returncode == 0, provision.stderr
    assert "Provisioning done: nothing to change." in provision.stdout, provision.stdout
    assert "export LOG_LEVEL=WARNING" in env_sh.read_text()
    # The secrets too, which the settings read as they are (os.environ).
    assert re.search(r"^(export|unset) SECRET_KEY\b", env_sh.read_text(), re.MULTILINE)


def test_metrics_and_health_details_answer_the_tokens_in_env_sh(first_run: Run) -> None:
    env_sh = first_run.run_dir / "env.sh"

    tokens = {}
    for name in ("METRICS_TOKEN", "HEALTHZ_TOKEN"):
        token_file = first_run.run_dir / name.lower().replace("_", "-")
        tokens[name] = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert len(tokens[name]) >= 20
        assert f"export {name}={tokens[name]}\n" in env_sh.read_text()
    metrics = requests.get(
        f"{first_run.url}/metrics",
        headers={"Authorization": f"Bearer {tokens['METRICS_TOKEN']}"},
        timeout=10,
    )
    health = requests.get(
        f"{first_run.url}/healthz",
        headers={"Authorization": f"Bearer {tokens['HEALTHZ_TOKEN']}"},
        timeout=10,
    )

    assert metrics.status_code == 200
    assert "nudged_stock{" in metrics.text
    assert isinstance(health.json()["database"], dict)
    assert "Metrics      " in first_run.output


def test_the_factory_simulator_stops_and_restarts_alone(first_run: Run) -> None:
    env_sh = first_run.run_dir / "env.sh"
    factory = f"http://127.0.0.1:{first_run.env['FACTORY_PORT']}/api/manufactures"

    def factory_command(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f'source "$1" && {command}', "-", env_sh],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=60,
        )

    failing = factory_command("FACTORY_FAILURE_RATE=1 bin/factory")
    assert failing.returncode == 0, failing.stderr
    assert "failure rate 1" in failing.stdout
    assert requests.post(factory, json={}, timeout=10).status_code == 500
    stopped = factory_command("bin/factory stop")
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(requests.ConnectionError):
        requests.post(factory, json={}, timeout=10)
    refused = factory_command("FACTORY_FAILURE_RATE=2 bin/factory")
    assert refused.returncode == 1
    assert "FACTORY_FAILURE_RATE must be between 0 and 1" in refused.stderr
    back = factory_command("bin/factory")
    assert back.returncode == 0, back.stderr
    assert requests.post(factory, json={}, timeout=10).status_code == 201

    assert first_run.proc.poll() is None
    assert first_run.started() == LOCAL_PROCESSES
    assert " stopped (rc=" not in first_run.output
    assert requests.get(f"{first_run.url}/healthz", timeout=10).status_code == 200


def test_term_to_honcho_stops_everything(first_run: Run) -> None:
    assert len(first_run.processes()) > len(LOCAL_PROCESSES)  # with workers and honcho's own

    left = first_run.stop(signal.SIGTERM, pid=first_run.honcho())

    assert left == [], f"still running {STOP_TIMEOUT}s after TERM: {left}\n{first_run.output}"
    assert "SIGTERM received" in first_run.output
    # Every process stopped of its own accord, before honcho's KILL: make run ends cleanly.
    assert "SIGKILL" not in first_run.output
    for name in LOCAL_PROCESSES:
        assert f"{name}.1 stopped (rc=0)" in first_run.output
    assert first_run.proc.returncode == 0, first_run.output
    assert "make: ***" not in first_run.output


def test_a_second_start_reuses_the_password_refuses_a_third_and_stops_on_ctrl_c(
    first_run: Run, run_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert first_run.proc.poll() is not None, "the first run is still running"
    password = (first_run.run_dir / "admin-password").read_text()
    logs = tmp_path_factory.mktemp("logs")
    run = Run(run_env, logs / "second.log")
    try:
        run.wait_until_running()

        assert (run.run_dir / "admin-password").read_text() == password
        assert "Created superuser" not in run.output
        assert password not in run.output

        third = Run(run_env, logs / "third.log")
        assert third.proc.wait(timeout=120) != 0
        assert f"Port {run_env['PORT']} (PORT) is in use" in third.output
        assert third.processes() == []
        assert requests.get(f"{run.url}/healthz", timeout=10).status_code == 200

        left = run.stop(signal.SIGINT)
        assert left == [], f"still running {STOP_TIMEOUT}s after INT: {left}\n{run.output}"
        assert "SIGINT received" in run.output
        assert "SIGKILL" not in run.output
        assert "make: ***" not in run.output
    finally:
        if run.proc.poll() is None or run.processes():
            run.kill()


def test_no_superuser_is_created_under_production_settings(
    run_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        **run_env,
        "RUN_DIR": str(tmp_path_factory.mktemp("run-production")),
        "PORT": str(_free_port()),
        "MOTO_PORT": str(_free_port()),
        "FACTORY_PORT": str(_free_port()),
        "MAIL_PORT": str(_free_port()),
        "REDIS_PORT": str(_free_port()),
        "DJANGO_SETTINGS_MODULE": "nudged.settings.production",
        "SECRET_KEY": "production-like-key-for-this-test-only-7d1e9c3b5a",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_BASE_URL": "https://shop.example.com",
        "ADMIN_USER": "production-admin",
    }
    run = Run(env, tmp_path_factory.mktemp("logs") / "production.log")
    try:
        run.wait_until_running()

        assert not (run.run_dir / "admin-password").exists()
        assert "no superuser created under nudged.settings.production" in run.output
        with _mysql(env["DATABASE_URL"]) as connection:
            cursor = connection.cursor()
            name = urlsplit(env["DATABASE_URL"]).path.lstrip("/")
            cursor.execute(
                f"SELECT COUNT(*) FROM `{name}`.auth_user WHERE username = %s", ["production-admin"]
            )
            assert cursor.fetchone() == (0,)
        assert run.stop(signal.SIGTERM) == []
    finally:
        if run.proc.poll() is None or run.processes():
            run.kill()
