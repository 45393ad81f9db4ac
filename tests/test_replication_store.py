"""
Conformance tests of L{IReplicationStore} for memory, SQLite and (when available) PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from hermod_component.interfaces import IReplicationStore
from hermod_component.model import Conflict, ParkedItem, VersionRecord
from hermod_component.replication.store import MemoryReplicationStore, replicationStoreFor
from hermod_component.storage.memory import MemoryStorage
from hermod_component.storage.sqlite import SQLiteStorage

_Base = TestCase if TYPE_CHECKING else object


class ReplicationStoreTestsMixin(_Base):  # type: ignore[valid-type,misc]
    """
    Behaviour every L{IReplicationStore} has; C{self.store} is set by the concrete class, each test is a coroutine.
    """

    store: IReplicationStore

    async def test_interface(self) -> None:
        """
        The store provides the interface.
        """
        self.assertTrue(verifyObject(IReplicationStore, self.store))

    async def test_positions(self) -> None:
        """
        Positions are saved per backend and replaced.
        """
        self.assertIsNone(await (self.store.getPosition("docs")))
        await (self.store.savePosition("docs", "3"))
        await (self.store.savePosition("docs", "4"))
        await (self.store.savePosition("ldap", None))
        self.assertEqual(await (self.store.getPosition("docs")), "4")
        self.assertEqual(
            await (self.store.listPositions()), [("docs", "4"), ("ldap", None)]
        )

    async def test_versions(self) -> None:
        """
        Versions are kept per backend and object, replaced by upserts.
        """
        await (self.store.saveVersions("docs", [
            VersionRecord("a", "1:1:x", "sha256:1"), VersionRecord("b", "1:2:x", "", True),
        ]))
        await (self.store.saveVersions("docs", [VersionRecord("a", "2:3:x", "sha256:2")]))
        found = await (self.store.getVersions("docs", ["a", "b", "c"]))
        self.assertEqual(found, {
            "a": VersionRecord("a", "2:3:x", "sha256:2"),
            "b": VersionRecord("b", "1:2:x", "", True),
        })
        self.assertEqual(await (self.store.getVersions("other", ["a"])), {})

    async def test_versionNodesAndSources(self) -> None:
        """
        The nodes an object was published to and the partner subscriptions it came through are
        kept with its version, in order, and replaced by an upsert like the rest.
        """
        record = VersionRecord(
            "a", "1:1:x", "sha256:1", nodes=("/docs/all", "/docs/tag/x"),
            sources=("pubsub.b.example /docs/all",),
        )
        await (self.store.saveVersions("docs", [record]))
        self.assertEqual(await (self.store.getVersions("docs", ["a"])), {"a": record})
        moved = VersionRecord("a", "2:2:x", "sha256:2", nodes=("/docs/tag/y", "/docs/all"))
        await (self.store.saveApplied({"docs": [moved]}, []))
        self.assertEqual(await (self.store.getVersions("docs", ["a"])), {"a": moved})

    async def test_partners(self) -> None:
        """
        Partner counters add up; the mark, last apply time and lag are replaced when given.
        """
        await (self.store.updatePartner("b.x", "/n", "10", {"received": 2, "applied": 1},
                                             5.0, 0.25))
        await (self.store.updatePartner("b.x", "/n", None, {"received": 1, "refused": 1},
                                             None, None))
        state = await (self.store.getPartner("b.x", "/n"))
        self.assertEqual(
            (state.mark, state.received, state.applied, state.refused, state.lastApplied,
             state.lag),
            ("10", 3, 1, 1, 5.0, 0.25),
        )
        self.assertEqual([p.partner for p in await (self.store.listPartners())], ["b.x"])
        self.assertEqual((await self.store.getPartner("c.x", "/n")).received, 0)

    async def test_discovered(self) -> None:
        """
        Discovered subscriptions are listed in order until set undiscovered; setting one twice
        keeps it once.
        """
        self.assertEqual(await self.store.listDiscovered(), [])
        await self.store.setDiscovered("c.x", "/n", True)
        await self.store.setDiscovered("b.x", "/m", True)
        await self.store.setDiscovered("b.x", "/m", True)
        self.assertEqual(await self.store.listDiscovered(), [("b.x", "/m"), ("c.x", "/n")])
        await self.store.setDiscovered("b.x", "/m", False)
        await self.store.setDiscovered("d.x", "/m", False)
        self.assertEqual(await self.store.listDiscovered(), [("c.x", "/n")])

    async def test_saveApplied(self) -> None:
        """
        Versions of several backends and partner updates are saved together, counters adding
        to what was there.
        """
        await self.store.updatePartner("b.x", "/n", "5", {"received": 1}, None, None)
        await self.store.saveApplied(
            {"docs": [VersionRecord("a", "1:1:x", "sha256:1")],
             "other": [VersionRecord("z", "1:2:x", "", True)], "empty": []},
            [("b.x", "/n", "9", {"received": 2, "applied": 2}, 7.0, 0.5),
             ("c.x", "/m", None, {"parked": 1}, None, None)],
        )
        self.assertEqual(await self.store.getVersions("docs", ["a"]),
                         {"a": VersionRecord("a", "1:1:x", "sha256:1")})
        self.assertEqual(await self.store.getVersions("other", ["z"]),
                         {"z": VersionRecord("z", "1:2:x", "", True)})
        state = await self.store.getPartner("b.x", "/n")
        self.assertEqual((state.mark, state.received, state.applied, state.lastApplied,
                          state.lag), ("9", 3, 2, 7.0, 0.5))
        other = await self.store.getPartner("c.x", "/m")
        self.assertEqual((other.mark, other.parked), (None, 1))

    async def test_parked(self) -> None:
        """
        Parked items keep their payload and reason; retries count attempts; removal reports.
        """
        parkedId = await (self.store.park(
            ParkedItem(0, "docs", "b.x", "/n", "child", b"<x/>", "parent p", "p", 0, 1.0)
        ))
        await (self.store.updateParked(parkedId, "still missing", "p"))
        [item] = await (self.store.listParked("docs"))
        self.assertEqual(
            (item.parkedId, item.payload, item.reason, item.attempts, item.waitingFor),
            (parkedId, b"<x/>", "still missing", 1, "p"),
        )
        self.assertEqual(await (self.store.listParked("other")), [])
        self.assertTrue(await (self.store.removeParked(parkedId)))
        self.assertFalse(await (self.store.removeParked(parkedId)))

    async def test_parkedAgain(self) -> None:
        """
        Parking the same payload of the same object from the same partner node again (a
        redelivery) updates the parked item instead of adding one; another payload, partner
        node or backend is parked apart.
        """
        first = await self.store.park(
            ParkedItem(0, "docs", "b.x", "/n", "o", b"<x/>", "apply failed: A", "", 0, 1.0))
        again = await self.store.park(
            ParkedItem(0, "docs", "b.x", "/n", "o", b"<x/>", "apply failed: B", "", 0, 2.0))
        self.assertEqual(again, first)
        [item] = await self.store.listParked("docs")
        self.assertEqual((item.reason, item.time), ("apply failed: B", 2.0))
        others = [
            ParkedItem(0, "docs", "b.x", "/n", "o", b"<y/>", "r", "", 0, 3.0),
            ParkedItem(0, "docs", "b.x", "/m", "o", b"<x/>", "r", "", 0, 3.0),
            ParkedItem(0, "docs", "c.x", "/n", "o", b"<x/>", "r", "", 0, 3.0),
            ParkedItem(0, "other", "b.x", "/n", "o", b"<x/>", "r", "", 0, 3.0),
        ]
        ids = [await self.store.park(item) for item in others]
        self.assertEqual(len({first, *ids}), 5)
        self.assertEqual(len(await self.store.listParked(None)), 5)

    async def test_conflicts(self) -> None:
        """
        Losing versions are kept with their payload.
        """
        await (self.store.addConflict("docs", Conflict("a", "2:1:c", "2:2:a", b"<l/>", 3.0)))
        self.assertEqual(
            await (self.store.listConflicts("docs")),
            [Conflict("a", "2:1:c", "2:2:a", b"<l/>", 3.0)],
        )
        self.assertEqual(await (self.store.listConflicts("x")), [])
        # The same two versions again (a batch delivered again): kept once.
        await (self.store.addConflict("docs", Conflict("a", "2:1:c", "2:2:a", b"<l/>", 4.0)))
        await (self.store.addConflict("docs", Conflict("a", "3:1:c", "2:2:a", b"<m/>", 5.0)))
        self.assertEqual(
            [(c.loser, c.time) for c in await self.store.listConflicts("docs")],
            [("2:1:c", 3.0), ("3:1:c", 5.0)],
        )


class MemoryReplicationStoreTests(ReplicationStoreTestsMixin, TestCase):
    """
    The memory store.
    """

    def setUp(self) -> None:
        self.store = MemoryReplicationStore()

    def test_memoryStorageGetsMemoryStore(self) -> None:
        """
        The memory storage engine is paired with the memory store.
        """
        self.assertIsInstance(replicationStoreFor(MemoryStorage()), MemoryReplicationStore)


class SQLiteReplicationStoreTests(ReplicationStoreTestsMixin, TestCase):
    """
    The store in an SQLite file, through the storage's pool (migration 002 applied at start).
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.directory = tempfile.mkdtemp()
        self.storage = SQLiteStorage(os.path.join(self.directory, "h.sqlite"), reactor)
        self.store = replicationStoreFor(self.storage)
        return self.storage.start()

    def tearDown(self) -> Deferred[None]:  # type: ignore[override]
        return self.storage.stop()


class PostgreSQLReplicationStoreTests(SQLiteReplicationStoreTests):
    """
    The store in a fresh database of a throwaway PostgreSQL server (see L{sharedPostgres}).
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        from hermod_component.storage.postgresql import PostgreSQLStorage
        from tests.test_storage import sharedPostgres

        server = sharedPostgres()
        name = "hermod_repl_" + os.urandom(4).hex()
        dsn = server.createDatabase(name)
        self.addCleanup(server.dropDatabase, name)
        self.storage = PostgreSQLStorage(dsn, reactor)  # type: ignore[assignment]
        self.store = replicationStoreFor(self.storage)
        return self.storage.start()

    def tearDown(self) -> Deferred[None]:  # type: ignore[override]
        return self.storage.stop()
