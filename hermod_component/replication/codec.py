"""
The change item: a L{Change} as the payload of one pubsub item, and back.

An update is an Atom entry carrying the C{urn:xmpp:hermod:0} sync element and the native payload
in C{<content>} (XML as a child element, JSON in an XEP-0335 C{<json>} container, anything else
base64); a delete is an RFC 6721 C{<deleted-entry>} tombstone carrying the same sync element.
C{change.rng} in this package is the schema of both.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import time
from copy import deepcopy
from typing import Any
from urllib.parse import quote, unquote

from lxml import etree

from hermod_component.model import Change, ChangeAction
from hermod_component.replication.version import versionKey

NS_ATOM = "http://www.w3.org/2005/Atom"
NS_SYNC = "urn:xmpp:hermod:0"
NS_TOMBSTONE = "http://purl.org/atompub/tombstones/1.0"
NS_JSON = "urn:xmpp:json:0"
ID_PREFIX = "urn:hermod:object:"
_MARKER = "@@hermod-content-7f3a@@"
#: An C{xmlns=""} in a root start tag (lxml escapes the quotes of attribute values, so the
#: match cannot come from inside one).
_ROOT_UNDECLARED = re.compile(rb'^(<[^\s/>]+[^>]*?)\s+xmlns=""')

_A = f"{{{NS_ATOM}}}"
_S = f"{{{NS_SYNC}}}"
_T = f"{{{NS_TOMBSTONE}}}"
_SYNC = _S + "sync"
_HOP = _S + "hop"

#: Parser for untrusted payloads: no entities, no network, no DTD.
PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=False
)


class DecodeError(ValueError):
    """
    An item payload is not a valid change item.
    """


def parseXML(payload: bytes, what: str = "payload") -> etree._Element:
    """
    Parse untrusted XML: no entities, no DTD, no network.

    @raise DecodeError: It does not parse or has a document type declaration.
    """
    try:
        root = etree.fromstring(payload, PARSER)
    except etree.XMLSyntaxError as e:
        raise DecodeError(f"{what} is not XML: {e}") from None
    if root.getroottree().docinfo.doctype:
        raise DecodeError(f"{what} has a document type declaration, which is not allowed")
    return root


def isXML(contentType: str) -> bool:
    """
    Whether payloads of C{contentType} are XML documents.
    """
    return contentType.endswith("xml")


def isJSON(contentType: str) -> bool:
    """
    Whether payloads of C{contentType} are JSON texts.
    """
    return contentType.endswith("json")


def contentHash(payload: bytes, contentType: str) -> str:
    """
    C{sha256:<hex>} of the payload's canonical form (exclusive C14N for XML, sorted compact JSON
    for JSON, the bytes otherwise), so a re-serialized copy hashes the same.

    @raise DecodeError: XML or JSON that does not parse.
    """
    if not payload:
        return "sha256:" + hashlib.sha256(b"").hexdigest()
    if isXML(contentType):
        canonical = etree.tostring(parseXML(payload), method="c14n", exclusive=True)
    elif isJSON(contentType):
        try:
            canonical = json.dumps(
                json.loads(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
        except ValueError as e:
            raise DecodeError(f"payload is not JSON: {e}") from None
    else:
        canonical = payload
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _iso(when: float) -> str:
    millis = round(when * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"


def _parseISO(text: str) -> float:
    """
    Seconds since the epoch of an ISO 8601 time; UTC when it names no zone.

    @raise ValueError: Not such a time.
    """
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _sync(change: Change) -> etree._Element:
    sync = etree.Element(_S + "sync", nsmap={None: NS_SYNC})
    sync.set("action", change.action.value)
    sync.set("origin", change.origin)
    sync.set("version", change.version)
    if change.previous:
        sync.set("previous", change.previous)
    if change.hash:
        sync.set("hash", change.hash)
    if change.parent:
        sync.set("parent", change.parent)
    for hop in change.hops:
        etree.SubElement(sync, _S + "hop").set("jid", hop)
    return sync


def encodeChange(change: Change) -> bytes:
    """
    The item payload for C{change}.

    @raise DecodeError: The change's XML or JSON payload does not parse.
    """
    entryId = ID_PREFIX + quote(change.objectId, safe="")
    if change.action is ChangeAction.DELETE:
        root = etree.Element(_T + "deleted-entry", nsmap={"at": NS_TOMBSTONE})
        root.set("ref", entryId)
        root.set("when", _iso(change.updated))
        root.append(_sync(change))
        return etree.tostring(root)
    # A prefix, not the default namespace: a payload without namespace must stay so.
    root = etree.Element(_A + "entry", nsmap={"atom": NS_ATOM})
    etree.SubElement(root, _A + "id").text = entryId
    etree.SubElement(root, _A + "title").text = change.title or change.objectId
    etree.SubElement(root, _A + "updated").text = _iso(change.updated)
    if change.category:
        etree.SubElement(root, _A + "category").set("term", change.category)
    root.append(_sync(change))
    content = etree.SubElement(root, _A + "content")
    content.set("type", change.contentType)
    if isXML(change.contentType):
        # The item is embedded in stanzas whose default namespace is pubsub's: a payload root
        # without a namespace must say so (xmlns=""), which lxml never writes by itself.
        document = parseXML(change.payload)
        body = etree.tostring(document)
        if not document.tag.startswith("{") and not _ROOT_UNDECLARED.match(body):
            body = re.sub(rb"^<([^\s/>]+)", rb'<\1 xmlns=""', body, count=1)
        content.text = _MARKER
        return etree.tostring(root).replace(_MARKER.encode(), body, 1)
    elif isJSON(change.contentType):
        etree.SubElement(content, f"{{{NS_JSON}}}json", nsmap={None: NS_JSON}).text = (
            change.payload.decode("utf-8")
        )
    else:
        content.text = base64.b64encode(change.payload).decode("ascii")
    return etree.tostring(root)


def _firstChildren(element: etree._Element) -> dict[Any, etree._Element]:
    """
    The first child of C{element} of each tag (what C{find} of each tag gives), found in one
    pass: cheaper than a path search per tag.
    """
    found: dict[Any, etree._Element] = {}
    for child in element:
        found.setdefault(child.tag, child)
    return found


def _textOf(element: etree._Element | None) -> str:
    """
    What C{findtext(tag, "")} gives for the child C{element} found (or L{None}).
    """
    if element is None:
        return ""
    return element.text or ""


def _readSync(sync: etree._Element | None) -> dict[str, object]:
    if sync is None:
        raise DecodeError("no sync element")
    try:
        action = ChangeAction(sync.get("action", ""))
    except ValueError:
        raise DecodeError(f"unknown action {sync.get('action')!r}") from None
    version = sync.get("version", "")
    origin = sync.get("origin", "")
    if not version or not origin:
        raise DecodeError("sync element without version or origin")
    try:
        versionKey(version)
    except ValueError:
        raise DecodeError(f"malformed version {version!r}") from None
    return {
        "action": action,
        "version": version,
        "origin": origin,
        "previous": sync.get("previous", ""),
        "hash": sync.get("hash", ""),
        "parent": sync.get("parent") or None,
        "hops": tuple(hop.get("jid", "") for hop in sync if hop.tag == _HOP),
    }


def withHop(payload: bytes, jid: str) -> bytes:
    """
    An item payload with one more hop, otherwise as it is: what a Hermod republishes of an
    item it applied unchanged (cheaper than encoding the change again).

    @raise DecodeError: The payload is not a change item with a sync element.
    """
    return treeWithHop(parseXML(payload, "item"), jid)


def treeWithHop(root: etree._Element, jid: str) -> bytes:
    """
    L{withHop} of an item payload already parsed (by L{decodeItem}): the tree gets the hop.

    @raise DecodeError: The tree is not a change item with a sync element.
    """
    sync = next((child for child in root if child.tag == _SYNC), None)
    if sync is None:
        raise DecodeError("no sync element")
    etree.SubElement(sync, _HOP).set("jid", jid)
    return bytes(etree.tostring(root))


def decodeChange(itemId: str, payload: bytes, verifyHash: bool = True) -> Change:
    """
    The change carried by an item payload.

    @param itemId: The pubsub item id, which must name the same object as the payload.
    @param verifyHash: Whether to check the content against the carried hash; not for an item
        that a transform changed after the partner hashed it.
    @raise DecodeError: Not a change item, or its content does not match its hash.
    """
    return decodeItem(itemId, payload, verifyHash)[0]


def decodeItem(
    itemId: str, payload: bytes, verifyHash: bool = True
) -> tuple[Change, etree._Element]:
    """
    L{decodeChange}, with the parsed item payload (for L{treeWithHop}, so that the payload is
    parsed once); the tree is the caller's to change.
    """
    root = parseXML(payload, "item")
    canonical: bytes | None = None  # XML content in canonical form, when hashed below
    # The children looked at, in one pass (a path search per child cost more than the rest).
    children = _firstChildren(root)
    if root.tag == _T + "deleted-entry":
        fields = _readSync(children.get(_SYNC))
        ref = root.get("ref", "")
        when = _parseWhen(root.get("when", ""))
        change = Change(objectId=itemId, payload=b"", contentType="", updated=when, **fields)  # type: ignore[arg-type]
        if change.action is not ChangeAction.DELETE:
            raise DecodeError("a tombstone must carry action delete")
    elif root.tag == _A + "entry":
        fields = _readSync(children.get(_SYNC))
        ref = _textOf(children.get(_A + "id"))
        when = _parseWhen(_textOf(children.get(_A + "updated")))
        content = children.get(_A + "content")
        if content is None:
            raise DecodeError("entry without content")
        contentType = content.get("type", "application/octet-stream")
        if isXML(contentType):
            inner = list(content)
            if len(inner) != 1 or (content.text or "").strip() or (
                inner[0].tail or ""
            ).strip():
                raise DecodeError("XML content must hold exactly one element and no text")
            # A copy in a document of its own declares the namespaces it uses and none of the
            # entry's. Not cleanup_namespaces: it also drops an inner xmlns="" (an element
            # back in no namespace under a default one), which changes the object.
            copy = deepcopy(inner[0])
            copy.tail = None
            body = etree.tostring(copy)
            if not copy.tag.startswith("{"):
                # The xmlns="" that encodeChange put on a root in no namespace: redundant in
                # a document of its own (cut out by hand: re.sub expands its template at
                # every call).
                undeclared = _ROOT_UNDECLARED.match(body)
                if undeclared is not None:
                    body = undeclared.group(1) + body[undeclared.end():]
            if verifyHash and fields["hash"]:
                # What contentHash(body) computes, without parsing body again: the copy is
                # the document body parses to.
                canonical = etree.tostring(copy, method="c14n", exclusive=True)
        elif isJSON(contentType):
            container = content.find(f"{{{NS_JSON}}}json")
            if container is None:
                raise DecodeError("JSON content without its json container")
            body = (container.text or "").encode("utf-8")
        else:
            body = base64.b64decode(content.text or "")
        category = children.get(_A + "category")
        change = Change(
            objectId=itemId,
            payload=body,
            contentType=contentType,
            title=_textOf(children.get(_A + "title")),
            category=category.get("term", "") if category is not None else "",
            updated=when,
            **fields,  # type: ignore[arg-type]
        )
        if change.action is ChangeAction.DELETE:
            raise DecodeError("a delete must be a tombstone")
        if verifyHash and change.hash and (
            "sha256:" + hashlib.sha256(canonical).hexdigest() if canonical is not None
            else contentHash(body, contentType)
        ) != change.hash:
            raise DecodeError("content does not match its hash")
    else:
        raise DecodeError(f"unexpected root element {root.tag}")
    if unquote(ref[len(ID_PREFIX):]) != itemId or not ref.startswith(ID_PREFIX):
        raise DecodeError(f"entry id {ref!r} does not name item {itemId!r}")
    return change, root


def _parseWhen(updated: str) -> float:
    """
    The time of a change item (0 when it has none).

    @raise DecodeError: A malformed time.
    """
    try:
        return _parseISO(updated) if updated else 0.0
    except ValueError:
        raise DecodeError(f"malformed time {updated!r}") from None
