"""A stand-in for the legacy Nudged Factory HTTP API, faithful to its contract.

`POST /api/manufactures` takes any JSON body (it validates nothing, like the real factory),
answers 201 `{"data": {"id": <uuid1>, "reqestor": <requester>, "data": <body>}}` (sic) and,
`delay` seconds later, POSTs the same body once to its `CallbackUrl`: no signature, no retry.
With `answer_delay` it holds its 201 that long after accepting the order, while production
runs: a slow legacy answer that may come after the callback.
`GET /api/manufactures` lists what it received and what became of each callback.

Standard library only (plus `requests` for the callback) so it runs without Django.
"""

import copy
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

MANUFACTURES_PATH = "/api/manufactures"
PRODUCTION_STAGES = 4
# The callback is one plain POST; a target that hangs must not pin the thread for long.
CALLBACK_TIMEOUT = 10.0
# A day: longer than any factory takes, and far below the waits the clock can represent.
MAX_SECONDS = 86400
# How often a controlled simulator looks for a new request.
CONTROL_POLL_SECONDS = 0.1


def check_seconds(name: str, value: float) -> None:
    """Raise ValueError, naming `name`, unless `value` is 0 to MAX_SECONDS seconds."""
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise ValueError(f"{name} must be 0 or more seconds, at most {MAX_SECONDS}, got {value}.")


def check_rate(name: str, value: float) -> None:
    """Raise ValueError, naming `name`, unless `value` is a failure rate from 0 to 1."""
    if not 0 <= value <= 1:
        raise ValueError(
            f"{name} must be between 0 and 1 (e.g. 0.2 fails one request in five), got {value}."
        )


