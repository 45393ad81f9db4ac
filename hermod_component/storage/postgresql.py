"""
PostgreSQL storage, for production and for several Hermod instances on one database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg2
import psycopg2.extras
from twisted.enterprise.adbapi import ConnectionPool
from twisted.internet.defer import Deferred
from zope.interface import implementer

from hermod_component.interfaces import IStorage
from hermod_component.model import Affiliation, Node, NodeConfig, Subscription
from hermod_component.storage._groupcommit import GroupCommitMixin
from hermod_component.storage._listen import CHANNEL, NodeChangeListener
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
class PostgreSQLStorage(GroupCommitMixin, SQLStorage):
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
        self._listener: NodeChangeListener | None = None
        self._instance = ""

    def watchNodeChanges(self, callback: Callable[[str | None], None]) -> Deferred[None]:
        """
        Call C{callback} with the identifier of each node another instance changes (or
        C{None} when changes may have been missed); this instance's own changes are not
        reported. Call after L{start}.
        """
        self._listener = NodeChangeListener(self._dsn, self._reactor, callback)
        self._instance = self._listener.instance
        return self._listener.start()

    def stop(self) -> Deferred[None]:
        """
        Stop listening for node changes, then stop as every SQL storage does.
        """
        if self._listener is not None:
            self._listener.stop()
        return super().stop()

    def _nodeChanged(self, cursor: Cursor, identifier: str) -> None:
        """
        Tell other instances, at commit, that the node's cached state is stale.
        """
        if self._instance:
            cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self._instance}:{identifier}"))

    def _createNode(self, cursor: Cursor, node: Node) -> None:
        super()._createNode(cursor, node)
        self._nodeChanged(cursor, node.identifier)

    def _configureNode(self, cursor: Cursor, identifier: str, config: NodeConfig) -> None:
        super()._configureNode(cursor, identifier, config)
        self._nodeChanged(cursor, identifier)

    def _deleteNode(self, cursor: Cursor, identifier: str, when: float) -> None:
        super()._deleteNode(cursor, identifier, when)
        self._nodeChanged(cursor, identifier)

    def _setAffiliations(
        self, cursor: Cursor, identifier: str, changes: Mapping[str, Affiliation]
    ) -> None:
        super()._setAffiliations(cursor, identifier, changes)
        self._nodeChanged(cursor, identifier)

    def _saveSubscription(self, cursor: Cursor, subscription: Subscription) -> None:
        super()._saveSubscription(cursor, subscription)
        self._nodeChanged(cursor, subscription.node)

    def _removeSubscription(self, cursor: Cursor, identifier: str, subscriptionId: str) -> None:
        super()._removeSubscription(cursor, identifier, subscriptionId)
        self._nodeChanged(cursor, identifier)

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
