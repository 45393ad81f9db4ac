"""
Tests for L{hermod_component.xmpp.errors}.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.error import NS_XMPP_STANZAS, StanzaError

from hermod_component import errors
from hermod_component.xmpp.errors import (
    ERROR_CONDITIONS,
    NS_PUBSUB_ERRORS,
    conditionFor,
    toStanzaError,
)

# What XEP-0060 1.26 (and RFC 6120 for the service limits) asks for each domain error:
# (condition, type, pubsub condition).
EXPECTED = {
    errors.NodeNotFound: ("item-not-found", "cancel", None),
    errors.ItemNotFound: ("item-not-found", "cancel", None),
    errors.NodeExists: ("conflict", "cancel", None),
    errors.Forbidden: ("forbidden", "auth", None),
    errors.Outcast: ("forbidden", "auth", None),
    errors.NodeCreationForbidden: ("forbidden", "auth", None),
    errors.NotSubscribed: ("unexpected-request", "cancel", "not-subscribed"),
    errors.SubscriptionRequired: ("not-authorized", "auth", "not-subscribed"),
    errors.InvalidJID: ("bad-request", "modify", "invalid-jid"),
    errors.SubscriptionIdRequired: ("bad-request", "modify", "subid-required"),
    errors.InvalidSubscriptionId: ("not-acceptable", "modify", "invalid-subid"),
    errors.ClosedNode: ("not-allowed", "cancel", "closed-node"),
    errors.PendingSubscription: ("not-authorized", "auth", "pending-subscription"),
    errors.NoItemId: ("bad-request", "modify", "item-required"),
    errors.NodeIdRequired: ("bad-request", "modify", "nodeid-required"),
    errors.InvalidPayload: ("bad-request", "modify", "invalid-payload"),
    errors.PayloadRequired: ("bad-request", "modify", "payload-required"),
    errors.ItemForbidden: ("bad-request", "modify", "item-forbidden"),
    errors.TooManyItems: ("bad-request", "modify", "invalid-payload"),
    errors.PayloadTooBig: ("not-acceptable", "modify", "payload-too-big"),
    errors.InvalidOptions: ("not-acceptable", "modify", None),
    errors.InvalidSubscriptionOptions: ("bad-request", "modify", "invalid-options"),
    errors.PreconditionNotMet: ("conflict", "cancel", "precondition-not-met"),
    errors.ResourceConstraint: ("resource-constraint", "wait", None),
    errors.RateLimited: ("policy-violation", "wait", None),
    errors.NotAllowed: ("not-allowed", "cancel", None),
    errors.UnsupportedAccessModel: ("not-acceptable", "modify", "unsupported-access-model"),
    errors.BadRequest: ("bad-request", "modify", None),
}


def describe(error: StanzaError) -> tuple[str, str, str | None, str | None, str | None]:
    """
    The rendered error element as (condition, type, pubsub condition, feature, text).
    """
    element = error.getElement()
    condition = None
    text = None
    pubsub = None
    feature = None
    for child in element.elements():
        if child.uri == NS_XMPP_STANZAS and child.name == "text":
            text = str(child)
        elif child.uri == NS_XMPP_STANZAS:
            condition = child.name
        elif child.uri == NS_PUBSUB_ERRORS:
            pubsub = child.name
            feature = child.getAttribute("feature")
    assert condition is not None
    return condition, element["type"], pubsub, feature, text


class ErrorTableTests(SynchronousTestCase):
    """
    Tests for L{ERROR_CONDITIONS} and L{toStanzaError}.
    """

    def test_everyDomainErrorHasAnEntry(self) -> None:
        """
        Every request-level domain error class is in the table, so none falls through to
        internal-server-error.
        """
        domain = {
            cls
            for cls in vars(errors).values()
            if isinstance(cls, type)
            and issubclass(cls, errors.HermodError)
            and cls not in (errors.HermodError, errors.ConfigError)
        }
        self.assertEqual(domain - set(ERROR_CONDITIONS), set())

    def test_conditionsFollowTheXEP(self) -> None:
        """
        Each domain error renders with the condition, type and pubsub child XEP-0060 names,
        and its message as the error text.
        """
        for cls, (condition, errorType, pubsub) in EXPECTED.items():
            rendered = describe(toStanzaError(cls("why")))
            self.assertEqual(rendered, (condition, errorType, pubsub, None, "why"), cls)

    def test_unsupportedNamesItsFeature(self) -> None:
        """
        L{errors.Unsupported} becomes feature-not-implemented with the exception's feature.
        """
        rendered = describe(toStanzaError(errors.Unsupported("collections")))
        self.assertEqual(rendered[:4], ("feature-not-implemented", "cancel", "unsupported",
                                        "collections"))

    def test_failureIsUnwrapped(self) -> None:
        """
        A L{Failure} is answered like the exception it holds.
        """
        rendered = describe(toStanzaError(Failure(errors.NodeExists("taken"))))
        self.assertEqual(rendered, ("conflict", "cancel", None, None, "taken"))

    def test_stanzaErrorPassesThrough(self) -> None:
        """
        A stanza error is returned unchanged.
        """
        error = StanzaError("gone")
        self.assertIs(toStanzaError(error), error)

    def test_otherErrorsAreInternalWithoutDetail(self) -> None:
        """
        An exception that is not a domain error becomes internal-server-error with no text,
        so nothing about it leaks to the requester.
        """
        rendered = describe(toStanzaError(ZeroDivisionError("secret detail")))
        self.assertEqual(rendered, ("internal-server-error", "wait", None, None, None))

    def test_subclassesUseTheirParentsEntry(self) -> None:
        """
        A subclass of a domain error without an entry of its own uses its parent's.
        """

        class Missing(errors.NodeNotFound):
            pass

        self.assertEqual(conditionFor(Missing()), ERROR_CONDITIONS[errors.NodeNotFound])
