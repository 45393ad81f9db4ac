"""
The component stream's parser: publish payloads kept as the bytes received.

Twisted's parser builds a domish element for every element of a stanza; a published 2 KB Atom
entry is some thirty of them, which Hermod would only serialize back to bytes. L{PayloadStream}
builds the stanza as usual down to the C{<item/>} of an C{<iq type='set'><pubsub><publish>}, but
keeps each payload element under that item as a L{RawPayload}: the exact bytes expat parsed (CDATA
sections, entity and character references and comments as the sender wrote them), with
declarations added to the payload's start tag for the namespaces it inherits from its ancestors,
so the bytes mean the same wherever they are copied (notifications, the item store):

  - the default namespace, when the payload element does not declare its own (for an unprefixed
    payload under C{<item/>} that is the pubsub namespace, as XML says it is);
  - each prefix bound on an ancestor, when C{prefix:} occurs anywhere in the payload's bytes (a
    superset of the prefixes it uses, so none is missed; an extra declaration is harmless).

Everything else (other stanzas, SHIM C{<headers/>} next to a payload) is built as domish exactly as
before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component.xmpp.streams import BARRIER_PREFIX

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_SHIM = "http://jabber.org/protocol/shim"

_PUBSUB = NS_PUBSUB + " pubsub"
_PUBLISH = NS_PUBSUB + " publish"
_ITEM = NS_PUBSUB + " item"
_HEADERS = NS_SHIM + " headers"

#: A start tag (expat has checked it is well formed): its name, and C{/} when it is empty.
_START_TAG = re.compile(
    rb"<([^\s/>]+)(?:\s+[^\s=/>]+\s*=\s*(?:'[^']*'|\"[^\"]*\"))*\s*(/?)>"
)

_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", "'": "&apos;", '"': "&quot;"})


class RawPayload(domish.SerializedXML):
    """
    A payload element as received, namespaces declared: a child of its C{<item/>}, serialized
    as is when the stanza is (an error response carries it back).

    @ivar raw: The same XML as UTF-8 bytes.
    @ivar uri: The element's namespace.
    @ivar name: The element's local name.
    """

    raw: bytes
    uri: str
    name: str


def _declaration(prefix: str | None, uri: str) -> bytes:
    """
    A namespace declaration attribute, with a leading space.
    """
    value = uri.translate(_ATTRIBUTE_ESCAPES).encode("utf-8")
    if prefix is None:
        return b" xmlns='" + value + b"'"
    return b" xmlns:" + prefix.encode("utf-8") + b"='" + value + b"'"


class PayloadStream(domish.ExpatElementStream):
    """
    An element stream that keeps publish payloads as L{RawPayload} bytes (see the module
    docstring); otherwise Twisted's C{ExpatElementStream}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._useStanzaHandlers()
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self._keepFrom = 0  # stream offset before which no byte is needed again
        self._depth = 0
        self._publish = False  # the open elements are stream/iq[set]/pubsub/publish/item so far
        self._capturing = 0  # depth inside the payload being kept, 0 outside
        self._captureStart = 0
        self._captureName = ""
        self._captureDeclared: set[str | None] = set()
        self._captureDefault = ""
        self._declared: set[str | None] = set()  # declared on the element about to start
        self._prefixes: dict[str, list[str]] = {}  # prefix -> URIs in scope, innermost last

    def _useStanzaHandlers(self) -> None:
        """
        Give the parser the handlers that build stanzas (outside a kept payload).
        """
        parser = self.parser
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._onCdata
        parser.StartNamespaceDeclHandler = self._startNamespace
        parser.EndNamespaceDeclHandler = self._endNamespace

    def parse(self, buffer: bytes) -> None:
        """
        Parse C{buffer}, keeping the bytes a payload may still need.
        """
        self._buffer += buffer
        super().parse(buffer)
        if not self._capturing:
            cut = self._keepFrom - self._base
            if cut > 0:
                del self._buffer[:cut]
                self._base = self._keepFrom

    def _startNamespace(self, prefix: str | None, uri: str | None) -> None:
        self._declared.add(prefix)
        if prefix is not None:
            self._prefixes.setdefault(prefix, []).append(uri or "")
        self._onStartNamespace(prefix, uri or "")

    def _endNamespace(self, prefix: str | None) -> None:
        if prefix is not None:
            stack = self._prefixes.get(prefix)
            if stack:
                stack.pop()
        self._onEndNamespace(prefix)

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth = self._depth + 1
        declared, self._declared = self._declared, set()
        if depth == 2:
            self._publish = name.rsplit(" ", 1)[-1] == "iq" and attrs.get("type") == "set"
        elif self._publish and depth <= 5:
            self._publish = name == (_PUBSUB, _PUBLISH, _ITEM)[depth - 3]
        elif self._publish and depth == 6 and name != _HEADERS:
            self._capturing = 1
            self._captureStart = self.parser.CurrentByteIndex
            self._captureName = name
            self._captureDeclared = declared
            self._captureDefault = self.defaultNsStack[-1]
            self.localPrefixes = {}
            self.elementCount += 1
            # Inside the payload only its depth matters: expat calls the two small handlers
            # below and builds no text or namespace events for Python.
            parser = self.parser
            parser.StartElementHandler = self._captureStartElement
            parser.EndElementHandler = self._captureEndElement
            parser.CharacterDataHandler = None
            parser.StartNamespaceDeclHandler = None
            parser.EndNamespaceDeclHandler = None
            return
        self._onStartElement(name, attrs)

    def _captureStartElement(self, name: str, attrs: dict[str, str]) -> None:
        self._capturing += 1
        self.elementCount += 1
        if self.elementCount > self.maxElementCount:
            raise domish.ParserError("Maximum element count exceeded")

    def _captureEndElement(self, name: str) -> None:
        self._capturing -= 1
        if not self._capturing:
            self._useStanzaHandlers()
            self._depth -= 1
            self._endPayload()

    def _end(self, name: str) -> None:
        depth = self._depth
        self._depth -= 1
        if depth == 2:
            self._keepFrom = self.parser.CurrentByteIndex
        if depth <= 5:
            self._publish = self._publish and depth > 2
        self._onEndElement(name)

    def _endPayload(self) -> None:
        """
        The payload element ended: add its bytes, namespaces declared, to the item.
        """
        buffer = self._buffer
        start = self._captureStart - self._base
        match = _START_TAG.match(buffer, start)
        if match is None:  # expat accepted it, so this does not happen
            raise domish.ParserError("unreadable payload start tag")
        end = self.parser.CurrentByteIndex - self._base
        if not match.group(2):  # not empty: the end tag starts at end
            end = buffer.index(b">", end) + 1
        raw = bytes(buffer[start:end])
        declarations = []
        if None not in self._captureDeclared:
            declarations.append(_declaration(None, self._captureDefault))
        for prefix, uris in self._prefixes.items():
            if uris and prefix not in self._captureDeclared and (prefix + ":").encode() in raw:
                declarations.append(_declaration(prefix, uris[-1]))
        if declarations:
            at = len(match.group(1)) + 1
            raw = raw[:at] + b"".join(declarations) + raw[at:]
        payload = RawPayload(raw.decode("utf-8"))
        payload.raw = raw
        uri, _, local = self._captureName.rpartition(" ")
        payload.uri = uri
        payload.name = local
        item: Any = self.currElem
        item.children.append(payload)


