"""
Tests for multi-subscribe and the XEP-0060 §6.3 subscription options (digest, expire,
include_body, show-values), for L{hermod_component.lifecycle} (leases and the last item on
presence) and L{hermod_component.subscriptionoptions}: the policy on memory storage, and the
whole XMPP edge on a stub stream with a fake clock.
"""

from __future__ import annotations

import datetime

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.words.xish import domish

from hermod_component import errors
from hermod_component.model import Item, Subscription
from hermod_component.nodeoptions import (
    subscriptionOptionFields,
    subscriptionOptionsFromValues,
    subscriptionOptionValues,
)
from hermod_component.presence import PresenceState
from hermod_component.subscriptionoptions import DeliveryMode, deliveryMode, expiry
from hermod_component.testing import RecordingNotifier, StubStreamManager
from hermod_component.xmpp.digest import itemsBody
from hermod_component.xmpp.handler import makeHandlers
from tests.test_policy import ALICE, BOB, ENTRY, OWNER, SERVICE, PolicyTestCase

NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_SHIM = "http://jabber.org/protocol/shim"


def stamp(seconds: float) -> str:
    """
    A XEP-0082 dateTime for POSIX C{seconds}.
    """
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


class OptionValidationTests(PolicyTestCase):
    """
    The new subscription options are validated and stored normalized.
    """

    def test_badValues(self) -> None:
        """
        Bad values of each option are invalid-options (bad-request), and nothing is stored.
        """
        self.makeNode()
        for var, values in (
            ("pubsub#digest", ["maybe"]),
            ("pubsub#digest_frequency", ["0"]),
            ("pubsub#digest_frequency", ["soon"]),
            ("pubsub#digest_frequency", [str(8 * 86_400_000)]),
            ("pubsub#expire", ["tomorrow"]),
            ("pubsub#expire", ["2030-01-01T00:00:00"]),
            ("pubsub#expire", ["2030-01-01"]),
            ("pubsub#include_body", ["yes please"]),
            ("pubsub#show-values", ["sleeping"]),
        ):
            self.fails(
                self.policy.subscribe(ALICE, "news", ALICE, {var: values}),
                errors.InvalidSubscriptionOptions,
            )
        self.assertEqual(self.result(self.policy.getSubscriptions(OWNER, "news")), [])

    def test_storedNormalized(self) -> None:
        """
        Booleans are stored as 0/1, show values in their canonical order, the others as given.
        """
        stored = subscriptionOptionsFromValues(
            {
                "pubsub#digest": ["true"],
                "pubsub#digest_frequency": ["5000"],
                "pubsub#expire": ["2030-01-01T00:00:00+02:00"],
                "pubsub#include_body": ["false"],
                "pubsub#show-values": ["xa", "chat", "chat"],
            }
        )
        self.assertEqual(
            stored,
            {
                "pubsub#digest": ("1",),
                "pubsub#digest_frequency": ("5000",),
                "pubsub#expire": ("2030-01-01T00:00:00+02:00",),
                "pubsub#include_body": ("0",),
                "pubsub#show-values": ("chat", "xa"),
            },
        )
        self.assertEqual(
            deliveryMode(stored), DeliveryMode(5000, False, frozenset({"chat", "xa"}))
        )
        self.assertEqual(
            expiry(stored),
            datetime.datetime(2029, 12, 31, 22, tzinfo=datetime.UTC).timestamp(),
        )
        self.assertEqual(expiry({"pubsub#expire": ("presence",)}), "presence")

    def test_plainHasNoMode(self) -> None:
        """
        Options without digest, body or show values leave the subscription plain.
        """
        self.assertIsNone(deliveryMode({}))
        self.assertIsNone(deliveryMode({"pubsub#digest": ("0",), "pubsub#deliver": ("1",)}))
        self.assertEqual(
            deliveryMode({"pubsub#digest": ("1",)}), DeliveryMode(86_400_000, False, None)
        )

    def test_formDefaultsAndFields(self) -> None:
        """
        The form shows defaults for options not set; show-values only with presence.
        """
        values = subscriptionOptionValues({})
        self.assertEqual(values["pubsub#digest"], ["0"])
        self.assertEqual(values["pubsub#digest_frequency"], ["86400000"])
        self.assertEqual(values["pubsub#include_body"], ["0"])
        self.assertEqual(values["pubsub#expire"], [])
        withPresence = {f.var: f for f in subscriptionOptionFields(True)}
        self.assertEqual(withPresence["pubsub#show-values"].fieldType, "list-multi")
        self.assertEqual(
            [v for v, _ in withPresence["pubsub#show-values"].options],
            ["away", "chat", "dnd", "online", "xa"],
        )
        self.assertNotIn("pubsub#show-values", {f.var for f in subscriptionOptionFields(False)})


