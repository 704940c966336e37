"""The cluster's periodic tasks, created or updated idempotently."""

from django_q.models import Schedule

SCHEDULES = {
    "outbox-sweep": ("factory_bridge.tasks.relay_outbox", 1),
    "ensure-pollers": ("factory_bridge.tasks.ensure_pollers", 1),
    "reorder-overdue": ("factory_bridge.tasks.reorder_overdue", 1),
    # Every app's history past its retention, expired sessions and published events included.
    "purge": ("nudged.tasks.purge_history", 60),
}
# Schedules of earlier versions, folded into others: removed, or they would run twice.
RETIRED = ("outbox-purge",)


def install_schedules() -> list[str]:
    """Create or update the minute schedules, remove retired ones; return the names created."""
    Schedule.objects.filter(name__in=RETIRED).delete()
    changed = []
    for name, (func, minutes) in SCHEDULES.items():
        _, created = Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
        if created:
            changed.append(name)
    return changed
