"""
SQLite storage: the embedded default, one file and no server.

One connection (C{cp_max=1}) in WAL mode with C{synchronous=NORMAL} and foreign keys on; SQLite
allows one writer at a time, so a single connection serializes transactions without lock waits.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.enterprise.adbapi import ConnectionPool
from zope.interface import implementer

from hermod_component.interfaces import IStorage
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
        if not cursor.connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")


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
        @param reactor: The reactor the connection pool reports through.
        """
        super().__init__(reactor)
        self.path = path

    def _prepare(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)

    def _openPool(self) -> ConnectionPool:
        return ConnectionPool(
            "sqlite3",
            self.path,
            cp_min=1,
            cp_max=1,
            cp_noisy=False,
            cp_openfun=_configureConnection,
            cp_reactor=self._reactor,
            check_same_thread=False,
        )
