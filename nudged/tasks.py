"""django-q2 entry points of the project as a whole: each calls one service."""

from nudged.ops.purges import purge_all


def purge_history() -> dict[str, int]:
    return purge_all()
