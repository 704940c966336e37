"""manage.py against a database it cannot use: one line saying what to do, for any command."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import MySQLdb
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nudged.settings.local"}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _url(name: str, *, port: int | None = None) -> str:
    db = connection.settings_dict
    return f"mysql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{port or db['PORT'] or 3306}/{name}"


@pytest.fixture
def empty_database(db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A database that exists and has no tables, as one never migrated."""
    name = f"{connection.settings_dict['NAME']}_empty"
    parts = urlsplit(_url(name))
    server = MySQLdb.connect(
        host=parts.hostname,
        port=parts.port,
        user=parts.username,
        passwd=connection.settings_dict["PASSWORD"],
    )
    server.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    try:
        yield _url(name)
    finally:
        server.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        server.close()


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: ")
    return line


@pytest.mark.parametrize(
    "command", [("set_stock", "CP-502101", "1"), ("load_catalog",), ("setup_worker",)]
)
def test_a_database_never_migrated_is_named_with_what_to_do(empty_database, command):
    line = _one_line(manage(*command, database_url=empty_database))

    assert f"database '{urlsplit(empty_database).path[1:]}'" in line
    assert "is not migrated" in line
    assert "source run/env.sh" in line
    assert "manage.py migrate" in line


def test_a_missing_database_is_named_with_what_to_do(db):
    line = _one_line(manage("set_stock", "CP-502101", "1", database_url=_url("nudged_no_such")))

    assert "Cannot use the database 'nudged_no_such'" in line
    assert "Unknown database" in line
    assert "source run/env.sh" in line


def test_a_server_that_does_not_answer_is_named_with_what_to_do(db):
    line = _one_line(manage("load_catalog", database_url=_url("nudged", port=1)))

    assert "Cannot use the database 'nudged' at 127.0.0.1:1" in line
    assert "MySQL running" in line


def test_traceback_still_shows_the_traceback(empty_database):
    result = manage("set_stock", "CP-502101", "1", "--traceback", database_url=empty_database)

    assert result.returncode == 1
    assert "ProgrammingError" in result.stderr
    assert "Traceback" in result.stderr
