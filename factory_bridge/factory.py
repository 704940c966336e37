"""The legacy factory boundary: place a manufacturing order over HTTP."""

import logging
from dataclasses import dataclass
from typing import Protocol

import requests
from django.conf import settings

from nudged.core.loading import load

logger = logging.getLogger(__name__)

MESSAGE_GROUP_ID = "stock-arrival-group"


@dataclass(frozen=True)
class ManufactureOrder:
    product_id: str
    quantity: int
    factory_id: str
    requester: str
    callback_url: str
    idempotency_key: str

    def payload(self) -> dict[str, str]:
        """The body the legacy factory expects: every value a string.

        `IdempotencyKey` (the depletion's key) is an extra field the legacy factory ignores
        and echoes back; a factory that honours it can drop a repeated order.
        """
        return {
            "MessageGroupId": MESSAGE_GROUP_ID,
            "MessageAttributeProductId": self.product_id,
            "MessageAttributeProductCnt": str(self.quantity),
            "MessageAttributeFactoryId": self.factory_id,
            "MessageAttributeRequester": self.requester,
            "CallbackUrl": self.callback_url,
            "IdempotencyKey": self.idempotency_key,
        }


class FactoryError(Exception):
    """The factory did not accept the order; `kind` is timeout, connection, status or answer."""

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.status = status

    @property
    def summary(self) -> str:
        """What staff read on the restock: what the factory did, without the details."""
        if self.kind == "status":
            return f"factory refused: {self.status}"
        if self.kind == "connection":
            return "factory unreachable"
        if self.kind == "timeout":
            return "factory timed out"
        return "factory answer unreadable"


class FactoryClient(Protocol):
    def order(self, order: ManufactureOrder) -> str: ...


class HttpFactoryClient:
    """POST {FACTORY_API_URL}/api/manufactures; returns the factory's job id."""

    def order(self, order: ManufactureOrder) -> str:
        url = f"{settings.FACTORY_API_URL.rstrip('/')}/api/manufactures"
        timeout = (settings.FACTORY_CONNECT_TIMEOUT, settings.FACTORY_READ_TIMEOUT)
        try:
            response = requests.post(url, json=order.payload(), timeout=timeout)
        except requests.Timeout as exc:
            raise FactoryError("timeout", f"no answer from {url} within {timeout}") from exc
        except requests.ConnectionError as exc:
            raise FactoryError("connection", f"cannot connect to {url}: {exc}") from exc
        if response.status_code != 201:
            raise FactoryError(
                "status",
                f"factory answered {response.status_code}: {response.text[:200]}",
                response.status_code,
            )
        try:
            return str(response.json()["data"]["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FactoryError("answer", f"unreadable 201 body: {response.text[:200]}") from exc


def get_factory_client() -> FactoryClient:
    return load(settings.FACTORY_CLIENT)()
