from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from factory_bridge.services.dlq import REDRIVE_MAX_LIMIT, held_elsewhere, redrive


class Command(BaseCommand):
    help = (
        "Move dead messages from the DLQs back to their source queues (send first, then "
        "delete). "
        "Choose --all, --limit N or --message-id ID; --dry-run lists without moving. Exits "
        "non-zero when anything could not be moved or found, or nothing moved from a DLQ "
        "that holds messages."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true", help="every message in every DLQ")
        which.add_argument(
            "--limit", type=int, help=f"at most N messages (1 to {REDRIVE_MAX_LIMIT})"
        )
        which.add_argument(
            "--message-id",
            action="append",
            dest="message_ids",
            metavar="ID",
            help="one message, by its DLQ message id or fingerprint (repeatable)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would move")

    def handle(self, *args: Any, **options: Any) -> None:
        limit = options["limit"]
        if limit is not None and not 1 <= limit <= REDRIVE_MAX_LIMIT:
            raise CommandError(
                f"--limit must be a number from 1 to {REDRIVE_MAX_LIMIT} (got {limit}); "
                "use --all for everything."
            )
        report = redrive(
            message_ids=options["message_ids"], limit=limit, dry_run=options["dry_run"]
        )
        if options["dry_run"]:
            for row in report.listed:
                self.stdout.write(
                    f"would move {row.sqs_message_id}  {row.event_type or '-'}  {row.sku or '-'}  "
                    f"{row.last_error[:60]}"
                )
            self.stdout.write(f"Dry run: {len(report.listed)} message(s) would move.")
        else:
            for message_id in report.moved:
                self.stdout.write(f"moved {message_id}")
            self.stdout.write(f"Redrive: {len(report.moved)} moved, {len(report.failed)} failed.")
        verb = "would move" if options["dry_run"] else "moved"
        for (source, dlq), (moved, left) in report.by_queue.items():
            self.stdout.write(f"  {dlq} -> {source}: {moved} {verb}, {left} left in {dlq}.")
        if report.busy:
            raise CommandError(f"Nothing was moved: {report.error}.")
        if report.error:
            done = (
                f"{len(report.moved)} moved before the failure"
                if report.moved
                else "Nothing was moved"
            )
            raise CommandError(f"{report.error}. {done}; check AWS_ENDPOINT_URL and run again.")
        if report.missing:
            hint = (
                f" The DLQ holds {held_elsewhere(report.left)}."
                if report.left.get("in_flight")
                else ""
            )
            raise CommandError(f"Not found in the DLQ: {', '.join(report.missing)}.{hint}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} message(s) could not be moved; see the log.")
        if stuck := report.stuck():
            nothing = "Nothing could be listed" if options["dry_run"] else "Nothing was moved"
            raise CommandError(f"{nothing}: {stuck}.")
        if not sum(report.left.values()):
            self.stdout.write("The DLQ is empty.")
        elif not options["dry_run"]:
            self.stdout.write(f"Still in the DLQ: {sum(report.left.values())} message(s).")
