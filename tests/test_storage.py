"""
Tests for L{hermod_component.storage}: one conformance suite run against every L{IStorage}
engine (memory, SQLite, and PostgreSQL on a real throwaway server), plus the engine factory and
the service wrapper.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import subprocess
import sys
from typing import Any

import attrs
import psycopg2
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from hermod_component.config import StorageSettings
from hermod_component.errors import ConfigError, ItemNotFound, NodeExists, NodeNotFound
from hermod_component.interfaces import IStorage
from hermod_component.model import (
    AccessModel,
    Affiliation,
    Event,
    EventAction,
    Item,
    Node,
    NodeConfig,
    NodeType,
    PublishModel,
    SendLastPublished,
    Subscription,
    SubscriptionState,
)
from hermod_component.storage import StorageService, makeStorage
from hermod_component.storage._codec import configFromJSON, configToJSON
from hermod_component.storage._migrations import loadMigrations, splitStatements
from hermod_component.storage.memory import MemoryStorage
from hermod_component.storage.postgresql import PostgreSQLStorage
from hermod_component.storage.sqlite import SQLiteStorage
from tests.servers.postgres import PostgresServer

OWNER = "owner@example.org"
T0 = 1732269600.123456

FULL_CONFIG = NodeConfig(
    accessModel=AccessModel.WHITELIST,
    publishModel=PublishModel.OPEN,
    maxItems=None,
    persistItems=False,
    deliverPayloads=False,
    deliverNotifications=False,
    notifyRetract=False,
    notifyDelete=False,
    notifyConfig=True,
    sendLastPublishedItem=SendLastPublished.ON_SUB_AND_PRESENCE,
    itemExpire=3600,
    maxPayloadSize=1024,
    title="Ärtikel — 記事 ✓",
    description="line one\nline 'two' \"quoted\" ; -- not a comment",
    payloadType="http://www.w3.org/2005/Atom",
    notificationType="normal",
    nodeType=NodeType.COLLECTION,
)


def makeNode(identifier: str, creator: str = OWNER + "/desk", config: NodeConfig | None = None,
             created: float = T0) -> Node:
    """
    A node value for fixtures.
    """
    return Node(identifier, config or NodeConfig(), creator, created)


def makeItem(itemId: str, payload: bytes | None = None, publisher: str = OWNER + "/desk",
             published: float = T0) -> Item:
    """
    An item value for fixtures, with a small XML payload naming it unless one is given.
    """
    if payload is None:
        payload = b'<entry xmlns="http://www.w3.org/2005/Atom"><id>' + itemId.encode() + b"</id></entry>"
    return Item(itemId, payload, publisher, published)


class StorageTestsMixin:
    """
    Conformance tests for an L{IStorage}. A test case mixing this in sets C{self.storage} to a
    started, empty storage in C{setUp} and stops it in a cleanup.
    """

    storage: IStorage
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIn: Any
    assertNotIn: Any
    assertFailure: Any
    assertIsInstance: Any

    async def assertFails(self, d: Deferred[Any], error: type[Exception]) -> Exception:
        """
        Wait for C{d} to fail with C{error} and return the exception.
        """
        try:
            result = await d
        except error as e:
            return e
        raise self.failureException(f"{error.__name__} not raised; got {result!r}")  # type: ignore[attr-defined]

    def test_providesIStorage(self) -> None:
        """
        The storage provides L{IStorage} fully.
        """
        self.assertTrue(verifyObject(IStorage, self.storage))

    # Nodes

    async def test_createAndGetNode(self) -> None:
        """
        A created node reads back equal to what was stored.
        """
        node = makeNode("/midgard_article/approved", config=FULL_CONFIG)
        await self.storage.createNode(node)
        self.assertEqual(await self.storage.getNode(node.identifier), node)

    async def test_creatorBecomesOwner(self) -> None:
        """
        The creator's bare JID is the node's owner right after creation.
        """
        await self.storage.createNode(makeNode("n", creator="alice@example.org/phone"))
        self.assertEqual(
            await self.storage.getAffiliations("n"), {"alice@example.org": Affiliation.OWNER}
        )
        self.assertEqual(await self.storage.countNodesOwnedBy("alice@example.org"), 1)

    async def test_createExistingNode(self) -> None:
        """
        Creating a node whose identifier exists fails with L{NodeExists} and changes nothing.
        """
        await self.storage.createNode(makeNode("n", config=FULL_CONFIG))
        await self.assertFails(
            self.storage.createNode(makeNode("n", creator="mallory@example.org")), NodeExists
        )
        node = await self.storage.getNode("n")
        self.assertEqual((node.creator, node.config), (OWNER + "/desk", FULL_CONFIG))
        self.assertEqual(await self.storage.getAffiliations("n"), {OWNER: Affiliation.OWNER})

    async def test_getMissingNode(self) -> None:
        """
        Reading a node that does not exist fails with L{NodeNotFound}.
        """
        await self.assertFails(self.storage.getNode("nope"), NodeNotFound)

    async def test_listNodes(self) -> None:
        """
        Every node is listed, ordered by identifier in code point order.
        """
        self.assertEqual(await self.storage.listNodes(), [])
        names = ["b", "/a/b", "Z", "a", "é", "a/c", "/a"]
        for name in names:
            await self.storage.createNode(makeNode(name))
        nodes = await self.storage.listNodes()
        self.assertEqual([node.identifier for node in nodes], sorted(names))
        self.assertEqual(nodes[0], makeNode("/a"))

    async def test_countNodesOwnedBy(self) -> None:
        """
        Only nodes where the bare JID is owner are counted, following affiliation changes.
        """
        await self.storage.createNode(makeNode("a"))
        await self.storage.createNode(makeNode("b"))
        await self.storage.createNode(makeNode("c", creator="bob@example.org"))
        await self.storage.setAffiliations("c", {OWNER: Affiliation.PUBLISHER})
        self.assertEqual(await self.storage.countNodesOwnedBy(OWNER), 2)
        await self.storage.setAffiliations("c", {OWNER: Affiliation.OWNER})
        self.assertEqual(await self.storage.countNodesOwnedBy(OWNER), 3)
        await self.storage.setAffiliations("a", {OWNER: Affiliation.NONE})
        self.assertEqual(await self.storage.countNodesOwnedBy(OWNER), 2)
        self.assertEqual(await self.storage.countNodesOwnedBy("nobody@example.org"), 0)

    async def test_configureNode(self) -> None:
        """
        Configuring replaces the whole configuration and nothing else.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.configureNode("n", FULL_CONFIG)
        self.assertEqual(await self.storage.getNode("n"), makeNode("n", config=FULL_CONFIG))
        await self.storage.configureNode("n", NodeConfig())
        self.assertEqual(await self.storage.getNode("n"), makeNode("n"))

    async def test_configureMissingNode(self) -> None:
        """
        Configuring a node that does not exist fails with L{NodeNotFound}.
        """
        await self.assertFails(self.storage.configureNode("nope", FULL_CONFIG), NodeNotFound)

    async def test_nodeConfigRoundTrip(self) -> None:
        """
        Every L{NodeConfig} field round-trips exactly: each enum value, C{None} and numbers,
        booleans both ways, unicode strings, and the associated collections as a tuple.
        """
        configs = [NodeConfig(), FULL_CONFIG]
        configs += [NodeConfig(accessModel=model) for model in AccessModel]
        configs += [NodeConfig(publishModel=model) for model in PublishModel]
        configs += [NodeConfig(sendLastPublishedItem=send) for send in SendLastPublished]
        configs += [NodeConfig(nodeType=kind) for kind in NodeType]
        configs += [
            NodeConfig(maxItems=0, itemExpire=0, maxPayloadSize=0, title="", description=""),
            NodeConfig(maxItems=2**40, itemExpire=None, maxPayloadSize=None),
            NodeConfig(title="\U0001F600 emoji", payloadType="urn:x-ß"),
            NodeConfig(collections=("/a", "/b/ç", "plain")),
        ]
        for index, config in enumerate(configs):
            await self.storage.createNode(makeNode(f"node{index}", config=config))
        for index, config in enumerate(configs):
            node = await self.storage.getNode(f"node{index}")
            self.assertEqual(node.config, config)
            self.assertIsInstance(node.config.accessModel, AccessModel)
            self.assertIsInstance(node.config.nodeType, NodeType)
            self.assertIsInstance(node.config.collections, tuple)

    async def test_deleteNode(self) -> None:
        """
        Deleting a node removes it with its items, affiliations and subscriptions; its events
        stay readable and end with a C{delete} event.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.createNode(makeNode("other"))
        await self.storage.setAffiliations("n", {"pub@example.org": Affiliation.PUBLISHER})
        await self.storage.saveSubscription(Subscription("n", "sub@example.org/r", "s1"))
        await self.storage.saveSubscription(Subscription("other", "sub@example.org", "s2"))
        await self.storage.storeItems("n", [makeItem("i1"), makeItem("i2")], None, True)
        await self.storage.deleteNode("n", T0 + 5)

        await self.assertFails(self.storage.getNode("n"), NodeNotFound)
        self.assertEqual([n.identifier for n in await self.storage.listNodes()], ["other"])
        self.assertEqual(await self.storage.getEntityAffiliations("pub@example.org"), [])
        self.assertEqual(
            await self.storage.getEntityAffiliations(OWNER), [("other", Affiliation.OWNER)]
        )
        self.assertEqual(
            [s.node for s in await self.storage.getEntitySubscriptions("sub@example.org")],
            ["other"],
        )
        self.assertEqual(await self.storage.countNodesOwnedBy(OWNER), 1)

        events = await self.storage.getEvents("n")
        self.assertEqual(
            [(e.action, e.itemId) for e in events],
            [(EventAction.PUBLISH, "i1"), (EventAction.PUBLISH, "i2"), (EventAction.DELETE, None)],
        )
        self.assertEqual(events[-1].time, T0 + 5)
        self.assertEqual(events[-1].node, "n")

        # A node created again under the same name starts empty.
        await self.storage.createNode(makeNode("n", creator="new@example.org"))
        self.assertEqual(await self.storage.getItems("n"), [])
        self.assertEqual(await self.storage.getSubscriptions("n"), [])
        self.assertEqual(
            await self.storage.getAffiliations("n"), {"new@example.org": Affiliation.OWNER}
        )

    async def test_deleteMissingNode(self) -> None:
        """
        Deleting a node that does not exist fails with L{NodeNotFound} and logs nothing.
        """
        await self.assertFails(self.storage.deleteNode("nope", T0), NodeNotFound)
        self.assertEqual(await self.storage.getEvents("nope"), [])

    # Affiliations

    async def test_affiliations(self) -> None:
        """
        Affiliations are set, changed and removed (with C{none}) per bare JID.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.setAffiliations(
            "n",
            {
                "pub@example.org": Affiliation.PUBLISHER,
                "member@example.org": Affiliation.MEMBER,
                "bad@example.org": Affiliation.OUTCAST,
                "only@example.org": Affiliation.PUBLISH_ONLY,
                "never@example.org": Affiliation.NONE,
            },
        )
        self.assertEqual(
            await self.storage.getAffiliations("n"),
            {
                OWNER: Affiliation.OWNER,
                "pub@example.org": Affiliation.PUBLISHER,
                "member@example.org": Affiliation.MEMBER,
                "bad@example.org": Affiliation.OUTCAST,
                "only@example.org": Affiliation.PUBLISH_ONLY,
            },
        )
        await self.storage.setAffiliations(
            "n", {"pub@example.org": Affiliation.OWNER, "member@example.org": Affiliation.NONE}
        )
        affiliations = await self.storage.getAffiliations("n")
        self.assertEqual(affiliations["pub@example.org"], Affiliation.OWNER)
        self.assertNotIn("member@example.org", affiliations)
        self.assertEqual(len(affiliations), 4)
        await self.storage.setAffiliations("n", {})
        self.assertEqual(await self.storage.getAffiliations("n"), affiliations)

    async def test_affiliationsOfMissingNode(self) -> None:
        """
        Reading or setting affiliations of a missing node fails with L{NodeNotFound}.
        """
        await self.assertFails(self.storage.getAffiliations("nope"), NodeNotFound)
        await self.assertFails(
            self.storage.setAffiliations("nope", {OWNER: Affiliation.MEMBER}), NodeNotFound
        )
        self.assertEqual(await self.storage.getEntityAffiliations(OWNER), [])

    async def test_entityAffiliations(self) -> None:
        """
        An entity's affiliations are listed across nodes, ordered by node.
        """
        for name in ["c", "a", "b", "d"]:
            await self.storage.createNode(makeNode(name, creator="x@example.org"))
        await self.storage.setAffiliations("c", {"e@example.org": Affiliation.MEMBER})
        await self.storage.setAffiliations("a", {"e@example.org": Affiliation.PUBLISHER})
        await self.storage.setAffiliations("d", {"e@example.org": Affiliation.OUTCAST})
        self.assertEqual(
            await self.storage.getEntityAffiliations("e@example.org"),
            [("a", Affiliation.PUBLISHER), ("c", Affiliation.MEMBER), ("d", Affiliation.OUTCAST)],
        )

    # Subscriptions

    async def test_saveAndGetSubscriptions(self) -> None:
        """
        Saved subscriptions read back equal, in every state, oldest first.
        """
        await self.storage.createNode(makeNode("n"))
        subscriptions = [
            Subscription("n", "b@example.org/r1", "sub-1", SubscriptionState.SUBSCRIBED),
            Subscription("n", "a@example.org", "sub-2", SubscriptionState.PENDING),
            Subscription("n", "c@example.org", "sub-0", SubscriptionState.UNCONFIGURED),
            Subscription("n", "d@example.org", "sub-9", SubscriptionState.NONE),
        ]
        for subscription in subscriptions:
            await self.storage.saveSubscription(subscription)
        self.assertEqual(await self.storage.getSubscriptions("n"), subscriptions)

    async def test_subscriptionOptionsRoundTrip(self) -> None:
        """
        Subscription options, several values per field and unicode included, round-trip.
        """
        await self.storage.createNode(makeNode("n"))
        options = {
            "pubsub#deliver": ("true",),
            "pubsub#show-values": ("away", "chat", "online"),
            "pubsub#keywords": ("Zürich ☃",),
            "pubsub#empty": (),
        }
        subscription = Subscription("n", "a@example.org", "s", options=options)
        await self.storage.saveSubscription(subscription)
        [stored] = await self.storage.getSubscriptions("n")
        self.assertEqual(stored, subscription)
        self.assertEqual(stored.options["pubsub#show-values"], ("away", "chat", "online"))
        [viaEntity] = await self.storage.getEntitySubscriptions("a@example.org")
        self.assertEqual(viaEntity, subscription)

    async def test_replaceSubscription(self) -> None:
        """
        Saving a subscription with an existing node and subscription id replaces it in place.
        """
        await self.storage.createNode(makeNode("n"))
        first = Subscription("n", "a@example.org", "s1", SubscriptionState.PENDING)
        second = Subscription("n", "b@example.org", "s2")
        await self.storage.saveSubscription(first)
        await self.storage.saveSubscription(second)
        approved = Subscription(
            "n", "a@example.org/other", "s1", SubscriptionState.SUBSCRIBED,
            {"pubsub#deliver": ("false",)},
        )
        await self.storage.saveSubscription(approved)
        self.assertEqual(await self.storage.getSubscriptions("n"), [approved, second])

    async def test_removeSubscription(self) -> None:
        """
        Removing a subscription removes only it; removing a missing one is harmless.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.saveSubscription(Subscription("n", "a@example.org", "s1"))
        await self.storage.saveSubscription(Subscription("n", "a@example.org", "s2"))
        await self.storage.removeSubscription("n", "s1")
        await self.storage.removeSubscription("n", "s1")
        await self.storage.removeSubscription("n", "missing")
        await self.storage.removeSubscription("no-such-node", "s2")
        self.assertEqual(
            await self.storage.getSubscriptions("n"), [Subscription("n", "a@example.org", "s2")]
        )

    async def test_subscriptionsOfMissingNode(self) -> None:
        """
        Reading or saving subscriptions of a missing node fails with L{NodeNotFound}.
        """
        await self.assertFails(self.storage.getSubscriptions("nope"), NodeNotFound)
        await self.assertFails(
            self.storage.saveSubscription(Subscription("nope", "a@example.org", "s")),
            NodeNotFound,
        )
        self.assertEqual(await self.storage.getEntitySubscriptions("a@example.org"), [])

    async def test_entitySubscriptionsByBareJID(self) -> None:
        """
        The entity view finds subscriptions made with full JIDs by the bare JID, several per
        node with distinct subscription ids, ordered by node.
        """
        await self.storage.createNode(makeNode("b"))
        await self.storage.createNode(makeNode("a"))
        mine = [
            Subscription("b", "me@example.org/laptop", "s-b1"),
            Subscription("a", "me@example.org/phone", "s-a1", SubscriptionState.PENDING),
            Subscription("b", "me@example.org", "s-b2"),
            Subscription("a", "me@example.org/laptop", "s-a2"),
        ]
        for subscription in mine:
            await self.storage.saveSubscription(subscription)
        await self.storage.saveSubscription(Subscription("a", "notme@example.org/laptop", "x"))
        await self.storage.saveSubscription(Subscription("a", "me@example.org.evil/r", "y"))
        found = await self.storage.getEntitySubscriptions("me@example.org")
        self.assertEqual([s.node for s in found], ["a", "a", "b", "b"])
        self.assertEqual(
            sorted(found, key=lambda s: s.subscriptionId),
            sorted(mine, key=lambda s: s.subscriptionId),
        )
        self.assertEqual(
            [s.subscriptionId for s in await self.storage.getSubscriptions("a")],
            ["s-a1", "s-a2", "x", "y"],
        )
        self.assertEqual(await self.storage.getEntitySubscriptions("me@example.org/laptop"), [])

    # Items

    async def test_storeAndGetItems(self) -> None:
        """
        Stored items read back equal, newest first.
        """
        await self.storage.createNode(makeNode("n"))
        items = [makeItem(f"i{n}", published=T0 + n) for n in range(5)]
        result = await self.storage.storeItems("n", items[:3], None, True)
        self.assertEqual(result.items, tuple(items[:3]))
        self.assertEqual(result.removed, ())
        await self.storage.storeItems("n", items[3:], None, True)
        self.assertEqual(await self.storage.getItems("n"), items[::-1])

    async def test_orderDoesNotFollowTimestamps(self) -> None:
        """
        Items are ordered by when they were stored, not by their publish time.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem("late", published=T0 + 100)], None, True)
        await self.storage.storeItems("n", [makeItem("early", published=T0 - 100)], None, True)
        self.assertEqual(
            [item.itemId for item in await self.storage.getItems("n")], ["early", "late"]
        )

    async def test_getItemsMaxItems(self) -> None:
        """
        C{maxItems} limits the result to the newest items.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(5)], None, True)
        self.assertEqual(
            [item.itemId for item in await self.storage.getItems("n", maxItems=2)], ["i4", "i3"]
        )
        self.assertEqual(await self.storage.getItems("n", maxItems=0), [])
        self.assertEqual(len(await self.storage.getItems("n", maxItems=50)), 5)

    async def test_getItemsByIds(self) -> None:
        """
        Items asked by id come in the order asked, missing ones left out.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(5)], None, True)
        self.assertEqual(
            await self.storage.getItems("n", itemIds=["i1", "missing", "i4", "i0"]),
            [makeItem("i1"), makeItem("i4"), makeItem("i0")],
        )
        self.assertEqual(await self.storage.getItems("n", itemIds=[]), [])
        self.assertEqual(await self.storage.getItems("n", itemIds=["missing"]), [])

    async def test_itemsAreScopedToTheirNode(self) -> None:
        """
        Items with the same id in two nodes are separate.
        """
        await self.storage.createNode(makeNode("a"))
        await self.storage.createNode(makeNode("b"))
        await self.storage.storeItems("a", [makeItem("x", b"<a/>")], 1, True)
        await self.storage.storeItems("b", [makeItem("x", b"<b/>")], 1, True)
        self.assertEqual(await self.storage.getItems("a", itemIds=["x"]), [makeItem("x", b"<a/>")])
        self.assertEqual(await self.storage.getItems("b"), [makeItem("x", b"<b/>")])
        await self.storage.retractItems("a", ["x"], OWNER, T0)
        self.assertEqual(await self.storage.getItems("b"), [makeItem("x", b"<b/>")])

    async def test_maxItemsTrimsOldest(self) -> None:
        """
        Storing beyond C{maxItems} drops the oldest items and reports their ids, oldest first.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(3)], 3, True)
        result = await self.storage.storeItems("n", [makeItem("i3"), makeItem("i4")], 3, True)
        self.assertEqual(result.removed, ("i0", "i1"))
        self.assertEqual(result.items, (makeItem("i3"), makeItem("i4")))
        self.assertEqual(
            [item.itemId for item in await self.storage.getItems("n")], ["i4", "i3", "i2"]
        )

    async def test_maxItemsWithOtherNodesBetween(self) -> None:
        """
        Trimming counts the node's own items, however the publishes of other nodes and
        republished items interleave with them: up to C{maxItems} nothing is removed, beyond
        it the oldest are.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.createNode(makeNode("m"))
        for n in range(3):
            await self.storage.storeItems("m", [makeItem(f"m{n}")], None, True)
            result = await self.storage.storeItems("n", [makeItem(f"i{n}")], 3, True)
            self.assertEqual(result.removed, ())
        result = await self.storage.storeItems("n", [makeItem("i0", b"<again/>")], 3, True)
        self.assertEqual(result.removed, ())
        await self.storage.storeItems("m", [makeItem("m3")], None, True)
        result = await self.storage.storeItems("n", [makeItem("i3")], 3, True)
        self.assertEqual(result.removed, ("i1",))
        self.assertEqual(
            [item.itemId for item in await self.storage.getItems("n")], ["i3", "i0", "i2"]
        )

    async def test_maxItemsSmallerThanBatch(self) -> None:
        """
        A publish of more items than C{maxItems} keeps only the newest of the batch.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem("old")], 2, True)
        result = await self.storage.storeItems(
            "n", [makeItem(f"i{n}") for n in range(4)], 2, True
        )
        self.assertEqual(result.removed, ("old", "i0", "i1"))
        self.assertEqual(len(result.items), 4)
        self.assertEqual([item.itemId for item in await self.storage.getItems("n")], ["i3", "i2"])

    async def test_maxItemsNoneKeepsAll(self) -> None:
        """
        With C{maxItems} C{None} nothing is dropped.
        """
        await self.storage.createNode(makeNode("n"))
        for n in range(30):
            result = await self.storage.storeItems("n", [makeItem(f"i{n}")], None, True)
            self.assertEqual(result.removed, ())
        self.assertEqual(len(await self.storage.getItems("n")), 30)

    async def test_republishReplacesAndBecomesNewest(self) -> None:
        """
        Republishing an existing item id replaces the item and makes it the newest.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(3)], 3, True)
        replacement = makeItem("i0", b"<new/>", publisher="other@example.org", published=T0 + 9)
        result = await self.storage.storeItems("n", [replacement], 3, True)
        self.assertEqual(result.removed, ())
        self.assertEqual(
            await self.storage.getItems("n"), [replacement, makeItem("i2"), makeItem("i1")]
        )
        # The replaced item is now the newest, so the next trim drops i1 first.
        result = await self.storage.storeItems("n", [makeItem("i3")], 3, True)
        self.assertEqual(result.removed, ("i1",))

    async def test_sameIdTwiceInOnePublish(self) -> None:
        """
        When one publish carries an item id twice, the later one is stored; both are logged.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems(
            "n", [makeItem("a", b"<one/>"), makeItem("b"), makeItem("a", b"<two/>")], None, True
        )
        self.assertEqual(await self.storage.getItems("n"), [makeItem("a", b"<two/>"), makeItem("b")])
        events = await self.storage.getEvents("n")
        self.assertEqual([e.payload for e in events][0::2], [b"<one/>", b"<two/>"])

    async def test_notPersistedLogsEvent(self) -> None:
        """
        With C{persist} false no item is stored, but the publish event is logged with payload.
        """
        await self.storage.createNode(makeNode("n"))
        item = makeItem("transient", b"<ping/>", published=T0 + 1)
        result = await self.storage.storeItems("n", [item], 10, False)
        self.assertEqual(result.items, (item,))
        self.assertEqual(await self.storage.getItems("n"), [])
        [event] = await self.storage.getEvents("n")
        self.assertEqual(
            (event.node, event.action, event.itemId, event.publisher, event.payload, event.time),
            ("n", EventAction.PUBLISH, "transient", item.publisher, b"<ping/>", T0 + 1),
        )

    async def test_storeItemsMissingNode(self) -> None:
        """
        Storing or reading items of a missing node fails with L{NodeNotFound} and logs nothing.
        """
        await self.assertFails(
            self.storage.storeItems("nope", [makeItem("i")], None, True), NodeNotFound
        )
        await self.assertFails(
            self.storage.storeItems("nope", [makeItem("i")], None, False), NodeNotFound
        )
        await self.assertFails(self.storage.getItems("nope"), NodeNotFound)
        await self.assertFails(self.storage.getItems("nope", itemIds=["i"]), NodeNotFound)
        self.assertEqual(await self.storage.getEvents("nope"), [])

    async def test_payloadRoundTrip(self) -> None:
        """
        Payload bytes round-trip exactly: non-ASCII UTF-8, every byte value, 100 KB, empty.
        """
        await self.storage.createNode(makeNode("n"))
        unicodeXML = '<entry><title>Grüße, 世界 \U0001F600</title></entry>'.encode()
        big = b"<big>" + (b"x\xc3\xa9" * 34200) + b"</big>"
        self.assertTrue(len(big) > 100 * 1024)
        payloads = {"u": unicodeXML, "all": bytes(range(256)), "big": big, "empty": b""}
        items = [makeItem(itemId, payload) for itemId, payload in payloads.items()]
        await self.storage.storeItems("n", items, None, True)
        stored = {item.itemId: item for item in await self.storage.getItems("n")}
        for itemId, payload in payloads.items():
            self.assertIsInstance(stored[itemId].payload, bytes)
            self.assertEqual(stored[itemId].payload, payload)
        events = await self.storage.getEvents("n")
        self.assertEqual([e.payload for e in events], list(payloads.values()))
        self.assertIsInstance(events[0].payload, bytes)

    async def test_headersRoundTrip(self) -> None:
        """
        An item's SHIM headers round-trip in order, with repeated names and non-ASCII values;
        an item without headers reads back with none, and a republish replaces them.
        """
        await self.storage.createNode(makeNode("n"))
        headers = (("built_by", "johnp"), ("tag", "a"), ("tag", "b"), ("name", "Grüße"))
        await self.storage.storeItems(
            "n",
            [attrs.evolve(makeItem("h"), headers=headers), makeItem("plain")],
            None,
            True,
        )
        stored = {item.itemId: item for item in await self.storage.getItems("n")}
        self.assertEqual(stored["h"].headers, headers)
        self.assertEqual(stored["plain"].headers, ())
        [byId] = await self.storage.getItems("n", itemIds=["h"])
        self.assertEqual(byId.headers, headers)
        page, _, _ = await self.storage.getItemsPage("n", None, None, 10, False)
        self.assertEqual({i.itemId: i.headers for i in page}, {"h": headers, "plain": ()})
        await self.storage.storeItems(
            "n", [attrs.evolve(makeItem("h"), headers=(("built_by", "ralph"),))], None, True
        )
        [again] = await self.storage.getItems("n", itemIds=["h"])
        self.assertEqual(again.headers, (("built_by", "ralph"),))

    async def test_eventHeadersRoundTrip(self) -> None:
        """
        A publish event keeps its item's SHIM headers in order (repeated names, non-ASCII
        values), through C{getEvents} and C{queryEvents}; other events and items without
        headers carry none.
        """
        await self.storage.createNode(makeNode("n"))
        headers = (("built_by", "johnp"), ("tag", "a"), ("tag", "b"), ("name", "Grüße"))
        await self.storage.storeItems(
            "n", [attrs.evolve(makeItem("h"), headers=headers), makeItem("plain")], None, True
        )
        await self.storage.retractItems("n", ["h"], OWNER, T0 + 1)
        await self.storage.purgeNode("n", OWNER, T0 + 2)
        expected = [("h", headers), ("plain", ()), ("h", ()), (None, ())]
        events = await self.storage.getEvents("n")
        self.assertEqual([(e.itemId, e.headers) for e in events], expected)
        queried = await self.storage.queryEvents("n", limit=10)
        self.assertEqual([(e.itemId, e.headers) for e in queried], expected)
        newest = await self.storage.queryEvents("n", limit=10, newestFirst=True)
        self.assertEqual(newest[-1].headers, headers)

    async def test_timestampsRoundTrip(self) -> None:
        """
        Publish times and creation times are floats that round-trip exactly.
        """
        await self.storage.createNode(makeNode("n", created=1732269600.987654321))
        await self.storage.storeItems("n", [makeItem("i", published=0.1 + 0.2)], None, True)
        node = await self.storage.getNode("n")
        self.assertEqual(node.created, 1732269600.987654321)
        [item] = await self.storage.getItems("n")
        self.assertEqual(item.published, 0.1 + 0.2)
        [event] = await self.storage.getEvents("n")
        self.assertEqual(event.time, 0.1 + 0.2)

    async def test_retractItems(self) -> None:
        """
        Retracting removes the existing items, returns only their ids in the order asked, and
        logs one C{retract} event for each.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(4)], None, True)
        removed = await self.storage.retractItems(
            "n", ["i2", "missing", "i0", "i2"], "pub@example.org/r", T0 + 7
        )
        self.assertEqual(removed, ["i2", "i0"])
        self.assertEqual([item.itemId for item in await self.storage.getItems("n")], ["i3", "i1"])
        events = (await self.storage.getEvents("n"))[4:]
        self.assertEqual(
            [(e.action, e.itemId, e.publisher, e.payload, e.time) for e in events],
            [
                (EventAction.RETRACT, "i2", "pub@example.org/r", b"", T0 + 7),
                (EventAction.RETRACT, "i0", "pub@example.org/r", b"", T0 + 7),
            ],
        )
        self.assertEqual(await self.storage.retractItems("n", ["missing"], OWNER, T0), [])
        self.assertEqual(len(await self.storage.getEvents("n")), 6)

    async def test_retractMissingNode(self) -> None:
        """
        Retracting from a missing node fails with L{NodeNotFound}.
        """
        await self.assertFails(self.storage.retractItems("nope", ["i"], OWNER, T0), NodeNotFound)

    async def test_purgeNode(self) -> None:
        """
        Purging removes every item of the node (only that node) and logs a C{purge} event.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.createNode(makeNode("other"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(3)], None, True)
        await self.storage.storeItems("other", [makeItem("keep")], None, True)
        await self.storage.purgeNode("n", OWNER + "/desk", T0 + 3)
        self.assertEqual(await self.storage.getItems("n"), [])
        self.assertEqual(await self.storage.getItems("other"), [makeItem("keep")])
        events = await self.storage.getEvents("n")
        self.assertEqual(
            (events[-1].action, events[-1].itemId, events[-1].publisher, events[-1].time),
            (EventAction.PURGE, None, OWNER + "/desk", T0 + 3),
        )
        await self.storage.storeItems("n", [makeItem("after")], None, True)
        self.assertEqual(await self.storage.getItems("n"), [makeItem("after")])

    async def test_purgeMissingNode(self) -> None:
        """
        Purging a missing node fails with L{NodeNotFound}.
        """
        await self.assertFails(self.storage.purgeNode("nope", OWNER, T0), NodeNotFound)

    async def test_expireItems(self) -> None:
        """
        Expiring removes the items published before the cut-off, returns their ids oldest
        first, and logs no event.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems(
            "n",
            [makeItem("b", published=T0 - 50), makeItem("keep", published=T0),
             makeItem("a", published=T0 - 100), makeItem("later", published=T0 + 1)],
            None,
            True,
        )
        self.assertEqual(await self.storage.expireItems("n", T0), ["b", "a"])
        self.assertEqual(
            [item.itemId for item in await self.storage.getItems("n")], ["later", "keep"]
        )
        self.assertEqual(len(await self.storage.getEvents("n")), 4)
        self.assertEqual(await self.storage.expireItems("n", T0), [])
        self.assertEqual(await self.storage.expireItems("nope", T0), [])

    # Events

    async def test_events(self) -> None:
        """
        Events come oldest first with strictly increasing ids, per node, after C{afterId},
        at most C{limit}.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.createNode(makeNode("m"))
        await self.storage.storeItems("n", [makeItem("i0"), makeItem("i1")], None, True)
        await self.storage.storeItems("m", [makeItem("m0")], None, True)
        await self.storage.storeItems("n", [makeItem("i2")], None, True)
        await self.storage.retractItems("n", ["i0"], OWNER, T0 + 1)
        await self.storage.purgeNode("n", OWNER, T0 + 2)

        events = await self.storage.getEvents("n")
        self.assertEqual(
            [(e.action, e.itemId) for e in events],
            [
                (EventAction.PUBLISH, "i0"),
                (EventAction.PUBLISH, "i1"),
                (EventAction.PUBLISH, "i2"),
                (EventAction.RETRACT, "i0"),
                (EventAction.PURGE, None),
            ],
        )
        ids = [e.eventId for e in events]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertTrue(all(isinstance(i, int) for i in ids))
        self.assertEqual(events[0].payload, makeItem("i0").payload)
        self.assertEqual(events[0].publisher, OWNER + "/desk")
        self.assertEqual(events[0].node, "n")

        [other] = await self.storage.getEvents("m")
        self.assertTrue(ids[1] < other.eventId < ids[2])

        self.assertEqual(await self.storage.getEvents("n", afterId=ids[1]), events[2:])
        self.assertEqual(await self.storage.getEvents("n", afterId=ids[1], limit=2), events[2:4])
        self.assertEqual(await self.storage.getEvents("n", limit=1), events[:1])
        self.assertEqual(await self.storage.getEvents("n", afterId=ids[-1]), [])
        self.assertEqual(await self.storage.getEvents("n", afterId=other.eventId), events[2:])
        self.assertEqual(await self.storage.getEvents("nope"), [])

    async def test_manyEventsPaged(self) -> None:
        """
        Paging through a long log with C{afterId} and C{limit} visits every event once.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem(f"i{n}") for n in range(250)], 10, True)
        seen: list[str | None] = []
        afterId = None
        while True:
            page = await self.storage.getEvents("n", afterId=afterId, limit=40)
            if not page:
                break
            seen.extend(event.itemId for event in page)
            afterId = page[-1].eventId
        self.assertEqual(seen, [f"i{n}" for n in range(250)])
        self.assertEqual(len(await self.storage.getItems("n")), 10)

    # Archive queries (XEP-0313) and item pages (XEP-0059)

    async def _archiveLog(self) -> list[Event]:
        """
        Node C{n} with six events at times T0..T0+5 by two publishers, interleaved with an
        event of node C{m}; returns C{n}'s events.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.createNode(makeNode("m"))
        for n in range(4):
            publisher = "alice@example.org" if n % 2 else "bob@example.org/desk"
            await self.storage.storeItems(
                "n", [makeItem(f"i{n}", publisher=publisher, published=T0 + n)], None, True
            )
            if n == 1:
                await self.storage.storeItems("m", [makeItem("m0")], None, True)
        await self.storage.retractItems("n", ["i0"], "bob@example.org", T0 + 4)
        await self.storage.purgeNode("n", "alice@example.org", T0 + 5)
        return await self.storage.getEvents("n")

    async def test_queryEventsFilters(self) -> None:
        """
        C{queryEvents} applies the id range, the time range (inclusive) and the publisher
        (a bare JID matching its full JIDs), in id order either way, at most C{limit}.
        """
        events = await self._archiveLog()
        ids = [e.eventId for e in events]
        q = self.storage.queryEvents
        self.assertEqual(await q("n"), events)
        self.assertEqual(await q("n", afterId=ids[1], beforeId=ids[4]), events[2:4])
        self.assertEqual(await q("n", start=T0 + 1, end=T0 + 3), events[1:4])
        self.assertEqual(await q("n", publisher="bob@example.org"), [events[0], events[2], events[4]])
        self.assertEqual(await q("n", publisher="bob@example.org/desk"), [events[0], events[2]])
        self.assertEqual(await q("n", publisher="bob@example.or"), [])
        self.assertEqual(await q("n", limit=2), events[:2])
        self.assertEqual(await q("n", limit=2, newestFirst=True), [events[5], events[4]])
        self.assertEqual(
            await q("n", beforeId=ids[3], limit=2, newestFirst=True), [events[2], events[1]]
        )
        self.assertEqual(await q("n", limit=0), [])
        self.assertEqual(await q("nope"), [])

    async def test_countEvents(self) -> None:
        """
        C{countEvents} counts what C{queryEvents} would return without a limit.
        """
        events = await self._archiveLog()
        ids = [e.eventId for e in events]
        self.assertEqual(await self.storage.countEvents("n"), 6)
        self.assertEqual(await self.storage.countEvents("n", afterId=ids[0], beforeId=ids[5]), 4)
        self.assertEqual(await self.storage.countEvents("n", start=T0 + 4), 2)
        self.assertEqual(await self.storage.countEvents("n", publisher="alice@example.org"), 3)
        self.assertEqual(await self.storage.countEvents("m"), 1)
        self.assertEqual(await self.storage.countEvents("nope"), 0)

    async def test_hasEvent(self) -> None:
        """
        C{hasEvent} is true only for an event of that node still in the log.
        """
        events = await self._archiveLog()
        [other] = await self.storage.getEvents("m")
        self.assertTrue(await self.storage.hasEvent("n", events[0].eventId))
        self.assertFalse(await self.storage.hasEvent("n", other.eventId))
        self.assertFalse(await self.storage.hasEvent("n", events[-1].eventId + 1000))

    async def test_trimEvents(self) -> None:
        """
        C{trimEvents} drops events older than C{before} and beyond the newest C{keep}, of that
        node only, and says how many went.
        """
        events = await self._archiveLog()
        self.assertEqual(await self.storage.trimEvents("n", None, None), 0)
        self.assertEqual(await self.storage.trimEvents("n", T0 + 1, None), 1)
        self.assertEqual(await self.storage.getEvents("n"), events[1:])
        self.assertEqual(await self.storage.trimEvents("n", None, 10), 0)
        self.assertEqual(await self.storage.trimEvents("n", None, 2), 3)
        self.assertEqual(await self.storage.getEvents("n"), events[4:])
        self.assertFalse(await self.storage.hasEvent("n", events[1].eventId))
        self.assertEqual(len(await self.storage.getEvents("m")), 1)
        self.assertEqual(await self.storage.trimEvents("n", None, 0), 2)
        self.assertEqual(await self.storage.getEvents("n"), [])

    async def test_itemsPages(self) -> None:
        """
        C{getItemsPage} pages newest first after or before an item, or the last page, with
        the total and the page's position; a publish meanwhile does not move later pages.
        """
        await self.storage.createNode(makeNode("n"))
        for n in range(7):
            await self.storage.storeItems("n", [makeItem(f"i{n}")], None, True)
        page = self.storage.getItemsPage

        def ids(result: tuple[list[Item], int, int]) -> tuple[list[str], int, int]:
            return [item.itemId for item in result[0]], result[1], result[2]

        self.assertEqual(ids(await page("n", None, None, 3, False)), (["i6", "i5", "i4"], 7, 0))
        await self.storage.storeItems("n", [makeItem("i7")], None, True)
        self.assertEqual(ids(await page("n", "i4", None, 3, False)), (["i3", "i2", "i1"], 8, 4))
        self.assertEqual(ids(await page("n", "i1", None, 3, False)), (["i0"], 8, 7))
        self.assertEqual(ids(await page("n", "i0", None, 3, False)), ([], 8, 0))
        self.assertEqual(ids(await page("n", None, "i4", 2, False)), (["i6", "i5"], 8, 1))
        self.assertEqual(ids(await page("n", None, None, 3, True)), (["i2", "i1", "i0"], 8, 5))
        self.assertEqual(ids(await page("n", None, None, 0, False)), ([], 8, 0))
        await self.assertFails(page("n", "gone", None, 3, False), ItemNotFound)
        await self.assertFails(page("nope", None, None, 3, False), NodeNotFound)


class PersistenceTestsMixin:
    """
    Tests that state survives a restart; for engines that keep data outside the process. The
    test case provides L{reopen}, which stops C{self.storage} and starts a new storage object
    on the same database.
    """

    storage: IStorage
    assertEqual: Any
    assertTrue: Any
    assertFails: Any

    async def reopen(self) -> IStorage:
        """
        Stop the storage, start a new one on the same database and make it C{self.storage}.
        """
        raise NotImplementedError()

    def migrationVersions(self) -> list[int]:
        """
        The versions recorded in the database's C{schema_migrations} table.
        """
        raise NotImplementedError()

    async def test_stopFinishesWorkInFlight(self) -> None:
        """
        Publishes still being written when the storage is stopped commit before the stop
        completes; afterwards the stopped storage fails its calls instead of running them.
        """
        s = self.storage
        await s.createNode(makeNode("n"))
        written = [s.storeItems("n", [makeItem(f"i{n}")], None, True) for n in range(5)]
        await s.stop()
        results = [await d for d in written]
        self.assertEqual(
            [[item.itemId for item in r.items] for r in results], [[f"i{n}"] for n in range(5)]
        )
        await self.assertFails(s.getItems("n"), RuntimeError)
        s = await self.reopen()
        self.assertEqual(
            sorted(item.itemId for item in await s.getItems("n")), [f"i{n}" for n in range(5)]
        )

    async def test_restartKeepsEverything(self) -> None:
        """
        After a stop and a start with a new storage object, every node, affiliation,
        subscription, item and event is still there, and new event ids and item order carry on.
        """
        s = self.storage
        await s.createNode(makeNode("n", config=FULL_CONFIG))
        await s.setAffiliations("n", {"pub@example.org": Affiliation.PUBLISHER})
        subscription = Subscription(
            "n", "sub@example.org/r", "s1", SubscriptionState.PENDING, {"pubsub#deliver": ("1",)}
        )
        await s.saveSubscription(subscription)
        await s.storeItems("n", [makeItem("i0"), makeItem("i1", "Ω".encode())], None, True)
        await s.storeItems("n", [makeItem("i0", b"<again/>")], None, True)
        eventsBefore = await s.getEvents("n")
        before = {
            "node": await s.getNode("n"),
            "affiliations": await s.getAffiliations("n"),
            "subscriptions": await s.getSubscriptions("n"),
            "items": await s.getItems("n"),
            "events": await s.getEvents("n"),
        }
        s = await self.reopen()
        after = {
            "node": await s.getNode("n"),
            "affiliations": await s.getAffiliations("n"),
            "subscriptions": await s.getSubscriptions("n"),
            "items": await s.getItems("n"),
            "events": await s.getEvents("n"),
        }
        self.assertEqual(after, before)
        self.assertEqual([item.itemId for item in await s.getItems("n")], ["i0", "i1"])
        self.assertEqual(await s.getEntitySubscriptions("sub@example.org"), [subscription])

        await s.storeItems("n", [makeItem("i1", b"<newest/>")], 2, True)
        self.assertEqual([item.itemId for item in await s.getItems("n")], ["i1", "i0"])
        events = await s.getEvents("n")
        self.assertEqual(events[:3], eventsBefore)
        self.assertTrue(events[3].eventId > events[2].eventId)

    async def test_eventIdsNotReusedAfterDelete(self) -> None:
        """
        Event ids keep increasing across a node deletion and a restart.
        """
        await self.storage.createNode(makeNode("n"))
        await self.storage.storeItems("n", [makeItem("i")], None, True)
        await self.storage.deleteNode("n", T0)
        last = (await self.storage.getEvents("n"))[-1].eventId
        s = await self.reopen()
        await s.createNode(makeNode("n"))
        await s.storeItems("n", [makeItem("j")], None, True)
        events = await s.getEvents("n")
        self.assertEqual([e.action for e in events],
                         [EventAction.PUBLISH, EventAction.DELETE, EventAction.PUBLISH])
        self.assertTrue(events[-1].eventId > last)

    async def test_migrationsAppliedOnce(self) -> None:
        """
        Starting again on a migrated database applies nothing twice; each migration is
        recorded once in C{schema_migrations}.
        """
        versions = self.migrationVersions()
        self.assertTrue(versions)
        self.assertEqual(versions, sorted(set(versions)))
        await self.storage.createNode(makeNode("n"))
        await self.reopen()
        await self.reopen()
        self.assertEqual(self.migrationVersions(), versions)
        self.assertEqual([n.identifier for n in await self.storage.listNodes()], ["n"])


class MemoryStorageTests(StorageTestsMixin, TestCase):
    """
    The conformance tests against L{MemoryStorage}. (The async C{TestCase} only because the
    shared tests are coroutines; every Deferred here has already fired.)
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.storage = MemoryStorage()
        return self.storage.start()

    def test_synchronous(self) -> None:
        """
        Every method answers with an already-fired Deferred, so policy tests need no reactor.
        """
        storage = MemoryStorage()
        results: list[object] = []
        storage.createNode(makeNode("n")).addCallback(results.append)
        storage.storeItems("n", [makeItem("i")], 1, True).addCallback(results.append)
        storage.getItems("n").addCallback(results.append)
        failures: list[object] = []
        storage.getNode("nope").addErrback(failures.append)
        self.assertEqual(results[2], [makeItem("i")])
        self.assertEqual(len(results), 3)
        self.assertEqual(len(failures), 1)


