"""
Notifications written straight to the component stream: the fan-out hot path.

Each notification's C{<event/>} is serialized to bytes once; each recipient then costs one
C{<message from= to= type=>} envelope around those bytes (plus SHIM SubID headers naming the
subscriptions it is for when the policy names them: the JID holds several), written with one
C{send()} of C{bytes}. Payloads arrive as serialized XML bytes and are copied into C{<item/>}
without being parsed again (only a body, for subscribers asking for one, reads an Atom title).
Digest subscriptions' notifications wait in a L{DigestBuffer}.

With several component connections, each recipient's messages go to the stream its bare JID
hashes to (L{hermod_component.xmpp.streams.StreamSet}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from hermod_component.interfaces import INotifier
from hermod_component.metrics import MULTICAST_MESSAGES, NOTIFICATION_BYTES, NOTIFICATIONS
from hermod_component.model import Item, NodeConfig, Subscription
from hermod_component.nodeoptions import NODE_CONFIG_FIELDS, valuesFromConfig
from hermod_component.subscriptionoptions import RecipientList
from hermod_component.xmpp._xmpplib import (
    NS_PUBSUB_EVENT,
    NS_PUBSUB_NODE_CONFIG,
    Field,
    Form,
    XMPPHandler,
)
from hermod_component.xmpp.digest import EVENT_BODIES, DigestBuffer, itemsBody
from hermod_component.xmpp.flow import writeInOrder
from hermod_component.xmpp.multicast import (
    MIN_RECIPIENTS,
    MulticastFinder,
    MulticastFlow,
    MulticastService,
    multicastMessages,
)
from hermod_component.xmpp.serialize import escapeText, quoteAttribute
from hermod_component.xmpp.streams import Outlet, StreamSet

NS_PUBSUB_SUBSCRIBE_AUTHORIZATION = "http://jabber.org/protocol/pubsub#subscribe_authorization"
NS_SHIM = "http://jabber.org/protocol/shim"

#: With C{answerFirst}, fan-outs to at most this many recipients wait until the answer is
#: written; larger ones go out before it (L{XMPPNotifier._announce}).
ANSWER_FIRST_LIMIT = 32

_EVENT_OPEN = b"<event xmlns=" + quoteAttribute(NS_PUBSUB_EVENT) + b">"
_EVENT_CLOSE = b"</event>"


def itemsEvent(node: str, items: Sequence[Item], withPayload: bool) -> bytes:
    """
    The C{<event/>} of a publish, serialized.

    @param withPayload: Whether the items' payload bytes go inside their C{<item/>}.
    """
    parts = [_EVENT_OPEN, b"<items node=", quoteAttribute(node), b">"]
    for item in items:
        parts += [b"<item id=", quoteAttribute(item.itemId)]
        if item.publisher:
            parts += [b" publisher=", quoteAttribute(item.publisher)]
        if withPayload and item.payload:
            parts += [b">", item.payload, b"</item>"]
        else:
            parts.append(b"/>")
    parts += [b"</items>", _EVENT_CLOSE]
    return b"".join(parts)


def retractEvent(node: str, itemIds: Sequence[str]) -> bytes:
    """
    The C{<event/>} of a retract (XEP-0060 7.2.2.1), serialized.
    """
    parts = [_EVENT_OPEN, b"<items node=", quoteAttribute(node), b">"]
    for itemId in itemIds:
        parts += [b"<retract id=", quoteAttribute(itemId), b"/>"]
    parts += [b"</items>", _EVENT_CLOSE]
    return b"".join(parts)


def purgeEvent(node: str) -> bytes:
    """
    The C{<event/>} of a purge (XEP-0060 8.5.2), serialized.
    """
    return _EVENT_OPEN + b"<purge node=" + quoteAttribute(node) + b"/>" + _EVENT_CLOSE


def deleteEvent(node: str, redirect: str | None) -> bytes:
    """
    The C{<event/>} of a node deletion (XEP-0060 8.4.2), serialized.
    """
    if redirect:
        inner = b"><redirect uri=" + quoteAttribute(redirect) + b"/></delete>"
    else:
        inner = b"/>"
    return _EVENT_OPEN + b"<delete node=" + quoteAttribute(node) + inner + _EVENT_CLOSE


def configForm(config: NodeConfig, formType: str = "result") -> Form:
    """
    A node configuration as a C{pubsub#node_config} data form.
    """
    form = Form(formType, formNamespace=NS_PUBSUB_NODE_CONFIG)
    values = valuesFromConfig(config)
    for definition in NODE_CONFIG_FIELDS:
        field = Field(
            definition.fieldType,
            definition.var,
            values=list(values.get(definition.var, [])),
            label=definition.label,
            options=dict(definition.options) if definition.options else None,
        )
        form.addField(field)
    return form


def configurationEvent(node: str, config: NodeConfig | None) -> bytes:
    """
    The C{<event/>} of a configuration change (XEP-0060 8.2.5), with the form when given.
    """
    if config is None:
        inner = b"/>"
    else:
        inner = (
            b">" + configForm(config).toElement().toXml().encode("utf-8") + b"</configuration>"
        )
    return _EVENT_OPEN + b"<configuration node=" + quoteAttribute(node) + inner + _EVENT_CLOSE


def collectionEvent(collection: str, node: str, associated: bool) -> bytes:
    """
    The C{<event/>} telling a collection's C{nodes} subscribers that C{node} joined it
    (C{<associate/>}) or left it (C{<dissociate/>}), XEP-0248, serialized.
    """
    tag = b"<associate node=" if associated else b"<dissociate node="
    return (
        _EVENT_OPEN + b"<collection node=" + quoteAttribute(collection) + b">" + tag
        + quoteAttribute(node) + b"/></collection>" + _EVENT_CLOSE
    )


def subscriptionEvent(subscription: Subscription) -> bytes:
    """
    The C{<event/>} telling a subscriber of its subscription's new state.
    """
    parts = [
        _EVENT_OPEN,
        b"<subscription node=",
        quoteAttribute(subscription.node),
        b" jid=",
        quoteAttribute(subscription.subscriber),
        b" subscription=",
        quoteAttribute(subscription.state.value),
    ]
    if subscription.subscriptionId:
        parts += [b" subid=", quoteAttribute(subscription.subscriptionId)]
    parts += [b"/>", _EVENT_CLOSE]
    return b"".join(parts)


def authorizationForm(subscription: Subscription) -> bytes:
    """
    The XEP-0060 8.6 subscription authorization form, serialized.
    """
    form = Form("form", formNamespace=NS_PUBSUB_SUBSCRIBE_AUTHORIZATION)
    form.title = "PubSub subscriber request"
    form.instructions = [
        "To approve this entity's subscription request, set pubsub#allow to true and submit; "
        + "to deny it, submit with false."
    ]
    if subscription.subscriptionId:
        form.addField(Field("hidden", "pubsub#subid", subscription.subscriptionId))
    form.addField(Field("text-single", "pubsub#node", subscription.node, label="Node ID"))
    form.addField(
        Field(
            "jid-single",
            "pubsub#subscriber_jid",
            subscription.subscriber,
            label="Subscriber Address",
        )
    )
    form.addField(
        Field(
            "boolean",
            "pubsub#allow",
            False,
            label="Allow this Jabber ID to subscribe to this pubsub node?",
        )
    )
    return form.toElement().toXml().encode("utf-8")


def shimHeaders(headers: Sequence[tuple[str, str]]) -> bytes:
    """
    XEP-0131 C{<header/>} elements for C{(name, value)} pairs, serialized, without their
    C{<headers/>} container.
    """
    return b"".join(
        b"<header name=" + quoteAttribute(name) + b">" + escapeText(value) + b"</header>"
        for name, value in headers
    )


def subIdHeaders(subscriptionIds: Iterable[str], itemHeaders: bytes = b"") -> bytes:
    """
    XEP-0131 SHIM headers naming the SubIDs a notification is for.

    @param itemHeaders: Serialized C{<header/>} elements of the notified items (from
        L{shimHeaders}), which go first in the same container.
    """
    parts = [b"<headers xmlns=", quoteAttribute(NS_SHIM), b">", itemHeaders]
    for subscriptionId in subscriptionIds:
        parts += [b'<header name="SubID">', escapeText(subscriptionId), b"</header>"]
    parts.append(b"</headers>")
    return b"".join(parts)


@implementer(INotifier)
class XMPPNotifier(XMPPHandler):
    """
    Writes the notifications the policy decides on to the component stream.

    It writes to the streams of its L{StreamSet}. With one stream it can itself be the handler
    on that stream (one of the handlers of L{hermod_component.xmpp.handler.makeHandlers});
    with several, each stream has a L{hermod_component.xmpp.streams.NotifierOutlet} instead.
    Notifications while no stream is up are logged with their recipient count and dropped.

    @ivar service: The component JID, the C{from} of every notification.
    @ivar streams: The streams notifications go to.
    """

    log = Logger()

    def __init__(
        self,
        service: str,
        clock: IReactorTime | None = None,
        streams: StreamSet | None = None,
        answerFirst: bool = False,
    ) -> None:
        """
        @param clock: Times digests (C{pubsub#digest}) and, with C{answerFirst}, the turn
            notifications are written in; the global reactor when L{None}.
        @param streams: The component's streams; by default one, this handler's own.
        @param answerFirst: Write notifications after the answer to the request that caused
            them (L{_announce}).
        """
        super().__init__()
        self.service = service
        self.streams = streams if streams is not None else StreamSet(service)
        #: The XEP-0033 service notifications to several recipients go through, if any (set
        #: by L{hermod_component.xmpp.multicast.MulticastFinder}).
        self.multicast: MulticastService | None = None
        #: Multicast messages written.
        self.multicastMessages = 0
        #: Finds L{multicast} (made by L{hermod_component.xmpp.handler.makeHandlers}).
        self.multicastFinder: MulticastFinder | None = None
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock: Any = clock
        #: Whether notifications wait for the end of the reactor turn that decided them, so
        #: that the answer to the request that caused them is written first (see
        #: L{_announce}).
        self.answerFirst = answerFirst
        self._announcements: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self._announcing: Any = None
        self.digests = DigestBuffer(clock, self._writeDigest)  # type: ignore[arg-type]
        self.multicastFlow = MulticastFlow(self, clock)  # type: ignore[arg-type]

    def connectionInitialized(self) -> None:
        """
        This handler's own stream is up (single-stream use): notifications go out from now on.
        """
        self.streams.streamUp(0, self.xmlstream)

    def connectionLost(self, reason: object) -> None:
        """
        This handler's own stream is gone: notifications are dropped until the next one is up.
        """
        self.streams.streamDown(0)
        super().connectionLost(reason)

    def _announce(
        self,
        what: str,
        node: str,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """
        L{_fanOut}, at once or, with L{answerFirst}, at the start of the reactor's next turn,
        in the order they were decided.

        The policy decides a publish's notifications before the publish returns, and the
        answer is written after that. Written at once, the notifications would reach the
        server ahead of the answer, and the publisher would wait for the server to route them
        all before it learns that its item is stored. Deferred to the next turn (one
        C{callLater(0)} for everything decided in this one), they follow the answer, and the
        transport still sends both in one write.

        A fan-out to more than L{ANSWER_FIRST_LIMIT} recipients is written at once (after
        those kept before it, in order), ahead of the answer: a publisher that waits for each
        answer is then paced by the server's delivery of its large fan-outs, instead of
        filling the server's queues (at 100 subscribers through Prosody that queueing took
        the p99 latency from 49 to 84 ms).
        """
        args = (what, node, messageType, recipients, *args)
        if not self.answerFirst or len(recipients) > ANSWER_FIRST_LIMIT:
            if self._announcements:
                self._writeAnnouncements()
            self._fanOut(*args, **kwargs)
            return
        self._announcements.append((args, kwargs))
        if self._announcing is None:
            self._announcing = self._clock.callLater(0, self._writeAnnouncements)

    def _writeAnnouncements(self) -> None:
        """
        Write the notifications L{_announce} kept, in order.
        """
        if self._announcing is not None:
            if self._announcing.active():
                self._announcing.cancel()
            self._announcing = None
        announcements, self._announcements = self._announcements, []
        for args, kwargs in announcements:
            try:
                self._fanOut(*args, **kwargs)
            except Exception:  # noqa: BLE001 - one failed fan-out must not lose the others
                self.log.failure("Writing {what} notifications failed", what=args[0])

    def _fanOut(
        self,
        what: str,
        node: str,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
        body: bytes,
        headers: bytes = b"",
        text: Callable[[], str] | None = None,
        counted: bool = True,
    ) -> None:
        """
        Write one message per recipient around the shared, serialized C{body}.

        @param headers: Serialized SHIM C{<header/>} elements every message carries (after
            C{body}, in one C{<headers/>} with the SubIDs named for a recipient).
        @param text: Makes the C{<body/>} text for recipients that asked for one
            (C{pubsub#include_body}); called only if there are such recipients.
        @param counted: Whether the messages count as notifications (a resend of refused
            multicast messages, counted when first written, does not).
        """
        if not recipients:
            return
        if isinstance(recipients, RecipientList):
            for jid, subscriptionId, milliseconds in recipients.digests:
                self.digests.add(jid, subscriptionId, milliseconds, messageType, body)
            if recipients.bodies:
                self._fanOutWithBodies(what, node, messageType, recipients, body, headers, text)
                return
            if not len(recipients):  # only digest entries (the list itself is true then)
                return
        if not self.streams.eligible:
            self.log.warn(  # noqa: G010
                "No stream: dropped {count} {what} notifications for node {node}",
                count=len(recipients),
                what=what,
                node=node,
            )
            return
        start = (
            b"<message from="
            + quoteAttribute(self.service)
            + b" type="
            + quoteAttribute(messageType or "headline")
            + b" "
        )
        head = start + b"to="
        content = body + subIdHeaders((), headers) if headers else body
        tail = content + b"</message>"
        multicast = self.multicast
        if multicast is not None:
            plain = [r for r, subscriptionIds in recipients if not subscriptionIds]
            if len(plain) >= MIN_RECIPIENTS:
                self._multicast(multicast, start, messageType or "headline", plain, content)
                NOTIFICATIONS.labels(what).inc(len(plain))
                recipients = [r for r in recipients if r[1]]
                if not recipients:
                    return

        def messages(
            outlet: Outlet, group: Iterable[tuple[str, Sequence[str]]]
        ) -> Iterator[bytes]:
            # One envelope per recipient around the shared body; SubIDs only where named.
            # Made as the stream takes them (writeInOrder), so a fan-out to many subscribers
            # holds its recipients and the body, not all its messages.
            size = 0
            try:
                for recipient, subscriptionIds in group:
                    if subscriptionIds:
                        message = (
                            head + quoteAttribute(recipient) + b">" + body
                            + subIdHeaders(subscriptionIds, headers) + b"</message>"
                        )
                    else:
                        message = head + quoteAttribute(recipient) + b">" + tail
                    size += len(message)
                    yield message
            finally:
                outlet.bytes += size
                NOTIFICATION_BYTES.inc(size)

        outlets = self.streams.outlets
        if len(outlets) == 1:
            only = outlets[0]
            only.notifications += len(recipients)
            writeInOrder(only.stream, messages(only, recipients))
        else:
            route = self.streams.route
            groups: dict[Outlet, list[tuple[str, Sequence[str]]]] = {}
            for entry in recipients:
                outlet = route(entry[0])
                assert outlet is not None
                group = groups.get(outlet)
                if group is None:
                    groups[outlet] = [entry]
                else:
                    group.append(entry)
            for outlet, group in groups.items():
                outlet.notifications += len(group)
                writeInOrder(outlet.stream, messages(outlet, group))
        if counted:
            NOTIFICATIONS.labels(what).inc(len(recipients))

    def _multicast(
        self,
        service: MulticastService,
        start: bytes,
        messageType: str,
        recipients: Sequence[str],
        content: bytes,
    ) -> None:
        """
        Write C{content} to C{recipients} as multicast messages through C{service}, each on
        the stream its first recipient is routed to.
        """
        route = self.streams.route
        flow = self.multicastFlow
        streams = []
        count = 0
        for stanzaId, chunk, message in multicastMessages(
            service, start, recipients, content, flow.messageIds
        ):
            outlet = route(chunk[0])
            assert outlet is not None
            outlet.notifications += len(chunk)
            outlet.bytes += len(message)
            writeInOrder(outlet.stream, (message,))
            flow.written(outlet.stream, service, stanzaId, messageType, chunk, content)
            if outlet.stream not in streams:
                streams.append(outlet.stream)
            NOTIFICATION_BYTES.inc(len(message))
            count += 1
        for stream in streams:
            flow.probe(stream)
        self.multicastMessages += count
        MULTICAST_MESSAGES.inc(count)

    def sendEach(self, messageType: str, recipients: Sequence[str], content: bytes) -> None:
        """
        Write serialized C{content} to each of C{recipients} in a message of its own (a
        notification the multicast service refused).
        """
        if not recipients:
            return
        if not self.streams.eligible:
            self.log.warn(  # noqa: G010
                "No stream: dropped a notification for {count} recipients", count=len(recipients)
            )
            return
        multicast, self.multicast = self.multicast, None
        try:
            self._fanOut(
                "resent", "", messageType, [(r, ()) for r in recipients], content,
                counted=False,
            )
        finally:
            self.multicast = multicast

    def _fanOutWithBodies(
        self,
        what: str,
        node: str,
        messageType: str,
        recipients: RecipientList,
        body: bytes,
        headers: bytes,
        text: Callable[[], str] | None,
    ) -> None:
        """
        L{_fanOut} for recipients of whom some want a C{<body/>}: those get it first in
        their message, the others the plain message.
        """
        wanting = [r for r in recipients if r[0] in recipients.bodies]
        plain = [r for r in recipients if r[0] not in recipients.bodies]
        if plain:
            self._fanOut(what, node, messageType, plain, body, headers)
        if wanting:
            words = text() if text is not None else EVENT_BODIES.get(what, "{node}").format(
                node=node
            )
            self._fanOut(
                what, node, messageType, wanting,
                b"<body>" + escapeText(words) + b"</body>" + body, headers,
            )

    def _writeDigest(
        self, jid: str, subscriptionId: str, messageType: str, events: list[bytes]
    ) -> None:
        """
        Write one digest: the gathered C{<event/>} elements in one message, in order, with
        the subscription's SubID.
        """
        outlet = self.streams.route(jid)
        if outlet is None:
            self.log.warn(  # noqa: G010
                "No stream: dropped a digest of {count} notifications for {jid}",
                count=len(events),
                jid=jid,
            )
            return
        message = (
            b"<message from=" + quoteAttribute(self.service)
            + b" type=" + quoteAttribute(messageType or "headline")
            + b" to=" + quoteAttribute(jid) + b">"
            + b"".join(events) + subIdHeaders((subscriptionId,)) + b"</message>"
        )
        writeInOrder(outlet.stream, (message,))
        outlet.notifications += 1
        outlet.bytes += len(message)
        NOTIFICATIONS.labels("digest").inc()
        NOTIFICATION_BYTES.inc(len(message))

    def publish(
        self,
        node: str,
        items: Sequence[Item],
        withPayload: bool,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the recipients of new items (XEP-0060 7.1.2), with the items' SHIM headers in the
        message (the policy groups items so that those of one call share their headers).
        """
        if recipients:
            self._announce(
                "publish",
                node,
                messageType,
                recipients,
                itemsEvent(node, items, withPayload),
                shimHeaders(items[0].headers) if items else b"",
                lambda: itemsBody(node, items),
            )

    def retract(
        self,
        node: str,
        itemIds: Sequence[str],
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """
        Tell the recipients that items were retracted (XEP-0060 7.2.2.1).

        @param headers: SHIM headers for the message: the C{Collection} header when the
            recipients are a collection's subscribers (XEP-0248).
        """
        if recipients:
            self._announce(
                "retract", node, messageType, recipients, retractEvent(node, itemIds),
                shimHeaders(headers) if headers else b"",
            )

    def purge(
        self,
        node: str,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """
        Tell the recipients that the node was purged (XEP-0060 8.5.2).

        @param headers: As for L{retract}.
        """
        if recipients:
            self._announce(
                "purge", node, messageType, recipients, purgeEvent(node),
                shimHeaders(headers) if headers else b"",
            )

    def delete(
        self,
        node: str,
        redirect: str | None,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the recipients that the node was deleted (XEP-0060 8.4.2).
        """
        if recipients:
            self._announce("delete", node, messageType, recipients, deleteEvent(node, redirect))

    def configuration(
        self,
        node: str,
        config: NodeConfig | None,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the recipients that the node's configuration changed (XEP-0060 8.2.5).
        """
        if recipients:
            self._announce(
                "configuration", node, messageType, recipients, configurationEvent(node, config)
            )

    def collectionChanged(
        self,
        collection: str,
        node: str,
        associated: bool,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell a collection's C{nodes} subscribers that a node joined or left it (XEP-0248).
        """
        if recipients:
            self._announce(
                "collection", collection, messageType, recipients,
                collectionEvent(collection, node, associated),
            )

    def subscriptionChanged(self, subscription: Subscription) -> None:
        """
        Tell the subscriber of its subscription's new state.
        """
        self._announce(
            "subscription",
            subscription.node,
            "normal",
            [(subscription.subscriber, ())],
            subscriptionEvent(subscription),
        )

    def authorizationRequest(self, subscription: Subscription, owners: Sequence[str]) -> None:
        """
        Ask each owner to approve or deny a pending subscription (XEP-0060 8.6).
        """
        self._announce(
            "authorization",
            subscription.node,
            "normal",
            [(owner, ()) for owner in owners],
            authorizationForm(subscription),
        )
