"""System checks for the event pipeline's settings."""

from typing import Any

from django.conf import settings
from django.core.checks import Error


def check_outbox_settings(**kwargs: Any) -> list[Error]:
    """OUTBOX_MAX_ATTEMPTS and OUTBOX_RETENTION_DAYS must be at least 1."""
    return [
        Error(
            f"{name} is {getattr(settings, name)}; it must be at least 1.",
            id="factory_bridge.E001",
        )
        for name in ("OUTBOX_MAX_ATTEMPTS", "OUTBOX_RETENTION_DAYS")
        if getattr(settings, name) < 1
    ]
