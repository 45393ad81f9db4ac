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
 - B{Order.} While a node's subscribers stay the same, each subscriber gets a node's
   notifications through the same path (the same multicast stanza position, or its own
   message) and so in order; a notification sent just as the subscriber set changes may
   overtake the one before it on the other path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from hermod_component.xmpp._xmpplib import XMPPHandler, generic

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


class _Query(generic.Request):
    """
    A disco IQ of the multicast search.
    """

    def __init__(self, recipient: str, sender: str, namespace: str) -> None:
        generic.Request.__init__(self, JID(recipient), JID(sender), "get")
        self.namespace = namespace
        self.timeout = DISCO_TIMEOUT

    def toElement(self) -> domish.Element:
        element: domish.Element = generic.Request.toElement(self)
        element.addElement((self.namespace, "query"))
        return element


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
            reply = await handler.request(_Query(domain, me, NS_DISCO_ITEMS))
        except Exception as e:  # noqa: BLE001 - reported, and notifications go one by one
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
        reply = await handler.request(_Query(jid, self.notifier.service, NS_DISCO_INFO))
        for query in reply.elements(NS_DISCO_INFO, "query"):
            for feature in query.elements(NS_DISCO_INFO, "feature"):
                if feature.getAttribute("var") == NS_ADDRESS:
                    return query
        return None

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
        self.finder.streamUp(self)

    def connectionLost(self, reason: object) -> None:
        self.finder.streamDown(self)
        super().connectionLost(reason)

    def _onError(self, message: domish.Element) -> None:
        if self.finder.refused(message):
            message.handled = True  # type: ignore[attr-defined]
