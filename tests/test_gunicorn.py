"""The web server as deployed: gunicorn with the project's gunicorn.conf.py."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.test_settings import ROOT, run

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
# What a signed callback token looks like: payload, timestamp, signature.
TOKEN = "MTIz:1vA3xQ:Zm9yZ2VkLXNpZ25hdHVyZS1ub3QtYS1yZWFsLW9uZQ"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_stops_at_once_with_one_line_when_production_is_incomplete():
    started = time.monotonic()

    result = run([GUNICORN, "nudged.wsgi:application", "--bind", f"127.0.0.1:{free_port()}"])

    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert "nudged.settings.production: SECRET_KEY is not set; production needs it." in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr


@pytest.fixture
def web(tmp_path: Path):  # type: ignore[no-untyped-def]
    """gunicorn serving Nudged with an access log, as `make run` starts it."""
    port = free_port()
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    with errors.open("w") as stderr:
        proc = subprocess.Popen(
            [
                *(GUNICORN, "nudged.wsgi:application", "--bind", f"127.0.0.1:{port}"),
                *("--workers", "1", "--access-logfile", str(access), "--error-logfile", "-"),
            ],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "nudged.settings.test"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    requests.get(f"http://127.0.0.1:{port}/api/schema/", timeout=10)
                    break
                except requests.RequestException:  # not listening yet, or still booting
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}", access, errors
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_no_log_holds_a_callback_token_whole(web):
    url, access, errors = web

    response = requests.post(f"{url}/factory/callbacks/{TOKEN}/", json={}, timeout=10)

    assert response.status_code == 403
    time.sleep(0.5)  # the access log is written after the response
    access_log, error_log = access.read_text(), errors.read_text()
    assert f'"POST /factory/callbacks/{TOKEN[:8]}.../ HTTP/1.1" 403' in access_log
    assert f"Forbidden: /factory/callbacks/{TOKEN[:8]}.../" in error_log
    assert TOKEN[8:] not in access_log + error_log


@pytest.mark.django_db(transaction=True)
def test_metrics_add_up_the_requests_of_every_worker(tmp_path: Path, settings):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")
    port = free_port()
    database = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nudged.settings.test",
        "DATABASE_URL": f"mysql://{database['USER']}@{database['HOST']}:{database['PORT']}/"
        f"{database['NAME']}",
        "METRICS_TOKEN": "t0ken",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        # Unreachable: the queues are not what this test is about, and are reported down.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    }
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [GUNICORN, "nudged.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{url}/healthz", timeout=10)
                break
            except requests.RequestException:  # not listening yet, or still booting
                time.sleep(0.2)
        assert not (metrics_dir / "counter_999999.db").exists()
        # Each on a new connection: the workers take turns.
        for _ in range(12):
            assert requests.get(f"{url}/api/products/", timeout=10).status_code == 200
        seen = set()
        for _ in range(6):
            scrape = requests.get(
                f"{url}/metrics", headers={"Authorization": "Bearer t0ken"}, timeout=20
            )
            assert scrape.status_code == 200
            families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
            counted = {
                tuple(sorted(s.labels.items())): s.value
                for s in families["nudged_http_requests"].samples
                if s.name == "nudged_http_requests_total"
            }
            seen.add(counted[(("method", "GET"), ("status", "200"), ("view", "api:product-list"))])
        assert seen == {12.0}
        assert len(list(metrics_dir.glob("counter_*.db"))) > 1  # more than one worker counted
    finally:
        proc.terminate()
        proc.wait(timeout=20)
