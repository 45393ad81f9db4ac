"""
Tests for L{hermod_component.xmpp.flow}: backpressure on a real TCP connection.
"""

from __future__ import annotations

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import TestCase

from hermod_component.xmpp.flow import ReadThrottle


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

    async def test_pausesAndResumes(self) -> None:
        """
        Writing past the high-water mark to a peer that does not read stops reading from it;
        once the peer has read everything, reading resumes and nothing was lost.
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
        server = await serverFactory.connected  # type: ignore[attr-defined]
        self.addCleanup(server.transport.loseConnection)

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
