"""
Tests for L{hermod_component.xmpp.pool} and the shared backpressure gate: several component
connections as one JID, on fake endpoints and a clock.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.config import PubSubSettings
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import parseStanzas
from hermod_component.xmpp.component import ComponentService
from hermod_component.xmpp.flow import ReadGate, ReadThrottle
from hermod_component.xmpp.handler import makeNotifier, makeStreamHandlers
from hermod_component.xmpp.pool import ComponentPool
from tests.test_component import (
    JID,
    SECRET,
    STREAM_HEADER,
    FakeEndpoint,
    capturedLogs,
    fixedPolicy,
    streamError,
)

ENTRY = "<entry xmlns='http://www.w3.org/2005/Atom'><title>t</title></entry>"


class FakeTransport:
    """
    A transport that records reading being paused and resumed, and whose producer can be
    told the buffer is full or drained.
    """

    def __init__(self) -> None:
        self.reading = True
        self.producer: Any = None
        self.bufferSize = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


class ReadGateTests(SynchronousTestCase):
    """
    No stream reads while any stream of the gate is above its high-water mark.
    """

    def setUp(self) -> None:
        self.gate = ReadGate()
        self.transports = [FakeTransport() for _ in range(3)]
        self.throttles = [
            ReadThrottle(t, 65536, Clock(), self.gate, f"connection {n + 1} of 3")
            for n, t in enumerate(self.transports)
        ]

    def reading(self) -> list[bool]:
        """
        Which transports read now.
        """
        return [t.reading for t in self.transports]

    def test_oneBehindStopsAll(self) -> None:
        """
        One stream above its mark stops reading on all; all read again once it has drained.
        """
        self.throttles[1].pauseProducing()
        self.assertEqual(self.reading(), [False, False, False])
        self.assertTrue(self.gate.closed)
        self.throttles[1].resumeProducing()
        self.assertEqual(self.reading(), [True, True, True])
        self.assertEqual([t.pauses for t in self.throttles], [0, 1, 0])

    def test_allMustDrain(self) -> None:
        """
        With two streams behind, reading resumes only when both have drained.
        """
        self.throttles[0].pauseProducing()
        self.throttles[2].pauseProducing()
        self.throttles[0].resumeProducing()
        self.assertEqual(self.reading(), [False, False, False])
        self.throttles[2].resumeProducing()
        self.assertEqual(self.reading(), [True, True, True])

    def test_lostStreamReleases(self) -> None:
        """
        A stream that is behind and then drops no longer holds the others back.
        """
        self.throttles[0].pauseProducing()
        self.throttles[0].stopProducing()
        self.assertEqual(self.reading()[1:], [True, True])
        self.assertEqual(self.gate.members, self.throttles[1:])

    def test_joinWhileClosed(self) -> None:
        """
        A stream that comes up while another is behind does not read until that one drains.
        """
        self.throttles[0].pauseProducing()
        late = FakeTransport()
        throttle = ReadThrottle(late, 65536, Clock(), self.gate)
        self.assertFalse(late.reading)
        self.throttles[0].resumeProducing()
        self.assertTrue(late.reading)
        self.assertEqual(late.bufferSize, 65536)
        self.assertIs(late.producer, throttle)


class PoolTestCase(SynchronousTestCase):
    """
    A pool of three connections on fake endpoints, with the real policy and handlers.
    """

    size = 3

    def setUp(self) -> None:
        self.clock = Clock()
        capture = capturedLogs()
        self.events = capture.__enter__()
        self.addCleanup(capture.__exit__, None, None, None)
        self.policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), JID, self.clock)
        self.notifier = makeNotifier(self.policy, self.size, self.clock)
        self.endpoints = [FakeEndpoint() for _ in range(self.size)]
        gate = ReadGate()
        connections = []
        for index, endpoint in enumerate(self.endpoints):
            connection = ComponentService(
                JID, SECRET, endpoint, self.clock, description="tcp:host=xmpp.test:port=5347",
                policy=fixedPolicy(), index=index, connections=self.size, gate=gate,
            )
            for handler in makeStreamHandlers(self.policy, self.notifier, index):
                connection.addHandler(handler)
            connections.append(connection)
        self.pool = ComponentPool(JID, connections, gate)
        self.transports: list[StringTransportWithDisconnection] = []

    def messages(self) -> list[str]:
        """
        The formatted log messages so far.
        """
        return [str(formatEvent(e)) for e in self.events]

    def connect(self, index: int) -> StringTransportWithDisconnection:
        """
        Accept connection C{index}'s pending attempt and play a successful handshake; deliver
        any barrier ping it causes back on the stream it was written to.
        """
        transport = self.endpoints[index].accept()
        transport.protocol.dataReceived(STREAM_HEADER)
        digest = hashlib.sha1(b"sid42" + SECRET.encode()).hexdigest()
        self.assertIn(f"<handshake>{digest}</handshake>".encode(), transport.value())
        transport.clear()
        transport.protocol.dataReceived(b"<handshake/>")
        for other in self.transports:
            if other.connected:
                for ping in re.findall(rb"<iq type='get'[^>]*><ping [^>]*/></iq>", other.value()):
                    other.protocol.dataReceived(ping)
                other.clear()
        self.transports.append(transport)
        return transport

    def stanzas(self, transport: StringTransportWithDisconnection) -> list[Any]:
        """
        The stanzas written to C{transport}, parsed.
        """
        return parseStanzas(transport.value())

    def setUpNode(self, subscribers: int) -> None:
        """
        A node with C{subscribers} subscribers, made through the policy.
        """
        self.successResultOf(Deferred.fromCoroutine(
            self.policy.createNode("owner@example.org/x", "news", None)))
        for n in range(subscribers):
            self.successResultOf(Deferred.fromCoroutine(self.policy.subscribe(
                f"s{n}@example.org/r", "news", f"s{n}@example.org/r", None)))

    def publishOn(self, transport: StringTransportWithDisconnection, itemId: str) -> None:
        """
        A publish request for C{itemId} arrives on C{transport}.
        """
        transport.protocol.dataReceived(
            f"<iq type='set' id='p-{itemId}' from='owner@example.org/x' to='{JID}'>"
            f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='news'>"
            f"<item id='{itemId}'>{ENTRY}</item></publish></pubsub></iq>".encode()
        )


class ComponentPoolTests(PoolTestCase):
    """
    Requests are answered where they came; notifications spread over the streams.
    """

    def test_children(self) -> None:
        """
        The pool holds one named connection per stream, started together.
        """
        self.assertEqual([c.name for c in self.pool],
                         ["connection-1", "connection-2", "connection-3"])
        self.pool.startService()
        self.assertEqual([len(e.attempts) for e in self.endpoints], [1, 1, 1])
        self.assertIn("Connecting to tcp:host=xmpp.test:port=5347 (connection 2 of 3)",
                      self.messages())
        self.assertFalse(self.pool.authenticated)
        self.connect(1)
        self.assertTrue(self.pool.authenticated)

    def test_answeredOnArrivalStreamAndSpread(self) -> None:
        """
        A publish arriving on the third stream is answered there alone, and its notifications
        go out over all three streams, one per subscriber.
        """
        self.pool.startService()
        transports = [self.connect(n) for n in range(3)]
        self.assertEqual([o.eligible for o in self.notifier.streams.outlets], [True] * 3)
        self.setUpNode(90)
        for transport in transports:
            transport.clear()
        self.publishOn(transports[2], "i1")
        perStream = [self.stanzas(t) for t in transports]
        results = [[s for s in stanzas if s.name == "iq"] for stanzas in perStream]
        self.assertEqual([len(r) for r in results], [0, 0, 1])
        self.assertEqual((results[2][0]["type"], results[2][0]["id"]), ("result", "p-i1"))
        notified = [[s["to"] for s in stanzas if s.name == "message"] for stanzas in perStream]
        self.assertTrue(all(notified), [len(n) for n in notified])
        self.assertEqual(sorted(to for stream in notified for to in stream), sorted(f"s{n}@example.org/r" for n in range(90)))

    def test_failover(self) -> None:
        """
        When a stream drops, the next notifications of its recipients go out on the others and
        every subscriber gets the item once; the dropped connection retries on its own.
        """
        self.pool.startService()
        transports = [self.connect(n) for n in range(3)]
        self.setUpNode(60)
        transports[0].loseConnection()
        for transport in transports:
            transport.clear()
        self.publishOn(transports[1], "i2")
        notified = [s["to"] for t in transports[1:] for s in self.stanzas(t) if s.name == "message"]
        self.assertEqual(sorted(notified), sorted(f"s{n}@example.org/r" for n in range(60)))
        self.assertEqual(transports[0].value(), b"")
        self.clock.advance(1.0)
        self.assertEqual([len(e.attempts) for e in self.endpoints], [2, 1, 1])

    def test_sendUsesAuthenticatedConnection(self) -> None:
        """
        L{ComponentPool.send} writes on the first authenticated connection.
        """
        self.pool.startService()
        self.endpoints[0].accept()
        transport = self.connect(1)
        self.pool.send(f"<message to='a@example.org' from='{JID}'/>")
        self.assertIn(b"<message to='a@example.org'", transport.value())


class RefusedConnectionTests(PoolTestCase):
    """
    A server that accepts one connection per component (Prosody) refuses the others.
    """

    size = 2

    def test_conflictLoggedAndOthersCarryOn(self) -> None:
        """
        The second connection's conflict is logged with advice to set connections = 1, is
        retried later, and the first stream carries every notification.
        """
        self.pool.startService()
        first = self.connect(0)
        refused = self.endpoints[1].accept()
        refused.protocol.dataReceived(STREAM_HEADER)
        refused.protocol.dataReceived(streamError("conflict"))
        errors = [m for m in self.messages() if "refused component" in m]
        self.assertEqual(len(errors), 1)
        self.assertIn("(connection 2 of 2) refused component pubsub.example.org: conflict", errors[0])
        self.assertIn("component.connections = 1", errors[0])
        self.assertIn("carries on with the connections it has", errors[0])
        self.setUpNode(20)
        first.clear()
        self.publishOn(first, "i1")
        self.assertEqual(len([s for s in self.stanzas(first) if s.name == "message"]), 20)
        self.clock.advance(1.0)
        self.assertEqual(len(self.endpoints[1].attempts), 2)


class PerConnectionMetricsTests(PoolTestCase):
    """
    The metrics endpoint shows each connection of the pool.
    """

    def tearDown(self) -> None:
        from hermod_component import metrics

        metrics.COLLECTOR.component = None
        metrics.COLLECTOR.notifier = None

    def test_perConnectionFamilies(self) -> None:
        """
        Each connection has its up, routing and notification samples, labelled from 1; the
        totals add up over the connections.
        """
        from hermod_component import metrics

        metrics.COLLECTOR.component = self.pool
        metrics.COLLECTOR.notifier = self.notifier
        self.pool.startService()
        transports = [self.connect(0), self.connect(1)]
        self.setUpNode(30)
        self.publishOn(transports[0], "i1")

        def sample(name: str, connection: str | None = None) -> float | None:
            labels = {"connection": connection} if connection else None
            return metrics.REGISTRY.get_sample_value(name, labels)

        self.assertEqual([sample("hermod_connection_up", c) for c in "123"], [1, 1, 0])
        self.assertEqual([sample("hermod_connection_routing", c) for c in "123"], [1, 1, 0])
        sent = [sample("hermod_connection_notifications_total", c) for c in "123"]
        self.assertEqual(sum(s or 0 for s in sent), 30)
        self.assertEqual(sent[2], 0)
        self.assertTrue(sent[0] and sent[1], sent)
        self.assertEqual(sample("hermod_connected"), 1)
        self.assertEqual(sample("hermod_write_buffer_bytes"), 0)
