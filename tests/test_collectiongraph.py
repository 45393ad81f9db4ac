"""
Tests for L{hermod_component.collectiongraph} and the XEP-0248 collection use cases of the
policy built on it: C{nodes} subscriptions, C{pubsub#collection} and C{pubsub#children}
associations, items through the graph and disco#items of a collection.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish

from hermod_component import errors
from hermod_component.collectiongraph import CollectionGraph, pathParentName, pathPrefixes
from hermod_component.config import PubSubSettings
from hermod_component.model import Node, NodeConfig, NodeType
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import RecordingNotifier, StubStreamManager
from hermod_component.xmpp.handler import FEATURES, makeHandlers
from hermod_component.xmpp.notifier import collectionEvent

T = TypeVar("T")

SERVICE = "pubsub.example.org"
OWNER = "owner@example.org/desk"
ALICE = "alice@example.org/phone"
BOB = "bob@other.example/laptop"
ENTRY = b'<entry xmlns="http://www.w3.org/2005/Atom"><title>Hello</title></entry>'
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = NS_PUBSUB + "#event"
NS_DATA = "jabber:x:data"
NS_RSM = "http://jabber.org/protocol/rsm"


def node(identifier: str, collection: bool = False, parents: tuple[str, ...] = ()) -> Node:
    """
    A node value for the graph: a leaf, or a collection, with associated parents.
    """
    nodeType = NodeType.COLLECTION if collection else NodeType.LEAF
    return Node(identifier, NodeConfig(nodeType=nodeType, collections=parents), "o@x", 0.0)


class PathTests(SynchronousTestCase):
    """
    Path prefixes of node names.
    """

    def test_prefixes(self) -> None:
        """
        A name's proper prefixes come nearest first with their distance; a top-level name
        has none, and a name without slashes is its own top.
        """
        self.assertEqual(pathPrefixes("/a/b/c"), [("/a/b", 1), ("/a", 2)])
        self.assertEqual(pathPrefixes("/a"), [])
        self.assertEqual(pathPrefixes("news"), [])
        self.assertEqual(pathParentName("/a/b/c"), "/a/b")
        self.assertIsNone(pathParentName("/a"))


class CollectionGraphTests(SynchronousTestCase):
    """
    Tests for L{CollectionGraph}.
    """

    def test_byPath(self) -> None:
        """
        A node is below the collections that prefix its path, at the levels between them;
        a leaf prefix is not a collection.
        """
        graph = CollectionGraph([node("/a", True), node("/a/b", True), node("/x")])
        self.assertEqual(graph.ancestors("/a/b/c/d"), (("/a/b", 2), ("/a", 3)))
        self.assertEqual(graph.ancestors("/a/z"), (("/a", 1),))
        self.assertEqual(graph.ancestors("/x/y"), ())
        self.assertEqual(graph.parents("/a/b/c/d"), ["/a/b"])

    def test_associationsAndShortestDepth(self) -> None:
        """
        Associations add collections one level up; a collection reachable two ways appears
        once, at its shortest depth, and collections above an associated one follow.
        """
        graph = CollectionGraph([
            node("/a", True), node("/a/b", True), node("/c", True, ("/a/b",)),
            node("/a/b/x/leaf", parents=("/c", "/a")),
        ])
        self.assertEqual(
            graph.ancestors("/a/b/x/leaf"), (("/a", 1), ("/c", 1), ("/a/b", 2))
        )
        self.assertEqual(graph.parents("/a/b/x/leaf"), ["/a/b", "/c", "/a"])
        self.assertEqual(graph.associatedChildren("/a/b"), ["/c"])

    def test_associationToALeafIgnored(self) -> None:
        """
        An association naming a node that is not a collection holds nothing.
        """
        graph = CollectionGraph([node("/l"), node("/c", True), node("/n", parents=("/l",))])
        self.assertEqual(graph.ancestors("/n"), ())

    def test_cycles(self) -> None:
        """
        A collection above itself, through a path or associations, is in a cycle; the
        ancestors of its members are still finite.
        """
        graph = CollectionGraph([node("/a", True), node("/a/b", True)])
        self.assertFalse(graph.inCycle("/a/b"))
        trial = graph.copy()
        trial.update(node("/a", True, ("/a/b",)))
        self.assertTrue(trial.inCycle("/a"))
        self.assertFalse(graph.inCycle("/a"), "the copy is independent")
        self.assertEqual(dict(trial.ancestors("/a/b/leaf")), {"/a/b": 1, "/a": 2})
        trial = graph.copy()
        trial.associate("/a", "/a")
        self.assertTrue(trial.inCycle("/a"))

    def test_updateAndRemove(self) -> None:
        """
        Configuring and removing nodes changes the answers (the cache is dropped); a removed
        collection disappears from its associated children too.
        """
        graph = CollectionGraph([node("/c", True), node("/n", parents=("/c",))])
        self.assertEqual(graph.ancestors("/n"), (("/c", 1),))
        graph.update(node("/n"))
        self.assertEqual(graph.ancestors("/n"), ())
        graph.update(node("/n", parents=("/c",)))
        graph.remove("/c")
        self.assertEqual(graph.associatedParents("/n"), ())
        self.assertTrue(graph.empty)
        self.assertEqual(graph.ancestors("/n"), ())


class PolicyTestCase(SynchronousTestCase):
    """
    A policy on memory storage with a recording notifier, and a tree of nodes:
    collections C{/a}, C{/a/b}, C{/e}; leaves C{/a/x}, C{/a/b/y}, C{/e/leaf}, C{/far/leaf}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.storage = MemoryStorage()
        self.policy = PubSubPolicy(self.storage, PubSubSettings(), SERVICE, self.clock)
        self.notifier = RecordingNotifier()
        self.policy.notifier = self.notifier
        for name in ("/a", "/a/b", "/e"):
            self.create(name, node_type="collection")
        for name in ("/a/x", "/a/b/y", "/e/leaf", "/far/leaf"):
            self.create(name)

    def result(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """
        The result of a policy coroutine that completes without the reactor.
        """
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def fails(self, coroutine: Coroutine[Any, Any, object], error: type[Exception]) -> Exception:
        """
        The domain error a policy coroutine fails with.
        """
        return self.failureResultOf(Deferred.fromCoroutine(coroutine), error).value

    def create(self, name: str, who: str = OWNER, **options: str | list[str]) -> None:
        """
        Create C{name} with C{pubsub#} options (a list for a C{text-multi}).
        """
        values = {
            f"pubsub#{k}": v if isinstance(v, list) else [v] for k, v in options.items()
        }
        self.result(self.policy.createNode(who, name, values))

    def configure(self, name: str, who: str = OWNER, **options: str | list[str]) -> None:
        """
        Submit C{pubsub#} configuration options for C{name}.
        """
        values = {
            f"pubsub#{k}": v if isinstance(v, list) else [v] for k, v in options.items()
        }
        self.result(self.policy.configure(who, name, values))

    def subscribe(self, who: str, name: str, kind: str = "items", depth: str = "1") -> None:
        """
        Subscribe C{who} to collection C{name} with a subscription type and depth.
        """
        self.result(self.policy.subscribe(who, name, who, {
            "pubsub#subscription_type": [kind], "pubsub#subscription_depth": [depth],
        }))

    def changes(self) -> list[tuple[str, str, bool, list[str]]]:
        """
        The C{collectionChanged} calls so far as C{(collection, node, associated, JIDs)}.
        """
        return [
            (c["collection"], c["node"], c["associated"], sorted(j for j, _ in c["recipients"]))
            for kind, c in self.notifier.calls
            if kind == "collectionChanged"
        ]

    def deliveries(self) -> list[tuple[str, str, list[str], list[str]]]:
        """
        The publish notifications as C{(leaf, item id, JIDs, Collection headers)}.
        """
        return [
            (
                c["node"], item.itemId, sorted(j for j, _ in c["recipients"]),
                [v for n, v in item.headers if n == "Collection"],
            )
            for kind, c in self.notifier.calls
            if kind == "publish"
            for item in c["items"]
        ]


class NodesSubscriptionTests(PolicyTestCase):
    """
    C{nodes} subscriptions are told of nodes joining and leaving a collection.
    """

    def test_createAndDeleteBelow(self) -> None:
        """
        A depth C{all} nodes subscriber of C{/a} is told when C{/a/b/c} is created and
        deleted; a depth 1 one only of direct children; items subscribers never.
        """
        self.subscribe(ALICE, "/a", "nodes", "all")
        self.subscribe(BOB, "/a", "nodes")
        self.subscribe(OWNER, "/a", "items", "all")
        self.create("/a/b/c")
        self.create("/a/direct")
        self.result(self.policy.deleteNode(OWNER, "/a/b/c", None))
        self.assertEqual(self.changes(), [
            ("/a", "/a/b/c", True, [ALICE]),
            ("/a", "/a/direct", True, sorted([ALICE, BOB])),
            ("/a", "/a/b/c", False, [ALICE]),
        ])

    def test_nodesSubscriberGetsNoItems(self) -> None:
        """
        Items published below a collection do not go to its nodes subscribers.
        """
        self.subscribe(ALICE, "/a", "nodes", "all")
        self.result(self.policy.publish(OWNER, "/a/b/y", [("i", ENTRY)], None))
        self.assertEqual(self.deliveries(), [])

    def test_configurationOfANodeWithin(self) -> None:
        """
        A node's configuration change goes to the nodes subscribers of the collections above
        it when its C{notify_config} is on, and not otherwise.
        """
        self.subscribe(ALICE, "/a", "nodes", "all")
        self.subscribe(BOB, "/a", "items", "all")
        self.configure("/a/b/y", title="quiet")
        self.configure("/a/b/y", notify_config="1", title="told")
        calls = [
            c for kind, c in self.notifier.calls if kind == "configuration" and c["recipients"]
        ]
        self.assertEqual([[j for j, _ in c["recipients"]] for c in calls], [[ALICE]])
        self.assertEqual(calls[0]["node"], "/a/b/y")
        self.assertEqual(calls[0]["config"].title, "told")
        self.assertEqual(calls[0]["config"].collections, ("/a/b",))

    def test_associationNotified(self) -> None:
        """
        Associating a node with a collection tells that collection's nodes subscribers of an
        associate, dissociating it of a dissociate.
        """
        self.subscribe(ALICE, "/e", "nodes")
        self.configure("/far/leaf", collection=["/e"])
        self.configure("/far/leaf", collection=[])
        self.assertEqual(self.changes(), [
            ("/e", "/far/leaf", True, [ALICE]), ("/e", "/far/leaf", False, [ALICE]),
        ])


class RetractAndPurgeThroughCollectionsTests(PolicyTestCase):
    """
    Items subscribers of a collection are told of retracts and purges below it (XEP-0248
    subscribe: items published, retracted, or the node purged), tagged with the collection.
    """

    def nodeEvents(self, kind: str) -> list[tuple[str, list[str], tuple[tuple[str, str], ...]]]:
        """
        The C{kind} notifications that reached anyone, as C{(leaf, JIDs, headers)}.
        """
        return [
            (c["node"], sorted(j for j, _ in c["recipients"]), c["headers"])
            for k, c in self.notifier.calls
            if k == kind and c["recipients"]
        ]

    def test_retractReachesItemsSubscribers(self) -> None:
        """
        A retract on C{/a/b/y} goes to the depth C{all} items subscriber of C{/a} with the
        C{Collection} header, not to a depth 1 one nor to a nodes subscriber.
        """
        self.subscribe(ALICE, "/a", depth="all")
        self.subscribe(BOB, "/a")
        self.subscribe(OWNER, "/a", "nodes", "all")
        self.result(self.policy.publish(OWNER, "/a/b/y", [("i", ENTRY)], None))
        self.result(self.policy.retract(OWNER, "/a/b/y", ["i"], False))
        self.assertEqual(
            self.nodeEvents("retract"), [("/a/b/y", [ALICE], (("Collection", "/a"),))]
        )

    def test_purgeReachesItemsSubscribers(self) -> None:
        """
        A purge of C{/a/x} goes to the depth 1 items subscriber of C{/a}, tagged with it.
        """
        self.subscribe(BOB, "/a")
        self.result(self.policy.publish(OWNER, "/a/x", [("i", ENTRY)], None))
        self.result(self.policy.purge(OWNER, "/a/x"))
        self.assertEqual(
            self.nodeEvents("purge"), [("/a/x", [BOB], (("Collection", "/a"),))]
        )

    def test_headerFiltersDoNotHoldBackNodeEvents(self) -> None:
        """
        Like the leaf's own subscribers, a filtered collection subscriber is told of every
        retract, whatever its header filter.
        """
        self.result(self.policy.subscribe(ALICE, "/a", ALICE, {
            "pubsub#subscription_depth": ["all"], "hermod#header_filter": ["k=v"],
        }))
        self.result(self.policy.publish(OWNER, "/a/b/y", [("i", ENTRY)], None))
        self.result(self.policy.retract(OWNER, "/a/b/y", ["i"], True))
        self.assertEqual(
            self.nodeEvents("retract"), [("/a/b/y", [ALICE], (("Collection", "/a"),))]
        )


class AssociationTests(PolicyTestCase):
    """
    C{pubsub#collection} and C{pubsub#children} (XEP-0248 configure-collection).
    """

    def test_itemsThroughAnAssociation(self) -> None:
        """
        A leaf associated with a collection elsewhere delivers its items to that collection's
        items subscribers, tagged with it; those of the collection above by path too.
        """
        self.subscribe(ALICE, "/e")
        self.subscribe(BOB, "/a", depth="all")
        self.configure("/a/b/y", collection=["/a/b", "/e"])
        self.result(self.policy.publish(OWNER, "/a/b/y", [("i", ENTRY)], None))
        self.assertEqual(sorted(self.deliveries()), [
            ("/a/b/y", "i", [ALICE], ["/e"]),
            ("/a/b/y", "i", [BOB], ["/a"]),
        ])

    def test_oncePerCollection(self) -> None:
        """
        A collection reachable by path and by association gets each item once, at the
        shorter depth: a depth 1 subscriber of C{/a} gets C{/a/b/y}'s items once associated.
        """
        self.subscribe(ALICE, "/a")
        self.result(self.policy.publish(OWNER, "/a/b/y", [("before", ENTRY)], None))
        self.configure("/a/b/y", collection=["/a"])
        self.result(self.policy.publish(OWNER, "/a/b/y", [("after", ENTRY)], None))
        self.assertEqual(self.deliveries(), [("/a/b/y", "after", [ALICE], ["/a"])])

    def test_depthAlongTheGraph(self) -> None:
        """
        Depth counts along associations: a leaf associated with C{/e}, itself associated with
        C{/a}, is two levels below C{/a}.
        """
        self.subscribe(ALICE, "/a")
        self.subscribe(BOB, "/a", depth="all")
        self.configure("/e", collection=["/a"])
        self.result(self.policy.publish(OWNER, "/e/leaf", [("i", ENTRY)], None))
        self.assertEqual(self.deliveries(), [("/e/leaf", "i", [BOB], ["/a"])])

    def test_formShowsTheGraph(self) -> None:
        """
        The configuration form shows every collection holding a node and every node in a
        collection, on both sides of an association; submitting it back changes nothing.
        """
        self.configure("/far/leaf", collection=["/a"])
        leaf = self.result(self.policy.getConfiguration(OWNER, "/far/leaf"))
        self.assertEqual(leaf.collections, ("/a",))
        collection = self.result(self.policy.getConfiguration(OWNER, "/a"))
        self.assertEqual(collection.children, ("/a/b", "/a/x", "/far/leaf"))
        self.assertEqual(
            self.result(self.policy.getConfiguration(OWNER, "/a/b/y")).collections, ("/a/b",)
        )
        self.configure("/a", children=list(collection.children))
        self.configure("/a/b/y", collection=["/a/b"])
        stored = self.successResultOf(self.storage.getNode("/a/b/y"))
        self.assertEqual(stored.config.collections, ())
        self.assertEqual(self.successResultOf(self.storage.getNode("/far/leaf")).config.collections,
                         ("/a",))
        self.assertEqual(self.successResultOf(self.storage.getNode("/a")).config.children, ())

    def test_children(self) -> None:
        """
        C{pubsub#children} of a collection associates the nodes named and dissociates those
        left out, storing the association on the child's side.
        """
        self.subscribe(ALICE, "/e", "nodes")
        self.configure("/e", children=["/e/leaf", "/far/leaf", "/a/x"])
        self.assertEqual(
            self.successResultOf(self.storage.getNode("/far/leaf")).config.collections, ("/e",)
        )
        self.configure("/e", children=["/far/leaf"])
        self.assertEqual(self.successResultOf(self.storage.getNode("/a/x")).config.collections, ())
        self.assertEqual(self.changes(), [
            ("/e", "/a/x", True, [ALICE]), ("/e", "/far/leaf", True, [ALICE]),
            ("/e", "/a/x", False, [ALICE]),
        ])
        self.configure("/e", title="no children field")
        self.assertEqual(
            self.successResultOf(self.storage.getNode("/far/leaf")).config.collections, ("/e",)
        )

    def test_createWithAssociations(self) -> None:
        """
        A node may be created in a collection, and a collection with children.
        """
        self.subscribe(ALICE, "/e", "nodes")
        self.create("/new/leaf", collection=["/e"])
        self.create("/new/coll", node_type="collection", children=["/far/leaf"])
        self.assertEqual(
            self.successResultOf(self.storage.getNode("/far/leaf")).config.collections, ("/new/coll",)
        )
        self.assertEqual(self.changes(), [("/e", "/new/leaf", True, [ALICE])])

    def test_errors(self) -> None:
        """
        A leaf as collection, children on a leaf and cycles are not-allowed (invalid-options);
        an unknown node is item-not-found; adding to another's collection is forbidden.
        """
        cases = [
            (self.policy.configure(OWNER, "/far/leaf", {"pubsub#collection": ["/a/x"]}),
             errors.InvalidCollection),
            (self.policy.configure(OWNER, "/far/leaf", {"pubsub#children": ["/a/x"]}),
             errors.InvalidCollection),
            (self.policy.configure(OWNER, "/a", {"pubsub#collection": ["/a/b"]}),
             errors.InvalidCollection),
            (self.policy.configure(OWNER, "/a", {"pubsub#collection": ["/a"]}),
             errors.InvalidCollection),
            (self.policy.configure(OWNER, "/a/b", {"pubsub#children": ["/a"]}),
             errors.InvalidCollection),
            (self.policy.configure(OWNER, "/far/leaf", {"pubsub#collection": ["/nope"]}),
             errors.ItemNotFound),
            (self.policy.configure(OWNER, "/e", {"pubsub#children": ["/nope"]}),
             errors.ItemNotFound),
            (self.policy.createNode(OWNER, "/n", {"pubsub#collection": ["/nope"]}),
             errors.ItemNotFound),
        ]
        for coroutine, error in cases:
            self.fails(coroutine, error)
        self.failureResultOf(self.storage.getNode("/n"), errors.NodeNotFound)
        self.create("/mine", who=ALICE)
        self.fails(
            self.policy.configure(ALICE, "/mine", {"pubsub#collection": ["/e"]}),
            errors.Forbidden,
        )
        self.assertEqual(
            self.successResultOf(self.storage.getNode("/far/leaf")).config.collections, ()
        )

    def test_deleteRemovesAssociations(self) -> None:
        """
        Deleting a collection removes it from the stored associations of its children;
        deleting an associated node tells its collection's nodes subscribers.
        """
        self.subscribe(ALICE, "/e", "nodes")
        self.configure("/far/leaf", collection=["/e"])
        self.result(self.policy.deleteNode(OWNER, "/far/leaf", None))
        self.configure("/a/x", collection=["/e"])
        self.result(self.policy.deleteNode(OWNER, "/e", None))
        self.assertEqual(self.successResultOf(self.storage.getNode("/a/x")).config.collections, ())
        self.assertEqual(self.changes(), [
            ("/e", "/far/leaf", True, [ALICE]), ("/e", "/far/leaf", False, [ALICE]),
            ("/e", "/a/x", True, [ALICE]),
        ])

    def test_anotherInstanceAssociates(self) -> None:
        """
        An association another instance made counts once that instance says the node changed.
        """
        self.subscribe(ALICE, "/e")
        self.result(self.policy.publish(OWNER, "/far/leaf", [("1", ENTRY)], None))
        other = PubSubPolicy(self.storage, PubSubSettings(), SERVICE, self.clock)
        self.result(other.configure(OWNER, "/far/leaf", {"pubsub#collection": ["/e"]}))
        self.policy.forget("/far/leaf")
        self.result(self.policy.publish(OWNER, "/far/leaf", [("2", ENTRY)], None))
        self.assertEqual(self.deliveries(), [("/far/leaf", "2", [ALICE], ["/e"])])

    def test_listChildren(self) -> None:
        """
        The nodes of a collection are those one path level below and those associated with
        it, with titles; a leaf has none.
        """
        self.configure("/far/leaf", collection=["/a"], title="Far")
        self.create("/a/b/deep")
        self.assertEqual(
            self.result(self.policy.listNodes(OWNER, "/a")),
            [("/a/b", ""), ("/a/x", ""), ("/far/leaf", "Far")],
        )
        self.assertEqual(self.result(self.policy.listNodes(OWNER, "/a/x")), [])

    def test_publishOutsideCollectionsListsNoNodes(self) -> None:
        """
        Publishing reads the node list once for the graph, not once per publish.
        """
        calls = []
        listNodes = self.storage.listNodes

        def counted() -> Deferred[list[Node]]:
            calls.append(1)
            return listNodes()

        self.storage.listNodes = counted  # type: ignore[method-assign]
        policy = PubSubPolicy(self.storage, PubSubSettings(), SERVICE, self.clock)
        policy.notifier = self.notifier
        for n in range(20):
            self.result(policy.publish(OWNER, "/far/leaf", [(str(n), ENTRY)], None))
            self.result(policy.publish(OWNER, "/a/x", [(str(n), ENTRY)], None))
        self.assertEqual(len(calls), 1)


class EdgeTests(SynchronousTestCase):
    """
    The collection use cases through the XMPP handlers, with the real policy on memory storage.
    """

    def setUp(self) -> None:
        self.policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), SERVICE, Clock())
        self.manager = StubStreamManager()
        for handler in makeHandlers(self.policy):
            handler.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream
        self.counter = 0

    def iq(self, sender: str, iqType: str, xml: str) -> tuple[domish.Element, list[domish.Element]]:
        """
        Send an IQ; return its response and the messages sent before it.
        """
        self.counter += 1
        self.stream.clear()
        self.stream.receive(
            f"<iq type='{iqType}' from='{sender}' to='{SERVICE}' id='r{self.counter}'>{xml}</iq>"
        )
        response = [s for s in self.stream.sent if s.name == "iq"][-1]
        return response, [s for s in self.stream.sent if s.name == "message"]

    def create(self, name: str, fields: dict[str, list[str]]) -> domish.Element:
        """
        Create C{name} with a node configuration form; the response.
        """
        values = "".join(
            f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in vs) + "</field>"
            for var, vs in fields.items()
        )
        response, _ = self.iq(
            OWNER, "set",
            f"<pubsub xmlns='{NS_PUBSUB}'><create node='{name}'/><configure>"
            f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_PUBSUB}#node_config</value></field>{values}</x></configure></pubsub>",
        )
        return response

    def test_associateOnTheWire(self) -> None:
        """
        A nodes subscriber gets C{<collection node><associate node/></collection>} in a
        pubsub event message when a node is created below.
        """
        self.create("/a", {"pubsub#node_type": ["collection"]})
        subscribed, _ = self.iq(
            ALICE, "set", f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='/a' jid='{ALICE}'/>"
                f"<options><x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS_PUBSUB}#subscribe_options</value></field>"
                "<field var='pubsub#subscription_type'><value>nodes</value></field>"
                "</x></options></pubsub>")
        self.assertEqual(subscribed["type"], "result", subscribed.toXml())
        response, messages = self.iq(
            OWNER, "set", f"<pubsub xmlns='{NS_PUBSUB}'><create node='/a/b'/></pubsub>"
        )
        self.assertEqual(response["type"], "result")
        (message,) = messages
        self.assertEqual(message["to"], ALICE)
        (event,) = list(message.elements(NS_EVENT, "event"))
        (collection,) = list(event.elements(NS_EVENT, "collection"))
        self.assertEqual(collection["node"], "/a")
        (associate,) = list(collection.elements(NS_EVENT, "associate"))
        self.assertEqual(associate["node"], "/a/b")
        self.assertIn(b"<dissociate node=\"/a/b\"/>", collectionEvent("/a", "/a/b", False))

    def test_errorCondition(self) -> None:
        """
        A leaf named as a collection is answered not-allowed with invalid-options.
        """
        self.create("/leaf", {})
        response = self.create("/n", {"pubsub#collection": ["/leaf"]})
        self.assertEqual(response["type"], "error")
        (error,) = [c for c in response.elements() if c.name == "error"]
        self.assertEqual(
            sorted(c.name for c in error.elements() if c.name != "text"),
            ["invalid-options", "not-allowed"],
        )

    def test_discoItemsOfACollection(self) -> None:
        """
        disco#items of a collection lists its children, paged with RSM.
        """
        self.create("/a", {"pubsub#node_type": ["collection"]})
        for name in ("/a/one", "/a/two", "/a/three", "/a/two/deep"):
            self.create(name, {})
        self.create("/far", {"pubsub#collection": ["/a"]})
        response, _ = self.iq(
            ALICE, "get", "<query xmlns='http://jabber.org/protocol/disco#items' node='/a'/>"
        )
        self.assertEqual(
            [c["node"] for c in response.query.elements() if c.name == "item"],
            ["/a/one", "/a/three", "/a/two", "/far"],
        )
        response, _ = self.iq(
            ALICE, "get",
            "<query xmlns='http://jabber.org/protocol/disco#items' node='/a'>"
            f"<set xmlns='{NS_RSM}'><max>2</max><after>/a/one</after></set></query>",
        )
        self.assertEqual(
            [c["node"] for c in response.query.elements() if c.name == "item"],
            ["/a/three", "/a/two"],
        )
        (rsmSet,) = list(response.query.elements(NS_RSM, "set"))
        self.assertEqual(str(rsmSet.count), "4")

    def test_configureFormShowsTheGraph(self) -> None:
        """
        The configuration form of a collection carries C{pubsub#children}, that of a leaf
        C{pubsub#collection}, as text-multi fields.
        """
        self.create("/a", {"pubsub#node_type": ["collection"]})
        self.create("/far", {"pubsub#collection": ["/a"]})
        response, _ = self.iq(
            OWNER, "get",
            f"<pubsub xmlns='{NS_PUBSUB}#owner'><configure node='/a'/></pubsub>",
        )
        fields = {
            f["var"]: (f.getAttribute("type"), [str(v) for v in f.elements(NS_DATA, "value")])
            for f in response.pubsub.configure.x.elements(NS_DATA, "field")
        }
        self.assertEqual(fields["pubsub#children"], ("text-multi", ["/far"]))
        self.assertEqual(fields["pubsub#collection"], ("text-multi", []))

    def test_multiCollectionAdvertised(self) -> None:
        """
        The service advertises that a leaf may be in several collections.
        """
        self.assertIn("multi-collection", FEATURES)
        self.assertIn("multi-collections", FEATURES)
        self.assertIn("collections", FEATURES)
