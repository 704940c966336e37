"""The process files: what runs in production (Procfile) and under `make run` (Procfile.local),
and docs/deploy.md naming every variable the production processes read."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
from django.conf import settings
from honcho.environ import parse_procfile

from tests.factory_bridge.test_clusters import database_url
from tests.test_run import MARKER, _marked

ROOT = Path(settings.BASE_DIR)
BIN = Path(sys.executable).parent


def processes(procfile: str) -> dict[str, str]:
    """Process name → command, as honcho reads a process file."""
    return parse_procfile((ROOT / procfile).read_text()).processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_procfile_runs_web_and_cluster_and_make_run_adds_the_stand_ins() -> None:
    production, local = processes("Procfile"), processes("Procfile.local")

    assert list(production) == ["web", "cluster"]
    assert list(local) == ["web", "cluster", "aws", "factory", "redis", "mail"]
    assert production["web"].startswith("exec gunicorn nudged.wsgi:application ")
    assert local["web"].startswith("exec gunicorn nudged.wsgi:application ")
    assert production["cluster"] == "exec python manage.py qcluster"
    assert local["cluster"].endswith(f"&& {production['cluster']}")
    for command in (*production.values(), *local.values()):
        # Each line ends in the program itself, so that its signals reach it.
        assert command.startswith("exec ") or " && exec " in command, command


def test_the_procfile_serves_under_production_settings_and_stops_on_term(
    transactional_db, tmp_path: Path
) -> None:
    port = free_port()
    marker = uuid.uuid4().hex
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_WORKERS": "1",
        "Q_WORKERS": "2",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": "procfile-test-key-9d2f0c4e6b8a1357",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PUBLIC_BASE_URL": "https://shop.example.com",
        MARKER: marker,
    }
    log = tmp_path / "honcho.log"
    with log.open("w") as out:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "start", "--env", "/dev/null", "--procfile", "Procfile"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert honcho.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if answer.status_code == 200 and "cluster.1 started" in log.read_text():
                    break
            time.sleep(0.5)
        # Under production settings, anything but /healthz is redirected to https.
        assert (
            requests.get(f"http://127.0.0.1:{port}/", timeout=5, allow_redirects=False)
            .headers["Location"]
            .startswith("https://")
        )
        time.sleep(2)
        assert " stopped (rc=" not in log.read_text(), log.read_text()

        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=15)
        deadline = time.monotonic() + 15
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _marked(marker) == [], log.read_text()
    finally:
        for pid in [honcho.pid, *_marked(marker)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_deploy_md_names_every_variable_the_production_settings_read() -> None:
    sources = "".join(
        (ROOT / "nudged" / "settings" / name).read_text() for name in ("base.py", "production.py")
    )
    read = set(re.findall(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', sources))
    read |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]*)"', sources))
    read |= set(re.findall(r'_required\(\s*"([A-Z][A-Z0-9_]*)"', sources))
    deploy = (ROOT / "docs" / "deploy.md").read_text()

    assert len(read) > 50
    assert sorted(name for name in read if f"`{name}`" not in deploy) == []
