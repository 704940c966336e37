"""The web server as deployed: gunicorn with the project's gunicorn.conf.py."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from shop.models import Order
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


@contextmanager
def serving(tmp_path: Path, **env: str) -> Iterator[tuple[str, Path, Path]]:
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
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "nudged.settings.test", **env},
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


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    with serving(tmp_path, LOG_FORMAT="plain") as served:
        yield served


@pytest.fixture
def json_web(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The same with the production log format."""
    with serving(tmp_path, LOG_FORMAT="json") as served:
        yield served


def test_no_log_holds_a_callback_token_whole(web):
    url, access, errors = web

    response = requests.post(f"{url}/factory/callbacks/{TOKEN}/", json={}, timeout=10)

    assert response.status_code == 403
    time.sleep(0.5)  # the access log is written after the response
    access_log, error_log = access.read_text(), errors.read_text()
    assert f'"POST /factory/callbacks/{TOKEN[:8]}.../ HTTP/1.1" 403' in access_log
    assert f"Forbidden: /factory/callbacks/{TOKEN[:8]}.../" in error_log
    assert TOKEN[8:] not in access_log + error_log


def is_utc(stamp: str) -> bool:
    return datetime.fromisoformat(stamp).utcoffset() == timedelta(0)


def test_the_master_its_workers_and_django_log_in_utc(web):
    url, access, errors = web

    response = requests.post(f"{url}/factory/callbacks/{TOKEN}/", json={}, timeout=10)

    time.sleep(0.5)
    lines = errors.read_text().splitlines()
    # The master's first line, a worker's, and Django's in that worker (TIME_ZONE is KST).
    started = next(line for line in lines if "Starting gunicorn" in line)
    booted = next(line for line in lines if "Booting worker" in line)
    forbidden = next(line for line in lines if "Forbidden: " in line)
    assert all(is_utc(line.split(" ", 1)[0]) for line in (started, booted, forbidden))
    assert started.split(" ")[1:3] == ["INFO", "gunicorn.error"]
    assert forbidden.endswith(f"[request_id={response.headers['X-Request-ID']}]")
    [line] = [line for line in access.read_text().splitlines() if "POST" in line]
    assert re.search(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]", line), line
    assert line.endswith(f"[request_id={response.headers['X-Request-ID']}]")


def test_every_gunicorn_line_is_a_json_object_in_utc_under_the_production_format(json_web):
    url, access, errors = json_web

    response = requests.post(
        f"{url}/factory/callbacks/{TOKEN}/", json={}, headers={"X-Request-ID": "r-1"}, timeout=10
    )

    assert response.headers["X-Request-ID"] == "r-1"
    time.sleep(0.5)
    logged = [json.loads(line) for line in errors.read_text().splitlines()]
    [request] = [json.loads(line) for line in access.read_text().splitlines() if "POST" in line]
    assert all(is_utc(line["time"]) for line in [*logged, request])

    def first(start: str) -> dict[str, str]:
        return next(line for line in logged if line["message"].startswith(start))

    assert first("Starting gunicorn")["logger"] == "gunicorn.error"
    assert first("Booting worker")["level"] == "INFO"
    assert first(f"Forbidden: /factory/callbacks/{TOKEN[:8]}.../")["request_id"] == "r-1"
    assert request["logger"] == "gunicorn.access"
    assert request["request_id"] == "r-1"
    assert f'"POST /factory/callbacks/{TOKEN[:8]}.../ HTTP/1.1" 403' in request["message"]
    assert "+0000]" in request["message"]
    assert TOKEN[8:] not in errors.read_text() + access.read_text()


@pytest.mark.django_db(transaction=True)
def test_the_access_line_of_an_order_carries_its_request_and_order_ids(product, tmp_path):
    # The test database, which this test commits to, rather than the one DATABASE_URL names.
    database = urlsplit(os.environ.get("DATABASE_URL", "mysql://root@127.0.0.1:3306/nudged"))
    database_url = database._replace(path=f"/{settings.DATABASES['default']['NAME']}").geturl()
    with serving(tmp_path, LOG_FORMAT="json", DATABASE_URL=database_url) as (url, access, _):
        response = requests.post(
            f"{url}/api/orders/", json={"sku": product.sku, "quantity": 1}, timeout=10
        )
        time.sleep(0.5)

    assert response.status_code == 201
    [line] = [json.loads(line) for line in access.read_text().splitlines() if "POST" in line]
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["order_id"] == Order.objects.get(reference=response.json()["reference"]).pk


def workers(master: int) -> list[int]:
    """The pids of gunicorn's live workers: the master's children."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == master and fields[0] != "Z":
                children.append(int(stat.parent.name))
    return children


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

        def answered() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{url}/healthz", timeout=10).status_code == 200
            return False

        for _ in range(6):
            assert requests.get(f"{url}/api/products/", timeout=10).status_code == 200
        # Every worker that counted so far dies and gunicorn starts new ones: their counts
        # must still add up with the new workers'.
        first = workers(proc.pid)
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not (answered() and workers(proc.pid) and not set(workers(proc.pid)) & set(first)):
            assert time.monotonic() < deadline, "gunicorn did not replace its workers"
            time.sleep(0.2)
        for _ in range(6):
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


@pytest.mark.parametrize(
    ("trusted", "allowed"),
    [("", "[]"), ("10.0.0.0/16, 2001:db8::/56", "['10.0.0.0/16', '2001:db8::/56']")],
)
def test_gunicorn_trusts_forwarding_headers_from_the_trusted_proxies_only(trusted, allowed):
    result = run(
        [GUNICORN, "--print-config", "nudged.wsgi:application"],
        DJANGO_SETTINGS_MODULE="nudged.settings.test",
        TRUSTED_PROXIES=trusted,
    )

    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("forwarded_allow_ips")]
    assert line.split("=", 1)[1].strip() == allowed
