"""
Tests for partner discovery: contacts from the backend, disco#info and disco#items, and the
subscriptions that follow, on a stub stream whose IQ requests the tests answer.
"""

from __future__ import annotations

import json
import os
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.xmlstream import TimeoutError
from twisted.words.xish import domish

from hermod_component.backends.spool import SpoolBackend
from hermod_component.config import DiscoverySettings, PartnerSettings, PubSubSettings
from hermod_component.model import Affiliation
from hermod_component.policy import PubSubPolicy
from hermod_component.replication.discovery import PartnerDiscovery
from hermod_component.replication.engine import ReplicationEngine
from hermod_component.replication.store import MemoryReplicationStore
from hermod_component.replication.xmpp import NS_DISCO_INFO, NS_DISCO_ITEMS, PartnerLink
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import AnsweringStreamManager, RecordingNotifier, parseStanzas
from hermod_component.xmpp._xmpplib import NS_PUBSUB

JID = "pubsub.b.example"


def reply(request: domish.Element, body: str) -> domish.Element:
    """
    The result IQ a contact would send for C{request}, with child C{body}.
    """
    (element,) = parseStanzas(
        f"<iq type='result' from='{request['to']}' to='{request['from']}' "
        f"id='{request.getAttribute('id', '')}'>{body}</iq>"
    )
    return element


INFO_PUBSUB = (
    f"<query xmlns='{NS_DISCO_INFO}'><identity category='pubsub' type='service'/></query>"
)
INFO_SERVER = (
    f"<query xmlns='{NS_DISCO_INFO}'><identity category='server' type='im'/></query>"
)


def items(*nodes: str, jid: str = "pubsub.a.example") -> str:
    """
    A disco#items result body listing C{nodes} at C{jid}.
    """
    listed = "".join(f"<item jid='{jid}' node='{node}'/>" for node in nodes)
    return f"<query xmlns='{NS_DISCO_ITEMS}'>{listed}</query>"


