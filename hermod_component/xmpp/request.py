"""
Parsing of XEP-0060 requests into plain values for the policy.

L{HermodPubSubRequest} extends tx_xmpp's C{PubSubRequest} where XEP-0060 asks more of it: item
payloads as bytes, publish-options, subscription options, delete with redirect, full-JID
subscription changes with SubIDs, strict item ids and node ids. Every malformed request becomes a
C{bad-request} stanza error; an unknown verb becomes C{feature-not-implemented} with
C{<unsupported/>}.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.words.protocols.jabber import jid
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component.model import Affiliation, SubscriptionState
from hermod_component.xmpp._xmpplib import (
    NS_PUBSUB,
    NS_PUBSUB_NODE_CONFIG,
    NS_PUBSUB_OWNER,
    NS_PUBSUB_SUBSCRIBE_OPTIONS,
    Form,
    PubSubRequest,
    data_form,
    generic,
)
from hermod_component.xmpp.errors import badRequest, unsupported
from hermod_component.xmpp.rsm import ResultSetRequest, parseResultSet
from hermod_component.xmpp.stream import RawPayload

NS_PUBSUB_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
NS_SHIM = "http://jabber.org/protocol/shim"

FormValues = dict[str, list[str]]

# Elements of the pubsub namespaces that are parameters of a verb, not verbs of their own.
_PARAMETER_ELEMENTS = {
    (NS_PUBSUB, "options"),
    (NS_PUBSUB, "publish-options"),
    (NS_PUBSUB, "configure"),
}

# Requests XEP-0060 defines that Hermod does not implement, with their feature names.
_UNSUPPORTED_FEATURES = {
    ("get", NS_PUBSUB, "default"): "retrieve-default-sub",
}


def formValues(form: Form) -> FormValues:
    """
    The named fields of a submitted form as strings, C{FORM_TYPE} left out.
    """
    values: FormValues = {}
    for field in form.fieldList:
        if field.var is None or field.var == "FORM_TYPE":
            continue
        values[field.var] = [str(value) for value in field.values]
    return values


def _findForm(element: domish.Element, namespace: str, required: bool) -> Form | None:
    """
    The data form of C{namespace} under C{element}.

    @raise StanzaError: C{bad-request} when a form is required and missing, or a form has
        another C{FORM_TYPE}.
    """
    form = data_form.findForm(element, namespace)
    hasForm = any(
        child.uri == data_form.NS_X_DATA and child.name == "x" for child in element.elements()
    )
    if form is None and (required or hasForm):
        raise badRequest(text=f"a {namespace} data form is required")
    return form


def _shimHeaders(element: domish.Element) -> list[tuple[str, str]]:
    """
    The C{(name, value)} pairs of a XEP-0131 C{<headers/>} element, in order.

    @raise StanzaError: a C{<header/>} without a name (C{bad-request}).
    """
    pairs = []
    for header in element.elements(NS_SHIM, "header"):
        name = (header.getAttribute("name") or "").strip()
        if not name:
            raise badRequest(text="a SHIM header without a name")
        pairs.append((name, str(header)))
    return pairs


def _parent(element: domish.Element) -> domish.Element:
    parent: Any = element.parent
    return parent


def _bareJID(value: str) -> str:
    return jid.internJID(value).userhost()


class HermodPubSubRequest(PubSubRequest):
    """
    A publish-subscribe request, parsed into what L{IPubSubPolicy} takes.

    @ivar publishItems: C{(item id or None, payload bytes)} of a publish, with a third member,
        the item's XEP-0131 SHIM headers as C{(name, value)} pairs, when it carries any.
    @ivar publishOptions: The publish-options form values, or C{None}.
    @ivar formValues: Submitted node configuration or subscription options form values.
    @ivar formType: C{submit} or C{cancel} for configure and options requests.
    @ivar redirect: The redirect URI of a delete.
    @ivar affiliationChanges: Bare JID to affiliation of an owner affiliations set.
    @ivar subscriptionChanges: C{(jid, state, subid or None)} of an owner subscriptions set.
    @ivar resultSet: The XEP-0059 paging of an items request, or C{None}.
    """

    publishItems: (
        list[tuple[str | None, bytes] | tuple[str | None, bytes, tuple[tuple[str, str], ...]]]
        | None
    ) = None
    publishOptions: FormValues | None = None
    formValues: FormValues | None = None
    formType: str | None = None
    redirect: str | None = None
    affiliationChanges: dict[str, str] | None = None
    subscriptionChanges: list[tuple[str, str, str | None]] | None = None
    resultSet: ResultSetRequest | None = None

    _parameters: ClassVar[dict[str, list[str]]] = dict(
        PubSubRequest._parameters,
        publish=["node", "items", "publishOptions"],
        subscribe=["node", "jid", "subscribeOptions"],
        unsubscribe=["node", "jid", "subidOrNone"],
        optionsGet=["node", "jid", "subidOrNone"],
        optionsSet=["node", "jid", "subscriptionOptions", "subidOrNone"],
        create=["nodeOrNone", "createConfiguration"],
        default=["default"],
        configureGet=["node"],
        configureSet=["node", "configuration"],
        items=["node", "maxItems", "itemIdentifiers", "subidOrNone", "resultSet"],
        retract=["node", "notify", "retractIdentifiers"],
        delete=["node", "redirect"],
        affiliationsSet=["node", "affiliationChanges"],
        subscriptionsSet=["node", "subscriptionChanges"],
    )

    def parseElement(self, element: domish.Element) -> None:
        """
        Parse the verb and its parameters; anything malformed is a C{bad-request}.
        """
        try:
            self._parseVerb(element)
        except StanzaError:
            raise
        except Exception as e:
            raise badRequest(text="malformed pubsub request") from e

    def _parseStanza(self, element: domish.Element) -> None:
        """
        What C{generic.Stanza.parseElement} does for a request without child parsers (wokkel's
        C{PubSubRequest} has none; a test checks it): addressing, type and id, the stream's
        namespace stripped. Done here, it skips that method's per-call walk of the class
        hierarchy for child parsers and its two C{KeyError}s per child.
        """
        attributes = element.attributes
        sender = attributes.get("from")
        if sender is not None:
            self.sender = jid.internJID(sender)
        recipient = attributes.get("to")
        if recipient is not None:
            self.recipient = jid.internJID(recipient)
        self.stanzaType = element.getAttribute("type")
        self.stanzaID = element.getAttribute("id")
        generic.stripNamespace(element)
        self.element = element

    def _parseVerb(self, element: domish.Element) -> None:
        self._parseStanza(element)
        if self.sender is None:
            raise badRequest(text="the request has no sender")
        pubsub = element.pubsub
        verbs: list[tuple[str, domish.Element]] = []
        unknown: list[domish.Element] = []
        for child in pubsub.elements():
            key = (self.stanzaType, child.uri, child.name)
            verb = self._requestVerbMap.get(key)
            if verb is not None:
                verbs.append((verb, child))
            elif (child.uri, child.name) not in _PARAMETER_ELEMENTS:
                unknown.append(child)
        names = [verb for verb, _ in verbs]
        if "subscribe" in names and set(names) <= {"subscribe", "optionsSet"}:
            self.verb, verbElement = verbs[names.index("subscribe")]
        elif len(verbs) == 1:
            self.verb, verbElement = verbs[0]
        elif verbs:
            raise badRequest(text="more than one pubsub verb in one request")
        else:
            raise self._unknownVerb(unknown)
        for parameter in self._parameters[self.verb]:
            getattr(self, "_parse_" + parameter)(verbElement)

    def _unknownVerb(self, children: list[domish.Element]) -> StanzaError:
        """
        The error for a request without a verb Hermod implements.
        """
        known = {(uri, name) for _, uri, name in self._requestVerbMap}
        for child in children:
            feature = _UNSUPPORTED_FEATURES.get((self.stanzaType, child.uri, child.name))
            if feature is not None:
                return unsupported(feature)
            if (child.uri, child.name) in known:
                return badRequest(text=f"{child.name} is not an iq of type {self.stanzaType}")
        for child in children:
            if child.uri in (NS_PUBSUB, NS_PUBSUB_OWNER):
                return unsupported(child.name, text=f"unknown pubsub request {child.name}")
        return badRequest(text="no pubsub request element")

    def _parse_node(self, verbElement: domish.Element) -> None:
        """
        The node the request is about; missing or empty is C{nodeid-required}.
        """
        node = verbElement.getAttribute("node")
        if not node:
            raise badRequest("nodeid-required")
        self.nodeIdentifier = node

    def _parse_nodeOrNone(self, verbElement: domish.Element) -> None:
        """
        An optional node; empty means none.
        """
        self.nodeIdentifier = verbElement.getAttribute("node") or None

    def _parse_jid(self, verbElement: domish.Element) -> None:
        """
        The subscriber JID; missing or malformed is C{bad-request} + C{invalid-jid}.
        """
        value = verbElement.getAttribute("jid")
        if not value:
            raise badRequest("jid-required")
        try:
            self.subscriber = jid.internJID(value)
        except jid.InvalidFormat:
            raise badRequest("invalid-jid", text=f"malformed JID {value!r}") from None

    def _parse_items(self, verbElement: domish.Element) -> None:
        """
        The published items: id (empty means none) and payload bytes (as received when the
        stream kept them, see L{hermod_component.xmpp.stream}); more than one payload element
        in an item is C{invalid-payload}. A SHIM C{<headers/>} element next to the
        payload is the item's headers: kept out of the payload bytes and passed as the item's
        third member.
        """
        self.publishItems = []
        for element in verbElement.elements(NS_PUBSUB, "item"):
            payloads: list[bytes] = []
            headers: list[tuple[str, str]] = []
            for child in element.children:
                if isinstance(child, RawPayload):
                    payloads.append(child.raw)
                elif not isinstance(child, domish.Element):
                    continue
                elif (child.uri, child.name) == (NS_SHIM, "headers"):
                    headers += _shimHeaders(child)
                else:
                    payloads.append(child.toXml().encode("utf-8"))
            if len(payloads) > 1:
                raise badRequest("invalid-payload", text="an item holds one payload element")
            payload = payloads[0] if payloads else b""
            itemId = element.getAttribute("id") or None
            if headers:
                self.publishItems.append((itemId, payload, tuple(headers)))
            else:
                self.publishItems.append((itemId, payload))

    def _parse_publishOptions(self, verbElement: domish.Element) -> None:
        """
        The optional publish-options form, which must be of type submit.
        """
        self.publishOptions = None
        for element in _parent(verbElement).elements(NS_PUBSUB, "publish-options"):
            form = _findForm(element, NS_PUBSUB_PUBLISH_OPTIONS, required=False)
            if form is not None:
                if form.formType != "submit":
                    raise badRequest(text="publish-options form must be of type submit")
                self.publishOptions = formValues(form)

    def _parse_subscribeOptions(self, verbElement: domish.Element) -> None:
        """
        The optional C{<options/>} after C{<subscribe/>} (XEP-0060 6.3.7).
        """
        self.formValues = None
        for element in _parent(verbElement).elements(NS_PUBSUB, "options"):
            if element.hasAttribute("node") or element.hasAttribute("jid"):
                raise badRequest(text="options with subscribe take no node or jid")
            form = _findForm(element, NS_PUBSUB_SUBSCRIBE_OPTIONS, required=False)
            if form is not None:
                if form.formType != "submit":
                    raise badRequest(text="options form must be of type submit")
                self.formValues = formValues(form)
            else:
                self.formValues = {}

    def _parse_subscriptionOptions(self, verbElement: domish.Element) -> None:
        """
        The subscription options form of an options set: submit or cancel.
        """
        form = _findForm(verbElement, NS_PUBSUB_SUBSCRIBE_OPTIONS, required=True)
        assert form is not None
        if form.formType not in ("submit", "cancel"):
            raise badRequest(text="options form must be of type submit or cancel")
        self.formType = form.formType
        self.formValues = formValues(form)

    def _parse_createConfiguration(self, verbElement: domish.Element) -> None:
        """
        The optional C{<configure/>} of a create; empty means the default configuration.
        """
        self.formValues = None
        for element in _parent(verbElement).elements():
            if element.name == "configure" and element.uri in (NS_PUBSUB, NS_PUBSUB_OWNER):
                form = _findForm(element, NS_PUBSUB_NODE_CONFIG, required=False)
                if form is not None:
                    if form.formType != "submit":
                        raise badRequest(text="configuration form must be of type submit")
                    self.formValues = formValues(form)

    def _parse_configuration(self, verbElement: domish.Element) -> None:
        """
        The configuration form of a configure set: submit or cancel.
        """
        form = _findForm(verbElement, NS_PUBSUB_NODE_CONFIG, required=True)
        assert form is not None
        if form.formType not in ("submit", "cancel"):
            raise badRequest(text="configuration form must be of type submit or cancel")
        self.formType = form.formType
        self.formValues = formValues(form)

    def _parse_default(self, verbElement: domish.Element) -> None:
        """
        The node type of a default configuration request: leaf unless the form says otherwise.
        """
        self.nodeType = "leaf"
        form = _findForm(verbElement, NS_PUBSUB_NODE_CONFIG, required=False)
        if form is not None:
            values = formValues(form).get("pubsub#node_type") or ["leaf"]
            self.nodeType = values[0]
        if self.nodeType not in ("leaf", "collection"):
            raise badRequest(text=f"unknown node type {self.nodeType!r}")

    def _parse_maxItems(self, verbElement: domish.Element) -> None:
        """
        The optional C{max_items}, a positive whole number.
        """
        value = verbElement.getAttribute("max_items")
        self.maxItems = None
        if value is not None:
            try:
                self.maxItems = int(value)
            except ValueError:
                raise badRequest(text="max_items must be a positive whole number") from None
            if self.maxItems < 1:
                raise badRequest(text="max_items must be a positive whole number")

    def _parse_resultSet(self, verbElement: domish.Element) -> None:
        """
        The optional RSM C{<set/>} next to C{<items/>} (XEP-0059 with XEP-0060 6.5.4).
        """
        self.resultSet = parseResultSet(_parent(verbElement))

    def _parse_itemIdentifiers(self, verbElement: domish.Element) -> None:
        """
        The item ids of an items request; an C{<item/>} without id is a C{bad-request}.
        """
        ids = []
        for element in verbElement.elements(NS_PUBSUB, "item"):
            itemId = element.getAttribute("id")
            if not itemId:
                raise badRequest("item-required", text="an item without id")
            ids.append(itemId)
        self.itemIdentifiers = ids or None

    def _parse_retractIdentifiers(self, verbElement: domish.Element) -> None:
        """
        The item ids of a retract: at least one, each with an id (XEP-0060 7.2.3.4).
        """
        self._parse_itemIdentifiers(verbElement)
        if not self.itemIdentifiers:
            raise badRequest("item-required")

    def _parse_redirect(self, verbElement: domish.Element) -> None:
        """
        The optional C{<redirect uri=.../>} of a delete (XEP-0060 8.4.1).
        """
        self.redirect = None
        for element in verbElement.elements(NS_PUBSUB_OWNER, "redirect"):
            uri = element.getAttribute("uri")
            if not uri:
                raise badRequest(text="redirect without uri")
            self.redirect = uri

    def _parse_affiliationChanges(self, verbElement: domish.Element) -> None:
        """
        Bare JID to affiliation; each JID once, each affiliation one XEP-0060 knows.
        """
        changes: dict[str, str] = {}
        for element in verbElement.elements(NS_PUBSUB_OWNER, "affiliation"):
            entity = element.getAttribute("jid")
            affiliation = element.getAttribute("affiliation")
            if not entity or not affiliation:
                raise badRequest(text="affiliation needs jid and affiliation")
            if affiliation not in {member.value for member in Affiliation}:
                raise badRequest(text=f"unknown affiliation {affiliation!r}")
            bare = _bareJID(entity)
            if bare in changes:
                raise badRequest(text=f"more than one affiliation for {bare}")
            changes[bare] = affiliation
        self.affiliationChanges = changes

    def _parse_subscriptionChanges(self, verbElement: domish.Element) -> None:
        """
        C{(jid, state, subid)} changes; an entry without a state changes nothing (8.8.2.1).
        """
        changes: list[tuple[str, str, str | None]] = []
        for element in verbElement.elements(NS_PUBSUB_OWNER, "subscription"):
            entity = element.getAttribute("jid")
            if not entity:
                raise badRequest(text="subscription needs a jid")
            state = element.getAttribute("subscription")
            if state is None:
                continue
            if state not in {member.value for member in SubscriptionState}:
                raise badRequest(text=f"unknown subscription state {state!r}")
            changes.append(
                (jid.internJID(entity).full(), state, element.getAttribute("subid") or None)
            )
        self.subscriptionChanges = changes

    def requester(self) -> str:
        """
        The full JID of the requesting entity.
        """
        sender: Any = self.sender
        return str(sender.full())
