"""
Edge cases of XEP-0033 multicast: holds that must end, answers from the wrong sender,
refusals without content, several streams and several Hermods on one component JID.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish

from hermod_component.model import Item
from hermod_component.testing import StubStreamManager, parseStanzas
from hermod_component.xmpp.flow import ReadThrottle
from hermod_component.xmpp.multicast import (
    MAX_ADDRESSES,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    PROBE_TIMEOUT,
    WINDOW,
    MulticastFinder,
    MulticastHandler,
    MulticastService,
)
from hermod_component.xmpp.notifier import XMPPNotifier
from tests.test_multicast import (
    ENTRY,
    MULTICAST,
    SERVICE,
    FakeThrottle,
    MulticastTestsMixin,
    infoQuery,
    messages,
    probes,
)
from tests.test_multicast import (
    NS_ADDRESS as ADDRESS,
)


class FlowEdgeTests(MulticastTestsMixin, SynchronousTestCase):
    """
    The probe-based hold must always end, and must not end multicast for no fault of the
    service.
    """

    def setUp(self) -> None:
        super().setUp()
        self.found("infinite")
        self.stream = self.manager.xmlstream
        self.stream.clear()
        self.recipients = [(f"u{n}@example.org/r", ()) for n in range(MAX_ADDRESSES)]

    def publish(self, times: int = 1, start: int = 0) -> None:
        """
        Publish C{times} items to the L{MAX_ADDRESSES} recipients.
        """
        for n in range(start, start + times):
            self.notifier.publish("n", [Item(f"i{n}", ENTRY)], True, "headline", self.recipients)

    def answerProbe(self, probe: domish.Element) -> domish.Element:
        """
        Receive the service's answer to C{probe}.
        """
        return self.stream.receive(
            f"<iq type='result' id='{probe['id']}' from='{MULTICAST}' to='{SERVICE}'>"
            f"<query xmlns='{NS_DISCO_INFO}'/></iq>"
        )

    def bounce(self, message: domish.Element) -> None:
        """
        Receive multicast C{message} back from the service as a C{forbidden} error.
        """
        inner = "".join(c.toXml() for c in message.elements())
        self.stream.receive(
            f"<message from='{MULTICAST}' to='{SERVICE}' type='error' id='{message['id']}'>"
            f"{inner}<error type='auth'><forbidden "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )

    def test_holdEndsAfterARefusal(self) -> None:
        """
        A refusal turns multicast off while requests are held and the outstanding probe
        covers only part of the window: probes still go to the service for the rest, and the
        hold ends (else every request of every stream would wait for good).
        """
        throttle = FakeThrottle()
        self.notifier.multicastFlow.throttleFor = lambda stream: throttle
        self.publish(WINDOW // MAX_ADDRESSES)  # the first probe covers the first publish only
        self.assertEqual(throttle.calls, ["hold multicast"])
        self.bounce(messages(self.stream)[0])
        self.assertIsNone(self.notifier.multicast)
        (probe,) = probes(self.stream)
        self.answerProbe(probe)
        self.clock.advance(10 * PROBE_TIMEOUT)
        self.assertEqual(throttle.calls, ["hold multicast", "release multicast"])

    def test_waitingRequestsDoNotStopReadingTheProbeAnswer(self) -> None:
        """
        However many requests wait while held, the stream keeps reading the socket: the
        probe's answer, the only thing that releases the hold, comes that way.
        """
        transport = StringTransport()
        self.stream.transport = transport  # type: ignore[attr-defined]
        throttle = ReadThrottle(transport, 1 << 30, self.clock, maxRequests=10)
        throttle.dispatch = lambda element: None
        self.publish(WINDOW // MAX_ADDRESSES)
        self.assertTrue(throttle.holding)
        for n in range(10):  # as HermodXmlStream.onElement does with requests while held
            (iq,) = parseStanzas(f"<iq type='set' id='r{n}' from='a@example.org/r' to='{SERVICE}'/>")
            throttle.wait(iq)
        self.assertEqual(transport.producerState, "producing")

    def test_probeTimeoutOnlyOnceWritten(self) -> None:
        """
        A probe fed while the write buffer is full waits in the throttle's backlog, unsent:
        its L{PROBE_TIMEOUT} counts from when it is written, not from then, so Hermod's own
        TCP backpressure does not pass for a silent service.
        """
        transport = StringTransport()
        self.stream.transport = transport  # type: ignore[attr-defined]
        throttle = ReadThrottle(transport, 1 << 30, self.clock)
        throttle.pauseProducing()  # the server is behind reading this stream
        self.publish()
        self.assertEqual(probes(self.stream), [])  # not written yet
        self.clock.advance(PROBE_TIMEOUT)
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, MAX_ADDRESSES))

    def test_multicastMessageIdsUnique(self) -> None:
        """
        Each multicast message has an id of its own (ejabberd keeps it on every copy; RFC
        6120 8.1.3 ids track errors, and clients that drop repeated ids from one sender
        would drop notifications).
        """
        self.publish(2)
        ids = [m["id"] for m in messages(self.stream)]
        self.assertEqual(len(ids), 2)
        self.assertNotEqual(ids[0], ids[1])

    def test_refusalWithoutContentSendsNoEmptyMessages(self) -> None:
        """
        RFC 6120 8.3.1 lets the server leave the original payload out of an error stanza.
        A refusal without it is not "resent" as empty messages: the notification is resent
        to each recipient from Hermod's own copy.
        """
        self.publish()
        (message,) = messages(self.stream)
        (block,) = message.elements(ADDRESS, "addresses")
        self.stream.clear()
        self.stream.receive(
            f"<message from='{MULTICAST}' to='{SERVICE}' type='error' id='{message['id']}'>"
            f"{block.toXml()}<error type='cancel'><service-unavailable "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )
        empty = [m for m in self.stream.sent if m.name == "message" and not list(m.elements())]
        self.assertEqual(empty, [])
        resent = messages(self.stream)
        self.assertEqual([m["to"] for m in resent], [r for r, _ in self.recipients])
        self.assertEqual({str(m.firstChildElement().toXml()).count("<entry") for m in resent},
                         {1})



class SpoofingTests(MulticastTestsMixin, SynchronousTestCase):
    """
    Answers count only from the JID asked, whatever their id.
    """

    def test_searchAnswerFromAnotherSenderIgnored(self) -> None:
        """
        A user who knows the pending disco#items query's id answers it with an item of its
        own: Hermod must not take that answer (nor ask that user anything), or it could take
        the user's JID as its multicast service and send it every notification of every node
        with all subscribers' JIDs as bcc addresses. The ids are not a guessable counter.
        """
        (query,) = self.queries(NS_DISCO_ITEMS)
        self.assertNotEqual(query["id"], "hermod-multicast-disco-1")
        mallory = "mallory@example.org/x"
        spoofed = self.manager.xmlstream.receive(
            f"<iq type='result' from='{mallory}' to='{SERVICE}' id='{query['id']}'>"
            f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='{mallory}'/></query></iq>"
        )
        self.assertFalse(getattr(spoofed, "handled", False))
        self.assertEqual([q["to"] for q in self.queries()], ["example.org"])
        self.assertIsNone(self.notifier.multicast)

    def test_probeAnswerFromAnotherSenderIgnored(self) -> None:
        """
        A user's result with a probe's id does not confirm what the service has not routed
        (it would lift the backpressure at will).
        """
        self.found("infinite")
        throttle = FakeThrottle()
        self.notifier.multicastFlow.throttleFor = lambda stream: throttle
        recipients = [(f"u{n}@example.org/r", ()) for n in range(MAX_ADDRESSES)]
        for n in range(2 * WINDOW // MAX_ADDRESSES):
            self.notifier.publish("n", [Item(f"i{n}", ENTRY)], True, "headline", recipients)
        for _ in range(3):  # each answer sends the next probe, for what was written after
            probe = probes(self.manager.xmlstream)[-1]
            self.manager.xmlstream.receive(
                f"<iq type='result' id='{probe['id']}' from='mallory@example.org/x' "
                f"to='{SERVICE}'/>"
            )
        self.assertEqual(throttle.calls, ["hold multicast"])

class SeveralStreamsTests(SynchronousTestCase):
    """
    The search with several connections of one component.
    """

    def test_searchKeptWhenItsStreamDrops(self) -> None:
        """
        With two streams, the search runs on the first; that stream drops just before the
        last answer, which comes on the second (the server routes answers to any
        connection): the service found is kept, since a stream is still up (no new search
        would start before the dropped stream reconnects).
        """
        clock = Clock()
        notifier = XMPPNotifier(SERVICE, clock)
        finder = MulticastFinder("auto", notifier)
        first, second = StubStreamManager(), StubStreamManager()
        MulticastHandler(finder).setHandlerParent(first)
        MulticastHandler(finder).setHandlerParent(second)
        stream = first.xmlstream

        def answer(namespace: str, to: str, child: str, on: Any) -> None:
            (asked,) = [
                q for q in stream.sent
                if q["to"] == to and any(c.uri == namespace for c in q.elements())
            ]
            on.receive(f"<iq type='result' from='{to}' to='{SERVICE}' id='{asked['id']}'>"
                       f"{child}</iq>")

        answer(NS_DISCO_ITEMS, "example.org",
               f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='{MULTICAST}'/></query>", stream)
        answer(NS_DISCO_INFO, "example.org", infoQuery([NS_DISCO_INFO]), stream)
        first.dropStream()  # the last query is out; its answer comes on the other stream
        answer(NS_DISCO_INFO, MULTICAST, infoQuery([ADDRESS], "10"), second.xmlstream)
        clock.advance(60)
        self.assertEqual(notifier.multicast, MulticastService(MULTICAST, 10))


    def test_holdEndsAfterAnotherStreamsProbeTimedOut(self) -> None:
        """
        With two streams, stream 2 holds with a probe out, and stream 1's probe times out
        (which once turned multicast off for both, so that stream 2's later answer, confirming
        only its first fan-out, sent no next probe and the hold lasted for good). The hold
        ends.
        """
        from hermod_component.xmpp.streams import NotifierOutlet, StreamSet

        clock = Clock()
        streams = StreamSet(SERVICE, 2)
        notifier = XMPPNotifier(SERVICE, clock, streams)
        finder = MulticastFinder(MULTICAST, notifier)
        managers = [StubStreamManager(), StubStreamManager()]
        for index, manager in enumerate(managers):
            NotifierOutlet(streams, index).setHandlerParent(manager)
            MulticastHandler(finder).setHandlerParent(manager)
        (ping,) = [i for i in managers[0].xmlstream.sent if i["id"].startswith("hermod-barrier")]
        managers[0].xmlstream.receive(
            f"<iq type='get' id='{ping['id']}' from='{SERVICE}' to='{SERVICE}'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>"
        )
        self.assertEqual(len(streams.eligible), 2)
        (query,) = [i for i in managers[0].xmlstream.sent if i["id"].startswith("hermod-multicast")]
        managers[0].xmlstream.receive(
            f"<iq type='result' from='{MULTICAST}' to='{SERVICE}' id='{query['id']}'>"
            f"{infoQuery([ADDRESS], 'infinite')}</iq>"
        )
        throttles = {m.xmlstream: FakeThrottle() for m in managers}
        notifier.multicastFlow.throttleFor = throttles.__getitem__

        def recipientsOn(index: int) -> list[tuple[str, Sequence[str]]]:
            jids = (f"u{n}@example.org/r" for n in range(100_000))
            first = next(j for j in jids if streams.route(j) is streams.outlets[index])
            others = [f"v{index}-{n}@example.org/r" for n in range(499)]
            none: Sequence[str] = ()
            return [(jid, none) for jid in [first, *others]]

        onFirst, onSecond = recipientsOn(0), recipientsOn(1)
        notifier.publish("n", [Item("a", ENTRY)], True, "headline", onFirst)
        clock.advance(1)
        for n in range(WINDOW // MAX_ADDRESSES):
            notifier.publish("n", [Item(f"b{n}", ENTRY)], True, "headline", onSecond)
        second = throttles[managers[1].xmlstream]
        self.assertEqual(second.calls, ["hold multicast"])
        clock.advance(PROBE_TIMEOUT - 1)  # stream 1's probe times out: taken as answered
        self.assertIsNotNone(notifier.multicast)
        (probe,) = probes(managers[1].xmlstream)
        managers[1].xmlstream.receive(
            f"<iq type='result' id='{probe['id']}' from='{MULTICAST}' to='{SERVICE}'>"
            f"<query xmlns='{NS_DISCO_INFO}'/></iq>"
        )
        clock.advance(10 * PROBE_TIMEOUT)
        self.assertEqual(second.calls, ["hold multicast", "release multicast"])

class SeveralInstancesTests(SynchronousTestCase):
    """
    Several Hermod instances on one component JID (README "Several instances"): ejabberd
    routes any stanza for the JID, answers included, to any of their connections.
    """

    def instance(self) -> tuple[XMPPNotifier, StubStreamManager, FakeThrottle]:
        """
        One instance with the service found, its flow's throttle recorded.
        """
        clock = Clock()
        manager = StubStreamManager()
        notifier = XMPPNotifier(SERVICE, clock)
        notifier.setHandlerParent(manager)
        MulticastHandler(MulticastFinder(MULTICAST, notifier)).setHandlerParent(manager)
        (query,) = manager.xmlstream.sent
        manager.xmlstream.receive(
            f"<iq type='result' from='{MULTICAST}' to='{SERVICE}' id='{query['id']}'>"
            f"{infoQuery([ADDRESS], 'infinite')}</iq>"
        )
        throttle = FakeThrottle()
        notifier.multicastFlow.throttleFor = lambda stream: throttle
        manager.xmlstream.clear()
        return notifier, manager, throttle

    def test_anotherInstancesProbeAnswerIsNotOurs(self) -> None:
        """
        Both instances hold, each with its first probe out. The answer to instance A's probe
        arrives on instance B's connection: B must not take it as the answer to its own
        probe (once both were C{hermod-multicast-probe-1}), which would release B's hold while
        the service has confirmed nothing of B's.
        """
        recipients = [(f"u{n}@example.org/r", ()) for n in range(MAX_ADDRESSES)]
        instances = [self.instance(), self.instance()]
        for notifier, _, _ in instances:
            for n in range(2 * WINDOW // MAX_ADDRESSES):
                notifier.publish("n", [Item(f"i{n}", ENTRY)], True, "headline", recipients)
        (_, a, _), (_, b, bThrottle) = instances
        (probeOfA,) = probes(a.xmlstream)
        self.assertEqual(bThrottle.calls, ["hold multicast"])
        b.xmlstream.receive(
            f"<iq type='result' id='{probeOfA['id']}' from='{MULTICAST}' to='{SERVICE}'>"
            f"<query xmlns='{NS_DISCO_INFO}'/></iq>"
        )
        self.assertEqual(len(probes(b.xmlstream)), 1)  # B's own probe is still the one out
        self.assertEqual(bThrottle.calls, ["hold multicast"])

