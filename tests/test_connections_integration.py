"""
Several component connections as one JID (C{[component] connections}) on real servers:
ejabberd balances among them and Hermod spreads notifications over them; Prosody refuses all
but one and Hermod carries on with that one.
"""

from __future__ import annotations

import re
import urllib.request

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from tests.servers import freePort
from tests.test_scaleout import waitFor

PUBSUB = "<pubsub xmlns='http://jabber.org/protocol/pubsub'>{}</pubsub>"
ENTRY = "<entry xmlns='http://www.w3.org/2005/Atom'><title>t</title></entry>"
# slixmpp serializes attributes in no fixed order: id may come after publisher.
ITEM_ID = re.compile(r"<item\b[^>]*?\bid=[\"'](i\d+)[\"']")


def perConnection(port: int) -> dict[str, float]:
    """
    Hermod's C{hermod_connection_notifications_total} by connection, from its metrics endpoint.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {
        label: float(value)
        for label, value in re.findall(
            r'^hermod_connection_notifications_total\{connection="(\d+)"\} (\S+)$', text, re.MULTILINE
        )
    }


class ConnectionsTestsMixin:
    """
    Hermod with several connections behind a real server, driven by slixmpp clients.
    """

    timeout = 400

    async def runFirehose(
        self, server: object, connections: int, subscribers: int, items: int,
        component: dict[str, object] | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, float], object]:
        """
        Start Hermod with C{connections} on C{server}, subscribe C{subscribers} accounts to one
        node, publish C{items} items one after the other, and wait until every subscriber has
        them all.

        @param component: More keys of Hermod's C{[component]} section.

        Also keeps the clients by user in C{self.clients} and Hermod's metrics port in
        C{self.metricsPort}.

        @return: The item ids each subscriber received, in arrival order; the notifications
            written per connection; the Hermod process.
        """
        from tests.servers.hermod import HermodProcess
        from tests.xmppclient import connectClient

        metricsPort = freePort()
        hermod = HermodProcess(
            {
                "component": {
                    "jid": "pubsub.localhost",
                    "server": f"tcp:host=127.0.0.1:port={server.componentPort}",  # type: ignore[attr-defined]
                    "connections": connections,
                    **(component or {}),
                },
                "metrics": {"port": metricsPort, "interface": "127.0.0.1"},
            },
            secret="conn-secret",
        )
        hermod.start()
        self.addCleanup(hermod.stop)  # type: ignore[attr-defined]
        hermod.waitForLog("Authenticated to", timeout=60)

        users = ["publisher"] + [f"sub{n}" for n in range(subscribers)]
        for user in users:
            server.register(user, "pw")  # type: ignore[attr-defined]
        clients = {}
        for user in users:
            client = await connectClient(
                f"{user}@localhost/t", "pw", "127.0.0.1", server.c2sPort  # type: ignore[attr-defined]
            )
            self.addCleanup(client.disconnect)  # type: ignore[attr-defined]
            clients[user] = client
        publisher = clients["publisher"]
        await publisher.iq(PUBSUB.format("<create node='firehose'/>"), to="pubsub.localhost",
                           type="set")
        for user in users[1:]:
            await clients[user].iq(
                PUBSUB.format(f"<subscribe node='firehose' jid='{clients[user].jid}'/>"),
                to="pubsub.localhost", type="set",
            )
        for n in range(items):
            await publisher.iq(
                PUBSUB.format(f"<publish node='firehose'><item id='i{n}'>{ENTRY}</item></publish>"),
                to="pubsub.localhost", type="set",
            )

        def received(user: str) -> list[str]:
            ids: list[str] = []
            for message in clients[user].messages:
                ids += ITEM_ID.findall(str(message))
            return ids

        try:
            await waitFor(lambda: all(len(received(u)) >= items for u in users[1:]), timeout=120)
        except AssertionError:
            counts = {u: (len(received(u)), len(clients[u].messages)) for u in users[1:]}
            raise AssertionError(
                f"not every subscriber got {items} items (items, messages): {counts}\n"
                f"{hermod.logText()[-3000:]}"
            ) from None
        await task.deferLater(reactor, 1.0, lambda: None)
        self.clients = clients
        self.metricsPort = metricsPort
        return {u: received(u) for u in users[1:]}, perConnection(metricsPort), hermod


class EjabberdConnectionsTests(ConnectionsTestsMixin, TestCase):
    """
    Three connections through a real ejabberd.
    """

    async def test_everyItemOnceInOrderOverThreeStreams(self) -> None:
        """
        With connections = 3, 50 subscribers get all 200 items exactly once and in order, and
        every one of the three streams carried a share of the notifications.
        """
        from tests.servers.ejabberd import EjabberdServer

        server = EjabberdServer("pubsub.localhost", "conn-secret")
        server.start()
        self.addCleanup(server.stop)
        got, counts, hermod = await self.runFirehose(server, 3, 50, 200)
        expected = [f"i{n}" for n in range(200)]
        for user, ids in got.items():
            self.assertEqual(ids, expected, user)
        self.assertEqual(hermod.logText().count("Authenticated to"), 3)  # type: ignore[attr-defined]
        self.assertEqual(sorted(counts), ["1", "2", "3"])
        # 50 subscribers x 200 items, plus one subscription event per subscriber at most.
        self.assertGreaterEqual(sum(counts.values()), 50 * 200)
        for count in counts.values():
            self.assertGreater(count, 50 * 200 / 10, counts)


class ProsodyConnectionsTests(ConnectionsTestsMixin, TestCase):
    """
    Two connections configured against a real Prosody, which accepts one per component.
    """

    async def test_runsOnTheOneConnectionItHas(self) -> None:
        """
        Prosody refuses the second connection with a conflict; Hermod logs why, with the advice
        to keep connections = 1, and delivers every item on the first.
        """
        from tests.servers.prosody import ProsodyServer

        server = ProsodyServer("pubsub.localhost", "conn-secret")
        server.start()
        self.addCleanup(server.stop)
        got, counts, hermod = await self.runFirehose(server, 2, 5, 20)
        expected = [f"i{n}" for n in range(20)]
        for user, ids in got.items():
            self.assertEqual(ids, expected, user)
        log = hermod.logText()  # type: ignore[attr-defined]
        self.assertEqual(log.count("Authenticated to"), 1)
        self.assertIn("refused component pubsub.localhost: conflict", log)
        self.assertIn("component.connections = 1", log)
        self.assertEqual(sorted(v > 0 for v in counts.values()), [False, True], counts)
        self.assertGreaterEqual(max(counts.values()), 5 * 20)
