class BridgeError(Exception):
    code = "bridge_error"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ForgedCallback(BridgeError):
    """The callback token is not one we issued (altered, forged or for no request)."""

    code = "forbidden"
    status = 403


class CallbackMismatch(BridgeError):
    """The echoed body does not match the restock request the token names."""

    code = "invalid"
    status = 400


class UnreadableMessage(Exception):
    """A queue message that no retry can make processable."""
