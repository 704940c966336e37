"""django-q2 entry points: each calls one service."""

from factory_bridge.services import dlq_jobs, outbox, pollers
from factory_bridge.services.restock import sweep


def relay_outbox() -> str:
    return str(outbox.relay_outbox())


def run_poller(name: str) -> int:
    return pollers.run_poller(name=name)


def ensure_pollers() -> list[str]:
    return pollers.ensure_pollers()


def reorder_overdue() -> str:
    return str(sweep.reorder_overdue())


def run_dlq_job(job_id: int) -> str:
    return dlq_jobs.run_job(job_id=job_id)
