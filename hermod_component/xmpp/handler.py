"""
The XEP-0060 protocol handler: requests in, one policy call each, responses out.

L{makeHandlers} builds the handlers the component connection installs: the pubsub service
(requests, subscription authorization answers), disco, the notifier and a fallback that answers
every other IQ with C{service-unavailable} (RFC 6120 8.4).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ClassVar, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import jid
from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish, xpath

from hermod_component import errors
from hermod_component.metrics import ERRORS, PUBLISHED_ITEMS
from hermod_component.model import Item, NodeMetaData, NodeType, Subscription
from hermod_component.nodeoptions import (
    NODE_CONFIG_FIELDS,
    OptionField,
    subscriptionOptionFields,
    subscriptionOptionValues,
    valuesFromConfig,
)
from hermod_component.xmpp._xmpplib import (
    NS_PUBSUB,
    NS_PUBSUB_META_DATA,
    NS_PUBSUB_NODE_CONFIG,
    NS_PUBSUB_OWNER,
    NS_PUBSUB_SUBSCRIBE_OPTIONS,
    DiscoFeature,
    DiscoIdentity,
    DiscoItem,
    Field,
    Form,
    PubSubResource,
    PubSubService,
    XMPPHandler,
    data_form,
    disco,
    generic,
)
from hermod_component.xmpp.errors import badRequest, isDomainError, toStanzaError, unsupported
from hermod_component.xmpp.flow import ReadThrottle, throttleOf
from hermod_component.xmpp.multicast import MulticastFinder, MulticastHandler
from hermod_component.xmpp.notifier import (
    NS_PUBSUB_SUBSCRIBE_AUTHORIZATION,
    XMPPNotifier,
)
from hermod_component.xmpp.request import HermodPubSubRequest, formValues
from hermod_component.xmpp.rsm import (
    ResultSetRequest,
    pageOf,
    parseResultSet,
    resultSetElement,
)
from hermod_component.xmpp.serialize import quoteAttribute
from hermod_component.xmpp.stream import routeRequests

T = TypeVar("T")

#: XEP-0313 Message Archive Management, served on every node (see L{hermod_component.xmpp.mam}).
NS_MAM = "urn:xmpp:mam:2"
#: XEP-0131 SHIM: items carry publisher headers, which subscribers filter on
#: (C{hermod#header_filter}); notifications carry them and the SubIDs.
NS_SHIM = "http://jabber.org/protocol/shim"
#: XEP-0335 JSON containers, which a node can require (C{hermod#payload_format}).
NS_JSON = "urn:xmpp:json:0"

#: The XEP-0060 features Hermod implements, advertised in disco#info.
FEATURES = (
    "access-authorize",
    "access-open",
    "access-whitelist",
    "collections",
    "config-node",
    "create-and-configure",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "instant-nodes",
    "item-ids",
    "last-published",
    "manage-subscriptions",
    "member-affiliation",
    "meta-data",
    "modify-affiliations",
    # A leaf may be in several collections (pubsub#collection): XEP-0060's feature registry
    # spells it multi-collection, XEP-0248 5.1 multi-collections; clients look for either.
    "multi-collection",
    "multi-collections",
    "multi-subscribe",
    "outcast-affiliation",
    "persistent-items",
    "presence-notifications",
    "publish",
    "publish-options",
    "publish-only-affiliation",
    "publisher-affiliation",
    "purge-nodes",
    "retract-items",
    "retrieve-affiliations",
    "retrieve-default",
    "retrieve-items",
    "retrieve-subscriptions",
    "subscribe",
    "subscription-notifications",
    "subscription-options",
)


def _verb(
    method: Callable[[HermodPubSubResource, HermodPubSubRequest], Coroutine[Any, Any, T]],
) -> Callable[[HermodPubSubResource, HermodPubSubRequest], Deferred[T]]:
    """
    Make an C{async def} verb of L{HermodPubSubResource} return a Deferred, as wokkel expects.
    """

    @functools.wraps(method)
    def verb(self: HermodPubSubResource, request: HermodPubSubRequest) -> Deferred[T]:
        return Deferred.fromCoroutine(method(self, request))

    return verb


def _value(value: object) -> str:
    """
    An enum member's value, or the string itself.
    """
    return str(getattr(value, "value", value))


def _optionsForm(
    formType: str, namespace: str, fields: Iterable[OptionField], values: dict[str, list[str]]
) -> Form:
    """
    A data form from L{nodeoptions} field definitions and form values.
    """
    form = Form(formType, formNamespace=namespace)
    for definition in fields:
        form.addField(
            Field(
                definition.fieldType,
                definition.var,
                values=list(values.get(definition.var, [])),
                label=definition.label,
                options=dict(definition.options) if definition.options else None,
            )
        )
    return form


def _pubsub(namespace: str = NS_PUBSUB) -> domish.Element:
    return domish.Element((namespace, "pubsub"))


@attrs.frozen
class PublishAnswer:
    """
    What a publish answers: the node and the stored item ids. L{_RequestHandlerMixin} writes
    it as pre-serialized bytes (L{publishAnswerBytes}), the hot path's answer, instead of
    building and serializing domish elements.

    @ivar node: The node published to.
    @ivar itemIds: The stored item ids, in order.
    """

    node: str
    itemIds: tuple[str, ...]


_PUBLISH_OPEN = b"><pubsub xmlns=" + quoteAttribute(NS_PUBSUB) + b"><publish node="


def publishAnswerBytes(iq: domish.Element, answer: PublishAnswer) -> bytes | None:
    """
    The C{result} answer to the publish request C{iq}, serialized: addressing swapped and id
    copied as L{toResponse} does, then C{<pubsub><publish node=...><item id=.../>...}.

    @return: The stanza, or C{None} when C{iq} has no C{to} (the answer then needs the
        stream's own JID stamped on it, which the element path does).
    """
    to = iq.getAttribute("to")
    if not to:
        return None
    head = b"<iq type='result' from=" + quoteAttribute(to)
    sender = iq.getAttribute("from")
    if sender:
        head += b" to=" + quoteAttribute(sender)
    stanzaId = iq.getAttribute("id")
    if stanzaId:
        head += b" id=" + quoteAttribute(stanzaId)
    items = b"".join(b"<item id=" + quoteAttribute(itemId) + b"/>" for itemId in answer.itemIds)
    return (
        head + _PUBLISH_OPEN + quoteAttribute(answer.node) + b">" + items
        + b"</publish></pubsub></iq>"
    )


def _publishElement(answer: PublishAnswer) -> domish.Element:
    """
    The C{<pubsub/>} payload of a publish's answer, as an element.
    """
    response = _pubsub()
    publish = response.addElement("publish")
    publish["node"] = answer.node
    for itemId in answer.itemIds:
        publish.addElement("item")["id"] = itemId
    return response


def _subscriptionElement(parent: domish.Element, subscription: Subscription) -> domish.Element:
    element = parent.addElement("subscription")
    element["node"] = subscription.node
    element["jid"] = subscription.subscriber
    element["subscription"] = _value(subscription.state)
    if subscription.subscriptionId:
        element["subid"] = subscription.subscriptionId
    return element


def _itemElement(parent: domish.Element, item: Item) -> None:
    element = parent.addElement("item")
    element["id"] = item.itemId
    if item.publisher:
        element["publisher"] = item.publisher
    if item.payload:
        element.addRawXml(item.payload.decode("utf-8"))
    if item.headers:
        headers = element.addElement((NS_SHIM, "headers"))
        for name, value in item.headers:
            headers.addElement("header", content=value)["name"] = name


class HermodPubSubResource(PubSubResource):
    """
    Every pubsub verb as one call to the policy, its result as the response payload.

    @ivar policy: The L{IPubSubPolicy} provider.
    """

    discoIdentity = DiscoIdentity("pubsub", "service", "Hermod publish-subscribe service")
    def __init__(self, policy: Any) -> None:
        self.policy = policy
        features = list(FEATURES)
        if getattr(getattr(policy, "settings", None), "autoCreate", False):
            features.append("auto-create")
        self.features = sorted(features)

    def _optionFields(self) -> tuple[OptionField, ...]:
        """
        The subscription options form's fields: C{pubsub#show-values} only while presence
        is tracked.
        """
        return subscriptionOptionFields(bool(getattr(self.policy, "presenceTracked", False)))

    @_verb
    async def publish(self, request: HermodPubSubRequest) -> PublishAnswer:
        """
        Publish items (XEP-0060 7.1); the response names the stored item ids.
        """
        itemIds = await self.policy.publish(
            request.requester(),
            request.nodeIdentifier,
            request.publishItems,
            request.publishOptions,
        )
        PUBLISHED_ITEMS.inc(len(itemIds or ()))
        return PublishAnswer(request.nodeIdentifier, tuple(itemIds or ()))

    @_verb
    async def subscribe(self, request: HermodPubSubRequest) -> domish.Element:
        """
        Subscribe, with options when given (XEP-0060 6.1, 6.3.7).
        """
        subscription = await self.policy.subscribe(
            request.requester(),
            request.nodeIdentifier,
            request.subscriber.full(),
            request.formValues,
        )
        response = _pubsub()
        element = _subscriptionElement(response, subscription)
        if subscription.state.value == "unconfigured":
            element.addElement("subscribe-options").addElement("required")
        if request.formValues is not None:
            options = response.addElement("options")
            options.addChild(
                _optionsForm(
                    "result",
                    NS_PUBSUB_SUBSCRIBE_OPTIONS,
                    self._optionFields(),
                    subscriptionOptionValues(subscription.options),
                ).toElement()
            )
        return response

    @_verb
    async def unsubscribe(self, request: HermodPubSubRequest) -> None:
        """
        Unsubscribe (XEP-0060 6.2).
        """
        await self.policy.unsubscribe(
            request.requester(),
            request.nodeIdentifier,
            request.subscriber.full(),
            request.subscriptionIdentifier,
        )

    @_verb
    async def optionsGet(self, request: HermodPubSubRequest) -> domish.Element:
        """
        Subscription options form (XEP-0060 6.3.2).
        """
        subscription = await self.policy.getSubscriptionOptions(
            request.requester(),
            request.nodeIdentifier,
            request.subscriber.full(),
            request.subscriptionIdentifier,
        )
        response = _pubsub()
        options = response.addElement("options")
        options["node"] = subscription.node
        options["jid"] = subscription.subscriber
        if subscription.subscriptionId:
            options["subid"] = subscription.subscriptionId
        options.addChild(
            _optionsForm(
                "form",
                NS_PUBSUB_SUBSCRIBE_OPTIONS,
                self._optionFields(),
                subscriptionOptionValues(subscription.options),
            ).toElement()
        )
        return response

    @_verb
    async def optionsSet(self, request: HermodPubSubRequest) -> None:
        """
        Submit subscription options (XEP-0060 6.3.5); a cancelled form changes nothing.
        """
        if request.formType == "cancel":
            return
        await self.policy.setSubscriptionOptions(
            request.requester(),
            request.nodeIdentifier,
            request.subscriber.full(),
            request.subscriptionIdentifier,
            request.formValues or {},
        )

    @_verb
    async def subscriptions(self, request: HermodPubSubRequest) -> domish.Element:
        """
        The requester's own subscriptions (XEP-0060 5.6).
        """
        result = await self.policy.entitySubscriptions(
            request.requester(), request.nodeIdentifier
        )
        response = _pubsub()
        subscriptions = response.addElement("subscriptions")
        if request.nodeIdentifier:
            subscriptions["node"] = request.nodeIdentifier
        for subscription in result:
            _subscriptionElement(subscriptions, subscription)
        return response

    @_verb
    async def affiliations(self, request: HermodPubSubRequest) -> domish.Element:
        """
        The requester's own affiliations (XEP-0060 5.7).
        """
        result = await self.policy.entityAffiliations(
            request.requester(), request.nodeIdentifier
        )
        response = _pubsub()
        affiliations = response.addElement("affiliations")
        if request.nodeIdentifier:
            affiliations["node"] = request.nodeIdentifier
        for node, affiliation in result:
            element = affiliations.addElement("affiliation")
            element["node"] = node
            element["affiliation"] = _value(affiliation)
        return response

    @_verb
    async def create(self, request: HermodPubSubRequest) -> domish.Element | None:
        """
        Create a node, instant or named, with an optional configuration (XEP-0060 8.1).
        """
        node = await self.policy.createNode(
            request.requester(), request.nodeIdentifier, request.formValues
        )
        if request.nodeIdentifier == node:
            return None
        response = _pubsub()
        response.addElement("create")["node"] = node
        return response

    @_verb
    async def default(self, request: HermodPubSubRequest) -> domish.Element:
        """
        The default node configuration (XEP-0060 8.3).
        """
        config = await self.policy.defaultConfiguration(request.requester(), request.nodeType)
        response = _pubsub(NS_PUBSUB_OWNER)
        response.addElement("default").addChild(
            _optionsForm(
                "form", NS_PUBSUB_NODE_CONFIG, NODE_CONFIG_FIELDS, valuesFromConfig(config)
            ).toElement()
        )
        return response

    @_verb
    async def configureGet(self, request: HermodPubSubRequest) -> domish.Element:
        """
        The node configuration form (XEP-0060 8.2.1).
        """
        config = await self.policy.getConfiguration(request.requester(), request.nodeIdentifier)
        response = _pubsub(NS_PUBSUB_OWNER)
        configure = response.addElement("configure")
        configure["node"] = request.nodeIdentifier
        configure.addChild(
            _optionsForm(
                "form", NS_PUBSUB_NODE_CONFIG, NODE_CONFIG_FIELDS, valuesFromConfig(config)
            ).toElement()
        )
        return response

    @_verb
    async def configureSet(self, request: HermodPubSubRequest) -> None:
        """
        Submit a node configuration (XEP-0060 8.2.4); a cancelled form changes nothing.
        """
        if request.formType == "cancel":
            return
        await self.policy.configure(
            request.requester(), request.nodeIdentifier, request.formValues or {}
        )

    @_verb
    async def items(self, request: HermodPubSubRequest) -> domish.Element:
        """
        Items of a node: all, the newest C{max_items}, by id (XEP-0060 6.5), or one XEP-0059
        page, newest first, anchored on item ids so it stays stable while items arrive.
        """
        paging = request.resultSet
        if paging is not None and not request.itemIdentifiers:
            return await self._itemsPage(request, paging)
        result = await self.policy.items(
            request.requester(),
            request.nodeIdentifier,
            request.maxItems,
            request.itemIdentifiers,
            request.subscriptionIdentifier,
        )
        response = _pubsub()
        items = response.addElement("items")
        items["node"] = request.nodeIdentifier
        for item in result:
            _itemElement(items, item)
        return response

    async def _itemsPage(
        self, request: HermodPubSubRequest, paging: ResultSetRequest
    ) -> domish.Element:
        if paging.index is not None and paging.after is None and paging.before is None:
            raise unsupported("rsm-index", text="page items with after or before, not index")
        found, count, firstIndex = await self.policy.itemsPage(
            request.requester(),
            request.nodeIdentifier,
            paging.after or None,
            paging.before,
            paging.maxResults,
        )
        response = _pubsub()
        items = response.addElement("items")
        items["node"] = request.nodeIdentifier
        for item in found:
            _itemElement(items, item)
        response.addChild(
            resultSetElement(
                found[0].itemId if found else None,
                found[-1].itemId if found else None,
                count,
                firstIndex if found else None,
            )
        )
        return response

    @_verb
    async def retract(self, request: HermodPubSubRequest) -> None:
        """
        Retract items, notifying when asked (XEP-0060 7.2).
        """
        await self.policy.retract(
            request.requester(),
            request.nodeIdentifier,
            request.itemIdentifiers,
            bool(request.notify),
        )

    @_verb
    async def purge(self, request: HermodPubSubRequest) -> None:
        """
        Remove every item of a node (XEP-0060 8.5).
        """
        await self.policy.purge(request.requester(), request.nodeIdentifier)

    @_verb
    async def delete(self, request: HermodPubSubRequest) -> None:
        """
        Delete a node, with an optional redirect (XEP-0060 8.4).
        """
        await self.policy.deleteNode(
            request.requester(), request.nodeIdentifier, request.redirect
        )

    @_verb
    async def affiliationsGet(self, request: HermodPubSubRequest) -> domish.Element:
        """
        The node's affiliations, for owners (XEP-0060 8.9.1).
        """
        result = await self.policy.getAffiliations(request.requester(), request.nodeIdentifier)
        response = _pubsub(NS_PUBSUB_OWNER)
        affiliations = response.addElement("affiliations")
        affiliations["node"] = request.nodeIdentifier
        for entity, affiliation in sorted(result.items()):
            element = affiliations.addElement("affiliation")
            element["jid"] = entity
            element["affiliation"] = _value(affiliation)
        return response

    @_verb
    async def affiliationsSet(self, request: HermodPubSubRequest) -> None:
        """
        Modify affiliations, for owners (XEP-0060 8.9.2).
        """
        await self.policy.setAffiliations(
            request.requester(), request.nodeIdentifier, request.affiliationChanges
        )

    @_verb
    async def subscriptionsGet(self, request: HermodPubSubRequest) -> domish.Element:
        """
        The node's subscriptions, for owners (XEP-0060 8.8.1).
        """
        result = await self.policy.getSubscriptions(request.requester(), request.nodeIdentifier)
        response = _pubsub(NS_PUBSUB_OWNER)
        subscriptions = response.addElement("subscriptions")
        subscriptions["node"] = request.nodeIdentifier
        for subscription in result:
            element = subscriptions.addElement("subscription")
            element["jid"] = subscription.subscriber
            element["subscription"] = _value(subscription.state)
            if subscription.subscriptionId:
                element["subid"] = subscription.subscriptionId
        return response

    @_verb
    async def subscriptionsSet(self, request: HermodPubSubRequest) -> None:
        """
        Modify subscriptions, for owners (XEP-0060 8.8.2).
        """
        await self.policy.setSubscriptions(
            request.requester(), request.nodeIdentifier, request.subscriptionChanges
        )


class _RequestHandlerMixin:
    """
    IQ request handling with Hermod's error path: domain errors become their stanza error
    (L{toStanzaError}), anything else is logged with its traceback and answered
    C{internal-server-error} with no detail.
    """

    log = Logger()
    iqHandlers: ClassVar[dict[str, str]]
    send: Callable[[object], None]

    def handleRequest(self, iq: domish.Element) -> None:
        """
        Answer C{iq} with the handler's result or error.
        """
        handler = self._handlerFor(iq)
        iq.handled = True  # type: ignore[attr-defined]
        if handler is None:
            d: Deferred[Any] = fail(badRequest())
        else:
            d = maybeDeferred(handler, iq)
        d.addCallback(self._resultResponse, iq)
        d.addErrback(self._errorResponse, iq)
        d.addCallback(self.send)
        d.addErrback(lambda f: self.log.failure("Could not send a response", f))
        if not d.called:
            # In progress: counted, so that a flood of requests stops reading (flow.py).
            throttle = throttleOf(getattr(self, "xmlstream", None))
            if throttle is not None:
                throttle.requestStarted()
                d.addBoth(_requestDone, throttle)

    def _handlerFor(self, iq: domish.Element) -> Callable[[domish.Element], Any] | None:
        """
        The method of L{iqHandlers} whose query matches C{iq} last, if any.
        """
        handler = None
        for query, method in self.iqHandlers.items():
            if xpath.internQuery(query).matches(iq):
                handler = getattr(self, method)
        return handler

    def _resultResponse(self, result: object, iq: domish.Element) -> domish.Element | bytes:
        if isinstance(result, PublishAnswer):
            serialized = publishAnswerBytes(iq, result)
            if serialized is not None:
                return serialized
            result = _publishElement(result)
        response = toResponse(iq, "result")
        if isinstance(result, domish.Element):
            response.addChild(result)
        elif result:
            for element in result:  # type: ignore[attr-defined]
                response.addChild(element)
        return response

    def _errorResponse(self, failure: Failure, iq: domish.Element) -> domish.Element:
        if not isDomainError(failure):
            self.log.failure(
                "Error handling an IQ {type} from {sender}",
                failure,
                type=iq.getAttribute("type"),
                sender=iq.getAttribute("from"),
            )
        error = toStanzaError(failure)
        ERRORS.labels(error.condition).inc()
        response: domish.Element = error.toResponse(iq)
        return response


def _requestDone(result: object, throttle: ReadThrottle) -> object:
    throttle.requestDone()
    return result


class HermodPubSubService(_RequestHandlerMixin, PubSubService):
    """
    The XEP-0060 protocol handler: dispatches requests to L{HermodPubSubResource}, serves disco
    for the service and its nodes, and takes owners' answers to subscription authorization
    requests (XEP-0060 8.6).
    """

    log = Logger()
    iqHandlers: ClassVar[dict[str, str]] = {"/*": "_onPubSubRequest"}

    def __init__(self, resource: HermodPubSubResource) -> None:
        PubSubService.__init__(self, resource)
        self.policy = resource.policy
        self._verbs: dict[str, Callable[[HermodPubSubRequest], Deferred[Any]]] = {
            "publish": resource.publish,
            "subscribe": resource.subscribe,
            "unsubscribe": resource.unsubscribe,
            "optionsGet": resource.optionsGet,
            "optionsSet": resource.optionsSet,
            "subscriptions": resource.subscriptions,
            "affiliations": resource.affiliations,
            "create": resource.create,
            "default": resource.default,
            "configureGet": resource.configureGet,
            "configureSet": resource.configureSet,
            "items": resource.items,
            "retract": resource.retract,
            "purge": resource.purge,
            "delete": resource.delete,
            "affiliationsGet": resource.affiliationsGet,
            "affiliationsSet": resource.affiliationsSet,
            "subscriptionsGet": resource.subscriptionsGet,
            "subscriptionsSet": resource.subscriptionsSet,
        }

    def connectionMade(self) -> None:
        """
        Take pubsub requests: as routed requests on Hermod's own stream (the hot path: no
        XPath dispatch), through the observer wokkel adds on any other.
        """
        super().connectionMade()
        routeRequests(self.xmlstream, (NS_PUBSUB, NS_PUBSUB_OWNER), self.handleRequest)

    def connectionInitialized(self) -> None:
        """
        Listen for owners' subscription authorization forms.
        """
        self.xmlstream.addObserver("/message/x", self._onMessageForm)

    def _handlerFor(self, iq: domish.Element) -> Callable[[domish.Element], Any] | None:
        """
        Every request this service gets is a pubsub request (its one query is C{/*}).
        """
        return self._onPubSubRequest

    def _onPubSubRequest(self, iq: domish.Element) -> Deferred[Any]:
        request = HermodPubSubRequest.fromElement(iq)
        return self._verbs[request.verb](request)

    # disco

    def getDiscoInfo(
        self, requestor: jid.JID, target: jid.JID, nodeIdentifier: str = ""
    ) -> Deferred[list[Any]]:
        """
        The service identity and features, or a node's identity and meta-data (XEP-0060 5.4).
        """
        if not nodeIdentifier:
            info: list[Any] = [
                self.resource.discoIdentity,
                DiscoFeature(disco.NS_DISCO_INFO),
                DiscoFeature(disco.NS_DISCO_ITEMS),
                DiscoFeature(NS_PUBSUB),
                DiscoFeature(NS_SHIM),
                DiscoFeature(NS_JSON),
            ]
            info += [DiscoFeature(f"{NS_PUBSUB}#{f}") for f in self.resource.features]
            return succeed(info)
        d = Deferred.fromCoroutine(self._nodeInfo(requestor, nodeIdentifier))
        d.addErrback(self._discoError)
        return d

    async def _nodeInfo(self, requestor: jid.JID, identifier: str) -> list[Any]:
        info: NodeMetaData = await self.policy.nodeInfo(requestor.full(), identifier)
        return [
            DiscoIdentity("pubsub", info.node.config.nodeType.value),
            DiscoFeature(NS_MAM),  # every node's event log is its archive (xmpp/mam.py)
            metaDataForm(info),
        ]

    def getDiscoItems(
        self, requestor: jid.JID, target: jid.JID, nodeIdentifier: str = ""
    ) -> Deferred[list[DiscoItem]]:
        """
        The nodes of the service (with titles as names) or the items of a node (ids as names).
        """
        d = Deferred.fromCoroutine(self._discoItems(requestor, target, nodeIdentifier))
        d.addErrback(self._discoError)
        return d

    async def _discoItems(
        self, requestor: jid.JID, target: jid.JID, identifier: str
    ) -> list[DiscoItem]:
        requester = requestor.full()
        if not identifier:
            nodes = await self.policy.listNodes(requester, None)
            return [DiscoItem(target, node, title or None) for node, title in nodes]
        info: NodeMetaData = await self.policy.nodeInfo(requester, identifier)
        if info.node.config.nodeType == NodeType.COLLECTION:
            nodes = await self.policy.listNodes(requester, identifier)
            return [DiscoItem(target, child, title or None) for child, title in nodes]
        itemIds = await self.policy.itemIds(requester, identifier)
        return [DiscoItem(target, "", itemId) for itemId in itemIds]

    def _discoError(self, failure: Failure) -> list[Any]:
        if failure.check(errors.NodeNotFound):
            return []
        if not isDomainError(failure):
            self.log.failure("Error answering a disco request", failure)
        raise toStanzaError(failure)

    # subscription authorization (XEP-0060 8.6)

    def _onMessageForm(self, message: domish.Element) -> None:
        if message.getAttribute("type") == "error":
            return
        form = data_form.findForm(message, NS_PUBSUB_SUBSCRIBE_AUTHORIZATION)
        if form is None or form.formNamespace != NS_PUBSUB_SUBSCRIBE_AUTHORIZATION:
            return
        message.handled = True  # type: ignore[attr-defined]
        if form.formType != "submit":
            return
        d = Deferred.fromCoroutine(self._answerAuthorization(message, formValues(form)))
        d.addErrback(self._authorizationError, message)

    async def _answerAuthorization(
        self, message: domish.Element, values: dict[str, list[str]]
    ) -> None:
        def one(var: str) -> str | None:
            given = values.get(var) or [""]
            return given[0].strip() or None

        node = one("pubsub#node")
        subscriber = one("pubsub#subscriber_jid")
        allow = one("pubsub#allow")
        sender = message.getAttribute("from")
        if not node or not subscriber or allow not in ("1", "true", "0", "false") or not sender:
            raise badRequest(text="incomplete subscription authorization form")
        await self.policy.answerAuthorization(
            jid.internJID(sender).full(),
            node,
            jid.internJID(subscriber).full(),
            one("pubsub#subid"),
            allow in ("1", "true"),
        )

    def _authorizationError(self, failure: Failure, message: domish.Element) -> None:
        if isDomainError(failure):
            self.log.warn(  # noqa: G010
                "Refused a subscription authorization from {sender}: {error}",
                sender=message.getAttribute("from"),
                error=failure.value,
            )
        else:
            self.log.failure("Error handling a subscription authorization", failure)
        self.send(toStanzaError(failure).toResponse(message))


def metaDataForm(info: NodeMetaData) -> Form:
    """
    The node meta-data form of disco#info (XEP-0060 5.4): configuration, creator, date,
    owners, publishers and the number of subscribers.
    """
    node = info.node
    form = Form("result", formNamespace=NS_PUBSUB_META_DATA)
    form.addField(Field("text-single", "pubsub#node_type", node.config.nodeType.value))
    form.addField(Field("jid-single", "pubsub#creator", node.creator))
    form.addField(Field("jid-multi", "pubsub#owner", values=list(info.owners)))
    form.addField(Field("jid-multi", "pubsub#publisher", values=list(info.publishers)))
    form.addField(
        Field("text-single", "pubsub#num_subscribers", str(info.subscriberCount))
    )
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(node.created))
    form.addField(Field("text-single", "pubsub#creation_date", created))
    values = valuesFromConfig(node.config)
    for definition in NODE_CONFIG_FIELDS:
        form.addField(
            Field(
                definition.fieldType,
                definition.var,
                values=list(values.get(definition.var, [])),
                label=definition.label,
            )
        )
    return form


class HermodDiscoHandler(_RequestHandlerMixin, disco.DiscoHandler):
    """
    XEP-0030 disco over the sibling handlers, with Hermod's error path, and XEP-0059 paging
    of disco#items.
    """

    log = Logger()
    #: Page size of a disco#items page that names no C{max}, and the largest served.
    defaultPageSize = 100
    largestPage = 1000

    def _onDiscoItems(self, iq: domish.Element) -> Deferred[domish.Element]:
        """
        The items, or the page of them that an RSM C{<set/>} asks for, with its C{<set/>}.
        """
        paging = parseResultSet(iq.query) if iq.query is not None else None
        d: Deferred[domish.Element] = disco.DiscoHandler._onDiscoItems(self, iq)
        if paging is None:
            return d

        def page(response: domish.Element) -> domish.Element:
            children = [c for c in response.elements() if c.name == "item"]
            ids = [c.getAttribute("node") or c.getAttribute("name") or "" for c in children]
            first, end = pageOf(ids, paging, self.defaultPageSize, self.largestPage)
            response.children = []
            for child in children[first:end]:
                response.addChild(child)
            selected = ids[first:end]
            response.addChild(
                resultSetElement(
                    selected[0] if selected else None,
                    selected[-1] if selected else None,
                    len(ids),
                    first if selected else None,
                )
            )
            return response

        d.addCallback(page)
        return d


def makeHandlers(
    policy: Any, multicast: str = "off", answerFirst: bool = False
) -> list[XMPPHandler]:
    """
    The XMPP handlers of a Hermod pubsub service, in the order to install them.

    Sets C{policy.notifier} to the returned L{XMPPNotifier}.

    @param policy: The L{IPubSubPolicy} provider; its C{service} is the component JID.
    @param multicast: C{component.multicast}: C{"off"}, C{"auto"} or a service JID.
    @param answerFirst: The notifier's L{XMPPNotifier.answerFirst}: the service sets it;
        tests that look at the notifications a call writes at once leave it off.
    """
    from hermod_component.xmpp.mam import ArchiveHandler  # it builds on this module
    from hermod_component.xmpp.presence import PresenceHandler

    notifier = XMPPNotifier(policy.service, getattr(policy, "clock", None),
                            answerFirst=answerFirst)
    policy.notifier = notifier
    presence = PresenceHandler(policy)
    service = HermodPubSubService(HermodPubSubResource(policy))
    handlers: list[XMPPHandler] = [
        service, ArchiveHandler(policy), HermodDiscoHandler(), notifier, presence,
    ]
    finder = _multicastFinder(notifier, multicast)
    if finder is not None:
        handlers.append(MulticastHandler(finder))
    return [*handlers, generic.FallbackHandler()]


def _multicastFinder(notifier: XMPPNotifier, multicast: str) -> MulticastFinder | None:
    """
    The shared multicast state of C{notifier}'s streams, or L{None} with C{"off"}.
    """
    if multicast == "off":
        return None
    finder = notifier.multicastFinder
    if finder is None:
        finder = notifier.multicastFinder = MulticastFinder(multicast, notifier)
    return finder


def makeNotifier(
    policy: Any, connections: int, clock: Any = None, answerFirst: bool = False
) -> XMPPNotifier:
    """
    The notifier of a component with C{connections} streams, set as C{policy.notifier}.

    @param clock: Bounds a returning stream's wait for its barrier pings.
    @param answerFirst: As for L{makeHandlers}.
    """
    from hermod_component.xmpp.streams import StreamSet

    notifier = XMPPNotifier(
        policy.service,
        getattr(policy, "clock", None),
        StreamSet(policy.service, connections, clock),
        answerFirst=answerFirst,
    )
    policy.notifier = notifier
    return notifier


def makeStreamHandlers(
    policy: Any, notifier: XMPPNotifier, index: int, multicast: str = "off"
) -> list[XMPPHandler]:
    """
    The XMPP handlers of component stream C{index} when there are several: each stream answers
    the requests that arrive on it, and hands its stream to the shared C{notifier}.

    @param notifier: From L{makeNotifier}, shared by all streams.
    @param multicast: C{component.multicast}, as for L{makeHandlers}.
    """
    from hermod_component.xmpp.mam import ArchiveHandler  # it builds on this module
    from hermod_component.xmpp.streams import NotifierOutlet

    service = HermodPubSubService(HermodPubSubResource(policy))
    handlers: list[XMPPHandler] = [
        service, ArchiveHandler(policy), HermodDiscoHandler(),
        NotifierOutlet(notifier.streams, index), _poolPresenceHandler(policy, notifier),
    ]
    finder = _multicastFinder(notifier, multicast)
    if finder is not None:
        handlers.append(MulticastHandler(finder))
    return [*handlers, generic.FallbackHandler()]


def _poolPresenceHandler(policy: Any, notifier: XMPPNotifier) -> XMPPHandler:
    """
    A presence handler for one of several streams: what is known of presence goes stale only
    when the last stream is gone (users' servers do not send it again while another is up).
    """
    from hermod_component.xmpp.presence import PresenceHandler

    class PoolPresenceHandler(PresenceHandler):
        def connectionLost(self, reason: object) -> None:
            if any(o.stream is not None for o in notifier.streams.outlets):
                XMPPHandler.connectionLost(self, reason)
            else:
                super().connectionLost(reason)

    return PoolPresenceHandler(policy)
