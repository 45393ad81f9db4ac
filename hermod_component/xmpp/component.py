"""
The XEP-0114 component connection: a reconnecting client service with backoff.

L{ComponentService} is a L{ClientService} on the endpoint named by C{component.server}. It owns a
L{ComponentStreamManager}; the XMPP handlers added to it get C{makeConnection},
C{connectionInitialized} and C{connectionLost} as streams come and go.

Reconnection: every failed attempt (refused or dropped TCP connection, handshake refused by the
server, no answer to the handshake) waits longer than the one before, from about one second up to
about a minute, with jitter. Only a stream that completes the handshake resets the delay, so a
wrong secret or a JID already connected elsewhere never turns into a tight loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error as jabberError
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.component import ConnectComponentAuthenticator
from twisted.words.xish import domish
from zope.interface import implementer

from hermod_component.config import ComponentSettings
from hermod_component.xmpp._xmpplib import StreamManager, XMPPHandler
from hermod_component.xmpp.flow import ReadGate, ReadThrottle
from hermod_component.xmpp.stream import HermodXmlStream

#: Hints for the stream errors a server sends when it refuses a component.
REFUSAL_HINTS = {
    "not-authorized": "the secret does not match the server's component secret",
    "conflict": "another connection already uses this component JID",
    "host-unknown": "the server has no component of this name configured",
    "improper-addressing": "the server has no component of this name configured",
    "invalid-namespace": "the endpoint is not a component port",
}


class Backoff:
    """
    Delays between connection attempts, growing on each failure until L{reset}.

    L{ClientService} counts failures itself, but it resets its count as soon as TCP connects, so a
    handshake that the server refuses would be retried after the initial delay forever. This
    counter is reset only after a successful handshake.

    @ivar failures: Failed attempts in a row.
    """

    def __init__(self, policy: Callable[[int], float]) -> None:
        """
        @param policy: Maps the number of earlier failures in a row (0 for the first) to a delay
            in seconds, as L{backoffPolicy} makes.
        """
        self._policy = policy
        self.failures = 0

    def nextDelay(self) -> float:
        """
        Count one more failure and return the delay before the next attempt.
        """
        self.failures += 1
        return self._policy(self.failures - 1)

    def reset(self) -> None:
        """
        The connection works: the next failure starts from the initial delay again.
        """
        self.failures = 0


@implementer(ILogObserver)
def _withoutRetryNotice(event: LogEvent) -> None:
    """
    Forward C{event} to the global log, except L{ClientService}'s own retry notice.

    L{ComponentService} logs its own notice, with its own failure count; ClientService's count
    restarts at each TCP connection and would contradict it.
    """
    if str(event.get("log_format", "")).startswith("Scheduling retry"):
        return
    globalLogPublisher(event)


@implementer(IStreamClientEndpoint)
class _LoggingEndpoint:
    """
    An endpoint wrapper that logs each connection attempt and each failure to connect.
    """

    log = Logger()

    def __init__(self, endpoint: IStreamClientEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect through the wrapped endpoint, logging the attempt and its failure.
        """
        self.log.info("Connecting to {server}", server=self._description)
        connecting = self._endpoint.connect(protocolFactory)

        def failed(reason: Failure) -> Failure:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Cannot connect to {server}: {reason}",
                server=self._description,
                reason=reason.getErrorMessage(),
            )
            return reason

        return connecting.addErrback(failed)


class ComponentStreamManager(StreamManager):
    """
    A stream manager for a component stream: outgoing stanzas without C{from} get the
    component's JID, as XEP-0114 servers require it.
    """

    def _authd(self, xs: xmlstream.XmlStream) -> None:
        """
        Stamp C{from} on outgoing elements, then tell the handlers the stream is ready.
        """
        plainSend = xs.send
        thisEntity = xs.thisEntity

        def send(obj: Any) -> None:
            if (
                thisEntity is not None
                and not isinstance(obj, bytes)  # notifications: no interface lookup
                and domish.IElement.providedBy(obj)
                and not obj.getAttribute("from")
            ):
                obj["from"] = thisEntity.full()
            plainSend(obj)

        xs.send = send  # type: ignore[method-assign]
        super()._authd(xs)


