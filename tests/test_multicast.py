"""
Tests for L{hermod_component.xmpp.multicast}: finding an XEP-0033 service, writing one
notification for many recipients through it, and taking back what it refuses.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish

from hermod_component.model import Item
from hermod_component.testing import StubStreamManager, parseStanzas
from hermod_component.xmpp.multicast import (
    DEFAULT_LIMIT,
    DISCO_TIMEOUT,
    MAX_ADDRESSES,
    NS_ADDRESS,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    PROBE_PREFIX,
    PROBE_TIMEOUT,
    QUERY_PREFIX,
    WINDOW,
    MulticastFinder,
    MulticastHandler,
    MulticastService,
    serverDomain,
    serviceLimit,
)
from hermod_component.xmpp.notifier import XMPPNotifier

SERVICE = "pubsub.example.org"
MULTICAST = "multicast.example.org"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
ENTRY = b"<entry xmlns='http://www.w3.org/2005/Atom'><title>T &amp; U</title></entry>"


def infoQuery(features: list[str], limit: str | None = None) -> str:
    """
    A disco#info C{<query/>} with C{features}, and ejabberd's limits form if C{limit} is given.
    """
    form = ""
    if limit is not None:
        form = (
            "<x xmlns='jabber:x:data' type='result'>"
            "<field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_ADDRESS}</value></field>"
            f"<field var='message'><value>{limit}</value></field></x>"
        )
    return (
        f"<query xmlns='{NS_DISCO_INFO}'><identity category='service' type='multicast'/>"
        + "".join(f"<feature var='{f}'/>" for f in features) + form + "</query>"
    )


def messages(stream: Any) -> list[domish.Element]:
    """
    The messages sent on C{stream} (the multicast probes left out).
    """
    return [m for m in stream.sent if m.name == "message"]


def probes(stream: Any) -> list[domish.Element]:
    """
    The multicast probes sent on C{stream}.
    """
    return [m for m in stream.sent if m.name == "iq" and m["id"].startswith(PROBE_PREFIX)]


def addresses(message: domish.Element) -> list[tuple[str, str]]:
    """
    The C{(type, jid)} of the XEP-0033 addresses of C{message}.
    """
    return [
        (a["type"], a["jid"])
        for block in message.elements(NS_ADDRESS, "addresses")
        for a in block.elements(NS_ADDRESS, "address")
    ]


def itemIds(message: domish.Element) -> list[str]:
    """
    The ids of the items notified in C{message}.
    """
    return [
        item["id"]
        for event in message.elements(NS_EVENT, "event")
        for items in event.elements(NS_EVENT, "items")
        for item in items.elements(NS_EVENT, "item")
    ]


class ParsingTests(SynchronousTestCase):
    """
    The limit a service gives, and the server domain a component asks.
    """

    def limitOf(self, limit: str | None) -> int:
        (query,) = parseStanzas(infoQuery([NS_ADDRESS], limit))
        return serviceLimit(query)

    def test_limits(self) -> None:
        """
        A number is kept up to L{MAX_ADDRESSES}; C{infinite} is L{MAX_ADDRESSES}; a missing or
        unreadable limit is L{DEFAULT_LIMIT}; zero or less is one.
        """
        self.assertEqual(self.limitOf("100"), 100)
        self.assertEqual(self.limitOf("100000"), MAX_ADDRESSES)
        self.assertEqual(self.limitOf("infinite"), MAX_ADDRESSES)
        self.assertEqual(self.limitOf(None), DEFAULT_LIMIT)
        self.assertEqual(self.limitOf("many"), DEFAULT_LIMIT)
        self.assertEqual(self.limitOf("0"), 1)

    def test_otherFormsIgnored(self) -> None:
        """
        A C{message} field in a form of another C{FORM_TYPE} is not the service's limit.
        """
        (query,) = parseStanzas(
            f"<query xmlns='{NS_DISCO_INFO}'><x xmlns='jabber:x:data' type='result'>"
            "<field var='FORM_TYPE'><value>urn:other</value></field>"
            "<field var='message'><value>3</value></field></x></query>"
        )
        self.assertEqual(serviceLimit(query), DEFAULT_LIMIT)

    def test_serverDomain(self) -> None:
        """
        The component's JID less its first label, or the JID itself if it has one label.
        """
        self.assertEqual(serverDomain("pubsub.example.org"), "example.org")
        self.assertEqual(serverDomain("pubsub.localhost"), "localhost")
        self.assertEqual(serverDomain("localhost"), "localhost")


class MulticastTestsMixin:
    """
    A notifier with a multicast finder on a stub stream.
    """

    setting = "auto"

    def setUp(self) -> None:
        self.manager = StubStreamManager()
        self.clock = Clock()
        self.notifier = XMPPNotifier(SERVICE, self.clock)
        self.notifier.setHandlerParent(self.manager)
        self.finder = MulticastFinder(self.setting, self.notifier)
        self.handler = MulticastHandler(self.finder)
        self.handler.setHandlerParent(self.manager)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)  # type: ignore[attr-defined]

    def queries(self, namespace: str | None = None) -> list[domish.Element]:
        """
        The disco queries the finder sent on the current stream (of C{namespace}, if given).
        """
        return [
            iq for iq in self.manager.xmlstream.sent
            if iq.name == "iq" and iq.getAttribute("id", "").startswith(QUERY_PREFIX)
            and (namespace is None or any(c.uri == namespace for c in iq.elements()))
        ]

    def answer(self, namespace: str, to: str, child: str, kind: str = "result") -> None:
        """
        Receive the answer to the last query of C{namespace} sent to C{to}.
        """
        asked = [q for q in self.queries(namespace) if q["to"] == to]
        if not asked:
            raise AssertionError(f"no {namespace} query to {to}: {self.queries()}")
        self.manager.xmlstream.receive(
            f"<iq type='{kind}' from='{to}' to='{SERVICE}' id='{asked[-1]['id']}'>{child}</iq>"
        )

    def found(self, limit: str = "3") -> None:
        """
        Answer the search so that L{MULTICAST} is found with C{limit}.
        """
        self.answer(
            NS_DISCO_ITEMS, "example.org",
            f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='{SERVICE}'/>"
            f"<item jid='{MULTICAST}'/></query>",
        )
        self.answer(NS_DISCO_INFO, "example.org", infoQuery([NS_DISCO_INFO]))
        self.answer(NS_DISCO_INFO, MULTICAST, infoQuery([NS_DISCO_INFO, NS_ADDRESS], limit))

    def logged(self, level: LogLevel) -> list[str]:
        """
        The formats logged at C{level}.
        """
        return [e["log_format"] for e in self.events if e.get("log_level") == level]


class FindingTests(MulticastTestsMixin, SynchronousTestCase):
    """
    With C{"auto"}, the service is looked for at each connection among the server's items.
    """

    def test_foundAmongTheServersItems(self) -> None:
        """
        The server's domain and then each item but Hermod itself are asked for disco#info; the
        one with the address feature is used, with the limit it gives.
        """
        self.assertIsNone(self.notifier.multicast)
        self.found("3")
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, 3))
        asked = [(q["to"], q["type"], q["from"]) for q in self.queries()]
        self.assertEqual(asked, [("example.org", "get", SERVICE), ("example.org", "get", SERVICE),
                                 (MULTICAST, "get", SERVICE)])
        self.assertTrue(any("go through the multicast service" in f
                            for f in self.logged(LogLevel.info)))

    def test_noneFound(self) -> None:
        """
        When no item has the feature (or one does not answer), notifications go one by one,
        and the log says so.
        """
        self.answer(
            NS_DISCO_ITEMS, "example.org",
            f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='muc.example.org'/>"
            "<item jid='silent.example.org'/></query>",
        )
        self.answer(NS_DISCO_INFO, "example.org", infoQuery([NS_DISCO_INFO]))
        self.answer(NS_DISCO_INFO, "muc.example.org", infoQuery(["http://jabber.org/protocol/muc"]))
        self.assertEqual(self.queries()[-1]["to"], "silent.example.org")
        self.clock.advance(DISCO_TIMEOUT)
        self.assertIsNone(self.notifier.multicast)
        self.assertTrue(any("lists no XEP-0033 multicast service" in f
                            for f in self.logged(LogLevel.info)))
        self.notifier.publish("n", [Item("i1", ENTRY)], True, "headline",
                              [("a@example.org/r", ()), ("b@example.org/r", ())])
        self.assertEqual([m["to"] for m in messages(self.manager.xmlstream)],
                         ["a@example.org/r", "b@example.org/r"])

    def test_forgottenWithTheStreamAndSoughtAgain(self) -> None:
        """
        When the stream drops, the service is forgotten; the next stream looks again.
        """
        self.found()
        self.manager.dropStream()
        self.assertIsNone(self.notifier.multicast)
        self.manager.newStream()
        self.assertEqual([q["to"] for q in self.queries(NS_DISCO_ITEMS)], ["example.org"])
        self.found("7")
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, 7))

    def test_streamGoneDuringTheSearch(self) -> None:
        """
        When the last stream drops during the search, the search ends quietly and the next
        stream starts its own, which finds the service; a late answer to the old search's
        query is not taken.
        """
        (old,) = self.queries(NS_DISCO_ITEMS)
        self.manager.dropStream()
        self.assertEqual(self.logged(LogLevel.warn), [])
        self.manager.newStream()
        late = self.manager.xmlstream.receive(
            f"<iq type='result' from='example.org' to='{SERVICE}' id='{old['id']}'>"
            f"<query xmlns='{NS_DISCO_ITEMS}'/></iq>"
        )
        self.assertFalse(getattr(late, "handled", False))
        self.found("5")
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, 5))

    def test_answerOnAnotherStream(self) -> None:
        """
        An answer is matched by its id, whichever stream it arrives on (the server may route
        it to another connection of the component than its query's).
        """
        other = StubStreamManager()
        otherHandler = MulticastHandler(self.finder)
        otherHandler.setHandlerParent(other)
        (query,) = self.queries(NS_DISCO_ITEMS)
        answer = other.xmlstream.receive(
            f"<iq type='result' from='example.org' to='{SERVICE}' id='{query['id']}'>"
            f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='{MULTICAST}'/></query></iq>"
        )
        self.assertTrue(getattr(answer, "handled", False))
        self.assertEqual([q["to"] for q in self.queries(NS_DISCO_INFO)], ["example.org"])


class ConfiguredServiceTests(MulticastTestsMixin, SynchronousTestCase):
    """
    With a service JID, only that JID is asked.
    """

    setting = MULTICAST

    def test_usedIfItHasTheFeature(self) -> None:
        """
        The configured service is asked for disco#info only, and used.
        """
        self.assertEqual([q["to"] for q in self.queries()], [MULTICAST])
        self.answer(NS_DISCO_INFO, MULTICAST, infoQuery([NS_ADDRESS], "infinite"))
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, MAX_ADDRESSES))

    def test_notAMulticastService(self) -> None:
        """
        A configured JID without the feature is not used, and that is logged as an error.
        """
        self.answer(NS_DISCO_INFO, MULTICAST, infoQuery([NS_DISCO_INFO]))
        self.assertIsNone(self.notifier.multicast)
        self.assertTrue(any("is not an XEP-0033 multicast service" in f
                            for f in self.logged(LogLevel.error)))


class WritingTests(MulticastTestsMixin, SynchronousTestCase):
    """
    Notifications to several recipients go through the service found.
    """

    def setUp(self) -> None:
        super().setUp()
        self.found("3")
        self.stream = self.manager.xmlstream

    def test_publishInChunksOfTheLimit(self) -> None:
        """
        Seven recipients without SubIDs get three multicast messages (3, 3 and 1 bcc
        addresses) to the service, each with the whole event; a recipient with SubIDs gets its
        own message with them.
        """
        plain = [(f"u{n}@example.org/r", ()) for n in range(7)]
        named = [("v@example.org/r", ("s1", "s2"))]
        self.notifier.publish("n", [Item("i1", ENTRY)], True, "normal", plain + named)
        sent = messages(self.stream)
        self.assertEqual([m["to"] for m in sent], [MULTICAST] * 3 + ["v@example.org/r"])
        self.assertEqual(
            [jid for m in sent[:3] for kind, jid in addresses(m)], [r for r, _ in plain]
        )
        self.assertEqual({kind for m in sent[:3] for kind, _ in addresses(m)}, {"bcc"})
        self.assertEqual([len(addresses(m)) for m in sent[:3]], [3, 3, 1])
        for message in sent:
            self.assertEqual((message["from"], message["type"]), (SERVICE, "normal"))
            self.assertEqual(itemIds(message), ["i1"])
        entry = next(sent[0].elements(NS_EVENT, "event")).firstChildElement()
        self.assertIn("T &amp; U", next(entry.elements()).firstChildElement().toXml())
        self.assertEqual(addresses(sent[3]), [])
        self.assertEqual(self.notifier.multicastMessages, 3)
        self.assertEqual(self.notifier.streams.outlets[0].notifications, 8)

    def test_oneRecipientDirect(self) -> None:
        """
        A notification for one recipient is written to it, not through the service.
        """
        self.notifier.retract("n", ["i1"], "headline", [("u@example.org/r", ())])
        self.assertEqual([m["to"] for m in messages(self.stream)], ["u@example.org/r"])
        self.assertEqual(self.notifier.multicastMessages, 0)

    def test_headersTravel(self) -> None:
        """
        The SHIM headers every recipient gets are in the multicast message.
        """
        self.notifier.retract(
            "n", ["i1"], "headline", [("a@example.org/r", ()), ("b@example.org/r", ())],
            headers=[("Collection", "/c")],
        )
        (message,) = messages(self.stream)
        (headers,) = message.elements("http://jabber.org/protocol/shim", "headers")
        self.assertEqual([(h["name"], str(h)) for h in headers.elements()], [("Collection", "/c")])


class RefusalTests(MulticastTestsMixin, SynchronousTestCase):
    """
    A multicast message the service sends back is written to each recipient, and multicast
    stops until the next connection.
    """

    def setUp(self) -> None:
        super().setUp()
        self.found("10")
        self.stream = self.manager.xmlstream
        self.recipients = [(f"u{n}@example.org/r", ()) for n in range(4)]
        self.notifier.publish("n", [Item("i1", ENTRY)], True, "normal", self.recipients)
        (self.multicastMessage,) = messages(self.stream)
        self.stream.clear()

    def bounce(self, condition: str = "forbidden", sender: str = MULTICAST) -> domish.Element:
        """
        Receive the multicast message back from C{sender} as an error, as ejabberd sends it.
        """
        original = self.multicastMessage
        inner = "".join(
            c.toXml() for c in original.elements() if isinstance(c, domish.Element)
        )
        return self.stream.receive(
            f"<message from='{sender}' to='{SERVICE}' type='error' id='{original['id']}'>"
            f"{inner}<error type='auth'><{condition} "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Access denied</text></error></message>"
        )

    def test_resentToEachAndMulticastOff(self) -> None:
        """
        Each recipient gets the notification in a message of its own, with the original type
        and payload; the refusal is logged with its condition; later notifications go one by
        one.
        """
        stanza = self.bounce()
        self.assertTrue(getattr(stanza, "handled", False))
        sent = self.stream.sent
        self.assertEqual([m["to"] for m in sent], [r for r, _ in self.recipients])
        for message in sent:
            self.assertEqual((message["from"], message["type"]), (SERVICE, "normal"))
            self.assertEqual(itemIds(message), ["i1"])
            self.assertEqual(addresses(message), [])
            self.assertEqual(list(message.elements(None, "error")), [])
        self.assertIsNone(self.notifier.multicast)
        self.assertEqual(self.finder.refusals, 1)
        errors = self.logged(LogLevel.error)
        self.assertTrue(any("refused a notification ({condition})" in f for f in errors))
        self.stream.clear()
        self.notifier.publish("n", [Item("i2", ENTRY)], True, "normal", self.recipients)
        self.assertEqual([m["to"] for m in self.stream.sent], [r for r, _ in self.recipients])

    def test_laterRefusalsStillResent(self) -> None:
        """
        A second refusal, arriving after multicast was turned off, is resent as well.
        """
        self.bounce()
        self.stream.clear()
        self.bounce("resource-constraint")
        self.assertEqual(len(self.stream.sent), 4)
        self.assertEqual(self.finder.refusals, 2)

    def test_othersErrorsNotTaken(self) -> None:
        """
        An error message from another sender, or without a multicast id, is left to the other
        handlers.
        """
        stanza = self.bounce(sender="someone@example.org")
        self.assertFalse(getattr(stanza, "handled", False))
        other = self.stream.receive(
            f"<message from='{MULTICAST}' to='{SERVICE}' type='error' id='abc'>"
            "<error type='cancel'><item-not-found "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        )
        self.assertFalse(getattr(other, "handled", False))
        self.assertEqual(self.stream.sent, [])
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, 10))


class FakeThrottle:
    """
    Records holds and releases of reading.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def hold(self, reason: str) -> None:
        self.calls.append(f"hold {reason}")

    def release(self, reason: str) -> None:
        self.calls.append(f"release {reason}")


class FlowTests(MulticastTestsMixin, SynchronousTestCase):
    """
    Probes confirm what the service has routed; reading is held while too much is not.
    """

    def setUp(self) -> None:
        super().setUp()
        self.found("infinite")
        self.stream = self.manager.xmlstream
        self.stream.clear()
        self.throttle = FakeThrottle()
        self.notifier.multicastFlow.throttleFor = lambda stream: self.throttle
        self.recipients = [(f"u{n}@example.org/r", ()) for n in range(MAX_ADDRESSES)]

    def publish(self, times: int = 1) -> None:
        for n in range(times):
            self.notifier.publish("n", [Item(f"i{n}", ENTRY)], True, "headline", self.recipients)

    def answerProbe(self, probe: domish.Element, kind: str = "result") -> domish.Element:
        """
        Receive the service's answer to C{probe}.
        """
        return self.stream.receive(
            f"<iq type='{kind}' id='{probe['id']}' from='{MULTICAST}' to='{SERVICE}'>"
            f"<query xmlns='{NS_DISCO_INFO}'/></iq>"
        )

    def test_probeAfterTheMessages(self) -> None:
        """
        A disco#info probe to the service follows a fan-out's multicast messages; while it is
        outstanding no other is sent; its answer (handled, not left to others) sends the next
        one for what was written meanwhile.
        """
        self.publish()
        self.assertEqual([s.name for s in self.stream.sent], ["message", "iq"])
        (probe,) = probes(self.stream)
        self.assertEqual((probe["to"], probe["type"], probe["from"]), (MULTICAST, "get", SERVICE))
        self.assertEqual([c.uri for c in probe.elements()], [NS_DISCO_INFO])
        self.publish(2)
        self.assertEqual(len(probes(self.stream)), 1)
        answer = self.answerProbe(probe)
        self.assertTrue(getattr(answer, "handled", False))
        self.assertEqual(len(probes(self.stream)), 2)
        self.answerProbe(probes(self.stream)[1], "error")
        self.assertEqual(len(probes(self.stream)), 2)  # nothing left to confirm
        self.assertEqual(self.throttle.calls, [])

    def test_holdAboveTheWindow(self) -> None:
        """
        At L{WINDOW} unconfirmed recipients reading is held; it is released once probes have
        confirmed all but half of the window.
        """
        fanOuts = WINDOW // MAX_ADDRESSES
        self.publish(fanOuts - 1)
        self.assertEqual(self.throttle.calls, [])
        self.publish()
        self.assertEqual(self.throttle.calls, ["hold multicast"])
        self.publish(2)
        self.assertEqual(self.throttle.calls, ["hold multicast"])
        self.answerProbe(probes(self.stream)[0])  # confirms the first fan-out only
        self.assertEqual(self.throttle.calls, ["hold multicast"])
        self.answerProbe(probes(self.stream)[1])  # and the rest
        self.assertEqual(self.throttle.calls, ["hold multicast", "release multicast"])
        self.assertEqual(self.notifier.multicastFlow.holds, 1)

    def test_unansweredProbe(self) -> None:
        """
        A probe unanswered L{PROBE_TIMEOUT} seconds after it was written counts as answered
        (with a warning): the next probe goes out, the hold ends, and the service stays in
        use.
        """
        self.publish(WINDOW // MAX_ADDRESSES)
        self.clock.advance(PROBE_TIMEOUT)  # the first probe covered the first fan-out
        self.assertEqual(self.throttle.calls, ["hold multicast"])
        self.assertEqual(len(probes(self.stream)), 2)
        self.clock.advance(PROBE_TIMEOUT)
        self.assertEqual(self.throttle.calls, ["hold multicast", "release multicast"])
        self.assertEqual(self.notifier.multicastFlow.timeouts, 2)
        self.assertEqual(self.notifier.multicast, MulticastService(MULTICAST, MAX_ADDRESSES))
        self.assertTrue(any("did not answer a probe" in f for f in self.logged(LogLevel.warn)))
        late = self.answerProbe(probes(self.stream)[0])  # too late: no longer one of ours
        self.assertFalse(getattr(late, "handled", False))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_streamGoneForgetsTheWindow(self) -> None:
        """
        When the stream drops, its window and probe are forgotten: no timeout fires later.
        """
        self.publish()
        self.manager.dropStream()
        self.assertEqual(self.clock.getDelayedCalls(), [])