class MultiSubscribeTests(PolicyTestCase):
    """
    One JID holds several subscriptions to a node, each with its own SubID and options.
    """

    def filtered(self, *pairs: str) -> Subscription:
        """
        Subscribe L{ALICE} with a header filter.
        """
        return self.result(
            self.policy.subscribe(ALICE, "news", ALICE, {"hermod#header_filter": list(pairs)})
        )

    def test_otherOptionsMakeAnotherSubscription(self) -> None:
        """
        A subscribe with other options makes a second subscription; the first keeps its
        options.
        """
        self.makeNode()
        first = self.filtered("built_by=johnp")
        second = self.filtered("topic=koji")
        self.assertNotEqual(first.subscriptionId, second.subscriptionId)
        mine = self.result(self.policy.entitySubscriptions(ALICE, "news"))
        self.assertEqual(
            {s.subscriptionId: s.options["hermod#header_filter"] for s in mine},
            {first.subscriptionId: ("built_by=johnp",), second.subscriptionId: ("topic=koji",)},
        )

    def test_sameOptionsOrNoneReturnExisting(self) -> None:
        """
        A subscribe with the options of a held subscription returns it, and one without
        options returns a held one: no new subscription either way.
        """
        self.makeNode()
        first = self.filtered("built_by=johnp")
        self.filtered("topic=koji")
        again = self.filtered("built_by=johnp")
        self.assertEqual(again.subscriptionId, first.subscriptionId)
        bare = self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.assertEqual(bare.subscriptionId, first.subscriptionId)
        self.assertEqual(len(self.result(self.policy.entitySubscriptions(ALICE, "news"))), 2)

    def test_capCountsEverySubscription(self) -> None:
        """
        Every subscription of a JID counts against max_subscribers_per_node.
        """
        import attrs

        self.policy.settings = attrs.evolve(self.settings, maxSubscribersPerNode=2)
        self.makeNode()
        self.filtered("a=1")
        self.filtered("a=2")
        self.fails(
            self.policy.subscribe(ALICE, "news", ALICE, {"hermod#header_filter": ["a=3"]}),
            errors.TooManySubscriptions,
        )

    def test_requestsNeedTheSubId(self) -> None:
        """
        With two subscriptions, unsubscribe, options and items need the SubID; with it each
        acts on its own subscription.
        """
        self.makeNode()
        first = self.filtered("a=1")
        second = self.filtered("a=2")
        self.fails(self.policy.unsubscribe(ALICE, "news", ALICE, None),
                   errors.SubscriptionIdRequired)
        self.fails(self.policy.getSubscriptionOptions(ALICE, "news", ALICE, None),
                   errors.SubscriptionIdRequired)
        self.fails(self.policy.getSubscriptionOptions(ALICE, "news", ALICE, "nope"),
                   errors.InvalidSubscriptionId)
        self.fails(self.policy.items(ALICE, "news", None, None, "nope"),
                   errors.InvalidSubscriptionId)
        self.fails(self.policy.items(ALICE, "news", None, None, None),
                   errors.SubscriptionIdRequired)
        self.result(self.policy.itemIds(ALICE, "news"))  # disco#items names no subscription
        self.result(self.policy.items(ALICE, "news", None, None, second.subscriptionId))
        got = self.result(
            self.policy.getSubscriptionOptions(ALICE, "news", ALICE, second.subscriptionId)
        )
        self.assertEqual(got.options["hermod#header_filter"], ("a=2",))
        self.result(self.policy.unsubscribe(ALICE, "news", ALICE, first.subscriptionId))
        (left,) = self.result(self.policy.entitySubscriptions(ALICE, "news"))
        self.assertEqual(left.subscriptionId, second.subscriptionId)

    def test_oneNotificationWithTheMatchingSubIds(self) -> None:
        """
        An item matching both filters is one notification naming both SubIDs; one matching
        a single filter names that SubID only; a JID with one subscription gets no SubID.
        """
        self.makeNode()
        johnp = self.filtered("built_by=johnp")
        koji = self.filtered("topic=koji")
        self.result(self.policy.subscribe(BOB, "news", BOB, None))
        for headers in ((("built_by", "johnp"), ("topic", "koji")), (("topic", "koji"),)):
            self.result(self.policy.publish(OWNER, "news", [(None, ENTRY, headers)], None))
        both, one = (c[1]["recipients"] for c in self.published())
        self.assertEqual(
            sorted(both),
            [(ALICE, [johnp.subscriptionId, koji.subscriptionId]), (BOB, [])],
        )
        self.assertEqual(sorted(one), [(ALICE, [koji.subscriptionId]), (BOB, [])])


