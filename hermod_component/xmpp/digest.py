"""
Digests (XEP-0060 C{pubsub#digest}) and message bodies (C{pubsub#include_body}) of
notifications.

A digest subscription's notifications are not written at once: their serialized C{<event/>}
elements wait in a L{DigestBuffer} and leave together, as one C{<message/>}, when the
subscription's period is over. The period starts with the first notification gathered, so a
subscription receives at most one digest per period and nothing when nothing happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lxml import etree
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hermod_component.model import Item

NS_ATOM = "http://www.w3.org/2005/Atom"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _title(payload: bytes) -> str | None:
    """
    The title of an Atom entry payload, or L{None} if the payload is not one.
    """
    if not payload.lstrip().startswith(b"<entry"):
        return None
    try:
        root = etree.fromstring(payload, _PARSER)
    except etree.XMLSyntaxError:
        return None
    if root.tag != f"{{{NS_ATOM}}}entry":
        return None
    title = root.find(f"{{{NS_ATOM}}}title")
    if title is None:
        return None
    text = "".join(title.itertext()).strip()
    return text or None


def itemsBody(node: str, items: Sequence[Item]) -> str:
    """
    The human-readable body of an items notification: each Atom entry's title, or
    C{new item ID on NODE}, one line per item.
    """
    return "\n".join(_title(item.payload) or f"new item {item.itemId} on {node}" for item in items)


#: The body of the other kinds of notification, by kind, formatted with the node.
EVENT_BODIES = {
    "retract": "items retracted from {node}",
    "purge": "node {node} purged",
    "delete": "node {node} deleted",
    "configuration": "configuration of {node} changed",
}


class DigestBuffer:
    """
    The notifications waiting for the end of their subscription's digest period.

    @ivar limit: The most notifications one digest holds; reaching it sends the digest early,
        which keeps memory bounded whatever the period.
    """

    log = Logger()
    limit = 1000

    def __init__(self, clock: IReactorTime, write: Callable[[str, str, str, list[bytes]], None]):
        """
        @param write: Called with C{(jid, subid, message type, events)} to send a digest.
        """
        self.clock = clock
        self.write = write
        self._waiting: dict[tuple[str, str], tuple[str, list[bytes], IDelayedCall]] = {}

    def add(self, jid: str, subscriptionId: str, milliseconds: int, messageType: str,
            event: bytes) -> None:
        """
        Gather one serialized C{<event/>} for the subscription C{subscriptionId} of C{jid}.
        """
        key = (jid, subscriptionId)
        entry = self._waiting.get(key)
        if entry is None:
            call = self.clock.callLater(milliseconds / 1000.0, self.flush, key)
            entry = self._waiting[key] = (messageType, [], call)
        entry[1].append(event)
        if len(entry[1]) >= self.limit:
            entry[2].cancel()
            self.flush(key)

    def flush(self, key: tuple[str, str]) -> None:
        """
        Send the digest of one subscription now.
        """
        entry = self._waiting.pop(key, None)
        if entry is None:
            return
        messageType, events, _ = entry
        try:
            self.write(key[0], key[1], messageType, events)
        except Exception:  # noqa: BLE001 - a timer callback: log, never lose the timer loop
            self.log.failure("Sending a digest to {jid} failed", jid=key[0])

    def flushAll(self) -> None:
        """
        Send every waiting digest now.
        """
        for key, entry in list(self._waiting.items()):
            if entry[2].active():
                entry[2].cancel()
            self.flush(key)

    def __len__(self) -> int:
        """
        How many subscriptions have a digest waiting.
        """
        return len(self._waiting)