class FactorySimulator:
    """The legacy factory over real HTTP, in a background thread or in the foreground.

    The socket is bound on construction (like `http.server`), so a taken port fails early
    with `OSError` and `url` is known before serving starts.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 40.0,
        failure_rate: float = 0.0,
        latency: float = 0.0,
        seed: int | None = None,
        answer_delay: float = 0.0,
    ) -> None:
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        if not 0 <= failure_rate <= 1:
            raise ValueError(f"failure_rate must be between 0 and 1, got {failure_rate}")
        if not math.isfinite(answer_delay) or answer_delay < 0:
            raise ValueError(f"answer_delay must be >= 0 seconds, got {answer_delay}")
        self.delay = delay
        self.answer_delay = answer_delay
        self.failure_rate = failure_rate
        self.latency = latency
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._callbacks: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._server = _Server((host, port), _Handler, self)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the simulator, e.g. `http://127.0.0.1:8001`."""
        return f"http://{self.host}:{self.port}"

    @property
    def received(self) -> list[dict[str, Any]]:
        """A copy of the requests received so far, oldest first, with callback outcomes."""
        with self._lock:
            return copy.deepcopy(self._records)

    def start(self) -> None:
        """Serve in a daemon thread and return at once."""
        thread = threading.Thread(target=self._serve, name="factory-simulator", daemon=True)
        self._loop_thread = thread
        thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` (or Ctrl-C), then close the socket."""
        self._loop_thread = threading.current_thread()
        self._serve()

    def _serve(self) -> None:
        logger.info(
            "factory simulator serving %s (delay=%ss failure_rate=%s latency=%ss answer_delay=%ss)",
            self.url,
            self.delay,
            self.failure_rate,
            self.latency,
            self.answer_delay,
        )
        try:
            self._server.serve_forever(poll_interval=0.1)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and drop callbacks not sent yet (a stopped factory never calls back)."""
        self._stopping.set()
        loop = self._loop_thread
        if loop is not None and loop is not threading.current_thread():
            self._server.shutdown()
            loop.join(timeout=5)
        self._server.server_close()
        with self._lock:
            callbacks = list(self._callbacks)
        for thread in callbacks:
            thread.join(timeout=CALLBACK_TIMEOUT)

    def __enter__(self) -> "FactorySimulator":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _should_fail(self) -> bool:
        with self._lock:
            return self._random.random() < self.failure_rate

    def _record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            for record in self._records:
                if record["id"] == job_id:
                    record.update(changes)
                    return

    def _accept(self, raw: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        """Answer one manufacture request and schedule its callback."""
        job_id = str(uuid.uuid1())
        received_at = datetime.now(UTC).isoformat()
        if self.latency:
            time.sleep(self.latency)
        record: dict[str, Any] = {
            "id": job_id,
            "received_at": received_at,
            "body": None,
            "status": HTTPStatus.CREATED.value,
            "callback_url": None,
            "callback_status": "pending",
            "callback_http_status": None,
            "callback_error": None,
            "callback_attempts": 0,
        }
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            logger.warning("factory job %s rejected: body is not JSON (%.80s)", job_id, exc)
            record.update(
                body=raw.decode(errors="replace"),
                status=HTTPStatus.BAD_REQUEST.value,
                callback_status="skipped",
                callback_error="body is not JSON",
            )
            self._record(record)
            return HTTPStatus.BAD_REQUEST, {"message": f"body is not valid JSON: {exc}"}

        fields = body if isinstance(body, dict) else {}
        callback_url = fields.get("CallbackUrl")
        logger.info(
            "factory job %s received: product=%r cnt=%r factory=%r requester=%r callback=%r",
            job_id,
            *(
                _shown(fields.get(name))
                for name in (
                    "MessageAttributeProductId",
                    "MessageAttributeProductCnt",
                    "MessageAttributeFactoryId",
                    "MessageAttributeRequester",
                    "CallbackUrl",
                )
            ),
        )
        record.update(body=body, callback_url=callback_url)
        if self._should_fail():
            logger.warning("factory job %s answered 500: simulated factory failure", job_id)
            record.update(status=HTTPStatus.INTERNAL_SERVER_ERROR.value, callback_status="skipped")
            self._record(record)
            return HTTPStatus.INTERNAL_SERVER_ERROR, {
                "message": "simulated factory failure",
                "id": job_id,
            }

        if not isinstance(callback_url, str) or not callback_url:
            logger.warning("factory job %s has no CallbackUrl: no callback will be sent", job_id)
            record.update(callback_status="skipped", callback_error="no CallbackUrl in body")
            self._record(record)
        else:
            self._record(record)
            self._schedule_callback(job_id, callback_url, raw)
        if self.answer_delay:
            # Production (and the callback) runs meanwhile: the 201 may come after it.
            time.sleep(self.answer_delay)
        answer = {"id": job_id, "reqestor": fields.get("MessageAttributeRequester"), "data": body}
        return HTTPStatus.CREATED, {"data": answer}

    def _schedule_callback(self, job_id: str, callback_url: str, raw: bytes) -> None:
        thread = threading.Thread(
            target=self._produce_and_call_back,
            args=(job_id, callback_url, raw),
            name=f"factory-job-{job_id}",
            daemon=True,
        )
        with self._lock:
            self._callbacks = [t for t in self._callbacks if t.is_alive()]
            self._callbacks.append(thread)
        thread.start()

    def _produce_and_call_back(self, job_id: str, callback_url: str, raw: bytes) -> None:
        """Run the production stages, then POST the original body once to the callback."""
        stage_seconds = self.delay / PRODUCTION_STAGES
        for stage in range(1, PRODUCTION_STAGES + 1):
            if self._stopping.wait(stage_seconds):
                logger.warning(
                    "factory job %s cancelled at stage %s/%s: simulator stopped, no callback",
                    job_id,
                    stage,
                    PRODUCTION_STAGES,
                )
                self._update(job_id, callback_status="cancelled")
                return
            logger.info("factory job %s stage %s/%s done", job_id, stage, PRODUCTION_STAGES)

        self._update(job_id, callback_attempts=1)
        try:
            response = requests.post(
                callback_url,
                data=raw,
                headers={"Content-Type": "application/json"},
                timeout=CALLBACK_TIMEOUT,
            )
        except requests.RequestException as exc:
            logger.warning(
                "factory job %s callback to %s failed: %s (never retried)",
                job_id,
                callback_url,
                exc,
            )
            self._update(job_id, callback_status="failed", callback_error=str(exc))
            return
        if response.ok:
            logger.info(
                "factory job %s callback to %s answered %s",
                job_id,
                callback_url,
                response.status_code,
            )
            self._update(
                job_id, callback_status="delivered", callback_http_status=response.status_code
            )
        else:
            logger.warning(
                "factory job %s callback to %s answered %s (never retried)",
                job_id,
                callback_url,
                response.status_code,
            )
            self._update(
                job_id,
                callback_status="failed",
                callback_http_status=response.status_code,
                callback_error=f"HTTP {response.status_code}",
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        simulator: FactorySimulator,
    ) -> None:
        self.simulator = simulator
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "NudgedFactorySimulator/1.0"

    def do_GET(self) -> None:
        if self._route():
            self._send(HTTPStatus.OK, {"requests": self.server.simulator.received})

    def do_POST(self) -> None:
        if self._route():
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            status, payload = self.server.simulator._accept(raw)
            self._send(status, payload)

    def do_PUT(self) -> None:
        self._route(allowed=False)

    def do_PATCH(self) -> None:
        self._route(allowed=False)

    def do_DELETE(self) -> None:
        self._route(allowed=False)

    def _route(self, allowed: bool = True) -> bool:
        """True when the request is for the manufactures resource with a method it serves."""
        path = urlsplit(self.path).path.rstrip("/")
        if path != MANUFACTURES_PATH:
            self._send(HTTPStatus.NOT_FOUND, {"message": f"no such resource: {path or '/'}"})
            return False
        if not allowed:
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"message": f"method {self.command} not allowed on {MANUFACTURES_PATH}"},
                headers={"Allow": "GET, POST"},
            )
            return False
        return True

    def _send(
        self,
        status: HTTPStatus,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines go to the module logger (debug) instead of stderr; events log above.
        logger.debug("factory simulator %s %s", self.address_string(), format % args)


@dataclass(frozen=True)
class SimulatorSettings:
    """What a simulator is started with."""

    host: str = "127.0.0.1"
    port: int = 8001
    delay: float = 40.0
    failure_rate: float = 0.0
    latency: float = 0.0
    seed: int | None = None
    answer_delay: float = 0.0

    def create(self) -> FactorySimulator:
        """A simulator with these settings, its port bound, not serving yet."""
        return FactorySimulator(
            host=self.host,
            port=self.port,
            delay=self.delay,
            failure_rate=self.failure_rate,
            latency=self.latency,
            seed=self.seed,
            answer_delay=self.answer_delay,
        )

    def start(self) -> FactorySimulator:
        """A simulator with these settings, serving in a background thread."""
        simulator = self.create()
        simulator.start()
        return simulator

    def describe(self) -> str:
        answer = f", 201 after {self.answer_delay:g}s" if self.answer_delay else ""
        return (
            f"Factory simulator: http://{self.host}:{self.port} (callback after {self.delay:g}s,"
            f" failure rate {self.failure_rate:g}{answer})"
        )


class ControlledSimulator:
    """A simulator that is stopped or restarted on request while its process runs on.

    `make run`'s process manager stops every process when one ends, so the factory drills
    (the factory down, failing, back: bin/factory) act on the simulator inside its process.
    A request is a file `request` in the `control` folder, renamed into place whole, of
    `name=value` lines: `id` (new for each request), `running` (`yes` or `no`), `delay`,
    `failure_rate` and `answer_delay` (empty: the value the process started with). Each
    request stops the simulator, which forgets the orders it has not called back yet (as a
    real factory that restarts), and unless `running=no` starts it again with the request's
    values. The outcome goes to `state`: three lines, the request's id, `ok` or `error`, and a
    message. A request already there when the process starts is an old one and is left alone.
    """

    def __init__(self, *, control: Path, initial: SimulatorSettings) -> None:
        self.control = control
        self.initial = initial
        self.simulator: FactorySimulator | None = None

    @property
    def request_path(self) -> Path:
        return self.control / "request"

    @property
    def state_path(self) -> Path:
        return self.control / "state"

    def serve(self, stop: threading.Event) -> None:
        """Serve until `stop` is set, applying each new request.

        Raises OSError, as FactorySimulator does, when the port is taken at the start.
        """
        self.control.mkdir(parents=True, exist_ok=True)
        self.simulator = self.initial.start()
        # Restarts listen where the first one did (port 0 picked a free port).
        self.initial = replace(self.initial, port=self.simulator.port)
        handled = self._read_request().get("id", "")
        self._write_state(handled, "ok", self.initial.describe())
        try:
            while not stop.wait(CONTROL_POLL_SECONDS):
                request = self._read_request()
                request_id = request.get("id", "")
                if request_id and request_id != handled:
                    handled = request_id
                    self._apply(request_id, request)
        finally:
            if self.simulator is not None:
                self.simulator.stop()

    def _read_request(self) -> dict[str, str]:
        try:
            lines = self.request_path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        return dict(line.partition("=")[::2] for line in lines if "=" in line)

    def _apply(self, request_id: str, request: dict[str, str]) -> None:
        try:
            wanted = self._settings(request)
        except ValueError as exc:
            logger.warning("factory simulator request %s refused: %s", request_id, exc)
            self._write_state(request_id, "error", str(exc))
            return
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        if wanted is None:
            message = f"Factory simulator stopped: port {self.initial.port} refuses connections."
            logger.warning("%s", message)
            self._write_state(request_id, "ok", message)
            return
        try:
            self.simulator = wanted.start()
        except OSError as exc:
            message = f"Factory simulator cannot listen on {wanted.host}:{wanted.port}: {exc}."
            logger.error("%s", message)
            self._write_state(request_id, "error", message)
            return
        self._write_state(request_id, "ok", wanted.describe())

    def _settings(self, request: dict[str, str]) -> SimulatorSettings | None:
        """What a request asks for: None to stay stopped. ValueError names a bad value."""
        running = request.get("running", "yes")
        if running not in ("yes", "no"):
            raise ValueError(f"running must be yes or no, got {running!r}.")
        if running == "no":
            return None
        delay = _number(request, "delay", "FACTORY_DELAY", self.initial.delay)
        failure_rate = _number(
            request, "failure_rate", "FACTORY_FAILURE_RATE", self.initial.failure_rate
        )
        answer_delay = _number(
            request, "answer_delay", "FACTORY_ANSWER_DELAY", self.initial.answer_delay
        )
        check_seconds("FACTORY_DELAY", delay)
        check_rate("FACTORY_FAILURE_RATE", failure_rate)
        check_seconds("FACTORY_ANSWER_DELAY", answer_delay)
        return replace(
            self.initial, delay=delay, failure_rate=failure_rate, answer_delay=answer_delay
        )

    def _write_state(self, request_id: str, outcome: str, message: str) -> None:
        partial = self.control / "state.partial"
        partial.write_text(f"{request_id}\n{outcome}\n{message}\n")
        os.replace(partial, self.state_path)


def _number(request: dict[str, str], key: str, name: str, default: float) -> float:
    value = request.get(key, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}.") from None


def _shown(value: object) -> str:
    """A request field as it goes into the log: a string of at most 200 characters."""
    return str(value)[:200]