def routeRequests(
    stream: object, namespaces: Iterable[str], handler: Callable[[domish.Element], object]
) -> None:
    """
    Hand the IQ requests (gets and sets) whose first child element is in one of
    C{namespaces} straight to C{handler} when C{stream} is a L{HermodXmlStream}; any other
    stream dispatches them to its observers as usual.
    """
    routes = getattr(stream, "requestRoutes", None)
    if routes is not None:
        for namespace in namespaces:
            routes[namespace] = handler


class HermodXmlStream(xmlstream.XmlStream):
    """
    The Jabber XML stream with L{PayloadStream} as its parser, on a TCP connection without
    Nagle's algorithm.

    @ivar requestThrottle: The connection's L{hermod_component.xmpp.flow.ReadThrottle}, once
        authenticated: while it holds requests, IQ gets and sets read wait in it.
    @ivar requestRoutes: Handlers of IQ requests by the namespace of the request's first
        child element (L{routeRequests}). A routed request goes to its handler alone, without
        the XPath matching of every observer of the stream that a dispatch costs; its handler
        marks it handled as an observer would.
    """

    log = Logger()
    requestThrottle: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requestRoutes: dict[str, Callable[[domish.Element], object]] = {}

    def onElement(self, element: domish.Element) -> None:
        """
        Dispatch a stanza, unless it is a request and requests are held: then it waits, or,
        with too many waiting, is answered C{resource-constraint} (type C{wait}). Hermod's
        own barrier pings between its streams never wait, and go to the observers.
        """
        if element.name == "iq":
            attributes = element.attributes
            kind = attributes.get("type")
            if (kind == "get" or kind == "set") and not attributes.get("id", "").startswith(
                BARRIER_PREFIX
            ):
                throttle = self.requestThrottle
                if throttle is not None and throttle.holding:
                    if not throttle.wait(element):
                        error = StanzaError(
                            "resource-constraint", "wait", "too many requests wait; retry later"
                        )
                        self.send(error.toResponse(element))
                    return
                if self.requestRoutes and self._route(element):
                    return
        super().onElement(element)

    def _route(self, iq: domish.Element) -> bool:
        """
        Hand the request C{iq} to the handler of its first child's namespace, if there is one.

        @return: Whether it was handed over.
        """
        for child in iq.children:
            if isinstance(child, domish.Element):
                handler = self.requestRoutes.get(child.uri)
                if handler is None:
                    return False
                try:
                    handler(iq)
                except Exception:  # noqa: BLE001 - as an observer's: logged, the stream goes on
                    self.log.failure("Handling an IQ {type} failed", type=iq.getAttribute("type"))
                return True
        return False

    def connectionMade(self) -> None:
        """
        Turn Nagle's algorithm off, then start the stream.

        With it on, a notification written just after a publish's answer waits for the
        server's (delayed, up to 40 ms) acknowledgement of the answer: that was the p99
        latency at one publish at a time.
        """
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        super().connectionMade()

    def _initializeStream(self) -> None:
        """
        Set up the parser.
        """
        stream = PayloadStream()
        stream.DocumentStartEvent = self.onDocumentStart
        stream.ElementEvent = self.onElement
        stream.DocumentEndEvent = self.onDocumentEnd
        self.stream = stream
