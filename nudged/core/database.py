"""What a command says when its database cannot be used: one line an operator can act on."""

from django.conf import settings
from django.db import DatabaseError

# MySQL's codes for a server that does not answer or refuses the login, or a missing database.
UNREACHABLE = frozenset({1044, 1045, 1049, 2002, 2003, 2005, 2006, 2013})
# ... and for a table or column the code needs that the database lacks: not migrated.
NOT_MIGRATED = frozenset({1054, 1146})
BESIDE_MAKE_RUN = "beside `make run`: `source run/env.sh` first"


def unusable_database(*, error: DatabaseError) -> str | None:
    """Why the database cannot be used and what to do, or None for any other database error."""
    code = error.args[0] if error.args else None
    db = settings.DATABASES["default"]
    where = f"database {db['NAME']!r} at {db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}"
    reason = error.args[-1]
    if code in UNREACHABLE:
        return (
            f"Cannot use the {where} ({reason}). Is DATABASE_URL right ({BESIDE_MAKE_RUN}), "
            "and MySQL running?"
        )
    if code in NOT_MIGRATED:
        return (
            f"The {where} is not migrated ({reason}). Is DATABASE_URL right ({BESIDE_MAKE_RUN}), "
            "or does it need `python manage.py migrate`?"
        )
    return None
