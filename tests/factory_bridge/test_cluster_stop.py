"""The django-q2 cluster stops when every process of it gets TERM at once, as honcho
(`make run`), `kill -- -PGID` and systemd's default KillMode send it."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.factory_bridge.test_clusters import database_url

pytestmark = pytest.mark.e2e

WORKERS = 2
# Main process, sentinel, monitor, pusher and the workers.
CLUSTER_PROCESSES = WORKERS + 4
# Far longer than a stop takes: without the fix the main process waits forever.
HANG = 60


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_a_term_to_the_whole_process_group_stops_the_cluster(transactional_db, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nudged.settings.local",
        "DATABASE_URL": database_url(),
        "Q_WORKERS": str(WORKERS),
    }
    log = tmp_path / "cluster.log"
    with log.open("w") as out:
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + HANG
        while len(_group(cluster.pid)) < CLUSTER_PROCESSES:
            assert cluster.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1)

        os.killpg(cluster.pid, signal.SIGTERM)

        assert cluster.wait(timeout=HANG) == 0, log.read_text()
        deadline = time.monotonic() + HANG
        while _group(cluster.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group(cluster.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=10)
