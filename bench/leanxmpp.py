"""
A lean asyncio XMPP client for the benchmark: raw TCP, no TLS, SASL PLAIN, resource binding and
session, and nothing else.

During setup a connection waits for regular expressions over its raw input (the server's
answers are small and few). Once set up, a subscriber only scans the bytes it receives for the
benchmark's item ids (C{fhNNNNNNNNz} in an C{<item>} tag) and a publisher only scans for the
C{<iq>} tags answering its publishes, so that no XML is parsed on the hot path and one process
can hold many connections.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from array import array
from collections.abc import Callable

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = NS_PUBSUB + "#owner"

#: An item id published by the benchmark: C{fh}, eight digits, C{z}.
ITEM_RE = re.compile(rb"<item [^>]{0,300}?id=['\"]fh(\d{8})z")

#: How many bytes of the previous chunk are kept to catch a match split across two reads.
TAIL = 400

#: The start tag of an IQ answering a publish, with its id and type anywhere in the tag.
IQ_TAG_RE = re.compile(rb"<iq\b[^>]{0,600}>")
IQ_TYPE_RE = re.compile(rb"\btype=['\"](\w+)['\"]")

_STREAM_TROUBLE = re.compile(rb"<stream:error\b.*?</stream:error>|</stream:stream>", re.DOTALL)


class XMPPError(Exception):
    """
    The server refused a step (authentication, binding, an IQ) or closed the stream.
    """


def itemId(index: int) -> str:
    """
    The benchmark's id of item C{index}, as found by L{ITEM_RE}.

    @param index: 0 .. 99,999,999.
    """
    return f"fh{index:08d}z"


def escape(text: str) -> str:
    """
    C{text} escaped for XML character data and single-quoted attributes.
    """
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )


def streamHeader(domain: str) -> bytes:
    """
    The opening tag of a client stream to C{domain}.
    """
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{escape(domain)}' version='1.0'>"
    ).encode()


class Connection(asyncio.Protocol):
    """
    One client connection. Until L{onData} is set, input is buffered for L{expect}.

    @ivar onData: Once set, receives every chunk with its arrival time instead of the buffer.
    @ivar lost: Whether the connection is closed.
    @ivar jid: The full JID bound (set by L{login}).
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.onData: Callable[[bytes, float], None] | None = None
        self.lost = False
        self.jid = ""
        self._waiter: tuple[re.Pattern[bytes], asyncio.Future[re.Match[bytes]]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """
        Keep the transport.
        """
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """
        Hand C{data} to L{onData}, or buffer it and wake L{expect}.
        """
        if self.onData is not None:
            self.onData(data, time.monotonic())
            return
        self.buffer += data
        self._check()

    def connection_lost(self, exc: Exception | None) -> None:
        """
        Fail a pending L{expect}.
        """
        self.lost = True
        if self._waiter is not None and not self._waiter[1].done():
            self._waiter[1].set_exception(XMPPError(f"connection lost: {exc}"))

    def _check(self) -> None:
        """
        Resolve the pending L{expect} if its pattern is in the buffer, or fail it on a stream
        error.
        """
        if self._waiter is None:
            return
        pattern, future = self._waiter
        if future.done():
            return
        match = pattern.search(bytes(self.buffer))  # a copy: the match must outlive the del
        if match is not None:
            del self.buffer[: match.end()]
            future.set_result(match)
            return
        trouble = _STREAM_TROUBLE.search(self.buffer)
        if trouble is not None:
            future.set_exception(XMPPError(trouble.group(0).decode(errors="replace")[:500]))

    def send(self, data: bytes) -> None:
        """
        Write C{data}.
        """
        assert self.transport is not None
        self.transport.write(data)

    async def expect(self, pattern: re.Pattern[bytes], timeout: float = 30.0) -> re.Match[bytes]:
        """
        Wait until C{pattern} matches the buffered input; consume up to the match's end.

        @raise XMPPError: The stream failed or closed first.
        @raise TimeoutError: C{timeout} seconds passed first.
        """
        future: asyncio.Future[re.Match[bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = (pattern, future)
        self._check()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiter = None

    async def iq(self, iqID: str, body: str, timeout: float = 30.0) -> bytes:
        """
        Send the IQ C{body} (which carries C{id=iqID}) and return its answer if it is a result.

        @raise XMPPError: The answer is an error; the message holds it.
        """
        self.send(body.encode())
        match = await self.expect(
            re.compile(
                rb"<iq\b[^>]*\bid=['\"]" + re.escape(iqID.encode()) + rb"['\"][^>]*?(/>|>.*?</iq>)",
                re.DOTALL,
            ),
            timeout,
        )
        text = match.group(0)
        tag = IQ_TAG_RE.match(text)
        kind = IQ_TYPE_RE.search(tag.group(0) if tag else text)
        if kind is None or kind.group(1) != b"result":
            raise XMPPError(f"{self.jid or 'client'}: IQ {iqID} failed: {text.decode(errors='replace')[:800]}")
        return text

    def close(self) -> None:
        """
        Close the stream and the connection.
        """
        if self.transport is not None and not self.lost:
            try:
                self.transport.write(b"</stream:stream>")
            finally:
                self.transport.close()


FEATURES = re.compile(rb"</stream:features>")
SASL_DONE = re.compile(rb"<success\b[^>]*?(/>|>.*?</success>)|<failure\b.*?</failure>", re.DOTALL)
BOUND_JID = re.compile(rb"<jid>([^<]+)</jid>")


async def connect(host: str, port: int) -> Connection:
    """
    A new L{Connection} to C{host:port}.
    """
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


async def login(
    host: str, port: int, domain: str, user: str, password: str, resource: str,
    timeout: float = 60.0,
) -> Connection:
    """
    Connect, authenticate with SASL PLAIN, bind C{resource} and start a session.

    @return: The connection, with L{Connection.jid} set.
    @raise XMPPError: A step failed.
    """
    connection = await connect(host, port)
    try:
        connection.send(streamHeader(domain))
        await connection.expect(FEATURES, timeout)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        connection.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode()
        )
        answer = await connection.expect(SASL_DONE, timeout)
        if answer.group(0).startswith(b"<failure"):
            raise XMPPError(f"{user}@{domain}: authentication failed: {answer.group(0)!r}")
        connection.send(streamHeader(domain))
        await connection.expect(FEATURES, timeout)
        bound = await connection.iq(
            "bind",
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{escape(resource)}</resource></bind></iq>",
            timeout,
        )
        jid = BOUND_JID.search(bound)
        connection.jid = jid.group(1).decode() if jid else f"{user}@{domain}/{resource}"
        await connection.iq(
            "sess",
            "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
            timeout,
        )
    except BaseException:
        connection.close()
        raise
    connection.buffer.clear()
    return connection


async def registerInBand(
    host: str, port: int, domain: str, user: str, password: str, timeout: float = 60.0
) -> None:
    """
    Create C{user@domain} by XEP-0077 in-band registration; an existing account is fine.

    @raise XMPPError: The server refused for another reason than a conflict.
    """
    connection = await connect(host, port)
    try:
        connection.send(streamHeader(domain))
        await connection.expect(FEATURES, timeout)
        try:
            await connection.iq(
                "reg",
                f"<iq type='set' id='reg' to='{escape(domain)}'><query xmlns='jabber:iq:register'>"
                f"<username>{escape(user)}</username><password>{escape(password)}</password>"
                "</query></iq>",
                timeout,
            )
        except XMPPError as e:
            if "conflict" not in str(e):
                raise
    finally:
        connection.close()


class SubscriberCounter:
    """
    Counts the benchmark items a subscriber receives, by scanning raw bytes.

    @ivar first: Arrival time (C{time.monotonic()}) of each item index's first copy; 0 if none.
    @ivar unique: How many distinct item indexes arrived.
    @ivar duplicates: Copies beyond the first.
    @ivar unexpected: Item ids outside 0 .. C{expected} - 1.
    """

    def __init__(self, expected: int, onComplete: Callable[[], None]) -> None:
        """
        @param expected: How many items are published (indexes 0 .. C{expected} - 1).
        @param onComplete: Called once, when every index has arrived.
        """
        self.expected = expected
        self.first = array("d", bytes(8 * expected))
        self.unique = 0
        self.duplicates = 0
        self.unexpected = 0
        self._tail = b""
        self._onComplete = onComplete

    def __call__(self, data: bytes, now: float) -> None:
        """
        Count the item ids in C{data} that arrived at C{now}.
        """
        chunk = self._tail + data
        skip = len(self._tail)
        first = self.first
        for match in ITEM_RE.finditer(chunk):
            if match.end() <= skip:
                continue
            index = int(match.group(1))
            if index >= self.expected:
                self.unexpected += 1
            elif first[index]:
                self.duplicates += 1
            else:
                first[index] = now
                self.unique += 1
                if self.unique == self.expected:
                    self._onComplete()
        self._tail = chunk[-TAIL:]


def publishIQ(service: str, node: str, index: int, entry: str, prefix: str = "fh") -> bytes:
    """
    The publish IQ of item C{index} with payload C{entry}.

    @param prefix: C{fh} for measured items (their IQ ids are C{fhp<index>}), another two
        letters for items the subscribers do not count (warm-up).
    """
    return (
        f"<iq type='set' id='{prefix}p{index}' to='{escape(service)}'><pubsub xmlns='{NS_PUBSUB}'>"
        f"<publish node='{escape(node)}'><item id='{prefix}{index:08d}z'>{entry}</item></publish>"
        "</pubsub></iq>"
    ).encode()


class Publisher:
    """
    Publishes items with at most C{window} publish IQs outstanding, reading only IQ start tags.

    @ivar sent: When each publish was written (C{time.monotonic()}).
    @ivar acked: When its answer arrived; 0 if none yet.
    @ivar errors: How many publishes were answered with an error.
    @ivar firstError: The first error answer, for the report.
    """

    def __init__(
        self, connection: Connection, service: str, node: str, count: int, window: int,
        entry: Callable[[int], str], prefix: str = "fh",
    ) -> None:
        """
        @param connection: A logged-in connection.
        @param service: The pubsub service JID.
        @param node: The node published to.
        @param count: How many items to publish.
        @param window: How many publish IQs may be unanswered at once.
        @param entry: The payload of item C{index}.
        @param prefix: The item id prefix (see L{publishIQ}).
        """
        self.prefix = prefix
        self._iqID = re.compile(rb"\bid=['\"]" + prefix.encode() + rb"p(\d+)['\"]")
        self.connection = connection
        self.service = service
        self.node = node
        self.count = count
        self.window = window
        self.entry = entry
        self.sent = array("d", bytes(8 * count))
        self.acked = array("d", bytes(8 * count))
        self.answered = 0
        self.errors = 0
        self.firstError = ""
        self._next = 0
        self._tail = b""
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        """
        Start publishing: fill the window.
        """
        self.connection.onData = self._received
        while self._next < self.count and self._next < self.window:
            self._sendNext()

    def _sendNext(self) -> None:
        """
        Publish the next item.
        """
        index = self._next
        self._next += 1
        data = publishIQ(self.service, self.node, index, self.entry(index), self.prefix)
        self.sent[index] = time.monotonic()
        self.connection.send(data)

    def _received(self, data: bytes, now: float) -> None:
        """
        Note the publish answers in C{data}; send one more publish per answer.
        """
        chunk = self._tail + data
        skip = len(self._tail)
        for match in IQ_TAG_RE.finditer(chunk):
            if match.end() <= skip:
                continue
            tag = match.group(0)
            found = self._iqID.search(tag)
            if found is None:
                continue
            index = int(found.group(1))
            if index >= self.count or self.acked[index]:
                continue
            self.acked[index] = now
            self.answered += 1
            kind = IQ_TYPE_RE.search(tag)
            if kind is None or kind.group(1) != b"result":
                self.errors += 1
                if not self.firstError:
                    self.firstError = chunk[match.start() : match.start() + 800].decode(errors="replace")
            if self._next < self.count:
                self._sendNext()
        self._tail = chunk[-TAIL:]
        if self.answered == self.count and not self.finished.done():
            self.finished.set_result(None)
