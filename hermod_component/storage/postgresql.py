"""
PostgreSQL storage, for production and for several Hermod instances on one database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extras
from twisted.enterprise.adbapi import ConnectionPool
from zope.interface import implementer

from hermod_component.interfaces import IStorage
from hermod_component.storage._sql import Cursor, Dialect, SQLStorage

_MIGRATION_LOCK = 0x4865726D6F64  # "Hermod": the advisory lock key serializing migrations


class PostgreSQLDialect(Dialect):
    """
    PostgreSQL's side of the SQL: C{%s} placeholders, item sequence numbers from the
    C{item_order} sequence, statement batches sent with C{execute_batch}.
    """

    name = "postgresql"
    placeholder = "%s"
    nextItemSeq = "nextval('item_order')"
    integrityErrors = (psycopg2.IntegrityError,)

    def executeMany(self, cursor: Cursor, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """
        Run C{statement} once per row in order, up to 100 rows per round trip.
        """
        if rows:
            psycopg2.extras.execute_batch(cursor, self.sql(statement), rows, page_size=100)

    def lockMigrations(self, cursor: Cursor) -> None:
        """
        Take a transaction-scoped advisory lock so concurrent starts migrate one at a time.
        """
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))


@implementer(IStorage)
class PostgreSQLStorage(SQLStorage):
    """
    L{IStorage} in a PostgreSQL database.
    """

    dialect = PostgreSQLDialect()

    def __init__(self, dsn: str, reactor: Any, maxConnections: int = 5) -> None:
        """
        @param dsn: The libpq connection string.
        @param reactor: The reactor the connection pool reports through.
        @param maxConnections: The pool's largest size.
        """
        super().__init__(reactor)
        self._dsn = dsn
        self._maxConnections = maxConnections

    def _openPool(self) -> ConnectionPool:
        return ConnectionPool(
            "psycopg2",
            self._dsn,
            cp_min=1,
            cp_max=self._maxConnections,
            cp_noisy=False,
            cp_reconnect=True,
            cp_reactor=self._reactor,
        )
