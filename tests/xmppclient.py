"""
An XMPP client for integration tests, built on slixmpp (an independent client library).

Tests run under Twisted's asyncio reactor (C{python -m twisted.trial --reactor=asyncio tests}),
so slixmpp and Twisted share one asyncio event loop. Every method here returns a L{Deferred},
so a test written as C{async def} can C{await} it::

    client = await connectClient("alice@localhost", "pw", "127.0.0.1", server.c2sPort)
    self.addCleanup(client.disconnect)
    reply = await client.iq(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='n'/></pubsub>",
        to="pubsub.localhost", type="set")
    message = await client.waitForMessage(lambda m: m["pubsub_event"]["items"]["node"] == "n")

The slixmpp object is C{client.xmpp}, with the XEP-0060 plugin (C{client.xmpp.plugin["xep_0060"]})
and its friends registered; any slixmpp coroutine can be run with L{Client.run}.

Plain authentication without TLS is switched on, because the test servers listen on loopback
without certificates.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Iq, Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel

T = TypeVar("T")


class _ToTwistedLog(logging.Handler):
    """
    Forward slixmpp's standard-library log records to twisted.logger, so they land in
    trial's C{test.log} instead of on the console.
    """

    log = Logger(namespace="slixmpp")
    levels: ClassVar[dict[int, LogLevel]] = {
        logging.DEBUG: LogLevel.debug,
        logging.INFO: LogLevel.info,
        logging.WARNING: LogLevel.warn,
        logging.ERROR: LogLevel.warn,
        logging.CRITICAL: LogLevel.error,
    }

    def emit(self, record: logging.LogRecord) -> None:
        """
        Forward C{record}; slixmpp errors become warnings, because a refused login or a lost
        connection is something a test checks for, not a bug in the test.
        """
        level = self.levels.get(record.levelno, LogLevel.warn)
        self.log.emit(level, "{name}: {message}", name=record.name, message=record.getMessage())


_slixmppLogger = logging.getLogger("slixmpp")
if not any(isinstance(h, _ToTwistedLog) for h in _slixmppLogger.handlers):
    _slixmppLogger.addHandler(_ToTwistedLog())
    _slixmppLogger.setLevel(logging.INFO)
    _slixmppLogger.propagate = False

NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"

#: slixmpp plugins every test client loads.
PLUGINS = ("xep_0030", "xep_0004", "xep_0059", "xep_0060", "xep_0199", "xep_0313")


class XMPPRequestError(Exception):
    """
    An IQ was answered with C{type='error'}.

    @ivar condition: The RFC 6120 condition, such as C{"forbidden"}.
    @ivar errorType: The error type, such as C{"auth"} or C{"cancel"}.
    @ivar pubsubCondition: The XEP-0060 application condition (such as C{"invalid-jid"}),
        or L{None}.
    @ivar text: The human-readable error text, or L{None}.
    @ivar stanza: The whole error reply.
    """

    def __init__(
        self,
        condition: str,
        errorType: str,
        pubsubCondition: str | None,
        text: str | None,
        stanza: ET.Element,
    ) -> None:
        self.condition = condition
        self.errorType = errorType
        self.pubsubCondition = pubsubCondition
        self.text = text
        self.stanza = stanza
        detail = f" ({pubsubCondition})" if pubsubCondition else ""
        said = f": {text}" if text else ""
        super().__init__(f"{errorType}/{condition}{detail}{said}\n{ET.tostring(stanza).decode()}")

    @classmethod
    def fromStanza(cls, stanza: ET.Element) -> XMPPRequestError:
        """
        Read the conditions out of an error reply.

        @param stanza: An C{<iq type='error'>} element.
        """
        error = stanza.find(f"{{{NS_CLIENT}}}error")
        if error is None:
            error = stanza.find("error")
        condition, pubsubCondition, text, errorType = "undefined-condition", None, None, ""
        if error is not None:
            errorType = error.get("type", "")
            for child in error:
                namespace, _, local = child.tag[1:].partition("}")
                if namespace == NS_STANZAS:
                    if local == "text":
                        text = child.text
                    else:
                        condition = local
                elif namespace == NS_PUBSUB_ERRORS:
                    pubsubCondition = local
        return cls(condition, errorType, pubsubCondition, text, stanza)


class ConnectionFailed(Exception):
    """
    The client could not connect, or the server refused its credentials.
    """


def _withNamespace(element: ET.Element, namespace: str) -> None:
    """
    Put C{element} and its descendants that have no namespace into C{namespace}, in place.

    @param element: An element parsed from text written without C{xmlns='jabber:client'}.
    @param namespace: The namespace to give them.
    """
    if not element.tag.startswith("{"):
        element.tag = f"{{{namespace}}}{element.tag}"
        for child in element:
            _withNamespace(child, namespace)


class Client:
    """
    One logged-in slixmpp client.

    @ivar xmpp: The slixmpp client, for anything this class does not wrap.
    @ivar messages: Every message stanza received (with or without a body, error messages
        included), oldest first. Tests may clear it.
    """

    def __init__(self, xmpp: slixmpp.ClientXMPP) -> None:
        """
        @param xmpp: A slixmpp client with its event loop set to the reactor's.
        """
        self.xmpp = xmpp
        self.messages: list[Message] = []
        self._waiters: list[tuple[Callable[[Message], bool], asyncio.Future[Message]]] = []
        # slixmpp's "message" event only fires for messages with a <body>; pubsub notifications
        # have none, so every message stanza is caught here instead.
        xmpp.register_handler(
            Callback("test client messages", MatchXPath(f"{{{NS_CLIENT}}}message"), self._received)
        )

    @property
    def jid(self) -> str:
        """
        The client's full JID once bound.
        """
        return str(self.xmpp.boundjid)

    @property
    def pubsub(self) -> Any:
        """
        slixmpp's XEP-0060 plugin; run its coroutines with L{run}.
        """
        return self.xmpp.plugin["xep_0060"]

    def _received(self, message: Any) -> None:
        """
        Keep C{message} and wake the waiters whose predicate it matches.

        @param message: A received message stanza (a slixmpp L{Message}).
        """
        self.messages.append(message)
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                continue
            try:
                matched = predicate(message)
            except Exception as e:  # noqa: BLE001 - handed to the waiting test
                future.set_exception(e)
                continue
            if matched:
                future.set_result(message)

    def run(self, awaitable: Awaitable[T]) -> Deferred[T]:
        """
        Run an asyncio coroutine or future (such as a slixmpp plugin call) as a L{Deferred}.

        @param awaitable: For example C{client.pubsub.get_items("pubsub.localhost", "n")}.
        @return: Fires with the awaitable's result.
        """
        return Deferred.fromFuture(asyncio.ensure_future(awaitable, loop=self.xmpp.loop))

    def iq(
        self, payload: str | ET.Element, to: str | None = None, type: str | None = None,
        timeout: float = 10.0,
    ) -> Deferred[ET.Element]:
        """
        Send an IQ and wait for its answer.

        C{payload} is either a whole C{<iq>} (its C{to} and C{type} are used; C{jabber:client}
        may be left out) or just its child, in which case C{to} and C{type} are required.

        @param payload: XML text or an element.
        @param to: The addressee, overriding the one in C{payload}.
        @param type: C{"get"} or C{"set"}, overriding the one in C{payload}.
        @param timeout: Seconds to wait for the answer.
        @return: Fires with the C{type='result'} reply element, or fails with
            L{XMPPRequestError} (error reply) or L{TimeoutError}.
        """
        return self.run(self._iq(payload, to, type, timeout))

    async def _iq(
        self, payload: str | ET.Element, to: str | None, type: str | None, timeout: float
    ) -> ET.Element:
        """
        Coroutine behind L{iq}.
        """
        element = ET.fromstring(payload) if isinstance(payload, str) else payload
        iq: Iq = self.xmpp.make_iq()
        if element.tag in ("iq", f"{{{NS_CLIENT}}}iq"):
            to = to or element.get("to")
            type = type or element.get("type")
            if element.get("id"):
                iq["id"] = element.get("id")
            children = list(element)
        else:
            children = [element]
        if not to or type not in ("get", "set"):
            raise ValueError(f"an IQ needs a 'to' and a type of get or set, not {to!r}/{type!r}")
        iq["to"] = to
        iq["type"] = type
        for child in children:
            _withNamespace(child, NS_CLIENT)
            iq.append(child)
        try:
            reply = await iq.send(timeout=timeout)
        except IqError as e:
            raise XMPPRequestError.fromStanza(e.iq.xml) from None
        except IqTimeout:
            raise TimeoutError(f"no answer to IQ {iq['id']} from {to} in {timeout}s") from None
        return reply.xml

    def send(self, stanza: str | ET.Element) -> None:
        """
        Send a raw stanza (message or presence) as is.

        @param stanza: XML text or an element; C{jabber:client} may be left out.
        """
        element = ET.fromstring(stanza) if isinstance(stanza, str) else stanza
        _withNamespace(element, NS_CLIENT)
        self.xmpp.send_raw(ET.tostring(element, encoding="unicode"))

    def sendMessage(self, to: str, body: str) -> None:
        """
        Send a chat message with a body.

        @param to: The addressee.
        @param body: The text.
        """
        self.xmpp.send_message(mto=slixmpp.JID(to), mbody=body, mtype="chat")

    def waitForMessage(
        self, predicate: Callable[[Message], bool] = lambda m: True, timeout: float = 10.0
    ) -> Deferred[Message]:
        """
        The first message in L{messages}, or the next to arrive, for which C{predicate} is true.

        Messages received before the call count, so a test cannot miss one that arrived
        early; clear L{messages} first to wait only for new ones.

        @param predicate: Called with each slixmpp message stanza.
        @param timeout: Seconds to wait.
        @return: Fires with the message, or fails with L{TimeoutError}.
        """
        return self.run(self._waitForMessage(predicate, timeout))

    async def _waitForMessage(
        self, predicate: Callable[[Message], bool], timeout: float
    ) -> Message:
        """
        Coroutine behind L{waitForMessage}.
        """
        for message in self.messages:
            if predicate(message):
                return message
        future: asyncio.Future[Message] = self.xmpp.loop.create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.jid}: no matching message in {timeout}s; received {len(self.messages)}: "
                + " | ".join(str(m) for m in self.messages[-5:])
            ) from None
        finally:
            self._waiters.remove(entry)

    def disconnect(self) -> Deferred[None]:
        """
        Close the stream and wait until the connection is gone. Safe to call twice.
        """
        return self.run(self._disconnect())

    async def _disconnect(self) -> None:
        """
        Coroutine behind L{disconnect}.
        """
        if self.xmpp.transport is not None:
            await self.xmpp.disconnect(wait=2.0)
        await _endFilterTask(self.xmpp)


async def _endFilterTask(xmpp: slixmpp.ClientXMPP) -> None:
    """
    End the outgoing-filter task slixmpp leaves waiting forever after a disconnect, so that
    asyncio does not complain about a pending task when the test run exits.

    @param xmpp: A disconnected client.
    """
    task = getattr(xmpp, "_run_out_filters", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def makeXMPP(jid: str, password: str) -> slixmpp.ClientXMPP:
    """
    A slixmpp client set up for loopback test servers: no TLS, plain auth allowed, the pubsub
    plugins registered, and the reactor's event loop.

    @param jid: The account's JID (a resource may be given).
    @param password: Its password.
    """
    loop = asyncio.get_event_loop()
    xmpp = slixmpp.ClientXMPP(jid, password, loop=loop)
    xmpp.enable_direct_tls = False
    xmpp.enable_starttls = False
    xmpp.enable_plaintext = True
    for name in PLUGINS:
        xmpp.register_plugin(name)
    xmpp.register_plugin(
        "feature_mechanisms", pconfig={"unencrypted_plain": True, "unencrypted_scram": True}
    )
    # Register the SASL settings on the already loaded plugin as well.
    xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
    xmpp.plugin["feature_mechanisms"].unencrypted_scram = True
    return xmpp


def connectClient(
    jid: str, password: str, host: str = "127.0.0.1", port: int = 5222, timeout: float = 15.0,
    presence: bool = True,
) -> Deferred[Client]:
    """
    Connect and log in, then (by default) send initial presence.

    @param jid: The account's JID.
    @param password: Its password.
    @param host: The server address.
    @param port: The server's c2s port.
    @param timeout: Seconds to wait for the session to start.
    @param presence: Whether to send available presence once logged in.
    @return: Fires with a L{Client}, or fails with L{ConnectionFailed}.
    """
    xmpp = makeXMPP(jid, password)
    client = Client(xmpp)
    return client.run(_connect(client, host, port, timeout, presence))


async def _connect(
    client: Client, host: str, port: int, timeout: float, presence: bool
) -> Client:
    """
    Coroutine behind L{connectClient}.
    """
    xmpp = client.xmpp
    outcome: asyncio.Future[None] = xmpp.loop.create_future()

    def succeeded(event: object) -> None:
        if not outcome.done():
            outcome.set_result(None)

    def failed(why: str) -> Callable[[object], None]:
        def fail(event: object) -> None:
            if not outcome.done():
                outcome.set_exception(ConnectionFailed(f"{xmpp.boundjid}: {why}: {event}"))

        return fail

    xmpp.add_event_handler("session_start", succeeded)
    xmpp.add_event_handler("failed_all_auth", failed("authentication failed"))
    xmpp.add_event_handler("connection_failed", failed("connection failed"))
    xmpp.add_event_handler("disconnected", failed("disconnected before session start"))
    xmpp.connect(host, port)
    try:
        await asyncio.wait_for(outcome, timeout)
    except BaseException as e:
        await xmpp.disconnect(wait=0)
        await _endFilterTask(xmpp)
        if isinstance(e, TimeoutError):
            raise ConnectionFailed(
                f"{xmpp.boundjid}: no session after {timeout}s on {host}:{port}"
            ) from None
        raise
    finally:
        xmpp.del_event_handler("session_start", succeeded)
    if presence:
        xmpp.send_presence()
    return client
