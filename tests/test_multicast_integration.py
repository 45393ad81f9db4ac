"""
XEP-0033 multicast (C{component.multicast}) on real servers: through ejabberd's
C{mod_multicast} every subscriber gets every item once and in order, without the other
subscribers' addresses; a service that refuses loses nothing; Prosody has no service and
Hermod writes one message per subscriber.
"""

from __future__ import annotations

import re
import urllib.request

from twisted.trial.unittest import TestCase

from tests.test_connections_integration import ConnectionsTestsMixin


def metric(port: int, name: str) -> float:
    """
    The value of Hermod's metric C{name} (without labels) from its metrics endpoint.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


class MulticastTestsMixin(ConnectionsTestsMixin):
    """
    Hermod with C{multicast} set, checked for exactly-once, in-order delivery.
    """

    def assertEveryItemOnce(self, got: dict[str, list[str]], items: int) -> None:
        """
        Every subscriber got items C{i0} .. in order, each once.
        """
        expected = [f"i{n}" for n in range(items)]
        for user, ids in got.items():
            self.assertEqual(ids, expected, user)  # type: ignore[attr-defined]

    def assertNoAddresses(self) -> None:
        """
        No subscriber saw XEP-0033 addresses or the other subscribers' JIDs in what it
        received (the publisher's JID is in each item, as XEP-0060 has it).
        """
        subscribers = [u for u in self.clients if u != "publisher"]  # type: ignore[attr-defined]
        for user in subscribers:
            for message in self.clients[user].messages:  # type: ignore[attr-defined]
                text = str(message)
                self.assertNotIn("http://jabber.org/protocol/address", text, user)  # type: ignore[attr-defined]
                others = [u for u in subscribers if u != user and f"{u}@localhost" in text]
                self.assertEqual(others, [], text)  # type: ignore[attr-defined]


class EjabberdMulticastTests(MulticastTestsMixin, TestCase):
    """
    Through a real ejabberd with C{mod_multicast}.
    """

    def ejabberd(self, **options: object) -> object:
        from tests.servers.ejabberd import EjabberdServer

        server = EjabberdServer(
            "pubsub.localhost", "conn-secret", multicastHost="multicast.localhost",
            **options,  # type: ignore[arg-type]
        )
        server.start()
        self.addCleanup(server.stop)
        return server

    async def test_foundAndUsedWithinTheLimit(self) -> None:
        """
        With C{multicast = "auto"} Hermod finds the service, reads its limit of 4 recipients,
        and sends each of 40 items to 10 subscribers in 3 multicast messages; every subscriber
        gets every item once, in order, and none sees the others' addresses.
        """
        server = self.ejabberd(multicastLimit=4)
        got, _, hermod = await self.runFirehose(server, 1, 10, 40, {"multicast": "auto"})
        self.assertEveryItemOnce(got, 40)
        self.assertNoAddresses()
        log = hermod.logText()  # type: ignore[attr-defined]
        self.assertIn("multicast service multicast.localhost, 4 recipients per message", log)
        self.assertNotIn("refused a notification", log)
        sent = metric(self.metricsPort, "hermod_multicast_messages_total")
        self.assertEqual(sent, 40 * 3)

    async def test_overSeveralConnections(self) -> None:
        """
        With two connections and a configured service JID, every item still arrives once and
        in order.
        """
        server = self.ejabberd()
        got, _, _ = await self.runFirehose(
            server, 2, 6, 30, {"multicast": "multicast.localhost"}
        )
        self.assertEveryItemOnce(got, 30)
        self.assertNoAddresses()
        self.assertGreaterEqual(metric(self.metricsPort, "hermod_multicast_messages_total"), 30)

    async def test_refusedLosesNothing(self) -> None:
        """
        A service that refuses everyone sends the first multicast message back; Hermod logs
        the refusal, sends that item to each subscriber itself, and the rest one by one:
        every subscriber gets every item once, in order.
        """
        server = self.ejabberd(multicastOpen=False)
        got, _, hermod = await self.runFirehose(server, 1, 5, 20, {"multicast": "auto"})
        self.assertEveryItemOnce(got, 20)
        self.assertNoAddresses()
        log = hermod.logText()  # type: ignore[attr-defined]
        self.assertIn("refused a notification (forbidden)", log)
        self.assertEqual(log.count("refused a notification"), 1)


    async def test_copiesHaveIdsOfTheirOwn(self) -> None:
        """
        ejabberd delivers each copy with its multicast message's id: each notification a
        subscriber gets has an id of its own.
        """
        server = self.ejabberd()
        got, _, _ = await self.runFirehose(server, 1, 3, 5, {"multicast": "auto"})
        self.assertEqual(sorted(len(ids) for ids in got.values()), [5, 5, 5])
        for user, client in self.clients.items():
            if user == "publisher":
                continue
            ids = [m["id"] for m in client.messages if "pubsub#event" in str(m) and m["id"]]
            self.assertEqual(len(ids), 5, user)
            self.assertEqual(len(ids), len(set(ids)), f"{user}: {ids}")

    async def test_probesAnswered(self) -> None:
        """
        ejabberd answers the probes that follow multicast messages: no probe is still
        unanswered C{PROBE_TIMEOUT} seconds after the last notification.
        """
        from twisted.internet import reactor, task

        from hermod_component.xmpp.multicast import PROBE_TIMEOUT

        server = self.ejabberd()
        got, _, hermod = await self.runFirehose(server, 1, 3, 5, {"multicast": "auto"})
        self.assertEqual(sorted(len(ids) for ids in got.values()), [5, 5, 5])
        await task.deferLater(reactor, PROBE_TIMEOUT + 5, lambda: None)
        log = hermod.logText()  # type: ignore[attr-defined]
        self.assertIn("go through the multicast service", log)
        self.assertNotIn("did not answer a probe", log)


class ProsodyMulticastTests(MulticastTestsMixin, TestCase):
    """
    Through a real Prosody, which has no multicast service.
    """

    async def test_noServiceOneByOne(self) -> None:
        """
        With C{multicast = "auto"} Hermod finds no service, says so, and delivers every item.
        """
        from tests.servers.prosody import ProsodyServer

        server = ProsodyServer("pubsub.localhost", "conn-secret")
        server.start()
        self.addCleanup(server.stop)
        got, _, hermod = await self.runFirehose(server, 1, 4, 10, {"multicast": "auto"})
        self.assertEveryItemOnce(got, 10)
        self.assertIn("localhost lists no XEP-0033 multicast service", hermod.logText())  # type: ignore[attr-defined]
        self.assertEqual(metric(self.metricsPort, "hermod_multicast_messages_total"), 0)