class ComponentService(ClientService):
    """
    The component connection: connects, shakes hands, hands the stream to the handlers, and
    reconnects with backoff whenever the stream ends or cannot be set up.

    @ivar jid: The component's JID.
    @ivar streamManager: The L{ComponentStreamManager} the handlers are added to.
    @ivar backoff: The reconnection delays.
    @ivar authenticated: Whether the current stream has completed the handshake.
    @ivar verbose: Whether every byte sent and received is logged at debug level.
    @ivar index: This connection's position among the component's connections, from 0.
    @ivar connections: How many connections the component opens (see L{ComponentPool}).
    """

    log = Logger()
    _log = Logger(observer=_withoutRetryNotice)

    def __init__(
        self,
        jid: str,
        secret: str,
        endpoint: IStreamClientEndpoint,
        reactor: IReactorTime,
        *,
        description: str = "",
        policy: Callable[[int], float] | None = None,
        handshakeTimeout: float = 30.0,
        verbose: bool = False,
        writeBuffer: int = 4 * 1024 * 1024,
        maxRequests: int = 1000,
        index: int = 0,
        connections: int = 1,
        gate: ReadGate | None = None,
    ) -> None:
        """
        @param jid: The component's JID.
        @param secret: The shared secret.
        @param endpoint: Where the server's component port is.
        @param reactor: Schedules the retries, the handshake timeout and IQ timeouts.
        @param description: The endpoint as the operator wrote it, for log messages.
        @param policy: Delay before the next attempt given the failures before it (0 for the
            first); by default from about 1 to about 60 seconds with jitter.
        @param handshakeTimeout: Seconds to wait for the server's answer to the handshake before
            dropping the connection and trying again.
        @param verbose: Log every byte sent and received at debug level.
        @param writeBuffer: Unsent bytes above which reading stops (see L{ReadThrottle}).
        @param maxRequests: Requests in progress at which reading stops (see L{ReadThrottle}).
        @param index: This connection's position among C{connections}, from 0.
        @param connections: How many connections the component opens as C{jid}.
        @param gate: Shared by the throttles of all those connections (see L{ReadGate}).
        """
        self.jid = jid
        self.index = index
        self.connections = connections
        self.label = f"connection {index + 1} of {connections}" if connections > 1 else ""
        self._gate = gate
        self.writeBuffer = writeBuffer
        self.maxRequests = maxRequests
        self.throttle: ReadThrottle | None = None
        self._reactor = reactor
        self._description = description or repr(endpoint)
        if self.label:
            self._description += f" ({self.label})"
        self._handshakeTimeout = handshakeTimeout
        self.verbose = verbose
        self.backoff = Backoff(policy or backoffPolicy(initialDelay=1.0, maxDelay=60.0))
        self.authenticated = False
        self._refused = False
        self._stopping = False
        self._timeout: IDelayedCall | None = None

        factory = xmlstream.XmlStreamFactory(ConnectComponentAuthenticator(jid, secret))
        factory.protocol = HermodXmlStream  # publish payloads kept as received bytes
        factory.noisy = False  # we log each attempt ourselves
        self.streamManager = ComponentStreamManager(factory, reactor)
        factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self._connected)
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self._authenticated)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._streamError)
        factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, self._initializationFailed)
        factory.addBootstrap(xmlstream.STREAM_END_EVENT, self._disconnected)
        self.factory = factory
        super().__init__(
            _LoggingEndpoint(endpoint, self._description),
            factory,
            retryPolicy=self._retryDelay,
            clock=reactor,
        )

    def addHandler(self, handler: XMPPHandler) -> None:
        """
        Add an XMPP handler; it is connected now if a stream is up, and on every new stream.

        The handler's parent becomes L{streamManager}, so its C{send} and C{request} go there,
        also when it was added with C{handler.setHandlerParent(service)}.
        """
        handler.setHandlerParent(self.streamManager)

    def removeHandler(self, handler: XMPPHandler) -> None:
        """
        Remove an XMPP handler added with L{addHandler}.
        """
        handler.disownHandlerParent(self.streamManager)

    def send(self, obj: Any) -> None:
        """
        Send a stanza (a domish element or serialized XML) on the stream; it is queued while no
        stream is initialized.
        """
        self.streamManager.send(obj)

    def startService(self) -> None:
        """
        Start connecting.
        """
        self._stopping = False
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop reconnecting and close the current stream.
        """
        self._stopping = True
        self._cancelTimeout()
        return super().stopService()

    def _retryDelay(self, attempt: int) -> float:
        """
        L{ClientService}'s retry policy: the next delay from L{backoff}, logged.

        @param attempt: ClientService's own count, which restarts at each TCP connection and is
            therefore ignored.
        """
        delay = self.backoff.nextDelay()
        self.log.info(
            "Reconnecting to {server} in {delay:.1f} seconds (failure {failures} in a row)",
            server=self._description,
            delay=delay,
            failures=self.backoff.failures,
        )
        return delay

    def _connected(self, xs: xmlstream.XmlStream) -> None:
        """
        TCP is up: send the handshake and wait at most C{handshakeTimeout} for its answer.
        """
        self.authenticated = False
        self._refused = False
        self.log.info(
            "Connected to {server}; authenticating as {jid}", server=self._description, jid=self.jid
        )
        if self.verbose:
            xs.rawDataInFn = self._logIn
            xs.rawDataOutFn = self._logOut
        self._cancelTimeout()
        self._timeout = self._reactor.callLater(self._handshakeTimeout, self._handshakeTimedOut, xs)

    def _logIn(self, data: bytes) -> None:
        """
        Log received bytes (with C{--verbose}).
        """
        self.log.debug("RECV {data}", data=data.decode("utf-8", "replace"))

    def _logOut(self, data: bytes) -> None:
        """
        Log sent bytes (with C{--verbose}).
        """
        self.log.debug("SEND {data}", data=data.decode("utf-8", "replace"))

    def _handshakeTimedOut(self, xs: xmlstream.XmlStream) -> None:
        """
        The server did not answer the handshake: drop the connection, which retries.
        """
        self._timeout = None
        self._refused = True
        self.log.warn(  # noqa: G010 - twisted.logger has no warning()
            "No answer to the handshake for {jid} from {server} within {timeout} seconds; "
            "closing the connection",
            jid=self.jid,
            server=self._description,
            timeout=self._handshakeTimeout,
        )
        if xs.transport is not None:
            xs.transport.loseConnection()

    def _authenticated(self, xs: xmlstream.XmlStream) -> None:
        """
        The handshake succeeded: reset the backoff.
        """
        self._cancelTimeout()
        self.authenticated = True
        self.backoff.reset()
        if xs.transport is not None and hasattr(xs.transport, "registerProducer"):
            self.throttle = ReadThrottle(
                xs.transport, self.writeBuffer, self._reactor, self._gate, self.label,
                maxRequests=self.maxRequests,
            )
            self.throttle.dispatch = xs.onElement
            xs.requestThrottle = self.throttle  # type: ignore[attr-defined]
        self.log.info(
            "Authenticated to {server} as component {jid}", server=self._description, jid=self.jid
        )

    def _streamError(self, reason: Failure) -> None:
        """
        The server sent a stream error (or sent unparsable XML); the stream closes next.
        """
        value = reason.value
        if isinstance(value, jabberError.StreamError):
            condition = value.condition
            text = value.text or ""
        else:
            condition = "bad-format"
            text = reason.getErrorMessage()
        if self.authenticated:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Stream error from {server}: {condition} {text}",
                server=self._description,
                condition=condition,
                text=text,
            )
            return
        self._refused = True
        hint = REFUSAL_HINTS.get(condition, "see the server's log")
        if condition == "conflict" and self.connections > 1:
            hint = (
                "this server accepts fewer connections per component than the "
                f"{self.connections} of component.connections (Prosody accepts one: set "
                "component.connections = 1 there); Hermod carries on with the connections it "
                "has and tries this one again later"
            )
        self.log.error(
            "{server} refused component {jid}: {condition} ({hint}) {text}",
            server=self._description,
            jid=self.jid,
            condition=condition,
            hint=hint,
            text=text,
        )

    def _initializationFailed(self, reason: Failure) -> None:
        """
        Stream initialization failed on our side: log it and close, which retries.
        """
        self._refused = True
        self.log.error(
            "Stream initialization as {jid} failed: {reason}",
            jid=self.jid,
            reason=reason.getErrorMessage(),
        )
        xs = self.streamManager.xmlstream
        if xs is not None and xs.transport is not None:
            xs.transport.loseConnection()

    def _disconnected(self, reason: Failure) -> None:
        """
        The stream is gone; L{ClientService} schedules the next attempt.
        """
        self._cancelTimeout()
        if self.throttle is not None:
            self.throttle.stopProducing()
        wasAuthenticated, self.authenticated = self.authenticated, False
        if self._stopping:
            self.log.info("Disconnected from {server}", server=self._description)
        elif wasAuthenticated:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Connection to {server} lost: {reason}",
                server=self._description,
                reason=reason.getErrorMessage(),
            )
        elif not self._refused:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "{server} closed the connection before the handshake completed: {reason}",
                server=self._description,
                reason=reason.getErrorMessage(),
            )

    def _cancelTimeout(self) -> None:
        """
        Cancel the pending handshake timeout, if any.
        """
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None


def makeComponentService(
    settings: ComponentSettings, reactor: Any, verbose: bool = False
) -> ComponentService:
    """
    The component connection described by C{settings}; nothing connects until it starts.

    @param reactor: Provides the endpoint's connection method and the clock.
    @param verbose: Log every stanza sent and received at debug level.
    """
    endpoint = clientFromString(reactor, settings.server)
    return ComponentService(
        settings.jid,
        settings.secret,
        endpoint,
        reactor,
        description=settings.server,
        verbose=verbose,
        writeBuffer=settings.writeBuffer,
        maxRequests=settings.maxRequests,
    )
