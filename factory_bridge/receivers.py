"""Stock decisions announced by inventory become outbox events, in their transaction."""

from typing import Any

from factory_bridge.services import outbox
from inventory import events, signals


def on_depleted(*, state: Any, **kwargs: Any) -> None:
    outbox.record([events.depleted(stock=state)])


def on_reorder_decided(*, decision: Any, sku: str, factory_code: str, **kwargs: Any) -> None:
    outbox.record([events.low(decision=decision, factory_code=factory_code, sku=sku)])


def on_refusals_counted(*, counts: list, **kwargs: Any) -> None:
    outbox.record([events.refused(count=count) for count in counts])


def connect() -> None:
    signals.depleted.connect(on_depleted, dispatch_uid="factory_bridge.depleted")
    signals.reorder_decided.connect(on_reorder_decided, dispatch_uid="factory_bridge.low")
    signals.refusals_counted.connect(on_refusals_counted, dispatch_uid="factory_bridge.refused")
