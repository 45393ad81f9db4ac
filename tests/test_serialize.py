"""
Tests for L{hermod_component.xmpp.serialize}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish

from hermod_component.xmpp.serialize import serializeElement


def parse(xml: str | bytes) -> domish.Element:
    """
    Parse one element with domish, as the stream does.
    """
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    found: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(b"<wrap xmlns='jabber:client'>" + xml + b"</wrap>")
    return found[0]


def shape(element: domish.Element) -> tuple[object, ...]:
    """
    What an XML consumer sees of an element: expanded names, attributes, text and children.
    """
    return (
        element.uri,
        element.name,
        sorted(element.attributes.items(), key=repr),
        [c if isinstance(c, str) else shape(c) for c in element.children],
    )


PAYLOADS = [
    "<entry xmlns='http://www.w3.org/2005/Atom'><title>Tōkyō &amp; &lt;more&gt;</title>"
    "<link rel='alternate' href='https://x.example/?a=1&amp;b=&quot;2&quot;'/>"
    "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><p>Hi</p></div></content>"
    "<author><name>J</name></author></entry>",
    "<a:root xmlns:a='urn:a' xmlns:b='urn:b'><b:child b:attr='v' plain='p'>t</b:child>"
    "<a:other xml:lang='fr'>bonjour</a:other><none xmlns=''>x</none></a:root>",
    "<json xmlns='urn:xmpp:json:0'>{\"k\": \"&lt;v&gt; &amp; 'w'\"}</json>",
    "<x xmlns='urn:x' v='line1&#10;line2&#9;tab'/>",
]


class SerializeTests(SynchronousTestCase):
    """
    Serialized payloads parse back to the same element tree.
    """

    def test_roundTrip(self) -> None:
        """
        Namespaces (default and prefixed), xml:lang, namespaced attributes, escapes, unicode
        and empty elements survive serialization.
        """
        for payload in PAYLOADS:
            element = parse(payload)
            self.assertEqual(shape(parse(serializeElement(element))), shape(element), payload)

    def test_sameAsDomish(self) -> None:
        """
        The result parses to the same tree as domish's own serialization (except newlines and
        tabs in attribute values, which domish writes raw and a parser then turns into spaces).
        """
        for payload in PAYLOADS[:-1]:
            element = parse(payload)
            self.assertEqual(
                shape(parse(serializeElement(element))), shape(parse(element.toXml())), payload
            )
