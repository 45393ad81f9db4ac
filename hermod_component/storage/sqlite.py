"""
SQLite storage: the embedded default, one file and no server.

One connection in WAL mode with C{synchronous=NORMAL} and foreign keys on, owned by one worker
thread (L{SQLiteExecutor}); SQLite allows one writer at a time, so a single connection
serializes transactions without lock waits.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from zope.interface import implementer

from hermod_component.interfaces import IStorage
from hermod_component.storage._executor import SQLiteExecutor
from hermod_component.storage._groupcommit import GroupCommitMixin
from hermod_component.storage._sql import Cursor, Dialect, SQLStorage


class SQLiteDialect(Dialect):
    """
    SQLite's side of the SQL: C{?} placeholders, item sequence numbers from the largest one in
    use (one writer at a time makes that safe; the index on C{seq} makes it cheap).
    """

    name = "sqlite"
    placeholder = "?"
    nextItemSeq = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM items)"
    integrityErrors = (sqlite3.IntegrityError,)

    def lockMigrations(self, cursor: Cursor) -> None:
        """
        Open the transaction before the schema statements: the C{sqlite3} module otherwise runs
        DDL outside any transaction, and a failed migration would be left half applied.
        """
        self.beginTransaction(cursor)

    def beginTransaction(self, cursor: Cursor) -> None:
        """
        The C{sqlite3} module opens a transaction only before data-changing statements. A
        C{SAVEPOINT} outside one is a transaction of its own, which its C{RELEASE} commits:
        group commit would then commit every publish of a batch separately.
        """
        if not cursor.connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")


def _connect(path: str) -> sqlite3.Connection:
    """
    Open and configure the connection to C{path}; in the executor's thread, which alone uses it.
    """
    connection = sqlite3.connect(path)
    try:
        _configureConnection(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _configureConnection(connection: sqlite3.Connection) -> None:
    """
    Per-connection settings: write-ahead log, C{NORMAL} sync, foreign keys (for the cascades).
    """
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")


@implementer(IStorage)
class SQLiteStorage(GroupCommitMixin, SQLStorage):
    """
    L{IStorage} in one SQLite file.
    """

    dialect = SQLiteDialect()

    def __init__(self, path: str, reactor: Any) -> None:
        """
        @param path: The database file; its directory is created at start if missing.
        @param reactor: The reactor the executor reports through.
        """
        super().__init__(reactor)
        self.path = path

    def _prepare(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)

    def _openPool(self) -> SQLiteExecutor:
        path = self.path
        return SQLiteExecutor(lambda: _connect(path), self._reactor)
