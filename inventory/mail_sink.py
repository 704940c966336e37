"""A local SMTP server for `make run`: each message it receives becomes one RFC 822 file."""

import itertools
import logging
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from django.utils import timezone

logger = logging.getLogger(__name__)


class FileSink:
    """aiosmtpd handler writing each message to DIRECTORY/<timestamp>-<n>.eml."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"{stamp}-{next(self.counter)}.eml"
        # Written under a temporary name first: a reader never sees half a message.
        partial = path.with_suffix(".part")
        partial.write_bytes(envelope.original_content or envelope.content)
        partial.rename(path)
        logger.info("mail to %s saved as %s", ", ".join(envelope.rcpt_tos), path.name)
        return "250 Message accepted for delivery"


def mail_sink(*, directory: Path, port: int, host: str = "127.0.0.1") -> Controller:
    """Start the sink in a thread of its own; the caller stops it with `.stop()`."""
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(FileSink(directory), hostname=host, port=port)
    controller.start()
    return controller
