"""
The subscriber side on the wire: subscribe, as the component, to partner Hermods' nodes, catch up
on what was missed, and hand their notifications to the engine.

Catch-up per subscription runs at every (re)connection: when the partner advertises
C{urn:xmpp:mam:2} (XEP-0313 on the pubsub node), its archive is queried after the saved mark and
paged with XEP-0059 (in Hermod's archive pages, one stanza per page, when the partner's service
advertises C{urn:xmpp:hermod:0#archive-pages}; in standard result messages otherwise); when it
does not, or the mark is no longer in the archive, the node's current
items are paged ("refresh") and the engine applies only the versions newer than its own.

Retractions (live or archived) tell the engine that an object left a partner node. A refresh
sees only current items, so it cannot learn of retractions missed while away; Hermod partners
keep an archive, so catch-up between Hermods goes through it.

Partners found at run time (L{hermod_component.replication.discovery}) are followed through
L{PartnerLink.follow}.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from hermod_component.config import PartnerSettings
from hermod_component.replication.engine import Received, ReplicationEngine
from hermod_component.xmpp._xmpplib import NS_PUBSUB, NS_PUBSUB_EVENT, XMPPHandler, generic

T = TypeVar("T")

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
#: Hermod's archive pages: a page of events inside the query's C{<fin/>}
#: (L{hermod_component.xmpp.mam}), asked of partners whose service advertises it.
NS_PAGES = "urn:xmpp:hermod:0#archive-pages"

#: Items asked for per archive page: the most a Hermod partner returns in one page (each
#: archived item comes in a message of its own).
PAGE_SIZE = 1000

#: Items asked for per refresh page: these all come in one IQ result, which must stay under
#: the server's stanza limit (512 KiB on Prosody) for the partner.
REFRESH_PAGE_SIZE = 100

#: Seconds between the progress lines a long archive catch-up logs.
PROGRESS_INTERVAL = 10.0


class _Request(generic.Request):
    """
    An IQ request with one ready-made child element.
    """

    def __init__(self, recipient: str, sender: str, stanzaType: str, child: domish.Element,
                 timeout: float | None) -> None:
        generic.Request.__init__(self, JID(recipient), JID(sender), stanzaType)
        self.child = child
        self.timeout = timeout

    def toElement(self) -> domish.Element:
        element: domish.Element = generic.Request.toElement(self)
        element.addChild(self.child)
        return element


def _payloadOf(item: domish.Element) -> bytes | None:
    for child in item.elements():
        return str(child.toXml()).encode("utf-8")
    return None


def _unlessFailed(page: Deferred[T], applying: Deferred[None] | None) -> Deferred[T]:
    """
    C{page}'s result, or the failure of C{applying} if it fails first: a catch-up whose
    applied page failed ends at once, not when the next page arrives (whose result, coming
    later, is dropped then).
    """
    if applying is None:
        return page
    first: Deferred[T] = Deferred()

    def fromPage(result: T | Failure) -> None:
        if not first.called:
            if isinstance(result, Failure):
                first.errback(result)
            else:
                first.callback(result)

    def fromApplying(result: object) -> object:
        if isinstance(result, Failure) and not first.called:
            first.errback(result)
        return result

    page.addBoth(fromPage)
    applying.addBoth(fromApplying)
    return first


def _rsm(maximum: int, after: str | None = None, before: bool = False) -> domish.Element:
    rsm = domish.Element((NS_RSM, "set"))
    rsm.addElement("max", content=str(maximum))
    if after:
        rsm.addElement("after", content=after)
    if before:
        rsm.addElement("before")
    return rsm


class PartnerLink(XMPPHandler):
    """
    One handler on the component stream for every configured partner subscription.

    @ivar catchUps: Per C{(partner, node)}, how the last catch-up ran: C{"mam"} or
        C{"refresh"}, for tests and the operator.
    """

    log = Logger()

    def __init__(self, engine: ReplicationEngine, pageSize: int = PAGE_SIZE,
                 timeout: float = 60.0) -> None:
        XMPPHandler.__init__(self)
        self.engine = engine
        self.pageSize = pageSize
        self.refreshPageSize = min(pageSize, REFRESH_PAGE_SIZE)
        self.timeout = timeout
        self.catchUps: dict[tuple[str, str], str] = {}
        #: The first wait before subscribing again after a failure; doubled at each further
        #: failure of the same subscription up to C{maxRetryDelay}.
        self.retryDelay = 0.5
        self.maxRetryDelay = 30.0
        self._failures: dict[tuple[str, str], int] = {}
        self.checkpointInterval = 5.0
        #: Per archive query id, what came: archive id, item id, payload (L{None}: retracted).
        self._archived: dict[str, list[tuple[str, str, bytes | None]]] = {}
        self._queries = 0
        #: Partner services that serve archive pages (L{NS_PAGES}), by JID.
        self._paged: dict[str, bool] = {}
        #: Partner subscriptions catching up again after their live items failed.
        self._recovering: set[tuple[str, str]] = set()
        #: Partner subscriptions removed while disconnected: unsubscribed at the next
        #: connection.
        self._unsubscribeLater: list[PartnerSettings] = []
        #: Called with a partner subscription once L{unfollow} has ended it at the partner.
        self.onUnsubscribed: Callable[[PartnerSettings], object] | None = None

    # -- stream ------------------------------------------------------------------------------

    def connectionInitialized(self) -> None:
        """
        Watch for notifications and archive results, then subscribe and catch up.
        """
        self.xmlstream.addObserver(
            f"/message/event[@xmlns='{NS_PUBSUB_EVENT}']", self._onEvent
        )
        self.xmlstream.addObserver(f"/message/result[@xmlns='{NS_MAM}']", self._onArchived)
        self._paged = {}  # a partner may have been upgraded or replaced meanwhile
        later, self._unsubscribeLater = self._unsubscribeLater, []
        for partner in later:
            if not self._following(partner):  # not discovered again meanwhile
                self.unfollow(partner)
        for partner in self.engine.partners:
            self._start(partner, self.xmlstream)

    def follow(self, partner: PartnerSettings) -> None:
        """
        Subscribe to a partner subscription added to the engine at run time, and catch up,
        retrying like the configured ones; nothing happens while disconnected (the next
        connection starts every subscription of the engine).
        """
        self._start(partner, self.xmlstream)

    def unfollow(self, partner: PartnerSettings) -> None:
        """
        Unsubscribe from a partner subscription removed from the engine at run time (its
        retries, archive checkpoints and catch-up stop by themselves); while disconnected,
        at the next connection, unless it was added again meanwhile.
        """
        if self.xmlstream is None:
            self._unsubscribeLater.append(partner)
            return
        pubsub = domish.Element((NS_PUBSUB, "pubsub"))
        unsubscribe = pubsub.addElement("unsubscribe")
        unsubscribe["node"] = partner.node
        unsubscribe["jid"] = self.engine.jid
        d = self._request(partner.jid, "set", pubsub)

        def done(_: object) -> None:
            self.log.info(
                "Unsubscribed from {partner} {node}", partner=partner.jid, node=partner.node
            )
            if self.onUnsubscribed is not None:
                self.onUnsubscribed(partner)

        def failed(f: Failure) -> None:
            condition = getattr(f.value, "condition", None)
            if condition in ("item-not-found", "unexpected-request"):
                # The node is gone, or there is no subscription to end: none remains.
                done(None)
                return
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Unsubscribing from {partner} {node} failed ({reason})",
                partner=partner.jid, node=partner.node,
                reason=condition or type(f.value).__name__,
            )

        d.addCallbacks(done, failed)

    def _following(self, partner: PartnerSettings) -> bool:
        return self.engine.partnerFor(partner.jid, partner.node) is not None

    def _start(self, partner: PartnerSettings, stream: Any) -> None:
        if stream is None or stream is not self.xmlstream:
            return  # disconnected since; the next connection starts again
        if not self._following(partner):
            return  # removed since (its contact went)
        d = Deferred.fromCoroutine(self.startPartner(partner))
        d.addCallback(lambda _: self._failures.pop((partner.jid, partner.node), None))
        d.addErrback(self._failed, partner, stream)

    def _failed(self, failure: Failure, partner: PartnerSettings, stream: Any) -> None:
        key = (partner.jid, partner.node)
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(self.maxRetryDelay, self.retryDelay * 2 ** (failures - 1))
        if failure.check(StanzaError):
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Subscribing to {partner} {node} failed ({condition}); again in {delay}s",
                partner=partner.jid, node=partner.node,
                condition=getattr(failure.value, "condition", ""), delay=delay,
            )
        else:
            self.log.failure(
                "Subscribing to {partner} {node} failed", failure,
                partner=partner.jid, node=partner.node,
            )
        self.engine.clock.callLater(delay, self._start, partner, stream)

    def _request(self, partner: str, stanzaType: str, child: domish.Element) -> Deferred[Any]:
        d: Deferred[Any] = self.request(
            _Request(partner, self.engine.jid, stanzaType, child, self.timeout)
        )
        return d

    # -- notifications -----------------------------------------------------------------------

    def _onEvent(self, message: domish.Element) -> None:
        sender = JID(message.getAttribute("from", "")).userhost()
        for event in message.elements(NS_PUBSUB_EVENT, "event"):
            for items in event.elements(NS_PUBSUB_EVENT, "items"):
                partner = self.engine.partnerFor(sender, items.getAttribute("node", ""))
                if partner is None:
                    continue
                received = self._items(partner, items.elements(NS_PUBSUB_EVENT, "item"))
                received += self._retractions(partner, items)
                if received:
                    message.handled = True  # type: ignore[attr-defined]
                    self.engine.receive(received).addErrback(self._liveFailed, partner)

    def _items(self, partner: PartnerSettings, elements: Any) -> list[Received]:
        received = []
        for item in elements:
            itemId = item.getAttribute("id")
            payload = _payloadOf(item)
            if itemId and payload is not None:
                received.append(Received(partner, itemId, payload))
        return received

    def _retractions(self, partner: PartnerSettings, items: domish.Element) -> list[Received]:
        return [
            Received(partner, itemId, b"", retracted=True)
            for retract in items.elements(NS_PUBSUB_EVENT, "retract")
            if (itemId := retract.getAttribute("id"))
        ]

    def _onArchived(self, message: domish.Element) -> None:
        for result in message.elements(NS_MAM, "result"):
            queryId = result.getAttribute("queryid", "")
            collected = self._archived.get(queryId)
            if collected is None:
                continue
            message.handled = True  # type: ignore[attr-defined]
            archiveId = result.getAttribute("id", "")
            for forwarded in result.elements(NS_FORWARD, "forwarded"):
                for inner in forwarded.elements():
                    if inner.name != "message":
                        continue
                    for event in inner.elements(NS_PUBSUB_EVENT, "event"):
                        for items in event.elements(NS_PUBSUB_EVENT, "items"):
                            for item in items.elements(NS_PUBSUB_EVENT, "item"):
                                payload = _payloadOf(item)
                                itemId = item.getAttribute("id")
                                if itemId and payload is not None:
                                    collected.append((archiveId, itemId, payload))
                            for retract in items.elements(NS_PUBSUB_EVENT, "retract"):
                                itemId = retract.getAttribute("id")
                                if itemId:
                                    collected.append((archiveId, itemId, None))

    # -- subscribe and catch up --------------------------------------------------------------

    async def startPartner(self, partner: PartnerSettings) -> None:
        """
        Subscribe to the partner's node (harmless when already subscribed), then catch up.
        """
        pubsub = domish.Element((NS_PUBSUB, "pubsub"))
        subscribe = pubsub.addElement("subscribe")
        subscribe["node"] = partner.node
        subscribe["jid"] = self.engine.jid
        await self._request(partner.jid, "set", pubsub)
        self.log.info("Subscribed to {partner} {node}", partner=partner.jid, node=partner.node)
        # The operator's view lists the subscription from now on, before any item arrives.
        await self.engine.store.updatePartner(partner.jid, partner.node, None, {}, None, None)
        if await self._catchUp(partner):
            self.engine.clock.callLater(
                self.checkpointInterval, self._checkpoint, partner, self.xmlstream
            )

    async def _catchUp(self, partner: PartnerSettings) -> bool:
        """
        Catch up from the saved mark: from the partner's archive, or by a refresh when it has
        none or the archive does not reach back. The partner's checkpoints count again after.

        @return: Whether the partner has an archive.
        """
        failures = self.engine.failures(partner)
        archived = await self._hasArchive(partner)
        if archived:
            try:
                await self.catchUpArchive(partner)
            except StanzaError as e:
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Archive of {partner} {node} does not reach back ({condition}); refreshing",
                    partner=partner.jid, node=partner.node, condition=e.condition,
                )
                await self.refresh(partner)
        else:
            await self.refresh(partner)
        self.engine.settled(partner, failures)
        return archived

    def _liveFailed(self, failure: Failure, partner: PartnerSettings) -> None:
        """
        Applying live items failed as a whole (the engine parks what a backend fails on, so
        this is the storage failing): they carry no archive id, so they are fetched again by
        a catch-up from the saved mark, which the engine keeps where it is until then.
        """
        self.log.failure(
            "Applying items of {partner} {node} failed; catching up from the saved mark",
            failure, partner=partner.jid, node=partner.node,
        )
        key = (partner.jid, partner.node)
        if key not in self._recovering:
            self._recovering.add(key)
            self.engine.clock.callLater(
                self.retryDelay, self._recover, partner, self.xmlstream, self.retryDelay
            )

    def _recover(self, partner: PartnerSettings, stream: Any, delay: float) -> None:
        key = (partner.jid, partner.node)
        if stream is None or stream is not self.xmlstream or not self._following(partner):
            self._recovering.discard(key)  # the next connection catches up anyway
            return

        def again(failure: Failure) -> None:
            self.log.failure("Catching up on {partner} {node} failed", failure,
                             partner=partner.jid, node=partner.node)
            later = min(self.maxRetryDelay, delay * 2)
            self.engine.clock.callLater(later, self._recover, partner, stream, later)

        d = Deferred.fromCoroutine(self._catchUp(partner))
        d.addCallbacks(lambda _: self._recovering.discard(key), again)

    def _checkpoint(self, partner: PartnerSettings, stream: Any) -> None:
        """
        Move the partner mark to the archive's newest id, behind the items already received,
        so the next catch-up starts there; repeat while the stream lasts.
        """
        if stream is None or stream is not self.xmlstream or not self._following(partner):
            return

        async def checkpoint() -> None:
            newest = await self._newestArchiveId(partner)
            if newest is not None:
                await self.engine.receive([], mark=(partner, newest))

        def again(result: object) -> None:
            self.engine.clock.callLater(
                self.checkpointInterval, self._checkpoint, partner, stream
            )

        def failed(failure: Failure) -> None:
            if failure.check(ConnectionDone, ConnectionLost):
                # The stream closed with the query outstanding (at every stop, say): the next
                # connection catches up from the last mark saved.
                self.log.info(
                    "Archive checkpoint of {partner} {node} abandoned: disconnected",
                    partner=partner.jid, node=partner.node,
                )
            else:
                self.log.failure("Archive checkpoint failed", failure)

        d = Deferred.fromCoroutine(checkpoint())
        d.addErrback(failed)
        d.addBoth(again)

    async def _newestArchiveId(self, partner: PartnerSettings) -> str | None:
        results, fin = await self._archivePage(partner, None, 1, before=True)
        if results:
            return results[-1][0]
        if fin is not None:
            for rsm in fin.elements(NS_RSM, "set"):
                for last in rsm.elements(NS_RSM, "last"):
                    return str(last)
        return None

    async def _servesPages(self, partner: PartnerSettings) -> bool:
        """
        Whether the partner's service advertises archive pages (asked once per connection).
        """
        known = self._paged.get(partner.jid)
        if known is not None:
            return known
        try:
            reply = await self._request(partner.jid, "get", domish.Element((NS_DISCO_INFO, "query")))
        except StanzaError:
            return False
        paged = any(
            feature.getAttribute("var") == NS_PAGES
            for found in reply.elements(NS_DISCO_INFO, "query")
            for feature in found.elements(NS_DISCO_INFO, "feature")
        )
        self._paged[partner.jid] = paged
        return paged

    async def _hasArchive(self, partner: PartnerSettings) -> bool:
        query = domish.Element((NS_DISCO_INFO, "query"))
        query["node"] = partner.node
        try:
            reply = await self._request(partner.jid, "get", query)
        except StanzaError:
            return False
        for found in reply.elements(NS_DISCO_INFO, "query"):
            for feature in found.elements(NS_DISCO_INFO, "feature"):
                if feature.getAttribute("var") == NS_MAM:
                    return True
        return False

    async def _archivePage(
        self, partner: PartnerSettings, after: str | None, maximum: int, before: bool = False
    ) -> tuple[list[tuple[str, str, bytes | None]], domish.Element | None]:
        self._queries += 1
        queryId = f"hermod-{self._queries}"
        query = domish.Element((NS_MAM, "query"))
        query["node"] = partner.node
        query["queryid"] = queryId
        query.addChild(_rsm(maximum, after, before))
        if await self._servesPages(partner):
            query.addElement((NS_PAGES, "pages"))
        self._archived[queryId] = []
        try:
            reply = await self._request(partner.jid, "set", query)
        finally:
            collected = self._archived.pop(queryId, [])
        fin = next(iter(reply.elements(NS_MAM, "fin")), None)
        if fin is not None:
            for events in fin.elements(NS_PAGES, "events"):
                for event in events.elements(NS_PAGES, "e"):
                    archiveId, itemId = event.getAttribute("id"), event.getAttribute("item")
                    if not archiveId or not itemId:
                        continue
                    if event.getAttribute("retract") in ("true", "1"):
                        collected.append((archiveId, itemId, None))
                    else:
                        try:
                            payload = base64.b64decode(str(event), validate=True)
                        except ValueError:
                            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                                "Archive event {id} of {partner} is not base64; skipped",
                                id=archiveId, partner=partner.jid,
                            )
                            continue
                        collected.append((archiveId, itemId, payload))
        return collected, fin

    async def catchUpArchive(self, partner: PartnerSettings) -> int:
        """
        Apply the partner's archive after the saved mark, page by page; with no mark yet, take
        the archive's newest id as the mark and refresh from the current items instead.

        @return: How many archived items were handed to the engine.
        @raise StanzaError: The partner refused the query, such as C{item-not-found} when the
            mark is no longer in its archive.
        """
        state = await self.engine.store.getPartner(partner.jid, partner.node)
        mark = state.mark
        if mark is None:
            newest = await self._newestArchiveId(partner)
            await self.refresh(partner)
            # An empty archive: everything it will hold is new to us ("" = its beginning).
            await self.engine.receive([], mark=(partner, newest or ""))
            return 0
        total = 0
        clock = self.engine.clock
        started = clock.seconds()
        nextReport = started + PROGRESS_INTERVAL
        page = Deferred.fromCoroutine(self._archivePage(partner, mark or None, self.pageSize))
        # The page handed to the engine before the last one, not known to be applied yet.
        applying: Deferred[None] | None = None
        more = True
        try:
            while more:
                results, fin = await _unlessFailed(page, applying)
                complete = fin is not None and fin.getAttribute("complete") in ("true", "1")
                # A partner removed meanwhile (its contact went) is not paged further.
                more = bool(results) and not complete and self._following(partner)
                if more:
                    # Ask for the next page before applying this one: the partner and the
                    # server prepare and carry it meanwhile.
                    page = Deferred.fromCoroutine(
                        self._archivePage(partner, results[-1][0], self.pageSize)
                    )
                handed = None
                if results:
                    # Handed over while the engine still saves the page before: it applies
                    # this one meanwhile (in order, each page's mark saved after its items).
                    handed = self.engine.receive(
                        [Received(partner, itemId, payload or b"", archiveId,
                                  retracted=payload is None)
                         for archiveId, itemId, payload in results]
                    )
                    total += len(results)
                    now = clock.seconds()
                    if now >= nextReport:
                        # A long catch-up says how far it is, for the operator.
                        nextReport = now + PROGRESS_INTERVAL
                        self.log.info(
                            "Catching up on {partner} {node} from its archive: {count} items "
                            "so far ({rate:.0f}/s)", partner=partner.jid, node=partner.node,
                            count=total, rate=total / max(now - started, 1e-6),
                        )
                # At most two pages in the engine and one asked for.
                previous, applying = applying, handed
                if previous is not None:
                    await previous
            if applying is not None:
                last, applying = applying, None
                await last
        except BaseException:
            # Abandoned with this catch-up: their outcomes (the engine fails a page handed
            # after one that failed) must not be logged as unhandled.
            if more:
                page.addErrback(lambda _: None)
            if applying is not None:
                applying.addErrback(lambda _: None)
            raise
        self.catchUps[(partner.jid, partner.node)] = "mam"
        seconds = clock.seconds() - started
        self.log.info(
            "Caught up on {partner} {node} from its archive: {count} items in {seconds:.1f} s "
            "({rate:.0f}/s, {how})",
            partner=partner.jid, node=partner.node, count=total, seconds=seconds,
            rate=total / max(seconds, 1e-6),
            how="archive pages" if self._paged.get(partner.jid) else "result messages",
        )
        return total

    async def refresh(self, partner: PartnerSettings) -> int:
        """
        Page the partner node's current items and let the engine apply the newer versions.

        @return: How many items were fetched.
        """
        after: str | None = None
        seen: set[str] = set()
        total = 0
        while True:
            pubsub = domish.Element((NS_PUBSUB, "pubsub"))
            pubsub.addElement("items")["node"] = partner.node
            pubsub.addChild(_rsm(self.refreshPageSize, after))
            reply = await self._request(partner.jid, "get", pubsub)
            page: list[Received] = []
            last: str | None = None
            paged = False
            for found in reply.elements(NS_PUBSUB, "pubsub"):
                for items in found.elements(NS_PUBSUB, "items"):
                    page.extend(self._items(partner, items.elements(NS_PUBSUB, "item")))
                for rsm in found.elements(NS_RSM, "set"):
                    paged = True
                    for element in rsm.elements(NS_RSM, "last"):
                        last = str(element)
            fresh = [r for r in page if r.itemId not in seen]
            seen.update(r.itemId for r in fresh)
            # Items come newest first; apply oldest first so parents tend to precede children.
            fresh.reverse()
            if fresh:
                await self.engine.receive(fresh)
                total += len(fresh)
            if not paged or not last or not fresh or len(page) < self.refreshPageSize:
                break
            after = last
        self.catchUps[(partner.jid, partner.node)] = "refresh"
        self.log.info(
            "Refreshed from {partner} {node}: {count} current items compared",
            partner=partner.jid, node=partner.node, count=total,
        )
        return total


def makePartnerLink(engine: ReplicationEngine, pageSize: int = PAGE_SIZE) -> PartnerLink:
    """
    The handler to add to the component's stream manager.
    """
    return PartnerLink(engine, pageSize)


__all__: Sequence[str] = ("NS_MAM", "PartnerLink", "makePartnerLink")