class EdgeTestCase(PolicyTestCase):
    """
    The policy behind the real XMPP handlers on a stub stream, with the fake clock.
    """

    def setUp(self) -> None:
        super().setUp()
        self.manager = StubStreamManager()
        for handler in makeHandlers(self.policy):
            handler.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream

    def subscribe(self, who: str, node: str = "news", **options: str | list[str]) -> Subscription:
        """
        Subscribe C{who} with C{pubsub#} options (underscores as in the option names).
        """
        values = {
            f"pubsub#{k.replace('show_values', 'show-values')}": v if isinstance(v, list) else [v]
            for k, v in options.items()
        }
        subscription = self.result(self.policy.subscribe(who, node, who, values or None))
        self.clock.advance(0)  # a last item sent on subscription
        return subscription

    def publish(self, itemId: str, payload: bytes = ENTRY, node: str = "news") -> None:
        """
        Publish one item as the owner.
        """
        self.result(self.policy.publish(OWNER, node, [(itemId, payload)], None))

    def presence(self, sender: str, kind: str | None = None, show: str | None = None) -> None:
        """
        Dispatch a presence from C{sender} to the component, as if the server routed it.
        """
        attribute = f" type='{kind}'" if kind else ""
        inner = f"<show>{show}</show>" if show else ""
        self.stream.receive(
            f"<presence xmlns='jabber:client' from='{sender}' to='{SERVICE}'{attribute}>"
            f"{inner}</presence>"
        )

    def messagesTo(self, who: str) -> list[domish.Element]:
        """
        The messages sent to C{who} so far.
        """
        return [s for s in self.stream.sent if s.name == "message" and s["to"] == who]

    def itemIds(self, message: domish.Element) -> list[str]:
        """
        The ids of the items in every C{<event/>} of a message, in order.
        """
        return [
            item["id"]
            for event in message.elements(NS_EVENT, "event")
            for items in event.elements(NS_EVENT, "items")
            for item in items.elements(NS_EVENT, "item")
        ]

    def subIds(self, message: domish.Element) -> list[str]:
        """
        The SHIM SubID headers of a message.
        """
        return [
            str(h)
            for headers in message.elements(NS_SHIM, "headers")
            for h in headers.elements(NS_SHIM, "header")
            if h["name"] == "SubID"
        ]