class SQLiteStorageTests(StorageTestsMixin, PersistenceTestsMixin, TestCase):
    """
    The conformance and persistence tests against L{SQLiteStorage}, one fresh file per test.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.path = os.path.join(self.mktemp(), "sub", "hermod.sqlite")
        self.storage = SQLiteStorage(self.path, reactor)
        self.addCleanup(lambda: self.storage.stop())
        return self.storage.start()

    async def reopen(self) -> IStorage:
        await self.storage.stop()
        self.storage = SQLiteStorage(self.path, reactor)
        await self.storage.start()
        return self.storage

    def migrationVersions(self) -> list[int]:
        connection = sqlite3.connect(self.path)
        try:
            rows = connection.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall()
        finally:
            connection.close()
        return [row[0] for row in rows]

    def test_fileSettings(self) -> None:
        """
        The database file is created with its missing parent directory, in WAL mode.
        """
        self.assertTrue(os.path.isfile(self.path))
        connection = sqlite3.connect(self.path)
        try:
            [mode] = connection.execute("PRAGMA journal_mode").fetchone()
        finally:
            connection.close()
        self.assertEqual(mode, "wal")

    async def test_checkpointsOffTheWriter(self) -> None:
        """
        The write-ahead log is copied into the database by the storage's checkpointer, not by
        the writer's commits: the writer's automatic checkpoint is only a high safety net, and
        the database file takes the publishes' pages while the writer commits nothing more.
        """
        from hermod_component.storage import sqlite as sqliteModule

        storage = self.storage
        assert isinstance(storage, SQLiteStorage) and storage.checkpointer is not None
        pages = await storage._run(
            lambda cursor: cursor.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        self.assertEqual(pages, sqliteModule.WRITER_AUTOCHECKPOINT)
        await storage.createNode(Node("n", NodeConfig(), "o@x", 0.0))
        before = os.path.getsize(self.path)
        for n in range(50):  # 50 commits of a 2 KB item: far below the writer's own threshold
            await storage.storeItems("n", [Item(f"i{n}", b"<x>" + b"y" * 2000 + b"</x>")], None,
                                     True)
        done = storage.checkpointer.checkpoints
        for _ in range(100):
            if storage.checkpointer.checkpoints >= done + 2:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertGreaterEqual(storage.checkpointer.checkpoints, done + 2)
        self.assertGreater(os.path.getsize(self.path), before + 50 * 2000)
        await storage.stop()
        self.assertIsNone(storage.checkpointer)

    async def test_checkpointFailureLoggedOnce(self) -> None:
        """
        A checkpointer that cannot checkpoint logs it once, counts nothing, and stops at once
        when closed.
        """
        from hermod_component.storage.sqlite import Checkpointer

        directory = self.mktemp()
        os.makedirs(directory)
        checkpointer = Checkpointer(directory, reactor, interval=0.01)  # sqlite3 cannot open it
        await task.deferLater(reactor, 0.2, lambda: None)
        checkpointer.close()
        self.assertEqual(checkpointer.checkpoints, 0)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.Error)), 1)

    async def test_notStarted(self) -> None:
        """
        A storage that is not started fails its calls instead of hanging.
        """
        storage = SQLiteStorage(os.path.join(self.mktemp(), "x.sqlite"), reactor)
        await self.assertFails(storage.listNodes(), RuntimeError)
        await storage.stop()


_postgres: PostgresServer | None = None
_postgresSkip: BaseException | None = None


def sharedPostgres() -> PostgresServer:
    """
    The module's one PostgreSQL server, started on first use and stopped at exit (or the one
    named by C{HERMOD_TEST_POSTGRES_DSN}).
    """
    global _postgres, _postgresSkip
    if _postgresSkip is not None:
        raise _postgresSkip
    if _postgres is None:
        server = PostgresServer()
        try:
            server.start()
        except SkipTest as e:
            _postgresSkip = e
            raise
        atexit.register(server.stop)
        _postgres = server
    return _postgres


class PostgreSQLStorageTests(StorageTestsMixin, PersistenceTestsMixin, TestCase):
    """
    The conformance and persistence tests against L{PostgreSQLStorage} on a real server, one
    fresh database per test.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        server = sharedPostgres()
        name = "hermod_" + self.id().rsplit(".", 1)[-1].lower()[:40] + "_" + os.urandom(3).hex()
        self.dsn = server.createDatabase(name)
        self.addCleanup(server.dropDatabase, name)
        self.storage = PostgreSQLStorage(self.dsn, reactor)
        self.addCleanup(lambda: self.storage.stop())
        return self.storage.start()

    async def reopen(self) -> IStorage:
        await self.storage.stop()
        self.storage = PostgreSQLStorage(self.dsn, reactor)
        await self.storage.start()
        return self.storage

    def migrationVersions(self) -> list[int]:
        connection = psycopg2.connect(self.dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT version FROM schema_migrations ORDER BY version")
                rows = cursor.fetchall()
        finally:
            connection.close()
        return [row[0] for row in rows]

    async def test_concurrentStarts(self) -> None:
        """
        Two storages starting at once on one fresh database migrate it once, without errors.
        """
        name = "hermod_concurrent_" + os.urandom(3).hex()
        server = sharedPostgres()
        dsn = server.createDatabase(name)
        self.addCleanup(server.dropDatabase, name)
        first, second = PostgreSQLStorage(dsn, reactor), PostgreSQLStorage(dsn, reactor)
        self.addCleanup(first.stop)
        self.addCleanup(second.stop)
        await Deferred.fromCoroutine(_both(first.start(), second.start()))
        await first.createNode(makeNode("n"))
        self.assertEqual([n.identifier for n in await second.listNodes()], ["n"])
        self.assertEqual(len(self.migrationVersions()), len(set(self.migrationVersions())))


async def _both(a: Deferred[None], b: Deferred[None]) -> None:
    """
    Wait for two Deferreds that run at the same time.
    """
    await a
    await b


class MakeStorageTests(SynchronousTestCase):
    """
    Tests for L{makeStorage}.
    """

    def test_engines(self) -> None:
        """
        Each engine name gives its storage class, configured from the settings.
        """
        self.assertIsInstance(makeStorage(StorageSettings(engine="memory"), reactor), MemoryStorage)
        sqliteStorage = makeStorage(StorageSettings(engine="sqlite", path="/x/y.sqlite"), reactor)
        self.assertIsInstance(sqliteStorage, SQLiteStorage)
        assert isinstance(sqliteStorage, SQLiteStorage)
        self.assertEqual(sqliteStorage.path, "/x/y.sqlite")
        self.assertIsInstance(
            makeStorage(StorageSettings(engine="postgresql", dsn="dbname=x"), reactor),
            PostgreSQLStorage,
        )

    def test_unknownEngine(self) -> None:
        """
        An unknown engine is a L{ConfigError} naming C{storage.engine}.
        """
        error = self.assertRaises(
            ConfigError, makeStorage, StorageSettings(engine="mysql"), reactor
        )
        self.assertIn("storage.engine", str(error))
        self.assertIn("mysql", str(error))

    def test_postgresqlNeedsDSN(self) -> None:
        """
        PostgreSQL without a DSN is a L{ConfigError} naming C{storage.dsn}.
        """
        error = self.assertRaises(
            ConfigError, makeStorage, StorageSettings(engine="postgresql"), reactor
        )
        self.assertIn("storage.dsn", str(error))

    def test_psycopg2ImportedOnlyForPostgreSQL(self) -> None:
        """
        Making a SQLite or memory storage does not import psycopg2.
        """
        script = (
            "import sys\n"
            "from hermod_component.config import StorageSettings\n"
            "from hermod_component.storage import makeStorage\n"
            "makeStorage(StorageSettings(engine='sqlite', path='unused.sqlite'), None)\n"
            "makeStorage(StorageSettings(engine='memory'), None)\n"
            "print('psycopg2' in sys.modules)\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        output = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, check=True
        ).stdout
        self.assertEqual(output.strip(), "False")


class _FailingStorage(MemoryStorage):
    """
    A memory storage whose start fails, for the service tests.
    """

    stopped = False

    def start(self) -> Deferred[None]:
        return fail(RuntimeError("cannot open"))

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


class StorageServiceTests(SynchronousTestCase):
    """
    Tests for L{StorageService}.
    """

    def test_startAndStop(self) -> None:
        """
        Starting the service starts the storage and fires C{started} with C{True}; stopping
        returns the storage's stop Deferred.
        """
        service = StorageService(MemoryStorage())
        self.assertIsNone(service.started)
        service.startService()
        assert service.started is not None
        self.assertIs(self.successResultOf(service.started), True)
        self.assertTrue(service.running)
        self.assertIsNone(self.successResultOf(service.stopService()))
        self.assertFalse(service.running)

    def test_startFailureLogged(self) -> None:
        """
        A storage that fails to start is logged and C{started} fires with C{False}.
        """
        storage = _FailingStorage()
        service = StorageService(storage)
        service.startService()
        assert service.started is not None
        self.assertIs(self.successResultOf(service.started), False)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.successResultOf(service.stopService())
        self.assertTrue(storage.stopped)

    def test_fromSettings(self) -> None:
        """
        L{StorageService.fromSettings} wraps the engine the settings name.
        """
        service = StorageService.fromSettings(StorageSettings(engine="memory"), reactor)
        self.assertIsInstance(service.storage, MemoryStorage)


class CodecTests(SynchronousTestCase):
    """
    Tests for how node configurations are written to and read from their JSON column.
    """

    def test_unknownAndMissingKeys(self) -> None:
        """
        A stored configuration with keys this version does not know, and without keys it
        does, still reads: unknown keys are ignored, missing ones take their defaults.
        """
        config = configFromJSON('{"accessModel": "whitelist", "retiredOption": 3}')
        self.assertEqual(config, NodeConfig(accessModel=AccessModel.WHITELIST))

    def test_roundTrip(self) -> None:
        """
        A configuration written and read again is equal, enums included.
        """
        self.assertEqual(configFromJSON(configToJSON(FULL_CONFIG)), FULL_CONFIG)


class MigrationFilesTests(SynchronousTestCase):
    """
    Tests for the migration files and how they are read.
    """

    def test_splitStatements(self) -> None:
        """
        Comments (even ones holding semicolons) are dropped and statements split at
        semicolons.
        """
        script = "CREATE TABLE a (x INT); -- a comment; with a semicolon\nCREATE INDEX b ON a (x);\n"
        self.assertEqual(
            splitStatements(script), ["CREATE TABLE a (x INT)", "CREATE INDEX b ON a (x)"]
        )

    def test_bothDialectsHaveTheSameMigrations(self) -> None:
        """
        Every migration number exists for SQLite and PostgreSQL, numbered without gaps.
        """
        sqliteVersions = [m.version for m in loadMigrations("sqlite")]
        postgresqlVersions = [m.version for m in loadMigrations("postgresql")]
        self.assertEqual(sqliteVersions, postgresqlVersions)
        self.assertEqual(sqliteVersions, list(range(1, len(sqliteVersions) + 1)))
        for migration in loadMigrations("sqlite") + loadMigrations("postgresql"):
            self.assertTrue(migration.statements)
