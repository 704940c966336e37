from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from factory_bridge.tools.cloudformation import render_template, template_path


class Command(BaseCommand):
    help = (
        "Write the CloudFormation template of Nudged's AWS resources (deploy/nudged.yaml) from "
        "the declaration provision_aws applies."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--output",
            default=str(template_path()),
            help="file to write (default: deploy/nudged.yaml); - for standard output",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        template = render_template()
        if options["output"] == "-":
            self.stdout.write(template, ending="")
            return
        path = Path(options["output"])
        try:
            path.write_text(template, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Could not write {path}: {exc.strerror}") from exc
        self.stdout.write(self.style.SUCCESS(f"Wrote {path}"))
