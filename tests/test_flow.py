"""
Tests for L{hermod_component.xmpp.flow}: backpressure on a real TCP connection.
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from hermod_component.xmpp.flow import WRITE_CHUNK, ReadThrottle


class SlowReader(protocol.Protocol):
    """
    A server side that reads nothing until told to.
    """

    def connectionMade(self) -> None:
        self.received = 0
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.factory.connected.callback(self)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)


class ReadThrottleTests(TestCase):
    """
    Reading stops while the peer is behind and starts again when it has caught up.
    """

    async def connectToSlowReader(self) -> tuple[protocol.Protocol, SlowReader]:
        """
        A client connected over loopback TCP to a L{SlowReader}, both closed after the test.
        """
        from twisted.internet import reactor

        serverFactory = protocol.Factory.forProtocol(SlowReader)
        serverFactory.connected = defer.Deferred()  # type: ignore[attr-defined]
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(serverFactory)
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(protocol.Protocol)
        )
        self.addCleanup(client.transport.loseConnection)
        server: SlowReader = await serverFactory.connected  # type: ignore[attr-defined]
        self.addCleanup(server.transport.loseConnection)
        return client, server

    async def test_pausesAndResumes(self) -> None:
        """
        Writing past the high-water mark to a peer that does not read stops reading from it;
        once the peer has read everything, reading resumes and nothing was lost.
        """
        from twisted.internet import reactor

        client, server = await self.connectToSlowReader()

        throttle = ReadThrottle(client.transport, 256 * 1024, reactor)
        chunk = b"x" * 65536
        total = 0
        while not throttle.paused and total < 64 * 1024 * 1024:
            client.transport.write(chunk)
            total += len(chunk)
            await task.deferLater(reactor, 0, lambda: None)
        self.assertTrue(throttle.paused)
        self.assertEqual(throttle.pauses, 1)
        self.assertNotIn(client.transport, reactor.getReaders())

        server.transport.resumeProducing()
        for _ in range(500):
            if not throttle.paused and server.received == total:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(throttle.paused)
        self.assertEqual(server.received, total)
        self.assertIn(client.transport, reactor.getReaders())
        self.assertGreater(throttle.pausedSeconds, 0.0)

    async def test_feedWritesAsTheTransportTakes(self) -> None:
        """
        A fan-out of 20 MB fed to a peer that does not read is written only up to about the
        high-water mark; the messages are made as the transport takes them, later feeds wait
        behind it, reading stays stopped until everything is written, and the peer then gets
        every byte in the order fed.
        """
        from twisted.internet import reactor

        client, server = await self.connectToSlowReader()
        chunks: list[bytes] = []
        original = server.dataReceived

        def keep(data: bytes) -> None:
            chunks.append(data)
            original(data)

        server.dataReceived = keep

        highWater = 256 * 1024
        throttle = ReadThrottle(client.transport, highWater, reactor)
        made = [0]

        def fanOut(tag: bytes, count: int) -> Iterator[bytes]:
            for n in range(count):
                made[0] += 1
                yield tag + b"%05d" % n + b"x" * 10_000

        throttle.feed(client.transport.write, fanOut(b"A", 2000))
        throttle.feed(client.transport.write, fanOut(b"B", 10))
        self.assertTrue(throttle.paused)
        self.assertLess(made[0], 100)
        self.assertLessEqual(throttle.pendingBytes(), highWater + WRITE_CHUNK + 10_006)
        self.assertEqual(len(throttle.backlog), 2)
        # The kernel's socket buffers take some more; then nothing moves, and Hermod itself
        # never holds more than the mark, one chunk and one message.
        settled = -1
        for _ in range(100):
            await task.deferLater(reactor, 0.02, lambda: None)
            self.assertLessEqual(throttle.pendingBytes(), highWater + WRITE_CHUNK + 10_006)
            if made[0] == settled:
                break
            settled = made[0]
        self.assertEqual(made[0], settled)
        self.assertLess(made[0], 1500)
        self.assertTrue(throttle.paused)
        self.assertNotIn(client.transport, reactor.getReaders())

        server.transport.resumeProducing()
        total = 2010 * 10_006
        for _ in range(1000):
            if not throttle.paused and server.received == total:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(server.received, total)
        self.assertFalse(throttle.paused)
        self.assertEqual(made[0], 2010)
        self.assertEqual(len(throttle.backlog), 0)
        self.assertIn(client.transport, reactor.getReaders())
        data = b"".join(chunks)
        expected = b"".join(
            [tag + b"%05d" % n + b"x" * 10_000 for tag, count in ((b"A", 2000), (b"B", 10))
             for n in range(count)]
        )
        self.assertEqual(data, expected)
        self.assertEqual(throttle.pauses, 1)

    def test_messagesJoinedIntoChunks(self) -> None:
        """
        A fan-out's messages reach the stream's send joined into writes of about
        C{WRITE_CHUNK} bytes, in order, none split.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport

        throttle = ReadThrottle(StringTransport(), 10 * WRITE_CHUNK, reactor)
        writes: list[bytes] = []
        messages = [b"<message n='%d'>" % n + b"x" * 1000 + b"</message>" for n in range(100)]
        throttle.feed(writes.append, iter(messages))
        self.assertEqual(b"".join(writes), b"".join(messages))
        self.assertEqual(len(writes), -(-len(b"".join(messages)) // WRITE_CHUNK))
        self.assertTrue(all(w.startswith(b"<message ") and w.endswith(b"</message>")
                            for w in writes))
        single: list[bytes] = []
        throttle.feed(single.append, iter([b"<message/>"]))
        self.assertEqual(single, [b"<message/>"])

    def test_lostConnectionDropsBacklog(self) -> None:
        """
        When the connection goes, the backlog goes with it (logged) and the throttle no longer
        holds reading back.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        throttle = ReadThrottle(transport, 65536, reactor)
        throttle.pauseProducing()
        throttle.feed(transport.write, iter([b"a", b"b"]))
        self.assertEqual(transport.value(), b"")
        throttle.stopProducing()
        self.assertEqual(len(throttle.backlog), 0)
        self.assertFalse(throttle.paused)

    def test_tooManyRequestsInProgress(self) -> None:
        """
        At C{maxRequests} requests in progress reading stops, and it resumes when half of them
        are answered, unless the write buffer still holds it back; a drained buffer does not
        resume reading while too many requests are in progress.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        throttle = ReadThrottle(transport, 65536, reactor, maxRequests=4)
        for _ in range(3):
            throttle.requestStarted()
        self.assertEqual(transport.producerState, "producing")
        throttle.requestStarted()
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(throttle.busy)
        throttle.pauseProducing()  # the write buffer is full as well
        throttle.resumeProducing()  # and drained: still too many requests
        self.assertEqual(transport.producerState, "paused")
        throttle.requestDone()
        self.assertEqual(transport.producerState, "paused")
        throttle.pauseProducing()
        throttle.requestDone()  # 2 of 4: no longer busy, but the buffer is full
        self.assertFalse(throttle.busy)
        self.assertEqual(transport.producerState, "paused")
        throttle.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual((throttle.inProgress, throttle.busyPauses), (2, 1))

    def test_holdKeepsReadingAndDefersRequests(self) -> None:
        """
        L{ReadThrottle.hold} keeps the streams reading; requests read meanwhile on any
        stream of the gate wait in order, and are handled when the last holder releases.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport

        from hermod_component.xmpp.flow import ReadGate

        gate = ReadGate()
        transport, otherTransport = StringTransport(), StringTransport()
        throttle = ReadThrottle(transport, 65536, reactor, gate)
        other = ReadThrottle(otherTransport, 65536, reactor, gate)
        handled: list[str] = []
        throttle.dispatch = handled.append
        other.dispatch = handled.append
        self.assertFalse(other.holding)
        throttle.hold("multicast")
        self.assertTrue(other.holding)
        self.assertEqual((transport.producerState, otherTransport.producerState),
                         ("producing", "producing"))
        other.wait("r1")
        throttle.wait("r2")
        other.wait("r3")
        throttle.release("something else")  # not a holder
        self.assertEqual(handled, [])
        throttle.release("multicast")
        self.assertEqual(handled, ["r2", "r1", "r3"])
        self.assertFalse(other.holding)

    def test_tooManyWaitingRefused(self) -> None:
        """
        At C{maxRequests} waiting requests L{ReadThrottle.wait} keeps no more (the stream
        refuses them) and reading goes on, since the answer that releases the hold must be
        read; after the release the kept ones are handled.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        throttle = ReadThrottle(transport, 65536, reactor, maxRequests=2)
        handled: list[str] = []
        throttle.dispatch = handled.append
        throttle.hold("multicast")
        self.assertEqual([throttle.wait(r) for r in ("r1", "r2", "r3")], [True, True, False])
        self.assertEqual(transport.producerState, "producing")
        throttle.release("multicast")
        self.assertEqual(handled, ["r1", "r2"])

    def test_holderGoneReleases(self) -> None:
        """
        A holding stream whose connection goes releases the others' waiting requests.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport

        from hermod_component.xmpp.flow import ReadGate

        gate = ReadGate()
        throttle = ReadThrottle(StringTransport(), 65536, reactor, gate)
        other = ReadThrottle(StringTransport(), 65536, reactor, gate)
        handled: list[str] = []
        other.dispatch = handled.append
        throttle.hold("multicast")
        other.wait("r1")
        throttle.stopProducing()
        self.assertEqual(handled, ["r1"])

    def test_streamDefersOnlyRequests(self) -> None:
        """
        While its throttle holds, Hermod's stream keeps IQ gets and sets back and dispatches
        answers and messages at once; released, the requests are dispatched in order.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport
        from twisted.words.protocols.jabber.xmlstream import Authenticator

        from hermod_component.testing import parseStanzas
        from hermod_component.xmpp.stream import HermodXmlStream

        xs = HermodXmlStream(Authenticator())
        throttle = ReadThrottle(StringTransport(), 65536, reactor)
        throttle.dispatch = xs.onElement
        xs.requestThrottle = throttle
        seen: list[str] = []
        xs.addObserver("/*", lambda e: seen.append(f"{e.name} {e.getAttribute('id')}"))
        throttle.hold("multicast")
        for stanza in parseStanzas(
            "<iq type='set' id='s1'/><iq type='result' id='a1'/><message id='m1'/>"
            "<iq type='get' id='g1'/><iq type='error' id='e1'/>"
            "<iq type='get' id='hermod-barrier-1-1'/>"
        ):
            xs.onElement(stanza)
        self.assertEqual(seen, ["iq a1", "message m1", "iq e1", "iq hermod-barrier-1-1"])
        throttle.release("multicast")
        self.assertEqual(seen, ["iq a1", "message m1", "iq e1", "iq hermod-barrier-1-1",
                                "iq s1", "iq g1"])

    def test_streamRefusesPastTheLimit(self) -> None:
        """
        With C{maxRequests} requests waiting, Hermod's stream answers a further one with a
        C{resource-constraint} error of type C{wait}, and does not dispatch it later.
        """
        from twisted.internet import reactor
        from twisted.internet.testing import StringTransport
        from twisted.words.protocols.jabber.xmlstream import Authenticator

        from hermod_component.testing import parseStanzas
        from hermod_component.xmpp.stream import HermodXmlStream

        xs = HermodXmlStream(Authenticator())
        sent: list[object] = []
        xs.send = sent.append  # type: ignore[method-assign]
        throttle = ReadThrottle(StringTransport(), 65536, reactor, maxRequests=1)
        throttle.dispatch = xs.onElement
        xs.requestThrottle = throttle
        seen: list[str] = []
        xs.addObserver("/iq", lambda e: seen.append(e.getAttribute("id")))
        throttle.hold("multicast")
        for stanza in parseStanzas(
            "<iq type='set' id='s1' from='a@x/r' to='pubsub.x'/>"
            "<iq type='set' id='s2' from='a@x/r' to='pubsub.x'/>"
        ):
            xs.onElement(stanza)
        (error,) = sent
        self.assertEqual((error["type"], error["id"], error["to"]), ("error", "s2", "a@x/r"))
        (condition,) = [c for c in error.firstChildElement().elements() if c.name != "text"]
        self.assertEqual((error.firstChildElement()["type"], condition.name),
                         ("wait", "resource-constraint"))
        throttle.release("multicast")
        self.assertEqual(seen, ["s1"])
