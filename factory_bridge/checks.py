"""System checks for settings that only fail together."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_visibility_outlasts_a_factory_call(app_configs: Any, **kwargs: Any) -> list[Error]:
    """A depletion must stay hidden while its factory call runs, or a second consumer orders it."""
    from factory_bridge.services.restock import message_budget

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
            id="factory_bridge.E001",
        )
    ]
