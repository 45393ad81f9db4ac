"""
The XEP-0248 collection use cases of the pubsub policy: associations (C{pubsub#collection},
C{pubsub#children}), telling C{nodes} subscribers of nodes joining and leaving, and the
configuration and children of a collection as an owner sees them. No XML.

L{CollectionUseCases} is a mixin of L{hermod_component.policy.PubSubPolicy}; the graph itself
(paths, associations, depths, cycles) is L{hermod_component.collectiongraph.CollectionGraph}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from hermod_component import errors
from hermod_component.collectiongraph import CollectionGraph, pathParentName
from hermod_component.interfaces import INotifier, IStorage
from hermod_component.model import Affiliation, Node, NodeConfig, NodeType
from hermod_component.nodeoptions import Values

if TYPE_CHECKING:
    from hermod_component.policy import _NodeState

#: The C{pubsub#subscription_type} of subscriptions told of nodes joining and leaving.
NODES_SUBSCRIPTION = ("nodes",)


class CollectionUseCases:
    """
    The collection part of L{hermod_component.policy.PubSubPolicy}.

    @ivar _graph: The collection graph, L{None} until first needed.
    @ivar _graphStale: Nodes another instance changed since, read again before the next use.
    """

    storage: IStorage
    notifier: INotifier
    _graph: CollectionGraph | None
    _graphStale: set[str]

    if TYPE_CHECKING:

        async def _state(self, identifier: str | None) -> _NodeState: ...

        def _affiliation(self, state: _NodeState, requester: str) -> Affiliation: ...

    async def _collectionGraph(self) -> CollectionGraph:
        """
        The collection graph, built from every node when first needed, with the nodes another
        instance changed read again.
        """
        graph = self._graph
        if graph is None:
            self._graphStale.clear()
            graph = self._graph = CollectionGraph(await self.storage.listNodes())
        while self._graphStale:
            identifier = self._graphStale.pop()
            try:
                graph.update(await self.storage.getNode(identifier))
            except errors.NodeNotFound:
                graph.remove(identifier)
        return graph

    async def _checkAssociations(
        self,
        requester: str,
        identifier: str,
        config: NodeConfig,
        old: NodeConfig | None,
        values: Values,
    ) -> tuple[NodeConfig, list[str] | None]:
        """
        Validate the C{pubsub#collection} and C{pubsub#children} of a node being created
        (C{old} is L{None}) or configured.

        @return: The configuration to store (its C{collections} only the associations, no
            path parent; no C{children}) and the nodes to associate with this collection, or
            L{None} when C{pubsub#children} was not submitted.
        @raise errors.ItemNotFound: a named node does not exist.
        @raise errors.InvalidCollection: a leaf named as a collection, children of a leaf,
            or a cycle.
        @raise errors.Forbidden: the requester does not own a collection it adds the node to.
        """
        graph = await self._collectionGraph()
        byPath = graph.pathParent(identifier)
        parents = tuple(p for p in config.collections if byPath is None or p != byPath[0])
        known = graph.associatedParents(identifier) if old is not None else ()
        for parent in parents:
            if parent in known:
                continue
            try:
                state = await self._state(parent)
            except errors.NodeNotFound:
                raise errors.ItemNotFound(f"no node {parent!r} to be in") from None
            if state.node.config.nodeType is not NodeType.COLLECTION:
                raise errors.InvalidCollection(f"{parent!r} is a leaf, not a collection")
            if self._affiliation(state, requester) is not Affiliation.OWNER:
                raise errors.Forbidden(f"only an owner of {parent!r} may add nodes to it")
        children: list[str] | None = None
        if "pubsub#children" in values:
            if config.nodeType is not NodeType.COLLECTION and config.children:
                raise errors.InvalidCollection("a leaf node holds no nodes")
            children = [c for c in config.children if pathParentName(c) != identifier]
            for child in children:
                if child == identifier:
                    raise errors.InvalidCollection("a collection cannot hold itself")
                try:
                    await self._state(child)
                except errors.NodeNotFound:
                    raise errors.ItemNotFound(f"no node {child!r} to hold") from None
        stored = attrs.evolve(config, collections=parents, children=())
        if parents or children:
            trial = graph.copy()
            trial.update(Node(identifier, stored, "", 0.0))
            for child in children or ():
                trial.associate(child, identifier)
            if any(trial.inCycle(n) for n in [identifier, *(children or ())]):
                raise errors.InvalidCollection("that association would make a cycle")
        return stored, children

    async def _applyAssociations(
        self, graph: CollectionGraph, node: Node, children: list[str] | None, created: bool
    ) -> None:
        """
        After a node was stored: put it in the graph, associate or dissociate the children a
        collection's C{pubsub#children} named, and tell the C{nodes} subscribers of every
        collection each changed node joined or left.
        """
        identifier = node.identifier
        changed = [(identifier, {} if created else dict(graph.ancestors(identifier)))]
        graph.update(node)
        if children is not None:
            old = set(graph.associatedChildren(identifier))
            for child in sorted(old ^ set(children)):
                changed.append((child, dict(graph.ancestors(child))))
                parents = [p for p in graph.associatedParents(child) if p != identifier]
                await self._setAssociatedParents(
                    child, parents + [identifier] if child in children else parents
                )
        for name, before in changed:
            await self._notifyMembership(name, before, dict(graph.ancestors(name)))

    async def _setAssociatedParents(self, identifier: str, parents: Sequence[str]) -> None:
        """
        Store a node's associations (its C{collections}) and update the graph.
        """
        state = await self._state(identifier)
        config = attrs.evolve(state.node.config, collections=tuple(parents))
        await self.storage.configureNode(identifier, config)
        state.node = attrs.evolve(state.node, config=config)
        if self._graph is not None:
            self._graph.update(state.node)

    async def _notifyMembership(
        self, identifier: str, before: Mapping[str, int], after: Mapping[str, int]
    ) -> None:
        """
        Tell the C{nodes} subscribers of the collections C{identifier} joined (in C{after}
        only) or left (in C{before} only) of it, at the depth it is or was below each.
        """
        for names, depths, associated in (
            (after.keys() - before.keys(), after, True),
            (before.keys() - after.keys(), before, False),
        ):
            for name in sorted(names):
                try:
                    state = await self._state(name)
                except errors.NodeNotFound:
                    continue
                config = state.node.config
                recipients = state.recipients(None, depths[name], NODES_SUBSCRIPTION)
                if recipients and config.deliverNotifications:
                    self.notifier.collectionChanged(
                        name, identifier, associated, config.notificationType, recipients
                    )

    async def _configView(self, node: Node) -> NodeConfig:
        """
        The node's configuration as an owner sees it: C{pubsub#collection} every collection
        directly holding it, C{pubsub#children} (of a collection) every node directly in it.
        """
        graph = await self._collectionGraph()
        config = attrs.evolve(node.config, collections=graph.parents(node.identifier))
        if config.nodeType is NodeType.COLLECTION:
            children = await self._children(graph, node.identifier)
            config = attrs.evolve(config, children=[child for child, _ in children])
        return config

    async def _children(
        self, graph: CollectionGraph, identifier: str
    ) -> list[tuple[str, str]]:
        """
        C{(identifier, title)} of the nodes directly in a collection: those one path level
        below it and those associated with it, by name.
        """
        nodes = {node.identifier: node for node in await self.storage.listNodes()}
        names = {n for n in nodes if pathParentName(n) == identifier}
        names.update(graph.associatedChildren(identifier))
        return [(n, nodes[n].config.title) for n in sorted(names) if n in nodes]
