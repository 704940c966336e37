"""Two django-q2 clusters on one database and one AWS endpoint, as two worker hosts run them:
each loop runs in one of them at a time, and no event and no factory order is doubled."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from io import StringIO
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from factory_bridge.models import RestockRequest
from factory_bridge.services import pollers
from factory_bridge.tools.simulator import FactorySimulator
from inventory.models import Product
from nudged.core.models import OutboxEvent
from tests.factory_bridge.sqs import drain

pytestmark = pytest.mark.e2e

SKU = "CP-502101"
LOOPS = {"outbox", "restock", "dlq", "estimates", "notify"}
# Each loop hands over every few seconds, to whichever cluster takes the task first.
RUN_SECONDS = 3
ORDERING_SECONDS = 20
# One loop run, in either cluster's log (the time as the log writes it, to the millisecond).
RUN_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+(?:Z|[+-]\d\d:?\d\d)?)"
    r".*\bpoller (?P<loop>\w+) (?P<what>started|stopped) owner=(?P<owner>\w+)"
)


@dataclass
class LoopRun:
    loop: str
    owner: str
    cluster: int
    started: datetime
    stopped: datetime | None = None


class Cluster:
    """`manage.py qcluster` in a session of its own, its output in a file."""

    def __init__(self, number: int, env: dict[str, str], log: Path) -> None:
        self.number = number
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=settings.BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def runs(self) -> list[LoopRun]:
        runs: dict[str, LoopRun] = {}
        for line in self.log.read_text().splitlines():
            if not (match := RUN_LINE.search(line)):
                continue
            at = datetime.fromisoformat(match["time"].replace(",", "."))
            if match["what"] == "started":
                runs[match["owner"]] = LoopRun(match["loop"], match["owner"], self.number, at)
            elif match["owner"] in runs:
                runs[match["owner"]].stopped = at
        return list(runs.values())

    def stop(self) -> None:
        """TERM to the main process: it stops its workers once their task ends."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=RUN_SECONDS + 30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def database_url() -> str:
    """The test database, as a DATABASE_URL for processes of their own."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 3306
    return f"mysql://{quote(db['USER'], safe='')}{password}@{host}:{port}/{db['NAME']}"


def wait_until(condition: Callable[[], Any], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.2)


def ops_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of SNS notifications, each sales batch unpacked into the events it carries."""
    events: list[dict[str, Any]] = []
    for message in messages:
        body = json.loads(json.loads(message["Body"])["Message"])
        events += body["events"] if body.get("type") == "sales.batch" else [body]
    return events


@pytest.fixture
def simulator() -> Iterator[FactorySimulator]:
    with FactorySimulator(port=0, delay=1.0) as simulator:
        yield simulator


@pytest.fixture
def clusters(
    live_server, aws: str, simulator: FactorySimulator, tmp_path: Path, monkeypatch
) -> Iterator[list[Cluster]]:
    """Two clusters, started once the schedules are installed and the loops queued."""
    # The web (this process) queues its tasks for the clusters instead of running them inline.
    monkeypatch.setattr("django_q.conf.Conf.SYNC", False)
    call_command("setup_worker", stdout=StringIO())
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "nudged.settings.local",
        "DATABASE_URL": database_url(),
        "AWS_ENDPOINT_URL": aws,
        # Callbacks are signed by the clusters and checked by the web (this process).
        "SECRET_KEY": settings.SECRET_KEY,
        "PUBLIC_BASE_URL": live_server.url,
        "FACTORY_API_URL": simulator.url,
        "FACTORY_LEAD_TIME": "1",
        "SQS_WAIT_TIME": "1",
        "POLLER_RUN_SECONDS": str(RUN_SECONDS),
        "Q_WORKERS": "6",
        "LOG_LEVEL": "INFO",
    }
    started = [Cluster(n, env, tmp_path / f"cluster-{n}.log") for n in (1, 2)]
    try:
        yield started
    finally:
        for cluster in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                cluster.stop()


