"""
Values passed between Hermod's layers.

Everything here is a frozen C{attrs} class holding plain Python values: JIDs are strings (already
normalized by the XMPP edge), payloads are serialized XML C{bytes}. No layer can change another
layer's copy, and no XML object or database row travels further than the module that made it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs


class Affiliation(str, enum.Enum):
    """
    XEP-0060 affiliations, strongest first.
    """

    OWNER = "owner"
    PUBLISHER = "publisher"
    PUBLISH_ONLY = "publish-only"
    MEMBER = "member"
    NONE = "none"
    OUTCAST = "outcast"


class SubscriptionState(str, enum.Enum):
    """
    XEP-0060 subscription states.
    """

    SUBSCRIBED = "subscribed"
    PENDING = "pending"
    UNCONFIGURED = "unconfigured"
    NONE = "none"


class AccessModel(str, enum.Enum):
    """
    Node access models a component can enforce (presence and roster need the server's roster).
    """

    OPEN = "open"
    WHITELIST = "whitelist"
    AUTHORIZE = "authorize"


class PublishModel(str, enum.Enum):
    """
    Who may publish to a node.
    """

    PUBLISHERS = "publishers"
    SUBSCRIBERS = "subscribers"
    OPEN = "open"


class SendLastPublished(str, enum.Enum):
    """
    When the last published item is sent to a subscriber.
    """

    NEVER = "never"
    ON_SUB = "on_sub"
    ON_SUB_AND_PRESENCE = "on_sub_and_presence"


class NodeType(str, enum.Enum):
    """
    Leaf nodes hold items; collection nodes hold nodes.
    """

    LEAF = "leaf"
    COLLECTION = "collection"


class EventAction(str, enum.Enum):
    """
    What an entry of the append-only event log records.
    """

    PUBLISH = "publish"
    RETRACT = "retract"
    PURGE = "purge"
    DELETE = "delete"


def _names(values: Iterable[str]) -> tuple[str, ...]:
    """
    Node names as a tuple (storage reads them back as a JSON list).
    """
    return tuple(values)


@attrs.frozen
class NodeConfig:
    """
    The configuration of one node, with XEP-0060 defaults.

    @ivar maxItems: Items kept per node; C{None} means C{max} (the service limit).
    @ivar itemExpire: Seconds after which an item is removed; C{None} for never.
    @ivar maxPayloadSize: Largest accepted payload in bytes; C{None} for the service limit.
    @ivar archiveMaxAge: Seconds the node's events stay in its archive (XEP-0313); C{None} for
        ever.
    @ivar archiveMaxEvents: How many of its newest events the archive keeps; C{None} for all.
    @ivar payloadFormat: C{"any"}, or C{"json"} to accept only XEP-0335 C{<json/>} payloads
        holding valid JSON.
    @ivar collections: XEP-0248 C{pubsub#collection}: the collections this node is associated
        with, besides the one above it by path. As stored, only the associations; as shown to
        an owner, every collection directly holding the node.
    @ivar children: XEP-0248 C{pubsub#children} of a collection: as submitted, the nodes to
        associate with it; as shown, every node directly in it. Never stored: the associations
        live on the children's side, in their C{collections}.
    """

    accessModel: AccessModel = AccessModel.OPEN
    publishModel: PublishModel = PublishModel.PUBLISHERS
    maxItems: int | None = 10
    persistItems: bool = True
    deliverPayloads: bool = True
    deliverNotifications: bool = True
    notifyRetract: bool = True
    notifyDelete: bool = True
    notifyConfig: bool = False
    sendLastPublishedItem: SendLastPublished = SendLastPublished.NEVER
    itemExpire: int | None = None
    maxPayloadSize: int | None = None
    title: str = ""
    description: str = ""
    payloadType: str = ""
    notificationType: str = "headline"
    nodeType: NodeType = NodeType.LEAF
    archiveMaxAge: int | None = None
    archiveMaxEvents: int | None = None
    payloadFormat: str = "any"
    collections: tuple[str, ...] = attrs.field(default=(), converter=_names)
    children: tuple[str, ...] = attrs.field(default=(), converter=_names)


@attrs.frozen
class Node:
    """
    A pubsub node as stored.
    """

    identifier: str
    config: NodeConfig
    creator: str
    created: float


@attrs.frozen
class Item:
    """
    One item of a node.

    @ivar payload: The item's payload element(s), serialized XML, or C{b""} for none.
    @ivar publisher: Bare or full JID of the entity that published it.
    @ivar published: POSIX time of the publish.
    @ivar headers: The XEP-0131 SHIM headers the publisher attached, C{(name, value)} in the
        order given; subscribers filter on them (C{hermod#header_filter}).
    """

    itemId: str
    payload: bytes
    publisher: str = ""
    published: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Subscription:
    """
    One subscription of a JID to a node.

    @ivar subscriber: The subscribed JID, exactly as it was subscribed (bare or full).
    @ivar options: Subscription options, keyed by their C{pubsub#} field name, values as lists
        of strings as they come from a data form.
    """

    node: str
    subscriber: str
    subscriptionId: str
    state: SubscriptionState = SubscriptionState.SUBSCRIBED
    options: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen
class Event:
    """
    One entry of a node's append-only event log.

    @ivar eventId: Increasing identifier, unique across the service; stable across restarts.
    @ivar headers: The XEP-0131 SHIM headers of a published item, C{(name, value)} in order;
        empty for the other actions.
    """

    eventId: int
    node: str
    action: EventAction
    itemId: str | None
    publisher: str
    payload: bytes
    time: float
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class ArchiveQuery:
    """
    A XEP-0313 query of a node's archive, with its XEP-0059 paging.

    Archive ids are the event ids as decimal strings; they are kept as given so the policy can
    answer C{item-not-found} for one that is malformed or no longer in the log.

    @ivar publisher: The C{with} filter: a JID whose events (by that JID, or by any resource of
        it when bare) are wanted.
    @ivar afterId: The form's C{after-id}; C{beforeId} its C{before-id}.
    @ivar maxResults: The RSM C{max}; L{None} for the service's default page size.
    @ivar after: The RSM C{after}; C{before} the RSM C{before} (C{""} for the last page).
    @ivar withCount: Whether the page carries the RSM count of all matching events, which
        costs a scan of them in the node's log at every page.
    """

    start: float | None = None
    end: float | None = None
    publisher: str | None = None
    afterId: str | None = None
    beforeId: str | None = None
    maxResults: int | None = None
    after: str | None = None
    before: str | None = None
    withCount: bool = True


@attrs.frozen
class ArchivePage:
    """
    One page of a node's archive, oldest first.

    @ivar complete: Whether the page reaches the end of the results in its paging direction.
    @ivar count: How many events match the query's filters in all (L{None} when the query
        did not ask, see L{ArchiveQuery.withCount}).
    """

    events: tuple[Event, ...]
    complete: bool
    count: int | None


@attrs.frozen
class PublishResult:
    """
    What a publish stored.

    @ivar items: The stored items, with their (possibly generated) ids, in publish order.
    @ivar removed: Ids of the items dropped because the node exceeded C{max_items}.
    """

    items: tuple[Item, ...]
    removed: tuple[str, ...] = ()


@attrs.frozen
class NodeMetaData:
    """
    What disco#info tells about a node (XEP-0060 5.4).

    @ivar owners: Bare JIDs of the node's owners.
    @ivar publishers: Bare JIDs of its publishers.
    @ivar subscriberCount: How many subscriptions are active.
    """

    node: Node
    owners: tuple[str, ...]
    publishers: tuple[str, ...]
    subscriberCount: int


# -- replication ---------------------------------------------------------------------------------


class ChangeAction(str, enum.Enum):
    """
    What a replicated change does to its object.
    """

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@attrs.frozen
class Change:
    """
    One change of one object, as a backend captures it or as it arrives from a partner.

    @ivar objectId: The object's identity (GUID, CouchDB C{_id}, entryUUID, spool file id); also
        the pubsub item id.
    @ivar payload: The native serialization, untouched; C{b""} for a delete.
    @ivar contentType: The MIME type of C{payload}.
    @ivar version: C{counter:hlc-time:origin}, assigned by the engine; C{""} when captured.
    @ivar previous: The version this one replaces, or C{""}.
    @ivar origin: The component JID where the change was made; C{""} when captured.
    @ivar hops: The component JIDs the change has passed through, origin first.
    @ivar parent: The identity of an object that must exist before this one, or L{None}.
    @ivar hash: C{sha256:<hex>} of C{payload}.
    """

    objectId: str
    action: ChangeAction
    payload: bytes
    contentType: str = "application/octet-stream"
    version: str = ""
    previous: str = ""
    origin: str = ""
    hops: tuple[str, ...] = ()
    parent: str | None = None
    title: str = ""
    category: str = ""
    updated: float = 0.0
    hash: str = ""


@attrs.frozen
class ChangeBatch:
    """
    What one C{capture()} returns.

    @ivar changes: Local changes, oldest first.
    @ivar position: Opaque position to pass as C{since} next time; only its backend reads it.
    @ivar limited: Whether more changes are waiting (ask again at once).
    """

    changes: tuple[Change, ...]
    position: str | None
    limited: bool = False


@attrs.frozen
class VersionRecord:
    """
    The current version of one replicated object, as Hermod knows it.

    @ivar nodes: The own nodes the object was last published to, so that a change that moves it
        out of one retracts it there; empty when not known (objects published before migration
        005).
    @ivar sources: The partner subscriptions (C{"<jid> <node>"}) the object was received
        through and is still on; when the last of them retracts it, the local copy is removed.
    """

    objectId: str
    version: str
    hash: str
    deleted: bool = False
    nodes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


@attrs.frozen
class Conflict:
    """
    A losing version of an object, kept so that an operator can list it.
    """

    objectId: str
    loser: str
    winner: str
    payload: bytes
    time: float


@attrs.frozen
class PartnerState:
    """
    Replication state of one subscription to a partner node.

    @ivar mark: The last partner archive id applied, or L{None}.
    @ivar lag: Seconds between the partner's publish and our apply, for the last item.
    """

    partner: str
    node: str
    mark: str | None = None
    received: int = 0
    applied: int = 0
    refused: int = 0
    parked: int = 0
    ignored: int = 0
    lastApplied: float = 0.0
    lag: float = 0.0


@attrs.frozen
class ParkedItem:
    """
    A received item that could not be applied yet (its parent is missing) or at all (broken).

    @ivar waitingFor: The object id it waits for, or C{""} for a broken item.
    @ivar payload: The item payload exactly as received, before any transform.
    """

    parkedId: int
    backend: str
    partner: str
    node: str
    objectId: str
    payload: bytes
    reason: str
    waitingFor: str
    attempts: int
    time: float
