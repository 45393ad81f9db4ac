"""
The SQL shared by the SQLite and PostgreSQL engines.

L{SQLStorage} implements L{IStorage} once; each engine supplies a L{Dialect} (placeholder style,
how the next item sequence number is drawn, how a batch of statements is sent, how migrations
are serialized) and opens its own L{TransactionRunner} (SQLite a one-thread
L{hermod_component.storage._executor.SQLiteExecutor}, PostgreSQL an C{adbapi.ConnectionPool}).
Every method runs one interaction function in the runner's thread: one transaction, plain
synchronous code that returns model objects and turns driver errors into domain errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from hermod_component.errors import ItemNotFound, NodeExists, NodeNotFound
from hermod_component.model import (
    Affiliation,
    Event,
    EventAction,
    Item,
    Node,
    NodeConfig,
    PublishResult,
    Subscription,
    SubscriptionState,
)
from hermod_component.storage._codec import (
    bareJID,
    configFromJSON,
    configToJSON,
    headersFromJSON,
    headersToJSON,
    optionsFromJSON,
    optionsToJSON,
)
from hermod_component.storage._migrations import applyMigrations, loadMigrations

_P = ParamSpec("_P")
_T = TypeVar("_T")

Cursor = Any
"""
A DB-API cursor (an C{sqlite3.Cursor}, or an C{adbapi.Transaction}, which behaves as one).
"""


class TransactionRunner(Protocol):
    """
    What L{SQLStorage} needs of C{adbapi.ConnectionPool}, and all it uses.
    """

    def runInteraction(
        self, interaction: Callable[Concatenate[Cursor, _P], _T], *args: _P.args,
        **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """
        Run C{interaction(cursor, *args, **kwargs)} in a thread as one transaction: commit
        after it returns, roll back if it raises.
        """

    def close(self) -> None:
        """
        Stop the threads and close the connections.
        """


_IN_CHUNK = 500
"""
At most this many values in one C{IN (...)} list, well below SQLite's variable limit.
"""

class Dialect:
    """
    What differs between the SQL engines.

    @ivar name: The engine name used in migration file names.
    @ivar nextItemSeq: An SQL expression drawing the next item sequence number.
    @ivar integrityErrors: The driver's integrity error classes.
    """

    name: str = ""
    nextItemSeq: str = ""
    integrityErrors: tuple[type[BaseException], ...] = ()
    placeholder: str = "?"

    def sql(self, statement: str) -> str:
        """
        C{statement}, written with C{?} placeholders, in this engine's placeholder style.
        """
        if self.placeholder == "?":
            return statement
        return statement.replace("?", self.placeholder)

    def executeMany(self, cursor: Cursor, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """
        Run C{statement} once per row, in order, in as few round trips as the driver allows.
        """
        if rows:
            cursor.executemany(self.sql(statement), rows)

    def lockMigrations(self, cursor: Cursor) -> None:
        """
        Make the migration transaction exclusive, so that two processes starting at once on
        one database do not both apply a migration.
        """

    def beginTransaction(self, cursor: Cursor) -> None:
        """
        Open the interaction's transaction now, if the driver has not opened it yet: what
        follows (savepoints) must run inside it.
        """

    def blob(self, value: Any) -> bytes:
        """
        A binary column's value as C{bytes}.
        """
        return bytes(value)


class SQLStorage:
    """
    L{IStorage} on a L{TransactionRunner}, shared by the SQL engines. Subclasses set the
    dialect and open the runner (the "pool") in L{_openPool}.
    """

    log = Logger()
    dialect: Dialect

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: The reactor the pool reports results through.
        """
        self._reactor = reactor
        self._pool: TransactionRunner | None = None
        self._running = 0
        self._idleWaiters: list[Deferred[None]] = []

    # Lifecycle

    def _openPool(self) -> TransactionRunner:
        """
        Make this engine's transaction runner.
        """
        raise NotImplementedError()

    def _prepare(self) -> None:
        """
        Synchronous preparation before the pool is made, such as creating a directory.
        """

    def start(self) -> Deferred[None]:
        """
        Open the pool and apply pending schema migrations.
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self._pool is not None:
            return
        self._prepare()
        self._pool = self._openPool()
        try:
            applied = await self._run(
                applyMigrations, self.dialect, loadMigrations(self.dialect.name)
            )
        except BaseException:
            pool, self._pool = self._pool, None
            pool.close()
            raise
        if applied:
            self.log.info(
                "Applied schema migrations {migrations} ({engine})",
                migrations=applied,
                engine=self.dialect.name,
            )

    def stop(self) -> Deferred[None]:
        """
        Wait for in-flight and queued interactions to finish, then close the pool.
        """
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        while self._running or self._queuedWork():
            waiter: Deferred[None] = Deferred()
            self._idleWaiters.append(waiter)
            await waiter
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _queuedWork(self) -> bool:
        """
        Whether work is waiting to be handed to the pool once the interactions in flight end
        (group commit's queued publishes); L{stop} waits for it too.
        """
        return False

    def _run(
        self, interaction: Callable[Concatenate[Cursor, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """
        Run C{interaction} as one transaction in the pool, counting it as in flight.
        """
        if self._pool is None:
            return fail(RuntimeError("storage is not started"))
        self._running += 1
        d: Deferred[_T] = self._pool.runInteraction(interaction, *args, **kwargs)

        def finished(result: object) -> object:
            self._running -= 1
            if not self._running:
                waiters, self._idleWaiters = self._idleWaiters, []
                for waiter in waiters:
                    waiter.callback(None)
            return result

        d.addBoth(finished)
        return d

    # Helpers used inside interactions

    def _requireNode(self, cursor: Cursor, identifier: str) -> None:
        """
        @raise NodeNotFound: there is no node C{identifier}.
        """
        cursor.execute(self.dialect.sql("SELECT 1 FROM nodes WHERE identifier = ?"), (identifier,))
        if cursor.fetchone() is None:
            raise NodeNotFound(identifier)

    def _logEvents(
        self,
        cursor: Cursor,
        rows: Sequence[tuple[str, str, str | None, str, bytes, float, str]],
    ) -> None:
        """
        Append C{(node, action, item id, publisher, payload, time, headers)} rows to the event
        log, the headers as L{headersToJSON} writes them.
        """
        self.dialect.executeMany(
            cursor,
            "INSERT INTO events (node, action, item_id, publisher, payload, time, headers)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _inList(self, values: Sequence[str]) -> str:
        """
        The placeholder list for an C{IN} clause of C{len(values)} values.
        """
        return "(" + ", ".join([self.dialect.placeholder] * len(values)) + ")"

    def _node(self, row: Sequence[Any]) -> Node:
        return Node(row[0], configFromJSON(row[1]), row[2], float(row[3]))

    def _item(self, row: Sequence[Any]) -> Item:
        return Item(
            row[0], self.dialect.blob(row[1]), row[2], float(row[3]), headersFromJSON(row[4])
        )

    def _subscription(self, row: Sequence[Any]) -> Subscription:
        return Subscription(
            row[0], row[1], row[2], SubscriptionState(row[3]), optionsFromJSON(row[4])
        )

    def _event(self, row: Sequence[Any]) -> Event:
        return Event(
            int(row[0]), row[1], EventAction(row[2]), row[3], row[4],
            self.dialect.blob(row[5]), float(row[6]), headersFromJSON(row[7]),
        )

    # Nodes

    def createNode(self, node: Node) -> Deferred[None]:
        """
        Create C{node}, its creator's bare JID becoming owner.
        """
        return self._run(self._createNode, node)

    def _createNode(self, cursor: Cursor, node: Node) -> None:
        sql = self.dialect.sql
        try:
            cursor.execute(
                sql("INSERT INTO nodes (identifier, config, creator, created) VALUES (?, ?, ?, ?)"),
                (node.identifier, configToJSON(node.config), node.creator, node.created),
            )
        except self.dialect.integrityErrors:
            raise NodeExists(node.identifier) from None
        cursor.execute(
            sql("INSERT INTO affiliations (node, jid, affiliation) VALUES (?, ?, ?)"),
            (node.identifier, bareJID(node.creator), Affiliation.OWNER.value),
        )

    def getNode(self, identifier: str) -> Deferred[Node]:
        """
        The node named C{identifier}.
        """
        return self._run(self._getNode, identifier)

    def _getNode(self, cursor: Cursor, identifier: str) -> Node:
        cursor.execute(
            self.dialect.sql(
                "SELECT identifier, config, creator, created FROM nodes WHERE identifier = ?"
            ),
            (identifier,),
        )
        row = cursor.fetchone()
        if row is None:
            raise NodeNotFound(identifier)
        return self._node(row)

    def listNodes(self) -> Deferred[list[Node]]:
        """
        Every node, ordered by identifier.
        """
        return self._run(self._listNodes)

    def _listNodes(self, cursor: Cursor) -> list[Node]:
        cursor.execute(
            "SELECT identifier, config, creator, created FROM nodes ORDER BY identifier"
        )
        return [self._node(row) for row in cursor.fetchall()]

    def countNodesOwnedBy(self, entity: str) -> Deferred[int]:
        """
        How many nodes have C{entity} as owner.
        """
        return self._run(self._countNodesOwnedBy, entity)

    def _countNodesOwnedBy(self, cursor: Cursor, entity: str) -> int:
        cursor.execute(
            self.dialect.sql(
                "SELECT COUNT(*) FROM affiliations WHERE jid = ? AND affiliation = ?"
            ),
            (entity, Affiliation.OWNER.value),
        )
        return int(cursor.fetchone()[0])

    def configureNode(self, identifier: str, config: NodeConfig) -> Deferred[None]:
        """
        Replace the node's configuration.
        """
        return self._run(self._configureNode, identifier, config)

    def _configureNode(self, cursor: Cursor, identifier: str, config: NodeConfig) -> None:
        cursor.execute(
            self.dialect.sql("UPDATE nodes SET config = ? WHERE identifier = ?"),
            (configToJSON(config), identifier),
        )
        if cursor.rowcount == 0:
            raise NodeNotFound(identifier)

    def deleteNode(self, identifier: str, when: float) -> Deferred[None]:
        """
        Remove the node (its items, affiliations and subscriptions cascade) and log C{delete}.
        """
        return self._run(self._deleteNode, identifier, when)

    def _deleteNode(self, cursor: Cursor, identifier: str, when: float) -> None:
        cursor.execute(self.dialect.sql("DELETE FROM nodes WHERE identifier = ?"), (identifier,))
        if cursor.rowcount == 0:
            raise NodeNotFound(identifier)
        self._logEvents(cursor, [(identifier, EventAction.DELETE.value, None, "", b"", when, "")])

    # Affiliations

    def getAffiliations(self, identifier: str) -> Deferred[dict[str, Affiliation]]:
        """
        The node's affiliations by bare JID.
        """
        return self._run(self._getAffiliations, identifier)

    def _getAffiliations(self, cursor: Cursor, identifier: str) -> dict[str, Affiliation]:
        self._requireNode(cursor, identifier)
        cursor.execute(
            self.dialect.sql("SELECT jid, affiliation FROM affiliations WHERE node = ?"),
            (identifier,),
        )
        return {jid: Affiliation(affiliation) for jid, affiliation in cursor.fetchall()}

    def setAffiliations(
        self, identifier: str, changes: Mapping[str, Affiliation]
    ) -> Deferred[None]:
        """
        Set each bare JID's affiliation; C{none} removes it.
        """
        return self._run(self._setAffiliations, identifier, dict(changes))

    def _setAffiliations(
        self, cursor: Cursor, identifier: str, changes: Mapping[str, Affiliation]
    ) -> None:
        self._requireNode(cursor, identifier)
        removed = [(identifier, jid) for jid, a in changes.items() if a == Affiliation.NONE]
        kept = [
            (identifier, jid, Affiliation(a).value)
            for jid, a in changes.items()
            if a != Affiliation.NONE
        ]
        self.dialect.executeMany(
            cursor, "DELETE FROM affiliations WHERE node = ? AND jid = ?", removed
        )
        try:
            self.dialect.executeMany(
                cursor,
                "INSERT INTO affiliations (node, jid, affiliation) VALUES (?, ?, ?)"
                " ON CONFLICT (node, jid) DO UPDATE SET affiliation = excluded.affiliation",
                kept,
            )
        except self.dialect.integrityErrors:
            raise NodeNotFound(identifier) from None

    def getEntityAffiliations(self, entity: str) -> Deferred[list[tuple[str, Affiliation]]]:
        """
        C{(node, affiliation)} pairs of C{entity}, ordered by node.
        """
        return self._run(self._getEntityAffiliations, entity)

    def _getEntityAffiliations(
        self, cursor: Cursor, entity: str
    ) -> list[tuple[str, Affiliation]]:
        cursor.execute(
            self.dialect.sql(
                "SELECT node, affiliation FROM affiliations WHERE jid = ? ORDER BY node"
            ),
            (entity,),
        )
        return [(node, Affiliation(affiliation)) for node, affiliation in cursor.fetchall()]

    # Subscriptions

    _SUBSCRIPTION_COLUMNS = "node, jid, subid, state, options"

    def getSubscriptions(self, identifier: str) -> Deferred[list[Subscription]]:
        """
        All subscriptions of the node, oldest first.
        """
        return self._run(self._getSubscriptions, identifier)

    def _getSubscriptions(self, cursor: Cursor, identifier: str) -> list[Subscription]:
        self._requireNode(cursor, identifier)
        cursor.execute(
            self.dialect.sql(
                f"SELECT {self._SUBSCRIPTION_COLUMNS} FROM subscriptions"
                " WHERE node = ? ORDER BY seq"
            ),
            (identifier,),
        )
        return [self._subscription(row) for row in cursor.fetchall()]

    def getEntitySubscriptions(self, entity: str) -> Deferred[list[Subscription]]:
        """
        All subscriptions whose subscriber's bare JID is C{entity}, ordered by node.
        """
        return self._run(self._getEntitySubscriptions, entity)

    def _getEntitySubscriptions(self, cursor: Cursor, entity: str) -> list[Subscription]:
        cursor.execute(
            self.dialect.sql(
                f"SELECT {self._SUBSCRIPTION_COLUMNS} FROM subscriptions"
                " WHERE jid_bare = ? ORDER BY node, seq"
            ),
            (entity,),
        )
        return [self._subscription(row) for row in cursor.fetchall()]

    def saveSubscription(self, subscription: Subscription) -> Deferred[None]:
        """
        Insert or replace the subscription keyed by node and subscription id.
        """
        return self._run(self._saveSubscription, subscription)

    def _saveSubscription(self, cursor: Cursor, subscription: Subscription) -> None:
        self._requireNode(cursor, subscription.node)
        try:
            cursor.execute(
                self.dialect.sql(
                    "INSERT INTO subscriptions (node, subid, jid, jid_bare, state, options)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (node, subid) DO UPDATE SET jid = excluded.jid,"
                    " jid_bare = excluded.jid_bare, state = excluded.state,"
                    " options = excluded.options"
                ),
                (
                    subscription.node,
                    subscription.subscriptionId,
                    subscription.subscriber,
                    bareJID(subscription.subscriber),
                    SubscriptionState(subscription.state).value,
                    optionsToJSON(subscription.options),
                ),
            )
        except self.dialect.integrityErrors:
            raise NodeNotFound(subscription.node) from None

    def removeSubscription(self, identifier: str, subscriptionId: str) -> Deferred[None]:
        """
        Remove one subscription, if it exists.
        """
        return self._run(self._removeSubscription, identifier, subscriptionId)

    def _removeSubscription(self, cursor: Cursor, identifier: str, subscriptionId: str) -> None:
        cursor.execute(
            self.dialect.sql("DELETE FROM subscriptions WHERE node = ? AND subid = ?"),
            (identifier, subscriptionId),
        )

    # Items

    def storeItems(
        self, identifier: str, items: Sequence[Item], maxItems: int | None, persist: bool
    ) -> Deferred[PublishResult]:
        """
        Log a publish event per item, store the items if C{persist}, trim to C{maxItems}.
        """
        return self._run(self._storeItems, identifier, tuple(items), maxItems, persist)

    def _storeItems(
        self,
        cursor: Cursor,
        identifier: str,
        items: tuple[Item, ...],
        maxItems: int | None,
        persist: bool,
    ) -> PublishResult:
        self._requireNode(cursor, identifier)
        self._logEvents(
            cursor,
            [
                (identifier, EventAction.PUBLISH.value, item.itemId, item.publisher,
                 item.payload, item.published, headersToJSON(item.headers))
                for item in items
            ],
        )
        if persist:
            try:
                self.dialect.executeMany(
                    cursor,
                    "INSERT INTO items"
                    " (node, item_id, payload, publisher, published, headers, seq)"
                    f" VALUES (?, ?, ?, ?, ?, ?, {self.dialect.nextItemSeq})"
                    " ON CONFLICT (node, item_id) DO UPDATE SET payload = excluded.payload,"
                    " publisher = excluded.publisher, published = excluded.published,"
                    " headers = excluded.headers, seq = excluded.seq",
                    [
                        (identifier, item.itemId, item.payload, item.publisher, item.published,
                         headersToJSON(item.headers))
                        for item in items
                    ],
                )
            except self.dialect.integrityErrors:
                raise NodeNotFound(identifier) from None
        removed: list[str] = []
        if maxItems is not None:
            removed = self._trim(cursor, identifier, maxItems)
        return PublishResult(items, tuple(removed))

    def _trim(self, cursor: Cursor, identifier: str, maxItems: int) -> list[str]:
        """
        Delete the node's items beyond the newest C{maxItems}; return their ids, oldest first.
        """
        sql = self.dialect.sql
        # Sequence numbers are distinct, so a node whose lowest and highest are at most
        # maxItems apart holds at most maxItems items: two index probes instead of stepping
        # over maxItems index entries at every publish (a large node filling up).
        cursor.execute(
            sql("SELECT (SELECT seq FROM items WHERE node = ? ORDER BY seq LIMIT 1),"
                " (SELECT seq FROM items WHERE node = ? ORDER BY seq DESC LIMIT 1)"),
            (identifier, identifier),
        )
        low, high = cursor.fetchone()
        if low is None or high - low < maxItems:
            return []
        cursor.execute(
            sql("SELECT seq FROM items WHERE node = ? ORDER BY seq DESC LIMIT 1 OFFSET ?"),
            (identifier, max(maxItems, 0)),
        )
        row = cursor.fetchone()
        if row is None:
            return []
        cursor.execute(
            sql("DELETE FROM items WHERE node = ? AND seq <= ? RETURNING item_id, seq"),
            (identifier, row[0]),
        )
        return [itemId for itemId, _ in sorted(cursor.fetchall(), key=lambda r: r[1])]

    _ITEM_COLUMNS = "item_id, payload, publisher, published, headers"

    def getItems(
        self, identifier: str, maxItems: int | None = None, itemIds: Sequence[str] | None = None
    ) -> Deferred[list[Item]]:
        """
        The node's items, newest first, or those asked for in the order asked.
        """
        return self._run(
            self._getItems, identifier, maxItems, None if itemIds is None else tuple(itemIds)
        )

    def _getItems(
        self,
        cursor: Cursor,
        identifier: str,
        maxItems: int | None,
        itemIds: tuple[str, ...] | None,
    ) -> list[Item]:
        self._requireNode(cursor, identifier)
        if itemIds is None:
            statement = f"SELECT {self._ITEM_COLUMNS} FROM items WHERE node = ? ORDER BY seq DESC"
            parameters: tuple[Any, ...] = (identifier,)
            if maxItems is not None:
                statement += " LIMIT ?"
                parameters += (max(maxItems, 0),)
            cursor.execute(self.dialect.sql(statement), parameters)
            return [self._item(row) for row in cursor.fetchall()]
        wanted = list(dict.fromkeys(itemIds))
        found: dict[str, Item] = {}
        for chunk in _chunks(wanted, _IN_CHUNK):
            cursor.execute(
                self.dialect.sql(
                    f"SELECT {self._ITEM_COLUMNS} FROM items WHERE node = ? AND item_id IN "
                )
                + self._inList(chunk),
                (identifier, *chunk),
            )
            for row in cursor.fetchall():
                item = self._item(row)
                found[item.itemId] = item
        result = [found[itemId] for itemId in wanted if itemId in found]
        return result if maxItems is None else result[: max(maxItems, 0)]

    def retractItems(
        self, identifier: str, itemIds: Sequence[str], publisher: str, when: float
    ) -> Deferred[list[str]]:
        """
        Remove the items and log a C{retract} event for each one that existed.
        """
        return self._run(self._retractItems, identifier, tuple(itemIds), publisher, when)

    def _retractItems(
        self, cursor: Cursor, identifier: str, itemIds: tuple[str, ...], publisher: str,
        when: float,
    ) -> list[str]:
        self._requireNode(cursor, identifier)
        wanted = list(dict.fromkeys(itemIds))
        existed: set[str] = set()
        for chunk in _chunks(wanted, _IN_CHUNK):
            cursor.execute(
                self.dialect.sql("DELETE FROM items WHERE node = ? AND item_id IN ")
                + self._inList(chunk)
                + " RETURNING item_id",
                (identifier, *chunk),
            )
            existed.update(row[0] for row in cursor.fetchall())
        removed = [itemId for itemId in wanted if itemId in existed]
        self._logEvents(
            cursor,
            [
                (identifier, EventAction.RETRACT.value, itemId, publisher, b"", when, "")
                for itemId in removed
            ],
        )
        return removed

    def purgeNode(self, identifier: str, publisher: str, when: float) -> Deferred[None]:
        """
        Remove every item of the node and log a C{purge} event.
        """
        return self._run(self._purgeNode, identifier, publisher, when)

    def _purgeNode(self, cursor: Cursor, identifier: str, publisher: str, when: float) -> None:
        self._requireNode(cursor, identifier)
        cursor.execute(self.dialect.sql("DELETE FROM items WHERE node = ?"), (identifier,))
        self._logEvents(
            cursor, [(identifier, EventAction.PURGE.value, None, publisher, b"", when, "")]
        )

    def expireItems(self, identifier: str, publishedBefore: float) -> Deferred[list[str]]:
        """
        Remove the items published before C{publishedBefore}, oldest first, logging nothing.
        """
        return self._run(self._expireItems, identifier, publishedBefore)

    def _expireItems(self, cursor: Cursor, identifier: str, publishedBefore: float) -> list[str]:
        cursor.execute(
            self.dialect.sql(
                "DELETE FROM items WHERE node = ? AND published < ? RETURNING item_id, seq"
            ),
            (identifier, publishedBefore),
        )
        return [itemId for itemId, _ in sorted(cursor.fetchall(), key=lambda r: r[1])]

    # Events

    def getEvents(
        self, identifier: str, afterId: int | None = None, limit: int = 100
    ) -> Deferred[list[Event]]:
        """
        The node's events above C{afterId}, oldest first, at most C{limit}.
        """
        if limit <= 0:
            return succeed([])
        return self._run(self._getEvents, identifier, afterId, limit)

    def _getEvents(
        self, cursor: Cursor, identifier: str, afterId: int | None, limit: int
    ) -> list[Event]:
        cursor.execute(
            self.dialect.sql(
                "SELECT id, node, action, item_id, publisher, payload, time, headers FROM events"
                " WHERE node = ? AND id > ? ORDER BY id LIMIT ?"
            ),
            (identifier, afterId if afterId is not None else 0, limit),
        )
        return [self._event(row) for row in cursor.fetchall()]

    # Archive (XEP-0313) and paging (XEP-0059)

    _EVENT_COLUMNS = "id, node, action, item_id, publisher, payload, time, headers"

    def _eventFilter(
        self,
        identifier: str,
        afterId: int | None,
        beforeId: int | None,
        start: float | None,
        end: float | None,
        publisher: str | None,
    ) -> tuple[str, tuple[Any, ...]]:
        """
        The C{WHERE} clause (with C{?} placeholders) and parameters of an event query.
        """
        clauses = ["node = ?"]
        parameters: list[Any] = [identifier]
        if afterId is not None:
            clauses.append("id > ?")
            parameters.append(afterId)
        if beforeId is not None:
            clauses.append("id < ?")
            parameters.append(beforeId)
        if start is not None:
            clauses.append("time >= ?")
            parameters.append(start)
        if end is not None:
            clauses.append("time <= ?")
            parameters.append(end)
        if publisher is not None:
            clauses.append("(publisher = ? OR substr(publisher, 1, ?) = ?)")
            parameters += [publisher, len(publisher) + 1, publisher + "/"]
        return " WHERE " + " AND ".join(clauses), tuple(parameters)

    def queryEvents(
        self,
        identifier: str,
        afterId: int | None = None,
        beforeId: int | None = None,
        start: float | None = None,
        end: float | None = None,
        publisher: str | None = None,
        limit: int = 100,
        newestFirst: bool = False,
    ) -> Deferred[list[Event]]:
        """
        The node's events matching the filters, in id order, at most C{limit}.
        """
        if limit <= 0:
            return succeed([])
        return self._run(
            self._queryEvents, identifier, afterId, beforeId, start, end, publisher, limit,
            newestFirst,
        )

    def _queryEvents(
        self,
        cursor: Cursor,
        identifier: str,
        afterId: int | None,
        beforeId: int | None,
        start: float | None,
        end: float | None,
        publisher: str | None,
        limit: int,
        newestFirst: bool,
    ) -> list[Event]:
        where, parameters = self._eventFilter(identifier, afterId, beforeId, start, end, publisher)
        order = "DESC" if newestFirst else "ASC"
        cursor.execute(
            self.dialect.sql(
                f"SELECT {self._EVENT_COLUMNS} FROM events{where} ORDER BY id {order} LIMIT ?"
            ),
            parameters + (limit,),
        )
        event = self._event
        return [event(row) for row in cursor.fetchall()]

    def countEvents(
        self,
        identifier: str,
        afterId: int | None = None,
        beforeId: int | None = None,
        start: float | None = None,
        end: float | None = None,
        publisher: str | None = None,
    ) -> Deferred[int]:
        """
        How many events match the filters.
        """
        return self._run(self._countEvents, identifier, afterId, beforeId, start, end, publisher)

    def _countEvents(
        self,
        cursor: Cursor,
        identifier: str,
        afterId: int | None,
        beforeId: int | None,
        start: float | None,
        end: float | None,
        publisher: str | None,
    ) -> int:
        where, parameters = self._eventFilter(identifier, afterId, beforeId, start, end, publisher)
        cursor.execute(self.dialect.sql(f"SELECT count(*) FROM events{where}"), parameters)
        return int(cursor.fetchone()[0])

    def hasEvent(self, identifier: str, eventId: int) -> Deferred[bool]:
        """
        Whether the node's log holds the event C{eventId}.
        """
        return self._run(self._hasEvent, identifier, eventId)

    def _hasEvent(self, cursor: Cursor, identifier: str, eventId: int) -> bool:
        cursor.execute(
            self.dialect.sql("SELECT 1 FROM events WHERE node = ? AND id = ?"),
            (identifier, eventId),
        )
        return cursor.fetchone() is not None

    def trimEvents(
        self, identifier: str, before: float | None, keep: int | None
    ) -> Deferred[int]:
        """
        Remove the node's events older than C{before} and beyond the newest C{keep}.
        """
        return self._run(self._trimEvents, identifier, before, keep)

    def _trimEvents(
        self, cursor: Cursor, identifier: str, before: float | None, keep: int | None
    ) -> int:
        sql = self.dialect.sql
        removed = 0
        if before is not None:
            cursor.execute(
                sql("DELETE FROM events WHERE node = ? AND time < ?"), (identifier, before)
            )
            removed += max(cursor.rowcount, 0)
        if keep is not None:
            cursor.execute(
                sql("SELECT id FROM events WHERE node = ? ORDER BY id DESC LIMIT 1 OFFSET ?"),
                (identifier, max(keep, 0)),
            )
            row = cursor.fetchone()
            if row is not None:
                cursor.execute(
                    sql("DELETE FROM events WHERE node = ? AND id <= ?"), (identifier, row[0])
                )
                removed += max(cursor.rowcount, 0)
        return removed

    def getItemsPage(
        self,
        identifier: str,
        afterId: str | None,
        beforeId: str | None,
        limit: int,
        lastPage: bool,
    ) -> Deferred[tuple[list[Item], int, int]]:
        """
        One page of the node's items, newest first, with the total and the page's position.
        """
        return self._run(self._getItemsPage, identifier, afterId, beforeId, limit, lastPage)

    def _itemSeq(self, cursor: Cursor, identifier: str, itemId: str) -> int:
        cursor.execute(
            self.dialect.sql("SELECT seq FROM items WHERE node = ? AND item_id = ?"),
            (identifier, itemId),
        )
        row = cursor.fetchone()
        if row is None:
            raise ItemNotFound(itemId)
        return int(row[0])

    def _getItemsPage(
        self,
        cursor: Cursor,
        identifier: str,
        afterId: str | None,
        beforeId: str | None,
        limit: int,
        lastPage: bool,
    ) -> tuple[list[Item], int, int]:
        sql = self.dialect.sql
        self._requireNode(cursor, identifier)
        cursor.execute(sql("SELECT count(*) FROM items WHERE node = ?"), (identifier,))
        total = int(cursor.fetchone()[0])
        limit = max(limit, 0)
        columns = f"SELECT {self._ITEM_COLUMNS}, seq FROM items WHERE node = ?"
        if beforeId is not None or lastPage:
            # Backwards: the items just newer than C{beforeId} (or the oldest ones).
            parameters: tuple[Any, ...] = (identifier,)
            statement = columns
            if beforeId is not None:
                statement += " AND seq > ?"
                parameters += (self._itemSeq(cursor, identifier, beforeId),)
            cursor.execute(sql(statement + " ORDER BY seq ASC LIMIT ?"), parameters + (limit,))
            rows = cursor.fetchall()[::-1]
        else:
            parameters = (identifier,)
            statement = columns
            if afterId is not None:
                statement += " AND seq < ?"
                parameters += (self._itemSeq(cursor, identifier, afterId),)
            cursor.execute(sql(statement + " ORDER BY seq DESC LIMIT ?"), parameters + (limit,))
            rows = cursor.fetchall()
        index = 0
        if rows:
            cursor.execute(
                sql("SELECT count(*) FROM items WHERE node = ? AND seq > ?"),
                (identifier, rows[0][-1]),
            )
            index = int(cursor.fetchone()[0])
        return [self._item(row) for row in rows], total, index



def _chunks(values: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    """
    C{values} in consecutive slices of at most C{size}.
    """
    for start in range(0, len(values), size):
        yield values[start : start + size]