class DigestTests(EdgeTestCase):
    """
    C{pubsub#digest}: one message per period holding every notification of the period.
    """

    def test_itemsOfThePeriodInOneMessage(self) -> None:
        """
        Items published within the period arrive as one message when it ends, with the
        SubID; plain subscribers get each at once; an idle period sends nothing.
        """
        self.makeNode()
        digest = self.subscribe(ALICE, digest="1", digest_frequency="5000")
        self.subscribe(BOB)
        for n in range(3):
            self.publish(f"i{n}")
            self.clock.advance(1)
        self.assertEqual(self.messagesTo(ALICE), [])
        self.assertEqual(len(self.messagesTo(BOB)), 3)
        self.clock.advance(2)
        (message,) = self.messagesTo(ALICE)
        self.assertEqual(self.itemIds(message), ["i0", "i1", "i2"])
        self.assertEqual(self.subIds(message), [digest.subscriptionId])
        self.assertEqual(message["type"], "headline")
        self.clock.advance(60)
        self.assertEqual(len(self.messagesTo(ALICE)), 1)
        self.assertEqual(len(self.policy.notifier.digests), 0)  # type: ignore[attr-defined]

    def test_atMostOneDigestPerPeriod(self) -> None:
        """
        A notification after a digest starts the next period: the next digest leaves a whole
        period later, not at once.
        """
        self.makeNode()
        self.subscribe(ALICE, digest="1", digest_frequency="5000")
        self.publish("a")
        self.clock.advance(5)
        self.publish("b")
        self.clock.advance(4.9)
        self.assertEqual(len(self.messagesTo(ALICE)), 1)
        self.clock.advance(0.1)
        self.assertEqual([self.itemIds(m) for m in self.messagesTo(ALICE)], [["a"], ["b"]])

    def test_eventsJoinTheDigest(self) -> None:
        """
        Retractions are gathered into the digest too, after the items, in order.
        """
        self.makeNode(notify_retract="1")
        self.subscribe(ALICE, digest="1", digest_frequency="1000")
        self.publish("a")
        self.result(self.policy.retract(OWNER, "news", ["a"], False))
        self.clock.advance(1)
        (message,) = self.messagesTo(ALICE)
        kinds = [
            [c.name for c in items.elements()]
            for event in message.elements(NS_EVENT, "event")
            for items in event.elements(NS_EVENT, "items")
        ]
        self.assertEqual(kinds, [["item"], ["retract"]])

    def test_bufferIsBounded(self) -> None:
        """
        A digest reaching the buffer's limit is sent early, so memory stays bounded.
        """
        self.makeNode()
        self.policy.notifier.digests.limit = 3  # type: ignore[attr-defined]
        self.subscribe(ALICE, digest="1", digest_frequency="60000")
        for n in range(4):
            self.publish(f"i{n}")
        (message,) = self.messagesTo(ALICE)
        self.assertEqual(self.itemIds(message), ["i0", "i1", "i2"])


class IncludeBodyTests(EdgeTestCase):
    """
    C{pubsub#include_body}: notifications carry a human-readable body.
    """

    def body(self, message: domish.Element) -> str | None:
        """
        The message's body text, if it has one.
        """
        bodies = [str(b) for b in message.elements() if b.name == "body"]
        return bodies[0] if bodies else None

    def test_atomTitleOrItemText(self) -> None:
        """
        An Atom entry's title is the body, another payload gets "new item ID on NODE"; a
        subscriber without the option gets no body.
        """
        self.makeNode()
        self.subscribe(ALICE, include_body="1")
        self.subscribe(BOB)
        self.publish("a")
        self.publish("b", b"<json xmlns='urn:xmpp:json:0'>{}</json>")
        first, second = self.messagesTo(ALICE)
        self.assertEqual(self.body(first), "Hello")
        self.assertEqual(self.body(second), "new item b on news")
        self.assertEqual(self.itemIds(first), ["a"])
        self.assertEqual([self.body(m) for m in self.messagesTo(BOB)], [None, None])

    def test_hostileEntityIsNotResolved(self) -> None:
        """
        An Atom payload with an external entity (which a stanza cannot carry, but the body
        code does not rely on that) is not expanded into the body.
        """
        hostile = (
            b'<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<entry xmlns="http://www.w3.org/2005/Atom"><title>&x;</title></entry>'
        )
        body = itemsBody("news", [Item("x", hostile, "", 0.0)])
        self.assertNotIn("root:", body)

    def test_lastItemHasABody(self) -> None:
        """
        The last item sent on subscription carries the body too.
        """
        self.makeNode(send_last_published_item="on_sub")
        self.publish("a")
        self.stream.clear()
        self.subscribe(ALICE, include_body="1")
        (message,) = self.messagesTo(ALICE)
        self.assertEqual((self.body(message), self.itemIds(message)), ("Hello", ["a"]))

    def test_otherEventsHaveABody(self) -> None:
        """
        A purge notification carries a short body naming the node.
        """
        self.makeNode()
        self.subscribe(ALICE, include_body="1")
        self.result(self.policy.purge(OWNER, "news"))
        (message,) = self.messagesTo(ALICE)
        self.assertEqual(self.body(message), "node news purged")


