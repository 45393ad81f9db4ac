"""
Tests for the change item codec, its RELAX NG schema and replication versions.
"""

from __future__ import annotations

import os

from lxml import etree
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.model import Change, ChangeAction
from hermod_component.replication import codec
from hermod_component.replication.codec import DecodeError, contentHash, decodeChange, encodeChange
from hermod_component.replication.version import (
    HybridClock,
    isConcurrent,
    isNewer,
    nextVersion,
    versionKey,
)

SCHEMA = etree.RelaxNG(
    etree.parse(os.path.join(os.path.dirname(codec.__file__), "change.rng"))
)

XML = b'<doc xmlns="urn:example" parent="p1"><title>Front &amp; back</title></doc>'


def _change(**kw: object) -> Change:
    values: dict[str, object] = {
        "objectId": "obj 1/é", "action": ChangeAction.UPDATE, "payload": XML,
        "contentType": "application/xml", "version": "2:1700000000123:a.example",
        "previous": "1:1700000000000:a.example", "origin": "a.example",
        "hops": ("a.example", "b.example"), "parent": "p1", "updated": 1700000000.5,
        "hash": contentHash(XML, "application/xml"),
    }
    values.update(kw)
    return Change(**values)  # type: ignore[arg-type]


class CodecTests(SynchronousTestCase):
    """
    Change items encode to the schema and decode back unchanged.
    """

    def test_xmlRoundTrip(self) -> None:
        """
        An XML change survives encoding and decoding, and its payload validates.
        """
        change = _change()
        payload = encodeChange(change)
        SCHEMA.assertValid(etree.fromstring(payload))
        back = decodeChange(change.objectId, payload)
        self.assertEqual(back.version, change.version)
        self.assertEqual(back.previous, change.previous)
        self.assertEqual(back.hops, change.hops)
        self.assertEqual(back.parent, "p1")
        self.assertEqual(back.updated, 1700000000.5)
        self.assertEqual(contentHash(back.payload, back.contentType), change.hash)

    def test_xmlNamespacesRoundTrip(self) -> None:
        """
        XML objects come back as the same bytes whatever their namespaces: an element back in
        no namespace under a default one (C{xmlns=""}), a root in no namespace, prefixed
        names, and a root in the Atom namespace of the entry around it; their hashes check.
        """
        for payload in [
            b'<doc xmlns="urn:d"><p xmlns="">e</p></doc>',
            b'<doc n="1"><p>e</p></doc>',
            b'<x:doc xmlns:x="urn:x" a="1"><x:p>t</x:p></x:doc>',
            b'<a><b xmlns:q="urn:q" q:z="1">text &amp; more</b></a>',
            (b'<atom:entry xmlns:atom="http://www.w3.org/2005/Atom"><atom:id>1</atom:id>'
             b'</atom:entry>'),
            b'<doc xmlns="http://www.w3.org/2005/Atom"><p xmlns=""/></doc>',
        ]:
            change = _change(payload=payload, parent=None,
                             hash=contentHash(payload, "application/xml"))
            back = decodeChange(change.objectId, encodeChange(change))
            self.assertEqual(back.payload, payload)
        # A root that says it is in no namespace comes back without the redundant xmlns="",
        # wherever it was declared; the item is valid (one xmlns="" on the root, not two).
        for payload, expected in [
            (b'<doc xmlns="" a="1"/>', b'<doc a="1"/>'),
            (b'<doc xmlns:u="urn:u" xmlns="" u:a="1"/>', b'<doc xmlns:u="urn:u" u:a="1"/>'),
        ]:
            change = _change(payload=payload, parent=None,
                             hash=contentHash(payload, "application/xml"))
            item = encodeChange(change)
            SCHEMA.assertValid(etree.fromstring(item))
            self.assertEqual(decodeChange(change.objectId, item).payload, expected)

    def test_xmlContentOnlyOneElement(self) -> None:
        """
        Text around the content's element is refused, not kept as part of the object
        (whitespace is fine and dropped).
        """
        change = _change()
        item = encodeChange(change)
        spaced = item.replace(b"</atom:content>", b"\n  </atom:content>")
        self.assertEqual(decodeChange(change.objectId, spaced).payload, XML)
        for broken in [item.replace(b"</atom:content>", b"tail</atom:content>"),
                       item.replace(b'type="application/xml">', b'type="application/xml">x')]:
            self.assertRaises(DecodeError, decodeChange, change.objectId, broken)

    def test_jsonRoundTrip(self) -> None:
        """
        A JSON payload travels in an XEP-0335 container and comes back as the same JSON.
        """
        body = b'{"b": 1, "a": "<x>&"}'
        change = _change(payload=body, contentType="application/json",
                         hash=contentHash(body, "application/json"), parent=None)
        payload = encodeChange(change)
        SCHEMA.assertValid(etree.fromstring(payload))
        back = decodeChange(change.objectId, payload)
        self.assertEqual(back.payload, body)
        self.assertIsNone(back.parent)

    def test_tombstone(self) -> None:
        """
        A delete is an RFC 6721 tombstone carrying the sync element.
        """
        change = _change(action=ChangeAction.DELETE, payload=b"", contentType="", hash="",
                         parent=None)
        payload = encodeChange(change)
        root = etree.fromstring(payload)
        self.assertEqual(root.tag, f"{{{codec.NS_TOMBSTONE}}}deleted-entry")
        SCHEMA.assertValid(root)
        back = decodeChange(change.objectId, payload)
        self.assertIs(back.action, ChangeAction.DELETE)
        self.assertEqual(back.version, change.version)

    def test_schemaRejectsMissingSync(self) -> None:
        """
        The schema requires the sync element with at least one hop.
        """
        root = etree.fromstring(encodeChange(_change(hops=())))
        self.assertFalse(SCHEMA.validate(root))

    def test_brokenItems(self) -> None:
        """
        Items that are not change items, whose id does not match, or whose content does not
        match its hash fail to decode with a reason.
        """
        good = encodeChange(_change())
        self.assertRaises(DecodeError, decodeChange, "other", good)
        self.assertRaises(DecodeError, decodeChange, "x", b"<notatom/>")
        self.assertRaises(DecodeError, decodeChange, "x", b"<unclosed")
        tampered = good.replace(b"Front", b"Frnot")
        error = self.assertRaises(DecodeError, decodeChange, _change().objectId, tampered)
        self.assertIn("hash", str(error))

    def test_noEntities(self) -> None:
        """
        Entities in an item are not expanded (no file or network access).
        """
        evil = (b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<doc>&x;</doc>')
        self.assertRaises(DecodeError, contentHash, evil, "application/xml")
        self.assertRaises(DecodeError, encodeChange, _change(payload=evil, hash=""))
        self.assertRaises(DecodeError, decodeChange, "x", evil)

    def test_hashIgnoresSerialization(self) -> None:
        """
        Re-serialized XML (declaration, attribute quoting, empty tags) hashes the same.
        """
        self.assertEqual(
            contentHash(b"<?xml version='1.0'?><doc xmlns='urn:x' k='1'/>", "application/xml"),
            contentHash(b'<doc xmlns="urn:x" k="1"></doc>', "application/xml"),
        )


class WithHopTests(SynchronousTestCase):
    """
    L{codec.withHop}: what a Hermod republishes of an item it applied.
    """

    def test_sameAsEncodingAgain(self) -> None:
        """
        An entry and a tombstone with one more hop decode to the change with that hop added,
        exactly as encoding the change again would give.
        """
        body = b'<doc n="1"/>'
        entry = Change("o1", ChangeAction.UPDATE, body, "application/xml", version="2:5:a.x",
                       previous="1:4:a.x", origin="a.x", hops=("a.x",),
                       hash=contentHash(body, "application/xml"), updated=5.0)
        tombstone = Change("o2", ChangeAction.DELETE, b"", "", version="3:6:a.x",
                           origin="a.x", hops=("a.x", "b.x"), updated=6.0)
        for change in (entry, tombstone):
            forwarded = codec.withHop(encodeChange(change), "c.x")
            expected = Change(**{**{a: getattr(change, a) for a in (
                "objectId", "action", "payload", "contentType", "version", "previous", "origin",
                "parent", "title", "category", "updated", "hash")}, "hops": change.hops + ("c.x",)})
            self.assertEqual(decodeChange(change.objectId, forwarded),
                             decodeChange(change.objectId, encodeChange(expected)))
            self.assertEqual(decodeChange(change.objectId, forwarded).hops[-1], "c.x")

    def test_notAChange(self) -> None:
        """
        A payload without a sync element is refused.
        """
        self.assertRaises(
            DecodeError, codec.withHop, b'<entry xmlns="http://www.w3.org/2005/Atom"/>', "c.x"
        )


class DecodeItemTests(SynchronousTestCase):
    """
    L{codec.decodeItem} and L{codec.treeWithHop}: a partner item parsed once, for decoding and
    for republishing it with one more hop.
    """

    def test_sameAsDecodeAndWithHop(self) -> None:
        """
        The change is L{decodeChange}'s, and the tree with a hop serializes to the bytes
        L{codec.withHop} gives, for XML, JSON and binary content and for a tombstone.
        """
        changes = [
            _change(),
            _change(payload=b'{"b": 1, "a": [2]}', contentType="application/json",
                    hash=contentHash(b'{"b": 1, "a": [2]}', "application/json"), parent=None),
            _change(payload=b"\x00\xff", contentType="image/png",
                    hash=contentHash(b"\x00\xff", "image/png"), parent=None),
            _change(action=ChangeAction.DELETE, payload=b"", contentType="", hash="",
                    parent=None),
        ]
        for change in changes:
            payload = encodeChange(change)
            decoded, tree = codec.decodeItem(change.objectId, payload)
            self.assertEqual(decoded, decodeChange(change.objectId, payload))
            self.assertEqual(
                codec.treeWithHop(tree, "c.example"), codec.withHop(payload, "c.example")
            )

    def test_hashCheckedOnParsedContent(self) -> None:
        """
        XML content is checked against its hash from the parsed content: a re-serialized
        payload (other quoting and prefixes) passes, a changed one fails; without
        C{verifyHash} the changed one decodes.
        """
        payload = encodeChange(_change())
        requoted = payload.replace(b'parent="p1"', b"parent='p1'")
        self.assertNotEqual(requoted, payload)
        self.assertEqual(codec.decodeItem(_change().objectId, requoted)[0].payload,
                         decodeChange(_change().objectId, payload).payload)
        tampered = payload.replace(b"Front", b"Frnot")
        error = self.assertRaises(DecodeError, codec.decodeItem, _change().objectId, tampered)
        self.assertIn("hash", str(error))
        self.assertIn(b"Frnot", codec.decodeItem(
            _change().objectId, tampered, verifyHash=False)[0].payload)

    def test_firstChildOfEachName(self) -> None:
        """
        The entry's children are looked up in one pass as C{find} would: comments and
        unknown children are passed over, and of two children of one name the first counts.
        """
        change = _change()
        payload = encodeChange(change)
        marked = payload.replace(b"<atom:title>", b"<!-- note --><other/><atom:title>", 1)
        doubled = payload.replace(b"</atom:entry>",
                                  b"<atom:title>second</atom:title></atom:entry>")
        for variant in (marked, doubled):
            self.assertNotEqual(variant, payload)
            decoded, tree = codec.decodeItem(change.objectId, variant)
            self.assertEqual(decoded, decodeChange(change.objectId, payload))
            self.assertIn(b'<hop jid="c.example"/></sync>', codec.treeWithHop(tree, "c.example"))

    def test_notAChange(self) -> None:
        """
        A tree without a sync element is refused.
        """
        self.assertRaises(
            DecodeError, codec.treeWithHop,
            etree.fromstring(b'<entry xmlns="http://www.w3.org/2005/Atom"/>'), "c.x",
        )


class VersionTests(SynchronousTestCase):
    """
    Versions order by counter, then time, then origin.
    """

    def test_order(self) -> None:
        """
        A higher counter wins over a later time; equal counters and times fall to the origin.
        """
        self.assertTrue(isNewer("2:1:z", "1:999:a"))
        self.assertTrue(isNewer("2:5:a", "2:4:z"))
        self.assertTrue(isNewer("2:5:b", "2:5:a"))
        self.assertFalse(isNewer("2:5:a", "2:5:a"))
        self.assertTrue(isNewer("1:1:a", None))
        self.assertEqual(versionKey("10:2:x.y:z"), (10, 2, "x.y:z"))

    def test_hybridClock(self) -> None:
        """
        The clock never goes back, even when the wall clock does, and moves past remote times.
        """
        clock = Clock()
        clock.advance(100)
        hlc = HybridClock(clock)
        first = hlc.now()
        clock.advance(-50)
        self.assertGreater(hlc.now(), first)
        hlc.observe("3:999999999:b")
        self.assertEqual(nextVersion("3:999999999:b", hlc, "a"), "4:1000000000:a")

    def test_concurrent(self) -> None:
        """
        Two edits of one base are concurrent; a successor is not.
        """
        self.assertTrue(isConcurrent("2:5:a", "1:1:a", "2:6:c", "1:1:a"))
        self.assertFalse(isConcurrent("2:5:a", "1:1:a", "3:6:c", "2:5:a"))
