"""
Numbered schema migrations: the files in C{schema/}, applied in order at start and recorded in
the C{schema_migrations} table, so that applying them again changes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from hermod_component.storage._sql import Dialect

def splitStatements(script: str) -> list[str]:
    """
    Split a migration script into statements: C{--} comments are dropped, then the text is cut
    at semicolons. Migration files therefore hold no semicolons or C{--} inside literals.
    """
    withoutComments = re.sub(r"--[^\n]*", "", script)
    return [part.strip() for part in withoutComments.split(";") if part.strip()]


@attrs.frozen
class Migration:
    """
    One numbered schema migration.

    @ivar version: Its number, from the file name.
    @ivar name: The file name.
    @ivar statements: The SQL statements to run, in order.
    """

    version: int
    name: str
    statements: tuple[str, ...]


def loadMigrations(dialect: str) -> list[Migration]:
    """
    The migrations shipped in C{schema/} for C{dialect}, lowest number first. Files are named
    C{NNN_description.<dialect>.sql}.
    """
    pattern = re.compile(r"^(\d+)_[A-Za-z0-9_]+\." + re.escape(dialect) + r"\.sql$")
    found = []
    for entry in resources.files("hermod_component.storage").joinpath("schema").iterdir():
        match = pattern.match(entry.name)
        if match:
            found.append(
                Migration(
                    int(match.group(1)),
                    entry.name,
                    tuple(splitStatements(entry.read_text(encoding="utf-8"))),
                )
            )
    found.sort(key=lambda migration: migration.version)
    return found


def applyMigrations(cursor: Any, dialect: Dialect, migrations: Sequence[Migration]) -> list[str]:
    """
    Apply, in one transaction, the C{migrations} not yet recorded in C{schema_migrations}, and
    record them.

    @param cursor: The interaction's cursor.
    @return: The names of the migrations applied now.
    """
    dialect.lockMigrations(cursor)
    cursor.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER NOT NULL PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied DOUBLE PRECISION NOT NULL)"
    )
    cursor.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in cursor.fetchall()}
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        for statement in migration.statements:
            cursor.execute(statement)
        cursor.execute(
            dialect.sql("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)"),
            (migration.version, migration.name, time.time()),
        )
        applied.append(migration.name)
    return applied
