from typing import Any


class DomainError(Exception):
    """An error a client can act on: `code` and `status` shape the API response."""

    code = "error"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def extra(self) -> dict[str, Any]:
        """Fields the API response carries after `code` and `detail`."""
        return {}

    def headers(self) -> dict[str, str]:
        """Headers the API response carries (such as Retry-After)."""
        return {}