class ShowValuesTests(EdgeTestCase):
    """
    C{pubsub#show-values}: delivery only while a resource has one of the listed shows.
    """

    def test_deliveryFollowsPresence(self) -> None:
        """
        Nothing without presence, delivery while the show is listed, none after it changes
        to an unlisted one or the resource leaves.
        """
        self.makeNode()
        self.subscribe(ALICE, show_values=["chat", "online"])
        self.publish("before")
        self.presence(ALICE)
        self.publish("online")
        self.presence(ALICE, show="dnd")
        self.publish("dnd")
        self.presence(ALICE, show="chat")
        self.publish("chat")
        self.presence(ALICE, "unavailable")
        self.publish("gone")
        self.assertEqual(
            [self.itemIds(m) for m in self.messagesTo(ALICE)], [["online"], ["chat"]]
        )

    def test_bareSubscriptionAnyResource(self) -> None:
        """
        A bare-JID subscription is delivered while any resource of it has a listed show.
        """
        self.makeNode()
        bare = "alice@example.org"
        self.result(self.policy.subscribe(ALICE, "news", bare, {"pubsub#show-values": ["xa"]}))
        self.presence(ALICE, show="dnd")
        self.publish("one")
        self.presence("alice@example.org/tablet", show="xa")
        self.publish("two")
        self.assertEqual([self.itemIds(m) for m in self.messagesTo(bare)], [["two"]])


class ExpireTests(EdgeTestCase):
    """
    C{pubsub#expire}: a subscription ends at its dateTime or when its subscriber leaves.
    """

    def subscriptionEvents(self, who: str) -> list[str]:
        """
        The states of the subscription notifications sent to C{who}.
        """
        return [
            s["subscription"]
            for m in self.messagesTo(who)
            for e in m.elements(NS_EVENT, "event")
            for s in e.elements(NS_EVENT, "subscription")
        ]

    def test_endsAtTheDateTime(self) -> None:
        """
        At the dateTime the subscription is removed and the subscriber told 'none'; a
        changed lease re-arms the timer.
        """
        self.makeNode()
        now = self.clock.seconds()
        subscription = self.subscribe(ALICE, expire=stamp(now + 60))
        self.result(self.policy.setSubscriptionOptions(
            ALICE, "news", ALICE, subscription.subscriptionId,
            {"pubsub#expire": [stamp(now + 120)]},
        ))
        self.assertEqual(self.policy.lifecycle.pendingLeases(), 1)
        self.clock.advance(61)
        self.assertEqual(len(self.result(self.policy.entitySubscriptions(ALICE, "news"))), 1)
        self.clock.advance(60)
        self.assertEqual(self.result(self.policy.entitySubscriptions(ALICE, "news")), [])
        self.assertEqual(self.subscriptionEvents(ALICE), ["none"])
        self.assertEqual(self.policy.lifecycle.pendingLeases(), 0)

    def test_unsubscribeCancelsTheLease(self) -> None:
        """
        An unsubscribed subscription's lease timer goes away and nothing is sent later.
        """
        self.makeNode()
        subscription = self.subscribe(ALICE, expire=stamp(self.clock.seconds() + 60))
        self.result(self.policy.unsubscribe(ALICE, "news", ALICE, subscription.subscriptionId))
        self.assertEqual(self.policy.lifecycle.pendingLeases(), 0)
        self.clock.advance(120)
        self.assertEqual(self.subscriptionEvents(ALICE), [])

    def test_leasesArmedAfterRestart(self) -> None:
        """
        After a restart, armLeases loads the nodes holding leases: one already over ends at
        once, one in the future when due.
        """
        self.makeNode()
        self.makeNode("other")
        now = self.clock.seconds()
        self.subscribe(ALICE, expire=stamp(now + 30))
        self.subscribe(BOB, "other", expire=stamp(now + 300))
        clock = Clock()  # the new process: the old one's timers are gone with it
        clock.advance(now + 60)
        restarted = type(self.policy)(self.storage, self.settings, SERVICE, clock)
        restarted.notifier = RecordingNotifier()
        self.assertEqual(self.successResultOf(
            Deferred.fromCoroutine(restarted.lifecycle.armLeases())), 2)
        clock.advance(0)
        self.assertEqual(self.result(restarted.entitySubscriptions(ALICE, "news")), [])
        self.assertEqual(
            [c[1]["subscription"].state.value for c in restarted.notifier.calls], ["none"]
        )
        self.assertEqual(len(self.result(restarted.entitySubscriptions(BOB, "other"))), 1)
        clock.advance(300)
        self.assertEqual(self.result(restarted.entitySubscriptions(BOB, "other")), [])
        self.assertEqual(self.successResultOf(
            Deferred.fromCoroutine(restarted.lifecycle.armLeases())), 0)

    def test_presenceLease(self) -> None:
        """
        With expire=presence the subscription ends when that resource goes unavailable, and
        a bare-JID one when the last resource does.
        """
        self.makeNode()
        self.makeNode("other")
        self.subscribe(ALICE, expire="presence")
        bare = "alice@example.org"
        self.result(self.policy.subscribe(ALICE, "other", bare, {"pubsub#expire": ["presence"]}))
        self.presence(ALICE)
        self.presence("alice@example.org/tablet")
        self.presence(ALICE, "unavailable")
        self.assertEqual(self.result(self.policy.entitySubscriptions(ALICE, "news")), [])
        self.assertEqual(self.subscriptionEvents(ALICE), ["none"])
        self.assertEqual(len(self.result(self.policy.entitySubscriptions(ALICE, "other"))), 1)
        self.presence("alice@example.org/tablet", "unavailable")
        self.assertEqual(self.result(self.policy.entitySubscriptions(ALICE, "other")), [])
        self.assertEqual(self.subscriptionEvents(bare), ["none"])


