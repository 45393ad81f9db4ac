"""
Shared test doubles for Hermod's own tests and for third-party backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from queue import Empty, SimpleQueue
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.words.protocols.jabber.xmlstream import XMPPHandlerCollection
from twisted.words.xish import domish, utility
from zope.interface import implementer

from hermod_component.interfaces import INotifier, IPubSubPolicy
from hermod_component.model import Item, NodeConfig, Subscription
from hermod_component.xmpp.stream import PayloadStream


@implementer(INotifier)
class RecordingNotifier:
    """
    An L{INotifier} that records each call as C{(method name, keyword arguments)}.

    @ivar calls: The calls in order; recipient lists are copied as lists of C{(jid, [subids])}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, kind: str, **kwargs: Any) -> None:
        if "recipients" in kwargs:
            given = kwargs["recipients"]
            # A RecipientList's extras, recorded only when there are any.
            if getattr(given, "digests", None):
                kwargs["digests"] = list(given.digests)
            if getattr(given, "bodies", None):
                kwargs["bodies"] = sorted(given.bodies)
            kwargs["recipients"] = [(j, list(s)) for j, s in given]
        self.calls.append((kind, kwargs))

    def publish(
        self,
        node: str,
        items: Sequence[Item],
        withPayload: bool,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        self._record("publish", node=node, items=list(items), withPayload=withPayload,
                     messageType=messageType, recipients=recipients)

    def retract(self, node: str, itemIds: Sequence[str], messageType: str,
                recipients: Sequence[tuple[str, Sequence[str]]],
                headers: Sequence[tuple[str, str]] = ()) -> None:
        self._record("retract", node=node, itemIds=list(itemIds), messageType=messageType,
                     recipients=recipients, headers=tuple(headers))

    def purge(self, node: str, messageType: str,
              recipients: Sequence[tuple[str, Sequence[str]]],
              headers: Sequence[tuple[str, str]] = ()) -> None:
        self._record("purge", node=node, messageType=messageType, recipients=recipients,
                     headers=tuple(headers))

    def delete(self, node: str, redirect: str | None, messageType: str,
               recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("delete", node=node, redirect=redirect, messageType=messageType,
                     recipients=recipients)

    def configuration(self, node: str, config: NodeConfig | None, messageType: str,
                      recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("configuration", node=node, config=config, messageType=messageType,
                     recipients=recipients)

    def subscriptionChanged(self, subscription: Subscription) -> None:
        self._record("subscriptionChanged", subscription=subscription)

    def collectionChanged(self, collection: str, node: str, associated: bool,
                          messageType: str,
                          recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("collectionChanged", collection=collection, node=node,
                     associated=associated, messageType=messageType, recipients=recipients)

    def authorizationRequest(self, subscription: Subscription, owners: Sequence[str]) -> None:
        self._record("authorizationRequest", subscription=subscription, owners=list(owners))


NS_COMPONENT = "jabber:component:accept"


def parseStanzas(data: bytes | str, keepPayloads: bool = False) -> list[domish.Element]:
    """
    Parse serialized stanzas as the server would read them from a component stream.

    @param data: One or more top-level elements; unprefixed ones are in
        C{jabber:component:accept}, like stanzas on the stream.
    @param keepPayloads: Parse as Hermod's component stream does (L{PayloadStream}: publish
        payloads kept as received bytes) rather than with Twisted's parser.
    @return: The parsed elements, in order.
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    stanzas: list[domish.Element] = []
    stream = PayloadStream() if keepPayloads else domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = stanzas.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(
        (
            f"<stream:stream xmlns='{NS_COMPONENT}' "
            "xmlns:stream='http://etherx.jabber.org/streams'>"
        ).encode()
    )
    stream.parse(data.encode("utf-8"))
    return stanzas


class StanzaRecorder(utility.EventDispatcher):
    """
    An XmlStream stand-in: records what is sent and dispatches literal XML as if received.

    @ivar raw: Everything passed to L{send}, as given (elements, C{str} or C{bytes}).
    @ivar sent: Everything sent, as parsed stanza elements; serialized data is parsed back so
        tests compare stanzas, not strings.
    """

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[object] = []
        self.sent: list[domish.Element] = []

    def send(self, obj: object) -> None:
        """
        Record C{obj}: an element, or serialized stanzas as C{str} or C{bytes}.
        """
        self.raw.append(obj)
        if isinstance(obj, domish.Element):
            self.sent.extend(parseStanzas(obj.toXml()))
        elif isinstance(obj, (str, bytes)):
            self.sent.extend(parseStanzas(obj))
        else:
            raise TypeError(f"cannot send {obj!r}")

    def receive(self, xml: str) -> domish.Element:
        """
        Dispatch the stanza C{xml} to the observers, as if the server had sent it, parsed as
        Hermod's component stream parses it.

        @return: The dispatched element.
        """
        (stanza,) = parseStanzas(xml, keepPayloads=True)
        self.dispatch(stanza)
        return stanza

    def clear(self) -> None:
        """
        Forget what was sent so far.
        """
        del self.raw[:]
        del self.sent[:]


class StubStreamManager(XMPPHandlerCollection):
    """
    A stream manager whose stream is a L{StanzaRecorder} that is up from the start.

    Handlers added with L{addHandler} are connected and initialized at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.xmlstream = StanzaRecorder()

    def addHandler(self, handler: Any) -> None:
        """
        Add C{handler} and bring it up on the recorder.
        """
        super().addHandler(handler)
        handler.parent = self
        handler.makeConnection(self.xmlstream)
        handler.connectionInitialized()

    def send(self, obj: object) -> None:
        """
        Send through the recorder.
        """
        self.xmlstream.send(obj)

    def dropStream(self, reason: object = None) -> None:
        """
        The stream goes away: every handler gets C{connectionLost}.
        """
        for handler in list(self):
            handler.connectionLost(reason)
        self.xmlstream = None  # type: ignore[assignment]

    def newStream(self) -> StanzaRecorder:
        """
        A new stream comes up: every handler is connected and initialized on a new recorder.

        @return: The new recorder.
        """
        self.xmlstream = StanzaRecorder()
        for handler in list(self):
            handler.makeConnection(self.xmlstream)
            handler.connectionInitialized()
        return self.xmlstream

    def request(self, request: Any) -> Any:
        """
        Outgoing IQ requests are not part of these tests.
        """
        raise NotImplementedError("StubStreamManager does not track IQ requests")


class AnsweringStreamManager(StubStreamManager):
    """
    A L{StubStreamManager} that keeps outgoing IQ requests for the test to answer.

    @ivar requests: C{(request element, Deferred)} pairs, oldest first; fire the Deferred with
        a reply element (see L{parseStanzas}) or fail it with a C{StanzaError} or
        C{TimeoutError}, as the stream manager would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[domish.Element, Deferred[domish.Element]]] = []

    def request(self, request: Any) -> Deferred[domish.Element]:
        """
        Record the request; its answer is up to the test.
        """
        d: Deferred[domish.Element] = Deferred()
        self.requests.append((request.toElement(), d))
        return d

    def pending(self, namespace: str) -> list[tuple[domish.Element, Deferred[domish.Element]]]:
        """
        The unanswered requests whose child element is in C{namespace}, oldest first.
        """
        return [
            (element, d) for element, d in self.requests
            if not d.called and any(c.uri == namespace for c in element.elements())
        ]


@implementer(IPubSubPolicy)
class FakePolicy:
    """
    A scripted L{IPubSubPolicy}: records every call and answers with configured results or
    domain errors.

    @ivar calls: C{(method name, arguments)} pairs, in call order; arguments as passed.
    @ivar results: What each method name returns (C{None} when absent).
    @ivar errors: The exception each method name raises instead of returning.
    @ivar notifier: Set by the XMPP edge.
    """

    def __init__(self, service: str = "pubsub.example.org") -> None:
        self.service = service
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.notifier: Any = None

    async def _answer(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if name in self.errors:
            raise self.errors[name]
        return self.results.get(name)

    async def createNode(
        self, requester: str, identifier: str | None, options: Mapping[str, Sequence[str]] | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.createNode}.
        """
        return await self._answer("createNode", requester, identifier, options)

    async def defaultConfiguration(
        self, requester: str, nodeType: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.defaultConfiguration}.
        """
        return await self._answer("defaultConfiguration", requester, nodeType)

    async def getConfiguration(
        self, requester: str, identifier: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.getConfiguration}.
        """
        return await self._answer("getConfiguration", requester, identifier)

    async def configure(
        self, requester: str, identifier: str, options: Mapping[str, Sequence[str]]
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.configure}.
        """
        return await self._answer("configure", requester, identifier, options)

    async def deleteNode(
        self, requester: str, identifier: str, redirect: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.deleteNode}.
        """
        return await self._answer("deleteNode", requester, identifier, redirect)

    async def purge(
        self, requester: str, identifier: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.purge}.
        """
        return await self._answer("purge", requester, identifier)

    async def publish(
        self, requester: str, identifier: str, items: Sequence[tuple[str | None, bytes]], publishOptions: Mapping[str, Sequence[str]] | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.publish}.
        """
        return await self._answer("publish", requester, identifier, items, publishOptions)

    async def retract(
        self, requester: str, identifier: str, itemIds: Sequence[str], notify: bool
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.retract}.
        """
        return await self._answer("retract", requester, identifier, itemIds, notify)

    async def subscribe(
        self, requester: str, identifier: str, subscriber: str, options: Mapping[str, Sequence[str]] | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.subscribe}.
        """
        return await self._answer("subscribe", requester, identifier, subscriber, options)

    async def unsubscribe(
        self, requester: str, identifier: str, subscriber: str, subscriptionId: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.unsubscribe}.
        """
        return await self._answer("unsubscribe", requester, identifier, subscriber, subscriptionId)

    async def getSubscriptionOptions(
        self, requester: str, identifier: str, subscriber: str, subscriptionId: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.getSubscriptionOptions}.
        """
        return await self._answer("getSubscriptionOptions", requester, identifier, subscriber, subscriptionId)

    async def setSubscriptionOptions(
        self, requester: str, identifier: str, subscriber: str, subscriptionId: str | None, options: Mapping[str, Sequence[str]]
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.setSubscriptionOptions}.
        """
        return await self._answer("setSubscriptionOptions", requester, identifier, subscriber, subscriptionId, options)

    async def items(
        self, requester: str, identifier: str, maxItems: int | None, itemIds: Sequence[str] | None, subscriptionId: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.items}.
        """
        return await self._answer("items", requester, identifier, maxItems, itemIds, subscriptionId)

    async def entitySubscriptions(
        self, requester: str, identifier: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.entitySubscriptions}.
        """
        return await self._answer("entitySubscriptions", requester, identifier)

    async def entityAffiliations(
        self, requester: str, identifier: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.entityAffiliations}.
        """
        return await self._answer("entityAffiliations", requester, identifier)

    async def getAffiliations(
        self, requester: str, identifier: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.getAffiliations}.
        """
        return await self._answer("getAffiliations", requester, identifier)

    async def setAffiliations(
        self, requester: str, identifier: str, changes: Mapping[str, str]
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.setAffiliations}.
        """
        return await self._answer("setAffiliations", requester, identifier, changes)

    async def getSubscriptions(
        self, requester: str, identifier: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.getSubscriptions}.
        """
        return await self._answer("getSubscriptions", requester, identifier)

    async def setSubscriptions(
        self, requester: str, identifier: str, changes: Sequence[tuple[str, str, str | None]]
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.setSubscriptions}.
        """
        return await self._answer("setSubscriptions", requester, identifier, changes)

    async def answerAuthorization(
        self, requester: str, identifier: str, subscriber: str, subscriptionId: str | None, allow: bool
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.answerAuthorization}.
        """
        return await self._answer("answerAuthorization", requester, identifier, subscriber, subscriptionId, allow)

    async def nodeInfo(
        self, requester: str, identifier: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.nodeInfo}.
        """
        return await self._answer("nodeInfo", requester, identifier)

    async def listNodes(
        self, requester: str, parent: str | None
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.listNodes}.
        """
        return await self._answer("listNodes", requester, parent)

    async def itemIds(
        self, requester: str, identifier: str
    ) -> Any:
        """
        Scripted L{IPubSubPolicy.itemIds}.
        """
        return await self._answer("itemIds", requester, identifier)


class FailingCall:
    """
    Makes C{target.name} raise C{RuntimeError("storage gone")} while L{failing} is true,
    and call the original otherwise.

    @ivar failing: Whether calls fail now; set it false to let them through.
    """

    def __init__(self, target: Any, name: str) -> None:
        self.failing = True
        original = getattr(target, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failing:
                raise RuntimeError("storage gone")
            return original(*args, **kwargs)

        setattr(target, name, call)


class HeldThreads:
    """
    Stands in for running work in a thread (the C{inThread} of
    L{hermod_component.backends.spool.SpoolBackend}): each call is held until the test runs
    it with L{run}.

    @ivar works: The callables handed over, in order.
    """

    def __init__(self) -> None:
        self.works: list[Callable[[], Any]] = []
        self._results: list[Deferred[Any]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        self.works.append(work)
        self._results.append(Deferred())
        return self._results[-1]

    def run(self, index: int = 0) -> None:
        """
        Run the C{index}th work handed over, as its thread would, and fire its result.
        """
        self._results[index].callback(self.works[index]())


@implementer(IReactorFromThreads)
class ThreadCallQueue:
    """
    Stands in for the reactor's C{callFromThread} in a L{SynchronousTestCase}: calls made from
    other threads wait in a queue until the test thread runs them with L{runCalls}, so
    Deferreds still fire in the test's own thread, as they would in the reactor's.
    """

    def __init__(self) -> None:
        self._calls: SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
        ] = SimpleQueue()

    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        """
        Queue C{callable(*args, **kwargs)} for the test thread; safe from any thread.
        """
        self._calls.put((callable, args, kwargs))

    def runCalls(self, count: int, timeout: float = 30.0) -> None:
        """
        Run the next C{count} queued calls in this thread, waiting for each at most
        C{timeout} seconds (a generous bound: it only stops a broken test from hanging).

        @raise AssertionError: A call did not arrive in time.
        """
        for _ in range(count):
            try:
                f, args, kwargs = self._calls.get(timeout=timeout)
            except Empty:
                raise AssertionError(f"no call from a thread within {timeout} s") from None
            f(*args, **kwargs)

    def pending(self) -> int:
        """
        How many calls are queued and not yet run.
        """
        return self._calls.qsize()
