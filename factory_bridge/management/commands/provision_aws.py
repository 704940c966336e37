from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from factory_bridge.services.provisioning import provision


class Command(BaseCommand):
    help = "Create or update the SNS topics, SQS queues, DLQ and subscriptions (idempotent)."

    def handle(self, *args, **options) -> None:
        endpoint = settings.AWS_ENDPOINT_URL or "AWS (default endpoint)"
        try:
            report = provision()
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"Could not provision at {endpoint}: {exc}") from exc
        self.stdout.write(f"Endpoint: {endpoint}  region: {settings.AWS_DEFAULT_REGION}")
        width = max(len(name) for _, name, _ in report.rows)
        for kind, name, action in report.rows:
            self.stdout.write(f"  {kind:<13} {name:<{width}}  {action}")
        summary = "changed" if report.changed else "nothing to change"
        self.stdout.write(self.style.SUCCESS(f"Provisioning done: {summary}."))