class DiscoveryTests(SynchronousTestCase):
    """
    Hermod subscribes to the allowed nodes of the contacts that are pubsub services.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.path = tempfile.mkdtemp()
        self.storage = MemoryStorage()
        self.policy = PubSubPolicy(self.storage, PubSubSettings(), JID, self.clock)
        self.policy.notifier = RecordingNotifier()  # type: ignore[assignment]
        self.store = MemoryReplicationStore()
        self.backend = SpoolBackend("docs", self.path, "/docs/all")
        self.successResultOf(self.backend.start())
        self.engine = ReplicationEngine(
            self.policy, self.store, {"docs": self.backend}, [], self.clock
        )
        self.successResultOf(Deferred.fromCoroutine(self.engine.prepare()))
        self.settings = DiscoverySettings("docs", ("/docs/*",), interval=60.0, timeout=5.0)
        self.contacts(["pubsub.a.example", "bob@c.example", JID])

    def contacts(self, jids: list[str]) -> None:
        """
        The application lists its contacts.
        """
        with open(os.path.join(self.path, ".contacts.json"), "w", encoding="utf-8") as f:
            json.dump(jids, f)

    def connect(self) -> AnsweringStreamManager:
        """
        A stream with the partner link on it; discovery starts at once.
        """
        manager = AnsweringStreamManager()
        manager.addHandler(PartnerLink(self.engine))
        self.discovery = PartnerDiscovery(manager.handlers[0], self.settings)
        manager.addHandler(self.discovery)
        return manager

    def answerInfo(self, manager: AnsweringStreamManager, to: str, body: str | None) -> None:
        """
        Answer the pending disco#info request to C{to} (L{None}: it times out).
        """
        [(request, d)] = [(r, d) for r, d in manager.pending(NS_DISCO_INFO) if r["to"] == to]
        if body is None:
            d.errback(TimeoutError("no answer"))
        else:
            d.callback(reply(request, body))

    def test_subscribesToAllowedNodes(self) -> None:
        """
        A contact that is a pubsub service is asked for its nodes, and the nodes matching the
        patterns become partner subscriptions (subscribe request sent, role given on the own
        nodes, listed in the store); a contact that is not a pubsub service gets no more
        queries, and Hermod's own JID is not asked at all.
        """
        manager = self.connect()
        self.assertEqual(sorted(r["to"] for r, _ in manager.pending(NS_DISCO_INFO)),
                         ["pubsub.a.example"])
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all", "/docs/a", "/other/x")))
        self.answerInfo(manager, "bob@c.example", INFO_SERVER)
        self.assertEqual(manager.pending(NS_DISCO_ITEMS), [])
        self.assertEqual(
            [(p.jid, p.node, p.backend) for p in self.engine.partners],
            [("pubsub.a.example", "/docs/all", "docs"), ("pubsub.a.example", "/docs/a", "docs")],
        )
        self.assertEqual(self.discovery.discovered,
                         {"pubsub.a.example": "pubsub", "bob@c.example": "not pubsub"})
        subscribes = [
            (r["to"], s["node"])
            for r, _ in manager.pending(NS_PUBSUB)
            for p in r.elements(NS_PUBSUB, "pubsub")
            for s in p.elements(NS_PUBSUB, "subscribe")
        ]
        self.assertEqual(subscribes, [("pubsub.a.example", "/docs/all"),
                                      ("pubsub.a.example", "/docs/a")])
        affiliations = self.successResultOf(self.storage.getAffiliations("/docs/all"))
        self.assertEqual(affiliations.get("pubsub.a.example"), Affiliation.PUBLISHER)
        # The subscription succeeds: the operator's view lists it before any item.
        request, d = manager.pending(NS_PUBSUB)[0]
        d.callback(reply(request, f"<pubsub xmlns='{NS_PUBSUB}'/>"))
        states = self.successResultOf(self.store.listPartners())
        self.assertEqual([(s.partner, s.node) for s in states],
                         [("pubsub.a.example", "/docs/all")])

    def test_silentContactRetriedLater(self) -> None:
        """
        A contact that does not answer is logged and asked again at the next interval, when a
        new node of a known partner is also picked up without subscribing twice.
        """
        manager = self.connect()
        self.answerInfo(manager, "pubsub.a.example", None)
        self.answerInfo(manager, "bob@c.example", None)
        self.assertEqual(self.discovery.discovered["pubsub.a.example"], "failed: TimeoutError")
        self.assertEqual(self.engine.partners, ())
        self.clock.advance(60)
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all")))
        self.answerInfo(manager, "bob@c.example", INFO_SERVER)
        self.assertEqual([p.node for p in self.engine.partners], ["/docs/all"])
        self.clock.advance(60)
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all", "/docs/new")))
        self.answerInfo(manager, "bob@c.example", INFO_SERVER)
        self.assertEqual([p.node for p in self.engine.partners], ["/docs/all", "/docs/new"])

    def test_refusingContactNotFatal(self) -> None:
        """
        A contact answering with an error is recorded with its condition; the others are
        still discovered.
        """
        manager = self.connect()
        [(request, d)] = [
            (r, d) for r, d in manager.pending(NS_DISCO_INFO) if r["to"] == "pubsub.a.example"
        ]
        d.errback(StanzaError("service-unavailable"))
        self.answerInfo(manager, "bob@c.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/x", jid="bob@c.example")))
        self.assertEqual(self.discovery.discovered["pubsub.a.example"], "failed: service-unavailable")
        self.assertEqual([(p.jid, p.node) for p in self.engine.partners],
                         [("bob@c.example", "/docs/x")])

    def test_unreadableContactsRetried(self) -> None:
        """
        A contacts file that cannot be read is logged; the next pass reads it again.
        """
        with open(os.path.join(self.path, ".contacts.json"), "w", encoding="utf-8") as f:
            f.write("{")
        manager = self.connect()
        self.assertEqual(manager.requests, [])
        self.contacts(["pubsub.a.example"])
        self.clock.advance(60)
        self.assertEqual([r["to"] for r, _ in manager.pending(NS_DISCO_INFO)],
                         ["pubsub.a.example"])

    def test_contactGoneUnsubscribed(self) -> None:
        """
        When the application no longer lists a contact, the next pass unsubscribes from the
        nodes discovery subscribed to for it, and its notifications are ignored; configured
        partners and contacts still listed keep theirs. Listed again, it is followed again.
        """
        configured = PartnerSettings("pubsub.z.example", "/docs/all", "docs")
        self.engine.partners = (configured,)
        manager = self.connect()
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all")))
        self.answerInfo(manager, "bob@c.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/x", jid="bob@c.example")))
        self.assertEqual(len(self.engine.partners), 3)
        self.contacts(["bob@c.example"])
        self.clock.advance(60)
        self.assertEqual([(p.jid, p.node) for p in self.engine.partners],
                         [("pubsub.z.example", "/docs/all"), ("bob@c.example", "/docs/x")])
        unsubscribes = [
            (r["to"], u["node"], u["jid"])
            for r, _ in manager.pending(NS_PUBSUB)
            for p in r.elements(NS_PUBSUB, "pubsub")
            for u in p.elements(NS_PUBSUB, "unsubscribe")
        ]
        self.assertEqual(unsubscribes, [("pubsub.a.example", "/docs/all", JID)])
        self.assertNotIn("pubsub.a.example", self.discovery.discovered)
        [event] = parseStanzas(
            "<message from='pubsub.a.example' to='pubsub.b.example'>"
            "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
            "<items node='/docs/all'><item id='x'><x/></item></items></event></message>"
        )
        manager.handlers[0]._onEvent(event)
        self.assertEqual(self.engine.counters[("pubsub.a.example", "/docs/all")]["received"], 0)
        self.answerInfo(manager, "bob@c.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/x", jid="bob@c.example")))
        self.contacts(["bob@c.example", "pubsub.a.example"])
        self.clock.advance(60)
        self.answerInfo(manager, "bob@c.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/x", jid="bob@c.example")))
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all")))
        self.assertIn(("pubsub.a.example", "/docs/all"),
                      [(p.jid, p.node) for p in self.engine.partners])

    def unsubscribes(self, manager: AnsweringStreamManager) -> list[tuple[str, str]]:
        """
        The C{(partner, node)} of the pending unsubscribe requests.
        """
        return [
            (r["to"], u["node"])
            for r, _ in manager.pending(NS_PUBSUB)
            for p in r.elements(NS_PUBSUB, "pubsub")
            for u in p.elements(NS_PUBSUB, "unsubscribe")
        ]

    def answerUnsubscribe(
        self, manager: AnsweringStreamManager, partner: str, error: str | None = None
    ) -> None:
        """
        Answer the pending unsubscribe request to C{partner}, with a stanza error if given.
        """
        [(request, d)] = [
            (r, d) for r, d in manager.pending(NS_PUBSUB)
            if r["to"] == partner and any(
                u for p in r.elements(NS_PUBSUB, "pubsub") for u in p.elements(NS_PUBSUB, "unsubscribe")
            )
        ]
        if error is None:
            d.callback(reply(request, ""))
        else:
            d.errback(StanzaError(error))

    def test_discoveredSubscriptionsRecorded(self) -> None:
        """
        The subscriptions discovery makes are recorded in the store; the record goes once
        the partner has confirmed an unsubscribe for a contact that left.
        """
        manager = self.connect()
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all", "/docs/a")))
        self.answerInfo(manager, "bob@c.example", INFO_SERVER)
        self.assertEqual(self.successResultOf(self.store.listDiscovered()),
                         [("pubsub.a.example", "/docs/a"), ("pubsub.a.example", "/docs/all")])
        self.contacts(["bob@c.example"])
        self.clock.advance(60)
        self.answerInfo(manager, "bob@c.example", INFO_SERVER)
        self.assertEqual(sorted(self.unsubscribes(manager)),
                         [("pubsub.a.example", "/docs/a"), ("pubsub.a.example", "/docs/all")])
        self.assertEqual(len(self.successResultOf(self.store.listDiscovered())), 2)
        [(request, d)] = [
            (r, d) for r, d in manager.pending(NS_PUBSUB)
            if any(u["node"] == "/docs/all" for p in r.elements(NS_PUBSUB, "pubsub")
                   for u in p.elements(NS_PUBSUB, "unsubscribe"))
        ]
        d.callback(reply(request, ""))
        self.assertEqual(self.successResultOf(self.store.listDiscovered()),
                         [("pubsub.a.example", "/docs/a")])
        [(request, d)] = manager.pending(NS_PUBSUB)[-1:]
        d.errback(StanzaError("internal-server-error"))  # failed: the record stays
        self.assertEqual(self.successResultOf(self.store.listDiscovered()),
                         [("pubsub.a.example", "/docs/a")])

    def test_contactGoneWhileStopped(self) -> None:
        """
        After a restart, the first pass unsubscribes from what an earlier run discovered and
        is not found again: a contact no longer listed, or a node it no longer has, but not
        the subscriptions of a listed contact that does not answer, which wait for a pass in
        which it does. Configured partners and what is found again are left alone.
        """
        for partner, node in [("pubsub.gone.example", "/docs/all"),
                              ("pubsub.a.example", "/docs/all"),
                              ("pubsub.a.example", "/docs/old"),
                              ("bob@c.example", "/docs/x"),
                              ("pubsub.z.example", "/docs/all")]:
            self.successResultOf(self.store.setDiscovered(partner, node, True))
        self.engine.partners = (PartnerSettings("pubsub.z.example", "/docs/all", "docs"),)
        manager = self.connect()
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all")))
        self.answerInfo(manager, "bob@c.example", None)  # listed, silent
        self.assertEqual(sorted(self.unsubscribes(manager)),
                         [("pubsub.a.example", "/docs/old"), ("pubsub.gone.example", "/docs/all")])
        self.answerUnsubscribe(manager, "pubsub.gone.example")
        self.answerUnsubscribe(manager, "pubsub.a.example", "item-not-found")  # node gone
        self.assertEqual(self.successResultOf(self.store.listDiscovered()),
                         [("bob@c.example", "/docs/x"), ("pubsub.a.example", "/docs/all"),
                          ("pubsub.z.example", "/docs/all")])
        self.contacts(["pubsub.a.example"])  # bob is gone now too
        self.clock.advance(60)
        self.answerInfo(manager, "pubsub.a.example", INFO_PUBSUB)
        [(request, d)] = manager.pending(NS_DISCO_ITEMS)
        d.callback(reply(request, items("/docs/all")))
        self.assertEqual(self.unsubscribes(manager), [("bob@c.example", "/docs/x")])
