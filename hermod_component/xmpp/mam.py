"""
XEP-0313 Message Archive Management on pubsub nodes, and XEP-0059 Result Set Management.

A query is addressed to the service JID with the node in the C{node} attribute of C{<query/>}
(XEP-0313 4.1). Each archived event of the node (publish, retract, purge, delete, from the
append-only event log) comes back as a C{<message><result queryid= id=/>} forwarding the
C{<message><event/></message>} a subscriber was sent, with a delay stamp of the event's time;
the IQ result then carries C{<fin complete=/>} with the RSM C{<set/>} (first, last, count). The
archive id is the event id as a decimal string, so it stays valid across restarts for as long
as the node's retention keeps the event.

Hermod partners catching up ask for pages instead: a query carrying C{<pages
xmlns='urn:xmpp:hermod:0#archive-pages'/>} (when the service advertises that feature) gets no
result messages; the publishes and retractions of the page come inside C{<fin/>}, in
C{<events/>} of that namespace, one C{<e id= item=>} per event with the item payload in base64
(or C{retract='true'}), at most L{MAX_PAGE_BYTES} of it (a shorter page is then not complete).
Such a page's RSM C{<set/>} has first and last but no count: counting scans every event of the
node's log, at every page, which made the cost of serving a page grow with the archive. The
events read for a page are as many as the node's last page suggests fit in it (see
L{PageSizes}), not the C{max} asked for, most of which the byte limit would drop.
One stanza per page instead of one per event: servers route component-to-component stanzas at a
few thousand per second, and base64 text is far cheaper to parse than the payload's elements
(or than escaped text, which the parser hands over in pieces at every entity). Plain XEP-0313
clients are served as before.

Result messages are written as bytes, like notifications: the event body is built by the same
functions as the live notification, so an archived event looks exactly like the one delivered.
"""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.words.protocols.jabber import jid
from twisted.words.xish import domish
from zope.interface import implementer

from hermod_component import errors
from hermod_component.model import ArchivePage, ArchiveQuery, Event, EventAction, Item
from hermod_component.xmpp._xmpplib import DiscoFeature, Field, Form, XMPPHandler, disco
from hermod_component.xmpp.errors import badRequest
from hermod_component.xmpp.handler import NS_MAM, _RequestHandlerMixin
from hermod_component.xmpp.notifier import (
    deleteEvent,
    itemsEvent,
    purgeEvent,
    retractEvent,
    shimHeaders,
    subIdHeaders,
)
from hermod_component.xmpp.rsm import NS_RSM, ResultSetRequest, parseResultSet, resultSetElement
from hermod_component.xmpp.serialize import quoteAttribute

NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_PAGES = "urn:xmpp:hermod:0#archive-pages"

#: The most base64 payload text in one page of events inside C{<fin/>}, so the IQ result stays
#: well under Prosody's C{component_stanza_size_limit} (512 KiB by default).
MAX_PAGE_BYTES = 256 * 1024

#: The most nodes whose payload sizes L{PageSizes} keeps.
PAGE_SIZES_KEPT = 1024

_MAM_QUERY = f'/iq[@type="set"]/query[@xmlns="{NS_MAM}"]'
_MAM_FORM = f'/iq[@type="get"]/query[@xmlns="{NS_MAM}"]'

#: The filter fields of a query form and what they become.
_FIELDS = ("start", "end", "with", "after-id", "before-id")


