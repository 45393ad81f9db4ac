"""
Several Hermod instances on one PostgreSQL database: node changes made through one instance are
seen by the others' policy caches at once (PostgreSQL LISTEN/NOTIFY).
"""

from __future__ import annotations

import os

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hermod_component.config import PubSubSettings
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.postgresql import PostgreSQLStorage
from hermod_component.testing import RecordingNotifier
from tests.test_storage import sharedPostgres

SERVICE = "pubsub.example.org"
ENTRY = b"<entry xmlns='http://www.w3.org/2005/Atom'><title>x</title></entry>"


async def waitFor(condition: object, timeout: float = 5.0) -> None:
    """
    Wait until C{condition()} is true, polling the reactor.
    """
    for _ in range(int(timeout / 0.01)):
        if condition():  # type: ignore[operator]
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met in time")


class NodeChangeTests(TestCase):
    """
    Two storages (two instances) on one database.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        server = sharedPostgres()
        name = "hermod_scaleout_" + os.urandom(3).hex()
        dsn = server.createDatabase(name)
        self.addCleanup(server.dropDatabase, name)
        self.first = PostgreSQLStorage(dsn, reactor)
        self.second = PostgreSQLStorage(dsn, reactor)
        for storage in (self.first, self.second):
            await storage.start()
            self.addCleanup(storage.stop)

    async def test_othersHearChanges(self) -> None:
        """
        A change through one storage is reported to the other, and not to itself.
        """
        heardFirst: list[str | None] = []
        heardSecond: list[str | None] = []
        await self.first.watchNodeChanges(heardFirst.append)
        await self.second.watchNodeChanges(heardSecond.append)
        from hermod_component.model import Node, NodeConfig

        await self.first.createNode(Node("n", NodeConfig(), "o@example.org", 1.0))
        await waitFor(lambda: heardSecond == ["n"])
        self.assertEqual(heardFirst, [])

    async def test_policiesStayInStep(self) -> None:
        """
        A subscription made through one instance receives the next publish made through the
        other, at once, although both cache the node.
        """
        policies = []
        for storage in (self.first, self.second):
            policy = PubSubPolicy(storage, PubSubSettings(), SERVICE, reactor)
            policy.notifier = RecordingNotifier()
            await storage.watchNodeChanges(policy.forget)
            policies.append(policy)
        one, two = policies
        await Deferred.fromCoroutine(one.createNode("o@example.org/x", "news", None))
        await Deferred.fromCoroutine(two.publish("o@example.org/x", "news", [("a", ENTRY)], None))
        self.assertIn("news", two.cachedNodes())
        await Deferred.fromCoroutine(
            one.subscribe("s@example.org/r", "news", "s@example.org/r", None)
        )
        await waitFor(lambda: "news" not in two.cachedNodes())
        await Deferred.fromCoroutine(two.publish("o@example.org/x", "news", [("b", ENTRY)], None))
        kind, args = two.notifier.calls[-1]  # type: ignore[attr-defined]
        self.assertEqual((kind, args["recipients"]), ("publish", [("s@example.org/r", [])]))
