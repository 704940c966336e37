#!/usr/bin/env python
import sys

from nudged.settings import configuration_error


def main() -> None:
    error = configuration_error()
    if error:
        sys.exit(error)
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    from nudged.core.database import unusable_database

    try:
        execute_from_command_line(sys.argv)
    except DatabaseError as exc:
        # Any command against a database it cannot use (the wrong DATABASE_URL, MySQL down, not
        # migrated) ends in one line saying what to do, as a CommandError does, not a traceback.
        problem = unusable_database(error=exc)
        if problem is None or "--traceback" in sys.argv:
            raise
        sys.exit(f"CommandError: {problem}")


if __name__ == "__main__":
    main()
