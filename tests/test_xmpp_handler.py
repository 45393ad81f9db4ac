"""
Tests for L{hermod_component.xmpp.handler}: literal stanzas in, policy calls and stanzas out.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.error import NS_XMPP_STANZAS
from twisted.words.xish import domish

from hermod_component import errors
from hermod_component.config import PubSubSettings
from hermod_component.model import (
    Affiliation,
    Item,
    Node,
    NodeConfig,
    NodeMetaData,
    NodeType,
    Subscription,
    SubscriptionState,
)
from hermod_component.testing import FakePolicy, StubStreamManager, parseStanzas
from hermod_component.xmpp.errors import NS_PUBSUB_ERRORS
from hermod_component.xmpp.handler import FEATURES, HermodPubSubService, makeHandlers
from hermod_component.xmpp.notifier import XMPPNotifier

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_DATA = "jabber:x:data"
SERVICE = "pubsub.example.org"
ME = "hamlet@denmark.lit/elsinore"


def form(namespace: str, fields: dict[str, list[str]], formType: str = "submit") -> str:
    """
    A serialized data form with a FORM_TYPE.
    """
    parts = [
        f"<x xmlns='{NS_DATA}' type='{formType}'>",
        f"<field var='FORM_TYPE' type='hidden'><value>{namespace}</value></field>",
    ]
    for var, values in fields.items():
        parts.append(f"<field var='{var}'>")
        parts += [f"<value>{value}</value>" for value in values]
        parts.append("</field>")
    parts.append("</x>")
    return "".join(parts)


def formFields(element: domish.Element) -> dict[str, list[str]]:
    """
    The values of a rendered data form, FORM_TYPE included.
    """
    return {
        field["var"]: [str(value) for value in field.elements(NS_DATA, "value")]
        for field in element.elements(NS_DATA, "field")
    }


def child(element: domish.Element, *path: str) -> domish.Element:
    """
    Follow child element names from C{element}; fail if one is missing.
    """
    for name in path:
        found = [c for c in element.elements() if c.name == name]
        assert found, f"no {name} in {element.toXml()}"
        element = found[0]
    return element


class HandlerTestCase(SynchronousTestCase):
    """
    Common set-up: the handlers on a stub stream, driven by a L{FakePolicy}.
    """

    def setUp(self) -> None:
        self.policy = FakePolicy(SERVICE)
        self.manager = StubStreamManager()
        self.handlers = makeHandlers(self.policy)
        for handler in self.handlers:
            handler.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream

    def iq(self, iqType: str, inner: str, namespace: str = NS_PUBSUB) -> domish.Element:
        """
        Send a pubsub IQ and return the one response.
        """
        return self.send(
            f"<iq type='{iqType}' from='{ME}' to='{SERVICE}' id='r1'>"
            f"<pubsub xmlns='{namespace}'>{inner}</pubsub></iq>"
        )

    def send(self, xml: str) -> domish.Element:
        """
        Dispatch a stanza and return the one stanza answered.
        """
        self.stream.clear()
        self.stream.receive(xml)
        self.assertEqual(len(self.stream.sent), 1, [s.toXml() for s in self.stream.sent])
        response = self.stream.sent[0]
        self.assertEqual((response["to"], response["from"]), (ME, SERVICE))
        return response

    def assertResult(self, response: domish.Element) -> domish.Element | None:
        """
        The response is a result for C{r1}; return its payload, if any.
        """
        self.assertEqual((response["type"], response["id"]), ("result", "r1"), response.toXml())
        return response.firstChildElement()

    def assertError(
        self,
        response: domish.Element,
        condition: str,
        pubsubCondition: str | None = None,
        feature: str | None = None,
    ) -> None:
        """
        The response is an error with this condition and pubsub child.
        """
        self.assertEqual(response["type"], "error", response.toXml())
        error = child(response, "error")
        conditions = [c.name for c in error.elements() if c.uri == NS_XMPP_STANZAS
                      and c.name != "text"]
        pubsub = [c for c in error.elements() if c.uri == NS_PUBSUB_ERRORS]
        self.assertEqual(conditions, [condition], response.toXml())
        if pubsubCondition is None:
            self.assertEqual(pubsub, [], response.toXml())
        else:
            self.assertEqual([c.name for c in pubsub], [pubsubCondition], response.toXml())
            self.assertEqual(pubsub[0].getAttribute("feature"), feature)

    def assertCalls(self, *calls: tuple[str, tuple[Any, ...]]) -> None:
        """
        The policy was called exactly so.
        """
        self.assertEqual(self.policy.calls, list(calls))


class PublishTests(HandlerTestCase):
    """
    Publish and retract.
    """

    def test_publish(self) -> None:
        """
        Items go to the policy as (id, payload bytes) and the response lists the stored ids.
        """
        self.policy.results["publish"] = ["a", "generated"]
        response = self.iq(
            "set",
            "<publish node='n1'><item id='a'><e xmlns='urn:e'>1</e></item>"
            "<item id=''><e xmlns='urn:e'>2</e></item><item/></publish>",
        )
        payload = self.assertResult(response)
        assert payload is not None
        publish = child(payload, "publish")
        self.assertEqual(publish["node"], "n1")
        self.assertEqual([i["id"] for i in publish.elements()], ["a", "generated"])
        ((name, args),) = self.policy.calls
        self.assertEqual(name, "publish")
        self.assertEqual(args[:2], (ME, "n1"))
        self.assertEqual([itemId for itemId, _ in args[2]], ["a", None, None])
        self.assertEqual(args[2][2][1], b"")
        self.assertIsNone(args[3])

    def test_publishAnswerIsSerializedOnce(self) -> None:
        """
        The publish answer is written as bytes, not elements: addressing swapped, id copied,
        and the node and item ids escaped so that the answer parses back to the same values.
        """
        node = "n\"1'&<x>"
        self.policy.results["publish"] = ["a&b", "<c>"]
        self.stream.clear()
        self.stream.receive(
            f"<iq type='set' from='{ME}' to='{SERVICE}' id='r&amp;1'>"
            f"<pubsub xmlns='{NS_PUBSUB}'><publish node='n&quot;1&apos;&amp;&lt;x&gt;'>"
            "<item id='a&amp;b'><e xmlns='urn:e'/></item><item><e xmlns='urn:e'/></item>"
            "</publish></pubsub></iq>"
        )
        (raw,) = self.stream.raw
        self.assertIsInstance(raw, bytes)
        (response,) = self.stream.sent
        self.assertEqual(
            (response.name, response["type"], response["id"], response["to"], response["from"]),
            ("iq", "result", "r&1", ME, SERVICE),
        )
        payload = response.firstChildElement()
        self.assertEqual((payload.uri, payload.name), (NS_PUBSUB, "pubsub"))
        publish = child(payload, "publish")
        self.assertEqual(publish["node"], node)
        self.assertEqual([i["id"] for i in publish.elements()], ["a&b", "<c>"])
        self.assertEqual([i.uri for i in publish.elements()], [NS_PUBSUB, NS_PUBSUB])
        self.assertEqual(self.policy.calls[0][1][1], node)

    def test_publishAnswerWithoutTo(self) -> None:
        """
        A publish request without C{to} is answered by the element path, so the stream stamps
        the component's JID as C{from}; the answer carries the same ids.
        """
        self.policy.results["publish"] = ["a"]
        self.stream.clear()
        self.stream.receive(
            f"<iq type='set' from='{ME}' id='r1'><pubsub xmlns='{NS_PUBSUB}'>"
            "<publish node='n1'><item id='a'><e xmlns='urn:e'/></item></publish></pubsub></iq>"
        )
        (raw,) = self.stream.raw
        self.assertIsInstance(raw, domish.Element)
        (response,) = self.stream.sent
        self.assertEqual((response["type"], response["to"]), ("result", ME))
        self.assertNotIn("from", response.attributes)
        payload = self.assertResult(response)
        assert payload is not None
        publish = child(payload, "publish")
        self.assertEqual(publish["node"], "n1")
        self.assertEqual([i["id"] for i in publish.elements()], ["a"])

    def test_payloadRoundTrips(self) -> None:
        """
        A payload with a default namespace, prefixed children, attributes and escaped text is
        serialized to bytes that parse to the same XML.
        """
        self.policy.results["publish"] = ["a"]
        payload = (
            "<entry xmlns='http://www.w3.org/2005/Atom' xmlns:h='urn:xmpp:hermod:0' "
            "xml:lang='en'><title>A &amp; B &lt; C</title>"
            "<h:sync action='up&quot;date' h:origin='x'><h:hop jid='a@b'/></h:sync>"
            "<content type='text'>caf\u00e9</content></entry>"
        )
        self.iq("set", f"<publish node='n'><item id='a'>{payload}</item></publish>")
        stored = self.policy.calls[0][1][2][0][1]
        self.assertIsInstance(stored, bytes)
        (original,) = parseStanzas(payload)
        (roundTripped,) = parseStanzas(stored)
        self.assertEqual(canonical(roundTripped), canonical(original))

    def test_shimHeaders(self) -> None:
        """
        A SHIM C{<headers/>} next to the payload becomes the item's third member, kept out of
        the payload bytes; an item without headers stays a pair; a nameless header is a
        bad-request.
        """
        self.policy.results["publish"] = ["a", "b"]
        self.iq(
            "set",
            "<publish node='n'><item id='a'><e xmlns='urn:e'>1</e>"
            "<headers xmlns='http://jabber.org/protocol/shim'>"
            "<header name='built_by'>johnp</header><header name='tag'>a &amp; b</header>"
            "</headers></item><item id='b'><e xmlns='urn:e'>2</e></item></publish>",
        )
        ((_, args),) = self.policy.calls
        first, second = args[2]
        self.assertEqual(first[0], "a")
        self.assertNotIn(b"headers", first[1])
        (payload,) = parseStanzas(first[1])
        self.assertEqual((payload.uri, payload.name, str(payload)), ("urn:e", "e", "1"))
        self.assertEqual(first[2], (("built_by", "johnp"), ("tag", "a & b")))
        self.assertEqual(len(second), 2)
        response = self.iq(
            "set",
            "<publish node='n'><item id='a'><e xmlns='urn:e'/>"
            "<headers xmlns='http://jabber.org/protocol/shim'><header>x</header></headers>"
            "</item></publish>",
        )
        self.assertError(response, "bad-request")
        self.assertEqual(len(self.policy.calls), 1)

    def test_twoPayloadsAreInvalid(self) -> None:
        """
        An item with two payload elements is bad-request + invalid-payload (XEP-0060 7.1.3.5).
        """
        response = self.iq(
            "set", "<publish node='n'><item id='a'><x xmlns='urn:x'/><y xmlns='urn:y'/></item>"
            "</publish>"
        )
        self.assertError(response, "bad-request", "invalid-payload")
        self.assertCalls()

    def test_publishOptions(self) -> None:
        """
        Publish-options form values go to the policy as lists of strings.
        """
        self.policy.results["publish"] = ["a"]
        self.iq(
            "set",
            "<publish node='n'><item id='a'/></publish><publish-options>"
            + form(NS_PUBSUB + "#publish-options", {"pubsub#access_model": ["whitelist"]})
            + "</publish-options>",
        )
        self.assertEqual(self.policy.calls[0][1][3], {"pubsub#access_model": ["whitelist"]})

    def test_publishOptionsMustBeSubmitted(self) -> None:
        """
        A publish-options form that is not of type submit is a bad-request.
        """
        response = self.iq(
            "set",
            "<publish node='n'/><publish-options>"
            + form(NS_PUBSUB + "#publish-options", {}, formType="form")
            + "</publish-options>",
        )
        self.assertError(response, "bad-request")
        self.assertCalls()

    def test_publishNeedsNode(self) -> None:
        """
        A publish without node is bad-request + nodeid-required.
        """
        self.assertError(self.iq("set", "<publish/>"), "bad-request", "nodeid-required")

    def test_retractNotify(self) -> None:
        """
        notify="true" and notify="1" ask for notification; no notify attribute does not.
        """
        for attribute, expected in (("notify='true'", True), ("notify='1'", True),
                                    ("", False), ("notify='0'", False)):
            self.policy.calls.clear()
            response = self.iq(
                "set", f"<retract node='n' {attribute}><item id='a'/><item id='b'/></retract>"
            )
            self.assertIsNone(self.assertResult(response))
            self.assertCalls(("retract", (ME, "n", ["a", "b"], expected)))

    def test_retractNeedsItemIds(self) -> None:
        """
        A retract without item or with an item without id is bad-request + item-required.
        """
        for inner in ("<retract node='n'/>", "<retract node='n'><item/></retract>"):
            self.assertError(self.iq("set", inner), "bad-request", "item-required")
        self.assertCalls()

    def test_retractBadNotify(self) -> None:
        """
        A notify value that is not a boolean is a bad-request.
        """
        response = self.iq("set", "<retract node='n' notify='maybe'><item id='a'/></retract>")
        self.assertError(response, "bad-request")


def canonical(element: domish.Element) -> tuple[Any, ...]:
    """
    An element as nested tuples of (namespace, name, attributes, text, children).
    """
    return (
        element.uri,
        element.name,
        sorted((str(k), v) for k, v in element.attributes.items()),
        "".join(str(c) for c in element.children if isinstance(c, str)),
        [canonical(c) for c in element.elements()],
    )


class SubscriberTests(HandlerTestCase):
    """
    Subscribe, unsubscribe, options, items and the entity's own lists.
    """

    def test_subscribe(self) -> None:
        """
        The subscriber JID goes to the policy and the response carries the subscription.
        """
        self.policy.results["subscribe"] = Subscription("n", "hamlet@denmark.lit", "s1")
        response = self.iq("set", "<subscribe node='n' jid='hamlet@denmark.lit'/>")
        payload = self.assertResult(response)
        assert payload is not None
        subscription = child(payload, "subscription")
        self.assertEqual(
            dict(subscription.attributes),
            {"node": "n", "jid": "hamlet@denmark.lit", "subid": "s1",
             "subscription": "subscribed"},
        )
        self.assertCalls(("subscribe", (ME, "n", "hamlet@denmark.lit", None)))

    def test_subscribePendingAndUnconfigured(self) -> None:
        """
        A pending subscription says so; an unconfigured one adds subscribe-options/required.
        """
        self.policy.results["subscribe"] = Subscription(
            "n", ME, "s1", SubscriptionState.PENDING
        )
        payload = self.assertResult(self.iq("set", f"<subscribe node='n' jid='{ME}'/>"))
        assert payload is not None
        self.assertEqual(child(payload, "subscription")["subscription"], "pending")
        self.policy.results["subscribe"] = Subscription(
            "n", ME, "s1", SubscriptionState.UNCONFIGURED
        )
        payload = self.assertResult(self.iq("set", f"<subscribe node='n' jid='{ME}'/>"))
        assert payload is not None
        child(payload, "subscription", "subscribe-options", "required")

    def test_subscribeWithOptions(self) -> None:
        """
        Options given with subscribe go to the policy, and the result carries the options.
        """
        self.policy.results["subscribe"] = Subscription(
            "n", ME, "s1", options={"pubsub#deliver": ("0",)}
        )
        response = self.iq(
            "set",
            f"<subscribe node='n' jid='{ME}'/><options>"
            + form(NS_PUBSUB + "#subscribe_options", {"pubsub#deliver": ["0"]})
            + "</options>",
        )
        payload = self.assertResult(response)
        assert payload is not None
        self.assertCalls(("subscribe", (ME, "n", ME, {"pubsub#deliver": ["0"]})))
        x = child(payload, "options", "x")
        self.assertEqual(x["type"], "result")
        self.assertEqual(formFields(x)["pubsub#deliver"], ["false"])

    def test_subscribeOptionsWithNodeAreBad(self) -> None:
        """
        An options element after subscribe may not carry node or jid (XEP-0060 6.3.7).
        """
        response = self.iq(
            "set", f"<subscribe node='n' jid='{ME}'/><options node='n'>"
            + form(NS_PUBSUB + "#subscribe_options", {}) + "</options>"
        )
        self.assertError(response, "bad-request")
        self.assertCalls()

    def test_subscribeBadJID(self) -> None:
        """
        A malformed subscriber JID is bad-request + invalid-jid; a missing one bad-request.
        """
        self.assertError(
            self.iq("set", "<subscribe node='n' jid='a@@b/'/>"), "bad-request", "invalid-jid"
        )
        self.assertError(self.iq("set", "<subscribe node='n'/>"), "bad-request", "jid-required")
        self.assertCalls()

    def test_unsubscribe(self) -> None:
        """
        Unsubscribe passes the SubID and answers an empty result.
        """
        response = self.iq("set", f"<unsubscribe node='n' jid='{ME}' subid='s1'/>")
        self.assertIsNone(self.assertResult(response))
        self.assertCalls(("unsubscribe", (ME, "n", ME, "s1")))

    def test_optionsGet(self) -> None:
        """
        The options form names node, jid and subid and carries the stored values.
        """
        self.policy.results["getSubscriptionOptions"] = Subscription(
            "n",
            ME,
            "s1",
            options={"pubsub#deliver": ("0",), "hermod#header_filter": ("built_by=johnp",)},
        )
        payload = self.assertResult(self.iq("get", f"<options node='n' jid='{ME}'/>"))
        assert payload is not None
        options = child(payload, "options")
        self.assertEqual((options["node"], options["jid"], options["subid"]), ("n", ME, "s1"))
        x = child(options, "x")
        self.assertEqual(x["type"], "form")
        self.assertEqual(
            formFields(x),
            {
                "FORM_TYPE": [NS_PUBSUB + "#subscribe_options"],
                "pubsub#deliver": ["false"],
                "hermod#header_filter": ["built_by=johnp"],
                "pubsub#subscription_type": ["items"],
                "pubsub#subscription_depth": ["1"],
                "pubsub#digest": ["false"],
                "pubsub#digest_frequency": ["86400000"],
                "pubsub#expire": [],
                "pubsub#include_body": ["false"],
                "pubsub#show-values": [],
            },
        )
        self.assertCalls(("getSubscriptionOptions", (ME, "n", ME, None)))

    def test_optionsSet(self) -> None:
        """
        Submitted options go to the policy; a cancelled form calls nothing; no form is bad.
        """
        self.assertResult(self.iq(
            "set", f"<options node='n' jid='{ME}' subid='s1'>"
            + form(NS_PUBSUB + "#subscribe_options", {"pubsub#deliver": ["false"]})
            + "</options>"
        ))
        self.assertCalls(
            ("setSubscriptionOptions", (ME, "n", ME, "s1", {"pubsub#deliver": ["false"]}))
        )
        self.policy.calls.clear()
        self.assertResult(self.iq(
            "set", f"<options node='n' jid='{ME}'><x xmlns='{NS_DATA}' type='cancel'/></options>"
        ))
        self.assertCalls()
        self.assertError(self.iq("set", f"<options node='n' jid='{ME}'/>"), "bad-request")

    def test_items(self) -> None:
        """
        max_items, item ids and subid go to the policy; items come back with raw payloads.
        """
        self.policy.results["items"] = [
            Item("b", b"<e xmlns='urn:e'>two</e>", "hamlet@denmark.lit"),
            Item("a", b""),
        ]
        payload = self.assertResult(self.iq(
            "get", "<items node='n' max_items='2' subid='s1'/>"
        ))
        assert payload is not None
        items = child(payload, "items")
        self.assertEqual(items["node"], "n")
        first, second = items.elements()
        self.assertEqual((first["id"], first["publisher"]), ("b", "hamlet@denmark.lit"))
        entry = first.firstChildElement()
        self.assertEqual((entry.uri, entry.name, str(entry)), ("urn:e", "e", "two"))
        self.assertEqual(dict(second.attributes), {"id": "a"})
        self.policy.calls.clear()
        self.iq("get", "<items node='n'><item id='x'/><item id='y'/></items>")
        self.assertCalls(("items", (ME, "n", None, ["x", "y"], None)))

    def test_itemsWithHeaders(self) -> None:
        """
        An item's stored SHIM headers come back in a C{<headers/>} after its payload, as they
        were published.
        """
        self.policy.results["items"] = [
            Item("b", b"<e xmlns='urn:e'>two</e>", headers=(("built_by", "johnp"), ("x", "<&>")))
        ]
        payload = self.assertResult(self.iq("get", "<items node='n'/>"))
        assert payload is not None
        (item,) = child(payload, "items").elements()
        entry, headers = item.elements()
        self.assertEqual((entry.uri, entry.name), ("urn:e", "e"))
        self.assertEqual((headers.uri, headers.name), ("http://jabber.org/protocol/shim", "headers"))
        self.assertEqual(
            [(h["name"], str(h)) for h in headers.elements()], [("built_by", "johnp"), ("x", "<&>")]
        )

    def test_itemsBadMaxItems(self) -> None:
        """
        max_items that is not a positive whole number is a bad-request.
        """
        for value in ("abc", "0", "-3"):
            self.assertError(self.iq("get", f"<items node='n' max_items='{value}'/>"),
                             "bad-request")
        self.assertCalls()

    def test_entitySubscriptionsAndAffiliations(self) -> None:
        """
        The requester's own subscriptions and affiliations, with the node when one was asked.
        """
        self.policy.results["entitySubscriptions"] = [Subscription("n", ME, "s1")]
        payload = self.assertResult(self.iq("get", "<subscriptions node='n'/>"))
        assert payload is not None
        subscriptions = child(payload, "subscriptions")
        self.assertEqual(subscriptions["node"], "n")
        self.assertEqual(child(subscriptions, "subscription")["subid"], "s1")
        self.policy.results["entityAffiliations"] = [("n", Affiliation.OWNER)]
        payload = self.assertResult(self.iq("get", "<affiliations/>"))
        assert payload is not None
        affiliation = child(payload, "affiliations", "affiliation")
        self.assertEqual(dict(affiliation.attributes), {"node": "n", "affiliation": "owner"})
        self.assertCalls(("entitySubscriptions", (ME, "n")), ("entityAffiliations", (ME, None)))


class OwnerTests(HandlerTestCase):
    """
    Create, configure, default, purge, delete, affiliations and subscriptions.
    """

    def test_createNamed(self) -> None:
        """
        Creating the named node answers an empty result.
        """
        self.policy.results["createNode"] = "n"
        self.assertIsNone(self.assertResult(self.iq("set", "<create node='n'/>")))
        self.assertCalls(("createNode", (ME, "n", None)))

    def test_createInstant(self) -> None:
        """
        An instant node's generated id is in the response (XEP-0060 8.1.2).
        """
        self.policy.results["createNode"] = "generated"
        payload = self.assertResult(self.iq("set", "<create/>"))
        assert payload is not None
        self.assertEqual(child(payload, "create")["node"], "generated")
        self.assertCalls(("createNode", (ME, None, None)))

    def test_createAndConfigure(self) -> None:
        """
        A configuration form with create goes to the policy as form values.
        """
        self.policy.results["createNode"] = "n"
        self.iq("set", "<create node='n'/><configure>" + form(
            NS_PUBSUB + "#node_config", {"pubsub#max_items": ["5"], "pubsub#title": ["T"]}
        ) + "</configure>")
        self.assertCalls(
            ("createNode", (ME, "n", {"pubsub#max_items": ["5"], "pubsub#title": ["T"]}))
        )

    def test_createWithFormTypeForm(self) -> None:
        """
        A configuration form that is not submitted is a bad-request.
        """
        response = self.iq("set", "<create node='n'/><configure>" + form(
            NS_PUBSUB + "#node_config", {}, formType="form") + "</configure>")
        self.assertError(response, "bad-request")

    def test_configureGet(self) -> None:
        """
        The configuration form names the node and renders every configuration field.
        """
        self.policy.results["getConfiguration"] = NodeConfig(maxItems=None, title="T & U")
        payload = self.assertResult(self.iq("get", "<configure node='n'/>", NS_OWNER))
        assert payload is not None
        configure = child(payload, "configure")
        self.assertEqual(configure["node"], "n")
        x = child(configure, "x")
        self.assertEqual(x["type"], "form")
        fields = formFields(x)
        self.assertEqual(fields["FORM_TYPE"], [NS_PUBSUB + "#node_config"])
        self.assertEqual(fields["pubsub#max_items"], ["max"])
        self.assertEqual(fields["pubsub#title"], ["T & U"])
        access = [f for f in x.elements(NS_DATA, "field") if f["var"] == "pubsub#access_model"]
        self.assertEqual(access[0]["type"], "list-single")
        self.assertEqual(
            [str(o.value) for o in access[0].elements(NS_DATA, "option")],
            ["open", "whitelist", "authorize"],
        )
        self.assertCalls(("getConfiguration", (ME, "n")))

    def test_configureSetAndCancel(self) -> None:
        """
        A submitted form goes to the policy; a cancelled one is answered without a call.
        """
        self.assertResult(self.iq("set", "<configure node='n'>" + form(
            NS_PUBSUB + "#node_config", {"pubsub#deliver_payloads": ["0"]}
        ) + "</configure>", NS_OWNER))
        self.assertCalls(("configure", (ME, "n", {"pubsub#deliver_payloads": ["0"]})))
        self.policy.calls.clear()
        self.assertResult(self.iq(
            "set", f"<configure node='n'><x xmlns='{NS_DATA}' type='cancel'/></configure>",
            NS_OWNER,
        ))
        self.assertCalls()

    def test_configureNeedsNodeAndForm(self) -> None:
        """
        Configure without node is nodeid-required; a set without form is a bad-request.
        """
        self.assertError(self.iq("get", "<configure/>", NS_OWNER), "bad-request",
                         "nodeid-required")
        self.assertError(self.iq("set", "<configure node='n'/>", NS_OWNER), "bad-request")
        self.assertCalls()

    def test_default(self) -> None:
        """
        The default configuration comes back as a node_config form.
        """
        self.policy.results["defaultConfiguration"] = NodeConfig()
        payload = self.assertResult(self.iq("get", "<default/>", NS_OWNER))
        assert payload is not None
        fields = formFields(child(payload, "default", "x"))
        self.assertEqual(fields["pubsub#max_items"], ["10"])
        self.assertCalls(("defaultConfiguration", (ME, "leaf")))

    def test_purgeAndDelete(self) -> None:
        """
        Purge and delete (with redirect) are one policy call each with an empty result.
        """
        self.assertIsNone(self.assertResult(self.iq("set", "<purge node='n'/>", NS_OWNER)))
        self.assertIsNone(self.assertResult(self.iq(
            "set", "<delete node='n'><redirect uri='xmpp:ps?;node=m&amp;x'/></delete>", NS_OWNER
        )))
        self.assertIsNone(self.assertResult(self.iq("set", "<delete node='o'/>", NS_OWNER)))
        self.assertCalls(
            ("purge", (ME, "n")),
            ("deleteNode", (ME, "n", "xmpp:ps?;node=m&x")),
            ("deleteNode", (ME, "o", None)),
        )

    def test_affiliations(self) -> None:
        """
        Owner affiliations are listed with the node and set by bare JID.
        """
        self.policy.results["getAffiliations"] = {
            "hamlet@denmark.lit": Affiliation.OWNER, "bard@x": Affiliation.PUBLISHER}
        payload = self.assertResult(self.iq("get", "<affiliations node='n'/>", NS_OWNER))
        assert payload is not None
        affiliations = child(payload, "affiliations")
        self.assertEqual(affiliations["node"], "n")
        self.assertEqual(
            sorted((a["jid"], a["affiliation"]) for a in affiliations.elements()),
            [("bard@x", "publisher"), ("hamlet@denmark.lit", "owner")],
        )
        self.assertResult(self.iq(
            "set", "<affiliations node='n'><affiliation jid='bard@x/r' affiliation='member'/>"
            "<affiliation jid='c@x' affiliation='none'/></affiliations>", NS_OWNER
        ))
        self.assertEqual(
            self.policy.calls[-1], ("setAffiliations", (ME, "n", {"bard@x": "member",
                                                                   "c@x": "none"}))
        )
        self.assertError(self.iq(
            "set", "<affiliations node='n'><affiliation jid='a@x' affiliation='king'/>"
            "</affiliations>", NS_OWNER), "bad-request")

    def test_subscriptions(self) -> None:
        """
        Owner subscriptions are listed with node and SubIDs and set as (jid, state, subid).
        """
        self.policy.results["getSubscriptions"] = [
            Subscription("n", "a@x/r", "s1"),
            Subscription("n", "b@x", "s2", SubscriptionState.PENDING),
        ]
        payload = self.assertResult(self.iq("get", "<subscriptions node='n'/>", NS_OWNER))
        assert payload is not None
        subscriptions = child(payload, "subscriptions")
        self.assertEqual(subscriptions["node"], "n")
        self.assertEqual(
            [dict(s.attributes) for s in subscriptions.elements()],
            [{"jid": "a@x/r", "subscription": "subscribed", "subid": "s1"},
             {"jid": "b@x", "subscription": "pending", "subid": "s2"}],
        )
        self.assertResult(self.iq(
            "set", "<subscriptions node='n'>"
            "<subscription jid='a@x/r' subscription='none' subid='s1'/>"
            "<subscription jid='b@x' subscription='subscribed'/>"
            "<subscription jid='c@x'/></subscriptions>", NS_OWNER
        ))
        self.assertEqual(self.policy.calls[-1], ("setSubscriptions", (ME, "n", [
            ("a@x/r", "none", "s1"), ("b@x", "subscribed", None)])))


class ErrorTests(HandlerTestCase):
    """
    Domain errors, unexpected exceptions, malformed and unknown requests.
    """

    def test_domainErrors(self) -> None:
        """
        Domain errors raised by the policy become their stanza errors.
        """
        cases = [
            (errors.NodeNotFound(), "item-not-found", None, None),
            (errors.Forbidden(), "forbidden", None, None),
            (errors.PayloadTooBig(), "not-acceptable", "payload-too-big", None),
            (errors.PreconditionNotMet(), "conflict", "precondition-not-met", None),
            (errors.Unsupported("persistent-items"), "feature-not-implemented", "unsupported",
             "persistent-items"),
        ]
        for exception, condition, pubsub, feature in cases:
            self.policy.errors["publish"] = exception
            response = self.iq("set", "<publish node='n'><item id='a'/></publish>")
            self.assertError(response, condition, pubsub, feature)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_unexpectedExceptionIsLoggedAndInternal(self) -> None:
        """
        Any other exception is logged with its traceback and answered internal-server-error
        without its text.
        """
        self.policy.errors["purge"] = ZeroDivisionError("secret")
        response = self.iq("set", "<purge node='n'/>", NS_OWNER)
        self.assertError(response, "internal-server-error")
        self.assertNotIn("secret", response.toXml())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unknownVerb(self) -> None:
        """
        Unknown pubsub requests are feature-not-implemented with an unsupported feature.
        """
        self.assertError(self.iq("get", "<default node='n'/>"), "feature-not-implemented",
                         "unsupported", "retrieve-default-sub")
        self.assertError(self.iq("set", "<frobnicate/>"), "feature-not-implemented",
                         "unsupported", "frobnicate")

    def test_malformed(self) -> None:
        """
        An empty pubsub, two verbs, or a verb with the wrong IQ type is a bad-request.
        """
        self.assertError(self.iq("get", ""), "bad-request")
        self.assertError(self.iq("set", "<purge node='n'/><delete node='n'/>", NS_OWNER),
                         "bad-request")
        self.assertError(self.iq("get", "<publish node='n'/>"), "bad-request")
        self.assertCalls()

    def test_otherIQsAreServiceUnavailable(self) -> None:
        """
        An IQ of a namespace Hermod does not serve is answered service-unavailable.
        """
        response = self.send(
            f"<iq type='get' from='{ME}' to='{SERVICE}' id='r1'>"
            "<query xmlns='jabber:iq:version'/></iq>"
        )
        self.assertError(response, "service-unavailable")


class DiscoTests(HandlerTestCase):
    """
    Service discovery of the service, its nodes and their items.
    """

    def disco(self, kind: str, node: str = "") -> domish.Element:
        """
        Send a disco query and return the response.
        """
        attribute = f" node='{node}'" if node else ""
        return self.send(
            f"<iq type='get' from='{ME}' to='{SERVICE}' id='r1'>"
            f"<query xmlns='http://jabber.org/protocol/disco#{kind}'{attribute}/></iq>"
        )

    def test_serviceInfo(self) -> None:
        """
        The service is pubsub/service and advertises exactly the implemented features.
        """
        query = self.assertResult(self.disco("info"))
        assert query is not None
        identities = [(i["category"], i["type"]) for i in query.elements() if i.name == "identity"]
        self.assertEqual(identities, [("pubsub", "service")])
        features = {f["var"] for f in query.elements() if f.name == "feature"}
        self.assertEqual(
            features,
            {"http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
             NS_PUBSUB, "http://jabber.org/protocol/rsm", "http://jabber.org/protocol/shim",
             "urn:xmpp:json:0", "urn:xmpp:hermod:0#archive-pages"}
            | {f"{NS_PUBSUB}#{feature}" for feature in FEATURES},
        )

    def test_autoCreateFollowsTheSettings(self) -> None:
        """
        auto-create is advertised only when the policy's settings enable it.
        """
        self.policy.settings = PubSubSettings(autoCreate=True)  # type: ignore[attr-defined]
        self.manager = StubStreamManager()
        for handler in makeHandlers(self.policy):
            handler.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream
        query = self.assertResult(self.disco("info"))
        assert query is not None
        features = {f["var"] for f in query.elements() if f.name == "feature"}
        self.assertIn(NS_PUBSUB + "#auto-create", features)
        self.assertNotIn(NS_PUBSUB + "#presence-subscribe", features)

    def test_nodeInfo(self) -> None:
        """
        A node's info has its type and a meta-data form with creator, date, owners,
        publishers, subscriber count and configuration.
        """
        self.policy.results["nodeInfo"] = NodeMetaData(
            Node("n", NodeConfig(title="T"), "ham@x", 0.0), ("ham@x", "ophelia@x"), ("pol@x",), 3
        )
        query = self.assertResult(self.disco("info", "n"))
        assert query is not None
        self.assertEqual(query["node"], "n")
        identity = child(query, "identity")
        self.assertEqual((identity["category"], identity["type"]), ("pubsub", "leaf"))
        fields = formFields(child(query, "x"))
        self.assertEqual(fields["FORM_TYPE"], [NS_PUBSUB + "#meta-data"])
        self.assertEqual(fields["pubsub#creator"], ["ham@x"])
        self.assertEqual(fields["pubsub#creation_date"], ["1970-01-01T00:00:00Z"])
        self.assertEqual(fields["pubsub#title"], ["T"])
        self.assertEqual(fields["pubsub#owner"], ["ham@x", "ophelia@x"])
        self.assertEqual(fields["pubsub#publisher"], ["pol@x"])
        self.assertEqual(fields["pubsub#num_subscribers"], ["3"])
        self.assertCalls(("nodeInfo", (ME, "n")))

    def test_missingNodeInfo(self) -> None:
        """
        Info on a missing node is item-not-found.
        """
        self.policy.errors["nodeInfo"] = errors.NodeNotFound()
        self.assertError(self.disco("info", "gone"), "item-not-found")

    def test_items(self) -> None:
        """
        The service's items are its nodes; a leaf node's items are named by item id.
        """
        self.policy.results["listNodes"] = [("a", "Title A"), ("b", "")]
        query = self.assertResult(self.disco("items"))
        assert query is not None
        self.assertEqual(
            [dict(i.attributes) for i in query.elements()],
            [{"jid": SERVICE, "node": "a", "name": "Title A"}, {"jid": SERVICE, "node": "b"}],
        )
        self.policy.results["nodeInfo"] = NodeMetaData(
            Node("a", NodeConfig(), "ham@x", 0.0), ("ham@x",), (), 0
        )
        self.policy.results["itemIds"] = ["i1", "i2"]
        query = self.assertResult(self.disco("items", "a"))
        assert query is not None
        self.assertEqual(
            [dict(i.attributes) for i in query.elements()],
            [{"jid": SERVICE, "name": "i1"}, {"jid": SERVICE, "name": "i2"}],
        )
        self.policy.results["nodeInfo"] = NodeMetaData(
            Node("c", NodeConfig(nodeType=NodeType.COLLECTION), "ham@x", 0.0), ("ham@x",), (), 0
        )
        self.policy.results["listNodes"] = [("c/d", "")]
        query = self.assertResult(self.disco("items", "c"))
        assert query is not None
        self.assertEqual([i["node"] for i in query.elements()], ["c/d"])
        self.assertEqual(self.policy.calls[-1], ("listNodes", (ME, "c")))


class AuthorizationTests(HandlerTestCase):
    """
    Owners' answers to pending subscription requests (XEP-0060 8.6).
    """

    def message(self, fields: dict[str, list[str]]) -> None:
        """
        Receive an authorization form from the owner.
        """
        self.stream.clear()
        self.stream.receive(
            f"<message from='{ME}' to='{SERVICE}' id='m1'>"
            + form(NS_PUBSUB + "#subscribe_authorization", fields) + "</message>"
        )

    def test_answer(self) -> None:
        """
        The submitted form becomes one answerAuthorization call.
        """
        self.message({"pubsub#node": ["n"], "pubsub#subscriber_jid": ["h@x"],
                      "pubsub#subid": ["s1"], "pubsub#allow": ["true"]})
        self.message({"pubsub#node": ["n"], "pubsub#subscriber_jid": ["h@x"],
                      "pubsub#allow": ["0"]})
        self.assertCalls(
            ("answerAuthorization", (ME, "n", "h@x", "s1", True)),
            ("answerAuthorization", (ME, "n", "h@x", None, False)),
        )
        self.assertEqual(self.stream.sent, [])

    def test_incompleteForm(self) -> None:
        """
        A form without subscriber is answered with a bad-request message error.
        """
        self.message({"pubsub#node": ["n"], "pubsub#allow": ["1"]})
        self.assertCalls()
        (reply,) = self.stream.sent
        self.assertEqual((reply.name, reply["type"], reply["to"]), ("message", "error", ME))
        self.assertEqual(child(reply, "error", "bad-request").uri, NS_XMPP_STANZAS)

    def test_domainErrorIsReturned(self) -> None:
        """
        A refusal by the policy comes back as a message error.
        """
        self.policy.errors["answerAuthorization"] = errors.Forbidden()
        self.message({"pubsub#node": ["n"], "pubsub#subscriber_jid": ["h@x"],
                      "pubsub#allow": ["1"]})
        (reply,) = self.stream.sent
        child(reply, "error", "forbidden")


class MakeHandlersTests(SynchronousTestCase):
    """
    Tests for L{makeHandlers}.
    """

    def test_pubsubRequestsRouted(self) -> None:
        """
        On Hermod's own stream, the pubsub service takes the requests of both pubsub
        namespaces as routed requests (no XPath dispatch), and a publish read from the wire
        is answered through that route.
        """
        from twisted.internet.testing import StringTransport
        from twisted.words.protocols.jabber.xmlstream import Authenticator

        from hermod_component.xmpp.stream import HermodXmlStream

        policy = FakePolicy(SERVICE)
        (service,) = [h for h in makeHandlers(policy) if isinstance(h, HermodPubSubService)]
        stream = HermodXmlStream(Authenticator())
        transport = StringTransport()
        stream.makeConnection(transport)
        service.parent = stream  # what it sends goes to the stream, as through its manager
        service.makeConnection(stream)
        self.assertEqual(stream.requestRoutes,
                         {NS_PUBSUB: service.handleRequest, NS_OWNER: service.handleRequest})
        stream.dataReceived(
            b"<stream:stream xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams'>"
            + f"<iq type='set' id='r1' from='{ME}' to='{SERVICE}'><pubsub xmlns='{NS_PUBSUB}'>"
            f"<publish node='n'><item id='i1'><x xmlns='urn:x'/></item></publish></pubsub>"
            "</iq>".encode()
        )
        self.assertEqual(policy.calls[0][0], "publish")
        written = transport.value()
        (answer,) = parseStanzas(written[written.index(b"<iq"):])
        self.assertEqual((answer["type"], answer["id"]), ("result", "r1"))

    def test_notifierIsSet(self) -> None:
        """
        The policy's notifier is the XMPP notifier among the handlers, sending as the service.
        """
        policy = FakePolicy(SERVICE)
        handlers = makeHandlers(policy)
        self.assertIsInstance(policy.notifier, XMPPNotifier)
        self.assertIn(policy.notifier, handlers)
        self.assertEqual(policy.notifier.service, SERVICE)
