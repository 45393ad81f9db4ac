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
   error (RFC 6120 8.3.1). Hermod keeps a copy of each multicast message until a probe (below)
   confirms it, writes the refused notification from that copy to each of its recipients,
   logs the refusal, and stops using multicast until the next connection. (A refusal of a
   message another Hermod on the same JID sent is resent from the content the error carries
   back, as ejabberd includes it.) Notifications already on their way through the service
   when it refused may still be refused after later ones went out directly: those few then
   arrive out of order.
 - B{Backpressure.} The service queues the copies of a message inside the server, out of
   reach of the TCP flow control that holds Hermod back when the server reads slowly. After
   multicast messages Hermod sends the service a disco#info probe on the same stream; the
   service answers IQs in the same queue as messages, so its answer means everything written
   before the probe has been routed on. While more than L{WINDOW} recipients' copies on one
   stream are unconfirmed, the IQ requests Hermod reads wait unhandled
   (L{ReadThrottle.hold}: it keeps reading, to see the probe's answer), until fewer than half
   of it are. A probe unanswered L{PROBE_TIMEOUT} seconds after it was written (its answer
   may have been routed to another Hermod on the same JID) counts as answered, so no hold
   outlasts it. Notifications that do not come from requests (a replication backend's
   changes, digests) are not held back.
 - B{Spoofing.} The ids of queries, probes and multicast messages carry a random token of
   the process; answers count only from the JID asked, so nobody else can make Hermod take
   their JID for the service or lift a hold.
 - B{Order.} While a node's subscribers stay the same, each subscriber gets a node's
   notifications through the same path (the same multicast stanza position, or its own
   message) and so in order; a notification sent just as the subscriber set changes may
   overtake the one before it on the other path.
"""

from __future__ import annotations

import itertools
import secrets
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
from hermod_component.xmpp.serialize import quoteAttribute

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

#: The C{id} prefix of everything multicast sends: messages, probes and disco queries.
ID_PREFIX = "hermod-multicast-"

#: The C{id} prefix of multicast messages (a random token and a counter follow: see
#: L{newToken}).
MESSAGE_PREFIX = f"{ID_PREFIX}msg-"

#: Unconfirmed multicast recipients on one stream at which Hermod stops reading requests.
WINDOW = 10_000

#: Seconds after its probe is written without an answer at which the copies it covers are
#: taken as sent (the hold they cause ends; the service stays in use).
PROBE_TIMEOUT = 30.0

#: The C{id} prefix of probes (a token and a counter follow).
PROBE_PREFIX = f"{ID_PREFIX}probe-"

#: The C{id} prefix of the disco queries looking for the service. With several connections
#: the server may route an answer to another stream than its request's, so the answers are
#: matched by id on every stream, not by the stream's own IQ tracking.
QUERY_PREFIX = f"{ID_PREFIX}disco-"


def newToken() -> str:
    """
    The random part of the ids of one finder's queries or one flow's probes and messages:
    unguessable, so that nobody can answer a query or a probe in the service's place by
    guessing its id, and different in each Hermod sharing one component JID (the server may
    route one's answers to another).
    """
    return secrets.token_hex(6)

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
    recipients: Sequence[str],
    content: bytes,
    ids: Iterator[str],
) -> Iterator[tuple[str, Sequence[str], bytes]]:
    """
    The multicast messages carrying C{content} to C{recipients}, L{MulticastService.limit}
    recipients each, as C{bcc} addresses, each with an C{id} of its own (the server keeps it
    on every copy).

    @param head: C{<message from=... type=...} with a trailing space and no C{to}.
    @param content: The serialized children every recipient gets.
    @param ids: Gives each message's id (L{MulticastFlow.messageIds}).
    @return: C{(id, its recipients, message)} for each message.
    """
    to = b"to=" + quoteAttribute(service.jid) + b" id="
    opening = b"><addresses xmlns=" + quoteAttribute(NS_ADDRESS) + b">"
    limit = service.limit
    for start in range(0, len(recipients), limit):
        chunk = recipients[start:start + limit]
        addresses = b"".join(
            b"<address type='bcc' jid=" + quoteAttribute(recipient) + b"/>"
            for recipient in chunk
        )
        stanzaId = next(ids)
        yield stanzaId, chunk, (
            head + to + quoteAttribute(stanzaId) + opening
            + addresses + b"</addresses>" + content + b"</message>"
        )


def discoQuery(stanzaId: str, sender: str, recipient: str, namespace: str) -> bytes:
    """
    An empty disco query of C{namespace} (disco#info or disco#items), serialized.
    """
    return (
        b"<iq type='get' id=" + quoteAttribute(stanzaId) + b" from=" + quoteAttribute(sender)
        + b" to=" + quoteAttribute(recipient) + b"><query xmlns=" + quoteAttribute(namespace)
        + b"/></iq>"
    )


def _sameJID(a: str, b: str) -> bool:
    return a.lower() == b.lower()


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
        self._queries: dict[str, tuple[Deferred[domish.Element], IDelayedCall, str]] = {}
        self._counter = 0
        self._prefix = f"{QUERY_PREFIX}{newToken()}-"
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
            for d, timeout, _ in queries.values():
                if timeout.active():
                    timeout.cancel()
                d.errback(ConnectionLost("no component stream is up"))

    async def _search(self, handler: MulticastHandler) -> None:
        try:
            service = await self._find(handler)
        finally:
            self._searching = False
        if not self._streams:
            return  # disconnected meanwhile; the next connection looks again
        if service is None:
            return
        if service.limit < MIN_RECIPIENTS:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "The multicast service {service} takes {limit} recipient per message: no "
                "better than one message each, so it is not used", service=service.jid,
                limit=service.limit,
            )
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
        self._counter += 1
        stanzaId = f"{self._prefix}{self._counter}"
        d: Deferred[domish.Element] = Deferred()
        clock = self.notifier.multicastFlow.clock

        def timedOut() -> None:
            self._queries.pop(stanzaId, None)
            d.errback(IQTimeout(f"no answer from {jid} in {DISCO_TIMEOUT} s"))

        self._queries[stanzaId] = (d, clock.callLater(DISCO_TIMEOUT, timedOut), jid)
        handler.send(discoQuery(stanzaId, self.notifier.service, jid, namespace))
        return d

    def answered(self, iq: domish.Element) -> bool:
        """
        An answer to one of L{_query}'s queries, on any stream, from the JID asked.

        @return: Whether it was one.
        """
        stanzaId = iq.getAttribute("id", "")
        entry = self._queries.get(stanzaId)
        if entry is None or not _sameJID(iq.getAttribute("from", ""), entry[2]):
            return False
        del self._queries[stanzaId]
        d, timeout, _ = entry
        if timeout.active():
            timeout.cancel()
        if iq.getAttribute("type") == "error":
            d.errback(exceptionFromStanza(iq))
        else:
            d.callback(iq)
        return True

    def refused(self, message: domish.Element) -> bool:
        """
        Handle a multicast message the service sent back as an error: write its notification
        to each of its recipients, and stop using multicast until the next connection.

        The notification comes from Hermod's own copy (kept until a probe confirms the
        message); a refusal of a message of another Hermod on the same JID, which has none
        here, is resent from the content the error carries back.

        @return: Whether C{message} was a refused multicast message.
        """
        sender = message.getAttribute("from", "")
        stanzaId = message.getAttribute("id", "")
        if not stanzaId.startswith(ID_PREFIX):
            return False
        condition = "undefined-condition"
        for child in message.elements():
            if child.name == "error":
                for reason in child.elements():
                    if reason.name != "text":
                        condition = reason.name
                        break
        copy = self.notifier.multicastFlow.refused(stanzaId, sender)
        if copy is not None:
            messageType, recipients, content = copy
        elif any(_sameJID(sender, used) for used in self._used):
            messageType, recipients = "headline", []
            parts: list[bytes] = []
            for child in message.elements():
                if child.uri == NS_ADDRESS and child.name == "addresses":
                    recipients += [
                        a.getAttribute("jid", "")
                        for a in child.elements(NS_ADDRESS, "address")
                        if a.getAttribute("type") in _RECIPIENT_TYPES and a.getAttribute("jid")
                    ]
                elif child.name != "error":
                    parts.append(child.toXml().encode("utf-8"))
            content = b"".join(parts)
        else:
            return False
        self.refusals += 1
        current = self.notifier.multicast
        if current is not None and _sameJID(current.jid, sender):
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
        if not recipients or not content:
            self.log.error(
                "A refused multicast message {id} carries no {what} back and Hermod has no "
                "copy of it: its notification is lost", id=stanzaId,
                what="recipients" if not recipients else "content",
            )
            return True
        self.notifier.sendEach(messageType, recipients, content)
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
            handled = self.finder.notifier.multicastFlow.answered(iq)
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

    @ivar service: The service they were sent to (probes go there, even once multicast is
        off, until everything written is confirmed).
    @ivar pending: C{(id, recipients)} of those messages, in the order written.
    @ivar unconfirmed: Their recipients.
    @ivar covered: How many of L{pending} the outstanding probe confirms.
    @ivar probe: The outstanding probe's id, or L{None}.
    @ivar holding: Whether requests are held because of this window.
    """

    def __init__(self, stream: Any, service: MulticastService) -> None:
        self.stream = stream
        self.service = service
        self.pending: list[tuple[str, int]] = []
        self.unconfirmed = 0
        self.covered = 0
        self.probe: str | None = None
        self.timeout: IDelayedCall | None = None
        self.holding = False
        self.since = 0.0


class MulticastFlow:
    """
    Backpressure for multicast messages: probes after them, and requests held while too many
    recipients' copies are unconfirmed (see the module docstring). Keeps a copy of each
    unconfirmed message, to resend it if the service refuses it.

    @ivar holds: Times requests were held.
    @ivar timeouts: Probes taken as answered after L{PROBE_TIMEOUT}.
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
        self.timeouts = 0
        self._windows: dict[Any, _Window] = {}
        self._probes: dict[str, _Window] = {}
        #: Per unconfirmed message id: its window, type, recipients and content.
        self._copies: dict[str, tuple[_Window, str, Sequence[str], bytes]] = {}
        self._counter = 0
        token = newToken()
        self._probePrefix = f"{PROBE_PREFIX}{token}-"
        #: The ids of this flow's multicast messages, for L{multicastMessages}.
        self.messageIds = (f"{MESSAGE_PREFIX}{token}-{n}" for n in itertools.count(1))

    def written(
        self,
        stream: Any,
        service: MulticastService,
        stanzaId: str,
        messageType: str,
        recipients: Sequence[str],
        content: bytes,
    ) -> None:
        """
        A multicast message was fed to C{stream}: keep its copy, count it, hold requests
        above L{WINDOW}; L{probe} follows once the fan-out's messages are written.
        """
        window = self._windows.get(stream)
        if window is None:
            window = self._windows[stream] = _Window(stream, service)
        window.service = service
        window.pending.append((stanzaId, len(recipients)))
        self._copies[stanzaId] = (window, messageType, recipients, content)
        window.unconfirmed += len(recipients)
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

    def probe(self, stream: Any) -> None:
        """
        Ask the service, after what was written to C{stream}, to confirm it (unless a probe
        is outstanding there: its answer sends the next one). The probe's timeout starts
        when the stream takes it, not while it waits behind a full buffer.
        """
        window = self._windows.get(stream)
        if window is None or window.probe is not None or not window.pending:
            return
        self._counter += 1
        stanzaId = f"{self._probePrefix}{self._counter}"
        window.probe = stanzaId
        window.covered = len(window.pending)
        self._probes[stanzaId] = window
        data = discoQuery(stanzaId, self.notifier.service, window.service.jid, NS_DISCO_INFO)

        def taken() -> Iterator[bytes]:
            if window.probe == stanzaId:
                window.timeout = self.clock.callLater(
                    PROBE_TIMEOUT, self._timedOut, window, stanzaId
                )
            yield data

        writeInOrder(stream, taken())

    def answered(self, iq: domish.Element) -> bool:
        """
        A probe's answer (result or error: either comes after what preceded the probe).

        @return: Whether C{iq} answers one of this process's probes, from its service.
        """
        stanzaId = iq.getAttribute("id", "")
        window = self._probes.get(stanzaId)
        if window is None or not _sameJID(iq.getAttribute("from", ""), window.service.jid):
            return False
        self._confirm(window, stanzaId)
        return True

    def refused(
        self, stanzaId: str, sender: str
    ) -> tuple[str, Sequence[str], bytes] | None:
        """
        The service sent multicast message C{stanzaId} back: its type, recipients and
        content, if it is this process's and C{sender} is the service it went to.
        """
        entry = self._copies.get(stanzaId)
        if entry is None or not _sameJID(sender, entry[0].service.jid):
            return None
        del self._copies[stanzaId]
        _, messageType, recipients, content = entry
        return messageType, recipients, content

    def _confirm(self, window: _Window, stanzaId: str) -> None:
        """
        Probe C{stanzaId} is answered (or timed out): what it covers is sent.
        """
        del self._probes[stanzaId]
        if window.timeout is not None and window.timeout.active():
            window.timeout.cancel()
        window.timeout = None
        window.probe = None
        done, window.pending = window.pending[:window.covered], window.pending[window.covered:]
        window.covered = 0
        for messageId, count in done:
            window.unconfirmed -= count
            self._copies.pop(messageId, None)
        if self._windows.get(window.stream) is not window:
            return  # its stream is gone
        if window.pending:
            self.probe(window.stream)
        if window.holding and window.unconfirmed <= WINDOW // 2:
            self._release(window)
        if not window.pending:
            del self._windows[window.stream]

    def _release(self, window: _Window) -> None:
        window.holding = False
        throttle = self.throttleFor(window.stream)
        self.log.info(
            "The multicast service caught up after {seconds:.3f} s",
            seconds=self.clock.seconds() - window.since,
        )
        if throttle is not None:
            throttle.release("multicast")

    def _timedOut(self, window: _Window, stanzaId: str) -> None:
        """
        A probe went unanswered for L{PROBE_TIMEOUT} seconds after it was written: take what
        it covers as sent, so that no hold outlasts a lost answer (another Hermod on the same
        JID may have been given it), and go on with the next probe.
        """
        window.timeout = None
        if self._probes.get(stanzaId) is not window:
            return
        self.timeouts += 1
        self.log.warn(  # noqa: G010 - twisted.logger has no warning()
            "The multicast service {service} did not answer a probe in {timeout} s; the "
            "copies before it are taken as sent", service=window.service.jid,
            timeout=PROBE_TIMEOUT,
        )
        self._confirm(window, stanzaId)

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
        for messageId, _ in window.pending:
            self._copies.pop(messageId, None)