class LastItemOnPresenceTests(EdgeTestCase):
    """
    C{send_last_published_item=on_sub_and_presence}: the last item when a subscriber comes
    online.
    """

    def test_fullJIDSubscription(self) -> None:
        """
        A full-JID subscriber gets the last item each time that resource comes online, not
        on a mere show change.
        """
        self.makeNode(send_last_published_item="on_sub_and_presence")
        self.subscribe(ALICE)
        self.publish("one")
        self.publish("two")
        self.stream.clear()
        self.presence(ALICE)
        self.presence(ALICE, show="away")
        (message,) = self.messagesTo(ALICE)
        self.assertEqual(self.itemIds(message), ["two"])
        self.presence(ALICE, "unavailable")
        self.presence(ALICE)
        self.assertEqual(len(self.messagesTo(ALICE)), 2)

    def test_bareJIDSubscriptionFirstResource(self) -> None:
        """
        A bare-JID subscriber gets it at the resource that came online first, not when more
        resources join.
        """
        self.makeNode(send_last_published_item="on_sub_and_presence")
        bare = "alice@example.org"
        self.result(self.policy.subscribe(ALICE, "news", bare, None))
        self.publish("one")
        self.stream.clear()
        self.presence(ALICE)
        self.presence("alice@example.org/tablet")
        (message,) = [m for m in self.stream.sent if m.name == "message"]
        self.assertEqual((message["to"], self.itemIds(message)), (ALICE, ["one"]))

    def test_filtersAndSettingApply(self) -> None:
        """
        No last item on presence for a header filter the item misses, with delivery off, or
        from a node that sends it on subscription only.
        """
        self.makeNode(send_last_published_item="on_sub_and_presence")
        self.makeNode("onsub", send_last_published_item="on_sub")
        self.result(self.policy.subscribe(
            ALICE, "news", ALICE, {"hermod#header_filter": ["built_by=johnp"]}
        ))
        self.result(self.policy.subscribe(BOB, "news", BOB, {"pubsub#deliver": ["0"]}))
        self.subscribe(ALICE, "onsub")
        self.publish("x")
        self.publish("y", node="onsub")
        self.stream.clear()
        self.presence(ALICE)
        self.presence(BOB)
        self.assertEqual([m for m in self.stream.sent if m.name == "message"], [])

    def test_severalSubscriptionsOneMessage(self) -> None:
        """
        A JID with two matching subscriptions gets the last item once, naming both SubIDs.
        """
        self.makeNode(send_last_published_item="on_sub_and_presence")
        first = self.subscribe(ALICE)
        second = self.subscribe(ALICE, include_body="0", deliver="1")
        self.publish("x")
        self.stream.clear()
        self.presence(ALICE)
        (message,) = self.messagesTo(ALICE)
        self.assertEqual(
            sorted(self.subIds(message)), sorted([first.subscriptionId, second.subscriptionId])
        )


