"""`provision_aws --wait`: provisioning a local endpoint that starts beside the command."""

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import _wait_port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def late_endpoint(settings) -> Iterator[str]:
    """A moto server that starts listening a second after the test begins."""
    port = free_port()
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    started: list[subprocess.Popen[bytes]] = []

    def start_later() -> None:
        time.sleep(1.0)
        binary = Path(sys.executable).with_name("moto_server")
        started.append(
            subprocess.Popen(
                [str(binary), "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    yield settings.AWS_ENDPOINT_URL
    thread.join()
    for server in started:
        server.terminate()
        server.wait(timeout=10)


def test_wait_provisions_an_endpoint_once_it_answers(late_endpoint: str) -> None:
    out = StringIO()

    call_command("provision_aws", "--wait", "60", stdout=out)

    _wait_port("127.0.0.1", int(late_endpoint.rsplit(":", 1)[1]), timeout=1)
    assert out.getvalue().startswith(f"Endpoint: {late_endpoint}  region: ")
    assert out.getvalue().rstrip().endswith("Provisioning done: changed.")


def test_without_wait_an_endpoint_not_yet_listening_is_an_error(late_endpoint: str) -> None:
    with pytest.raises(CommandError, match=f"Could not provision at {late_endpoint}: "):
        call_command("provision_aws", stdout=StringIO())


def test_wait_gives_up_after_its_seconds(settings) -> None:
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(CommandError, match="Could not connect to the endpoint URL"):
        call_command("provision_aws", "--wait", "2", stdout=StringIO())

    # Each try is one call with botocore's retries (about 3 s against a closed port).
    assert 2 <= time.monotonic() - started < 15


@pytest.mark.parametrize("seconds", ["-1", "3601", "nan"])
def test_wait_out_of_range_is_a_command_error(seconds: str) -> None:
    with pytest.raises(CommandError, match="--wait must be 0 to 3600 seconds"):
        call_command("provision_aws", "--wait", seconds)
