import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.mail_sink import mail_sink


class Command(BaseCommand):
    help = "Run a local SMTP server that saves each message as one .eml file (for `make run`)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=getattr(settings, "MAIL_PORT", 8025))
        parser.add_argument("--dir", default="run/mail", help="Folder the messages go to.")

    def handle(self, *args: Any, **options: Any) -> None:
        directory = Path(options["dir"])
        try:
            sink = mail_sink(directory=directory, port=options["port"])
        except (OSError, RuntimeError) as exc:
            raise CommandError(f"could not listen on port {options['port']}: {exc}") from exc
        self.stdout.write(f"Mail sink on 127.0.0.1:{options['port']}, messages in {directory}/")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        sink.stop()
