"""
Values passed between Hermod's layers.

Everything here is a frozen C{attrs} class holding plain Python values: JIDs are strings (already
normalized by the XMPP edge), payloads are serialized XML C{bytes}. No layer can change another
layer's copy, and no XML object or database row travels further than the module that made it.
"""

from __future__ import annotations

import enum
from typing import Mapping

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


@attrs.frozen
class NodeConfig:
    """
    The configuration of one node, with XEP-0060 defaults.

    @ivar maxItems: Items kept per node; C{None} means C{max} (the service limit).
    @ivar itemExpire: Seconds after which an item is removed; C{None} for never.
    @ivar maxPayloadSize: Largest accepted payload in bytes; C{None} for the service limit.
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
    """

    itemId: str
    payload: bytes
    publisher: str = ""
    published: float = 0.0


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
    """

    eventId: int
    node: str
    action: EventAction
    itemId: str | None
    publisher: str
    payload: bytes
    time: float


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
