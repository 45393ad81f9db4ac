"""
Tests for group commit of publishes on the SQL engines.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.trial.unittest import TestCase

from hermod_component.errors import NodeNotFound
from hermod_component.model import Item, Node, NodeConfig
from hermod_component.storage.postgresql import PostgreSQLStorage
from hermod_component.storage.sqlite import SQLiteStorage
from tests.test_storage import sharedPostgres


class GroupCommitTestsMixin:
    """
    Publishes made while another is being written share a transaction, yet each one succeeds
    or fails on its own, in order.
    """

    storage: SQLiteStorage | PostgreSQLStorage

    async def test_concurrentPublishes(self) -> None:
        """
        Many concurrent publishes to two nodes, one of them to a missing node: that one fails
        with NodeNotFound, the others are all stored, in order, and batched.
        """
        case: TestCase = self  # type: ignore[assignment]
        await self.storage.createNode(Node("a", NodeConfig(), "o@x", 0.0))
        await self.storage.createNode(Node("b", NodeConfig(), "o@x", 0.0))
        batches: list[int] = []
        original = self.storage._storeBatch

        def counting(cursor: object, requests: list[object]) -> object:
            batches.append(len(requests))
            return original(cursor, requests)  # type: ignore[arg-type]

        self.storage._storeBatch = counting  # type: ignore[method-assign,assignment]
        calls = []
        for n in range(40):
            node = "missing" if n == 17 else ("a" if n % 2 else "b")
            calls.append(self.storage.storeItems(node, [Item(f"i{n}", b"<x/>", "o@x", n)], None,
                                                 True))
        results = await DeferredList(calls, consumeErrors=True)
        for n, (ok, value) in enumerate(results):
            if n == 17:
                case.assertFalse(ok)
                value.trap(NodeNotFound)  # type: ignore[attr-defined]
            else:
                case.assertTrue(ok, value)
                case.assertEqual([i.itemId for i in value.items], [f"i{n}"])
        case.assertEqual(sum(batches), 40)
        case.assertLess(len(batches), 40)
        stored = await self.storage.getItems("a")
        case.assertEqual([i.itemId for i in stored], [f"i{n}" for n in range(39, 0, -2) if n != 17])
        events = await self.storage.getEvents("b", None, 100)
        case.assertEqual([e.itemId for e in events], [f"i{n}" for n in range(0, 40, 2)])

    async def test_trimOncePerBatch(self) -> None:
        """
        Concurrent publishes to a full node: it is trimmed once per batch, not once per
        publish; it keeps the newest items, and each dropped item is reported once.
        """
        case: TestCase = self  # type: ignore[assignment]
        await self.storage.createNode(Node("a", NodeConfig(), "o@x", 0.0))
        batches: list[int] = []
        trims: list[str] = []
        storeBatch, trim = self.storage._storeBatch, self.storage._trim

        def countingBatch(cursor: object, requests: list[object]) -> object:
            batches.append(len(requests))
            return storeBatch(cursor, requests)  # type: ignore[arg-type]

        def countingTrim(cursor: object, identifier: str, maxItems: int) -> object:
            trims.append(identifier)
            return trim(cursor, identifier, maxItems)

        self.storage._storeBatch = countingBatch  # type: ignore[method-assign,assignment]
        self.storage._trim = countingTrim
        results = await DeferredList(
            [self.storage.storeItems("a", [Item(f"i{n}", b"<x/>", "o@x", n)], 2, True)
             for n in range(12)],
            fireOnOneErrback=True,
        )
        case.assertLess(len(batches), 12)
        case.assertEqual(len(trims), len(batches))
        removed = [itemId for _, result in results for itemId in result.removed]
        case.assertEqual(sorted(removed), sorted(f"i{n}" for n in range(10)))
        stored = await self.storage.getItems("a")
        case.assertEqual([i.itemId for i in stored], ["i11", "i10"])

    async def test_batchIsOneTransaction(self) -> None:
        """
        A batch's publishes are committed together, by the transaction's commit, and not one
        by one: when the transaction holding a batch rolls back, none of them is stored.
        """
        case: TestCase = self  # type: ignore[assignment]
        await self.storage.createNode(Node("a", NodeConfig(), "o@x", 0.0))
        requests = [("a", (Item(f"i{n}", b"<x/>", "o@x", n),), None, True) for n in range(3)]

        def storeThenFail(cursor: object) -> None:
            outcomes = self.storage._storeBatch(cursor, requests)  # type: ignore[arg-type]
            case.assertEqual([ok for ok, _ in outcomes], [True, True, True])
            raise RuntimeError("the transaction fails after the batch")

        await case.assertFailure(self.storage._run(storeThenFail), RuntimeError)
        case.assertEqual(await self.storage.getItems("a"), [])
        case.assertEqual(await self.storage.getEvents("a", None, 100), [])


class SQLiteGroupCommitTests(GroupCommitTestsMixin, TestCase):
    """
    Group commit on SQLite.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.storage = SQLiteStorage(os.path.join(self.mktemp(), "g.sqlite"), reactor)
        await self.storage.start()
        self.addCleanup(self.storage.stop)


class PostgreSQLGroupCommitTests(GroupCommitTestsMixin, TestCase):
    """
    Group commit on PostgreSQL.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        server = sharedPostgres()
        name = "hermod_group_" + os.urandom(3).hex()
        dsn = server.createDatabase(name)
        self.addCleanup(server.dropDatabase, name)
        self.storage = PostgreSQLStorage(dsn, reactor)
        await self.storage.start()
        self.addCleanup(self.storage.stop)