def stamp(when: float) -> str:
    """
    An XEP-0082 date-time in UTC with milliseconds.
    """
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parseStamp(text: str) -> float:
    """
    POSIX time of an XEP-0082 date-time; without an offset it is UTC.

    @raise StanzaError: C{bad-request} when C{text} is not a date-time.
    """
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise badRequest(text=f"not a date-time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def eventBody(event: Event) -> bytes:
    """
    The serialized C{<event/>} a subscriber was sent for C{event}, followed by the SHIM
    C{<headers/>} of a published item that had some, as in the live notification.
    """
    if event.action is EventAction.PUBLISH:
        item = Item(event.itemId or "", event.payload, event.publisher, event.time)
        body = itemsEvent(event.node, [item], True)
        if event.headers:
            body += subIdHeaders((), shimHeaders(event.headers))
        return body
    if event.action is EventAction.RETRACT:
        return retractEvent(event.node, [event.itemId or ""])
    if event.action is EventAction.PURGE:
        return purgeEvent(event.node)
    return deleteEvent(event.node, None)


def resultMessages(
    service: str, recipient: str, queryId: str | None, events: Sequence[Event]
) -> bytes:
    """
    The C{<message><result/></message>} stanzas of a page, serialized, in order.

    This is the archive's hot path: the parts shared by a page (envelope, node, stamps of the
    same second, publishers) are serialized once; a published event's body is exactly what
    L{itemsEvent} makes for a notification with payload, with the item's SHIM C{<headers/>}
    after it as the notifier writes them (the other actions use L{eventBody}).
    """
    head = b"<message from=" + quoteAttribute(service) + b" to=" + quoteAttribute(recipient)
    head += b"><result xmlns=" + quoteAttribute(NS_MAM)
    if queryId is not None:
        head += b" queryid=" + quoteAttribute(queryId)
    head += b' id="'
    middle = (
        b'"><forwarded xmlns="' + NS_FORWARD.encode() + b'"><delay xmlns="'
        + NS_DELAY.encode() + b'" stamp="'
    )
    inner = (
        b'"/><message xmlns="jabber:client" from=' + quoteAttribute(service)
        + b' type="headline">'
    )
    tail = b"</message></forwarded></result></message>"
    itemsOpen: dict[str, bytes] = {}
    publishers: dict[str, bytes] = {}
    seconds: dict[int, bytes] = {}
    parts: list[bytes] = []
    append = parts.append
    for event in events:
        whole = int(event.time)
        prefix = seconds.get(whole)
        if prefix is None:
            prefix = seconds[whole] = time.strftime(
                "%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)
            ).encode()
        millis = int((event.time - whole) * 1000)
        append(head)
        append(str(event.eventId).encode())
        append(middle)
        append(prefix + b"%03dZ" % min(millis, 999))
        append(inner)
        if event.action is EventAction.PUBLISH:
            opening = itemsOpen.get(event.node)
            if opening is None:
                opening = itemsOpen[event.node] = (
                    b'<event xmlns="http://jabber.org/protocol/pubsub#event"><items node='
                    + quoteAttribute(event.node) + b"><item id="
                )
            append(opening)
            append(quoteAttribute(event.itemId or ""))
            if event.publisher:
                quoted = publishers.get(event.publisher)
                if quoted is None:
                    quoted = publishers[event.publisher] = b" publisher=" + quoteAttribute(
                        event.publisher
                    )
                append(quoted)
            if event.payload:
                append(b">")
                append(event.payload)
                append(b"</item></items></event>")
            else:
                append(b"/></items></event>")
            if event.headers:
                append(subIdHeaders((), shimHeaders(event.headers)))
        else:
            append(eventBody(event))
        append(tail)
    return b"".join(parts)


def pageEvents(events: Sequence[Event], limit: int | None = None) -> tuple[int, bytes]:
    """
    The C{<events xmlns='urn:xmpp:hermod:0#archive-pages'/>} of a page, serialized: its
    publishes and retractions in order (purges and deletes tell a replica nothing), stopping
    before the event that would pass C{limit} (default L{MAX_PAGE_BYTES}) bytes of payload
    text (never before the first).

    @return: How many of C{events} it covers, and the element.
    """
    if limit is None:
        limit = MAX_PAGE_BYTES
    parts = [b'<events xmlns="' + NS_PAGES.encode() + b'">']
    size = 0
    taken = 0
    for event in events:
        if event.action is EventAction.PUBLISH:
            text = base64.b64encode(event.payload or b"")
            if taken and size + len(text) > limit:
                break
            size += len(text)
            parts.append(b'<e id="%d" item=' % event.eventId + quoteAttribute(event.itemId or ""))
            parts.append(b">" + text + b"</e>")
        elif event.action is EventAction.RETRACT:
            parts.append(b'<e id="%d" item=' % event.eventId + quoteAttribute(event.itemId or ""))
            parts.append(b' retract="true"/>')
        taken += 1
    parts.append(b"</events>")
    return taken, b"".join(parts)


def queryForm() -> Form:
    """
    The query form a client may fill in (XEP-0313 4.1.1).
    """
    form = Form("form", formNamespace=NS_MAM)
    form.addField(Field("jid-single", "with", label="Published by"))
    form.addField(Field("text-single", "start", label="From this time"))
    form.addField(Field("text-single", "end", label="Until this time"))
    form.addField(Field("text-single", "after-id", label="After this archive id"))
    form.addField(Field("text-single", "before-id", label="Before this archive id"))
    return form


def parseQuery(query: domish.Element) -> tuple[str | None, ArchiveQuery]:
    """
    The node and the L{ArchiveQuery} of a C{<query xmlns='urn:xmpp:mam:2'/>}.

    @raise StanzaError: C{bad-request} for a form of another type or namespace, an unknown
        field or a malformed value.
    """
    values: dict[str, str] = {}
    for form in query.elements(NS_DATA, "x"):
        parsed = Form.fromElement(form)
        if parsed.formNamespace not in (None, NS_MAM):
            raise badRequest(text="the query form must be of FORM_TYPE urn:xmpp:mam:2")
        for field in parsed.fieldList:
            if field.var in (None, "FORM_TYPE"):
                continue
            if field.var not in _FIELDS:
                raise badRequest(text=f"unsupported query field {field.var}")
            given = [str(value) for value in field.values]
            if len(given) > 1:
                raise badRequest(text=f"{field.var} takes one value")
            if given and given[0].strip():
                values[field.var] = given[0].strip()
    rsm = parseResultSet(query) or ResultSetRequest()
    publisher = values.get("with")
    if publisher is not None:
        try:
            publisher = jid.internJID(publisher).full()
        except jid.InvalidFormat:
            raise badRequest(text=f"malformed JID {publisher!r}") from None
    return query.getAttribute("node") or None, ArchiveQuery(
        start=parseStamp(values["start"]) if "start" in values else None,
        end=parseStamp(values["end"]) if "end" in values else None,
        publisher=publisher,
        afterId=values.get("after-id"),
        beforeId=values.get("before-id"),
        maxResults=rsm.maxResults,
        after=rsm.after or None,
        before=rsm.before,
    )


class PageSizes:
    """
    How many events to read for a page of archive events (L{pageEvents}) on a node: as many as
    the node's last page suggests fit in L{MAX_PAGE_BYTES}, with a margin, so that a page of
    large items does not read many events the byte limit then drops. A page that comes out
    shorter than the limit is not complete, and the partner asks for the next.
    """

    #: Events read beyond the estimate, as a fraction of it.
    MARGIN = 0.25

    def __init__(self) -> None:
        #: Per node, the bytes of its last page per event, the node served last at the end.
        self._perEvent: dict[str, float] = {}

    def toRead(self, node: str, asked: int) -> int:
        """
        How many of the C{asked} events to read for a page of C{node}.
        """
        perEvent = self._perEvent.get(node)
        if not perEvent:
            return asked
        return max(1, min(asked, int(MAX_PAGE_BYTES / perEvent * (1 + self.MARGIN)) + 1))

    def served(self, node: str, size: int, events: int) -> None:
        """
        A page of C{node} was C{size} bytes of text (L{pageEvents}) for C{events} events.
        """
        if events <= 0:
            return
        self._perEvent.pop(node, None)
        self._perEvent[node] = size / events
        if len(self._perEvent) > PAGE_SIZES_KEPT:
            del self._perEvent[next(iter(self._perEvent))]


async def readPage(
    policy: Any, sizes: PageSizes, requester: str, node: str, query: ArchiveQuery
) -> tuple[ArchivePage, int, bytes]:
    """
    One page of archive events as a query carrying C{<pages/>} gets it: read without a
    count, as many events as C{sizes} suggests fit, and serialized by L{pageEvents}.

    @return: The page read, how many of its events the serialized C{<events/>} holds, and
        that element.
    """
    query = attrs.evolve(
        query, withCount=False, maxResults=sizes.toRead(node, policy.pageSize(query.maxResults))
    )
    page: ArchivePage = await policy.archive(requester, node, query)
    taken, body = pageEvents(page.events)
    sizes.served(node, len(body), taken)
    return page, taken, body


@implementer(disco.IDisco)
class ArchiveHandler(_RequestHandlerMixin, XMPPHandler):
    """
    Answers XEP-0313 queries of a node's archive; advertises RSM on the service.

    @ivar policy: The L{hermod_component.policy.PubSubPolicy} answering L{archive} queries.
    """

    log = Logger()
    iqHandlers: ClassVar[dict[str, str]] = {_MAM_QUERY: "_onQuery", _MAM_FORM: "_onForm"}

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy
        self.pageSizes = PageSizes()

    def connectionInitialized(self) -> None:
        """
        Listen for archive queries.
        """
        self.xmlstream.addObserver(_MAM_QUERY, self.handleRequest)
        self.xmlstream.addObserver(_MAM_FORM, self.handleRequest)

    def _onForm(self, iq: domish.Element) -> domish.Element:
        query = domish.Element((NS_MAM, "query"))
        query.addChild(queryForm().toElement())
        return query

    def _onQuery(self, iq: domish.Element) -> Deferred[domish.Element]:
        return Deferred.fromCoroutine(self._query(iq))

    async def _query(self, iq: domish.Element) -> domish.Element:
        node, query = parseQuery(iq.query)
        if not node:
            raise errors.ItemNotFound("this service archives its nodes: name one with node=")
        requester = jid.internJID(iq["from"]).full()
        body: bytes | None = None
        if any(iq.query.elements(NS_PAGES, "pages")):
            page, taken, body = await readPage(
                self.policy, self.pageSizes, requester, node, query
            )
            events, complete = page.events, page.complete
            if taken < len(events):
                events, complete = events[:taken], False
        else:
            page = await self.policy.archive(requester, node, query)
            events, complete = page.events, page.complete
        if body is None and events:
            self.send(
                resultMessages(
                    self.policy.service, requester, iq.query.getAttribute("queryid"), events
                )
            )
        fin = domish.Element((NS_MAM, "fin"))
        if complete:
            fin["complete"] = "true"
        first = str(events[0].eventId) if events else None
        last = str(events[-1].eventId) if events else None
        fin.addChild(resultSetElement(first, last, page.count))
        if body is not None:
            fin.addRawXml(body.decode("utf-8"))
        return fin

    def getDiscoInfo(
        self, requestor: jid.JID, target: jid.JID, nodeIdentifier: str = ""
    ) -> Deferred[list[Any]]:
        """
        RSM and archive pages (L{NS_PAGES}) on the service. (Nodes advertise
        C{urn:xmpp:mam:2} with their meta-data, from the pubsub handler, which knows whether
        the node exists.)
        """
        return succeed([] if nodeIdentifier else [DiscoFeature(NS_RSM), DiscoFeature(NS_PAGES)])

    def getDiscoItems(
        self, requestor: jid.JID, target: jid.JID, nodeIdentifier: str = ""
    ) -> Deferred[list[Any]]:
        """
        No items of its own.
        """
        return succeed([])