class PresenceHandlerTests(EdgeTestCase):
    """
    The component answers presence subscriptions and probes and tracks availability.
    """

    def presences(self) -> list[tuple[str, str | None]]:
        """
        C{(to, type)} of the presence stanzas the component sent.
        """
        return [
            (p["to"], p.getAttribute("type"))
            for p in self.stream.sent
            if p.name == "presence"
        ]

    def test_subscribeAnsweredAndReturned(self) -> None:
        """
        A subscribe is answered subscribed, the component asks subscribe back and sends its
        presence; unsubscribe is answered unsubscribed; a probe gets the presence.
        """
        self.presence(ALICE, "subscribe")
        self.assertEqual(
            self.presences(),
            [("alice@example.org", "subscribed"), ("alice@example.org", "subscribe"),
             ("alice@example.org", None)],
        )
        self.stream.clear()
        self.presence(BOB, "probe")
        self.presence(BOB, "unsubscribe")
        self.assertEqual(
            self.presences(), [("bob@other.example", None), ("bob@other.example", "unsubscribed")]
        )
        for stanza in self.stream.sent:
            self.assertEqual(stanza["from"], SERVICE)

    def test_tracksAvailability(self) -> None:
        """
        Available presence (with its show) is recorded per full JID, unavailable and error
        remove it, and presence to another address is ignored.
        """
        state = self.policy.presence
        self.presence(ALICE, show="dnd")
        self.presence(BOB)
        self.assertEqual(state.shows(ALICE), frozenset({"dnd"}))
        self.assertTrue(state.isAvailable("bob@other.example"))
        self.presence(BOB, "error")
        self.assertFalse(state.isAvailable(BOB))
        self.stream.receive(
            f"<presence xmlns='jabber:client' from='carol@example.org/x' to='u@{SERVICE}'/>"
        )
        self.assertFalse(state.isAvailable("carol@example.org"))
        self.assertEqual(len(state), 1)

    def test_connectionLostForgets(self) -> None:
        """
        When the stream goes, what was known of presence goes with it.
        """
        self.presence(ALICE)
        for handler in list(self.manager):
            handler.connectionLost(None)
        self.assertEqual(len(self.policy.presence), 0)


class PresenceStateTests(PolicyTestCase):
    """
    L{PresenceState} keeps only available resources and reports transitions.
    """

    def test_transitions(self) -> None:
        """
        The first resource, further resources, show changes and the last to leave are told
        apart; nothing is kept for an entity once it has gone.
        """
        state = PresenceState()
        first = state.available("a@x/1")
        self.assertTrue(first.cameOnline and first.firstResource)
        second = state.available("a@x/2", "away")
        self.assertTrue(second.cameOnline and not second.firstResource)
        change = state.available("a@x/2", "xa")
        self.assertFalse(change.cameOnline)
        self.assertEqual(state.shows("a@x"), frozenset({"online", "xa"}))
        self.assertEqual(state.available("a@x/3", "bogus").full, "a@x/3")
        self.assertEqual(state.shows("a@x/3"), frozenset({"online"}))
        gone = state.unavailable("a@x/1")
        self.assertTrue(gone.wentOffline and not gone.lastResource)
        state.unavailable("a@x/3")
        last = state.unavailable("a@x/2")
        self.assertTrue(last.wentOffline and last.lastResource)
        self.assertEqual(len(state), 0)
        self.assertFalse(state.unavailable("a@x/2").wentOffline)
        state.available("b@x/1")
        state.available("b@x/2")
        everything = state.unavailable("b@x")
        self.assertTrue(everything.lastResource)
        self.assertFalse(state.isAvailable("b@x/1"))

