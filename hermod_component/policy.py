"""
The pubsub policy: who may do what on which node, what is stored, and who is told.

L{PubSubPolicy} is called by the XMPP edge with plain values (JIDs as strings, payloads as
bytes) and answers with model values or domain errors. It never sees XML. Notifications are
handed to an L{INotifier} only after the storage write has committed.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from zope.interface import implementer

from hermod_component import errors
from hermod_component.collectiongraph import CollectionGraph
from hermod_component.collectionpolicy import NODES_SUBSCRIPTION, CollectionUseCases
from hermod_component.config import PubSubSettings
from hermod_component.interfaces import INotifier, IPubSubPolicy, IStorage
from hermod_component.jsonpayload import isJSONPayload
from hermod_component.lifecycle import SubscriptionLifecycle
from hermod_component.model import (
    AccessModel,
    Affiliation,
    ArchivePage,
    ArchiveQuery,
    Item,
    Node,
    NodeConfig,
    NodeMetaData,
    NodeType,
    PublishModel,
    SendLastPublished,
    Subscription,
    SubscriptionState,
)
from hermod_component.nodeoptions import (
    HEADER_FILTER,
    PUBLISH_HEADERS,
    SUBSCRIPTION_DEPTH,
    SUBSCRIPTION_TYPE,
    ServiceLimits,
    Values,
    checkPreconditions,
    configFromValues,
    headerKeys,
    splitPublishHeaders,
    subscriptionOptionsFromValues,
    wantsDelivery,
)
from hermod_component.presence import PresenceState
from hermod_component.subscriptionoptions import (
    DeliveryMode,
    RecipientList,
    deliveryMode,
    directRecipient,
)

Recipients = list[tuple[str, Sequence[str]]]

#: The SubIDs of a recipient whose notification names none: one shared empty tuple, so that a
#: fan-out waiting to be written (see L{hermod_component.xmpp.flow}) holds one small tuple per
#: recipient and no list.
_NO_SUBIDS: tuple[str, ...] = ()
#: XEP-0131 SHIM headers of an item, C{(name, value)} in order.
Headers = tuple[tuple[str, str], ...]
#: What a publish hands the policy per item: its id (or L{None}) and payload, optionally with
#: the SHIM headers the publisher attached.
PublishedItem = tuple[str | None, bytes] | tuple[str | None, bytes, Headers]
_ITEMS = ("items",)
_ALL = ("all",)

#: Affiliations that may publish under the C{publishers} model.
_PUBLISHERS = frozenset({Affiliation.OWNER, Affiliation.PUBLISHER, Affiliation.PUBLISH_ONLY})
#: Affiliations that pass a whitelist and skip authorization.
_MEMBERS = frozenset({Affiliation.OWNER, Affiliation.PUBLISHER, Affiliation.MEMBER})


@functools.lru_cache(maxsize=65536)
def bareJID(entity: str) -> str:
    """
    The bare form C{user@host} of a JID string.

    @raise errors.BadRequest: C{entity} is not a valid JID.
    """
    try:
        return JID(entity).userhost()
    except (InvalidFormat, RuntimeError) as e:
        raise errors.BadRequest(f"malformed JID {entity!r}: {e}") from None


@functools.lru_cache(maxsize=65536)
def normalizeJID(entity: str) -> str:
    """
    The normalized (stringprep'd) form of a JID string.

    @raise errors.BadRequest: C{entity} is not a valid JID.
    """
    try:
        return JID(entity).full()
    except (InvalidFormat, RuntimeError) as e:
        raise errors.BadRequest(f"malformed JID {entity!r}: {e}") from None


@attrs.define
class _NodeState:
    """
    The cached state of one node: what every request on it consults.
    """

    node: Node
    affiliations: dict[str, Affiliation]
    subscriptions: list[Subscription]
    #: The presence of subscribers, for C{pubsub#show-values}; L{None} without presence.
    presence: PresenceState | None = None
    _modes: dict[str, DeliveryMode] | None = attrs.field(default=None, init=False, repr=False)
    _multi: frozenset[str] | None = attrs.field(default=None, init=False, repr=False)
    _indexOf: list[Subscription] | None = attrs.field(default=None, init=False, repr=False)
    _filtered: bool = attrs.field(default=False, init=False, repr=False)
    _plainRecipients: dict[tuple[int, tuple[str]], Recipients] = attrs.field(
        factory=dict, init=False, repr=False
    )

    def _index(self) -> None:
        """
        Recompute L{deliveryModes} and L{multiSubscribers} when the subscription list has been
        replaced (every change replaces it).
        """
        if self._indexOf is self.subscriptions:
            return
        modes = {}
        seen: set[str] = set()
        multi: set[str] = set()
        filtered = False
        for s in self.subscriptions:
            mode = deliveryMode(s.options)
            if mode is not None:
                modes[s.subscriptionId] = mode
            if s.subscriber in seen:
                multi.add(s.subscriber)
            seen.add(s.subscriber)
            if s.options.get(HEADER_FILTER):
                filtered = True
        self._filtered = filtered
        self._plainRecipients = {}
        self._modes = modes or None
        self._multi = frozenset(multi) or None
        self._indexOf = self.subscriptions

    def deliveryModes(self) -> dict[str, DeliveryMode] | None:
        """
        The L{DeliveryMode} of each subscription (by SubID) that has one; L{None} when none
        has, which is what keeps plain subscriptions off any extra work.
        """
        self._index()
        return self._modes

    def multiSubscribers(self) -> frozenset[str] | None:
        """
        The JIDs holding several subscriptions to the node (their notifications name the
        SubIDs they are for, XEP-0060 12.20); L{None} when there is none.
        """
        self._index()
        return self._multi

    def affiliationOf(self, bare: str) -> Affiliation:
        return self.affiliations.get(bare, Affiliation.NONE)

    def subscriptionsOf(self, entity: str) -> list[Subscription]:
        """
        Subscriptions whose subscriber is exactly C{entity}.
        """
        return [s for s in self.subscriptions if s.subscriber == entity]

    def subscriptionsOfBare(self, bare: str) -> list[Subscription]:
        return [s for s in self.subscriptions if bareJID(s.subscriber) == bare]

    def recipients(
        self, headers: Headers | None = None, depth: int = 0, kind: tuple[str] = _ITEMS
    ) -> Recipients:
        """
        Who receives notifications: subscribed, delivery on, and (for items) a header filter
        that C{headers} satisfy; SubIDs named when a JID holds several subscriptions.

        @param headers: The SHIM headers shared by the items notified: a subscription with a
            C{hermod#header_filter} gets them only when they carry every C{name=value} of it.
            L{None} for node events (retract, purge, delete, configuration), which go to every
            subscriber whatever its filter.
        @param depth: For items of a leaf below this collection node, how many levels below
            (1 for a direct child): only C{items} subscriptions reaching that deep (XEP-0248
            C{pubsub#subscription_type} and C{pubsub#subscription_depth}) get them. 0 for the
            node's own events.
        @param kind: With C{depth}, the C{pubsub#subscription_type} served: C{("items",)}
            for items of the leaves below, C{("nodes",)} for nodes joining or leaving.

        @return: The recipients; callers must not change the list. While no subscription has
            a header filter or a delivery mode, it is computed once per subscription change
            and shared by every notification (a firehose node's fan-outs waiting to be
            written then share one list).
        """
        self._index()
        if self._modes is None and not self._filtered:
            key = (depth, kind)
            cached = self._plainRecipients.get(key)
            if cached is None:
                cached = self._plainRecipients[key] = self._recipients(headers, depth, kind)
            return cached
        return self._recipients(headers, depth, kind)

    def _recipients(
        self, headers: Headers | None, depth: int, kind: tuple[str]
    ) -> Recipients:
        keys: frozenset[str] | None = None
        byJID: dict[str, list[str]] = {}
        modes = self.deliveryModes()
        special: dict[str, list[tuple[str, DeliveryMode]]] = {}
        for s in self.subscriptions:
            if s.state is SubscriptionState.SUBSCRIBED and wantsDelivery(s.options):
                if depth and (
                    s.options.get(SUBSCRIPTION_TYPE, _ITEMS) != kind
                    or (depth > 1 and s.options.get(SUBSCRIPTION_DEPTH) != _ALL)
                ):
                    continue
                wanted = s.options.get(HEADER_FILTER)
                if wanted and headers is not None:
                    if keys is None:
                        keys = headerKeys(headers)
                    if not keys.issuperset(wanted):
                        continue
                if modes is not None and s.subscriptionId in modes:
                    special.setdefault(s.subscriber, []).append(
                        (s.subscriptionId, modes[s.subscriptionId])
                    )
                    continue
                byJID.setdefault(s.subscriber, []).append(s.subscriptionId)
        if special:
            return self._withModes(byJID, special)
        multi = self.multiSubscribers()
        if multi is None:
            return [(j, _NO_SUBIDS) for j in byJID]
        return [(j, subids if j in multi else _NO_SUBIDS) for j, subids in byJID.items()]

    def _withModes(
        self, byJID: dict[str, list[str]], special: dict[str, list[tuple[str, DeliveryMode]]]
    ) -> RecipientList:
        """
        The recipients when some matching subscriptions have a L{DeliveryMode}: those whose
        C{pubsub#show-values} the subscriber's presence does not meet are left out, digest
        subscriptions go to the digest entries, the others join their JID's message (with a
        body if one of them asks for it).
        """
        result = RecipientList()
        for jid, entries in special.items():
            for subscriptionId, mode in entries:
                if (
                    mode.shows is not None
                    and self.presence is not None
                    and not mode.shows & self.presence.shows(jid)
                ):
                    continue
                if mode.digestFrequency is not None:
                    result.digests.append((jid, subscriptionId, mode.digestFrequency))
                    continue
                byJID.setdefault(jid, []).append(subscriptionId)
                if mode.includeBody:
                    result.bodies.add(jid)
        multi = self.multiSubscribers() or frozenset()
        result.extend((j, subids if j in multi else _NO_SUBIDS) for j, subids in byJID.items())
        return result


def _byHeaders(items: Sequence[Item]) -> list[list[Item]]:
    """
    The items in groups of equal SHIM headers, each group in publish order.
    """
    groups: dict[Headers, list[Item]] = {}
    for item in items:
        groups.setdefault(item.headers, []).append(item)
    return list(groups.values())


def _matches(subscription: Subscription, item: Item) -> bool:
    """
    Whether one subscription wants notification of C{item}: delivery on and its header filter
    (if any) satisfied; the single-subscription form of L{_NodeState.recipients}.
    """
    state = _NodeState(Node("", NodeConfig(), "", 0.0), {}, [subscription])
    return bool(state.recipients(item.headers))


def _maxOf(*values: int | None) -> int | None:
    given = [v for v in values if v is not None]
    return max(given) if given else None


def _minOf(*values: int | None) -> int | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None


class TokenBuckets:
    """
    Per-key token buckets: C{rate} tokens a second, at most C{burst} saved up.

    Buckets that are full again are forgotten, so memory follows the active publishers only.
    """

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        """
        Take one token from C{key}'s bucket; C{False} if it is empty.
        """
        now = self.clock.seconds()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        tokens -= 1.0
        if len(self._buckets) > 10_000:
            self._forgetFull(now)
        self._buckets[key] = (tokens, now)
        return True

    def _forgetFull(self, now: float) -> None:
        for key, (tokens, stamp) in list(self._buckets.items()):
            if tokens + (now - stamp) * self.rate >= self.burst:
                del self._buckets[key]


class _NullNotifier:
    """
    Stands in until the XMPP edge attaches itself; it only logs.
    """

    log = Logger()

    def __getattr__(self, name: str) -> object:
        def drop(*args: object, **kwargs: object) -> None:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "No XMPP stream: {kind} notification dropped", kind=name
            )

        return drop


@implementer(IPubSubPolicy)
class PubSubPolicy(CollectionUseCases):
    """
    The XEP-0060 rules of Hermod's pubsub service.

    The policy keeps the state of the nodes it has touched (configuration, affiliations,
    subscriptions) in memory, so a publish costs one storage transaction. Every change goes
    through the policy, which updates the cache after storage has committed.

    @ivar notifier: Where notifications go; the XMPP edge sets it.
    """

    log = Logger()

    def __init__(
        self,
        storage: IStorage,
        settings: PubSubSettings,
        service: str,
        clock: IReactorTime,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.service = service
        self.clock = clock
        self.notifier: INotifier = _NullNotifier()  # type: ignore[assignment]
        self._limits = ServiceLimits(settings.maxItemsPerNode, settings.maxPayloadSize)
        # The component itself (its replication engine) has owner rights on every node.
        self._admins = frozenset(settings.admins) | {bareJID(service)}
        self._nodes: dict[str, _NodeState] = {}
        self._publishBuckets = (
            TokenBuckets(settings.publishRate, settings.publishBurst, clock)
            if settings.publishRate > 0
            else None
        )
        # The collection graph (None until first needed), and the nodes another instance
        # changed since, whose type or associations may have changed.
        self._graph: CollectionGraph | None = None
        self._graphStale: set[str] = set()
        domain = service.split(".", 1)
        self._serverDomain = domain[1] if len(domain) == 2 else service
        #: The subscribers' presence, which the XMPP edge feeds (L{presenceTracked} then).
        self.presence = PresenceState()
        self.presenceTracked = False
        self.lifecycle = SubscriptionLifecycle(self, clock)

    # -- node state -------------------------------------------------------------------------

    async def _state(self, identifier: str | None) -> _NodeState:
        if not identifier:
            raise errors.NodeIdRequired("this request needs a node")
        state = self._nodes.get(identifier)
        if state is None:
            node = await self.storage.getNode(identifier)
            affiliations = await self.storage.getAffiliations(identifier)
            subscriptions = await self.storage.getSubscriptions(identifier)
            if identifier not in self._nodes:
                self._nodes[identifier] = _NodeState(
                    node, dict(affiliations), list(subscriptions), self.presence
                )
                self.lifecycle.loaded(self._nodes[identifier])
            state = self._nodes[identifier]
        return state

    def forget(self, identifier: str | None) -> None:
        """
        Drop the cached state of a node (of every node for C{None}), so the next request reads
        it from storage. Another instance on the same database calls this when it changed the
        node.
        """
        if identifier is None:
            self._nodes.clear()
            self._graph = None
        else:
            self._nodes.pop(identifier, None)
            if self._graph is not None:
                self._graphStale.add(identifier)
                if len(self._graphStale) > 1000:
                    self._graph = None
                    self._graphStale.clear()

    def _affiliation(self, state: _NodeState, requester: str) -> Affiliation:
        bare = bareJID(requester)
        if bare in self._admins:
            return Affiliation.OWNER
        return state.affiliationOf(bare)

    def _requireOwner(self, state: _NodeState, requester: str) -> None:
        if self._affiliation(state, requester) is not Affiliation.OWNER:
            raise errors.Forbidden("only an owner of the node may do this")

    def _now(self) -> float:
        return self.clock.seconds()

    # -- owner use cases ---------------------------------------------------------------------

    def _mayCreate(self, requester: str) -> bool:
        bare = bareJID(requester)
        if bare in self._admins:
            return True
        rule = self.settings.createNodes
        if rule == "any":
            return True
        if rule == "local":
            host = JID(bare).host
            return host == self._serverDomain or host.endswith("." + self._serverDomain)
        return bare in rule

    async def createNode(
        self, requester: str, identifier: str | None, options: Values | None
    ) -> str:
        """
        Create a node owned by the requester; see L{IPubSubPolicy.createNode}.
        """
        if not self._mayCreate(requester):
            raise errors.NodeCreationForbidden("this service does not let you create nodes")
        owner = bareJID(requester)
        if self.settings.maxNodesPerOwner and owner not in self._admins:
            owned = await self.storage.countNodesOwnedBy(owner)
            if owned >= self.settings.maxNodesPerOwner:
                raise errors.ResourceConstraint(
                    f"you own {owned} nodes, the most this service allows"
                )
        config = configFromValues(options or {}, self._defaultConfig(), self._limits)
        identifier = identifier or uuid.uuid4().hex
        graph = await self._collectionGraph()
        config, children = await self._checkAssociations(
            requester, identifier, config, None, options or {}
        )
        node = Node(identifier, config, owner, self._now())
        await self.storage.createNode(node)
        self._nodes[identifier] = _NodeState(
            node, {owner: Affiliation.OWNER}, [], self.presence
        )
        self.log.info("Node {node} created by {owner}", node=identifier, owner=owner)
        await self._applyAssociations(graph, node, children, created=True)
        return identifier

    def _defaultConfig(self) -> NodeConfig:
        return NodeConfig(maxItems=min(self.settings.defaultMaxItems, self._limits.maxItemsPerNode))

    async def defaultConfiguration(self, requester: str, nodeType: str) -> NodeConfig:
        """
        The configuration a new node of C{nodeType} gets.
        """
        if nodeType == NodeType.COLLECTION.value:
            return attrs.evolve(self._defaultConfig(), nodeType=NodeType.COLLECTION)
        return self._defaultConfig()

    async def getConfiguration(self, requester: str, identifier: str) -> NodeConfig:
        """
        The node's configuration; owners only.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        return await self._configView(state.node)

    async def configure(self, requester: str, identifier: str, options: Values) -> None:
        """
        Apply submitted configuration values; owners only. Lowering C{max_items} drops the
        oldest items; subscribers are told when C{notify_config} is on.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        old = state.node.config
        config = configFromValues(options, old, self._limits)
        if config.nodeType is not old.nodeType:
            raise errors.NotAllowed("a node's type cannot change")
        graph = await self._collectionGraph()
        config, children = await self._checkAssociations(
            requester, identifier, config, old, options
        )
        await self.storage.configureNode(identifier, config)
        state.node = attrs.evolve(state.node, config=config)
        await self._applyAssociations(graph, state.node, children, created=False)
        if config.maxItems != old.maxItems or (old.persistItems and not config.persistItems):
            keep = self._keep(config)
            await self.storage.storeItems(identifier, [], keep if config.persistItems else 0, True)
        if config.accessModel is not old.accessModel:
            await self._dropUnentitled(state)
        if config.notifyConfig and config.deliverNotifications:
            view = await self._configView(state.node) if config.deliverPayloads else None
            self.notifier.configuration(
                identifier, view, config.notificationType, state.recipients()
            )
            for collection, depth in await self._collectionsAbove(identifier):
                recipients = collection.recipients(None, depth, NODES_SUBSCRIPTION)
                if recipients:
                    self.notifier.configuration(
                        identifier, view, config.notificationType, recipients
                    )

    async def _dropUnentitled(self, state: _NodeState) -> None:
        """
        After an access model change, remove subscriptions the new model would not allow.
        """
        config = state.node.config
        if config.accessModel is not AccessModel.WHITELIST:
            return
        for s in list(state.subscriptions):
            bare = bareJID(s.subscriber)
            if bare not in self._admins and state.affiliationOf(bare) not in _MEMBERS:
                await self._removeSubscription(state, s)

    async def deleteNode(self, requester: str, identifier: str, redirect: str | None) -> None:
        """
        Delete a node and tell its subscribers; owners only.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        config = state.node.config
        recipients = state.recipients()
        graph = await self._collectionGraph()
        above = dict(graph.ancestors(identifier))
        await self.storage.deleteNode(identifier, self._now())
        self._nodes.pop(identifier, None)
        self.log.info("Node {node} deleted by {who}", node=identifier, who=requester)
        if config.notifyDelete and config.deliverNotifications:
            self.notifier.delete(identifier, redirect, config.notificationType, recipients)
        for child in graph.associatedChildren(identifier):
            await self._setAssociatedParents(
                child, [p for p in graph.associatedParents(child) if p != identifier]
            )
        graph.remove(identifier)
        await self._notifyMembership(identifier, above, {})

    async def purge(self, requester: str, identifier: str) -> None:
        """
        Remove every item of a node and tell its subscribers; owners only.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        config = state.node.config
        if not config.persistItems:
            raise errors.Unsupported("persistent-items", "this node does not persist items")
        await self.storage.purgeNode(identifier, bareJID(requester), self._now())
        if config.deliverNotifications and config.notifyRetract:
            self.notifier.purge(identifier, config.notificationType, state.recipients())
            for collection, depth in await self._collectionsAbove(identifier):
                self.notifier.purge(
                    identifier,
                    config.notificationType,
                    collection.recipients(None, depth),
                    (("Collection", collection.node.identifier),),
                )

    # -- publisher use cases -----------------------------------------------------------------

    def _keep(self, config: NodeConfig) -> int:
        if config.maxItems is None:
            return self._limits.maxItemsPerNode
        return min(config.maxItems, self._limits.maxItemsPerNode)

    def _mayPublish(self, state: _NodeState, requester: str, affiliation: Affiliation) -> bool:
        model = state.node.config.publishModel
        if affiliation in _PUBLISHERS or model is PublishModel.OPEN:
            return True
        if model is PublishModel.SUBSCRIBERS:
            return any(
                s.state is SubscriptionState.SUBSCRIBED
                for s in state.subscriptionsOfBare(bareJID(requester))
            )
        return False

    async def publish(
        self,
        requester: str,
        identifier: str,
        items: Sequence[PublishedItem],
        publishOptions: Values | None,
    ) -> list[str]:
        """
        Store and announce items; see L{IPubSubPolicy.publish}.

        An item may carry SHIM headers as a third member; they are stored with it and decide,
        against each subscription's C{hermod#header_filter}, who is told. Items are notified in
        groups of equal headers: one serialization per group, not per subscriber. The
        publish-options field C{hermod#headers} attaches headers to every item of the publish,
        after the item's own.
        """
        extraHeaders: Headers = ()
        if publishOptions and PUBLISH_HEADERS in publishOptions:
            publishOptions, extraHeaders = splitPublishHeaders(publishOptions)
        try:
            state = await self._state(identifier)
        except errors.NodeNotFound:
            if not self.settings.autoCreate:
                raise
            await self.createNode(requester, identifier, publishOptions)
            state = await self._state(identifier)
        affiliation = self._affiliation(state, requester)
        if affiliation is Affiliation.OUTCAST or not self._mayPublish(
            state, requester, affiliation
        ):
            raise errors.Forbidden("you may not publish to this node")
        publisher = bareJID(requester)
        if (
            self._publishBuckets is not None
            and publisher not in self._admins
            and not self._publishBuckets.take(publisher)
        ):
            raise errors.RateLimited(
                f"more than {self.settings.publishRate:g} publishes a second; slow down"
            )
        config = state.node.config
        if config.nodeType is NodeType.COLLECTION:
            raise errors.NotAllowed("a collection node holds nodes, not items")
        if publishOptions:
            checkPreconditions(publishOptions, config)
        stored = self._checkItems(config, items, bareJID(requester), extraHeaders)
        result = await self.storage.storeItems(
            identifier, stored, self._keep(config), config.persistItems
        )
        if config.deliverNotifications:
            for group in _byHeaders(result.items):
                recipients = state.recipients(group[0].headers)
                if recipients:
                    self.notifier.publish(
                        identifier,
                        group,
                        config.deliverPayloads,
                        config.notificationType,
                        recipients,
                    )
            await self._notifyCollections(state, result.items)
        return [item.itemId for item in result.items]

    async def _collectionsAbove(self, identifier: str) -> list[tuple[_NodeState, int]]:
        """
        The collection nodes above C{identifier} through paths and associations, nearest
        first, each once with how many levels below it C{identifier} is (C{/a} holds C{/a/b/c}
        at depth 2); see L{CollectionGraph.ancestors}.
        """
        graph = await self._collectionGraph()
        found = []
        for name, depth in graph.ancestors(identifier):
            try:
                found.append((await self._state(name), depth))
            except errors.NodeNotFound:
                graph.remove(name)
        return found

    async def _notifyCollections(self, leaf: _NodeState, items: Sequence[Item]) -> None:
        """
        Tell the C{items} subscribers of the collections above C{leaf} of its new items, each
        item tagged with a SHIM C{Collection} header naming the collection (XEP-0248).
        """
        config = leaf.node.config
        for collection, depth in await self._collectionsAbove(leaf.node.identifier):
            tag = (("Collection", collection.node.identifier),)
            for group in _byHeaders(items):
                recipients = collection.recipients(group[0].headers, depth)
                if recipients:
                    self.notifier.publish(
                        leaf.node.identifier,
                        [attrs.evolve(item, headers=item.headers + tag) for item in group],
                        config.deliverPayloads,
                        config.notificationType,
                        recipients,
                    )

    def _checkItems(
        self,
        config: NodeConfig,
        items: Sequence[PublishedItem],
        publisher: str,
        extraHeaders: Headers = (),
    ) -> list[Item]:
        """
        Validate the published items against the node (XEP-0060 7.1.3) and give them ids.

        @param extraHeaders: SHIM headers for every item, after its own (publish-options).
        """
        transientNotificationOnly = not config.persistItems and not config.deliverPayloads
        if not items:
            if transientNotificationOnly:
                return [Item(uuid.uuid4().hex, b"", publisher, self._now(), extraHeaders)]
            raise errors.NoItemId("this node needs an item in every publish")
        limit = self._limits.maxPayloadSize
        if config.maxPayloadSize is not None:
            limit = min(limit, config.maxPayloadSize)
        now = self._now()
        checked = []
        jsonOnly = config.payloadFormat == "json"
        for entry in items:
            headers: Headers = ()
            if len(entry) == 3:
                itemId, payload, headers = entry
            else:
                itemId, payload = entry
            if transientNotificationOnly and payload:
                raise errors.ItemForbidden("this node takes notifications without payloads")
            if not payload and not transientNotificationOnly:
                raise errors.PayloadRequired("this node needs a payload in every item")
            if len(payload) > limit:
                raise errors.PayloadTooBig(
                    f"payload of {len(payload)} bytes is over this node's limit of {limit}"
                )
            if jsonOnly and payload and not isJSONPayload(payload):
                raise errors.InvalidPayload(
                    "this node takes only XEP-0335 <json xmlns='urn:xmpp:json:0'/> payloads"
                    " holding valid JSON"
                )
            checked.append(
                Item(
                    itemId or uuid.uuid4().hex, payload, publisher, now,
                    tuple(headers) + extraHeaders,
                )
            )
        return checked

    async def retract(
        self, requester: str, identifier: str, itemIds: Sequence[str], notify: bool
    ) -> None:
        """
        Remove items; subscribers are told when C{notify} or C{notify_retract} asks.
        """
        state = await self._state(identifier)
        config = state.node.config
        if not config.persistItems:
            raise errors.Unsupported("persistent-items", "this node does not persist items")
        affiliation = self._affiliation(state, requester)
        if affiliation not in _PUBLISHERS:
            raise errors.Forbidden("only owners and publishers may retract items")
        if not itemIds:
            raise errors.NoItemId("name the items to retract")
        existing = await self.storage.getItems(identifier, itemIds=itemIds)
        missing = set(itemIds) - {item.itemId for item in existing}
        if missing:
            raise errors.ItemNotFound(f"no item {min(missing)!r} in this node")
        removed = await self.storage.retractItems(
            identifier, itemIds, bareJID(requester), self._now()
        )
        if removed and config.deliverNotifications and (notify or config.notifyRetract):
            self.notifier.retract(identifier, removed, config.notificationType, state.recipients())
            for collection, depth in await self._collectionsAbove(identifier):
                self.notifier.retract(
                    identifier,
                    removed,
                    config.notificationType,
                    collection.recipients(None, depth),
                    (("Collection", collection.node.identifier),),
                )

    # -- subscriber use cases ----------------------------------------------------------------

    async def subscribe(
        self, requester: str, identifier: str, subscriber: str, options: Values | None
    ) -> Subscription:
        """
        Subscribe C{subscriber}; see L{IPubSubPolicy.subscribe}.
        """
        subscriber = normalizeJID(subscriber)
        requesterBare = bareJID(requester)
        if bareJID(subscriber) != requesterBare and requesterBare not in self._admins:
            raise errors.InvalidJID("you may only subscribe your own JID")
        state = await self._state(identifier)
        affiliation = self._affiliation(state, subscriber)
        if affiliation is Affiliation.OUTCAST:
            raise errors.Outcast("you are banned from this node")
        if affiliation is Affiliation.PUBLISH_ONLY:
            raise errors.Forbidden("a publish-only entity cannot subscribe")
        config = state.node.config
        model = config.accessModel
        if model is AccessModel.WHITELIST and affiliation not in _MEMBERS:
            raise errors.ClosedNode("this node is on a whitelist")
        stored = subscriptionOptionsFromValues(options or {})
        existing = state.subscriptionsOf(subscriber)
        # Multi-subscribe (XEP-0060 6.1.6): without options, or with the options of one it
        # holds, a JID gets its subscription back; other options make another subscription.
        same = [s for s in existing if options is None or s.options == stored]
        if same:
            current = same[0]
            if current.state is SubscriptionState.PENDING:
                raise errors.PendingSubscription("your subscription is waiting for approval")
            return current
        cap = self.settings.maxSubscribersPerNode
        if cap and len(state.subscriptions) >= cap:
            raise errors.TooManySubscriptions(f"this node holds {cap} subscriptions, its limit")
        needsApproval = model is AccessModel.AUTHORIZE and affiliation not in _MEMBERS
        subscription = Subscription(
            identifier,
            subscriber,
            uuid.uuid4().hex,
            SubscriptionState.PENDING if needsApproval else SubscriptionState.SUBSCRIBED,
            stored,
        )
        await self._saveSubscription(state, subscription)
        if needsApproval:
            owners = [j for j, a in state.affiliations.items() if a is Affiliation.OWNER]
            self.notifier.authorizationRequest(subscription, owners)
        elif config.sendLastPublishedItem is not SendLastPublished.NEVER:
            self.clock.callLater(0, self._sendLastItem, state, subscription)
        return subscription

    def _sendLastItem(self, state: _NodeState, subscription: Subscription) -> None:
        """
        Send the node's last item to a new subscriber, after the subscribe result.
        """

        def send(items: list[Item]) -> None:
            config = state.node.config
            if items and config.deliverNotifications and _matches(subscription, items[0]):
                self.notifier.publish(
                    state.node.identifier,
                    items,
                    config.deliverPayloads,
                    config.notificationType,
                    directRecipient(
                        subscription.subscriber,
                        [subscription.subscriptionId]
                        if subscription.subscriber in (state.multiSubscribers() or ())
                        else [],
                        [subscription.options],
                    ),
                )

        d = self.storage.getItems(state.node.identifier, maxItems=1)
        d.addCallback(send)
        d.addErrback(lambda f: self.log.failure("Sending the last item failed", f))

    async def _saveSubscription(self, state: _NodeState, subscription: Subscription) -> None:
        await self.storage.saveSubscription(subscription)
        state.subscriptions = [
            s for s in state.subscriptions if s.subscriptionId != subscription.subscriptionId
        ] + [subscription]
        self.lifecycle.saved(subscription)

    async def _removeSubscription(self, state: _NodeState, subscription: Subscription) -> None:
        await self.storage.removeSubscription(subscription.node, subscription.subscriptionId)
        state.subscriptions = [
            s for s in state.subscriptions if s.subscriptionId != subscription.subscriptionId
        ]
        self.lifecycle.removed(subscription)

    def _pickSubscription(
        self, state: _NodeState, subscriber: str, subscriptionId: str | None
    ) -> Subscription:
        """
        The one subscription a request names (XEP-0060 6.2.3 and 6.3.4 error cases).
        """
        mine = state.subscriptionsOf(subscriber)
        if not mine:
            raise errors.NotSubscribed("you are not subscribed to this node")
        if subscriptionId:
            for s in mine:
                if s.subscriptionId == subscriptionId:
                    return s
            raise errors.InvalidSubscriptionId("no subscription with that SubID")
        if len(mine) > 1:
            raise errors.SubscriptionIdRequired("you hold several subscriptions: name one")
        return mine[0]

    async def unsubscribe(
        self, requester: str, identifier: str, subscriber: str, subscriptionId: str | None
    ) -> None:
        """
        Remove a subscription; only its own JID (or an owner) may.
        """
        subscriber = normalizeJID(subscriber)
        state = await self._state(identifier)
        if bareJID(subscriber) != bareJID(requester) and (
            self._affiliation(state, requester) is not Affiliation.OWNER
        ):
            raise errors.Forbidden("you may only unsubscribe your own JID")
        subscription = self._pickSubscription(state, subscriber, subscriptionId)
        await self._removeSubscription(state, subscription)

    async def getSubscriptionOptions(
        self, requester: str, identifier: str, subscriber: str, subscriptionId: str | None
    ) -> Subscription:
        """
        The subscription whose options are asked for.
        """
        subscriber = normalizeJID(subscriber)
        state = await self._state(identifier)
        if bareJID(subscriber) != bareJID(requester) and (
            self._affiliation(state, requester) is not Affiliation.OWNER
        ):
            raise errors.Forbidden("you may only see the options of your own subscriptions")
        return self._pickSubscription(state, subscriber, subscriptionId)

    async def setSubscriptionOptions(
        self,
        requester: str,
        identifier: str,
        subscriber: str,
        subscriptionId: str | None,
        options: Values,
    ) -> None:
        """
        Replace a subscription's options.
        """
        subscription = await self.getSubscriptionOptions(
            requester, identifier, subscriber, subscriptionId
        )
        stored = subscriptionOptionsFromValues(options)
        state = await self._state(identifier)
        await self._saveSubscription(state, attrs.evolve(subscription, options=stored))

    async def items(
        self,
        requester: str,
        identifier: str,
        maxItems: int | None,
        itemIds: Sequence[str] | None,
        subscriptionId: str | None,
    ) -> list[Item]:
        """
        The items the requester may read, newest first.
        """
        state = await self._state(identifier)
        self._checkRead(state, requester)
        config = state.node.config
        if not config.persistItems:
            raise errors.Unsupported("persistent-items", "this node does not persist items")
        if subscriptionId:
            if not any(
                s.subscriptionId == subscriptionId for s in state.subscriptionsOfBare(
                    bareJID(requester)
                )
            ):
                raise errors.InvalidSubscriptionId("no subscription with that SubID")
        elif subscriptionId is None and len(state.subscriptionsOf(normalizeJID(requester))) > 1:
            # XEP-0060 6.5.9.3; "" (disco#items, which names no subscription) skips this.
            raise errors.SubscriptionIdRequired("you hold several subscriptions: name one")
        if maxItems is not None and maxItems < 1:
            raise errors.BadRequest("max_items must be a positive number")
        found = await self.storage.getItems(identifier, maxItems=maxItems, itemIds=itemIds)
        if config.itemExpire is not None:
            cutoff = self._now() - config.itemExpire
            found = [item for item in found if item.published >= cutoff]
        if itemIds and not found:
            raise errors.ItemNotFound("none of those items exists")
        return found

    def _checkRead(self, state: _NodeState, requester: str) -> None:
        """
        Raise unless the requester may read the node's items (XEP-0060 6.5.9).
        """
        affiliation = self._affiliation(state, requester)
        if affiliation is Affiliation.OUTCAST:
            raise errors.Outcast("you are banned from this node")
        if affiliation in _MEMBERS:
            return
        model = state.node.config.accessModel
        if model is AccessModel.WHITELIST:
            raise errors.ClosedNode("this node is on a whitelist")
        if model is AccessModel.AUTHORIZE and not any(
            s.state is SubscriptionState.SUBSCRIBED
            for s in state.subscriptionsOfBare(bareJID(requester))
        ):
            raise errors.SubscriptionRequired("only approved subscribers may read this node")

    async def entitySubscriptions(
        self, requester: str, identifier: str | None
    ) -> list[Subscription]:
        """
        The requester's own subscriptions, on one node or on all.
        """
        if identifier:
            state = await self._state(identifier)
            return state.subscriptionsOfBare(bareJID(requester))
        return await self.storage.getEntitySubscriptions(bareJID(requester))

    async def entityAffiliations(
        self, requester: str, identifier: str | None
    ) -> list[tuple[str, Affiliation]]:
        """
        The requester's own affiliations, on one node or on all.
        """
        bare = bareJID(requester)
        if identifier:
            state = await self._state(identifier)
            affiliation = state.affiliationOf(bare)
            return [] if affiliation is Affiliation.NONE else [(identifier, affiliation)]
        return await self.storage.getEntityAffiliations(bare)

    # -- owner management of affiliations and subscriptions --------------------------------------

    async def getAffiliations(self, requester: str, identifier: str) -> dict[str, Affiliation]:
        """
        The node's affiliations; owners only.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        return dict(state.affiliations)

    async def setAffiliations(
        self, requester: str, identifier: str, changes: Mapping[str, str]
    ) -> None:
        """
        Modify affiliations; owners only. Outcasts and (on a whitelist node) entities that
        leave the whitelist lose their subscriptions.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        parsed: dict[str, Affiliation] = {}
        for entity, value in changes.items():
            try:
                parsed[bareJID(entity)] = Affiliation(value)
            except ValueError:
                raise errors.BadRequest(f"unknown affiliation {value!r}") from None
        after = dict(state.affiliations)
        for entity, affiliation in parsed.items():
            if affiliation is Affiliation.NONE:
                after.pop(entity, None)
            else:
                after[entity] = affiliation
        if Affiliation.OWNER not in after.values():
            raise errors.NotAllowed("a node must keep at least one owner")
        await self.storage.setAffiliations(identifier, parsed)
        state.affiliations = after
        whitelist = state.node.config.accessModel is AccessModel.WHITELIST
        for entity, affiliation in parsed.items():
            if affiliation is Affiliation.OUTCAST or (
                whitelist and affiliation not in _MEMBERS and entity not in self._admins
            ):
                for s in state.subscriptionsOfBare(entity):
                    await self._removeSubscription(state, s)
                    self.notifier.subscriptionChanged(
                        attrs.evolve(s, state=SubscriptionState.NONE)
                    )

    async def getSubscriptions(self, requester: str, identifier: str) -> list[Subscription]:
        """
        Every subscription of the node; owners only.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        return list(state.subscriptions)

    async def setSubscriptions(
        self,
        requester: str,
        identifier: str,
        changes: Sequence[tuple[str, str, str | None]],
    ) -> None:
        """
        Modify subscriptions; owners only. Each subscriber is told of its new state.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        planned: list[tuple[str, SubscriptionState, str | None]] = []
        for entity, value, subscriptionId in changes:
            try:
                planned.append((normalizeJID(entity), SubscriptionState(value), subscriptionId))
            except ValueError:
                raise errors.BadRequest(f"unknown subscription state {value!r}") from None
        for entity, newState, subscriptionId in planned:
            targets = [
                s
                for s in state.subscriptionsOf(entity)
                if subscriptionId is None or s.subscriptionId == subscriptionId
            ]
            if newState is SubscriptionState.NONE:
                for s in targets:
                    await self._removeSubscription(state, s)
                    self.notifier.subscriptionChanged(attrs.evolve(s, state=newState))
                continue
            if not targets:
                targets = [Subscription(identifier, entity, subscriptionId or uuid.uuid4().hex)]
            for s in targets:
                changed = attrs.evolve(s, state=newState)
                await self._saveSubscription(state, changed)
                self.notifier.subscriptionChanged(changed)

    async def answerAuthorization(
        self,
        requester: str,
        identifier: str,
        subscriber: str,
        subscriptionId: str | None,
        allow: bool,
    ) -> None:
        """
        An owner approves or denies a pending subscription; the subscriber is told.
        """
        state = await self._state(identifier)
        self._requireOwner(state, requester)
        subscriber = normalizeJID(subscriber)
        pending = [
            s
            for s in state.subscriptionsOf(subscriber)
            if s.state is SubscriptionState.PENDING
            and (subscriptionId is None or s.subscriptionId == subscriptionId)
        ]
        if not pending:
            raise errors.ItemNotFound("no pending subscription for that JID")
        for s in pending:
            if allow:
                changed = attrs.evolve(s, state=SubscriptionState.SUBSCRIBED)
                await self._saveSubscription(state, changed)
            else:
                changed = attrs.evolve(s, state=SubscriptionState.NONE)
                await self._removeSubscription(state, s)
            self.notifier.subscriptionChanged(changed)

    # -- archive (XEP-0313 on nodes) and paging (XEP-0059) ----------------------------------

    #: Page size of an archive or items query that names no C{max}.
    defaultPageSize = 100
    #: The largest page served, whatever C{max} asks.
    maxPageSize = 1000

    async def archive(self, requester: str, identifier: str, query: ArchiveQuery) -> ArchivePage:
        """
        One page of the node's archive (its event log) for a reader of the node.

        Retention is applied first, so the archive never reaches further back than the node's
        C{hermod#archive_max_age} and C{hermod#archive_max_events}.

        @raise errors.ItemNotFound: an id of the query (C{after-id}, C{before-id}, RSM
            C{after} or C{before}) is malformed, not of this node, or trimmed from the log
            (XEP-0313 6.1.1): the client falls back to fetching the current items.
        """
        state = await self._state(identifier)
        self._checkRead(state, requester)
        await self.trimArchive(state.node)
        ids: dict[str, int | None] = {}
        for name in ("afterId", "beforeId", "after", "before"):
            given = getattr(query, name)
            ids[name] = None if not given else await self._eventId(identifier, given)
        low = _maxOf(ids["afterId"], ids["after"])
        high = _minOf(ids["beforeId"], ids["before"])
        publisher = normalizeJID(query.publisher) if query.publisher else None
        limit = self.pageSize(query.maxResults)
        count = await self.storage.countEvents(
            identifier, ids["afterId"], ids["beforeId"], query.start, query.end, publisher
        ) if query.withCount else None
        backwards = query.before is not None
        found = await self.storage.queryEvents(
            identifier, low, high, query.start, query.end, publisher, limit + 1, backwards
        )
        complete = len(found) <= limit
        page = found[:limit]
        if backwards:
            page.reverse()
        return ArchivePage(tuple(page), complete, count)

    async def _eventId(self, identifier: str, given: str) -> int:
        """
        The event id an archive id names, if the node's log still holds it.
        """
        try:
            eventId = int(given)
        except ValueError:
            eventId = -1
        if eventId < 0 or str(eventId) != given or not await self.storage.hasEvent(
            identifier, eventId
        ):
            raise errors.ItemNotFound(f"no archived event {given!r} in this node (any more)")
        return eventId

    def pageSize(self, asked: int | None) -> int:
        """
        How many events or items a page holds at most when C{asked} for (the RSM C{max};
        L{None}: not given).

        @raise errors.BadRequest: C{asked} is negative.
        """
        if asked is None:
            return self.defaultPageSize
        if asked < 0:
            raise errors.BadRequest("max must not be negative")
        return min(asked, self.maxPageSize)

    async def trimArchive(self, node: Node) -> int:
        """
        Apply the node's archive retention; returns how many events went.
        """
        config = node.config
        if config.archiveMaxAge is None and config.archiveMaxEvents is None:
            return 0
        before = None if config.archiveMaxAge is None else self._now() - config.archiveMaxAge
        return await self.storage.trimEvents(node.identifier, before, config.archiveMaxEvents)

    async def trimArchives(self) -> int:
        """
        Apply archive retention to every node; returns how many events went.
        """
        removed = 0
        for node in await self.storage.listNodes():
            removed += await self.trimArchive(node)
        return removed

    async def itemsPage(
        self,
        requester: str,
        identifier: str,
        after: str | None,
        before: str | None,
        maxResults: int | None,
    ) -> tuple[list[Item], int, int]:
        """
        One XEP-0059 page of the items the requester may read, newest first, stable while
        items are published (pages are anchored on item ids, not positions).

        @param before: An item id, or C{""} for the last page.
        @return: The page, the number of items and the page's first position.
        @raise errors.ItemNotFound: C{after} or C{before} is not an item of the node.
        """
        state = await self._state(identifier)
        self._checkRead(state, requester)
        if not state.node.config.persistItems:
            raise errors.Unsupported("persistent-items", "this node does not persist items")
        return await self.storage.getItemsPage(
            identifier, after, before or None, self.pageSize(maxResults), before == ""
        )

    # -- discovery --------------------------------------------------------------------------

    async def nodeInfo(self, requester: str, identifier: str) -> NodeMetaData:
        """
        The node with its owners, publishers and subscriber count, for disco#info.
        """
        state = await self._state(identifier)

        def having(affiliation: Affiliation) -> tuple[str, ...]:
            return tuple(sorted(j for j, a in state.affiliations.items() if a is affiliation))

        return NodeMetaData(
            attrs.evolve(state.node, config=await self._configView(state.node)),
            having(Affiliation.OWNER),
            having(Affiliation.PUBLISHER),
            sum(1 for s in state.subscriptions if s.state is SubscriptionState.SUBSCRIBED),
        )

    async def listNodes(self, requester: str, parent: str | None) -> list[tuple[str, str]]:
        """
        C{(identifier, title)} of every node, or of the nodes directly in collection
        C{parent} (XEP-0248: one path level below it, or associated with it); a leaf has none.
        """
        if parent:
            state = await self._state(parent)
            if state.node.config.nodeType is not NodeType.COLLECTION:
                return []
            return await self._children(await self._collectionGraph(), parent)
        nodes = await self.storage.listNodes()
        return [(node.identifier, node.config.title) for node in nodes]

    async def itemIds(self, requester: str, identifier: str) -> list[str]:
        """
        Ids of the node's items the requester may see (disco#items of a node).
        """
        found = await self.items(requester, identifier, None, None, "")
        return [item.itemId for item in found]

    async def expireItems(self) -> int:
        """
        Remove expired items of every node with C{item_expire}; returns how many went.
        """
        removed = 0
        for node in await self.storage.listNodes():
            if node.config.itemExpire is not None:
                gone = await self.storage.expireItems(
                    node.identifier, self._now() - node.config.itemExpire
                )
                removed += len(gone)
        return removed

    def subscriptionCounts(self) -> list[tuple[str, int]]:
        """
        C{(node, active subscriptions)} of the nodes whose state is in memory, for metrics.
        """
        return [
            (identifier, sum(1 for s in state.subscriptions
                             if s.state is SubscriptionState.SUBSCRIBED))
            for identifier, state in list(self._nodes.items())
        ]

    def cachedNodes(self) -> Iterable[str]:
        """
        Identifiers of the nodes whose state is in memory (for tests and metrics).
        """
        return list(self._nodes)
