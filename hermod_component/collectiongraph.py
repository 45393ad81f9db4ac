"""
The collection graph of XEP-0248: which collection nodes hold which nodes. No XML.

A node belongs to collections in two ways:

  - by path, to the nearest collection node whose name is a proper path prefix of its own
    (C{/a} holds C{/a/b/c}, two levels below, when there is no collection C{/a/b}; with one,
    C{/a/b/c} is one level below C{/a/b}, which is one level below C{/a});
  - by association, to the collections its C{pubsub#collection} field names, one level below
    each. Those are stored in the node's configuration (L{NodeConfig.collections}); a
    collection's C{pubsub#children} is the other side of the same associations.

The graph is a cache built once from every node and kept up to date by the policy on each
create, configure and delete, so a publish costs a few dictionary lookups: nothing at all when
the service has no collection, and one cached answer per leaf otherwise.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from hermod_component.model import Node, NodeType

#: C{(collection, depth)}: a collection above a node, and how many levels below it the node is.
Ancestor = tuple[str, int]


def pathPrefixes(identifier: str) -> list[Ancestor]:
    """
    The proper path prefixes of a node name, nearest first, each with how many levels below
    it the node is: C{/a/b/c} gives C{[("/a/b", 1), ("/a", 2)]}.
    """
    parts = identifier.split("/")
    found = []
    for end in range(len(parts) - 1, 0, -1):
        prefix = "/".join(parts[:end])
        if prefix:
            found.append((prefix, len(parts) - end))
    return found


def pathParentName(identifier: str) -> str | None:
    """
    The name one path level up (C{/a/b} for C{/a/b/c}), or L{None} at the top.
    """
    prefixes = pathPrefixes(identifier)
    return prefixes[0][0] if prefixes else None


class CollectionGraph:
    """
    The collection nodes of the service and the associations between nodes, with the
    collections above each node worked out once and cached until the graph changes.
    """

    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self._collections: set[str] = set()
        self._parents: dict[str, tuple[str, ...]] = {}
        self._children: dict[str, set[str]] = {}
        self._ancestors: dict[str, tuple[Ancestor, ...]] = {}
        for node in nodes:
            self.update(node)

    def update(self, node: Node) -> None:
        """
        Record a node as created or configured: its type and its associated collections.
        """
        identifier = node.identifier
        self._ancestors.clear()
        if node.config.nodeType is NodeType.COLLECTION:
            self._collections.add(identifier)
        else:
            self._collections.discard(identifier)
        self._setParents(identifier, tuple(node.config.collections))

    def _setParents(self, identifier: str, parents: tuple[str, ...]) -> None:
        for parent in self._parents.pop(identifier, ()):
            children = self._children.get(parent)
            if children is not None:
                children.discard(identifier)
                if not children:
                    del self._children[parent]
        if parents:
            self._parents[identifier] = parents
            for parent in parents:
                self._children.setdefault(parent, set()).add(identifier)

    def copy(self) -> CollectionGraph:
        """
        An independent copy, to try changes on.
        """
        other = CollectionGraph()
        other._collections = set(self._collections)
        other._parents = dict(self._parents)
        other._children = {parent: set(c) for parent, c in self._children.items()}
        return other

    def associate(self, child: str, parent: str) -> None:
        """
        Add one association of C{child} with collection C{parent}.
        """
        if parent not in self.associatedParents(child):
            self._ancestors.clear()
            self._setParents(child, self.associatedParents(child) + (parent,))

    def remove(self, identifier: str) -> None:
        """
        Forget a deleted node, its associations with it on both sides included.
        """
        self._ancestors.clear()
        self._collections.discard(identifier)
        self._setParents(identifier, ())
        for child in list(self._children.get(identifier, ())):
            self._setParents(child, tuple(p for p in self._parents[child] if p != identifier))

    @property
    def empty(self) -> bool:
        """
        Whether the service has no collection node (then no node is in a collection).
        """
        return not self._collections

    def isCollection(self, identifier: str) -> bool:
        """
        Whether C{identifier} is a collection node.
        """
        return identifier in self._collections

    def associatedParents(self, identifier: str) -> tuple[str, ...]:
        """
        The collections C{identifier} is associated with (its stored C{pubsub#collection}).
        """
        return self._parents.get(identifier, ())

    def associatedChildren(self, identifier: str) -> list[str]:
        """
        The nodes associated with collection C{identifier}, sorted.
        """
        return sorted(self._children.get(identifier, ()))

    def pathParent(self, identifier: str) -> Ancestor | None:
        """
        The nearest collection whose name is a path prefix of C{identifier}, with the levels
        between them, or L{None}.
        """
        for prefix, levels in pathPrefixes(identifier):
            if prefix in self._collections:
                return (prefix, levels)
        return None

    def parents(self, identifier: str) -> list[str]:
        """
        Every collection directly holding C{identifier} (by path and by association), what its
        C{pubsub#collection} field shows.
        """
        found = [] if (byPath := self.pathParent(identifier)) is None else [byPath[0]]
        found += [p for p in self.associatedParents(identifier) if p not in found]
        return found

    def ancestors(self, identifier: str) -> tuple[Ancestor, ...]:
        """
        Every collection above C{identifier} through paths and associations, each once with
        its shortest depth, nearest first (ties by name).
        """
        if not self._collections:
            return ()
        cached = self._ancestors.get(identifier)
        if cached is not None:
            return cached
        best: dict[str, int] = {}
        queue: list[tuple[int, str]] = [(0, identifier)]
        while queue:
            depth, current = heapq.heappop(queue)
            if current != identifier:
                if current in best:
                    continue
                best[current] = depth
            byPath = self.pathParent(current)
            steps = [] if byPath is None else [byPath]
            steps += [(p, 1) for p in self.associatedParents(current) if p in self._collections]
            for parent, levels in steps:
                if parent != identifier and parent not in best:
                    heapq.heappush(queue, (depth + levels, parent))
        found = tuple(sorted(best.items(), key=lambda pair: (pair[1], pair[0])))
        self._ancestors[identifier] = found
        return found

    def inCycle(self, identifier: str) -> bool:
        """
        Whether C{identifier} is above itself: one of the collections directly holding it
        is itself or has it above.
        """
        return any(
            parent == identifier or any(name == identifier for name, _ in self.ancestors(parent))
            for parent in self.parents(identifier)
        )
