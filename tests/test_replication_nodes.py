"""
Tests for objects on several nodes (tag nodes, moves between them) and for whitelists from the
application database, with replicas on memory storage and spool directories wired in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.backends.spool import SpoolBackend
from hermod_component.config import BackendSettings, PartnerSettings
from hermod_component.model import Affiliation, EventAction
from hermod_component.replication.engine import Received, ReplicationEngine
from hermod_component.replication.pump import ReplicationPump
from hermod_component.replication.service import ReplicationService
from hermod_component.replication.whitelists import syncWhitelists
from tests.test_replication_engine import NODE, Network, Replica, WireNotifier

TAG_A, TAG_B = "/docs/a", "/docs/b"


class RetractingNotifier(WireNotifier):
    """
    A L{WireNotifier} that also delivers retractions to the subscribed replicas' engines.
    """

    def retract(self, node: str, itemIds: Sequence[str], messageType: str,
                recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        """
        Deliver each retraction to each online recipient replica following this node.
        """
        for jid, _ in recipients:
            replica = self.network.replicas.get(jid)
            if replica is None or jid in self.network.offline:
                continue
            partner = replica.engine.partnerFor(self.sender, node)
            if partner is not None:
                replica.engine.receive(
                    [Received(partner, itemId, b"", retracted=True) for itemId in itemIds]
                )


class TaggedReplica(Replica):
    """
    A replica whose spool puts objects on C{/docs/<tag>} too, following any of a partner's
    nodes.
    """

    def __init__(self, network: Network, jid: str, clock: Clock,
                 follows: Sequence[tuple[str, str]] = ()) -> None:
        """
        @param follows: C{(partner JID, partner node)} subscriptions, all read-write.
        """
        super().__init__(network, jid, clock)
        self.policy.notifier = RetractingNotifier(network, jid)  # type: ignore[assignment]
        self.backend = SpoolBackend("docs", self.path, NODE, tagField="tag")
        self.partners = [PartnerSettings(p, node, "docs") for p, node in follows]
        self.engine = ReplicationEngine(
            self.policy, self.store, {"docs": self.backend}, self.partners, clock
        )
        self.pump = ReplicationPump(self.engine, self.backend, self.store, clock, interval=1)

    def follow(self, case: SynchronousTestCase, other: Replica, node: str) -> None:
        """
        Subscribe this replica's component JID to a node of the other.
        """
        case.successResultOf(Deferred.fromCoroutine(
            other.policy.subscribe(self.jid, node, self.jid, None)
        ))

    def itemIds(self, case: SynchronousTestCase, node: str) -> list[str]:
        """
        The ids of a node's current items, none if the node does not exist.
        """
        d = self.storage.getItems(node)
        result = case.successResultOf(d.addErrback(lambda _: []))
        return sorted(item.itemId for item in result)


class NodeMoveTests(SynchronousTestCase):
    """
    An object is published to every node it belongs to, and a change that moves it out of a
    node retracts it there; partners follow without losing it where it still belongs.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.network = Network()

    def origin(self) -> TaggedReplica:
        """
        Replica A, started, holding C{doc} tagged C{a}.
        """
        a = TaggedReplica(self.network, "a.example", self.clock)
        a.start(self)
        a.write("doc", b'<doc tag="a" n="1"/>')
        self.clock.advance(1)
        return a

    def move(self, a: TaggedReplica) -> None:
        """
        Retag C{doc} on A from C{a} to C{b} and let it travel.
        """
        a.write("doc", b'<doc tag="b" n="2"/>')
        self.clock.advance(1)

    def test_publishedToEachNode(self) -> None:
        """
        An object is published to the backend's node and to the node of its tag, which is
        created on first use, and the nodes are remembered with its version.
        """
        a = self.origin()
        self.assertEqual(a.itemIds(self, NODE), ["doc"])
        self.assertEqual(a.itemIds(self, TAG_A), ["doc"])
        record = self.successResultOf(a.store.getVersions("docs", ["doc"]))["doc"]
        self.assertEqual(record.nodes, (NODE, TAG_A))

    def test_moveRetractsFromOldNode(self) -> None:
        """
        Retagging moves the object: it is published to the new tag node and retracted from
        the old one (a retract event in its log), and stays in the backend's node.
        """
        a = self.origin()
        self.move(a)
        self.assertEqual(a.itemIds(self, TAG_A), [])
        self.assertEqual(a.itemIds(self, TAG_B), ["doc"])
        self.assertEqual(a.itemIds(self, NODE), ["doc"])
        events = self.successResultOf(a.storage.getEvents(TAG_A, None, 100))
        self.assertEqual([e.action for e in events], [EventAction.PUBLISH, EventAction.RETRACT])
        record = self.successResultOf(a.store.getVersions("docs", ["doc"]))["doc"]
        self.assertEqual(record.nodes, (NODE, TAG_B))

    def test_nodesRememberedAcrossRestart(self) -> None:
        """
        A restarted Hermod (new engine, pump and backend on the same stores) still retracts
        an object from the node it was published to before the restart.
        """
        a = self.origin()
        a.pump.stopService()
        a.backend = SpoolBackend("docs", a.path, NODE, tagField="tag")
        a.engine = ReplicationEngine(a.policy, a.store, {"docs": a.backend}, [], self.clock)
        a.pump = ReplicationPump(a.engine, a.backend, a.store, self.clock, interval=1)
        a.start(self)
        self.move(a)
        self.assertEqual(a.itemIds(self, TAG_A), [])
        self.assertEqual(a.itemIds(self, TAG_B), ["doc"])

    def test_deleteTombstonesEveryNode(self) -> None:
        """
        Removing the object's file publishes its tombstone to every node that held it.
        """
        a = self.origin()
        os.unlink(os.path.join(a.path, "doc.xml"))
        self.clock.advance(1)
        for node in (NODE, TAG_A):
            [item] = self.successResultOf(a.storage.getItems(node))
            self.assertIn(b'action="delete"', item.payload)

    def test_partnerOnAllNodeFollowsMove(self) -> None:
        """
        A partner following only A's backend node applies the move and moves the object
        between its own tag nodes too.
        """
        a = TaggedReplica(self.network, "a.example", self.clock)
        b = TaggedReplica(self.network, "b.example", self.clock, [("a.example", NODE)])
        a.start(self)
        b.start(self)
        b.follow(self, a, NODE)
        a.write("doc", b'<doc tag="a" n="1"/>')
        self.clock.advance(1)
        self.assertEqual(b.itemIds(self, TAG_A), ["doc"])
        self.move(a)
        self.assertEqual(b.read("doc"), b'<doc tag="b" n="2"/>')
        self.assertEqual(b.itemIds(self, TAG_A), [])
        self.assertEqual(b.itemIds(self, TAG_B), ["doc"])
        self.assertEqual(b.itemIds(self, NODE), ["doc"])

    def test_partnerOnOldNodeOnlyRemovesCopy(self) -> None:
        """
        A partner following only the node the object leaves removes its local copy (and its
        own items of it); when the object comes back to that node it is written again.
        """
        a = TaggedReplica(self.network, "a.example", self.clock)
        c = TaggedReplica(self.network, "c.example", self.clock, [("a.example", TAG_A)])
        a.start(self)
        c.start(self)
        a.write("doc", b'<doc tag="a" n="1"/>')
        self.clock.advance(1)
        c.follow(self, a, TAG_A)
        a.write("doc", b'<doc tag="a" n="1b"/>')
        self.clock.advance(1)
        self.assertEqual(c.read("doc"), b'<doc tag="a" n="1b"/>')
        self.move(a)
        self.assertIsNone(c.read("doc"))
        self.assertEqual(c.itemIds(self, TAG_A), [])
        self.assertEqual(c.itemIds(self, NODE), [])
        self.clock.advance(1)
        self.assertEqual(c.engine.published, 0)  # the removal is not captured as a delete
        a.write("doc", b'<doc tag="a" n="3"/>')
        self.clock.advance(1)
        self.assertEqual(c.read("doc"), b'<doc tag="a" n="3"/>')

    def test_partnerOnBothNodesKeepsObject(self) -> None:
        """
        A partner following both the old and the new node never loses the object: it arrives
        in the new node before it leaves the old one.
        """
        a = TaggedReplica(self.network, "a.example", self.clock)
        d = TaggedReplica(self.network, "d.example", self.clock,
                          [("a.example", TAG_A), ("a.example", TAG_B)])
        a.start(self)
        d.start(self)
        a.write("seed", b'<seed tag="a b"/>')
        self.clock.advance(1)
        d.follow(self, a, TAG_A)
        d.follow(self, a, TAG_B)
        a.write("doc", b'<doc tag="a" n="1"/>')
        self.clock.advance(1)
        removed: list[str] = []
        original = d.backend.apply

        def watching(change: Any) -> Deferred[None]:
            if change.action.value == "delete":
                removed.append(change.objectId)
            return original(change)

        d.backend.apply = watching  # type: ignore[method-assign]
        self.move(a)
        self.assertEqual(d.read("doc"), b'<doc tag="b" n="2"/>')
        self.assertEqual(removed, [])
        record = self.successResultOf(d.store.getVersions("docs", ["doc"]))["doc"]
        self.assertEqual(record.sources, ("a.example /docs/b",))

    def test_retractionFromReadOnlyPartnerRefused(self) -> None:
        """
        A retraction from a partner without publish rights changes nothing and is counted as
        refused.
        """
        c = TaggedReplica(self.network, "c.example", self.clock, [("a.example", TAG_A)])
        c.start(self)
        partner = c.partners[0]
        self.successResultOf(Deferred.fromCoroutine(
            c.policy.setAffiliations(c.jid, NODE, {"a.example": "member"})
        ))
        c.write("doc", b"<doc/>")
        self.successResultOf(c.engine.receive([Received(partner, "doc", b"", retracted=True)]))
        self.assertEqual(c.read("doc"), b"<doc/>")
        self.assertEqual(c.engine.counters[("a.example", TAG_A)]["refused"], 1)


