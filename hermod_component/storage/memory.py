"""
In-memory storage: for tests (the fake behind policy tests) and for throwaway services.

Every method answers with an already-fired Deferred, so tests need no reactor. Nothing survives
the process.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from hermod_component.errors import ItemNotFound, NodeExists, NodeNotFound
from hermod_component.interfaces import IStorage
from hermod_component.model import (
    Affiliation,
    Event,
    EventAction,
    Item,
    Node,
    NodeConfig,
    PublishResult,
    Subscription,
)
from hermod_component.storage._codec import bareJID


@attrs.define
class _NodeState:
    """
    One node and what hangs off it.

    @ivar items: Item id to item, oldest first (dict order; a republished item moves last).
    @ivar subscriptions: Subscription id to subscription, oldest first (dict order).
    """

    node: Node
    affiliations: dict[str, Affiliation] = attrs.field(factory=dict)
    subscriptions: dict[str, Subscription] = attrs.field(factory=dict)
    items: dict[str, Item] = attrs.field(factory=dict)


@implementer(IStorage)
class MemoryStorage:
    """
    L{IStorage} in dictionaries, with synchronous Deferreds.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _NodeState] = {}
        self._events: dict[str, list[Event]] = {}
        self._eventIds = itertools.count(1)

    def start(self) -> Deferred[None]:
        """
        Nothing to open.
        """
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """
        Nothing to close; the data stays until the object is dropped.
        """
        return succeed(None)

    def _state(self, identifier: str) -> _NodeState:
        """
        @raise NodeNotFound: there is no node C{identifier}.
        """
        state = self._nodes.get(identifier)
        if state is None:
            raise NodeNotFound(identifier)
        return state

    def _log(
        self,
        node: str,
        action: EventAction,
        itemId: str | None,
        publisher: str,
        payload: bytes,
        when: float,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """
        Append one event to the log; a publish event keeps its item's SHIM headers.
        """
        self._events.setdefault(node, []).append(
            Event(next(self._eventIds), node, action, itemId, publisher, payload, when, headers)
        )

    # Nodes

    def createNode(self, node: Node) -> Deferred[None]:
        """
        Create C{node}, its creator's bare JID becoming owner.
        """
        if node.identifier in self._nodes:
            return fail(NodeExists(node.identifier))
        state = _NodeState(node)
        state.affiliations[bareJID(node.creator)] = Affiliation.OWNER
        self._nodes[node.identifier] = state
        return succeed(None)

    def getNode(self, identifier: str) -> Deferred[Node]:
        """
        The node named C{identifier}.
        """
        try:
            return succeed(self._state(identifier).node)
        except NodeNotFound as e:
            return fail(e)

    def listNodes(self) -> Deferred[list[Node]]:
        """
        Every node, ordered by identifier.
        """
        return succeed([self._nodes[name].node for name in sorted(self._nodes)])

    def countNodesOwnedBy(self, entity: str) -> Deferred[int]:
        """
        How many nodes have C{entity} as owner.
        """
        return succeed(
            sum(
                1
                for state in self._nodes.values()
                if state.affiliations.get(entity) == Affiliation.OWNER
            )
        )

    def configureNode(self, identifier: str, config: NodeConfig) -> Deferred[None]:
        """
        Replace the node's configuration.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        state.node = attrs.evolve(state.node, config=config)
        return succeed(None)

    def deleteNode(self, identifier: str, when: float) -> Deferred[None]:
        """
        Remove the node with everything on it and log a C{delete} event.
        """
        if self._nodes.pop(identifier, None) is None:
            return fail(NodeNotFound(identifier))
        self._log(identifier, EventAction.DELETE, None, "", b"", when)
        return succeed(None)

    # Affiliations

    def getAffiliations(self, identifier: str) -> Deferred[dict[str, Affiliation]]:
        """
        The node's affiliations by bare JID.
        """
        try:
            return succeed(dict(self._state(identifier).affiliations))
        except NodeNotFound as e:
            return fail(e)

    def setAffiliations(
        self, identifier: str, changes: Mapping[str, Affiliation]
    ) -> Deferred[None]:
        """
        Set each bare JID's affiliation; C{none} removes it.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        for jid, affiliation in changes.items():
            if affiliation == Affiliation.NONE:
                state.affiliations.pop(jid, None)
            else:
                state.affiliations[jid] = Affiliation(affiliation)
        return succeed(None)

    def getEntityAffiliations(self, entity: str) -> Deferred[list[tuple[str, Affiliation]]]:
        """
        C{(node, affiliation)} pairs of C{entity}, ordered by node.
        """
        return succeed(
            [
                (name, self._nodes[name].affiliations[entity])
                for name in sorted(self._nodes)
                if entity in self._nodes[name].affiliations
            ]
        )

    # Subscriptions

    def getSubscriptions(self, identifier: str) -> Deferred[list[Subscription]]:
        """
        All subscriptions of the node, oldest first.
        """
        try:
            return succeed(list(self._state(identifier).subscriptions.values()))
        except NodeNotFound as e:
            return fail(e)

    def getEntitySubscriptions(self, entity: str) -> Deferred[list[Subscription]]:
        """
        All subscriptions whose subscriber's bare JID is C{entity}, ordered by node.
        """
        return succeed(
            [
                subscription
                for name in sorted(self._nodes)
                for subscription in self._nodes[name].subscriptions.values()
                if bareJID(subscription.subscriber) == entity
            ]
        )

    def saveSubscription(self, subscription: Subscription) -> Deferred[None]:
        """
        Insert or replace the subscription keyed by node and subscription id.
        """
        try:
            state = self._state(subscription.node)
        except NodeNotFound as e:
            return fail(e)
        state.subscriptions[subscription.subscriptionId] = attrs.evolve(
            subscription,
            options={key: tuple(values) for key, values in subscription.options.items()},
        )
        return succeed(None)

    def removeSubscription(self, identifier: str, subscriptionId: str) -> Deferred[None]:
        """
        Remove one subscription, if it exists.
        """
        state = self._nodes.get(identifier)
        if state is not None:
            state.subscriptions.pop(subscriptionId, None)
        return succeed(None)

    # Items

    def storeItems(
        self, identifier: str, items: Sequence[Item], maxItems: int | None, persist: bool
    ) -> Deferred[PublishResult]:
        """
        Log a publish event per item, store the items if C{persist}, trim to C{maxItems}.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        for item in items:
            self._log(
                identifier, EventAction.PUBLISH, item.itemId, item.publisher, item.payload,
                item.published, item.headers,
            )
            if persist:
                state.items.pop(item.itemId, None)
                state.items[item.itemId] = item
        removed: list[str] = []
        if maxItems is not None:
            excess = len(state.items) - max(maxItems, 0)
            if excess > 0:
                removed = list(itertools.islice(state.items, excess))
                for itemId in removed:
                    del state.items[itemId]
        return succeed(PublishResult(tuple(items), tuple(removed)))

    def getItems(
        self, identifier: str, maxItems: int | None = None, itemIds: Sequence[str] | None = None
    ) -> Deferred[list[Item]]:
        """
        The node's items, newest first, or those asked for in the order asked.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        if itemIds is None:
            result = list(reversed(state.items.values()))
        else:
            result = [
                state.items[itemId] for itemId in dict.fromkeys(itemIds) if itemId in state.items
            ]
        if maxItems is not None:
            result = result[: max(maxItems, 0)]
        return succeed(result)

    def retractItems(
        self, identifier: str, itemIds: Sequence[str], publisher: str, when: float
    ) -> Deferred[list[str]]:
        """
        Remove the items and log a C{retract} event for each one that existed.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        removed = []
        for itemId in dict.fromkeys(itemIds):
            if state.items.pop(itemId, None) is not None:
                removed.append(itemId)
                self._log(identifier, EventAction.RETRACT, itemId, publisher, b"", when)
        return succeed(removed)

    def purgeNode(self, identifier: str, publisher: str, when: float) -> Deferred[None]:
        """
        Remove every item of the node and log a C{purge} event.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        state.items.clear()
        self._log(identifier, EventAction.PURGE, None, publisher, b"", when)
        return succeed(None)

    def expireItems(self, identifier: str, publishedBefore: float) -> Deferred[list[str]]:
        """
        Remove the items published before C{publishedBefore}, oldest first, logging nothing.
        """
        state = self._nodes.get(identifier)
        if state is None:
            return succeed([])
        expired = [
            itemId for itemId, item in state.items.items() if item.published < publishedBefore
        ]
        for itemId in expired:
            del state.items[itemId]
        return succeed(expired)

    # Events

    def getEvents(
        self, identifier: str, afterId: int | None = None, limit: int = 100
    ) -> Deferred[list[Event]]:
        """
        The node's events above C{afterId}, oldest first, at most C{limit}.
        """
        events = self._events.get(identifier, [])
        start = 0 if afterId is None else bisect.bisect_right(
            events, afterId, key=lambda event: event.eventId
        )
        return succeed(events[start : start + max(limit, 0)])

    # Archive (XEP-0313) and paging (XEP-0059)

    def _matching(
        self,
        identifier: str,
        afterId: int | None,
        beforeId: int | None,
        start: float | None,
        end: float | None,
        publisher: str | None,
    ) -> list[Event]:
        """
        The node's events matching the filters, oldest first.
        """
        events = self._events.get(identifier, [])
        low = 0 if afterId is None else bisect.bisect_right(
            events, afterId, key=lambda event: event.eventId
        )
        high = len(events) if beforeId is None else bisect.bisect_left(
            events, beforeId, key=lambda event: event.eventId
        )
        return [
            event
            for event in events[low:high]
            if (start is None or event.time >= start)
            and (end is None or event.time <= end)
            and (
                publisher is None
                or event.publisher == publisher
                or event.publisher.startswith(publisher + "/")
            )
        ]

    def queryEvents(
        self,
        identifier: str,
        afterId: int | None = None,
        beforeId: int | None = None,
        start: float | None = None,
        end: float | None = None,
        publisher: str | None = None,
        limit: int = 100,
        newestFirst: bool = False,
    ) -> Deferred[list[Event]]:
        """
        The node's events matching the filters, in id order, at most C{limit}.
        """
        found = self._matching(identifier, afterId, beforeId, start, end, publisher)
        if newestFirst:
            found.reverse()
        return succeed(found[: max(limit, 0)])

    def countEvents(
        self,
        identifier: str,
        afterId: int | None = None,
        beforeId: int | None = None,
        start: float | None = None,
        end: float | None = None,
        publisher: str | None = None,
    ) -> Deferred[int]:
        """
        How many events match the filters.
        """
        return succeed(len(self._matching(identifier, afterId, beforeId, start, end, publisher)))

    def hasEvent(self, identifier: str, eventId: int) -> Deferred[bool]:
        """
        Whether the node's log holds the event C{eventId}.
        """
        events = self._events.get(identifier, [])
        at = bisect.bisect_left(events, eventId, key=lambda event: event.eventId)
        return succeed(at < len(events) and events[at].eventId == eventId)

    def trimEvents(
        self, identifier: str, before: float | None, keep: int | None
    ) -> Deferred[int]:
        """
        Remove the node's events older than C{before} and beyond the newest C{keep}.
        """
        events = self._events.get(identifier, [])
        kept = [e for e in events if before is None or e.time >= before]
        if keep is not None:
            kept = kept[max(len(kept) - keep, 0):] if keep > 0 else []
        removed = len(events) - len(kept)
        if identifier in self._events:
            self._events[identifier] = kept
        return succeed(removed)

    def getItemsPage(
        self,
        identifier: str,
        afterId: str | None,
        beforeId: str | None,
        limit: int,
        lastPage: bool,
    ) -> Deferred[tuple[list[Item], int, int]]:
        """
        One page of the node's items, newest first, with the total and the page's position.
        """
        try:
            state = self._state(identifier)
        except NodeNotFound as e:
            return fail(e)
        ordered = list(reversed(state.items.values()))
        ids = [item.itemId for item in ordered]
        limit = max(limit, 0)
        for given in (afterId, beforeId):
            if given is not None and given not in state.items:
                return fail(ItemNotFound(given))
        if beforeId is not None or lastPage:
            end = ids.index(beforeId) if beforeId is not None else len(ids)
            first = max(end - limit, 0)
        else:
            first = ids.index(afterId) + 1 if afterId is not None else 0
            end = first + limit
        page = ordered[first:end]
        return succeed((page, len(ordered), first if page else 0))
