from typing import Any

from django.core.management.base import BaseCommand

from factory_bridge.services.pollers import ensure_pollers
from factory_bridge.services.schedules import SCHEDULES, install_schedules


class Command(BaseCommand):
    help = "Install the cluster's schedules and queue the long-polling loops (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = install_schedules()
        started = ensure_pollers(takeover=True)
        self.stdout.write(f"Schedules: {', '.join(SCHEDULES)} ({len(created)} new)")
        self.stdout.write(f"Pollers queued: {', '.join(started) or 'none (already running)'}")
