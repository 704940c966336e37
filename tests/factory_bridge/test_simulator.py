"""The legacy factory simulator over real HTTP, and the run_factory command's options."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.core.management import CommandError, call_command

from factory_bridge.tools.simulator import ControlledSimulator, FactorySimulator, SimulatorSettings
from tests.factory_bridge.factory import order_body

DELAY = 0.2


@dataclass
class Hit:
    at: float
    content_type: str
    body: bytes


@dataclass
class Receiver:
    """A tiny callback target that records every POST and answers `status`."""

    url: str
    status: int = 200
    hits: list[Hit] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.hits.append(Hit(time.monotonic(), self.headers["Content-Type"], body))
            state.arrived.set()
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/factory/callback"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def make_simulator(
    make_simulator: Callable[..., FactorySimulator],
) -> Callable[..., FactorySimulator]:
    """Simulators with this module's short delay unless told otherwise."""
    return lambda **options: make_simulator(**{"delay": DELAY, **options})


def post(simulator: FactorySimulator, body: Any) -> requests.Response:
    return requests.post(f"{simulator.url}/api/manufactures", json=body, timeout=5)


def wait_for_record(
    simulator: FactorySimulator, predicate: Callable[[dict[str, Any]], bool], timeout: float = 3.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in simulator.received:
            if predicate(record):
                return record
        time.sleep(0.02)
    raise AssertionError(f"no matching record within {timeout}s: {simulator.received}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_order_answers_201_with_uuid1_requester_and_the_body(make_simulator, receiver) -> None:
    simulator = make_simulator()
    body = order_body(receiver.url)

    response = post(simulator, body)

    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")
    data = response.json()["data"]
    assert set(data) == {"id", "reqestor", "data"}
    assert uuid.UUID(data["id"]).version == 1
    assert data["reqestor"] == "nudged-shop"
    assert data["data"] == body


def test_extra_fields_such_as_the_idempotency_key_are_stored_and_echoed(
    make_simulator, receiver
) -> None:
    simulator = make_simulator()
    body = order_body(receiver.url, IdempotencyKey="depletion-42")

    assert post(simulator, body).status_code == 201

    assert simulator.received[0]["body"]["IdempotencyKey"] == "depletion-42"
    assert receiver.arrived.wait(3)
    assert json.loads(receiver.hits[0].body)["IdempotencyKey"] == "depletion-42"


def test_factory_validates_nothing(make_simulator) -> None:
    simulator = make_simulator()

    response = post(simulator, {"anything": 1})

    assert response.status_code == 201
    assert response.json()["data"]["reqestor"] is None
    assert response.json()["data"]["data"] == {"anything": 1}
    assert simulator.received[0]["callback_status"] == "skipped"


def test_callback_arrives_once_after_delay_with_the_same_json(make_simulator, receiver) -> None:
    simulator = make_simulator()
    body = order_body(receiver.url)
    sent_at = time.monotonic()

    job_id = post(simulator, body).json()["data"]["id"]

    assert receiver.arrived.wait(3)
    assert receiver.hits[0].at - sent_at >= DELAY
    assert receiver.hits[0].content_type == "application/json"
    assert json.loads(receiver.hits[0].body) == body
    record = wait_for_record(simulator, lambda r: r["callback_status"] != "pending")
    assert record["id"] == job_id
    assert record["callback_status"] == "delivered"
    assert record["callback_http_status"] == 200
    time.sleep(DELAY)
    assert len(receiver.hits) == 1


def test_callback_rejected_by_target_is_not_retried(make_simulator, receiver) -> None:
    receiver.status = 503
    simulator = make_simulator()

    post(simulator, order_body(receiver.url))

    record = wait_for_record(simulator, lambda r: r["callback_status"] != "pending")
    assert record["callback_status"] == "failed"
    assert record["callback_http_status"] == 503
    assert record["callback_attempts"] == 1
    time.sleep(2 * DELAY)
    assert len(receiver.hits) == 1


def test_callback_to_a_target_that_is_down_is_not_retried(make_simulator) -> None:
    simulator = make_simulator(delay=0.0)

    post(simulator, order_body(f"http://127.0.0.1:{free_port()}/factory/callback"))

    record = wait_for_record(simulator, lambda r: r["callback_status"] != "pending")
    assert record["callback_status"] == "failed"
    assert record["callback_http_status"] is None
    assert record["callback_error"]
    assert record["callback_attempts"] == 1


def test_failure_rate_one_answers_500_and_never_calls_back(make_simulator, receiver) -> None:
    simulator = make_simulator(failure_rate=1.0, delay=0.05)

    response = post(simulator, order_body(receiver.url))

    assert response.status_code == 500
    assert response.json()["message"] == "simulated factory failure"
    assert not receiver.arrived.wait(0.3)
    [record] = simulator.received
    assert record["status"] == 500
    assert record["callback_status"] == "skipped"


def test_failures_repeat_with_the_same_seed(make_simulator) -> None:
    def statuses(simulator: FactorySimulator) -> list[int]:
        return [post(simulator, {}).status_code for _ in range(10)]

    first = statuses(make_simulator(failure_rate=0.5, seed=7))
    second = statuses(make_simulator(failure_rate=0.5, seed=7))

    assert first == second
    assert set(first) == {201, 500}


def test_latency_delays_the_answer(make_simulator) -> None:
    simulator = make_simulator(latency=0.3)
    started = time.monotonic()

    response = post(simulator, {})

    assert response.status_code == 201
    assert time.monotonic() - started >= 0.3


def test_an_answer_delay_lets_the_callback_come_before_the_201(make_simulator, receiver) -> None:
    simulator = make_simulator(delay=0.1, answer_delay=0.6)

    response = post(simulator, order_body(receiver.url))

    assert response.status_code == 201
    assert receiver.hits, "the callback came after the answer"
    assert wait_for_record(simulator, lambda r: True)["callback_status"] == "delivered"


def test_body_that_is_not_json_is_400(make_simulator, receiver) -> None:
    simulator = make_simulator(delay=0.0)

    response = requests.post(
        f"{simulator.url}/api/manufactures",
        data=b"CallbackUrl=" + receiver.url.encode(),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400
    assert "JSON" in response.json()["message"]
    assert not receiver.arrived.wait(0.2)
    assert simulator.received[0]["status"] == 400


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("POST", "/api/manufacture")])
def test_unknown_path_is_404(make_simulator, method: str, path: str) -> None:
    simulator = make_simulator()

    response = requests.request(method, f"{simulator.url}{path}", json={}, timeout=5)

    assert response.status_code == 404
    assert "message" in response.json()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_wrong_method_is_405(make_simulator, method: str) -> None:
    simulator = make_simulator()

    response = requests.request(method, f"{simulator.url}/api/manufactures", json={}, timeout=5)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert "message" in response.json()


def test_get_lists_received_requests(make_simulator, receiver) -> None:
    simulator = make_simulator()
    first = order_body(receiver.url)
    second = {**first, "MessageAttributeProductCnt": "20"}
    ids = [post(simulator, body).json()["data"]["id"] for body in (first, second)]

    listing = requests.get(f"{simulator.url}/api/manufactures", timeout=5)

    assert listing.status_code == 200
    records = listing.json()["requests"]
    assert [r["id"] for r in records] == ids
    assert [r["body"] for r in records] == [first, second]
    assert all(r["status"] == 201 and r["received_at"] for r in records)
    assert {r["callback_status"] for r in records} <= {"pending", "delivered"}


def test_stop_drops_callbacks_not_yet_sent(receiver) -> None:
    simulator = FactorySimulator(port=0, delay=30)
    simulator.start()
    post(simulator, order_body(receiver.url))
    started = time.monotonic()

    simulator.stop()

    assert time.monotonic() - started < 2
    assert simulator.received[0]["callback_status"] == "cancelled"
    assert receiver.hits == []
    with pytest.raises(requests.ConnectionError):
        post(simulator, {})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--failure-rate", "2", "--failure-rate must be between 0 and 1"),
        ("--failure-rate", "-0.1", "--failure-rate must be between 0 and 1"),
        ("--delay", "-1", "--delay must be 0 or more"),
        ("--delay", "nan", "--delay must be 0 or more"),
        ("--delay", "1e308", "--delay must be 0 or more seconds, at most 86400"),
        ("--delay", "inf", "--delay must be 0 or more seconds, at most 86400"),
        ("--latency", "-0.5", "--latency must be 0 or more"),
        ("--latency", "86401", "--latency must be 0 or more seconds, at most 86400"),
        ("--answer-delay", "-1", "--answer-delay must be 0 or more"),
        ("--failure-rate", "nan", "--failure-rate must be between 0 and 1"),
        ("--port", "70000", "--port must be between 0 and 65535"),
    ],
)
def test_run_factory_rejects_bad_options(option: str, value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("run_factory", option, value)


def test_run_factory_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(CommandError, match=f"Port {port} on 127.0.0.1 is already in use"):
            call_command("run_factory", "--port", str(port))


def test_run_factory_serves_and_stops_on_ctrl_c(monkeypatch) -> None:
    served: list[FactorySimulator] = []

    def interrupted(self: FactorySimulator) -> None:
        # Serve for real in the background, answer one order, then act as if Ctrl-C came.
        served.append(self)
        self.start()
        assert post(self, {}).status_code == 201
        self.stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(FactorySimulator, "serve_forever", interrupted)
    out = StringIO()

    # Seed 1 draws 0.13 first: above the failure rate, so the one order is answered 201.
    call_command(
        "run_factory",
        "--port",
        "0",
        "--delay",
        "5",
        "--failure-rate",
        "0.1",
        "--seed",
        "1",
        stdout=out,
    )

    [simulator] = served
    assert (simulator.delay, simulator.failure_rate) == (5.0, 0.1)
    output = out.getvalue()
    assert f"POST {simulator.url}/api/manufactures" in output
    assert "--delay" in output and "--failure-rate" in output
    assert "stopped" in output


@dataclass
class Controlled:
    """A ControlledSimulator serving in a thread, and a way to send it requests."""

    simulator: ControlledSimulator
    url: str
    requests_sent: int = 0

    def request(self, **fields: str) -> tuple[str, str]:
        """Write a request as bin/factory does; return the outcome and the message."""
        self.requests_sent += 1
        request_id = f"request-{self.requests_sent}"
        lines = "".join(f"{k}={v}\n" for k, v in {"id": request_id, **fields}.items())
        partial = self.simulator.control / "request.partial"
        partial.write_text(lines)
        partial.rename(self.simulator.control / "request")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = self.simulator.state_path.read_text().splitlines()
            if state[0] == request_id:
                return state[1], state[2]
            time.sleep(0.02)
        raise AssertionError(f"request {request_id} not applied within 10s")

    def order(self) -> int:
        return requests.post(f"{self.url}/api/manufactures", json={}, timeout=5).status_code


@pytest.fixture
def controlled(tmp_path) -> Iterator[Controlled]:
    control = tmp_path / "factory"
    control.mkdir()
    # An old request, from a run before: left alone.
    (control / "request").write_text("id=old\nrunning=no\n")
    port = free_port()
    simulator = ControlledSimulator(
        control=control, initial=SimulatorSettings(port=port, delay=DELAY, failure_rate=0.0)
    )
    stop = threading.Event()
    thread = threading.Thread(target=simulator.serve, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not simulator.state_path.exists():
        assert time.monotonic() < deadline, "the controlled simulator did not start"
        time.sleep(0.02)
    yield Controlled(simulator, f"http://127.0.0.1:{port}")
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_controlled_simulator_starts_as_told_and_leaves_an_old_request_alone(
    controlled: Controlled,
) -> None:
    state = controlled.simulator.state_path.read_text().splitlines()

    assert state == [
        "old",
        "ok",
        f"Factory simulator: {controlled.url} (callback after 0.2s, failure rate 0)",
    ]
    assert controlled.order() == 201


def test_a_controlled_simulator_restarts_with_new_values_and_forgets_its_orders(
    controlled: Controlled, receiver
) -> None:
    requests.post(f"{controlled.url}/api/manufactures", json=order_body(receiver.url), timeout=5)

    outcome = controlled.request(running="yes", delay="", failure_rate="1")

    assert outcome == (
        "ok",
        f"Factory simulator: {controlled.url} (callback after 0.2s, failure rate 1)",
    )
    assert controlled.order() == 500
    listing = requests.get(f"{controlled.url}/api/manufactures", timeout=5).json()
    assert len(listing["requests"]) == 1  # the 500 just now: a restart forgets
    assert not receiver.arrived.wait(DELAY * 2)  # the order before the restart is never called back


def test_a_controlled_simulator_restarts_answering_after_its_callback(
    controlled: Controlled, receiver
) -> None:
    outcome = controlled.request(running="yes", delay="0.1", answer_delay="0.6")

    assert outcome == (
        "ok",
        f"Factory simulator: {controlled.url} (callback after 0.1s, failure rate 0, "
        "201 after 0.6s)",
    )
    response = requests.post(
        f"{controlled.url}/api/manufactures", json=order_body(receiver.url), timeout=5
    )
    assert response.status_code == 201
    assert receiver.hits
    assert controlled.request(answer_delay="-1") == (
        "error",
        "FACTORY_ANSWER_DELAY must be 0 or more seconds, at most 86400, got -1.0.",
    )


def test_a_controlled_simulator_stops_and_comes_back(controlled: Controlled) -> None:
    port = controlled.url.rsplit(":", 1)[1]

    assert controlled.request(running="no") == (
        "ok",
        f"Factory simulator stopped: port {port} refuses connections.",
    )
    with pytest.raises(requests.ConnectionError):
        controlled.order()
    assert controlled.request(running="yes")[0] == "ok"
    assert controlled.order() == 201


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"failure_rate": "2"}, "FACTORY_FAILURE_RATE must be between 0 and 1"),
        ({"delay": "-1"}, "FACTORY_DELAY must be 0 or more seconds"),
        ({"delay": "soon"}, "FACTORY_DELAY must be a number, got 'soon'"),
        ({"running": "maybe"}, "running must be yes or no"),
    ],
)
def test_a_bad_request_is_refused_and_the_simulator_keeps_serving(
    controlled: Controlled, fields: dict[str, str], message: str
) -> None:
    outcome, text = controlled.request(**fields)

    assert outcome == "error"
    assert message in text
    assert controlled.order() == 201


def test_run_factory_stops_on_term_as_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "factory.log"
    with log.open("w") as out:
        factory = subprocess.Popen(
            [sys.executable, "manage.py", "run_factory", "--port", "0", "--control", tmp_path],
            cwd=settings.BASE_DIR,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "nudged.settings.local"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Stopped and restarted through" not in log.read_text():
            assert factory.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        factory.terminate()

        assert factory.wait(timeout=30) == 0, log.read_text()
        assert "Factory simulator stopped" in log.read_text()
    finally:
        factory.kill()
        factory.wait(timeout=10)
