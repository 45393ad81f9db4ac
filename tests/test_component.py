"""
Tests for L{hermod_component.xmpp.component}: the XEP-0114 connection, its handshake, logging and
reconnection backoff.

Most tests run without a reactor: a L{Clock} and a fake endpoint whose connection attempts the
test answers, with the server's side of the stream fed in as literal XML. L{RealProsodyTests}
runs the component against a throwaway Prosody.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from twisted.application.internet import backoffPolicy
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.words.xish import domish
from zope.interface import implementer

from hermod_component.config import ComponentSettings
from hermod_component.xmpp._xmpplib import XMPPHandler
from hermod_component.xmpp.component import (
    Backoff,
    ComponentService,
    makeComponentService,
)

JID = "pubsub.example.org"
SECRET = "s3cret"
STREAM_HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='pubsub.example.org' id='sid42'>"
)


def streamError(condition: str) -> bytes:
    """
    A stream error element with C{condition}, followed by the end of the stream.
    """
    return (
        b"<stream:error><" + condition.encode() + b" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error></stream:stream>"
    )


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    An endpoint whose connection attempts wait until the test accepts or refuses them.

    @ivar attempts: Each attempt's Deferred and factory, oldest first.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Deferred[IProtocol], IProtocolFactory]] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Record the attempt; its result is up to the test.
        """
        d: Deferred[IProtocol] = Deferred()
        self.attempts.append((d, protocolFactory))
        return d

    def refuse(self) -> None:
        """
        The latest attempt fails with connection refused.
        """
        self.attempts[-1][0].errback(ConnectionRefusedError())

    def accept(self) -> StringTransportWithDisconnection:
        """
        The latest attempt connects; return the transport holding what Hermod sends.
        """
        d, factory = self.attempts[-1]
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        d.callback(protocol)
        return transport


