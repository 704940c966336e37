"""django-q2 entry points: each calls one service."""

from factory_bridge.services import outbox, pollers, restock


def relay_outbox() -> str:
    return str(outbox.relay_outbox())


def run_poller(name: str) -> int:
    return pollers.run_poller(name=name)


def ensure_pollers() -> list[str]:
    return pollers.ensure_pollers()


def reorder_overdue() -> str:
    return str(restock.reorder_overdue())
