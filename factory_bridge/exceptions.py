from nudged.core.exceptions import DomainError


class BridgeError(DomainError):
    code = "bridge_error"


class ForgedCallback(BridgeError):
    """The callback token is not one we issued (altered, forged or for no request)."""

    code = "forbidden"
    status = 403


class ExpiredCallback(BridgeError):
    """The callback token is ours but older than FACTORY_CALLBACK_MAX_AGE."""

    code = "expired"
    status = 403


class CallbackForFailedRestock(BridgeError):
    """The restock request the token names has failed; its stock is no longer expected."""

    code = "restock_failed"
    status = 409


class CallbackMismatch(BridgeError):
    """The echoed body does not match the restock request the token names."""

    code = "invalid"
    status = 400


class UnreadableMessage(Exception):
    """A queue message that no retry can make processable."""
