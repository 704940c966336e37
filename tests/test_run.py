"""`make run` as a developer uses it: bin/run on free ports, with a database of its own."""

import contextlib
import os
import signal
import socket
import stat
import subprocess
import time
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
STOP_TIMEOUT = 15


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


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat_line.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _members(groups: list[int]) -> list[int]:
    return [pid for pgid in groups for pid in _group_members(pgid)]


class Run:
    """One bin/run process in a session of its own (as a terminal would start `make run`)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.run_dir = Path(env["RUN_DIR"])
        self.url = f"http://127.0.0.1:{env['PORT']}"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / "bin" / "run")],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_until_running(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"bin/run exited:\n{self.output}"
            if "Nudged is running" in self.output:
                try:
                    if (
                        requests.get(
                            f"{self.url}/healthz", timeout=5, allow_redirects=False
                        ).status_code
                        < 500
                    ):
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.5)
        raise AssertionError(f"bin/run did not serve within {START_TIMEOUT}s:\n{self.output}")

    def groups(self) -> list[int]:
        """bin/run's own process group and those of the services it recorded."""
        recorded = [int(p.read_text()) for p in (self.run_dir / "pids").iterdir()]
        return [self.proc.pid, *recorded]

    def stop(self, signum: int) -> list[int]:
        """Send `signum` to bin/run's process group; the processes of its groups left after 15 s."""
        groups = self.groups()
        deadline = time.monotonic() + STOP_TIMEOUT
        os.killpg(self.proc.pid, signum)
        self.proc.wait(timeout=STOP_TIMEOUT)
        # An empty process group stays empty: no process can join a group that is gone.
        while (left := _members(groups)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def kill(self) -> None:
        """Leave nothing behind, whatever a failed test left running."""
        for pgid in self.groups() if self.run_dir.joinpath("pids").exists() else [self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
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
        not in {"DJANGO_SETTINGS_MODULE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "EMAIL_HOST"}
    }
    env.update(
        DATABASE_URL=database_url,
        RUN_DIR=str(tmp_path_factory.mktemp("run")),
        PORT=str(_free_port()),
        MOTO_PORT=str(_free_port()),
        FACTORY_PORT=str(_free_port()),
        MAIL_PORT=str(_free_port()),
        WEB_WORKERS="1",
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
        if run.proc.poll() is None:
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


def test_the_factory_simulator_restarts_alone(first_run: Run) -> None:
    env_sh = first_run.run_dir / "env.sh"
    factory = f"http://127.0.0.1:{first_run.env['FACTORY_PORT']}/api/manufactures"

    def factory_command(command: str) -> None:
        subprocess.run(
            ["bash", "-c", f'source "$1" && {command}', "-", env_sh],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"]},
            check=True,
            capture_output=True,
            timeout=60,
        )

    factory_command("FACTORY_FAILURE_RATE=1 bin/factory")
    assert requests.post(factory, json={}, timeout=10).status_code == 500
    factory_command("bin/factory stop")
    with pytest.raises(requests.ConnectionError):
        requests.post(factory, json={}, timeout=10)
    factory_command("bin/factory")
    assert requests.post(factory, json={}, timeout=10).status_code == 201
    assert first_run.proc.poll() is None
    assert requests.get(f"{first_run.url}/healthz", timeout=10).status_code == 200


def test_term_to_its_process_group_stops_everything(first_run: Run) -> None:
    assert len(first_run.groups()) == 6  # bin/run, moto, mail, factory, cluster, web
    assert "Local mail: every message is saved in" in first_run.output

    left = first_run.stop(signal.SIGTERM)

    assert left == [], f"still running {STOP_TIMEOUT}s after TERM: {left}\n{first_run.output}"
    assert "Stopping Nudged..." in first_run.output


def test_a_start_stops_what_a_killed_run_left_and_reuses_the_password(
    first_run: Run, run_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert first_run.proc.poll() is not None, "the first run is still running"
    password = (first_run.run_dir / "admin-password").read_text()
    logs = tmp_path_factory.mktemp("logs")
    killed = Run(run_env, logs / "killed.log")
    run = None
    try:
        killed.wait_until_running()
        services = killed.groups()[1:]
        killed.proc.kill()  # KILL cannot be trapped: bin/run's services go on running
        killed.proc.wait(timeout=10)
        assert _members(services)

        run = Run(run_env, logs / "second.log")
        run.wait_until_running()

        assert "Stopping what a previous run left running" in run.output
        assert _members(services) == []
        assert (run.run_dir / "admin-password").read_text() == password
        assert "Created superuser" not in run.output
        assert password not in run.output
        left = run.stop(signal.SIGINT)
        assert left == [], f"still running {STOP_TIMEOUT}s after INT: {left}\n{run.output}"
    finally:
        for started in (killed, run):
            if started is not None and started.proc.poll() is None:
                started.kill()


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
        if run.proc.poll() is None:
            run.kill()
