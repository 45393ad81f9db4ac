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


class TwoInstancesBehindEjabberdTests(TestCase):
    """
    Two Hermod processes share one component JID on ejabberd (which balances requests between
    the connections) and one PostgreSQL database.
    """

    timeout = 240

    async def test_everyItemOnceThroughBoth(self) -> None:
        """
        Subscribers made through either instance receive every item published through either,
        exactly once, and both instances served requests.
        """
        import re

        from tests.servers.ejabberd import EjabberdServer
        from tests.servers.hermod import HermodProcess
        from tests.xmppclient import connectClient

        server = EjabberdServer("pubsub.localhost", "scale-secret")
        server.start()
        self.addCleanup(server.stop)
        postgres = sharedPostgres()
        name = "hermod_two_" + os.urandom(3).hex()
        dsn = postgres.createDatabase(name)
        self.addCleanup(postgres.dropDatabase, name)

        hermods = []
        for _ in range(2):
            hermod = HermodProcess(
                {
                    "component": {
                        "jid": "pubsub.localhost",
                        "server": f"tcp:host=127.0.0.1:port={server.componentPort}",
                    },
                    "storage": {"engine": "postgresql", "dsn": dsn},
                },
                secret="scale-secret",
                verbose=True,
            )
            hermod.start()
            self.addCleanup(hermod.stop)
            hermod.waitForLog("Authenticated to", timeout=60)
            hermods.append(hermod)

        users = ["publisher"] + [f"sub{n}" for n in range(6)]
        for user in users:
            server.register(user, "pw")
        clients = {}
        for user in users:
            client = await connectClient(f"{user}@localhost/t", "pw", "127.0.0.1", server.c2sPort)
            self.addCleanup(client.disconnect)
            clients[user] = client

        pubsub = "<pubsub xmlns='http://jabber.org/protocol/pubsub'>{}</pubsub>"
        await clients["publisher"].iq(pubsub.format("<create node='firehose'/>"),
                                      to="pubsub.localhost", type="set")
        for user in users[1:]:
            await clients[user].iq(
                pubsub.format(f"<subscribe node='firehose' jid='{clients[user].jid}'/>"),
                to="pubsub.localhost", type="set",
            )
        count = 60
        entry = "<entry xmlns='http://www.w3.org/2005/Atom'><title>t</title></entry>"
        for n in range(count):
            await clients["publisher"].iq(
                pubsub.format(f"<publish node='firehose'><item id='i{n}'>{entry}</item></publish>"),
                to="pubsub.localhost", type="set",
            )
        expected = [f"i{n}" for n in range(count)]

        def received(user: str) -> list[str]:
            ids = []
            for message in clients[user].messages:
                # slixmpp writes attributes in no fixed order: publisher may come before id.
                ids += re.findall(r"<item\b[^>]*?\bid=[\"'](i\d+)[\"']", str(message))
            return sorted(ids)

        await waitFor(lambda: all(len(received(u)) >= count for u in users[1:]), timeout=30)
        await task.deferLater(reactor, 0.5, lambda: None)
        for user in users[1:]:
            self.assertEqual(received(user), sorted(expected), user)
        served = [
            sum(1 for line in h.logText().splitlines() if "RECV" in line and "<publish node=" in line)
            for h in hermods
        ]
        self.assertEqual(sum(served), count, served)
        self.assertTrue(all(served), f"one instance served no publish: {served}")
