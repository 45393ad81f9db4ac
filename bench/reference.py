"""
The reference component: the least work any XEP-0114 pubsub component can do per publish.

C{python -m bench.reference --port P --jid J --secret S} connects to the server's component
port, does the handshake, prints C{authenticated} on stdout, and then:

  - answers a pubsub C{<subscribe>} with a result and adds the JID to the node's subscriber list;
  - answers a C{<publish>} with a result and writes one notification per subscriber: the
    C{<message from= to=>} head of each subscriber is serialized once when it subscribes, the
    event body once per publish (the published C{<item>} bytes are copied, never re-serialized),
    and all of them go out in one write;
  - answers any other IQ get or set with an empty result (so node creation succeeds).

It keeps nothing on disk, checks no permissions and parses with expat only to find stanza
boundaries and the few attributes it needs. It stops reading while the server has not drained
4 MB of its output, so its memory stays bounded as a real component's must. Its figures are the
ceiling of the component path through a given server, not a pubsub service to compare features
with.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from typing import Any
from xml.parsers import expat

NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def quote(value: str) -> bytes:
    """
    C{value} as a single-quoted XML attribute value.
    """
    return (
        "'" + value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;") + "'"
    ).encode()


class ReferenceComponent(asyncio.Protocol):
    """
    The component stream. See the module docstring.
    """

    def __init__(self, jid: str, secret: str, ready: asyncio.Future[None]) -> None:
        self.jid = jid
        self.secret = secret
        self.ready = ready
        self.subscribers: dict[str, list[bytes]] = {}
        self.subscribed: dict[str, set[str]] = {}
        self.buffer = bytearray()
        self.base = 0
        self.depth = 0
        self.stanzaStart = 0
        self.stanza: dict[str, Any] = {}
        self.parser = expat.ParserCreate()
        self.parser.buffer_text = True
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.transport: asyncio.Transport | None = None
        self.published = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """
        Open the component stream.
        """
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=4 * 2**20)
        self.transport.write(
            (
                "<stream:stream xmlns='jabber:component:accept' "
                f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.jid}'>"
            ).encode()
        )

    def pause_writing(self) -> None:
        """
        The server is slow: stop reading requests until it drains.
        """
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        """
        The server drained: read again.
        """
        assert self.transport is not None
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """
        Parse C{data}; keep only the bytes of an unfinished stanza.
        """
        self.buffer += data
        self.parser.Parse(data, False)
        if self.depth <= 1:
            self.base += len(self.buffer)
            self.buffer.clear()
        else:
            cut = self.stanzaStart - self.base
            if cut > 0:
                del self.buffer[:cut]
                self.base += cut

    def connection_lost(self, exc: Exception | None) -> None:
        """
        The server closed the stream: exit.
        """
        print(f"connection lost: {exc}", flush=True)
        asyncio.get_running_loop().stop()

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        """
        Note the attributes the answers need.
        """
        self.depth += 1
        depth = self.depth
        if depth == 1:
            streamID = attrs.get("id", "")
            digest = hashlib.sha1((streamID + self.secret).encode()).hexdigest()
            assert self.transport is not None
            self.transport.write(f"<handshake>{digest}</handshake>".encode())
        elif depth == 2:
            self.stanzaStart = self.parser.CurrentByteIndex
            self.stanza = {"name": name, "attrs": attrs}
        elif depth == 4:
            self.stanza["verb"] = name
            self.stanza["verbAttrs"] = attrs
        elif depth == 5 and name == "item" and self.stanza.get("verb") == "publish":
            start = self.parser.CurrentByteIndex - self.base
            self.stanza["itemId"] = attrs.get("id", "")
            self.stanza["itemStart"] = self.buffer.index(b">", start) + 1
            self.stanza["itemSelfClosed"] = self.buffer[self.stanza["itemStart"] - 2] == ord("/")

    def _end(self, name: str) -> None:
        """
        Finish a stanza: answer it.
        """
        depth = self.depth
        self.depth -= 1
        if depth == 5 and name == "item" and "itemStart" in self.stanza:
            end = self.parser.CurrentByteIndex - self.base
            start = self.stanza["itemStart"]
            self.stanza["payload"] = (
                b"" if self.stanza["itemSelfClosed"] else bytes(self.buffer[start:end])
            )
        elif depth == 2:
            if name == "handshake":
                if not self.ready.done():
                    self.ready.set_result(None)
            elif name == "iq":
                self._iq(self.stanza)
            self.stanza = {}

    def _iq(self, stanza: dict[str, Any]) -> None:
        """
        Answer an IQ; fan a publish out.
        """
        attrs = stanza["attrs"]
        kind = attrs.get("type")
        if kind not in ("get", "set"):
            return
        sender = attrs.get("from", "")
        head = (
            b"<iq type='result' id=" + quote(attrs.get("id", "")) + b" from="
            + quote(attrs.get("to", self.jid)) + b" to=" + quote(sender)
        )
        verb = stanza.get("verb")
        verbAttrs = stanza.get("verbAttrs", {})
        node = verbAttrs.get("node", "")
        assert self.transport is not None
        if verb == "subscribe" and kind == "set":
            jid = verbAttrs.get("jid") or sender
            seen = self.subscribed.setdefault(node, set())
            if jid not in seen:
                seen.add(jid)
                self.subscribers.setdefault(node, []).append(
                    b"<message from=" + quote(self.jid) + b" type='headline' to=" + quote(jid) + b">"
                )
            self.transport.write(
                head + b"><pubsub xmlns='" + NS_PUBSUB.encode() + b"'><subscription node="
                + quote(node) + b" jid=" + quote(jid) + b" subscription='subscribed'/></pubsub></iq>"
            )
        elif verb == "publish" and kind == "set":
            itemId = stanza.get("itemId", "")
            self.transport.write(
                head + b"><pubsub xmlns='" + NS_PUBSUB.encode() + b"'><publish node=" + quote(node)
                + b"><item id=" + quote(itemId) + b"/></publish></pubsub></iq>"
            )
            body = (
                b"<event xmlns='" + NS_EVENT.encode() + b"'><items node=" + quote(node)
                + b"><item id=" + quote(itemId) + b">" + stanza.get("payload", b"")
                + b"</item></items></event></message>"
            )
            heads = self.subscribers.get(node)
            if heads:
                self.transport.write(b"".join([h + body for h in heads]))
            self.published += 1
        else:
            self.transport.write(head + b"/>")


async def main(argv: list[str]) -> None:
    """
    Connect and serve until the server closes the stream.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--secret", required=True)
    options = parser.parse_args(argv)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    await loop.create_connection(
        lambda: ReferenceComponent(options.jid, options.secret, ready), options.host, options.port
    )
    await asyncio.wait_for(ready, 30)
    print("authenticated", flush=True)
    await loop.create_future()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except RuntimeError as e:  # the loop stopped when the server hung up
        print(f"stopped: {e}", flush=True)