class WhitelistTests(SynchronousTestCase):
    """
    The nodes' member affiliations follow the backend's whitelists.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.a = Replica(Network(), "a.example", self.clock, [("b.example", "member")])
        self.a.start(self)
        self.file = os.path.join(self.a.path, ".whitelists.json")

    def lists(self, mapping: dict[str, list[str]]) -> None:
        """
        The application writes its whitelists.
        """
        with open(self.file, "w", encoding="utf-8") as f:
            json.dump(mapping, f)

    def sync(self) -> int:
        """
        Run one sync and return how many affiliations changed.
        """
        return self.successResultOf(Deferred.fromCoroutine(syncWhitelists(self.a.engine, "docs")))

    def affiliations(self, node: str) -> dict[str, Affiliation]:
        """
        The node's affiliations as the component sees them.
        """
        return self.successResultOf(Deferred.fromCoroutine(
            self.a.policy.getAffiliations(self.a.jid, node)
        ))

    def test_membersAddedAndRemoved(self) -> None:
        """
        Listed JIDs become members of a node created as a whitelist node; a JID removed from
        the list loses its membership and its subscription; owners and partners stay.
        """
        self.lists({"/docs/private": ["u@x.example", "v@x.example/phone"]})
        self.assertEqual(self.sync(), 2)
        config = self.successResultOf(Deferred.fromCoroutine(
            self.a.policy.getConfiguration(self.a.jid, "/docs/private")
        ))
        self.assertEqual(config.accessModel.value, "whitelist")
        self.assertEqual(self.affiliations("/docs/private"), {
            "a.example": Affiliation.OWNER, "b.example": Affiliation.MEMBER,
            "u@x.example": Affiliation.MEMBER, "v@x.example": Affiliation.MEMBER,
        })
        self.successResultOf(Deferred.fromCoroutine(
            self.a.policy.subscribe("u@x.example/r", "/docs/private", "u@x.example/r", None)
        ))
        self.assertEqual(self.sync(), 0)
        self.lists({"/docs/private": ["v@x.example"]})
        self.assertEqual(self.sync(), 1)
        self.assertEqual(self.affiliations("/docs/private"), {
            "a.example": Affiliation.OWNER, "b.example": Affiliation.MEMBER,
            "v@x.example": Affiliation.MEMBER,
        })
        subscriptions = self.successResultOf(Deferred.fromCoroutine(
            self.a.policy.getSubscriptions(self.a.jid, "/docs/private")
        ))
        self.assertEqual(subscriptions, [])

    def test_publishersAndOutcastsUntouched(self) -> None:
        """
        A publisher or outcast that is not listed keeps its affiliation, and a listed one is
        not demoted to member.
        """
        self.successResultOf(Deferred.fromCoroutine(self.a.policy.setAffiliations(
            self.a.jid, NODE, {"p@x.example": "publisher", "o@x.example": "outcast"}
        )))
        self.lists({NODE: ["p@x.example", "m@x.example"]})
        self.assertEqual(self.sync(), 1)
        found = self.affiliations(NODE)
        self.assertEqual(found["p@x.example"], Affiliation.PUBLISHER)
        self.assertEqual(found["o@x.example"], Affiliation.OUTCAST)
        self.assertEqual(found["m@x.example"], Affiliation.MEMBER)

    def test_noFileChangesNothing(self) -> None:
        """
        Without a whitelists file nothing is managed, and members set by hand stay.
        """
        self.successResultOf(Deferred.fromCoroutine(self.a.policy.setAffiliations(
            self.a.jid, NODE, {"m@x.example": "member"}
        )))
        self.assertEqual(self.sync(), 0)
        self.assertEqual(self.affiliations(NODE)["m@x.example"], Affiliation.MEMBER)

    def test_badEntriesReported(self) -> None:
        """
        A file that is not a mapping of nodes to JID lists fails the sync; a bad JID inside a
        good file is skipped with a warning while the others are applied.
        """
        with open(self.file, "w", encoding="utf-8") as f:
            f.write('["not", "a", "mapping"]')
        failure = self.failureResultOf(
            Deferred.fromCoroutine(syncWhitelists(self.a.engine, "docs"))
        )
        self.assertIn(".whitelists.json", str(failure.value))
        self.lists({NODE: ["@@bad", "g@x.example"]})
        self.assertEqual(self.sync(), 1)
        self.assertIn("g@x.example", self.affiliations(NODE))

    def test_serviceSyncsAtStartAndInterval(self) -> None:
        """
        The replication service syncs at start and again every C{whitelist_interval}, and a
        failed pass is logged without stopping the loop.
        """
        self.lists({NODE: ["u@x.example"]})
        service = ReplicationService(
            self.a.engine, {"docs": BackendSettings("docs", "spool", whitelistInterval=30.0)},
            self.clock,
        )
        service.startService()
        self.assertIn("u@x.example", self.affiliations(NODE))
        with open(self.file, "w", encoding="utf-8") as f:
            f.write("{broken")
        self.clock.advance(30)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.lists({NODE: []})
        self.clock.advance(30)
        self.assertNotIn("u@x.example", self.affiliations(NODE))
        self.successResultOf(service.stopService())
