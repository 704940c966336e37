"""What becomes of a pre-order's promise (inventory.signals) moves its order along, in the
transaction that settled the promise."""

from typing import Any

from inventory import signals
from shop.services import cancel_pre_orders, complete_pre_orders


def on_promises_kept(*, promises: list, **kwargs: Any) -> None:
    complete_pre_orders(promise_ids=[p.pk for p in promises])


def on_promises_cancelled(*, promises: list, **kwargs: Any) -> None:
    cancel_pre_orders(reasons={p.pk: p.reason for p in promises})


def connect() -> None:
    signals.promises_kept.connect(on_promises_kept, dispatch_uid="shop.promises_kept")
    signals.promises_cancelled.connect(
        on_promises_cancelled, dispatch_uid="shop.promises_cancelled"
    )
