"""
Tests for L{hermod_component.xmpp.stream}: publish payloads kept as received bytes.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component.testing import parseStanzas
from hermod_component.xmpp.request import HermodPubSubRequest
from hermod_component.xmpp.stream import HermodXmlStream, PayloadStream, RawPayload, routeRequests

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
STREAM_HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams'>"
)


def parseChunked(data: bytes, size: int) -> list[domish.Element]:
    """
    Parse C{data} after a stream header with L{PayloadStream}, C{size} bytes at a time.
    """
    stanzas: list[domish.Element] = []
    stream = PayloadStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = stanzas.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(STREAM_HEADER)
    for start in range(0, len(data), size):
        stream.parse(data[start : start + size])
    return stanzas


def publish(item: str, iqAttributes: str = "", pubsubAttributes: str = "") -> bytes:
    """
    A publish IQ set with C{item} as the inside of its one C{<item/>}.
    """
    return (
        f"<iq type='set' id='p1' from='a@example.org/r' to='pubsub.example.org' {iqAttributes}>"
        f"<pubsub xmlns='{NS_PUBSUB}' {pubsubAttributes}><publish node='n'><item id='i1'>"
        f"{item}</item></publish></pubsub></iq>"
    ).encode()


def payloadOf(data: bytes, size: int = 100000) -> bytes:
    """
    The payload bytes that the request parser takes from the publish C{data}.
    """
    (stanza,) = parseChunked(data, size)
    request = HermodPubSubRequest.fromElement(stanza)
    assert request.publishItems is not None
    return request.publishItems[0][1]


def meaning(xml: bytes) -> str:
    """
    C{xml} parsed on its own with domish and serialized again: what it means, namespaces
    resolved, with the serializer's own spelling.
    """
    (element,) = parseStanzas(xml)
    return str(element.toXml())


class PayloadStreamTests(SynchronousTestCase):
    """
    L{PayloadStream} keeps a publish payload as the bytes received, self-contained.
    """

    def test_rawBytesKept(self) -> None:
        """
        A payload that declares its namespace is kept byte for byte, CDATA sections, entity
        and character references and comments included.
        """
        entry = (
            "<entry xmlns='http://www.w3.org/2005/Atom'><title>A &amp; B &#x263A;</title>"
            "<!-- note --><content><![CDATA[<b>bold</b>]]></content>"
            "<x a='1&gt;2'  b=\"q'uote\" /></entry>"
        )
        self.assertEqual(payloadOf(publish(entry)), entry.encode())

    def test_splitAnywhere(self) -> None:
        """
        The bytes are the same whichever way the stream is cut into reads.
        """
        entry = "<entry xmlns='urn:e'><a>\u00e9t\u00e9</a><b/></entry>"
        data = publish(entry)
        for size in (1, 2, 3, 7, 64):
            self.assertEqual(payloadOf(data, size), entry.encode(), size)

    def test_inheritedDefaultNamespace(self) -> None:
        """
        A payload without its own default namespace is in the pubsub namespace it inherits,
        and its bytes say so.
        """
        payload = payloadOf(publish("<thing><child/></thing>"))
        self.assertEqual(
            meaning(payload),
            f"<thing xmlns='{NS_PUBSUB}'><child/></thing>",
        )

    def test_prefixDeclaredOnAncestor(self) -> None:
        """
        A prefix bound on the C{<iq/>} or the C{<pubsub/>} and used in the payload (element or
        attribute) is declared on the payload's start tag.
        """
        payload = payloadOf(
            publish(
                "<a:entry xmlns='urn:d'><a:title b:lang='x'>t</a:title><plain/></a:entry>",
                iqAttributes="xmlns:a='urn:a'",
                pubsubAttributes="xmlns:b='urn:b'",
            )
        )
        (element,) = parseStanzas(payload)
        self.assertEqual((element.uri, element.name), ("urn:a", "entry"))
        title = next(element.elements())
        self.assertEqual((title.uri, title.name), ("urn:a", "title"))
        self.assertEqual(title.attributes, {("urn:b", "lang"): "x"})
        plain = list(element.elements())[1]
        self.assertEqual(plain.uri, "urn:d")

    def test_prefixedRootInheritsDefaultForChildren(self) -> None:
        """
        Unprefixed children of a prefixed payload are in the inherited default namespace.
        """
        payload = payloadOf(
            publish("<a:entry xmlns:a='urn:a'><child/></a:entry>")
        )
        (element,) = parseStanzas(payload)
        self.assertEqual(next(element.elements()).uri, NS_PUBSUB)

    def test_redeclaredPrefixInside(self) -> None:
        """
        A prefix the payload binds again inside itself keeps its inner meaning there and the
        inherited one elsewhere.
        """
        payload = payloadOf(
            publish(
                "<e xmlns='urn:e'><a:x xmlns:a='urn:inner'/><a:y/></e>",
                iqAttributes="xmlns:a='urn:outer'",
            )
        )
        (element,) = parseStanzas(payload)
        x, y = element.elements()
        self.assertEqual((x.uri, y.uri), ("urn:inner", "urn:outer"))

    def test_undeclaredDefault(self) -> None:
        """
        A payload that resets the default namespace keeps it reset.
        """
        payload = payloadOf(publish("<e xmlns=''><f/></e>"))
        (element,) = parseStanzas(payload)
        self.assertEqual(element.uri, "")

    def test_emptyPayloadElement(self) -> None:
        """
        An empty payload element is kept whole.
        """
        self.assertEqual(
            payloadOf(publish("<e xmlns='urn:e' a='/>'/>")), b"<e xmlns='urn:e' a='/>'/>"
        )

    def test_headersStayElements(self) -> None:
        """
        SHIM headers next to the payload are parsed as elements and kept out of the payload.
        """
        (stanza,) = parseChunked(
            publish(
                "<e xmlns='urn:e'/><headers xmlns='http://jabber.org/protocol/shim'>"
                "<header name='h'>v</header></headers>"
            ),
            5,
        )
        request = HermodPubSubRequest.fromElement(stanza)
        self.assertEqual(request.publishItems, [("i1", b"<e xmlns='urn:e'/>", (("h", "v"),))])

    def test_twoPayloadsAreInvalid(self) -> None:
        """
        Two kept payloads in one item are still one too many.
        """
        (stanza,) = parseChunked(publish("<e xmlns='urn:e'/><f xmlns='urn:f'/>"), 100)
        error = self.assertRaises(StanzaError, HermodPubSubRequest.fromElement, stanza)
        self.assertEqual(error.condition, "bad-request")

    def test_onlyPublishSets(self) -> None:
        """
        Items anywhere else (an IQ result, a message's event) are parsed as elements.
        """
        data = publish("<e xmlns='urn:e'/>").replace(b"type='set'", b"type='result'")
        data += (
            b"<message><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'>"
            b"<item id='1'><e xmlns='urn:e'/></item></items></event></message>"
        )
        for stanza in parseChunked(data, 9):
            kept = [
                child for element in stanza.elements() for child in _descendants(element)
                if isinstance(child, RawPayload)
            ]
            self.assertEqual(kept, [])

    def test_errorResponseCarriesPayload(self) -> None:
        """
        Serializing the whole stanza (an error response copies it) writes the kept payload,
        which parses as the same element.
        """
        (stanza,) = parseChunked(publish("<thing a='1'><b>x</b></thing>"), 4)
        (again,) = parseStanzas(stanza.toXml())
        item = again.pubsub.publish.item
        thing = next(item.elements())
        self.assertEqual((thing.uri, thing.name, thing["a"]), (NS_PUBSUB, "thing", "1"))
        self.assertEqual(str(thing.b), "x")

    def test_bufferTrimmed(self) -> None:
        """
        Bytes of finished stanzas are not kept.
        """
        stream = PayloadStream()
        stream.DocumentStartEvent = lambda root: None
        stream.ElementEvent = lambda element: None
        stream.DocumentEndEvent = lambda: None
        stream.parse(STREAM_HEADER)
        data = publish("<e xmlns='urn:e'>" + "x" * 5000 + "</e>")
        for _ in range(10):
            stream.parse(data)
        self.assertLess(len(stream._buffer), 100)

    def test_laterStanzasUnaffected(self) -> None:
        """
        After a kept payload, the next stanzas and items parse normally, with their own
        payloads.
        """
        data = publish("<e xmlns='urn:e'><f/></e>") + publish("<g xmlns='urn:g'/>")
        data += b"<iq type='get' id='q'><query xmlns='urn:q'><x/></query></iq>"
        first, second, third = parseChunked(data, 6)
        self.assertEqual(payloadOf(first.toXml().encode()), b"<e xmlns='urn:e'><f/></e>")
        self.assertEqual(
            HermodPubSubRequest.fromElement(second).publishItems, [("i1", b"<g xmlns='urn:g'/>")]
        )
        self.assertEqual(third.query.x.uri, "urn:q")

    def test_textAndNamespacesAfterPayload(self) -> None:
        """
        Text and namespace prefixes inside a kept payload are not seen as elements' text or
        declarations; after it, the next stanza's are, as usual.
        """
        data = publish("<e xmlns='urn:e' xmlns:p='urn:p'>text<p:f>more</p:f></e>")
        data += (b"<message id='m' xmlns:q='urn:q'><body>hello &amp; bye</body>"
                 b"<q:x q:a='1'>inner</q:x></message>")
        first, second = parseChunked(data, 7)
        self.assertEqual(payloadOf(first.toXml().encode()),
                         b"<e xmlns='urn:e' xmlns:p='urn:p'>text<p:f>more</p:f></e>")
        self.assertEqual(str(second.body), "hello & bye")
        (extension,) = [c for c in second.elements() if c.name == "x"]
        self.assertEqual((extension.uri, extension.getAttribute(("urn:q", "a")), str(extension)),
                         ("urn:q", "1", "inner"))

    def test_elementLimitInsidePayload(self) -> None:
        """
        The elements of a kept payload count toward the stanza's element limit.
        """
        stream = PayloadStream()
        stream.maxElementCount = 20
        stream.DocumentStartEvent = lambda root: None
        stream.ElementEvent = lambda element: None
        stream.DocumentEndEvent = lambda: None
        stream.parse(STREAM_HEADER)
        payload = "<e xmlns='urn:e'>" + "<f/>" * 30 + "</e>"
        self.assertRaises(domish.ParserError, stream.parse, publish(payload))


def _descendants(element: domish.Element) -> list[object]:
    """
    Every child of C{element} and of its element descendants.
    """
    found: list[object] = []
    for child in element.children:
        found.append(child)
        if isinstance(child, domish.Element):
            found += _descendants(child)
    return found


class HermodXmlStreamTests(SynchronousTestCase):
    """
    L{HermodXmlStream} parses with L{PayloadStream} on a connection without Nagle's algorithm.
    """

    def test_noDelayAndPayloadStream(self) -> None:
        """
        Connecting turns TCP_NODELAY on and sets up the payload-keeping parser.
        """
        from twisted.internet.testing import StringTransport
        from twisted.words.protocols.jabber.xmlstream import Authenticator

        class NoDelayTransport(StringTransport):
            noDelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.noDelay = enabled

        stream = HermodXmlStream(Authenticator())
        transport = NoDelayTransport()
        stream.makeConnection(transport)
        self.assertTrue(transport.noDelay)
        self.assertIsInstance(stream.stream, PayloadStream)


class RequestRouteTests(SynchronousTestCase):
    """
    Requests whose first child is in a routed namespace go straight to the route's handler;
    everything else is dispatched to the observers.
    """

    def setUp(self) -> None:
        from twisted.internet.testing import StringTransport
        from twisted.words.protocols.jabber.xmlstream import Authenticator

        self.stream = HermodXmlStream(Authenticator())
        self.stream.makeConnection(StringTransport())
        self.stream.dataReceived(STREAM_HEADER)
        self.routed: list[domish.Element] = []
        self.observed: list[domish.Element] = []
        self.stream.addObserver("/iq", self.observed.append)
        routeRequests(self.stream, [NS_PUBSUB], self.routed.append)

    def test_routed(self) -> None:
        """
        A pubsub get or set reaches the handler and no observer.
        """
        self.stream.dataReceived(publish("<x xmlns='urn:x'/>"))
        self.stream.dataReceived(
            f"<iq type='get' id='g1' from='a@example.org/r'><pubsub xmlns='{NS_PUBSUB}'>"
            f"<items node='n'/></pubsub></iq>".encode()
        )
        self.assertEqual([iq["id"] for iq in self.routed], ["p1", "g1"])
        self.assertEqual(self.observed, [])

    def test_notRouted(self) -> None:
        """
        Answers, requests in another namespace and Hermod's barrier pings go to the
        observers.
        """
        from hermod_component.xmpp.streams import BARRIER_PREFIX

        self.stream.dataReceived(
            f"<iq type='result' id='a1'><pubsub xmlns='{NS_PUBSUB}'/></iq>"
            "<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            f"<iq type='get' id='{BARRIER_PREFIX}1'><pubsub xmlns='{NS_PUBSUB}'/></iq>".encode()
        )
        self.assertEqual(self.routed, [])
        self.assertEqual([iq["id"] for iq in self.observed], ["a1", "d1", f"{BARRIER_PREFIX}1"])

    def test_otherStreams(self) -> None:
        """
        On a stream that is not Hermod's, L{routeRequests} does nothing: its observers keep
        the requests.
        """
        from twisted.words.protocols.jabber.xmlstream import Authenticator, XmlStream

        plain = XmlStream(Authenticator())
        routeRequests(plain, [NS_PUBSUB], self.routed.append)
        self.assertFalse(hasattr(plain, "requestRoutes"))

    def test_handlerFailureLogged(self) -> None:
        """
        A handler that raises is logged, as an observer's exception is, and the stream reads
        on.
        """
        def broken(iq: domish.Element) -> None:
            raise RuntimeError("broken handler")

        routeRequests(self.stream, [NS_PUBSUB], broken)
        self.stream.dataReceived(publish("<x xmlns='urn:x'/>"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        routeRequests(self.stream, [NS_PUBSUB], self.routed.append)
        self.stream.dataReceived(publish("<y xmlns='urn:y'/>"))
        self.assertEqual(len(self.routed), 1)


class RequestStanzaTests(SynchronousTestCase):
    """
    L{HermodPubSubRequest} parses the stanza's own attributes itself, as wokkel's
    C{Stanza.parseElement} would for a request without child parsers.
    """

    def test_noChildParsers(self) -> None:
        """
        No class of the request's hierarchy declares child parsers, which its own stanza
        parsing would skip.
        """
        from twisted.python import reflect

        parsers: dict[object, object] = {}
        reflect.accumulateClassDict(HermodPubSubRequest, "childParsers", parsers)
        self.assertEqual(parsers, {})

    def test_addressingTypeAndId(self) -> None:
        """
        Sender, recipient, type and id are read, and the stream's namespace is stripped from
        the stanza, as wokkel does.
        """
        (stanza,) = parseChunked(publish("<x xmlns='urn:x'/>"), 1000)
        self.assertEqual(stanza.uri, "jabber:component:accept")
        request = HermodPubSubRequest.fromElement(stanza)
        self.assertEqual(
            (request.sender.full(), request.recipient.full(), request.stanzaType,
             request.stanzaID),
            ("a@example.org/r", "pubsub.example.org", "set", "p1"),
        )
        self.assertIsNone(stanza.uri)
        self.assertIs(request.element, stanza)
