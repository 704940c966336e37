from typing import Any

from django.core.management.base import BaseCommand

from inventory.services import load_catalog


class Command(BaseCommand):
    help = "Load the demo catalog (idempotent: existing products are left as they are)."

    def handle(self, *args: Any, **options: Any) -> None:
        created, kept = load_catalog()
        self.stdout.write(
            self.style.SUCCESS(f"Catalog loaded: {created} created, {kept} already present.")
        )
