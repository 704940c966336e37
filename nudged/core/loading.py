"""Swappable parts named in settings by a dotted path (the event publisher, the factory client,
the sales ledger, the purges): one loader, imported once per path and process."""

from functools import cache
from typing import Any

from django.utils.module_loading import import_string


@cache
def load(path: str) -> Any:
    """The object `path` names ("package.module.Name"); callers make instances of their own."""
    return import_string(path)
