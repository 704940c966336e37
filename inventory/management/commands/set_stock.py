from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.exceptions import InventoryError
from inventory.services import count_outcome, set_stock


class Command(BaseCommand):
    help = "Set a product's on-hand stock after a physical count; the change is audited."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sku")
        parser.add_argument("quantity", type=int)
        parser.add_argument("--note", default="", help="Why the stock changed (kept for audit)")

    def handle(self, *args: Any, sku: str, quantity: int, note: str, **options: Any) -> None:
        try:
            adjustment = set_stock(sku=sku, quantity=quantity, note=note or "physical count")
        except InventoryError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(
            self.style.SUCCESS(f"{sku}: {adjustment.old_quantity} → {adjustment.new_quantity}")
        )
        self.stdout.write(count_outcome())
