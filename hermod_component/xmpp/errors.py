"""
Domain errors as XMPP stanza errors.

L{ERROR_CONDITIONS} is the one table from the classes of L{hermod_component.errors} to the stanza
error they are answered with, following the error cases of XEP-0060 1.26 (section numbers in the
comments). L{toStanzaError} applies it; the handler calls it in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component import errors
from hermod_component.xmpp._xmpplib import NS_PUBSUB

NS_PUBSUB_ERRORS = NS_PUBSUB + "#errors"


@attrs.frozen
class ErrorCondition:
    """
    How one domain error is answered.

    @ivar condition: The RFC 6120 stanza error condition.
    @ivar errorType: The error type: C{cancel}, C{modify}, C{auth} or C{wait}.
    @ivar pubsubCondition: The child in the C{pubsub#errors} namespace, if any.
    @ivar feature: The C{feature} attribute of an C{<unsupported/>} child.
    """

    condition: str
    errorType: str
    pubsubCondition: str | None = None
    feature: str | None = None


ERROR_CONDITIONS: Mapping[type[errors.HermodError], ErrorCondition] = {
    # 6.1.3.10, 7.1.3.3, 8.2.3.5, 8.4.3.2 and every other "node does not exist"
    errors.NodeNotFound: ErrorCondition("item-not-found", "cancel"),
    # 7.2.3.2: the node or item does not exist
    errors.ItemNotFound: ErrorCondition("item-not-found", "cancel"),
    # 8.1.3: the requested NodeID already exists
    errors.NodeExists: ErrorCondition("conflict", "cancel"),
    # 7.1.3.1, 7.2.3.1, 8.2.3.2, 8.4.3.1, 8.5.3.2, 8.8.1.3, 8.9.1.3: insufficient privileges
    errors.Forbidden: ErrorCondition("forbidden", "auth"),
    # 6.1.3.8, 6.5.9.9: the requesting entity is blocked (outcast)
    errors.Outcast: ErrorCondition("forbidden", "auth"),
    # 8.1.3: not allowed to create nodes
    errors.NodeCreationForbidden: ErrorCondition("forbidden", "auth"),
    # 6.2.3.2, 6.3.4.2: not subscribed
    errors.NotSubscribed: ErrorCondition("unexpected-request", "cancel", "not-subscribed"),
    # 6.5.9.5: items of an authorize/whitelist node need a subscription
    errors.SubscriptionRequired: ErrorCondition("not-authorized", "auth", "not-subscribed"),
    # 6.1.3.1, 6.2.3.3(a), 6.3.4.3: the JID does not match the requester
    errors.InvalidJID: ErrorCondition("bad-request", "modify", "invalid-jid"),
    # 6.2.3.1, 6.3.4.4: several subscriptions and no SubID
    errors.SubscriptionIdRequired: ErrorCondition("bad-request", "modify", "subid-required"),
    # 6.2.3.5, 6.3.4.5: the SubID is not valid
    errors.InvalidSubscriptionId: ErrorCondition("not-acceptable", "modify", "invalid-subid"),
    # 6.1.3.4, 6.5.9.4: not on the whitelist
    errors.ClosedNode: ErrorCondition("not-allowed", "cancel", "closed-node"),
    # 6.1.3.7: a subscription is already waiting for approval
    errors.PendingSubscription: ErrorCondition(
        "not-authorized", "auth", "pending-subscription"
    ),
    # 7.2.3.4: no item or no ItemID in a retract; 7.1.3.6: no item in a persistent publish
    errors.NoItemId: ErrorCondition("bad-request", "modify", "item-required"),
    # 7.2.3.3, 8.2.3.3: the request does not name a node
    errors.NodeIdRequired: ErrorCondition("bad-request", "modify", "nodeid-required"),
    # 7.1.3.5: more than one payload element or the wrong payload namespace
    errors.InvalidPayload: ErrorCondition("bad-request", "modify", "invalid-payload"),
    # 7.1.3.6: a payload node got a publish without a payload
    errors.PayloadRequired: ErrorCondition("bad-request", "modify", "payload-required"),
    # 7.1.3.6: a transient notification node got an item
    errors.ItemForbidden: ErrorCondition("bad-request", "modify", "item-forbidden"),
    # 7.1.3.5 is the nearest case the XEP names for too many items in one publish
    errors.TooManyItems: ErrorCondition("bad-request", "modify", "invalid-payload"),
    # 7.1.3.4: the payload exceeds the limit
    errors.PayloadTooBig: ErrorCondition("not-acceptable", "modify", "payload-too-big"),
    # 8.2.5: an unacceptable node configuration value
    errors.InvalidOptions: ErrorCondition("not-acceptable", "modify"),
    # 6.3.5: an invalid set of subscription options
    errors.InvalidSubscriptionOptions: ErrorCondition("bad-request", "modify", "invalid-options"),
    # 7.1.5: publish-options precondition not met
    errors.PreconditionNotMet: ErrorCondition("conflict", "cancel", "precondition-not-met"),
    # RFC 6120 8.3.3.18: a service limit was reached; try again later
    errors.ResourceConstraint: ErrorCondition("resource-constraint", "wait"),
    # RFC 6120 8.3.3.12: the publisher exceeded its rate; try again later
    errors.RateLimited: ErrorCondition("policy-violation", "wait"),
    # XEP-0060 pubsub#errors registry: the node has as many subscriptions as allowed
    errors.TooManySubscriptions: ErrorCondition(
        "policy-violation", "wait", "too-many-subscriptions"
    ),
    # 8.2.3.4 and others: the action is not allowed in this state
    errors.NotAllowed: ErrorCondition("not-allowed", "cancel"),
    # XEP-0248 6.1 / 7.1: a leaf as collection, children of a leaf, or a cycle
    errors.InvalidCollection: ErrorCondition("not-allowed", "cancel", "invalid-options"),
    # 4.5 / 8.1.3: an access model the service does not support
    errors.UnsupportedAccessModel: ErrorCondition(
        "not-acceptable", "modify", "unsupported-access-model"
    ),
    # 6.1.3.9, 7.1.3.2, 7.2.3.5, 8.1.3, ...: feature-not-implemented + unsupported, feature
    # taken from the exception
    errors.Unsupported: ErrorCondition("feature-not-implemented", "cancel", "unsupported"),
    # RFC 6120 8.3.3.1: a malformed request no more specific error names
    errors.BadRequest: ErrorCondition("bad-request", "modify"),
}


def conditionFor(exception: BaseException) -> ErrorCondition | None:
    """
    The table entry of a domain error, looked up along its class hierarchy.

    @return: The entry, or C{None} when C{exception} is not a domain error in the table.
    """
    for cls in type(exception).__mro__:
        condition = ERROR_CONDITIONS.get(cls)
        if condition is not None:
            return condition
    return None


def makeStanzaError(
    condition: str,
    errorType: str,
    pubsubCondition: str | None = None,
    feature: str | None = None,
    text: str | None = None,
) -> StanzaError:
    """
    Build a stanza error with an optional C{pubsub#errors} child.
    """
    appCondition = None
    if pubsubCondition is not None:
        appCondition = domish.Element((NS_PUBSUB_ERRORS, pubsubCondition))
        if feature:
            appCondition["feature"] = feature
    return StanzaError(condition, type=errorType, text=text or None, appCondition=appCondition)


def badRequest(pubsubCondition: str | None = None, text: str | None = None) -> StanzaError:
    """
    A C{bad-request} stanza error for a malformed request.
    """
    return makeStanzaError("bad-request", "modify", pubsubCondition, text=text)


def unsupported(feature: str, text: str | None = None) -> StanzaError:
    """
    A C{feature-not-implemented} error with C{<unsupported feature=.../>}.
    """
    return makeStanzaError("feature-not-implemented", "cancel", "unsupported", feature, text)


def _exception(reason: Failure | BaseException) -> BaseException:
    if isinstance(reason, Failure):
        assert reason.value is not None
        return reason.value
    return reason


def isDomainError(reason: Failure | BaseException) -> bool:
    """
    Whether C{reason} is a stanza error or a domain error of the table.
    """
    exception = _exception(reason)
    return isinstance(exception, StanzaError) or conditionFor(exception) is not None


def toStanzaError(reason: Failure | BaseException) -> StanzaError:
    """
    The stanza error that answers C{reason}.

    A L{StanzaError} is returned as it is; a domain error becomes its table entry, with its
    message as the error text; anything else becomes a bare C{internal-server-error} (no
    text, so nothing about the failure leaks; the caller logs it).
    """
    exception = _exception(reason)
    if isinstance(exception, StanzaError):
        return exception
    condition = conditionFor(exception)
    if condition is None:
        return StanzaError("internal-server-error", type="wait")
    feature = condition.feature
    if isinstance(exception, errors.Unsupported):
        feature = exception.feature
    return makeStanzaError(
        condition.condition,
        condition.errorType,
        condition.pubsubCondition,
        feature,
        str(exception),
    )
