"""
Tests for L{hermod_component.policy}: the XEP-0060 rules, on the memory storage.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hermod_component import errors
from hermod_component.config import PubSubSettings
from hermod_component.interfaces import IPubSubPolicy
from hermod_component.model import AccessModel, Affiliation, SubscriptionState
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import RecordingNotifier

T = TypeVar("T")

SERVICE = "pubsub.example.org"
OWNER = "owner@example.org/desk"
PUBLISHER = "publisher@example.org/bot"
ALICE = "alice@example.org/phone"
BOB = "bob@other.example/laptop"
ENTRY = b'<entry xmlns="http://www.w3.org/2005/Atom"><title>Hello</title></entry>'


class PolicyTestCase(SynchronousTestCase):
    """
    A policy on fresh memory storage with a recording notifier and a fake clock.
    """

    settings = PubSubSettings()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.storage = MemoryStorage()
        self.policy = PubSubPolicy(self.storage, self.settings, SERVICE, self.clock)
        self.notifier = RecordingNotifier()
        self.policy.notifier = self.notifier

    def result(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """
        The result of a policy coroutine that completes without the reactor.
        """
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def fails(self, coroutine: Coroutine[Any, Any, object], error: type[Exception]) -> Exception:
        """
        The domain error a policy coroutine fails with; the test fails if it is another.
        """
        failure = self.failureResultOf(Deferred.fromCoroutine(coroutine), error)
        return failure.value

    def makeNode(self, name: str = "news", **options: str) -> str:
        """
        Create a node owned by L{OWNER} with the given C{pubsub#} options.
        """
        values = {f"pubsub#{k}": [v] for k, v in options.items()}
        return self.result(self.policy.createNode(OWNER, name, values))

    def published(self) -> list[tuple[str, Any]]:
        """
        The publish notifications sent so far, as C{(node, kwargs)}.
        """
        return [c for c in self.notifier.calls if c[0] == "publish"]


class NodeTests(PolicyTestCase):
    """
    Creating, configuring and deleting nodes.
    """

    def test_provides(self) -> None:
        """
        The policy provides IPubSubPolicy.
        """
        self.assertTrue(verifyObject(IPubSubPolicy, self.policy))

    def test_createNamed(self) -> None:
        """
        A created node exists with its creator as owner.
        """
        self.assertEqual(self.makeNode("news"), "news")
        affiliations = self.result(self.policy.getAffiliations(OWNER, "news"))
        self.assertEqual(affiliations, {"owner@example.org": Affiliation.OWNER})

    def test_createInstant(self) -> None:
        """
        A create without a name gets a unique generated name.
        """
        first = self.result(self.policy.createNode(OWNER, None, None))
        second = self.result(self.policy.createNode(OWNER, None, None))
        self.assertNotEqual(first, second)
        self.assertTrue(first)

    def test_createExisting(self) -> None:
        """
        Creating a node twice is a conflict.
        """
        self.makeNode()
        self.fails(self.policy.createNode(ALICE, "news", None), errors.NodeExists)

    def test_createWithConfiguration(self) -> None:
        """
        Configuration given at creation is applied.
        """
        self.makeNode("closed", access_model="whitelist", max_items="3")
        config = self.result(self.policy.getConfiguration(OWNER, "closed"))
        self.assertEqual(config.accessModel, AccessModel.WHITELIST)
        self.assertEqual(config.maxItems, 3)

    def test_createBadConfiguration(self) -> None:
        """
        An unknown field or an unenforceable access model is refused and creates nothing.
        """
        self.fails(
            self.policy.createNode(OWNER, "a", {"pubsub#bogus": ["1"]}), errors.InvalidOptions
        )
        self.fails(
            self.policy.createNode(OWNER, "b", {"pubsub#access_model": ["roster"]}),
            errors.UnsupportedAccessModel,
        )
        self.assertEqual(self.result(self.policy.listNodes(OWNER, None)), [])

    def test_createCollection(self) -> None:
        """
        A collection node can be created; its type cannot change later, nor be unknown.
        """
        self.result(self.policy.createNode(OWNER, "/c", {"pubsub#node_type": ["collection"]}))
        config = self.result(self.policy.getConfiguration(OWNER, "/c"))
        self.assertEqual(config.nodeType.value, "collection")
        self.fails(
            self.policy.configure(OWNER, "/c", {"pubsub#node_type": ["leaf"]}), errors.NotAllowed
        )
        self.fails(
            self.policy.createNode(OWNER, "/d", {"pubsub#node_type": ["tree"]}),
            errors.InvalidOptions,
        )

    def test_createLocalOnly(self) -> None:
        """
        With C{create_nodes = "local"} only JIDs of the server's domain may create nodes.
        """
        self.policy.settings = PubSubSettings(createNodes="local")
        self.policy = PubSubPolicy(self.storage, PubSubSettings(createNodes="local"), SERVICE,
                                   self.clock)
        self.result(self.policy.createNode(ALICE, "mine", None))
        self.fails(self.policy.createNode(BOB, "theirs", None), errors.NodeCreationForbidden)

    def test_createListed(self) -> None:
        """
        With a list of JIDs only those may create nodes; admins always may.
        """
        policy = PubSubPolicy(
            self.storage,
            PubSubSettings(createNodes=("alice@example.org",), admins=("root@example.org",)),
            SERVICE,
            self.clock,
        )
        self.result(policy.createNode(ALICE, "a", None))
        self.result(policy.createNode("root@example.org/x", "b", None))
        self.fails(policy.createNode(OWNER, "c", None), errors.NodeCreationForbidden)

    def test_nodeQuota(self) -> None:
        """
        An owner cannot create more nodes than C{max_nodes_per_owner}.
        """
        policy = PubSubPolicy(self.storage, PubSubSettings(maxNodesPerOwner=2), SERVICE, self.clock)
        self.result(policy.createNode(OWNER, "a", None))
        self.result(policy.createNode(OWNER, "b", None))
        self.fails(policy.createNode(OWNER, "c", None), errors.ResourceConstraint)

    def test_configureOwnerOnly(self) -> None:
        """
        Only owners may read or change the configuration.
        """
        self.makeNode()
        self.fails(self.policy.getConfiguration(ALICE, "news"), errors.Forbidden)
        self.fails(
            self.policy.configure(ALICE, "news", {"pubsub#title": ["x"]}), errors.Forbidden
        )

    def test_configureMissingNode(self) -> None:
        """
        Configuring a node that does not exist is item-not-found.
        """
        self.fails(self.policy.getConfiguration(OWNER, "nope"), errors.NodeNotFound)

    def test_configureNotifies(self) -> None:
        """
        With notify_config on, subscribers learn of the new configuration.
        """
        self.makeNode(notify_config="1")
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.configure(OWNER, "news", {"pubsub#title": ["Daily"]}))
        kind, args = self.notifier.calls[-1]
        self.assertEqual(kind, "configuration")
        self.assertEqual(args["config"].title, "Daily")
        self.assertEqual(args["recipients"], [(ALICE, [])])

    def test_lowerMaxItemsTrims(self) -> None:
        """
        Lowering max_items drops the oldest items at once.
        """
        self.makeNode()
        for n in range(5):
            self.result(self.policy.publish(OWNER, "news", [(f"i{n}", ENTRY)], None))
        self.result(self.policy.configure(OWNER, "news", {"pubsub#max_items": ["2"]}))
        items = self.result(self.policy.items(OWNER, "news", None, None, None))
        self.assertEqual([i.itemId for i in items], ["i4", "i3"])

    def test_deleteNotifiesWithRedirect(self) -> None:
        """
        Deleting a node removes it and tells subscribers, with the redirect.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.deleteNode(OWNER, "news", "xmpp:pubsub.example.org?;node=new"))
        self.assertEqual(
            self.notifier.calls[-1],
            (
                "delete",
                {
                    "node": "news",
                    "redirect": "xmpp:pubsub.example.org?;node=new",
                    "messageType": "headline",
                    "recipients": [(ALICE, [])],
                },
            ),
        )
        self.fails(self.policy.nodeInfo(OWNER, "news"), errors.NodeNotFound)

    def test_deleteOwnerOnly(self) -> None:
        """
        Only an owner may delete a node.
        """
        self.makeNode()
        self.fails(self.policy.deleteNode(ALICE, "news", None), errors.Forbidden)

    def test_adminIsOwnerEverywhere(self) -> None:
        """
        A configured admin has owner rights on every node.
        """
        self.makeNode()
        policy = PubSubPolicy(
            self.storage, PubSubSettings(admins=("root@example.org",)), SERVICE, self.clock
        )
        self.result(policy.deleteNode("root@example.org/console", "news", None))

    def test_purge(self) -> None:
        """
        Purging removes every item and notifies subscribers.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY)], None))
        self.result(self.policy.purge(OWNER, "news"))
        self.assertEqual(self.result(self.policy.items(ALICE, "news", None, None, None)), [])
        self.assertEqual(self.notifier.calls[-1][0], "purge")
        self.fails(self.policy.purge(ALICE, "news"), errors.Forbidden)


class PublishTests(PolicyTestCase):
    """
    Publishing and retracting.
    """

    def test_publishNotifiesSubscribers(self) -> None:
        """
        A publish is stored and announced once to each subscriber, with the payload.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.subscribe(BOB, "news", "bob@other.example", None))
        ids = self.result(self.policy.publish(OWNER, "news", [("first", ENTRY)], None))
        self.assertEqual(ids, ["first"])
        [(_kind, args)] = self.published()
        self.assertEqual([i.payload for i in args["items"]], [ENTRY])
        self.assertTrue(args["withPayload"])
        self.assertEqual(
            sorted(args["recipients"]), [(ALICE, []), ("bob@other.example", [])]
        )

    def test_recipientsSharedUntilSubscriptionsChange(self) -> None:
        """
        Publishes to a node whose subscriptions are plain share one recipient list, which is
        made anew when a subscription comes or goes.
        """
        given: list[Any] = []
        record = self.notifier.publish

        def keep(*args: Any, **kwargs: Any) -> None:
            given.append(args[4])  # the list the policy handed over, not a copy
            record(*args, **kwargs)

        self.notifier.publish = keep  # type: ignore[method-assign]
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(OWNER, "news", [("1", ENTRY)], None))
        self.result(self.policy.publish(OWNER, "news", [("2", ENTRY)], None))
        first, second = given
        self.assertIs(first, second)
        self.assertEqual([jid for jid, _ in first], [ALICE])
        self.result(self.policy.subscribe(BOB, "news", "bob@other.example", None))
        self.result(self.policy.publish(OWNER, "news", [("3", ENTRY)], None))
        third = given[-1]
        self.assertIsNot(third, first)
        self.assertEqual(sorted(jid for jid, _ in third), [ALICE, "bob@other.example"])
        self.assertEqual([jid for jid, _ in first], [ALICE])  # the old list is left as it was
        self.result(self.policy.unsubscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(OWNER, "news", [("4", ENTRY)], None))
        fourth = given[-1]
        self.assertEqual([jid for jid, _ in fourth], ["bob@other.example"])

    def test_publishGeneratesIds(self) -> None:
        """
        Items without an id get distinct generated ones, returned in order.
        """
        self.makeNode()
        ids = self.result(self.policy.publish(OWNER, "news", [(None, ENTRY), (None, ENTRY)], None))
        self.assertEqual(len(set(ids)), 2)

    def test_publishMissingNode(self) -> None:
        """
        Publishing to a missing node is item-not-found unless auto-create is on.
        """
        self.fails(self.policy.publish(OWNER, "nope", [("a", ENTRY)], None), errors.NodeNotFound)
        policy = PubSubPolicy(self.storage, PubSubSettings(autoCreate=True), SERVICE, self.clock)
        policy.notifier = self.notifier
        self.result(policy.publish(OWNER, "auto", [("a", ENTRY)], {"pubsub#max_items": ["5"]}))
        config = self.result(policy.getConfiguration(OWNER, "auto"))
        self.assertEqual(config.maxItems, 5)

    def test_publishModels(self) -> None:
        """
        Under C{publishers} only publishers publish; C{subscribers} lets subscribers;
        C{open} lets anyone; outcasts never.
        """
        self.makeNode()
        self.fails(self.policy.publish(ALICE, "news", [("a", ENTRY)], None), errors.Forbidden)
        self.result(self.policy.setAffiliations(OWNER, "news", {"publisher@example.org": "publisher"}))
        self.result(self.policy.publish(PUBLISHER, "news", [("a", ENTRY)], None))
        self.result(self.policy.configure(OWNER, "news", {"pubsub#publish_model": ["subscribers"]}))
        self.fails(self.policy.publish(ALICE, "news", [("b", ENTRY)], None), errors.Forbidden)
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(ALICE, "news", [("b", ENTRY)], None))
        self.result(self.policy.configure(OWNER, "news", {"pubsub#publish_model": ["open"]}))
        self.result(self.policy.publish(BOB, "news", [("c", ENTRY)], None))
        self.result(self.policy.setAffiliations(OWNER, "news", {"bob@other.example": "outcast"}))
        self.fails(self.policy.publish(BOB, "news", [("d", ENTRY)], None), errors.Forbidden)

    def test_payloadRules(self) -> None:
        """
        XEP-0060 7.1.3: persistent nodes need an item with a payload; transient
        notification-only nodes refuse payloads; the size limit holds.
        """
        self.makeNode(max_payload_size="100")
        self.fails(self.policy.publish(OWNER, "news", [], None), errors.NoItemId)
        self.fails(self.policy.publish(OWNER, "news", [("a", b"")], None), errors.PayloadRequired)
        self.fails(
            self.policy.publish(OWNER, "news", [("a", b"<x xmlns='y'>" + b"z" * 200 + b"</x>")],
                                None),
            errors.PayloadTooBig,
        )
        self.makeNode("pings", persist_items="0", deliver_payloads="0")
        self.fails(self.policy.publish(OWNER, "pings", [("a", ENTRY)], None), errors.ItemForbidden)
        self.assertEqual(len(self.result(self.policy.publish(OWNER, "pings", [], None))), 1)

    def test_preconditions(self) -> None:
        """
        Publish-options that differ from the node configuration are refused.
        """
        self.makeNode()
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY)],
                                     {"pubsub#access_model": ["open"]}))
        self.fails(
            self.policy.publish(OWNER, "news", [("b", ENTRY)],
                                {"pubsub#access_model": ["whitelist"]}),
            errors.PreconditionNotMet,
        )

    def test_maxItemsKeepsNewest(self) -> None:
        """
        A node keeps at most max_items, dropping the oldest; republishing an id replaces it.
        """
        self.makeNode(max_items="2")
        for name in ("a", "b", "c", "b"):
            self.result(self.policy.publish(OWNER, "news", [(name, ENTRY)], None))
        items = self.result(self.policy.items(OWNER, "news", None, None, None))
        self.assertEqual([i.itemId for i in items], ["b", "c"])

    def test_deliverOptionOff(self) -> None:
        """
        A subscription with pubsub#deliver false receives nothing.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, {"pubsub#deliver": ["0"]}))
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY)], None))
        self.assertEqual(self.published(), [])

    def test_retract(self) -> None:
        """
        Retracting removes items and notifies when asked; missing items are item-not-found.
        """
        self.makeNode(notify_retract="0")
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY), ("b", ENTRY)], None))
        self.result(self.policy.retract(OWNER, "news", ["a"], False))
        self.assertNotEqual(self.notifier.calls[-1][0], "retract")
        self.result(self.policy.retract(OWNER, "news", ["b"], True))
        self.assertEqual(self.notifier.calls[-1][0], "retract")
        self.assertEqual(self.notifier.calls[-1][1]["itemIds"], ["b"])
        self.fails(self.policy.retract(OWNER, "news", ["zz"], True), errors.ItemNotFound)
        self.fails(self.policy.retract(OWNER, "news", [], True), errors.NoItemId)
        self.fails(self.policy.retract(ALICE, "news", ["a"], True), errors.Forbidden)


class SubscriptionTests(PolicyTestCase):
    """
    Subscribing, options and item retrieval under each access model.
    """

    def test_subscribeOtherJID(self) -> None:
        """
        Subscribing a JID whose bare JID is not the requester's is invalid-jid.
        """
        self.makeNode()
        self.fails(self.policy.subscribe(ALICE, "news", BOB, None), errors.InvalidJID)

    def test_subscribeTwiceReturnsExisting(self) -> None:
        """
        Subscribing the same JID again returns the existing subscription.
        """
        self.makeNode()
        first = self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        second = self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.assertEqual(first.subscriptionId, second.subscriptionId)

    def test_whitelist(self) -> None:
        """
        A whitelist node refuses non-members (closed-node) and lets members in.
        """
        self.makeNode(access_model="whitelist")
        self.fails(self.policy.subscribe(ALICE, "news", ALICE, None), errors.ClosedNode)
        self.fails(self.policy.items(ALICE, "news", None, None, None), errors.ClosedNode)
        self.result(self.policy.setAffiliations(OWNER, "news", {"alice@example.org": "member"}))
        subscription = self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.assertEqual(subscription.state, SubscriptionState.SUBSCRIBED)

    def test_leavingWhitelistEndsSubscription(self) -> None:
        """
        A member removed from a whitelist node loses its subscription and is told.
        """
        self.makeNode(access_model="whitelist")
        self.result(self.policy.setAffiliations(OWNER, "news", {"alice@example.org": "member"}))
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.setAffiliations(OWNER, "news", {"alice@example.org": "none"}))
        self.assertEqual(self.result(self.policy.getSubscriptions(OWNER, "news")), [])
        self.assertEqual(self.notifier.calls[-1][0], "subscriptionChanged")

    def test_authorize(self) -> None:
        """
        On an authorize node a subscription waits for the owner, who is asked, and the
        subscriber is told of the answer.
        """
        self.makeNode(access_model="authorize")
        pending = self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.assertEqual(pending.state, SubscriptionState.PENDING)
        kind, args = self.notifier.calls[-1]
        self.assertEqual((kind, args["owners"]), ("authorizationRequest", ["owner@example.org"]))
        self.fails(self.policy.subscribe(ALICE, "news", ALICE, None), errors.PendingSubscription)
        self.fails(self.policy.items(ALICE, "news", None, None, None), errors.SubscriptionRequired)
        self.fails(
            self.policy.answerAuthorization(ALICE, "news", ALICE, None, True), errors.Forbidden
        )
        self.result(self.policy.answerAuthorization(OWNER, "news", ALICE, None, True))
        kind, args = self.notifier.calls[-1]
        self.assertEqual(kind, "subscriptionChanged")
        self.assertEqual(args["subscription"].state, SubscriptionState.SUBSCRIBED)
        self.result(self.policy.items(ALICE, "news", None, None, None))

    def test_authorizeDenied(self) -> None:
        """
        A denied subscription is removed and the subscriber told its state is none.
        """
        self.makeNode(access_model="authorize")
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.answerAuthorization(OWNER, "news", ALICE, None, False))
        self.assertEqual(self.result(self.policy.getSubscriptions(OWNER, "news")), [])
        self.assertEqual(
            self.notifier.calls[-1][1]["subscription"].state, SubscriptionState.NONE
        )

    def test_outcast(self) -> None:
        """
        Outcasts cannot subscribe or read, and lose existing subscriptions.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.setAffiliations(OWNER, "news", {"alice@example.org": "outcast"}))
        self.assertEqual(self.result(self.policy.getSubscriptions(OWNER, "news")), [])
        self.fails(self.policy.subscribe(ALICE, "news", ALICE, None), errors.Outcast)
        self.fails(self.policy.items(ALICE, "news", None, None, None), errors.Outcast)

    def test_unsubscribeErrors(self) -> None:
        """
        XEP-0060 6.2.3: not subscribed, another's JID, and a wrong SubID are refused.
        """
        self.makeNode()
        self.fails(self.policy.unsubscribe(ALICE, "news", ALICE, None), errors.NotSubscribed)
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.fails(self.policy.unsubscribe(BOB, "news", ALICE, None), errors.Forbidden)
        self.fails(
            self.policy.unsubscribe(ALICE, "news", ALICE, "wrong"), errors.InvalidSubscriptionId
        )
        self.result(self.policy.unsubscribe(ALICE, "news", ALICE, None))
        self.assertEqual(self.result(self.policy.entitySubscriptions(ALICE, None)), [])

    def test_subscriptionOptions(self) -> None:
        """
        Options can be read and replaced; unknown options are invalid-options.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.setSubscriptionOptions(ALICE, "news", ALICE, None,
                                                    {"pubsub#deliver": ["false"]}))
        subscription = self.result(self.policy.getSubscriptionOptions(ALICE, "news", ALICE, None))
        self.assertEqual(dict(subscription.options), {"pubsub#deliver": ("0",)})
        self.fails(
            self.policy.setSubscriptionOptions(ALICE, "news", ALICE, None, {"pubsub#x": ["1"]}),
            errors.InvalidSubscriptionOptions,
        )

    def test_itemsByIdAndMax(self) -> None:
        """
        Items come newest first, limited by max_items or chosen by id.
        """
        self.makeNode()
        for name in "abc":
            self.result(self.policy.publish(OWNER, "news", [(name, ENTRY)], None))
        latest = self.result(self.policy.items(ALICE, "news", 2, None, None))
        self.assertEqual([i.itemId for i in latest], ["c", "b"])
        chosen = self.result(self.policy.items(ALICE, "news", None, ["a"], None))
        self.assertEqual([i.itemId for i in chosen], ["a"])
        self.fails(self.policy.items(ALICE, "news", None, ["zz"], None), errors.ItemNotFound)

    def test_sendLastPublishedOnSubscribe(self) -> None:
        """
        With send_last_published_item on_sub, a new subscriber gets the last item, after the
        subscribe has been answered.
        """
        self.makeNode(send_last_published_item="on_sub")
        self.result(self.policy.publish(OWNER, "news", [("old", ENTRY), ("last", ENTRY)], None))
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.assertEqual(self.published(), [])
        self.clock.advance(0)
        [(_kind, args)] = self.published()
        self.assertEqual([i.itemId for i in args["items"]], ["last"])
        self.assertEqual(args["recipients"], [(ALICE, [])])

    def test_itemExpire(self) -> None:
        """
        Items older than item_expire are not served and are removed by expireItems.
        """
        self.makeNode(item_expire="60")
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY)], None))
        self.clock.advance(61)
        self.assertEqual(self.result(self.policy.items(OWNER, "news", None, None, None)), [])
        self.assertEqual(self.result(self.policy.expireItems()), 1)

    def test_ownerSetsSubscriptions(self) -> None:
        """
        An owner can subscribe, change and remove others' subscriptions; each is told.
        """
        self.makeNode()
        self.result(self.policy.setSubscriptions(OWNER, "news", [(ALICE, "subscribed", None)]))
        [subscription] = self.result(self.policy.getSubscriptions(OWNER, "news"))
        self.assertEqual(subscription.subscriber, ALICE)
        self.result(self.policy.setSubscriptions(OWNER, "news", [(ALICE, "none", None)]))
        self.assertEqual(self.result(self.policy.getSubscriptions(OWNER, "news")), [])
        self.assertEqual(
            [c[0] for c in self.notifier.calls[-2:]], ["subscriptionChanged"] * 2
        )
        self.fails(
            self.policy.setSubscriptions(OWNER, "news", [(ALICE, "bogus", None)]),
            errors.BadRequest,
        )

    def test_lastOwnerStays(self) -> None:
        """
        The last owner cannot be removed.
        """
        self.makeNode()
        self.fails(
            self.policy.setAffiliations(OWNER, "news", {"owner@example.org": "none"}),
            errors.NotAllowed,
        )

    def test_entityViews(self) -> None:
        """
        An entity sees its own subscriptions and affiliations across nodes.
        """
        self.makeNode("a")
        self.makeNode("b")
        self.result(self.policy.subscribe(ALICE, "a", ALICE, None))
        self.result(self.policy.setAffiliations(OWNER, "b", {"alice@example.org": "publisher"}))
        subscriptions = self.result(self.policy.entitySubscriptions(ALICE, None))
        self.assertEqual([s.node for s in subscriptions], ["a"])
        self.assertEqual(
            self.result(self.policy.entityAffiliations(ALICE, None)), [("b", Affiliation.PUBLISHER)]
        )


class PersistenceTests(PolicyTestCase):
    """
    The policy's cache never hides what storage holds.
    """

    def test_freshPolicySeesState(self) -> None:
        """
        A new policy on the same storage sees the nodes, subscriptions and items.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY)], None))
        fresh = PubSubPolicy(self.storage, self.settings, SERVICE, self.clock)
        fresh.notifier = self.notifier
        self.result(fresh.publish(OWNER, "news", [("b", ENTRY)], None))
        self.assertEqual(self.published()[-1][1]["recipients"], [(ALICE, [])])