class RecordingHandler(XMPPHandler):
    """
    An XMPP handler that records its lifecycle calls.

    @ivar calls: C{"initialized"} and C{"lost"} in the order they happened.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def connectionInitialized(self) -> None:
        """
        Record that the stream is ready.
        """
        self.calls.append("initialized")

    def connectionLost(self, reason: Failure) -> None:
        """
        Record that the stream is gone.
        """
        super().connectionLost(reason)
        self.calls.append("lost")


def fixedPolicy() -> Callable[[int], float]:
    """
    The default backoff without jitter: 1, 1.5, 2.25, ... up to 60 seconds.
    """
    return backoffPolicy(initialDelay=1.0, maxDelay=60.0, jitter=lambda: 0.0)


class ComponentServiceTests(SynchronousTestCase):
    """
    Tests for L{ComponentService} against a fake endpoint and a clock.
    """

    def setUp(self) -> None:
        """
        A component service on a fake endpoint, with a clock and a recording handler; its log
        events are captured.
        """
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.service = ComponentService(
            JID,
            SECRET,
            self.endpoint,
            self.clock,
            description="tcp:host=xmpp.test:port=5347",
            policy=fixedPolicy(),
        )
        self.handler = RecordingHandler()
        self.service.addHandler(self.handler)
        capture = capturedLogs()
        self.events = capture.__enter__()
        self.addCleanup(capture.__exit__, None, None, None)

    def messages(self) -> list[str]:
        """
        The formatted log messages so far.
        """
        return [str(formatEvent(e)) for e in self.events]

    def nextDelay(self) -> float:
        """
        The delay of the one pending reconnection call.
        """
        calls = self.clock.getDelayedCalls()
        self.assertEqual(len(calls), 1, calls)
        return calls[0].getTime() - self.clock.seconds()

    def handshake(self, transport: StringTransportWithDisconnection) -> None:
        """
        Play the server's side of a successful handshake, checking the digest Hermod sends.
        """
        self.assertIn(b"xmlns='jabber:component:accept'", transport.value())
        self.assertIn(b"to='pubsub.example.org'", transport.value())
        transport.clear()
        transport.protocol.dataReceived(STREAM_HEADER)
        digest = hashlib.sha1(b"sid42" + SECRET.encode()).hexdigest()
        self.assertEqual(transport.value(), f"<handshake>{digest}</handshake>".encode())
        transport.clear()
        transport.protocol.dataReceived(b"<handshake/>")

    def refuseHandshake(self, transport: StringTransportWithDisconnection, condition: str) -> None:
        """
        Play a server that answers the handshake with a stream error and closes.
        """
        transport.protocol.dataReceived(STREAM_HEADER)
        transport.protocol.dataReceived(streamError(condition))

    def test_connectsOnStart(self) -> None:
        """
        Starting the service makes one connection attempt at once, and logs it.
        """
        self.service.startService()
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertIn("Connecting to tcp:host=xmpp.test:port=5347", self.messages())

    def test_refusedConnectionBacksOff(self) -> None:
        """
        Each refused connection is logged once and waits longer than the one before; no attempt
        is made before the delay has passed.
        """
        self.service.startService()
        delays = []
        for attempt in range(1, 6):
            self.endpoint.refuse()
            delay = self.nextDelay()
            delays.append(delay)
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.endpoint.attempts), attempt)
            self.clock.advance(0.01)
            self.assertEqual(len(self.endpoint.attempts), attempt + 1)
        self.assertEqual(delays, [1.0, 1.5, 2.25, 3.375, 5.0625])
        refusals = [m for m in self.messages() if m.startswith("Cannot connect")]
        self.assertEqual(len(refusals), 5)
        self.assertIn("Connection was refused", refusals[0])
        self.assertIn(
            "Reconnecting to tcp:host=xmpp.test:port=5347 in 1.5 seconds (failure 2 in a row)",
            self.messages(),
        )
        self.assertFalse(any(m.startswith("Scheduling retry") for m in self.messages()))

    def test_delayCapped(self) -> None:
        """
        After many failures the delay stays at the maximum.
        """
        self.service.startService()
        for _ in range(30):
            self.endpoint.refuse()
            self.clock.advance(self.nextDelay())
        self.endpoint.refuse()
        self.assertEqual(self.nextDelay(), 60.0)

    def test_handshake(self) -> None:
        """
        After the handshake the handlers are initialized and the success is logged.
        """
        self.service.startService()
        transport = self.endpoint.accept()
        self.assertEqual(self.handler.calls, [])
        self.handshake(transport)
        self.assertEqual(self.handler.calls, ["initialized"])
        self.assertTrue(self.service.authenticated)
        self.assertIn(
            "Authenticated to tcp:host=xmpp.test:port=5347 as component pubsub.example.org",
            self.messages(),
        )

    def test_refusedHandshakeBacksOff(self) -> None:
        """
        A handshake the server refuses with a stream error is logged once per attempt with its
        condition, and the delays keep growing even though TCP connected each time.
        """
        self.service.startService()
        delays = []
        for _ in range(4):
            transport = self.endpoint.accept()
            self.refuseHandshake(transport, "not-authorized")
            self.assertFalse(transport.connected)
            delays.append(self.nextDelay())
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [1.0, 1.5, 2.25, 3.375])
        self.assertEqual(len(self.endpoint.attempts), 5)
        refusals = [m for m in self.messages() if "refused component" in m]
        self.assertEqual(len(refusals), 4)
        self.assertIn("not-authorized", refusals[0])
        self.assertIn("secret does not match", refusals[0])
        errors = [e for e in self.events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 4)
        self.assertEqual(self.handler.calls, ["lost"] * 4)

    def test_conflictLogged(self) -> None:
        """
        A conflict (the JID is already connected) is logged with its condition and retried.
        """
        self.service.startService()
        self.refuseHandshake(self.endpoint.accept(), "conflict")
        refusals = [m for m in self.messages() if "refused component" in m]
        self.assertEqual(len(refusals), 1)
        self.assertIn("conflict", refusals[0])
        self.assertIn("already uses this component JID", refusals[0])
        self.assertEqual(self.nextDelay(), 1.0)

    def test_successResetsBackoff(self) -> None:
        """
        A completed handshake resets the delay: the next loss retries after the initial delay.
        """
        self.service.startService()
        for _ in range(3):
            self.endpoint.refuse()
            self.clock.advance(self.nextDelay())
        transport = self.endpoint.accept()
        self.handshake(transport)
        self.assertEqual(self.service.backoff.failures, 0)
        transport.loseConnection()
        self.assertEqual(self.handler.calls, ["initialized", "lost"])
        self.assertEqual(self.nextDelay(), 1.0)
        self.assertIn("Connection to tcp:host=xmpp.test:port=5347 lost", "\n".join(self.messages()))

    def test_tcpConnectAloneDoesNotReset(self) -> None:
        """
        A connection closed before the handshake completed counts as a failure and is logged.
        """
        self.service.startService()
        self.endpoint.refuse()
        self.clock.advance(self.nextDelay())
        transport = self.endpoint.accept()
        transport.loseConnection()
        self.assertEqual(self.nextDelay(), 1.5)
        self.assertTrue(
            any("closed the connection before the handshake" in m for m in self.messages())
        )

    def test_handshakeTimeout(self) -> None:
        """
        A server that never answers the handshake is disconnected after the timeout, and the
        attempt counts as a failure.
        """
        self.service.startService()
        transport = self.endpoint.accept()
        transport.protocol.dataReceived(STREAM_HEADER)
        self.clock.advance(29)
        self.assertTrue(transport.connected)
        self.clock.advance(1)
        self.assertFalse(transport.connected)
        self.assertTrue(any("No answer to the handshake" in m for m in self.messages()))
        self.assertEqual(self.nextDelay(), 1.0)

    def test_timeoutCancelledAfterHandshake(self) -> None:
        """
        After a successful handshake no timeout is left pending.
        """
        self.service.startService()
        self.handshake(self.endpoint.accept())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handlerAddedLater(self) -> None:
        """
        A handler added while the stream is up is initialized at once.
        """
        self.service.startService()
        self.handshake(self.endpoint.accept())
        late = RecordingHandler()
        self.service.addHandler(late)
        self.assertEqual(late.calls, ["initialized"])
        self.assertIs(late.parent, self.service.streamManager)

    def test_setHandlerParent(self) -> None:
        """
        A handler attached with C{setHandlerParent(service)} sends through the stream manager.
        """
        self.service.startService()
        transport = self.endpoint.accept()
        self.handshake(transport)
        late = RecordingHandler()
        late.setHandlerParent(self.service)
        self.assertEqual(late.calls, ["initialized"])
        transport.clear()
        late.send("<presence/>")
        self.assertEqual(transport.value(), b"<presence/>")
        late.disownHandlerParent(late.parent)
        self.assertNotIn(late, list(self.service.streamManager))

    def test_fromStamped(self) -> None:
        """
        Outgoing stanzas without C{from} get the component's JID; others are left alone.
        """
        self.service.startService()
        transport = self.endpoint.accept()
        self.handshake(transport)
        transport.clear()
        message = domish.Element((None, "message"))
        message["to"] = "user@example.org"
        self.handler.send(message)
        self.assertIn(b"from='pubsub.example.org'", transport.value())
        transport.clear()
        other = domish.Element((None, "message"))
        other["from"] = "node@pubsub.example.org"
        self.handler.send(other)
        self.assertIn(b"from='node@pubsub.example.org'", transport.value())

    def test_stopWhileWaiting(self) -> None:
        """
        Stopping the service during a backoff wait cancels the retry.
        """
        self.service.startService()
        self.endpoint.refuse()
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileConnected(self) -> None:
        """
        Stopping the service closes the stream, logs a plain disconnect and schedules nothing.
        """
        self.service.startService()
        transport = self.endpoint.accept()
        self.handshake(transport)
        self.successResultOf(self.service.stopService())
        self.assertFalse(transport.connected)
        self.assertEqual(self.handler.calls, ["initialized", "lost"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn("Disconnected from tcp:host=xmpp.test:port=5347", self.messages())

    def test_verboseLogsTraffic(self) -> None:
        """
        With C{verbose}, every chunk sent and received is logged at debug level; without it,
        none is.
        """
        self.service.startService()
        self.handshake(self.endpoint.accept())
        self.assertFalse(any(e["log_level"] == LogLevel.debug for e in self.events))

        endpoint = FakeEndpoint()
        verbose = ComponentService(
            JID, SECRET, endpoint, self.clock, policy=fixedPolicy(), verbose=True
        )
        verbose.startService()
        transport = endpoint.accept()
        transport.protocol.dataReceived(STREAM_HEADER)
        debug = [str(formatEvent(e)) for e in self.events if e["log_level"] == LogLevel.debug]
        self.assertTrue(any(m.startswith("SEND <stream:stream") for m in debug), debug)
        self.assertTrue(any(m.startswith("RECV <stream:stream") for m in debug), debug)
        self.assertTrue(any(m.startswith("SEND <handshake>") for m in debug), debug)


class BackoffTests(SynchronousTestCase):
    """
    Tests for L{Backoff} with the default jittered policy.
    """

    def test_defaultPolicyBounds(self) -> None:
        """
        The default policy starts between 1 and 2 seconds and never exceeds 61 seconds.
        """
        service = ComponentService(JID, SECRET, FakeEndpoint(), Clock())
        first = service.backoff.nextDelay()
        self.assertTrue(1.0 <= first < 2.0, first)
        delays = [service.backoff.nextDelay() for _ in range(40)]
        self.assertTrue(all(1.0 <= d <= 61.0 for d in delays), delays)
        self.assertTrue(delays[-1] >= 60.0)

    def test_reset(self) -> None:
        """
        L{Backoff.reset} starts the sequence over.
        """
        backoff = Backoff(fixedPolicy())
        self.assertEqual([backoff.nextDelay() for _ in range(3)], [1.0, 1.5, 2.25])
        backoff.reset()
        self.assertEqual(backoff.nextDelay(), 1.0)


class MakeComponentServiceTests(SynchronousTestCase):
    """
    Tests for L{makeComponentService}.
    """

    def test_endpointFromSettings(self) -> None:
        """
        The service connects through the reactor to the endpoint in the settings, only once
        started.
        """
        reactor = MemoryReactorClock()
        service = makeComponentService(
            ComponentSettings(jid=JID, secret=SECRET, server="tcp:host=127.0.0.9:port=5999"),
            reactor,
        )
        self.assertIsInstance(service, ComponentService)
        self.assertEqual(reactor.tcpClients, [])
        service.startService()
        self.assertEqual([(h, p) for h, p, *_ in reactor.tcpClients], [("127.0.0.9", 5999)])
        self.successResultOf(service.stopService())


class RealProsodyTests(TestCase):
    """
    The component against a real Prosody (skipped with a message when Prosody is missing,
    failed under CI).
    """

    timeout = 120

    def setUp(self) -> None:
        """
        Start a private Prosody with a component C{pubsub.localhost}.
        """
        from tests.servers.prosody import ProsodyServer

        self.prosody = ProsodyServer("pubsub.localhost", "right-secret")
        self.prosody.start()
        self.addCleanup(self.prosody.stop)
        capture = capturedLogs()
        self.events = capture.__enter__()
        self.addCleanup(capture.__exit__, None, None, None)

    def makeService(self, secret: str) -> ComponentService:
        """
        A component service for the Prosody under test, with short delays so the test is quick.
        """
        from twisted.internet import reactor

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.prosody.componentPort)
        service = ComponentService(
            "pubsub.localhost",
            secret,
            endpoint,
            reactor,
            description=f"prosody:{self.prosody.componentPort}",
            policy=backoffPolicy(initialDelay=0.2, maxDelay=1.0, factor=2.0),
        )
        self.addCleanup(service.stopService)
        return service

    async def waitFor(self, condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
        """
        Poll C{condition} until it holds, or fail naming C{what}.
        """
        from twisted.internet import reactor

        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}; log: {self.messages()[-10:]}")

    def messages(self) -> list[str]:
        """
        The formatted log messages so far.
        """
        return [str(formatEvent(e)) for e in self.events]

    def test_wrongSecret(self) -> Deferred[None]:
        """
        A wrong secret is logged as refused with not-authorized, and retried with growing delays.
        """
        return Deferred.fromCoroutine(self._wrongSecret())

    async def _wrongSecret(self) -> None:
        """
        Body of L{test_wrongSecret}.
        """
        service = self.makeService("wrong-secret")
        service.startService()
        await self.waitFor(
            lambda: len([m for m in self.messages() if "refused component" in m]) >= 3,
            "three refusals",
        )
        # The refusal is logged when the stream error arrives; the failure is counted when
        # the connection then closes and the retry is scheduled, a moment later.
        await self.waitFor(lambda: service.backoff.failures >= 3, "three counted failures")
        refusals = [m for m in self.messages() if "refused component" in m]
        self.assertIn("not-authorized", refusals[0])
        self.assertFalse(service.authenticated)

    def test_rightSecretAndRestart(self) -> Deferred[None]:
        """
        With the right secret the component authenticates; after Prosody restarts it reconnects
        and authenticates again, and the handler sees both streams.
        """
        return Deferred.fromCoroutine(self._rightSecretAndRestart())

    async def _rightSecretAndRestart(self) -> None:
        """
        Body of L{test_rightSecretAndRestart}.
        """
        service = self.makeService("right-secret")
        handler = RecordingHandler()
        service.addHandler(handler)
        service.startService()
        await self.waitFor(lambda: service.authenticated, "authentication")
        self.assertEqual(handler.calls, ["initialized"])
        self.prosody.restart()
        await self.waitFor(lambda: handler.calls.count("initialized") == 2, "re-authentication")
        # A connection attempt that met Prosody while it was going down adds another "lost".
        self.assertEqual(handler.calls[:2], ["initialized", "lost"])
        self.assertEqual(handler.calls[-1], "initialized")
        self.assertEqual(service.backoff.failures, 0)
        authenticated = [m for m in self.messages() if m.startswith("Authenticated to")]
        self.assertEqual(len(authenticated), 2)
