"""
Tests for the replication engine's guarantees, with replicas on memory storage and spool
directories, wired by a fake network that hands each notification to the subscribed engines.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from hermod_component.backends.spool import SpoolBackend
from hermod_component.config import PartnerSettings, PubSubSettings
from hermod_component.interfaces import IReplicationBackend
from hermod_component.model import Change, ChangeAction, Item
from hermod_component.policy import PubSubPolicy
from hermod_component.replication import engine as engineModule
from hermod_component.replication.codec import contentHash, encodeChange
from hermod_component.replication.engine import Received, ReplicationEngine
from hermod_component.replication.pump import ReplicationPump
from hermod_component.replication.store import MemoryReplicationStore
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import FailingCall

NODE = "/docs/all"


class Network:
    """
    Routes notifications between replicas; a replica that is offline gets nothing.
    """

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.offline: set[str] = set()


class WireNotifier:
    """
    An L{INotifier} whose publishes go straight to the subscribed replicas' engines.
    """

    def __init__(self, network: Network, sender: str) -> None:
        self.network = network
        self.sender = sender

    def publish(self, node: str, items: Sequence[Item], withPayload: bool, messageType: str,
                recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        """
        Deliver to each online recipient replica that has this node as a partner.
        """
        for jid, _ in recipients:
            replica = self.network.replicas.get(jid)
            if replica is None or jid in self.network.offline:
                continue
            partner = replica.engine.partnerFor(self.sender, node)
            if partner is not None:
                replica.engine.receive(
                    [Received(partner, item.itemId, item.payload) for item in items]
                )

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Replica:
    """
    One Hermod: policy on memory storage, a spool backend, an engine and a pump.
    """

    def __init__(self, network: Network, jid: str, clock: Clock,
                 partners: Sequence[tuple[str, str]] = ()) -> None:
        self.jid = jid
        self.clock = clock
        self.path = tempfile.mkdtemp()
        self.storage = MemoryStorage()
        self.policy = PubSubPolicy(self.storage, PubSubSettings(), jid, clock)
        self.policy.notifier = WireNotifier(network, jid)  # type: ignore[assignment]
        self.store = MemoryReplicationStore()
        self.backend = SpoolBackend("docs", self.path, NODE)
        self.partners = [PartnerSettings(p, NODE, "docs", role=role) for p, role in partners]
        self.engine = ReplicationEngine(
            self.policy, self.store, {"docs": self.backend}, self.partners, clock
        )
        self.pump = ReplicationPump(self.engine, self.backend, self.store, clock, interval=1)
        network.replicas[jid] = self

    def start(self, case: SynchronousTestCase) -> None:
        """
        Prepare the nodes and start the pump.
        """
        case.successResultOf(self.backend.start())
        case.successResultOf(Deferred.fromCoroutine(self.engine.prepare()))
        self.pump.startService()

    def subscribeTo(self, case: SynchronousTestCase, other: Replica) -> None:
        """
        Subscribe this replica's component JID to the other's node.
        """
        case.successResultOf(Deferred.fromCoroutine(
            other.policy.subscribe(self.jid, NODE, self.jid, None)
        ))

    def write(self, objectId: str, data: bytes, extension: str = ".xml") -> None:
        """
        The application writes an object file.
        """
        with open(os.path.join(self.path, objectId + extension), "wb") as f:
            f.write(data)
        # Give each write a distinct modification time, as a real clock would.
        stamp = os.stat(os.path.join(self.path, objectId + extension)).st_mtime_ns
        os.utime(os.path.join(self.path, objectId + extension),
                 ns=(stamp, stamp + len(os.listdir(self.path))))

    def read(self, objectId: str, extension: str = ".xml") -> bytes | None:
        """
        The object file's contents, or L{None}.
        """
        try:
            with open(os.path.join(self.path, objectId + extension), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def objects(self) -> list[str]:
        """
        The object files in the spool.
        """
        return sorted(n for n in os.listdir(self.path) if not n.startswith("."))

    def events(self, case: SynchronousTestCase) -> list[Any]:
        """
        The node's event log.
        """
        return case.successResultOf(self.storage.getEvents(NODE, None, 10_000))


def remoteItem(objectId: str, body: bytes, version: str, origin: str,
               previous: str = "", parent: str | None = None) -> bytes:
    """
    A change item as a partner would publish it.
    """
    return encodeChange(Change(
        objectId, ChangeAction.UPDATE, body, "application/xml", version=version,
        previous=previous, origin=origin, hops=(origin,), parent=parent,
        hash=contentHash(body, "application/xml"), updated=1.0,
    ))


def startedReplica(
    case: SynchronousTestCase, jid: str, partners: Sequence[tuple[str, str]] = ()
) -> Replica:
    """
    One started replica on a network of its own, its clock at a realistic time.
    """
    clock = Clock()
    clock.advance(1_700_000_000)
    replica = Replica(Network(), jid, clock, partners)
    replica.start(case)
    return replica


class EngineTests(SynchronousTestCase):
    """
    The guarantees of issue 5 on replicas wired in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.network = Network()

    def ring(self) -> tuple[Replica, Replica, Replica]:
        """
        A -> B -> C -> A: B follows A, C follows B, A follows C.
        """
        a = Replica(self.network, "a.example", self.clock, [("c.example", "publisher")])
        b = Replica(self.network, "b.example", self.clock, [("a.example", "publisher")])
        c = Replica(self.network, "c.example", self.clock, [("b.example", "publisher")])
        for replica in (a, b, c):
            replica.start(self)
        b.subscribeTo(self, a)
        c.subscribeTo(self, b)
        a.subscribeTo(self, c)
        return a, b, c

    def pumpAll(self, *replicas: Replica) -> None:
        """
        Let every pump run a pass.
        """
        self.clock.advance(1)

    def test_ringNoEcho(self) -> None:
        """
        A change on A reaches B and C through the ring and comes back to A without being
        applied or published again.
        """
        a, b, c = self.ring()
        a.write("doc1", b'<doc n="1"/>')
        self.pumpAll()
        self.assertEqual(b.read("doc1"), b'<doc n="1"/>')
        self.assertEqual(c.read("doc1"), b'<doc n="1"/>')
        self.pumpAll()
        self.pumpAll()
        self.assertEqual([e.itemId for e in a.events(self)], ["doc1"])
        self.assertEqual([e.itemId for e in b.events(self)], ["doc1"])
        self.assertEqual([e.itemId for e in c.events(self)], ["doc1"])
        counts = a.engine.counters[("c.example", NODE)]
        self.assertEqual((counts["received"], counts["applied"], counts["ignored"]), (1, 0, 1))
        self.assertEqual(a.engine.published + b.engine.published + c.engine.published, 1)

    def test_exactlyOnceEffect(self) -> None:
        """
        The same item delivered five times changes the database once.
        """
        b = Replica(self.network, "b.example", self.clock, [("a.example", "publisher")])
        b.start(self)
        applied: list[str] = []
        original, originalMany = b.backend.apply, b.backend.applyMany

        def counting(change: Change) -> Deferred[None]:
            applied.append(change.objectId)
            return original(change)

        def countingMany(changes: list[Change]) -> Deferred[list[Exception | None]]:
            applied.extend(change.objectId for change in changes)
            return originalMany(changes)

        b.backend.apply = counting  # type: ignore[method-assign]
        b.backend.applyMany = countingMany  # type: ignore[method-assign]
        payload = remoteItem("x", b"<x/>", "1:5:a.example", "a.example")
        for _ in range(5):
            self.successResultOf(b.engine.receive([Received(b.partners[0], "x", payload)]))
        self.assertEqual(applied, ["x"])
        self.assertEqual(b.read("x"), b"<x/>")
        self.assertEqual(len(b.events(self)), 1)
        counts = b.engine.counters[("a.example", NODE)]
        self.assertEqual((counts["received"], counts["applied"], counts["ignored"]), (5, 1, 4))

    def test_concurrentEditsConverge(self) -> None:
        """
        Concurrent edits of one object on A and C (while they cannot see each other) end with
        the same winner on A, B and C, and the loser is kept and listed.
        """
        a, b, c = self.ring()
        a.write("doc", b'<doc v="base"/>')
        self.pumpAll()
        self.assertEqual(c.read("doc"), b'<doc v="base"/>')
        self.network.offline.update({"a.example", "b.example", "c.example"})
        a.write("doc", b'<doc v="from-a"/>')
        c.write("doc", b'<doc v="from-c"/>')
        self.pumpAll()
        self.network.offline.clear()
        # Back online: each side pages the other's current items (as the refresh would).
        for replica, partner in ((b, a), (c, b), (a, c), (b, a), (c, b)):
            items = self.successResultOf(partner.storage.getItems(NODE))
            self.successResultOf(replica.engine.receive(
                [Received(replica.partners[0], i.itemId, i.payload) for i in items]
            ))
        results = {r.jid: r.read("doc") for r in (a, b, c)}
        self.assertEqual(len(set(results.values())), 1, results)
        # Equal counters and equal times fall to the origin: c.example > a.example.
        self.assertEqual(results["a.example"], b'<doc v="from-c"/>')
        conflicts = self.successResultOf(a.store.listConflicts("docs"))
        self.assertEqual([(x.objectId, x.loser.endswith(":a.example")) for x in conflicts],
                         [("doc", True)])
        self.assertIn(b"from-a", conflicts[0].payload)

    def test_readOnlyPartnerRefused(self) -> None:
        """
        Items from a partner with the member affiliation are refused and counted; making it a
        publisher at run time makes its items accepted.
        """
        b = Replica(self.network, "b.example", self.clock, [("a.example", "member")])
        b.start(self)
        partner = b.partners[0]
        payload = remoteItem("x", b"<x/>", "1:5:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(partner, "x", payload)]))
        self.assertIsNone(b.read("x"))
        self.assertEqual(b.engine.counters[("a.example", NODE)]["refused"], 1)
        state = self.successResultOf(b.store.getPartner("a.example", NODE))
        self.assertEqual(state.refused, 1)
        self.successResultOf(Deferred.fromCoroutine(
            b.policy.setAffiliations(b.jid, NODE, {"a.example": "publisher"})
        ))
        self.successResultOf(b.engine.receive([Received(partner, "x", payload)]))
        self.assertEqual(b.read("x"), b"<x/>")

    def test_parentsBeforeChildren(self) -> None:
        """
        A child whose parent is missing is parked (nothing written), then applied when the
        parent arrives, leaving the parked queue empty.
        """
        b = Replica(self.network, "b.example", self.clock, [("a.example", "publisher")])
        b.start(self)
        partner = b.partners[0]
        child = remoteItem("kid", b'<kid parent="mum"/>', "1:5:a.example", "a.example",
                           parent="mum")
        self.successResultOf(b.engine.receive([Received(partner, "kid", child)]))
        self.assertIsNone(b.read("kid"))
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertEqual((parked.objectId, parked.waitingFor), ("kid", "mum"))
        self.assertEqual(self.successResultOf(b.engine.retryAllParked()), 0)
        self.assertEqual(self.successResultOf(b.store.listParked(None))[0].attempts, 1)
        mum = remoteItem("mum", b"<mum/>", "1:6:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(partner, "mum", mum)]))
        self.assertEqual(b.read("kid"), b'<kid parent="mum"/>')
        self.assertEqual(self.successResultOf(b.store.listParked(None)), [])

    def test_brokenItemParked(self) -> None:
        """
        A broken item is parked with its reason and payload, counted, and stays until an
        operator discards it.
        """
        b = Replica(self.network, "b.example", self.clock, [("a.example", "publisher")])
        b.start(self)
        self.successResultOf(b.engine.receive(
            [Received(b.partners[0], "bad", b'<entry xmlns="http://www.w3.org/2005/Atom"/>')]
        ))
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertIn("broken: no sync element", parked.reason)
        self.assertEqual(parked.waitingFor, "")
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).parked, 1)
        self.successResultOf(b.engine.retryAllParked())
        self.assertEqual(len(self.successResultOf(b.store.listParked(None))), 1)
        self.assertTrue(self.successResultOf(b.store.removeParked(parked.parkedId)))

    def test_positionSavedAfterPublish(self) -> None:
        """
        When publishing fails the position is not saved, and the next pass publishes the same
        changes; nothing is lost.
        """
        a = Replica(self.network, "a.example", self.clock)
        a.start(self)
        a.write("one", b"<one/>")
        original = a.policy.publish
        calls: list[int] = []

        async def failing(*args: Any) -> Any:
            calls.append(1)
            raise RuntimeError("storage down")

        a.policy.publish = failing  # type: ignore[method-assign,assignment]
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(self.successResultOf(a.store.getPosition("docs")))
        a.policy.publish = original  # type: ignore[method-assign]
        # A restarted pump (fresh backend state) resumes from the saved (absent) position.
        a.pump.stopService()
        a.backend = SpoolBackend("docs", a.path, NODE)
        a.engine.backends["docs"] = a.backend
        a.pump = ReplicationPump(a.engine, a.backend, a.store, self.clock, interval=1)
        a.pump.startService()
        self.clock.advance(0)
        self.assertEqual([e.itemId for e in a.events(self)], ["one"])
        self.assertIsNotNone(self.successResultOf(a.store.getPosition("docs")))

    def test_appliedNotRecapturedAfterRestart(self) -> None:
        """
        After a restart the spool's index does not know applied files, yet the engine does not
        publish them as local changes (their content is the version it holds).
        """
        b = Replica(self.network, "b.example", self.clock, [("a.example", "publisher")])
        b.start(self)
        self.clock.advance(1)
        payload = remoteItem("x", b"<x/>", "1:5:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(b.partners[0], "x", payload)]))
        b.pump.stopService()
        restarted = SpoolBackend("docs", b.path, NODE)
        b.engine.backends["docs"] = restarted
        pump = ReplicationPump(b.engine, restarted, b.store, self.clock, interval=1)
        pump.startService()
        self.clock.advance(0)
        self.assertEqual(b.engine.published, 0)
        self.assertEqual(len(b.events(self)), 1)


class OneObjectTwiceTests(SynchronousTestCase):
    """
    Items of one batch are applied in runs handed to the backend together; an object's
    second item in a batch is decided after its first one is applied.
    """

    def test_newerThenOlder(self) -> None:
        """
        An older version of an object after a newer one, in the same batch, is ignored: the
        file and the record keep the newer one.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        partner = b.partners[0]
        self.successResultOf(b.engine.receive([
            Received(partner, "x", remoteItem("x", b'<x v="2"/>', "2:6:a.example", "a.example")),
            Received(partner, "y", remoteItem("y", b"<y/>", "1:6:a.example", "a.example")),
            Received(partner, "x", remoteItem("x", b'<x v="1"/>', "1:5:a.example", "a.example")),
        ]))
        self.assertEqual((b.read("x"), b.read("y")), (b'<x v="2"/>', b"<y/>"))
        counts = b.engine.counters[("a.example", NODE)]
        self.assertEqual((counts["applied"], counts["ignored"]), (2, 1))
        self.successResultOf(b.engine.flush())
        versions = self.successResultOf(b.store.getVersions("docs", ["x"]))
        self.assertEqual(versions["x"].version, "2:6:a.example")

    def test_parkedThenNewer(self) -> None:
        """
        When an object's first item in a batch is parked (its parent is missing), its second
        one is decided against what was held before, and applied.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        partner = b.partners[0]
        self.successResultOf(b.engine.receive([
            Received(partner, "x", remoteItem("x", b'<x parent="p"/>', "1:5:a.example",
                                              "a.example", parent="p")),
            Received(partner, "x", remoteItem("x", b'<x v="2"/>', "2:6:a.example", "a.example")),
        ]))
        self.assertEqual(b.read("x"), b'<x v="2"/>')
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertEqual(parked.waitingFor, "p")


class BackendFailureTests(SynchronousTestCase):
    """
    Failures that are not the item's fault neither lose items nor move the partner mark
    past them.
    """

    def test_backendFailureParks(self) -> None:
        """
        A change the backend fails on for a reason of its own (here the spool finds a
        directory where the object's file goes) is parked with the error as its reason and
        the failure logged; the changes around it are applied, and the batch ends with the
        partner mark saved. Once the cause is gone, retrying applies it.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        os.mkdir(os.path.join(b.path, "blocked.xml"))
        partner = b.partners[0]
        self.successResultOf(b.engine.receive([
            Received(partner, name, remoteItem(name, f"<{name}/>".encode(), "1:5:a.example",
                                               "a.example"), archiveId=f"a{n}")
            for n, name in enumerate(["first", "blocked", "last"])
        ]))
        self.assertEqual(len(self.flushLoggedErrors(IsADirectoryError)), 1)
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertEqual(parked.objectId, "blocked")
        self.assertTrue(parked.reason.startswith("apply failed: IsADirectoryError"))
        counts = b.engine.counters[("a.example", NODE)]
        self.assertEqual((counts["applied"], counts["parked"]), (2, 1))
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark,
                         "a2")
        os.rmdir(os.path.join(b.path, "blocked.xml"))
        self.assertTrue(self.successResultOf(b.engine.retryParked(parked.parkedId)))
        self.assertEqual(b.objects(), ["blocked.xml", "first.xml", "last.xml"])
        self.assertEqual(self.successResultOf(b.store.listParked(None)), [])

    def test_retractionFailureParks(self) -> None:
        """
        A retraction (the object left the partner's node) whose removal the backend fails on
        is parked and logged; retried once the cause is gone, it removes the object.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        partner = b.partners[0]
        self.successResultOf(b.engine.receive([Received(
            partner, "x", remoteItem("x", b"<x/>", "1:5:a.example", "a.example"))]))
        original = b.backend.apply

        def failingDelete(change: Change) -> Deferred[None]:
            if change.action is ChangeAction.DELETE:
                return fail(PermissionError("read-only file system"))
            return original(change)

        b.backend.apply = failingDelete  # type: ignore[method-assign]
        self.successResultOf(b.engine.receive([Received(partner, "x", b"", retracted=True)]))
        self.assertEqual(len(self.flushLoggedErrors(PermissionError)), 1)
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertTrue(parked.reason.startswith("apply failed: PermissionError"))
        self.assertEqual(b.read("x"), b"<x/>")
        b.backend.apply = original  # type: ignore[method-assign]
        self.assertTrue(self.successResultOf(b.engine.retryParked(parked.parkedId)))
        self.assertIsNone(b.read("x"))
        self.assertEqual(self.successResultOf(b.store.listParked(None)), [])

    def test_failedFlushKept(self) -> None:
        """
        When saving the versions and marks fails, they are kept and saved by the next flush.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        original = b.store.saveApplied
        b.store.saveApplied = lambda *args: fail(  # type: ignore[method-assign]
            RuntimeError("disk I/O error"))
        item = Received(b.partners[0], "x", remoteItem("x", b"<x/>", "1:5:a.example",
                                                       "a.example"), archiveId="a1")
        self.failureResultOf(b.engine.receive([item]), RuntimeError)
        b.store.saveApplied = original  # type: ignore[method-assign]
        self.successResultOf(b.engine.flush())
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark,
                         "a1")
        versions = self.successResultOf(b.store.getVersions("docs", ["x"]))
        self.assertEqual(versions["x"].version, "1:5:a.example")

    def test_runFailureParksRun(self) -> None:
        """
        When the backend cannot say what became of a run (its applyMany fails), every change
        of the run is parked with the error, which is logged once.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        b.backend.applyMany = lambda changes: fail(  # type: ignore[method-assign]
            RuntimeError("database gone"))
        self.successResultOf(b.engine.receive([
            Received(b.partners[0], name, remoteItem(name, f"<{name}/>".encode(),
                                                     "1:5:a.example", "a.example"))
            for name in ["x", "y"]
        ]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        parked = self.successResultOf(b.store.listParked(None))
        self.assertEqual([(p.objectId, p.reason) for p in parked],
                         [("x", "apply failed: RuntimeError('database gone')"),
                          ("y", "apply failed: RuntimeError('database gone')")])

    def test_failedBatchKeepsMark(self) -> None:
        """
        A batch that fails as a whole (here republishing into the own node) saves neither
        the partner mark it reached nor the versions it applied: delivered again, its items
        are applied and republished.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        self.successResultOf(b.store.updatePartner("a.example", NODE, "a0", {}, None, None))
        storage = FailingCall(b.policy, "publish")
        item = Received(b.partners[0], "x", remoteItem("x", b"<x/>", "1:5:a.example",
                                                       "a.example"), archiveId="a1")
        self.failureResultOf(b.engine.receive([item]), RuntimeError)
        self.successResultOf(b.engine.flush())
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark,
                         "a0")
        self.assertEqual(self.successResultOf(b.store.getVersions("docs", ["x"])), {})
        storage.failing = False
        self.successResultOf(b.engine.receive([item]))
        self.assertEqual([e.itemId for e in b.events(self)], ["x"])
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark,
                         "a1")


class RemovedPartnerTests(SynchronousTestCase):
    """
    Parked items of a partner subscription removed at run time.
    """

    def test_parkedChildKeepsWaiting(self) -> None:
        """
        A child parked for its parent stays waiting for it when retried while its partner
        subscription is gone, and is applied once the partner is back and the parent came.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        partner = b.partners[0]
        self.successResultOf(b.engine.receive([Received(partner, "kid", remoteItem(
            "kid", b'<kid parent="mum"/>', "1:5:a.example", "a.example", parent="mum"))]))
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertTrue(b.engine.removePartner(partner))
        self.assertFalse(self.successResultOf(b.engine.retryParked(parked.parkedId)))
        [still] = self.successResultOf(b.store.listParked(None))
        self.assertEqual((still.reason, still.waitingFor),
                         ("partner no longer configured", "mum"))
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(
            b.engine.addPartner(partner))))
        self.successResultOf(b.engine.receive([Received(partner, "mum", remoteItem(
            "mum", b"<mum/>", "1:6:a.example", "a.example"))]))
        self.assertEqual(b.read("kid"), b'<kid parent="mum"/>')
        self.assertEqual(self.successResultOf(b.store.listParked(None)), [])


@implementer(IReplicationBackend)
class OneAtATime:
    """
    A backend with L{IReplicationBackend.apply} only (no L{IBatchApply}), over a spool.
    """

    def __init__(self, spool: SpoolBackend) -> None:
        self.spool = spool
        self.name, self.nodes = spool.name, spool.nodes
        self.applied: list[str] = []

    def apply(self, change: Change) -> Deferred[None]:
        self.applied.append(change.objectId)
        return self.spool.apply(change)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spool, name)


class OneAtATimeTests(SynchronousTestCase):
    """
    A backend without L{IBatchApply} gets one L{IReplicationBackend.apply} call per change.
    """

    def test_applyEach(self) -> None:
        """
        Each change is applied through C{apply}, in order; one whose parent is missing is
        parked and applied once the parent arrives in the same batch.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        backend = OneAtATime(b.backend)
        b.engine.backends["docs"] = backend
        partner = b.partners[0]
        self.successResultOf(b.engine.receive([
            Received(partner, "kid", remoteItem("kid", b'<kid parent="mum"/>', "1:5:a.example",
                                                "a.example", parent="mum")),
            Received(partner, "mum", remoteItem("mum", b"<mum/>", "1:6:a.example",
                                                "a.example")),
        ]))
        self.assertEqual(backend.applied, ["kid", "mum", "kid"])
        self.assertEqual((b.read("kid"), b.read("mum")), (b'<kid parent="mum"/>', b"<mum/>"))
        self.assertEqual(self.successResultOf(b.store.listParked(None)), [])

    def test_failureOfOne(self) -> None:
        """
        A change whose C{apply} fails unexpectedly is parked with the error and logged; the
        changes after it are applied.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        backend = OneAtATime(b.backend)

        def apply(change: Change) -> Deferred[None]:
            if change.objectId == "bad":
                raise RuntimeError("connection reset")
            return b.backend.apply(change)

        backend.apply = apply  # type: ignore[method-assign]
        b.engine.backends["docs"] = backend
        self.successResultOf(b.engine.receive([
            Received(b.partners[0], name, remoteItem(name, f"<{name}/>".encode(),
                                                     "1:5:a.example", "a.example"))
            for name in ["bad", "good"]
        ]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertEqual(parked.objectId, "bad")
        self.assertIn("connection reset", parked.reason)
        self.assertEqual(b.objects(), ["good.xml"])


class LocalAndRemoteTests(SynchronousTestCase):
    """
    Publishing local changes and applying partner items do not interleave.
    """

    def test_localPublishWaitsForApply(self) -> None:
        """
        A local change captured while a partner item of the same object is being applied is
        published after it, with a version newer than the applied one, which it never
        overwrites with an older record.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        gate: Deferred[None] = Deferred()
        original = b.backend.applyMany

        def gated(changes: list[Change]) -> Deferred[list[Exception | None]]:
            return gate.addCallback(lambda _: original(changes))

        b.backend.applyMany = gated  # type: ignore[method-assign]
        remote = remoteItem("x", b'<x from="a"/>', "1:5:a.example", "a.example")
        applying = b.engine.receive([Received(b.partners[0], "x", remote)])
        publishing = Deferred.fromCoroutine(b.engine.publishLocal(
            "docs", [Change("x", ChangeAction.UPDATE, b'<x from="b"/>', "application/xml")]
        ))
        self.assertNoResult(publishing)
        gate.callback(None)
        self.successResultOf(applying)
        self.assertEqual(self.successResultOf(publishing), 1)
        record = self.successResultOf(b.store.getVersions("docs", ["x"]))["x"]
        self.assertTrue(record.version.startswith("2:"), record.version)
        self.assertTrue(record.version.endswith(":b.example"), record.version)


    def test_flushWaitsForRepublish(self) -> None:
        """
        A flush (the periodic one of the replication service) asked while a batch is being
        republished into the own node saves nothing of that batch until the republish is done:
        a replica killed meanwhile must restart from the old mark and apply the item again,
        not skip an item its own node never got.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        gate: Deferred[None] = Deferred()
        original = b.policy.publish

        def gated(requester: str, node: str, items: Any, options: Any) -> Any:
            return gate.addCallback(
                lambda _: Deferred.fromCoroutine(original(requester, node, items, options))
            )

        b.policy.publish = gated  # type: ignore[method-assign,assignment]
        remote = remoteItem("x", b"<x/>", "1:5:a.example", "a.example")
        applying = b.engine.receive([Received(b.partners[0], "x", remote, archiveId="42")])
        self.assertEqual(b.read("x"), b"<x/>")  # applied, its republish waiting
        flushing = Deferred.fromCoroutine(b.engine.flush())
        self.assertNoResult(flushing)
        self.assertIsNone(self.successResultOf(b.store.getPartner("a.example", NODE)).mark)
        self.assertEqual(self.successResultOf(b.store.getVersions("docs", ["x"])), {})
        gate.callback(None)
        self.successResultOf(applying)
        self.successResultOf(flushing)
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark, "42")
        self.assertEqual([e.itemId for e in b.events(self)], ["x"])


class ReceiveBurstTests(SynchronousTestCase):
    """
    Many notifications arriving while a batch is being applied.
    """

    def test_manyNotificationsDuringSlowApply(self) -> None:
        """
        Two thousand notifications of one item each, received while the first item's apply
        waits, are all applied once it finishes, every receive's L{Deferred} fires, and the
        engine still applies and publishes afterwards: the queued drains do not overflow
        the stack and leave the lock held (live changes stalled until a restart).
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        gate: Deferred[None] = Deferred()
        original = b.backend.applyMany
        calls = [0]

        def gatedOnce(changes: list[Change]) -> Deferred[list[Exception | None]]:
            calls[0] += 1
            if calls[0] == 1:
                return gate.addCallback(lambda _: original(changes))
            return original(changes)

        b.backend.applyMany = gatedOnce  # type: ignore[method-assign]
        partner = b.partners[0]
        count = 2000
        received = [
            b.engine.receive([Received(
                partner, f"o{n}",
                remoteItem(f"o{n}", f'<o n="{n}"/>'.encode(), f"1:{n}:a.example", "a.example"),
            )])
            for n in range(count)
        ]
        self.assertNoResult(received[0])
        gate.callback(None)
        for d in received:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(b.engine.counters[("a.example", NODE)]["applied"], count)
        self.assertEqual(b.read(f"o{count - 1}"), f'<o n="{count - 1}"/>'.encode())
        later = remoteItem("late", b"<late/>", "1:9999:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(partner, "late", later)]))
        self.assertEqual(b.read("late"), b"<late/>")
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(b.engine.publishLocal(
            "docs", [Change("mine", ChangeAction.UPDATE, b"<mine/>", "application/xml")]
        ))), 1)

    def test_emptyReceiveFires(self) -> None:
        """
        Receiving nothing (no items, no mark) fires at once.
        """
        clock = Clock()
        b = Replica(Network(), "b.example", clock, [("a.example", "publisher")])
        b.start(self)
        self.assertIsNone(self.successResultOf(b.engine.receive([])))

    def test_failedBatchFailsItsReceivers(self) -> None:
        """
        When applying a batch fails, the receives of that batch fail with its error and the
        next items are applied as usual.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        original = b.store.saveApplied

        def broken(*args: Any) -> Deferred[None]:
            b.store.saveApplied = original  # type: ignore[method-assign]
            raise OSError("disk full")

        b.store.saveApplied = broken  # type: ignore[method-assign]
        partner = b.partners[0]
        first = remoteItem("x", b"<x/>", "1:1:a.example", "a.example")
        failure = self.failureResultOf(b.engine.receive([Received(partner, "x", first)]))
        failure.trap(OSError)
        second = remoteItem("y", b"<y/>", "1:2:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(partner, "y", second)]))
        self.assertEqual(b.read("y"), b"<y/>")


class BatchCommitTests(SynchronousTestCase):
    """
    A page of partner items is saved in one store transaction with its mark.
    """

    def test_onePageOneTransaction(self) -> None:
        """
        Receiving 50 items with a mark saves their versions and the partner mark and counters
        in a single L{IReplicationStore.saveApplied} call, and no other version write.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        calls: list[str] = []
        for name in ("saveApplied", "saveVersions", "updatePartner"):
            original = getattr(b.store, name)

            def recording(*args: Any, _name: str = name, _original: Any = original) -> Any:
                calls.append(_name)
                return _original(*args)

            setattr(b.store, name, recording)
        items = [
            Received(b.partners[0], f"o{n}",
                     remoteItem(f"o{n}", f'<o n="{n}"/>'.encode(), f"1:{n}:a.example",
                                "a.example"), archiveId=f"arch{n}")
            for n in range(50)
        ]
        self.successResultOf(b.engine.receive(items, mark=(b.partners[0], "arch49")))
        self.assertEqual(calls, ["saveApplied"])
        self.assertEqual(len(self.successResultOf(b.store.getVersions(
            "docs", [f"o{n}" for n in range(50)]))), 50)
        state = self.successResultOf(b.store.getPartner("a.example", NODE))
        self.assertEqual((state.mark, state.received, state.applied), ("arch49", 50, 50))
        self.assertEqual(b.read("o49"), b'<o n="49"/>')


class OverlapTests(SynchronousTestCase):
    """
    A batch is applied while the one before it is saved (its republish into the own node,
    its versions and marks), with the same guarantees as one after the other. These batches
    are small: any size is saved while the next is applied here.
    """

    def setUp(self) -> None:
        self.patch(engineModule, "OVERLAP_ENTRIES", 1)

    def gatedReplica(self) -> tuple[Replica, list[Deferred[None]]]:
        """
        A replica whose republishes each wait for a gate of their own, opened by the test.
        """
        b = startedReplica(self, "b.example", [("a.example", "publisher")])
        gates: list[Deferred[None]] = []
        original = b.policy.publish

        def gated(requester: str, node: str, items: Any, options: Any) -> Any:
            gate: Deferred[None] = Deferred()
            gates.append(gate)
            return gate.addCallback(
                lambda _: Deferred.fromCoroutine(original(requester, node, items, options))
            )

        b.policy.publish = gated  # type: ignore[method-assign,assignment]
        return b, gates

    def page(self, b: Replica, start: int, names: Sequence[str],
             version: int = 5) -> list[Received]:
        """
        Archive items of objects C{names}, their archive ids counting from C{start}.
        """
        return [
            Received(b.partners[0], name, remoteItem(name, f'<{name} v="{version}"/>'.encode(),
                                                     f"1:{version}:a.example", "a.example"),
                     archiveId=f"a{start + n}")
            for n, name in enumerate(names)
        ]

    def test_nextAppliedWhileSaving(self) -> None:
        """
        The second page is applied (its files written) while the first one's republish
        waits; nothing of the second is saved before the first is, and both marks, versions
        and republished items follow in order once the republishes are done.
        """
        b, gates = self.gatedReplica()
        first = b.engine.receive(self.page(b, 1, ["x", "y"]))
        second = b.engine.receive(self.page(b, 3, ["z"]))
        self.assertEqual(len(gates), 1)
        self.assertEqual(b.read("z"), b'<z v="5"/>')  # applied while the first is saved
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertIsNone(self.successResultOf(b.store.getPartner("a.example", NODE)).mark)
        gates[0].callback(None)
        self.successResultOf(first)
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark, "a2")
        self.assertEqual(sorted(self.successResultOf(b.store.getVersions("docs", ["x", "y", "z"]))),
                         ["x", "y"])
        self.assertNoResult(second)
        gates[1].callback(None)
        self.successResultOf(second)
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark, "a3")
        self.assertEqual([e.itemId for e in b.events(self)], ["x", "y", "z"])

    def test_nextKnowsVersionsBeingSaved(self) -> None:
        """
        A page applied while the one before is saved knows the versions that one applied:
        the same version again is ignored (not applied nor republished twice), a newer one
        is applied, and the newest version is the one saved.
        """
        b, gates = self.gatedReplica()
        first = b.engine.receive(self.page(b, 1, ["x", "y"]))
        again = self.page(b, 3, ["x"])
        newer = self.page(b, 4, ["y"], version=6)
        second = b.engine.receive(again + newer)
        gates[0].callback(None)
        gates[1].callback(None)
        self.successResultOf(first)
        self.successResultOf(second)
        counts = b.engine.counters[("a.example", NODE)]
        self.assertEqual((counts["applied"], counts["ignored"]), (3, 1))
        self.assertEqual(b.read("y"), b'<y v="6"/>')
        versions = self.successResultOf(b.store.getVersions("docs", ["x", "y"]))
        self.assertEqual((versions["x"].version, versions["y"].version),
                         ("1:5:a.example", "1:6:a.example"))
        self.assertEqual([e.itemId for e in b.events(self)], ["x", "y", "y"])

    def test_failedSaveFailsNext(self) -> None:
        """
        When saving a page fails, the page applied meanwhile fails with it: neither saves
        its mark (which would skip the failed page's items) nor holds its versions, and
        delivered again, both are applied and republished.
        """
        b, gates = self.gatedReplica()
        self.successResultOf(b.store.updatePartner("a.example", NODE, "a0", {}, None, None))
        first = b.engine.receive(self.page(b, 1, ["x"]))
        second = b.engine.receive(self.page(b, 2, ["y"]))
        self.assertEqual(b.read("y"), b'<y v="5"/>')
        gates[0].errback(RuntimeError("storage gone"))
        self.failureResultOf(first, RuntimeError)
        self.failureResultOf(second, RuntimeError)
        self.assertEqual(len(gates), 1)  # the second page was not republished
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark, "a0")
        self.assertEqual(self.successResultOf(b.store.getVersions("docs", ["x", "y"])), {})
        again = b.engine.receive(self.page(b, 1, ["x", "y"]))
        gates[1].callback(None)
        self.successResultOf(again)
        self.assertEqual([e.itemId for e in b.events(self)], ["x", "y"])
        self.assertEqual(self.successResultOf(b.store.getPartner("a.example", NODE)).mark, "a2")

    def test_smallBatchSavedFirst(self) -> None:
        """
        A batch of fewer than L{engineModule.OVERLAP_ENTRIES} entries (live notifications) is saved
        before the next one is applied; a larger one (an archive page) is not.
        """
        self.patch(engineModule, "OVERLAP_ENTRIES", 3)
        b, gates = self.gatedReplica()
        small = b.engine.receive(self.page(b, 1, ["x", "y"]))
        after = b.engine.receive(self.page(b, 3, ["z"]))
        self.assertIsNone(b.read("z"))
        gates[0].callback(None)
        self.successResultOf(small)
        self.assertEqual(b.read("z"), b'<z v="5"/>')
        gates[1].callback(None)
        self.successResultOf(after)
        large = b.engine.receive(self.page(b, 4, ["p", "q", "r"]))
        b.engine.receive(self.page(b, 7, ["s"]))
        self.assertEqual(b.read("s"), b'<s v="5"/>')
        self.assertNoResult(large)

    def test_retryWaitsForSave(self) -> None:
        """
        A page whose save retries parked items (a child waiting for the parent it applied)
        is saved, retries included, before the next page is applied.
        """
        b, gates = self.gatedReplica()
        partner = b.partners[0]
        child = Received(partner, "child", remoteItem(
            "child", b"<child/>", "1:5:a.example", "a.example", parent="parent"))
        self.successResultOf(b.engine.receive([child]))  # parked: nothing to republish
        self.assertEqual(len(self.successResultOf(b.store.listParked(None))), 1)
        parent = b.engine.receive([Received(partner, "parent", remoteItem(
            "parent", b"<parent/>", "1:6:a.example", "a.example"))])
        later = b.engine.receive(self.page(b, 1, ["z"]))
        self.assertIsNone(b.read("z"))  # waits for the parent's save and the retry
        gates[0].callback(None)  # the parent's republish
        self.assertIsNone(b.read("z"))
        gates[1].callback(None)  # the retried child's
        self.successResultOf(parent)
        self.assertEqual(b.read("child"), b"<child/>")
        self.assertEqual(b.read("z"), b'<z v="5"/>')
        gates[2].callback(None)
        self.successResultOf(later)
        self.assertEqual([e.itemId for e in b.events(self)], ["parent", "child", "z"])


class PublishSizeTests(SynchronousTestCase):
    """
    Hermod never publishes more than L{MAX_PUBLISH_BYTES} of payload in one request.
    """

    def test_largeBatchSplit(self) -> None:
        """
        A captured batch larger than the limit is published in several requests, each within
        it, all items published in order.
        """
        from hermod_component.replication import engine as engineModule

        self.patch(engineModule, "MAX_PUBLISH_BYTES", 2000)
        a = startedReplica(self, "a.example")
        requests: list[list[str | None]] = []
        sizes: list[int] = []
        original = a.policy.publish

        def recording(requester: str, node: str, items: Any, options: Any) -> Any:
            requests.append([i for i, _ in items])
            sizes.append(sum(len(p) for _, p in items))
            return original(requester, node, items, options)

        a.policy.publish = recording  # type: ignore[method-assign,assignment]
        changes = [Change(f"o{n:02d}", ChangeAction.CREATE, f'<o n="{n}"/>'.encode(),
                          "application/xml") for n in range(20)]
        published = self.successResultOf(
            Deferred.fromCoroutine(a.engine.publishLocal("docs", changes))
        )
        self.assertEqual(published, 20)
        self.assertGreater(len(requests), 1)
        self.assertTrue(all(size <= 2000 for size in sizes), sizes)
        self.assertEqual([i for r in requests for i in r], [f"o{n:02d}" for n in range(20)])
        self.assertEqual(len(self.successResultOf(a.storage.getItems(NODE))), 20)


class PumpWakeTests(SynchronousTestCase):
    """
    A wake-up during a pass is not lost.
    """

    def test_wakeDuringPass(self) -> None:
        """
        When the backend wakes the pump while a pass is publishing, the next pass starts as
        soon as that one ends, not a poll interval later, and captures the new change.
        """
        a = startedReplica(self, "a.example")
        clock = a.clock
        gate: Deferred[None] = Deferred()
        self.successResultOf(a.engine._lock.acquire())  # the engine is busy applying
        gate.addCallback(lambda _: a.engine._lock.release())
        a.write("one", b"<one/>")
        clock.advance(1)  # a pass starts, captures "one" and waits for the lock
        passes = a.pump.passes
        a.write("two", b"<two/>")
        a.pump.wake()
        gate.callback(None)  # the pass ends
        self.assertEqual(a.pump.passes, passes + 1)
        clock.advance(0)
        self.assertEqual(a.pump.passes, passes + 2)
        self.assertEqual(a.engine.published, 2)
