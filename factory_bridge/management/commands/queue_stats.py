import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from factory_bridge.infrastructure import queue_names
from factory_bridge.queues import QueueError, SqsQueue
from factory_bridge.services.outbox import backlog


class Command(BaseCommand):
    help = "Approximate message counts of every queue and DLQ, plus the outbox (pending, dead)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        names = queue_names()
        try:
            queues = {name: SqsQueue(name).counts() for name in names}
        except QueueError as exc:
            raise CommandError(f"{exc}. Is AWS_ENDPOINT_URL right and provision_aws run?") from exc
        outbox = backlog()
        if options["json"]:
            self.stdout.write(json.dumps({"queues": queues, "outbox": outbox}, indent=2))
            return
        width = max(len(n) for n in names)
        self.stdout.write(f"{'queue':<{width}}  {'visible':>8}  {'in flight':>9}  {'delayed':>8}")
        for name, c in queues.items():
            self.stdout.write(
                f"{name:<{width}}  {c['visible']:>8}  {c['in_flight']:>9}  {c['delayed']:>8}"
            )
        self.stdout.write(
            f"outbox: {outbox['pending']} pending, oldest {outbox['oldest_age_seconds']}s, "
            f"{outbox['dead']} dead"
        )
