"""
Domain errors.

These carry no XMPP objects. C{hermod_component.xmpp.errors} maps each class to its stanza error
condition and pubsub-specific child in one table.
"""


class HermodError(Exception):
    """
    Base class of every domain error. The message is shown to the requester as the error text.
    """


class ConfigError(HermodError):
    """
    The configuration file is missing, malformed, or has a bad key or value.
    """


class NodeNotFound(HermodError):
    """
    The node does not exist (item-not-found).
    """


class NodeExists(HermodError):
    """
    A node with that name already exists (conflict).
    """


class ItemNotFound(HermodError):
    """
    The item does not exist (item-not-found).
    """


class Forbidden(HermodError):
    """
    The requester lacks the privilege for this action (forbidden).
    """


class NotSubscribed(HermodError):
    """
    The entity is not subscribed to the node (unexpected-request + not-subscribed).
    """


class InvalidJID(HermodError):
    """
    The JID in the request does not match the requester (bad-request + invalid-jid).
    """


class SubscriptionIdRequired(HermodError):
    """
    Several subscriptions exist and no SubID was given (bad-request + subid-required).
    """


class InvalidSubscriptionId(HermodError):
    """
    The SubID does not name a subscription of this entity (not-acceptable + invalid-subid).
    """


class ClosedNode(HermodError):
    """
    The node's access model excludes the requester (not-allowed + closed-node).
    """


class PendingSubscription(HermodError):
    """
    The subscription is still waiting for approval (not-authorized + pending-subscription).
    """


class Outcast(HermodError):
    """
    The requester is banned from the node (forbidden).
    """


class NoItemId(HermodError):
    """
    A retract or item request without an item id (bad-request + item-required).
    """


class NodeIdRequired(HermodError):
    """
    A request that needs a node named none (bad-request + nodeid-required).
    """


class InvalidPayload(HermodError):
    """
    The payload is not acceptable for this node (bad-request + invalid-payload).
    """


class PayloadRequired(HermodError):
    """
    The node delivers payloads and the publish has none (bad-request + payload-required).
    """


class ItemForbidden(HermodError):
    """
    A transient notification-only node received an item (bad-request + item-forbidden).
    """


class TooManyItems(HermodError):
    """
    More than one item in a publish to a node that takes one (bad-request + invalid-payload).
    """


class PayloadTooBig(HermodError):
    """
    The payload exceeds the node's or the service's limit (not-acceptable + payload-too-big).
    """


class InvalidOptions(HermodError):
    """
    A configuration or options form has a bad field or value (not-acceptable / bad-request).
    """


class PreconditionNotMet(HermodError):
    """
    Publish-options do not match the node configuration (conflict + precondition-not-met).
    """


class ResourceConstraint(HermodError):
    """
    A service limit was reached: nodes per owner, items or subscribers (resource-constraint).
    """


class RateLimited(HermodError):
    """
    The publisher exceeded its rate (policy-violation).
    """


class NotAllowed(HermodError):
    """
    The action is not allowed in this state (not-allowed).
    """


class InvalidCollection(NotAllowed):
    """
    A XEP-0248 association the graph cannot take: a leaf named as a collection, children
    given to a leaf, or a cycle (not-allowed + invalid-options).
    """


class NodeCreationForbidden(HermodError):
    """
    The service does not let this entity create nodes (forbidden).
    """


class Unsupported(HermodError):
    """
    A feature Hermod does not implement (feature-not-implemented + unsupported).

    @ivar feature: The XEP-0060 feature name, such as C{'collections'}.
    """

    def __init__(self, feature: str, text: str = "") -> None:
        super().__init__(text or f"feature not implemented: {feature}")
        self.feature = feature


class UnsupportedAccessModel(HermodError):
    """
    An access model that a component cannot enforce (not-acceptable + unsupported-access-model).
    """


class SubscriptionRequired(HermodError):
    """
    The node requires a subscription for this request (not-authorized + not-subscribed).
    """


class InvalidSubscriptionOptions(HermodError):
    """
    A subscription options form has a bad field or value (bad-request + invalid-options).
    """


class BadRequest(HermodError):
    """
    A request that is malformed in a way no more specific error names (bad-request).
    """


class TooManySubscriptions(HermodError):
    """
    The node holds as many subscriptions as the service allows
    (policy-violation + too-many-subscriptions).
    """
