"""
PostgreSQL LISTEN/NOTIFY for several Hermod instances on one database.

Each instance caches node state (configuration, affiliations, subscriptions). When one instance
changes a node, the same transaction sends C{NOTIFY hermod_node_state, '<instance>:<node>'};
every other instance hears it on a dedicated connection and drops that node from its cache, so
its next request reads the committed state. There is no cluster protocol of our own: PostgreSQL
delivers the notifications at commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

CHANNEL = "hermod_node_state"


class NodeChangeListener:
    """
    Listens for other instances' node changes and reports them.

    The listening connection is watched by the reactor (no thread, no polling). If it breaks, it
    is reopened with a growing delay, and the callback is given C{None} ("anything may have
    changed") because notifications sent meanwhile are lost.

    @ivar instance: This instance's id, sent with its own notifications so it can skip them.
    """

    log = Logger()

    def __init__(self, dsn: str, reactor: Any, callback: Callable[[str | None], None]) -> None:
        self.dsn = dsn
        self.reactor = reactor
        self.callback = callback
        self.instance = uuid.uuid4().hex
        self._connection: Any = None
        self._stopped = False
        self._delay = 0.5
        self._retry: Any = None

    # IReadDescriptor, for reactor.addReader

    def fileno(self) -> int:
        return int(self._connection.fileno()) if self._connection is not None else -1

    def logPrefix(self) -> str:
        return "NodeChangeListener"

    def doRead(self) -> None:
        """
        Read the notifications that arrived and report the nodes others changed.
        """
        connection = self._connection
        try:
            connection.poll()
        except psycopg2.Error as e:
            self._broken(e)
            return
        prefix = self.instance + ":"
        while connection.notifies:
            notify = connection.notifies.pop(0)
            if notify.payload.startswith(prefix):
                continue
            _, _, node = notify.payload.partition(":")
            self.callback(node)

    def connectionLost(self, reason: object) -> None:
        self._broken(reason)

    # Lifecycle

    def start(self) -> Deferred[None]:
        """
        Open the listening connection.
        """
        return threads.deferToThread(self._connect).addCallback(self._listening)

    def _connect(self) -> Any:
        connection = psycopg2.connect(self.dsn)
        connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        return connection

    def _listening(self, connection: Any) -> None:
        if self._stopped:
            connection.close()
            return
        self._connection = connection
        self._delay = 0.5
        self.reactor.addReader(self)
        self.log.info("Listening for node changes of other instances")

    def _broken(self, reason: object) -> None:
        if self._connection is not None:
            self.reactor.removeReader(self)
            try:
                self._connection.close()
            except psycopg2.Error:
                pass
            self._connection = None
        if self._stopped:
            return
        self.log.error(
            "Lost the node change listener ({reason}); reconnecting in {delay}s",
            reason=reason,
            delay=self._delay,
        )
        self.callback(None)
        self._retry = self.reactor.callLater(self._delay, self._reconnect)
        self._delay = min(self._delay * 2, 30.0)

    def _reconnect(self) -> None:
        self._retry = None
        d = self.start()
        d.addCallback(lambda _: self.callback(None))
        d.addErrback(lambda f: self._broken(f.value))

    def stop(self) -> None:
        """
        Stop listening and close the connection.
        """
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._connection is not None:
            self.reactor.removeReader(self)
            self._connection.close()
            self._connection = None
