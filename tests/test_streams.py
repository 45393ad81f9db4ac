"""
Tests for L{hermod_component.xmpp.streams}: notifications spread over several component
streams, per-recipient order, failover and the barrier of a returning stream.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.model import Item
from hermod_component.testing import StanzaRecorder, StubStreamManager
from hermod_component.xmpp.notifier import XMPPNotifier
from hermod_component.xmpp.streams import (
    BARRIER_PREFIX,
    BARRIER_TIMEOUT,
    NotifierOutlet,
    StreamSet,
    bareHash,
)

SERVICE = "pubsub.example.org"
ENTRY = b"<entry xmlns='http://www.w3.org/2005/Atom'><title>T</title></entry>"


def recipients(count: int) -> list[tuple[str, tuple[str, ...]]]:
    """
    C{count} recipients with full JIDs and one subscription each.
    """
    return [(f"user{n}@example.org/r", ()) for n in range(count)]


def itemIds(stream: StanzaRecorder) -> dict[str, list[str]]:
    """
    The item ids each recipient got on C{stream}, in the order written.
    """
    got: dict[str, list[str]] = {}
    for message in stream.sent:
        if message.name != "message":
            continue
        for items in message.event.elements():
            for item in items.elements():
                got.setdefault(message["to"], []).append(item["id"])
    return got


class StreamsTestCase(SynchronousTestCase):
    """
    A notifier on three stub stream managers, each with its L{NotifierOutlet}.
    """

    size = 3

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.streams = StreamSet(SERVICE, self.size, self.clock)
        self.notifier = XMPPNotifier(SERVICE, self.clock, self.streams)
        self.managers = []
        for index in range(self.size):
            manager = StubStreamManager()
            manager.addHandler(NotifierOutlet(self.streams, index))
            self.managers.append(manager)
            self.answerBarriers()
        for manager in self.managers:
            manager.xmlstream.clear()
        self.assertEqual([o.eligible for o in self.streams.outlets], [True] * self.size)

    def answerBarriers(self) -> None:
        """
        Deliver every barrier ping written so far back to the component, as the server would,
        on the first stream that is up.
        """
        pings = []
        for manager in self.managers:
            if manager.xmlstream is None:
                continue
            for stanza in manager.xmlstream.sent:
                if stanza.name == "iq" and stanza.getAttribute("type") == "get":
                    pings.append(stanza)
        back = next(m.xmlstream for m in self.managers if m.xmlstream is not None)
        for ping in pings:
            back.receive(ping.toXml())

    def publish(self, itemId: str, count: int) -> None:
        """
        Notify C{count} recipients of item C{itemId}.
        """
        self.notifier.publish("news", [Item(itemId, ENTRY)], True, "headline", recipients(count))

    def received(self) -> dict[str, list[str]]:
        """
        Item ids per recipient over all streams, each stream's writes in order.
        """
        got: dict[str, list[str]] = {}
        for manager in self.managers:
            stream = manager.xmlstream
            if stream is None:
                continue
            for recipient, ids in itemIds(stream).items():
                got.setdefault(recipient, []).extend(ids)
        return got


class DistributionTests(StreamsTestCase):
    """
    Recipients are spread over the streams by their bare JID.
    """

    def test_spreadOverAllStreams(self) -> None:
        """
        With every stream up, each stream carries a fair share of 300 recipients and every
        recipient gets exactly one message.
        """
        self.publish("i1", 300)
        perStream = [len(m.xmlstream.sent) for m in self.managers]
        self.assertEqual(sum(perStream), 300)
        for count in perStream:
            self.assertGreater(count, 60, perStream)
        self.assertEqual({r: ids for r, ids in self.received().items()},
                         {r: ["i1"] for r, _ in recipients(300)})
        self.assertEqual([o.notifications for o in self.streams.outlets], perStream)
        self.assertEqual(sum(o.bytes for o in self.streams.outlets),
                         sum(len(raw) for m in self.managers for raw in m.xmlstream.raw))

    def test_stableByBareJID(self) -> None:
        """
        A recipient always goes to the stream of its bare JID's hash, whatever its resource,
        and that hash is the same in every run (CRC-32).
        """
        self.assertEqual(bareHash("a@example.org/one"), bareHash("a@example.org/two"))
        self.assertEqual(bareHash("a@example.org"), 665612698)
        for resource in ("one", "two", "three"):
            outlet = self.streams.route(f"a@example.org/{resource}")
            assert outlet is not None
            self.assertEqual(outlet.index, 665612698 % 3)

    def test_perRecipientOrder(self) -> None:
        """
        Every recipient gets its notifications in the order they were written, all on one
        stream.
        """
        for n in range(20):
            self.publish(f"i{n}", 50)
        expected = [f"i{n}" for n in range(20)]
        for recipient, ids in self.received().items():
            self.assertEqual(ids, expected, recipient)
        for manager in self.managers:
            for recipient in itemIds(manager.xmlstream):
                outlet = self.streams.route(recipient)
                assert outlet is not None
                self.assertIs(self.managers[outlet.index], manager)


class DigestRoutingTests(StreamsTestCase):
    """
    Digests (C{pubsub#digest}) go to the recipient's stream too.
    """

    def test_digestOnRecipientsStream(self) -> None:
        """
        A digest for a recipient is written once, on the stream its bare JID routes to.
        """
        jid = "user7@example.org/r"
        self.notifier._writeDigest(jid, "sub1", "headline", [b"<event xmlns='urn:e'/>"])
        outlet = self.streams.route(jid)
        assert outlet is not None
        written = [[s["to"] for s in m.xmlstream.sent] for m in self.managers]
        self.assertEqual(written[outlet.index], [jid])
        self.assertEqual(sum(len(w) for w in written), 1)
        self.assertEqual(outlet.notifications, 1)


class FailoverTests(StreamsTestCase):
    """
    A stream that drops hands its recipients to the others; one that returns takes them back
    after the barrier.
    """

    def test_droppedStreamsRecipientsMove(self) -> None:
        """
        After a stream drops, its recipients get the next notifications on the other streams,
        spread over both, once each; the other recipients stay where they were.
        """
        self.publish("i1", 300)
        before = {r: self.streams.route(r).index for r, _ in recipients(300)}  # type: ignore[union-attr]
        self.managers[1].dropStream()
        self.publish("i2", 300)
        after = {r: self.streams.route(r).index for r, _ in recipients(300)}  # type: ignore[union-attr]
        moved = [r for r in before if before[r] != after[r]]
        self.assertEqual(set(moved), {r for r in before if before[r] == 1})
        self.assertEqual({after[r] for r in moved}, {0, 2})
        i2 = Counter()
        for manager in (self.managers[0], self.managers[2]):
            for recipient, ids in itemIds(manager.xmlstream).items():
                i2[recipient] += ids.count("i2")
        self.assertEqual(i2, Counter({r: 1 for r, _ in recipients(300)}))

    def test_returningStreamWaitsForBarrier(self) -> None:
        """
        A stream that comes back pings the component through each other stream and takes no
        recipient until every ping is back; then its recipients return to it.
        """
        self.managers[2].dropStream()
        self.publish("i1", 60)
        for manager in self.managers[:2]:
            manager.xmlstream.clear()
        fresh = self.managers[2].newStream()
        pings = [s for m in self.managers[:2] for s in m.xmlstream.sent if s.name == "iq"]
        self.assertEqual(len(pings), 2)
        for ping in pings:
            self.assertTrue(ping["id"].startswith(BARRIER_PREFIX))
            self.assertEqual((ping["to"], ping["from"], ping["type"]), (SERVICE, SERVICE, "get"))
            self.assertEqual(ping.firstChildElement().uri, "urn:xmpp:ping")
        self.publish("i2", 60)
        self.assertEqual(fresh.sent, [])
        self.managers[0].xmlstream.receive(pings[0].toXml())
        answers = [s for s in self.managers[0].xmlstream.sent if s.name == "iq"]
        self.assertEqual([(a["type"], a["id"]) for a in answers[1:]], [("result", pings[0]["id"])])
        self.publish("i3", 60)
        self.assertEqual(fresh.sent, [])
        self.managers[1].xmlstream.receive(pings[1].toXml())
        self.publish("i4", 60)
        back = itemIds(fresh)
        self.assertTrue(back)
        for recipient, ids in back.items():
            self.assertEqual(self.streams.route(recipient).index, 2)  # type: ignore[union-attr]
            self.assertEqual(ids, ["i4"])
        for recipient, ids in self.received().items():
            self.assertEqual(ids, ["i2", "i3", "i4"], recipient)

    def test_barrierAnswerOnAnotherStream(self) -> None:
        """
        The answer to a barrier ping counts on whichever stream it arrives, as a result too.
        """
        self.managers[0].dropStream()
        self.managers[0].newStream()
        pings = [s for m in self.managers[1:] for s in m.xmlstream.sent if s.name == "iq"]
        for ping in pings:
            ping["type"] = "result"
            self.managers[0].xmlstream.receive(ping.toXml())
        self.assertTrue(self.streams.outlets[0].eligible)
        self.assertEqual([s.name for s in self.managers[0].xmlstream.sent], [])

    def test_pingedStreamDrops(self) -> None:
        """
        A returning stream does not wait for the ping of a stream that dropped meanwhile.
        """
        self.managers[0].dropStream()
        self.managers[0].newStream()
        pings = [s for s in self.managers[1].xmlstream.sent if s.name == "iq"]
        self.managers[2].dropStream()
        self.managers[1].xmlstream.receive(pings[-1].toXml())
        self.assertTrue(self.streams.outlets[0].eligible)

    def test_barrierTimeout(self) -> None:
        """
        Unanswered barrier pings hold a returning stream back for L{BARRIER_TIMEOUT} at most.
        """
        self.managers[0].dropStream()
        self.managers[0].newStream()
        self.clock.advance(BARRIER_TIMEOUT - 0.1)
        self.assertFalse(self.streams.outlets[0].eligible)
        self.clock.advance(0.2)
        self.assertTrue(self.streams.outlets[0].eligible)
        self.assertTrue(any("unanswered" in str(e.get("log_format")) for e in self.events))

    def test_allDown(self) -> None:
        """
        With every stream down, notifications are logged and dropped; the first stream back
        takes every recipient at once.
        """
        for manager in self.managers:
            manager.dropStream()
        self.publish("i1", 10)
        self.assertTrue(any("dropped" in str(e.get("log_format")) for e in self.events))
        stream = self.managers[1].newStream()
        self.publish("i2", 10)
        self.assertEqual(len(stream.sent), 10)

    def test_otherIQsUntouched(self) -> None:
        """
        The outlet leaves IQs that are not barrier pings to the other handlers, and ignores
        barrier-looking ids from other senders.
        """
        stream = self.managers[0].xmlstream
        iq = stream.receive("<iq type='get' id='q1' from='a@example.org/r' to='pubsub.example.org'>"
                            "<ping xmlns='urn:xmpp:ping'/></iq>")
        self.assertFalse(getattr(iq, "handled", False))
        iq = stream.receive(f"<iq type='get' id='{BARRIER_PREFIX}9' from='a@example.org/r' "
                            "to='pubsub.example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.assertFalse(getattr(iq, "handled", False))


class StreamSetTests(SynchronousTestCase):
    """
    L{StreamSet} on its own.
    """

    def test_singleStream(self) -> None:
        """
        With one stream configured, every recipient goes to it and it needs no barrier.
        """
        streams = StreamSet(SERVICE)
        self.assertIsNone(streams.route("a@example.org"))
        stream = StanzaRecorder()
        streams.streamUp(0, stream)
        self.assertIs(streams.route("a@example.org"), streams.outlets[0])
        self.assertEqual(stream.sent, [])

    def test_atLeastOne(self) -> None:
        """
        A set of no streams is refused.
        """
        self.assertRaises(ValueError, StreamSet, SERVICE, 0)

    def test_unknownBarrier(self) -> None:
        """
        An id that is not a pending barrier ping changes nothing; one with the prefix is still
        recognised as ours (a late answer).
        """
        streams = StreamSet(SERVICE, 2)
        self.assertFalse(streams.barrierPassed("other"))
        self.assertTrue(streams.barrierPassed(BARRIER_PREFIX + "0-99"))

    def test_fallbackSpreadsEvenly(self) -> None:
        """
        With four streams and one down, its recipients spread over all three others.
        """
        streams = StreamSet(SERVICE, 4)
        for index in range(4):
            streams.streamUp(index, StanzaRecorder())
            for stanzaId in list(streams._barriers):
                streams.barrierPassed(stanzaId)
        names = [f"u{n}@example.org" for n in range(2000)]
        home = {n: streams.route(n).index for n in names}  # type: ignore[union-attr]
        streams.streamDown(3)
        moved = Counter(streams.route(n).index for n in names if home[n] == 3)  # type: ignore[union-attr]
        self.assertEqual(set(moved), {0, 1, 2})
        for count in moved.values():
            self.assertGreater(count, sum(moved.values()) / 5)
