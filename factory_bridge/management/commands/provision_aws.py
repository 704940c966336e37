from time import monotonic, sleep
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from factory_bridge.tools.provisioning import ProvisionReport, provision

# The longest --wait: an endpoint that has not answered for an hour is not starting.
MAX_WAIT_SECONDS = 3600
RETRY_SECONDS = 0.5


class Command(BaseCommand):
    help = "Create or update the SNS topics, SQS queues, DLQ and subscriptions (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Retry for up to SECONDS while the endpoint refuses connections (a local "
            "endpoint that is starting beside this command, as in make run).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wait: float = options["wait"]
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise CommandError(f"--wait must be 0 to {MAX_WAIT_SECONDS} seconds, got {wait:g}.")
        endpoint = settings.AWS_ENDPOINT_URL or "AWS (default endpoint)"
        try:
            report = self._provision(wait)
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"Could not provision at {endpoint}: {exc}") from exc
        self.stdout.write(f"Endpoint: {endpoint}  region: {settings.AWS_DEFAULT_REGION}")
        width = max(len(name) for _, name, _ in report.rows)
        for kind, name, action in report.rows:
            self.stdout.write(f"  {kind:<13} {name:<{width}}  {action}")
        summary = "changed" if report.changed else "nothing to change"
        self.stdout.write(self.style.SUCCESS(f"Provisioning done: {summary}."))

    def _provision(self, wait: float) -> ProvisionReport:
        deadline = monotonic() + wait
        while True:
            try:
                return provision()
            except EndpointConnectionError:
                left = deadline - monotonic()
                if left <= 0:
                    raise
            sleep(min(RETRY_SECONDS, left))
