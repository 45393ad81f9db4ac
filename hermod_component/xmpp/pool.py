"""
Several XEP-0114 connections as one component JID (C{[component] connections}).

ejabberd serves each component connection in one Erlang process, which parses and routes
everything the component sends on it: one connection therefore gets at most one core's worth of
the server's work, and a firehose through one connection stops there. ejabberd accepts several
connections for one component name and balances the stanzas it routes to the component among
them, so Hermod opens C{connections} streams:

 - each stream is a L{ComponentService} of its own, with its own reconnection and backoff, and
   its own set of request handlers: a request is answered on the stream it arrived on;
 - notifications go through the one shared L{XMPPNotifier}, which spreads recipients over the
   streams that are up (L{hermod_component.xmpp.streams.StreamSet});
 - backpressure: the streams' throttles share one L{ReadGate}, so no stream reads requests while
   any stream's write buffer is above C{write_buffer}.

Prosody accepts one connection per component and refuses the others with a C{conflict} stream
error; each refused connection logs that and retries with backoff while the others carry on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger

from hermod_component.config import ComponentSettings
from hermod_component.xmpp._xmpplib import XMPPHandler
from hermod_component.xmpp.component import ComponentService
from hermod_component.xmpp.flow import ReadGate


class ComponentPool(MultiService):
    """
    The component's connections, started and stopped together.

    @ivar jid: The component's JID.
    @ivar connections: One L{ComponentService} per stream, in index order.
    @ivar gate: The L{ReadGate} their throttles share.
    """

    log = Logger()

    def __init__(self, jid: str, connections: Sequence[ComponentService], gate: ReadGate) -> None:
        super().__init__()
        self.jid = jid
        self.connections = list(connections)
        self.gate = gate
        for index, connection in enumerate(self.connections):
            connection.setName(f"connection-{index + 1}")
            connection.setServiceParent(self)

    @property
    def authenticated(self) -> bool:
        """
        Whether at least one connection has completed its handshake.
        """
        return any(c.authenticated for c in self.connections)

    def addHandler(self, handler: XMPPHandler) -> None:
        """
        Add a handler to the first connection only (the partner link of replication, which
        configuration allows only with one connection).
        """
        self.connections[0].addHandler(handler)

    def removeHandler(self, handler: XMPPHandler) -> None:
        """
        Remove a handler added with L{addHandler}.
        """
        self.connections[0].removeHandler(handler)

    def send(self, obj: Any) -> None:
        """
        Send a stanza on the first authenticated connection (queued on the first connection
        while none is).
        """
        for connection in self.connections:
            if connection.authenticated:
                connection.send(obj)
                return
        self.connections[0].send(obj)


def makeComponentPool(
    settings: ComponentSettings,
    reactor: Any,
    handlersFor: Callable[[int], Sequence[XMPPHandler]],
    verbose: bool = False,
) -> ComponentPool:
    """
    The C{settings.connections} connections of the component; nothing connects until the pool
    starts.

    @param handlersFor: The handlers of the stream with the given index (from 0).
    @param reactor: Provides the endpoint's connection method and the clock.
    @param verbose: Log every stanza sent and received at debug level.
    """
    gate = ReadGate()
    connections = []
    for index in range(settings.connections):
        connection = ComponentService(
            settings.jid,
            settings.secret,
            clientFromString(reactor, settings.server),
            reactor,
            description=settings.server,
            verbose=verbose,
            writeBuffer=settings.writeBuffer,
            maxRequests=settings.maxRequests,
            index=index,
            connections=settings.connections,
            gate=gate,
        )
        for handler in handlersFor(index):
            connection.addHandler(handler)
        connections.append(connection)
    return ComponentPool(settings.jid, connections, gate)
