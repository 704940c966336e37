"""System checks for settings of the event pipeline and the factory that only fail together."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from factory_bridge.services.restock.consumer import message_budget


@register()
def check_outbox_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    """OUTBOX_MAX_ATTEMPTS and OUTBOX_RETENTION_DAYS must be at least 1."""
    return [
        Error(
            f"{name} is {getattr(settings, name)}; it must be at least 1.",
            id="factory_bridge.E001",
        )
        for name in ("OUTBOX_MAX_ATTEMPTS", "OUTBOX_RETENTION_DAYS")
        if getattr(settings, name) < 1
    ]


@register()
def check_visibility_outlasts_a_factory_call(app_configs: Any, **kwargs: Any) -> list[Error]:
    """A depletion must stay hidden while its factory call runs, or a second consumer orders it."""
    budget = message_budget()
    if budget < settings.SQS_VISIBILITY_TIMEOUT:
        return []
    return [
        Error(
            f"SQS_VISIBILITY_TIMEOUT ({settings.SQS_VISIBILITY_TIMEOUT} s) must be longer than "
            f"one factory call at worst ({budget:g} s: FACTORY_CONNECT_TIMEOUT + "
            "FACTORY_READ_TIMEOUT + 2 s).",
            hint="Raise SQS_VISIBILITY_TIMEOUT or lower the factory timeouts; otherwise a "
            "depletion reappears during its factory call and is ordered twice.",
            id="factory_bridge.E002",
        )
    ]
