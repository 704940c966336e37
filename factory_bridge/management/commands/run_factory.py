"""Serve the legacy factory simulator (`POST /api/manufactures`) in the foreground."""

import errno
import signal
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from factory_bridge.tools.simulator import (
    MANUFACTURES_PATH,
    PRODUCTION_STAGES,
    ControlledSimulator,
    SimulatorSettings,
    check_rate,
    check_seconds,
)


class Command(BaseCommand):
    help = (
        "Run a local stand-in for the legacy Nudged Factory API: it answers "
        f"POST {MANUFACTURES_PATH} with 201 and calls the CallbackUrl back once after --delay "
        "seconds. Ctrl-C stops it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument(
            "--port", type=int, default=8001, help="Port to listen on (0 picks a free one)."
        )
        parser.add_argument(
            "--delay",
            type=float,
            default=40.0,
            help="Seconds between the 201 answer and the callback (the real factory: 40).",
        )
        parser.add_argument(
            "--failure-rate",
            type=float,
            default=0.0,
            help="Fraction of requests, 0..1, answered 500 with no callback.",
        )
        parser.add_argument(
            "--latency",
            type=float,
            default=0.0,
            help="Seconds to wait before answering each request (a slow factory).",
        )
        parser.add_argument(
            "--answer-delay",
            type=float,
            default=0.0,
            help="Seconds to hold each 201 after accepting the order while production runs "
            "(a factory that may call back before it answers).",
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="Random seed for repeatable failures."
        )
        parser.add_argument(
            "--control",
            type=Path,
            default=None,
            help="Folder through which bin/factory stops or restarts the simulator while this "
            "process runs on (make run).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host: str = options["host"]
        port: int = options["port"]
        delay: float = options["delay"]
        failure_rate: float = options["failure_rate"]
        latency: float = options["latency"]
        answer_delay: float = options["answer_delay"]
        control: Path | None = options["control"]
        if not 0 <= port <= 65535:
            raise CommandError(f"--port must be between 0 and 65535, got {port}.")
        try:
            check_seconds("--delay", delay)
            check_seconds("--latency", latency)
            check_seconds("--answer-delay", answer_delay)
            check_rate("--failure-rate", failure_rate)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        initial = SimulatorSettings(
            host=host,
            port=port,
            delay=delay,
            failure_rate=failure_rate,
            latency=latency,
            seed=options["seed"],
            answer_delay=answer_delay,
        )

        # TERM (honcho stopping make run) stops it as Ctrl-C does, with the same last line.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            self._serve(initial, control)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _serve(self, initial: SimulatorSettings, control: Path | None) -> None:
        host, port = initial.host, initial.port
        try:
            if control is None:
                simulator = initial.create()
                self._describe(simulator.url, initial)
                simulator.serve_forever()
            else:
                controlled = ControlledSimulator(control=control, initial=initial)
                self._describe(f"http://{host}:{port}", initial)
                self.stdout.write(f"  Stopped and restarted through {control} (bin/factory).")
                controlled.serve(threading.Event())
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"Port {port} on {host} is already in use (another factory simulator?). "
                    "Stop it or pick another port with --port."
                ) from exc
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}.") from exc
        except KeyboardInterrupt:
            self.stdout.write("Factory simulator stopped; callbacks not yet sent are dropped.")

    def _describe(self, url: str, initial: SimulatorSettings) -> None:
        delay, failure_rate, latency = initial.delay, initial.failure_rate, initial.latency
        self.stdout.write(
            self.style.SUCCESS(f"Legacy factory simulator on {url}")
            + f"\n  POST {url}{MANUFACTURES_PATH}  orders production "
            f"(201, callback once after {delay:g}s in {PRODUCTION_STAGES} stages)"
            + f"\n  GET  {url}{MANUFACTURES_PATH}  lists what it received"
            + f"\n  failure rate {failure_rate:g}, latency {latency:g}s. "
            "Change with --delay SECONDS, --failure-rate 0..1, --latency SECONDS."
            + "\n  Point the shop at it with FACTORY_API_URL. Quit with CONTROL-C."
        )
