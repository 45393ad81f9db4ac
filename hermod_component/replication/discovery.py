"""
Partner discovery (C{[discovery]}): at each connection and every C{interval}, the contacts of
the configured backend (L{IContactSource}) are asked for disco#info; those with a
C{pubsub/service} identity are asked for disco#items (paged with XEP-0059), and their nodes
matching the allowed patterns become partner subscriptions of the engine, followed by the
L{PartnerLink} like configured ones. A contact that does not answer or refuses is logged and
asked again at the next pass; a failure is never fatal.

The subscriptions discovery makes are recorded in the replication store
(L{IReplicationStore.setDiscovered}) until it ends them. So a contact removed while Hermod was
stopped is not forgotten: the first pass after the start unsubscribes from the recorded
subscriptions it does not find again (unless their contact is listed but did not answer: they
wait for a later pass), as later passes do for contacts that leave while Hermod runs.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from hermod_component.config import DiscoverySettings, PartnerSettings
from hermod_component.interfaces import IContactSource
from hermod_component.replication.xmpp import (
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_RSM,
    REFRESH_PAGE_SIZE,
    PartnerLink,
    _Request,
    _rsm,
)
from hermod_component.xmpp._xmpplib import XMPPHandler


class PartnerDiscovery(XMPPHandler):
    """
    Finds partner Hermods among a backend's contacts while the component stream is up.

    @ivar link: The partner link that follows what is found.
    @ivar settings: The C{[discovery]} settings.
    @ivar discovered: Per contact JID, the outcome of its last discovery: C{"pubsub"},
        C{"not pubsub"} or C{"failed: <reason>"}.
    """

    log = Logger()

    def __init__(self, link: PartnerLink, settings: DiscoverySettings) -> None:
        XMPPHandler.__init__(self)
        self.link = link
        self.settings = settings
        self.discovered: dict[str, str] = {}
        #: Per contact JID, the partner subscriptions discovery added for it.
        self._found: dict[str, list[PartnerSettings]] = {}
        #: Subscriptions recorded by an earlier run and not found again yet (loaded by the
        #: first pass).
        self._earlier: set[tuple[str, str]] | None = None
        link.onUnsubscribed = self._unsubscribed

    def connectionInitialized(self) -> None:
        """
        Run the first pass now; it schedules the next ones.
        """
        self._discover(self.xmlstream)

    def _discover(self, stream: Any) -> None:
        """
        Run a discovery pass, then the next one after the interval, while the stream lasts.
        """
        if stream is None or stream is not self.xmlstream:
            return
        interval = self.settings.interval
        d = Deferred.fromCoroutine(self.discover())
        d.addErrback(lambda f: self.log.failure("Partner discovery failed", f))
        d.addBoth(lambda _: self.link.engine.clock.callLater(interval, self._discover, stream))

    async def discover(self) -> list[PartnerSettings]:
        """
        Ask every contact of the discovery backend what it is and which nodes it has, and
        subscribe to the allowed nodes not subscribed yet.

        @return: The partner subscriptions added by this pass.
        """
        discovery = self.settings
        backend = self.link.engine.backends[discovery.backend]
        assert IContactSource.providedBy(backend)
        try:
            contacts = await backend.contacts()
        except Exception as e:  # noqa: BLE001 - an unreadable list is retried next pass
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Cannot list the contacts of {backend}: {reason}; again in {interval}s",
                backend=discovery.backend, reason=str(e), interval=discovery.interval,
            )
            return []
        jids: list[str] = []
        for contact in dict.fromkeys(contacts):
            try:
                jids.append(JID(contact).userhost())
            except Exception:  # noqa: BLE001 - bad application data
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Contact {contact!r} of {backend} is not a JID",
                    contact=contact, backend=discovery.backend,
                )
        self._forgetGone(set(jids))
        earlier = await self._loadEarlier()
        added: list[PartnerSettings] = []
        unanswered: set[str] = set()
        for jid in dict.fromkeys(jids):
            if jid == self.link.engine.jid:
                continue
            try:
                nodes = await self._pubsubNodes(jid, discovery.timeout)
            except Exception as e:  # noqa: BLE001 - a contact's failure is never fatal
                reason = getattr(e, "condition", None) or type(e).__name__
                unanswered.add(jid)
                self.discovered[jid] = f"failed: {reason}"
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Discovering {contact} failed ({reason}); again in {interval}s",
                    contact=jid, reason=reason, interval=discovery.interval,
                )
                continue
            if nodes is None:
                self.discovered[jid] = "not pubsub"
                continue
            self.discovered[jid] = "pubsub"
            for node in nodes:
                if not any(fnmatch.fnmatchcase(node, p) for p in discovery.nodes):
                    continue
                earlier.discard((jid, node))
                partner = PartnerSettings(
                    jid, node, discovery.backend, discovery.transform, discovery.role
                )
                if await self.link.engine.addPartner(partner):
                    self.log.info(
                        "Discovered partner {partner} {node}", partner=jid, node=node
                    )
                    added.append(partner)
                    self._found.setdefault(jid, []).append(partner)
                    await self._record(partner, True)
                    self.link.follow(partner)
        self._forgetEarlier(earlier, unanswered)
        return added

    async def _loadEarlier(self) -> set[tuple[str, str]]:
        """
        The subscriptions an earlier run recorded and this run has not found again; read
        from the store at the first pass.
        """
        if self._earlier is None:
            try:
                recorded = await self.link.engine.store.listDiscovered()
            except Exception as e:  # noqa: BLE001 - read again at the next pass
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Cannot read the partner subscriptions discovery made before ({reason})",
                    reason=str(e),
                )
                return set()
            self._earlier = {
                (jid, node) for jid, node in recorded
                if self.link.engine.partnerFor(jid, node) is None
            }
        return self._earlier

    def _forgetEarlier(self, earlier: set[tuple[str, str]], unanswered: set[str]) -> None:
        """
        Unsubscribe from what an earlier run discovered and this pass did not find again,
        except at contacts that did not answer (asked again at the next pass).
        """
        discovery = self.settings
        for jid, node in sorted(earlier):
            if jid in unanswered:
                continue
            earlier.discard((jid, node))
            if self.link.engine.partnerFor(jid, node) is not None:
                continue  # configured or discovered again meanwhile
            self.log.info(
                "Partner {partner} {node}, discovered before Hermod stopped, is no longer "
                "found among the contacts of {backend}; unsubscribing",
                partner=jid, node=node, backend=discovery.backend,
            )
            self.link.unfollow(
                PartnerSettings(jid, node, discovery.backend, discovery.transform, discovery.role)
            )

    async def _record(self, partner: PartnerSettings, discovered: bool) -> None:
        """
        Record in the store that discovery subscribed to C{partner}, or has unsubscribed.
        """
        try:
            await self.link.engine.store.setDiscovered(partner.jid, partner.node, discovered)
        except Exception as e:  # noqa: BLE001 - the subscription itself stands
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Cannot record the partner subscription {partner} {node} ({reason})",
                partner=partner.jid, node=partner.node, reason=str(e),
            )

    def _unsubscribed(self, partner: PartnerSettings) -> None:
        """
        The link ended a subscription at the partner: forget its record, unless it was
        discovered again meanwhile.
        """
        if self.link.engine.partnerFor(partner.jid, partner.node) is None:
            Deferred.fromCoroutine(self._record(partner, False))

    def _forgetGone(self, contacts: set[str]) -> None:
        """
        Unsubscribe from the subscriptions discovery added for contacts the application no
        longer lists (configured partners are never touched). A contact that is listed but
        does not answer keeps its subscriptions.
        """
        for jid in [j for j in self._found if j not in contacts]:
            for partner in self._found.pop(jid):
                if self.link.engine.removePartner(partner):
                    self.log.info(
                        "Partner {partner} {node} left the contacts of {backend}; "
                        "unsubscribing", partner=jid, node=partner.node,
                        backend=self.settings.backend,
                    )
                    self.link.unfollow(partner)
            self.discovered.pop(jid, None)

    async def _pubsubNodes(self, jid: str, timeout: float) -> list[str] | None:
        """
        The nodes of a contact that is a pubsub service, or L{None} when it is not one.

        @raise StanzaError: It refused a query.
        @raise twisted.words.protocols.jabber.xmlstream.TimeoutError: It did not answer.
        """
        reply = await self.request(
            _Request(jid, self.link.engine.jid, "get", domish.Element((NS_DISCO_INFO, "query")),
                     timeout)
        )
        identities = [
            (i.getAttribute("category"), i.getAttribute("type"))
            for q in reply.elements(NS_DISCO_INFO, "query")
            for i in q.elements(NS_DISCO_INFO, "identity")
        ]
        if ("pubsub", "service") not in identities:
            return None
        nodes: list[str] = []
        after: str | None = None
        while True:
            query = domish.Element((NS_DISCO_ITEMS, "query"))
            query.addChild(_rsm(REFRESH_PAGE_SIZE, after))
            reply = await self.request(_Request(jid, self.link.engine.jid, "get", query, timeout))
            page: list[str] = []
            last: str | None = None
            for found in reply.elements(NS_DISCO_ITEMS, "query"):
                for item in found.elements(NS_DISCO_ITEMS, "item"):
                    node = item.getAttribute("node")
                    if node and item.getAttribute("jid", jid) == jid:
                        page.append(node)
                for rsm in found.elements(NS_RSM, "set"):
                    for element in rsm.elements(NS_RSM, "last"):
                        last = str(element)
            fresh = [n for n in page if n not in nodes]
            nodes.extend(fresh)
            if not last or not fresh or last == after:
                return nodes
            after = last


def makeDiscovery(link: PartnerLink, settings: DiscoverySettings) -> PartnerDiscovery:
    """
    The discovery handler to add to the component's stream manager after C{link}.
    """
    return PartnerDiscovery(link, settings)