def test_two_clusters_run_each_loop_once_and_double_nothing(
    clusters: list[Cluster], live_server, aws: str, simulator: FactorySimulator, product: Product
) -> None:
    wait_until(
        lambda: all(cluster.runs() for cluster in clusters),
        seconds=120,
        what="a loop run in each cluster",
    )
    completed = 0
    ordering_until = time.monotonic() + ORDERING_SECONDS
    next_copies = time.monotonic()
    while time.monotonic() < ordering_until:
        if time.monotonic() >= next_copies:
            # A second copy of every loop, as the minute ensure-pollers schedule of either
            # cluster queues one when it reads a lease between a run's release and its
            # successor's claim: the lease must make one of the two copies exit.
            for loop in LOOPS:
                pollers.enqueue(loop)
            next_copies += RUN_SECONDS * 1.7
        answer = requests.post(
            f"{live_server.url}/api/orders/", json={"sku": SKU, "quantity": 1}, timeout=10
        )
        assert answer.status_code in (201, 409), answer.text
        completed += answer.status_code == 201
        time.sleep(0.2)

    messages: list[dict[str, Any]] = []

    def all_published() -> bool:
        messages.extend(drain(aws, "nudged-ops"))
        sold = [e for e in ops_events(messages) if e["type"] == "order.completed"]
        return (
            len(sold) >= completed
            and all(job["callback_status"] == "delivered" for job in simulator.received)
            and not OutboxEvent.objects.filter(published_at__isnull=True).exists()
            and not RestockRequest.objects.filter(status__in=RestockRequest.OPEN).exists()
        )

    wait_until(all_published, seconds=60, what="every event published and every restock in")
    time.sleep(RUN_SECONDS)  # a loop run in both clusters at once would publish twice by now
    for cluster in clusters:
        cluster.stop()
    # A factory order placed as the clusters stopped is called back all the same.
    wait_until(
        lambda: all(job["callback_status"] != "pending" for job in simulator.received),
        seconds=15,
        what="the last callbacks",
    )
    messages.extend(drain(aws, "nudged-ops"))

    # Each loop ran, in one cluster at a time, and the clusters took turns.
    runs = [run for cluster in clusters for run in cluster.runs()]
    turns = Counter((run.loop, run.cluster) for run in runs)
    print(
        "\nloop runs (cluster 1 / 2):",
        ", ".join(f"{loop} {turns[loop, 1]}/{turns[loop, 2]}" for loop in sorted(LOOPS)),
        f"; orders {completed}, factory orders {len(simulator.received)}",
    )
    assert {run.loop for run in runs} == LOOPS
    for loop in LOOPS:
        ordered = sorted((run for run in runs if run.loop == loop), key=lambda run: run.started)
        for before, after in pairwise(ordered):
            assert before.stopped is not None and before.stopped <= after.started, (
                f"{loop} ran in cluster {before.cluster} ({before.started}-{before.stopped}) "
                f"and in cluster {after.cluster} from {after.started}"
            )
    assert {run.cluster for run in runs} == {1, 2}
    logs = "".join(cluster.log.read_text() for cluster in clusters)
    # The copies made here exited; on a slow machine the clusters' own minute schedule may
    # queue a copy too (it reads a lease between two runs), which exits the same way.
    assert logs.count("already running elsewhere; exiting") > 0
    assert any(len({run.cluster for run in runs if run.loop == loop}) == 2 for loop in LOOPS)

    # No event twice: every published outbox event and every sale once.
    events = ops_events(messages)
    assert [eid for eid, n in Counter(e["event_id"] for e in events).items() if n > 1] == []
    published = OutboxEvent.objects.filter(published_at__isnull=False)
    assert {str(pk) for pk in published.values_list("pk", flat=True)} <= {
        e["event_id"] for e in events
    }
    assert sum(e["type"] == "order.completed" for e in events) == completed > 0

    # No factory order twice: one per restock request, each with a key of its own.
    restocks = RestockRequest.objects.all()
    keys = Counter(job["body"]["IdempotencyKey"] for job in simulator.received)
    assert len(simulator.received) == restocks.count() >= 1
    assert max(keys.values()) == 1
    assert {r.factory_job_id for r in restocks} == {job["id"] for job in simulator.received}
    product.refresh_from_db()
    arrived = sum(r.quantity for r in restocks.filter(status=RestockRequest.Status.FULFILLED))
    assert product.stock == 3 + arrived - completed >= 0
