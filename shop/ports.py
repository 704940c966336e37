"""What the layers below call up through: ports they declare, which the shop fills when it starts
(shop/apps.py), so that inventory and factory_bridge never import the shop."""

from django.conf import settings
from django.urls import reverse

from inventory.alerts import AlertLinks
from inventory.promises import PreOrders
from shop.services import cancel_pre_orders, complete_pre_orders


class AlertPages(AlertLinks):
    """An alert's email links to the shop's pages that confirm it or end it."""

    def confirm(self, *, token: str) -> str:
        return settings.PUBLIC_BASE_URL + reverse("shop:alert-confirm", kwargs={"token": token})

    def unsubscribe(self, *, token: str) -> str:
        path = reverse("shop:alert-unsubscribe", kwargs={"token": token})
        return settings.PUBLIC_BASE_URL + path


class OrdersOfPromises(PreOrders):
    """A pre-order moves along when inventory settles its promise, in the same transaction."""

    def complete(self, *, promise_ids: list[int]) -> None:
        complete_pre_orders(promise_ids=promise_ids)

    def cancel(self, *, reasons: dict[int, str]) -> None:
        cancel_pre_orders(reasons=reasons)
