"""
XEP-0033 multicast: one notification stanza for many subscribers (C{component.multicast}).

A fan-out to N subscribers costs the server N stanzas to parse and route when Hermod writes
one message per subscriber. A multicast service (ejabberd's C{mod_multicast}) takes one
message with the subscribers named as C{bcc} addresses, and delivers a copy to each, without
the addresses. Hermod then writes one stanza per L{MulticastService.limit} recipients.

 - B{Finding the service.} With C{multicast = "auto"}, at each connection Hermod asks the
   server's domain (the component JID less its first label) for disco#items and each item
   for disco#info, and takes the first with the C{http://jabber.org/protocol/address}
   feature; with a JID, it asks that JID only. The service's disco#info may say how many
   recipients one message may name (an XEP-0128 form of type C{http://jabber.org/protocol/address}
   with a C{message} field, as ejabberd sends); Hermod stays under it and under
   L{MAX_ADDRESSES}. Until the answer comes, and when nothing is found, notifications go one
   per recipient as without multicast.
 - B{Which notifications.} Those whose recipients need no SubID header (one subscription per
   JID, the common case), when at least L{MIN_RECIPIENTS} of them share one notification.
   The others are written one per recipient, as before.
 - B{Refusals lose nothing.} A service that refuses a multicast message sends it back as an
   error, with the original content and addresses (RFC 6120 8.3.1); Hermod then writes that
   notification to each named recipient itself, logs the refusal, and stops using multicast
   until the next connection. The message's type travels in its C{id}, since the error
   replaces it.
 - B{Backpressure.} The service queues the copies of a message inside the server, out of
   reach of the TCP flow control that holds Hermod back when the server reads slowly. After
   multicast messages Hermod sends the service a disco#info probe on the same stream; the
   service answers IQs in the same queue as messages, so its answer means everything written
   before the probe has been routed on. While more than L{WINDOW} recipients' copies on one
   stream are unconfirmed, the requests Hermod reads wait unhandled (L{ReadThrottle.hold}:
   it keeps reading, to see the probe's answer), until fewer than half of it are. A probe unanswered for L{PROBE_TIMEOUT} seconds ends multicast until the
   next connection.
 - B{Order.} While a node's subscribers stay the same, each subscriber gets a node's
   notifications through the same path (the same multicast stanza position, or its own
   message) and so in order; a notification sent just as the subscriber set changes may
   overtake the one before it on the other path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import exceptionFromStanza
from twisted.words.protocols.jabber.xmlstream import TimeoutError as IQTimeout
from twisted.words.xish import domish

from hermod_component.xmpp._xmpplib import XMPPHandler
from hermod_component.xmpp.flow import throttleOf, writeInOrder

if TYPE_CHECKING:
    from hermod_component.xmpp.notifier import XMPPNotifier

NS_ADDRESS = "http://jabber.org/protocol/address"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"

#: Most recipients Hermod names in one multicast message, whatever the service allows.
MAX_ADDRESSES = 500

#: Recipients one message names when the service does not say how many it takes.
DEFAULT_LIMIT = 50

#: Fewest recipients of one notification for which Hermod uses the service.
MIN_RECIPIENTS = 2

#: Seconds to wait for each disco answer while looking for the service.
DISCO_TIMEOUT = 30.0

#: The C{id} prefix of multicast messages; the message type follows it.
ID_PREFIX = "hermod-multicast-"

#: Unconfirmed multicast recipients on one stream at which Hermod stops reading requests.
WINDOW = 10_000

#: Seconds a probe may go unanswered before Hermod stops using the service.
PROBE_TIMEOUT = 30.0

#: The C{id} prefix of the probes.
PROBE_PREFIX = "hermod-multicast-probe-"

#: The C{id} prefix of the disco queries looking for the service. With several connections
#: the server may route an answer to another stream than its request's, so the answers are
#: matched by id on every stream, not by the stream's own IQ tracking.
QUERY_PREFIX = "hermod-multicast-disco-"

#: XEP-0033 address types that name a recipient.
_RECIPIENT_TYPES = frozenset(("to", "cc", "bcc"))


@attrs.frozen
class MulticastService:
    """
    A multicast service Hermod writes notifications through.

    @ivar jid: Its JID.
    @ivar limit: How many recipients one message names.
    """

    jid: str
    limit: int


def serviceLimit(query: domish.Element) -> int:
    """
    How many recipients one message to the service of disco#info C{query} may name.

    @return: The service's own C{message} limit, at most L{MAX_ADDRESSES}; L{DEFAULT_LIMIT}
        when it gives none or an unreadable one.
    """
    for form in query.elements(NS_DATA, "x"):
        fields = {
            f.getAttribute("var"): [str(v) for v in f.elements(NS_DATA, "value")]
            for f in form.elements(NS_DATA, "field")
        }
        if fields.get("FORM_TYPE") != [NS_ADDRESS]:
            continue
        values = fields.get("message")
        if not values:
            return DEFAULT_LIMIT
        if values[0].strip() == "infinite":
            return MAX_ADDRESSES
        try:
            limit = int(values[0])
        except ValueError:
            return DEFAULT_LIMIT
        return max(1, min(limit, MAX_ADDRESSES))
    return DEFAULT_LIMIT


def serverDomain(component: str) -> str:
    """
    The domain of the server a component is attached to: C{pubsub.example.org} ->
    C{example.org} (the component's own JID when it has one label only).
    """
    _, dot, rest = component.partition(".")
    return rest if dot and rest else component


def multicastMessages(
    service: MulticastService,
    head: bytes,
    messageType: str,
    recipients: Sequence[str],
    content: bytes,
) -> Iterator[bytes]:
    """
    The multicast messages carrying C{content} to C{recipients}, L{MulticastService.limit}
    recipients each, as C{bcc} addresses.

    @param head: C{<message from=... type=...} with a trailing space and no C{to}.
    @param content: The serialized children every recipient gets.
    """
    from hermod_component.xmpp.notifier import quoteAttribute

    to = b"to=" + quoteAttribute(service.jid) + b" id="
    opening = b"><addresses xmlns=" + quoteAttribute(NS_ADDRESS) + b">"
    limit = service.limit
    for start in range(0, len(recipients), limit):
        addresses = b"".join(
            b"<address type='bcc' jid=" + quoteAttribute(recipient) + b"/>"
            for recipient in recipients[start:start + limit]
        )
        yield (
            head + to + quoteAttribute(f"{ID_PREFIX}{messageType}-{start}") + opening
            + addresses + b"</addresses>" + content + b"</message>"
        )


class MulticastFinder:
    """
    The multicast state the streams of one component share: the setting, the service found
    (set as the notifier's C{multicast}), and the search in progress.

    @ivar setting: C{"auto"} or a service JID (C{"off"} makes no finder).
    @ivar notifier: Writes through L{XMPPNotifier.multicast} when it is set.
    @ivar refusals: Multicast messages the service sent back.
    """

    log = Logger()

    def __init__(self, setting: str, notifier: XMPPNotifier) -> None:
        self.setting = setting
        self.notifier = notifier
        self.refusals = 0
        self._searching = False
        self._streams: set[Any] = set()
        self._queries: dict[str, tuple[Deferred[domish.Element], IDelayedCall]] = {}
        self._counter = 0
        #: Services notifications were sent through since the last search: their refusals
        #: are recognised even after multicast was turned off.
        self._used: set[str] = set()

    def streamUp(self, handler: MulticastHandler) -> None:
        """
        A stream is up: look for the service unless one is known or being looked for.
        """
        self._streams.add(handler)
        if self.notifier.multicast is None and not self._searching:
            self._searching = True
            d = Deferred.fromCoroutine(self._search(handler))
            d.addErrback(lambda f: self.log.failure("Looking for a multicast service failed", f))

    def streamDown(self, handler: MulticastHandler) -> None:
        """
        A stream is gone; with the last one, the service is forgotten (the next connection
        looks again, so a server reconfigured meanwhile is seen).
        """
        self._streams.discard(handler)
        if not self._streams:
            self.notifier.multicast = None
            # No stream can bring their answers now: end the search, so that the next
            # connection starts its own.
            queries, self._queries = self._queries, {}
            for d, timeout in queries.values():
                if timeout.active():
                    timeout.cancel()
                d.errback(ConnectionLost("no component stream is up"))

    async def _search(self, handler: MulticastHandler) -> None:
        try:
            service = await self._find(handler)
        finally:
            self._searching = False
        if handler not in self._streams:
            return  # that stream went down meanwhile; the next one looks again
        if service is None:
            return
        self._used.add(service.jid)
        self.notifier.multicast = service
        self.log.info(
            "Notifications to {minimum} or more subscribers go through the multicast service "
            "{service}, {limit} recipients per message",
            minimum=MIN_RECIPIENTS, service=service.jid, limit=service.limit,
        )

    async def _find(self, handler: MulticastHandler) -> MulticastService | None:
        """
        The service to use, or L{None} (logged) if there is none.
        """
        me = self.notifier.service
        if self.setting != "auto":
            try:
                info = await self._info(handler, self.setting)
            except Exception as e:  # noqa: BLE001 - reported, and notifications go one by one
                if not self._streams:
                    return None  # disconnected: the next connection looks again
                self.log.error(
                    "The multicast service {service} did not answer disco#info ({reason}); "
                    "notifications go one per recipient",
                    service=self.setting, reason=_reason(e),
                )
                return None
            if info is None:
                self.log.error(
                    "{service} is not an XEP-0033 multicast service (no {feature} feature); "
                    "notifications go one per recipient",
                    service=self.setting, feature=NS_ADDRESS,
                )
                return None
            return MulticastService(self.setting, serviceLimit(info))
        domain = serverDomain(me)
        try:
            reply = await self._query(handler, domain, NS_DISCO_ITEMS)
        except Exception as e:  # noqa: BLE001 - reported, and notifications go one by one
            if not self._streams:
                return None  # disconnected: the next connection looks again
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Cannot list the services of {domain} ({reason}); notifications go one per "
                "recipient", domain=domain, reason=_reason(e),
            )
            return None
        candidates = [
            item.getAttribute("jid", "")
            for query in reply.elements(NS_DISCO_ITEMS, "query")
            for item in query.elements(NS_DISCO_ITEMS, "item")
            if not item.getAttribute("node")
        ]
        for jid in dict.fromkeys([domain, *candidates]):
            if not jid or jid == me:
                continue
            try:
                info = await self._info(handler, jid)
            except Exception as e:  # noqa: BLE001 - an item that does not answer is not it
                if not self._streams:
                    return None  # disconnected: the next connection looks again
                self.log.debug(
                    "{jid} did not answer disco#info ({reason})", jid=jid, reason=_reason(e)
                )
                continue
            if info is not None:
                return MulticastService(jid, serviceLimit(info))
        self.log.info(
            "{domain} lists no XEP-0033 multicast service; notifications go one per recipient",
            domain=domain,
        )
        return None

    async def _info(self, handler: MulticastHandler, jid: str) -> domish.Element | None:
        """
        The disco#info C{<query/>} of C{jid} if it has the multicast feature, else L{None}.
        """
        reply = await self._query(handler, jid, NS_DISCO_INFO)
        for query in reply.elements(NS_DISCO_INFO, "query"):
            for feature in query.elements(NS_DISCO_INFO, "feature"):
                if feature.getAttribute("var") == NS_ADDRESS:
                    return query
        return None

    def _query(self, handler: MulticastHandler, jid: str, namespace: str) -> Deferred[Any]:
        """
        Send a disco query of C{namespace} to C{jid} on C{handler}'s stream.

        @return: Fires with the result IQ from whichever stream it comes back on; fails with
            the stanza error, or with a timeout after L{DISCO_TIMEOUT} seconds.
        """
        from hermod_component.xmpp.notifier import quoteAttribute

        self._counter += 1
        stanzaId = f"{QUERY_PREFIX}{self._counter}"
        d: Deferred[domish.Element] = Deferred()
        clock = self.notifier.multicastFlow.clock

        def timedOut() -> None:
            self._queries.pop(stanzaId, None)
            d.errback(IQTimeout(f"no answer from {jid} in {DISCO_TIMEOUT} s"))

        self._queries[stanzaId] = (d, clock.callLater(DISCO_TIMEOUT, timedOut))
        handler.send(
            b"<iq type='get' id=" + quoteAttribute(stanzaId) + b" from="
            + quoteAttribute(self.notifier.service) + b" to=" + quoteAttribute(jid)
            + b"><query xmlns=" + quoteAttribute(namespace) + b"/></iq>"
        )
        return d

    def answered(self, iq: domish.Element) -> bool:
        """
        An answer to one of L{_query}'s queries, on any stream.

        @return: Whether it was one.
        """
        entry = self._queries.pop(iq.getAttribute("id", ""), None)
        if entry is None:
            return False
        d, timeout = entry
        if timeout.active():
            timeout.cancel()
        if iq.getAttribute("type") == "error":
            d.errback(exceptionFromStanza(iq))
        else:
            d.callback(iq)
        return True

    def refused(self, message: domish.Element) -> bool:
        """
        Handle a message the service sent back as an error: write its notification to each
        recipient it names, and stop using multicast until the next connection.

        @return: Whether C{message} was a refused multicast message of Hermod's.
        """
        sender = message.getAttribute("from", "")
        stanzaId = message.getAttribute("id", "")
        if sender not in self._used or not stanzaId.startswith(ID_PREFIX):
            return False
        recipients: list[str] = []
        content: list[bytes] = []
        condition = "undefined-condition"
        for child in message.elements():
            if child.uri == NS_ADDRESS and child.name == "addresses":
                recipients += [
                    a.getAttribute("jid", "")
                    for a in child.elements(NS_ADDRESS, "address")
                    if a.getAttribute("type") in _RECIPIENT_TYPES and a.getAttribute("jid")
                ]
            elif child.name == "error":
                for reason in child.elements():
                    if reason.name != "text":
                        condition = reason.name
                        break
            else:
                content.append(child.toXml().encode("utf-8"))
        messageType = stanzaId[len(ID_PREFIX):].rpartition("-")[0] or "headline"
        self.refusals += 1
        if self.notifier.multicast is not None and self.notifier.multicast.jid == sender:
            self.notifier.multicast = None
            self.log.error(
                "The multicast service {service} refused a notification ({condition}); it is "
                "sent to its {count} recipients one by one, and so are all notifications until "
                "the next connection", service=sender, condition=condition,
                count=len(recipients),
            )
        else:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "The multicast service {service} refused a notification ({condition}); it is "
                "sent to its {count} recipients one by one", service=sender,
                condition=condition, count=len(recipients),
            )
        self.notifier.sendEach(messageType, recipients, b"".join(content))
        return True


def _reason(e: BaseException) -> str:
    return str(getattr(e, "condition", None) or type(e).__name__)


class MulticastHandler(XMPPHandler):
    """
    The multicast part of one component stream: tells the shared L{MulticastFinder} the
    stream is up or down, and takes the refusals that arrive on it.
    """

    def __init__(self, finder: MulticastFinder) -> None:
        super().__init__()
        self.finder = finder

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/message[@type='error']", self._onError, priority=10)
        self.xmlstream.addObserver("/iq[@type='result']", self._onAnswer, priority=10)
        self.xmlstream.addObserver("/iq[@type='error']", self._onAnswer, priority=10)
        self.finder.streamUp(self)

    def connectionLost(self, reason: object) -> None:
        self.finder.notifier.multicastFlow.streamDown(self.xmlstream)
        self.finder.streamDown(self)
        super().connectionLost(reason)

    def _onAnswer(self, iq: domish.Element) -> None:
        stanzaId = iq.getAttribute("id", "")
        if stanzaId.startswith(PROBE_PREFIX):
            handled = self.finder.notifier.multicastFlow.answered(stanzaId)
        elif stanzaId.startswith(QUERY_PREFIX):
            handled = self.finder.answered(iq)
        else:
            return
        if handled:
            iq.handled = True  # type: ignore[attr-defined]

    def _onError(self, message: domish.Element) -> None:
        if self.finder.refused(message):
            message.handled = True  # type: ignore[attr-defined]


class _Window:
    """
    The multicast messages written to one stream and not yet confirmed by a probe.

    @ivar unconfirmed: Recipients of those messages.
    @ivar covered: How many of them the outstanding probe confirms.
    @ivar probe: The outstanding probe's id, or L{None}.
    @ivar holding: Whether reading is held because of this window.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.unconfirmed = 0
        self.covered = 0
        self.probe: str | None = None
        self.timeout: IDelayedCall | None = None
        self.holding = False
        self.since = 0.0


class MulticastFlow:
    """
    Backpressure for multicast messages: probes after them, and requests held while too many
    recipients' copies are unconfirmed (see the module docstring).

    @ivar holds: Times reading was held.
    """

    log = Logger()

    def __init__(
        self,
        notifier: XMPPNotifier,
        clock: IReactorTime,
        throttleFor: Callable[[Any], Any] = throttleOf,
    ) -> None:
        """
        @param throttleFor: The L{ReadThrottle} of a stream, or L{None}.
        """
        self.notifier = notifier
        self.clock = clock
        self.throttleFor = throttleFor
        self.holds = 0
        self._windows: dict[Any, _Window] = {}
        self._probes: dict[str, _Window] = {}
        self._counter = 0

    def written(self, stream: Any, service: MulticastService, recipients: int) -> None:
        """
        A multicast message for C{recipients} was fed to C{stream}: count it, hold reading
        above L{WINDOW}; L{probe} follows once the fan-out's messages are written.
        """
        window = self._windows.get(stream)
        if window is None:
            window = self._windows[stream] = _Window(stream)
        window.unconfirmed += recipients
        if window.unconfirmed >= WINDOW and not window.holding:
            throttle = self.throttleFor(stream)
            if throttle is None:
                return
            window.holding = True
            window.since = self.clock.seconds()
            self.holds += 1
            self.log.info(
                "The multicast service {service} is {count} recipients behind; requests wait "
                "until it catches up", service=service.jid, count=window.unconfirmed,
            )
            throttle.hold("multicast")

    def probe(self, stream: Any, service: MulticastService) -> None:
        """
        Ask C{service}, after what was written to C{stream}, to confirm it (unless a probe is
        outstanding there: its answer sends the next one).
        """
        window = self._windows.get(stream)
        if window is None or window.probe is not None or not window.unconfirmed:
            return
        self._counter += 1
        stanzaId = f"{PROBE_PREFIX}{self._counter}"
        window.probe = stanzaId
        window.covered = window.unconfirmed
        self._probes[stanzaId] = window
        from hermod_component.xmpp.notifier import quoteAttribute

        writeInOrder(stream, (
            b"<iq type='get' id=" + quoteAttribute(stanzaId) + b" from="
            + quoteAttribute(self.notifier.service) + b" to=" + quoteAttribute(service.jid)
            + b"><query xmlns=" + quoteAttribute(NS_DISCO_INFO) + b"/></iq>",
        ))
        window.timeout = self.clock.callLater(PROBE_TIMEOUT, self._timedOut, window, service)

    def answered(self, stanzaId: str) -> bool:
        """
        A probe's answer (result or error: either comes after what preceded the probe).

        @return: Whether C{stanzaId} was one of Hermod's probes.
        """
        window = self._probes.pop(stanzaId, None)
        if window is None:
            return stanzaId.startswith(PROBE_PREFIX)
        if window.timeout is not None and window.timeout.active():
            window.timeout.cancel()
        window.timeout = None
        window.probe = None
        window.unconfirmed -= window.covered
        window.covered = 0
        if self._windows.get(window.stream) is not window:
            return True  # its stream is gone
        service = self.notifier.multicast
        if window.unconfirmed and service is not None:
            self.probe(window.stream, service)
        if window.holding and window.unconfirmed <= WINDOW // 2:
            self._release(window)
        if not window.unconfirmed and window.probe is None:
            del self._windows[window.stream]
        return True

    def _release(self, window: _Window) -> None:
        window.holding = False
        throttle = self.throttleFor(window.stream)
        self.log.info(
            "The multicast service caught up after {seconds:.3f} s",
            seconds=self.clock.seconds() - window.since,
        )
        if throttle is not None:
            throttle.release("multicast")

    def _timedOut(self, window: _Window, service: MulticastService) -> None:
        """
        A probe went unanswered: the service is gone or stuck. Stop using it, and stop
        holding requests for it.
        """
        window.timeout = None
        if window.probe is not None:
            self._probes.pop(window.probe, None)
        if self._windows.get(window.stream) is window:
            del self._windows[window.stream]
        if window.holding:
            self._release(window)
        if self.notifier.multicast == service:
            self.notifier.multicast = None
        self.log.error(
            "The multicast service {service} did not answer a probe in {timeout} s; "
            "notifications go one per recipient until the next connection",
            service=service.jid, timeout=PROBE_TIMEOUT,
        )

    def streamDown(self, stream: Any) -> None:
        """
        C{stream} is gone: forget its window (its throttle is gone with it).
        """
        window = self._windows.pop(stream, None)
        if window is None:
            return
        if window.probe is not None:
            self._probes.pop(window.probe, None)
        if window.timeout is not None and window.timeout.active():
            window.timeout.cancel()
