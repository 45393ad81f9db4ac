"""
Tests for L{hermod_component.xmpp.notifier}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish
from zope.interface.verify import verifyObject

from hermod_component.interfaces import INotifier
from hermod_component.model import Item, NodeConfig, Subscription, SubscriptionState
from hermod_component.subscriptionoptions import RecipientList
from hermod_component.testing import StubStreamManager, parseStanzas
from hermod_component.xmpp import notifier as notifierModule
from hermod_component.xmpp.notifier import XMPPNotifier

SERVICE = "pubsub.example.org"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_SHIM = "http://jabber.org/protocol/shim"
NS_DATA = "jabber:x:data"
WEIRD = "a&b<c>\"d'e"


def event(message: domish.Element) -> domish.Element:
    """
    The single action element inside a message's C{<event/>}.
    """
    (eventElement,) = [c for c in message.elements() if c.name == "event"]
    assert eventElement.uri == NS_EVENT
    (action,) = eventElement.elements()
    return action


def fields(form: domish.Element) -> dict[str, list[str]]:
    """
    Field values of a data form.
    """
    return {
        f["var"]: [str(v) for v in f.elements(NS_DATA, "value")]
        for f in form.elements(NS_DATA, "field")
    }


class NotifierTests(SynchronousTestCase):
    """
    Notifications are written as raw bytes and parse to the XEP-0060 messages.
    """

    def setUp(self) -> None:
        self.manager = StubStreamManager()
        self.notifier = XMPPNotifier(SERVICE)
        self.notifier.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream

    def test_interface(self) -> None:
        """
        L{XMPPNotifier} provides L{INotifier}.
        """
        self.assertTrue(verifyObject(INotifier, self.notifier))

    def test_publishToManyRecipients(self) -> None:
        """
        Each recipient gets one message with the items and payloads, sent as one bytes write.
        """
        recipients = [(f"user{n}@example.org/r", ()) for n in range(500)]
        items = [
            Item("i1", b"<entry xmlns='http://www.w3.org/2005/Atom'><title>T</title></entry>",
                 "pub@example.org"),
            Item("i2", b"<x xmlns='urn:x' xmlns:p='urn:p'><p:y p:a='1'/></x>"),
        ]
        self.notifier.publish("node", items, True, "headline", recipients)
        self.assertEqual(len(self.stream.raw), 500)
        self.assertTrue(all(isinstance(raw, bytes) for raw in self.stream.raw))
        self.assertEqual([m["to"] for m in self.stream.sent], [r for r, _ in recipients])
        message = self.stream.sent[123]
        self.assertEqual((message.name, message["from"], message["type"]),
                         ("message", SERVICE, "headline"))
        action = event(message)
        self.assertEqual((action.name, action["node"]), ("items", "node"))
        first, second = action.elements()
        self.assertEqual(dict(first.attributes), {"id": "i1", "publisher": "pub@example.org"})
        entry = first.firstChildElement()
        self.assertEqual((entry.uri, entry.name, str(entry.title)),
                         ("http://www.w3.org/2005/Atom", "entry", "T"))
        y = second.firstChildElement().firstChildElement()
        self.assertEqual((y.uri, y.name, y.attributes), ("urn:p", "y", {("urn:p", "a"): "1"}))

    def test_publishWithoutPayload(self) -> None:
        """
        Without payloads, items are empty elements; notification_type normal sets the type.
        """
        self.notifier.publish("n", [Item("i1", b"<x xmlns='urn:x'/>")], False, "normal",
                              [("a@x", ())])
        (message,) = self.stream.sent
        self.assertEqual(message["type"], "normal")
        (item,) = event(message).elements()
        self.assertEqual((dict(item.attributes), list(item.elements())), ({"id": "i1"}, []))

    def test_itemHeaders(self) -> None:
        """
        The items' SHIM headers go in the message, escaped; a recipient with several
        subscriptions gets its SubIDs in the same C{<headers/>}, after the item's.
        """
        headers = (("built_by", "johnp"), ("odd", WEIRD))
        item = Item("i", b"<x xmlns='urn:x'/>", headers=headers)
        self.notifier.publish("n", [item], True, "headline", [("a@x", ()), ("b@x", ("s1", "s2"))])
        first, second = self.stream.sent
        (shim,) = [c for c in first.elements() if c.name == "headers"]
        self.assertEqual(shim.uri, NS_SHIM)
        self.assertEqual(
            [(h["name"], str(h)) for h in shim.elements(NS_SHIM, "header")], list(headers)
        )
        self.assertEqual(event(first).firstChildElement()["id"], "i")
        (shim,) = [c for c in second.elements() if c.name == "headers"]
        self.assertEqual(
            [(h["name"], str(h)) for h in shim.elements(NS_SHIM, "header")],
            [*headers, ("SubID", "s1"), ("SubID", "s2")],
        )

    def test_noHeadersNoShim(self) -> None:
        """
        An item without headers, to a single-subscription recipient, has no C{<headers/>}.
        """
        self.notifier.publish("n", [Item("i", b"<x xmlns='urn:x'/>")], True, "headline",
                              [("a@x", ())])
        (message,) = self.stream.sent
        self.assertEqual([c.name for c in message.elements()], ["event"])

    def test_serializedOncePerPublish(self) -> None:
        """
        The event is serialized once per publish, not once per recipient.
        """
        calls: list[Any] = []
        original = notifierModule.itemsEvent

        def counting(*args: Any) -> bytes:
            calls.append(args)
            return original(*args)

        self.patch(notifierModule, "itemsEvent", counting)
        self.notifier.publish("n", [Item("i", b"<x xmlns='urn:x'/>")], True, "headline",
                              [(f"u{n}@x", ()) for n in range(1000)])
        self.assertEqual(len(calls), 1)
        self.assertEqual(len(self.stream.raw), 1000)

    def test_escaping(self) -> None:
        """
        JIDs, node names, item ids and SubIDs with markup characters are escaped.
        """
        recipient = "odd&\"'<>@example.org/" + WEIRD
        self.notifier.publish(WEIRD, [Item(WEIRD, b"", WEIRD)], True, "headline",
                              [(recipient, (WEIRD, "s2"))])
        (message,) = self.stream.sent
        self.assertEqual(message["to"], recipient)
        action = event(message)
        self.assertEqual(action["node"], WEIRD)
        item = action.firstChildElement()
        self.assertEqual((item["id"], item["publisher"]), (WEIRD, WEIRD))
        headers = [c for c in message.elements() if c.name == "headers"]
        self.assertEqual([str(h) for h in headers[0].elements()], [WEIRD, "s2"])

    def test_subIdHeaders(self) -> None:
        """
        The SubIDs the policy names (those of a JID holding several subscriptions, even when
        only one of them matches) go in SHIM SubID headers after the event; a recipient named
        without SubIDs gets none.
        """
        self.notifier.retract("n", ["i1"], "headline",
                              [("a@x", ("s1", "s2")), ("b@x", ("s3",)), ("c@x", ())])
        a, b, c = self.stream.sent
        for message, expected in ((a, ["s1", "s2"]), (b, ["s3"])):
            headers = message.children[-1]
            self.assertEqual((headers.uri, headers.name), (NS_SHIM, "headers"))
            self.assertEqual(
                [(h["name"], str(h)) for h in headers.elements()],
                [("SubID", s) for s in expected],
            )
        self.assertEqual([e.name for e in c.elements()], ["event"])

    def test_retract(self) -> None:
        """
        A retract lists one C{<retract id=/>} per item.
        """
        self.notifier.retract("n", ["i1", "i2"], "headline", [("a@x", ())])
        action = event(self.stream.sent[0])
        self.assertEqual(action.name, "items")
        self.assertEqual([(r.name, r["id"]) for r in action.elements()],
                         [("retract", "i1"), ("retract", "i2")])

    def test_retractAndPurgeWithHeaders(self) -> None:
        """
        Retract and purge notifications for a collection's subscribers carry its
        C{Collection} SHIM header after the event.
        """
        tag = (("Collection", "/a"),)
        self.notifier.retract("/a/n", ["i1"], "headline", [("a@x", ())], tag)
        self.notifier.purge("/a/n", "headline", [("a@x", ())], tag)
        for message in self.stream.sent:
            headers = message.children[-1]
            self.assertEqual((headers.uri, headers.name), (NS_SHIM, "headers"))
            self.assertEqual(
                [(h["name"], str(h)) for h in headers.elements()], [("Collection", "/a")]
            )
        self.assertEqual([event(m).name for m in self.stream.sent], ["items", "purge"])

    def test_purgeAndDelete(self) -> None:
        """
        Purge and delete (with an escaped redirect) name the node.
        """
        self.notifier.purge("n", "headline", [("a@x", ())])
        self.notifier.delete("n", "xmpp:ps?;node=m&x=1", "headline", [("a@x", ())])
        self.notifier.delete("o", None, "headline", [("a@x", ())])
        purge, delete, bare = (event(m) for m in self.stream.sent)
        self.assertEqual((purge.name, purge["node"]), ("purge", "n"))
        self.assertEqual((delete.name, delete["node"]), ("delete", "n"))
        self.assertEqual(delete.firstChildElement()["uri"], "xmpp:ps?;node=m&x=1")
        self.assertEqual((bare.name, list(bare.elements())), ("delete", []))

    def test_configuration(self) -> None:
        """
        A configuration notification carries the node_config form when given.
        """
        self.notifier.configuration("n", NodeConfig(title="T", maxItems=None), "headline",
                                    [("a@x", ())])
        self.notifier.configuration("n", None, "headline", [("a@x", ())])
        withForm, withoutForm = (event(m) for m in self.stream.sent)
        form = withForm.firstChildElement()
        self.assertEqual(form["type"], "result")
        values = fields(form)
        self.assertEqual(values["FORM_TYPE"], ["http://jabber.org/protocol/pubsub#node_config"])
        self.assertEqual(values["pubsub#title"], ["T"])
        self.assertEqual(values["pubsub#max_items"], ["max"])
        self.assertEqual(list(withoutForm.elements()), [])

    def test_subscriptionChanged(self) -> None:
        """
        The subscriber is told the new state of its subscription.
        """
        self.notifier.subscriptionChanged(
            Subscription("n", "a@x/r", "s1", SubscriptionState.SUBSCRIBED))
        (message,) = self.stream.sent
        self.assertEqual(message["to"], "a@x/r")
        action = event(message)
        self.assertEqual(dict(action.attributes), {
            "node": "n", "jid": "a@x/r", "subscription": "subscribed", "subid": "s1"})

    def test_authorizationRequest(self) -> None:
        """
        Each owner gets the XEP-0060 8.6 form with node, subscriber, subid and allow=false.
        """
        self.notifier.authorizationRequest(
            Subscription("n&m", "h@x", "s1", SubscriptionState.PENDING), ["o1@x", "o2@x"])
        self.assertEqual([m["to"] for m in self.stream.sent], ["o1@x", "o2@x"])
        form = self.stream.sent[0].firstChildElement()
        self.assertEqual((form.uri, form["type"]), (NS_DATA, "form"))
        self.assertEqual(fields(form), {
            "FORM_TYPE": ["http://jabber.org/protocol/pubsub#subscribe_authorization"],
            "pubsub#subid": ["s1"],
            "pubsub#node": ["n&m"],
            "pubsub#subscriber_jid": ["h@x"],
            "pubsub#allow": ["false"],
        })

    def test_noStreamDropsWithWarning(self) -> None:
        """
        Without a stream, notifications are dropped and a warning names how many.
        """
        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.notifier.connectionLost(Failure(Exception("gone")))
        self.notifier.purge("n", "headline", [("a@x", ()), ("b@x", ())])
        self.assertEqual(self.stream.raw, [])
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual([(e["count"], e["node"]) for e in warnings], [(2, "n")])


class AnswerFirstTests(SynchronousTestCase):
    """
    With C{answerFirst}, notifications wait for the reactor's next turn, in the order they
    were decided, so that the answer to the request that caused them is written before them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.manager = StubStreamManager()
        self.notifier = XMPPNotifier(SERVICE, self.clock, answerFirst=True)
        self.notifier.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream

    def test_writtenNextTurnInOrder(self) -> None:
        """
        Notifications decided in one turn are written together at the next one, in order,
        through one delayed call; the stream's own writes of this turn come first.
        """
        self.notifier.publish("n", [Item("i1", b"<x/>")], True, "headline",
                              [("a@example.org", ())])
        self.notifier.retract("n", ["i0"], "headline", [("a@example.org", ())])
        self.notifier.purge("m", "headline", [("b@example.org", ())])
        self.assertEqual(self.stream.raw, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.stream.send(b"<iq type='result' id='r1'/>")
        self.clock.advance(0)
        self.assertEqual([s.name for s in self.stream.sent], ["iq", "message", "message",
                                                             "message"])
        actions = [event(m) for m in self.stream.sent[1:]]
        self.assertEqual([(a.name, a.firstChildElement().name if a.name == "items" else None)
                          for a in actions],
                         [("items", "item"), ("items", "retract"), ("purge", None)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nextTurnStartsAgain(self) -> None:
        """
        A notification decided after the delayed call ran gets a delayed call of its own.
        """
        self.notifier.purge("m", "headline", [("b@example.org", ())])
        self.clock.advance(0)
        self.assertEqual(len(self.stream.sent), 1)
        self.notifier.purge("m", "headline", [("c@example.org", ())])
        self.assertEqual(len(self.stream.sent), 1)
        self.clock.advance(0)
        self.assertEqual([m["to"] for m in self.stream.sent], ["b@example.org", "c@example.org"])

    def test_largeFanOutAtOnce(self) -> None:
        """
        A fan-out to more than C{ANSWER_FIRST_LIMIT} recipients is written at once, after the
        notifications kept before it, so that the order stays the order decided.
        """
        many = [(f"u{n}@example.org", ()) for n in range(notifierModule.ANSWER_FIRST_LIMIT + 1)]
        self.notifier.purge("small", "headline", [("a@example.org", ())])
        self.notifier.purge("large", "headline", many)
        self.assertEqual([event(m)["node"] for m in self.stream.sent],
                         ["small"] + ["large"] * len(many))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        few = many[: notifierModule.ANSWER_FIRST_LIMIT]
        self.notifier.purge("limit", "headline", few)
        self.assertEqual(len(self.stream.sent), 1 + len(many))
        self.clock.advance(0)
        self.assertEqual(len(self.stream.sent), 1 + len(many) + len(few))

    def test_failedFanOutLosesNoOther(self) -> None:
        """
        A fan-out that fails when its turn comes is logged; the others are still written.
        """
        def broken() -> str:
            raise RuntimeError("no body")

        # A recipient that asked for a body: its text is made when the fan-out runs.
        recipients = RecipientList()
        recipients.append(("c@example.org", ()))
        recipients.bodies.add("c@example.org")
        self.notifier.purge("m", "headline", [("b@example.org", ())])
        self.notifier._announce("publish", "n", "headline", recipients, b"<x/>", b"", broken)
        self.notifier.purge("m", "headline", [("d@example.org", ())])
        self.clock.advance(0)
        self.assertEqual([m["to"] for m in self.stream.sent], ["b@example.org", "d@example.org"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SerializationTests(SynchronousTestCase):
    """
    The event serializers produce well-formed, namespaced XML.
    """

    def test_itemsEventParses(self) -> None:
        """
        The serialized items event parses to an event in the pubsub#event namespace.
        """
        (element,) = parseStanzas(
            notifierModule.itemsEvent("n", [Item("i", b"<x xmlns='urn:x'/>")], True))
        self.assertEqual((element.uri, element.name), (NS_EVENT, "event"))