class DiscoveryTests(PolicyTestCase):
    """
    What disco tells about nodes.
    """

    def test_nodeInfoMetaData(self) -> None:
        """
        Node info carries the owners, publishers and the number of active subscriptions.
        """
        self.makeNode()
        self.result(self.policy.setAffiliations(OWNER, "news", {"publisher@example.org":
                                                                "publisher"}))
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        info = self.result(self.policy.nodeInfo(BOB, "news"))
        self.assertEqual(info.node.identifier, "news")
        self.assertEqual(info.owners, ("owner@example.org",))
        self.assertEqual(info.publishers, ("publisher@example.org",))
        self.assertEqual(info.subscriberCount, 1)


class LimitTests(PolicyTestCase):
    """
    Service limits for a firehose: publish rate and subscribers per node.
    """

    settings = PubSubSettings(publishRate=2.0, publishBurst=3, maxSubscribersPerNode=2,
                              admins=("root@example.org",))

    def test_publishRate(self) -> None:
        """
        A publisher may burst, is then held to the rate, and recovers as time passes; admins
        are not limited.
        """
        self.makeNode()
        for n in range(3):
            self.result(self.policy.publish(OWNER, "news", [(f"b{n}", ENTRY)], None))
        self.fails(self.policy.publish(OWNER, "news", [("x", ENTRY)], None), errors.RateLimited)
        self.clock.advance(0.5)
        self.result(self.policy.publish(OWNER, "news", [("y", ENTRY)], None))
        self.fails(self.policy.publish(OWNER, "news", [("z", ENTRY)], None), errors.RateLimited)
        for n in range(10):
            self.result(self.policy.publish("root@example.org/x", "news", [(f"r{n}", ENTRY)],
                                            None))

    def test_subscriberCap(self) -> None:
        """
        A node takes no more subscriptions than the cap.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.subscribe(BOB, "news", BOB, None))
        self.fails(self.policy.subscribe(OWNER, "news", OWNER, None), errors.TooManySubscriptions)


KOJI = (("topic", "org.fedoraproject.koji.build"), ("built_by", "johnp"))
JSON_ENTRY = b"<json xmlns='urn:xmpp:json:0'>{&quot;build&quot;: 42}</json>"


class HeaderFilterTests(PolicyTestCase):
    """
    Items carry SHIM headers; a subscription's C{hermod#header_filter} selects on them.
    """

    def subscribe(self, who: str, *pairs: str) -> None:
        """
        Subscribe C{who} to C{news} with a header filter of C{pairs} (none for no filter).
        """
        options = {"hermod#header_filter": list(pairs)} if pairs else None
        self.result(self.policy.subscribe(who, "news", who, options))

    def test_filterSelectsItems(self) -> None:
        """
        A filtered subscriber is told only of items carrying every pair of its filter; an
        unfiltered one of every item; the notification's items carry their headers.
        """
        self.makeNode()
        self.subscribe(ALICE, "built_by=johnp")
        self.subscribe(BOB, "built_by=johnp", "topic=org.fedoraproject.koji.build")
        self.subscribe(PUBLISHER)
        self.result(self.policy.publish(OWNER, "news", [("mine", ENTRY, KOJI)], None))
        self.result(self.policy.publish(
            OWNER, "news", [("other", ENTRY, (("built_by", "ralph"),))], None
        ))
        self.result(self.policy.publish(OWNER, "news", [("bare", ENTRY)], None))
        calls = self.published()
        self.assertEqual(
            [([i.itemId for i in c["items"]], sorted(j for j, _ in c["recipients"]))
             for _, c in calls],
            [
                (["mine"], sorted([ALICE, BOB, PUBLISHER])),
                (["other"], [PUBLISHER]),
                (["bare"], [PUBLISHER]),
            ],
        )
        self.assertEqual(calls[0][1]["items"][0].headers, KOJI)

    def test_headersStored(self) -> None:
        """
        The headers are stored with the item and come back on retrieval.
        """
        self.makeNode()
        self.result(self.policy.publish(OWNER, "news", [("mine", ENTRY, KOJI)], None))
        [item] = self.result(self.policy.items(OWNER, "news", None, None, None))
        self.assertEqual((item.payload, item.headers), (ENTRY, KOJI))

    def test_headersThroughPublishOptions(self) -> None:
        """
        The publish-options field C{hermod#headers} attaches its headers to every item of
        the publish, after the item's own; they are stored, filtered on and not taken for a
        precondition, while the other fields still are.
        """
        self.makeNode()
        self.subscribe(ALICE, "built_by=johnp")
        options = {
            "FORM_TYPE": ["http://jabber.org/protocol/pubsub#publish-options"],
            "hermod#headers": ["built_by=johnp", "", "note= a=b "],
            "pubsub#access_model": ["open"],
        }
        self.result(self.policy.publish(
            OWNER, "news", [("a", ENTRY), ("b", ENTRY, (("topic", "t"),))], options
        ))
        added = (("built_by", "johnp"), ("note", " a=b "))
        stored = self.result(self.policy.items(OWNER, "news", None, None, None))
        self.assertEqual(
            sorted((i.itemId, i.headers) for i in stored),
            [("a", added), ("b", (("topic", "t"),) + added)],
        )
        self.assertEqual(
            sorted(i.itemId for _, c in self.published() for i in c["items"]), ["a", "b"]
        )
        self.fails(
            self.policy.publish(OWNER, "news", [("c", ENTRY)], {
                "hermod#headers": ["x=y"], "pubsub#access_model": ["whitelist"],
            }),
            errors.PreconditionNotMet,
        )

    def test_badPublishOptionsHeader(self) -> None:
        """
        A C{hermod#headers} line that is not C{name=value} refuses the publish, storing
        nothing.
        """
        self.makeNode()
        for line in ("no-equals-sign", " =value"):
            self.fails(
                self.policy.publish(OWNER, "news", [("a", ENTRY)], {"hermod#headers": [line]}),
                errors.InvalidOptions,
            )
        self.assertEqual(self.result(self.policy.items(OWNER, "news", None, None, None)), [])

    def test_groupsByHeaders(self) -> None:
        """
        A publish of several items notifies once per distinct header set, each group with
        its own recipients and the items in publish order.
        """
        self.makeNode()
        self.subscribe(ALICE, "built_by=johnp")
        self.subscribe(BOB)
        ralph = (("built_by", "ralph"),)
        self.result(self.policy.publish(
            OWNER, "news", [("a", ENTRY, KOJI), ("b", ENTRY, ralph), ("c", ENTRY, KOJI)], None
        ))
        calls = [c for _, c in self.published()]
        self.assertEqual(
            [([i.itemId for i in c["items"]], sorted(j for j, _ in c["recipients"]))
             for c in calls],
            [(["a", "c"], sorted([ALICE, BOB])), (["b"], [BOB])],
        )

    def test_noMatchNoNotification(self) -> None:
        """
        When no subscriber's filter matches, the notifier is not called at all.
        """
        self.makeNode()
        self.subscribe(ALICE, "built_by=nobody")
        self.result(self.policy.publish(OWNER, "news", [("mine", ENTRY, KOJI)], None))
        self.assertEqual(self.published(), [])

    def test_nodeEventsIgnoreFilters(self) -> None:
        """
        Retract and purge notifications go to filtered subscribers too.
        """
        self.makeNode()
        self.subscribe(ALICE, "built_by=nobody")
        self.result(self.policy.publish(OWNER, "news", [("mine", ENTRY, KOJI)], None))
        self.result(self.policy.retract(OWNER, "news", ["mine"], True))
        self.result(self.policy.purge(OWNER, "news"))
        kinds = [(k, [j for j, _ in c["recipients"]]) for k, c in self.notifier.calls]
        self.assertEqual(kinds[-2:], [("retract", [ALICE]), ("purge", [ALICE])])

    def test_changeFilter(self) -> None:
        """
        Setting new options replaces the filter; an empty filter removes it.
        """
        self.makeNode()
        self.subscribe(ALICE, "built_by=nobody")
        self.result(self.policy.setSubscriptionOptions(
            ALICE, "news", ALICE, None, {"hermod#header_filter": ["built_by=johnp"]}
        ))
        self.result(self.policy.publish(OWNER, "news", [("a", ENTRY, KOJI)], None))
        self.result(self.policy.setSubscriptionOptions(
            ALICE, "news", ALICE, None, {"hermod#header_filter": [""]}
        ))
        self.result(self.policy.publish(OWNER, "news", [("b", ENTRY)], None))
        self.assertEqual(
            [[i.itemId for i in c["items"]] for _, c in self.published()], [["a"], ["b"]]
        )
        [subscription] = self.result(self.policy.getSubscriptions(OWNER, "news"))
        self.assertNotIn("hermod#header_filter", subscription.options)

    def test_invalidFilter(self) -> None:
        """
        A filter line without C{=} or without a name is refused.
        """
        self.makeNode()
        for bad in ("built_by", "=johnp"):
            self.fails(
                self.policy.subscribe(ALICE, "news", ALICE, {"hermod#header_filter": [bad]}),
                errors.InvalidSubscriptionOptions,
            )

    def test_lastItemFiltered(self) -> None:
        """
        The last item sent on subscribe honours the new subscription's filter.
        """
        self.makeNode(send_last_published_item="on_sub")
        self.result(self.policy.publish(OWNER, "news", [("mine", ENTRY, KOJI)], None))
        self.subscribe(ALICE, "built_by=ralph")
        self.subscribe(BOB, "built_by=johnp")
        self.clock.advance(0)
        [(_, call)] = self.published()
        self.assertEqual(call["recipients"], [(BOB, [])])
        self.assertEqual(call["items"][0].headers, KOJI)


class PayloadFormatTests(PolicyTestCase):
    """
    XEP-0335 JSON payloads, and C{hermod#payload_format} requiring them.
    """

    def makeJSONNode(self) -> None:
        """
        Create C{news} taking only JSON payloads.
        """
        self.result(self.policy.createNode(OWNER, "news", {"hermod#payload_format": ["json"]}))

    def test_jsonStoredUntouched(self) -> None:
        """
        On any node, a JSON container is stored and notified byte for byte.
        """
        self.makeNode()
        self.result(self.policy.subscribe(ALICE, "news", ALICE, None))
        self.result(self.policy.publish(OWNER, "news", [("j", JSON_ENTRY)], None))
        [item] = self.result(self.policy.items(ALICE, "news", None, None, None))
        self.assertEqual(item.payload, JSON_ENTRY)
        [(_, call)] = self.published()
        self.assertEqual(call["items"][0].payload, JSON_ENTRY)

    def test_jsonRequired(self) -> None:
        """
        A JSON-only node takes valid JSON containers and refuses XML, a broken JSON text and a
        container with child elements as invalid-payload, storing nothing.
        """
        self.makeJSONNode()
        self.result(self.policy.publish(OWNER, "news", [("ok", JSON_ENTRY)], None))
        for bad in (
            ENTRY,
            b"<json xmlns='urn:xmpp:json:0'>{broken</json>",
            b"<json xmlns='urn:xmpp:json:0'><a xmlns='urn:a'/></json>",
            b"<json xmlns='urn:other'>{}</json>",
        ):
            self.fails(
                self.policy.publish(OWNER, "news", [("bad", bad)], None), errors.InvalidPayload
            )
        items = self.result(self.policy.items(OWNER, "news", None, None, None))
        self.assertEqual([i.itemId for i in items], ["ok"])

    def test_wholePublishRefused(self) -> None:
        """
        One bad item refuses the whole publish.
        """
        self.makeJSONNode()
        self.fails(
            self.policy.publish(OWNER, "news", [("ok", JSON_ENTRY), ("bad", ENTRY)], None),
            errors.InvalidPayload,
        )
        self.assertEqual(self.result(self.policy.items(OWNER, "news", None, None, None)), [])

    def test_configuration(self) -> None:
        """
        The option reads back, can be switched to any, and takes no other value.
        """
        self.makeJSONNode()
        config = self.result(self.policy.getConfiguration(OWNER, "news"))
        self.assertEqual(config.payloadFormat, "json")
        self.result(self.policy.configure(OWNER, "news", {"hermod#payload_format": ["any"]}))
        self.result(self.policy.publish(OWNER, "news", [("x", ENTRY)], None))
        self.fails(
            self.policy.configure(OWNER, "news", {"hermod#payload_format": ["yaml"]}),
            errors.InvalidOptions,
        )


class CollectionTests(PolicyTestCase):
    """
    Collection nodes (XEP-0248) deliver the items of the leaves below them, by path.
    """

    def setUp(self) -> None:
        super().setUp()
        for name in ("/a", "/a/b"):
            self.result(self.policy.createNode(OWNER, name, {"pubsub#node_type": ["collection"]}))
        for name in ("/a/x", "/a/b/y", "/a/b/c/z", "/other/x"):
            self.makeNode(name)

    def subscribe(self, who: str, node: str, **options: str) -> None:
        """
        Subscribe C{who} to C{node} with C{pubsub#} subscription options.
        """
        values = {f"pubsub#{k}": [v] for k, v in options.items()}
        self.result(self.policy.subscribe(who, node, who, values or None))

    def deliveries(self) -> list[tuple[str, str, list[str], list[Any]]]:
        """
        The publish notifications as C{(leaf, item id, recipients, Collection headers)}.
        """
        return [
            (
                call["node"],
                item.itemId,
                sorted(j for j, _ in call["recipients"]),
                [v for n, v in item.headers if n == "Collection"],
            )
            for _, call in self.published()
            for item in call["items"]
        ]

    def test_depthAllAndOne(self) -> None:
        """
        A depth C{all} subscriber of C{/a} gets items of leaves at every level below it; a
        depth 1 (the default) subscriber of C{/a} only those of its direct children; each
        tagged with the collection it came through. Leaves elsewhere reach neither.
        """
        self.subscribe(ALICE, "/a", subscription_type="items", subscription_depth="all")
        self.subscribe(BOB, "/a")
        for leaf in ("/a/x", "/a/b/y", "/a/b/c/z", "/other/x"):
            self.result(self.policy.publish(OWNER, leaf, [(leaf[-1], ENTRY)], None))
        self.assertEqual(
            self.deliveries(),
            [
                ("/a/x", "x", sorted([ALICE, BOB]), ["/a"]),
                ("/a/b/y", "y", [ALICE], ["/a"]),
                ("/a/b/c/z", "z", [ALICE], ["/a"]),
            ],
        )

    def test_nearestCollectionToo(self) -> None:
        """
        Subscribers of two collections above a leaf each get one notification, naming their
        own collection; the leaf's own subscribers get it untagged.
        """
        self.subscribe(ALICE, "/a", subscription_depth="all")
        self.subscribe(BOB, "/a/b")
        self.subscribe(PUBLISHER, "/a/b/y")
        self.result(self.policy.publish(OWNER, "/a/b/y", [("y", ENTRY, KOJI)], None))
        self.assertEqual(
            sorted(self.deliveries()),
            [
                ("/a/b/y", "y", [ALICE], ["/a"]),
                ("/a/b/y", "y", [BOB], ["/a/b"]),
                ("/a/b/y", "y", [PUBLISHER], []),
            ],
        )
        tagged = [i for _, c in self.published() for i in c["items"] if BOB in
                  [j for j, _ in c["recipients"]]]
        self.assertEqual(tagged[0].headers, KOJI + (("Collection", "/a/b"),))

    def test_nodesSubscriptionGetsNoItems(self) -> None:
        """
        A C{nodes} subscription to a collection is not sent items.
        """
        self.subscribe(ALICE, "/a", subscription_type="nodes")
        self.result(self.policy.publish(OWNER, "/a/x", [("x", ENTRY)], None))
        self.assertEqual(self.published(), [])

    def test_headerFilterOnCollection(self) -> None:
        """
        A header filter on a collection subscription selects among the leaves' items.
        """
        self.result(self.policy.subscribe(
            ALICE, "/a", ALICE,
            {"pubsub#subscription_depth": ["all"], "hermod#header_filter": ["built_by=johnp"]},
        ))
        self.result(self.policy.publish(
            OWNER, "/a/b/y", [("j", ENTRY, KOJI), ("r", ENTRY, (("built_by", "ralph"),))], None
        ))
        self.assertEqual(self.deliveries(), [("/a/b/y", "j", [ALICE], ["/a"])])

    def test_collectionsFollowCreateAndDelete(self) -> None:
        """
        A collection created or deleted after the first publish counts from then on.
        """
        self.subscribe(ALICE, "/a", subscription_depth="all")
        self.result(self.policy.publish(OWNER, "/other/x", [("1", ENTRY)], None))
        self.result(self.policy.createNode(
            OWNER, "/other", {"pubsub#node_type": ["collection"]}
        ))
        self.subscribe(BOB, "/other")
        self.result(self.policy.publish(OWNER, "/other/x", [("2", ENTRY)], None))
        self.result(self.policy.deleteNode(OWNER, "/other", None))
        self.result(self.policy.publish(OWNER, "/other/x", [("3", ENTRY)], None))
        self.assertEqual(self.deliveries(), [("/other/x", "2", [BOB], ["/other"])])

    def test_anotherInstanceCreatesCollection(self) -> None:
        """
        A collection another instance created is found once that instance says the node
        changed (L{PubSubPolicy.forget}).
        """
        self.result(self.policy.publish(OWNER, "/other/x", [("1", ENTRY)], None))
        other = PubSubPolicy(self.storage, self.settings, SERVICE, self.clock)
        self.result(other.createNode(OWNER, "/other", {"pubsub#node_type": ["collection"]}))
        self.result(other.subscribe(BOB, "/other", BOB, None))
        self.result(self.policy.publish(OWNER, "/other/x", [("2", ENTRY)], None))
        self.policy.forget("/other")
        self.result(self.policy.publish(OWNER, "/other/x", [("3", ENTRY)], None))
        self.assertEqual(self.deliveries(), [("/other/x", "3", [BOB], ["/other"])])

    def test_noItemsInCollection(self) -> None:
        """
        Publishing to a collection node is refused.
        """
        self.fails(self.policy.publish(OWNER, "/a", [("i", ENTRY)], None), errors.NotAllowed)

    def test_badOptions(self) -> None:
        """
        Subscription type and depth take only their XEP-0248 values.
        """
        for var, value in (("subscription_type", "all"), ("subscription_depth", "2")):
            self.fails(
                self.policy.subscribe(ALICE, "/a", ALICE, {f"pubsub#{var}": [value]}),
                errors.InvalidSubscriptionOptions,
            )
