"""
Backpressure on the component stream.

Hermod writes notifications as fast as publishes come in; a server that reads them more slowly
would make them pile up in Hermod's memory. L{ReadThrottle} registers with the stream's transport
as a streaming producer: when the transport's unsent bytes pass the high-water mark, the transport
pauses it, and it stops reading from the socket, so no new request (and so no new publish) is
taken until the server has drained what was written. Nothing is dropped; the server's own
buffering and TCP flow control push back on publishers in turn.

With several connections (C{component.connections}), a request read on one stream can write
notifications to every stream, so stopping only the stream that is behind would let the others
keep filling it. Their throttles therefore share one L{ReadGate}: while any stream is above its
high-water mark, no stream reads, and reading resumes on all once every stream is below it.
Memory stays bounded by the number of connections times the mark.

A single publish to many subscribers writes many messages at once (10,000 notifications of a
2 KB entry are 23 MB), more than a mark is meant to hold. The notifier therefore hands its
messages to L{ReadThrottle.feed} as an iterator: they are made and written only as the transport
takes them, the rest waits in the throttle's backlog (each waiting fan-out holds its recipient
list and the shared event, not the messages), and reading stays stopped until the backlog is
written. Everything fed to one stream is written in the order it was fed.

Output can also wait beyond the stream: an XEP-0033 multicast service (see
L{hermod_component.xmpp.multicast}) takes one message for hundreds of recipients at once and
queues their copies inside the server, and only an answer read from the stream tells that it
has caught up. L{ReadThrottle.hold} therefore does not stop reading: the stream goes on
reading, and passes on answers and messages, but the requests it reads (IQ get and set) wait,
in order, until L{ReadThrottle.release} (on every stream of the gate when one holds). Past
C{maxRequests} waiting requests the stream answers further ones C{resource-constraint} (type
C{wait}, so that clients retry) rather than stop reading.

Requests that write little (subscribes, say) do not fill the buffer however many are read, and
each one read is in progress until storage answers. L{ReadThrottle} therefore also stops reading
while C{maxRequests} requests of its stream are in progress, and reads again once half of them
are answered (L{ReadThrottle.requestStarted}, L{ReadThrottle.requestDone}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

#: Messages of a fan-out are joined into writes of about this many bytes (L{ReadThrottle}).
WRITE_CHUNK = 32 * 1024


@implementer(IPushProducer)
class ReadThrottle:
    """
    Stops reading requests while the stream's write buffer is above the high-water mark.

    @ivar paused: Whether this stream's write buffer is above the mark (so reading is paused,
        on this stream alone or, with a L{ReadGate}, on all).
    @ivar pauses: How many times this stream went above the mark.
    @ivar pausedSeconds: Total time spent above the mark (up to the last resume).
    @ivar reading: Whether this stream's transport reads now.
    @ivar backlog: Fan-outs fed and not yet fully written, in order: (send, messages left).
    """

    log = Logger()

    def __init__(
        self,
        transport: Any,
        highWater: int,
        clock: IReactorTime,
        gate: ReadGate | None = None,
        label: str = "",
        maxRequests: int = 1000,
    ) -> None:
        """
        @param transport: The stream's transport, which must be an C{IConsumer} with a
            C{bufferSize} (Twisted's TCP and TLS transports are).
        @param highWater: Unsent bytes above which reading stops.
        @param gate: Shared by the throttles of the streams of one component JID; without it
            only this stream stops reading.
        @param label: Names the stream in log messages, such as C{"connection 2 of 4"}.
        @param maxRequests: Requests in progress at which reading stops.
        """
        self.transport = transport
        self.clock = clock
        self.paused = False
        self.pauses = 0
        self.pausedSeconds = 0.0
        self.reading = True
        self.label = label
        self._since = 0.0
        self._gate = gate
        self._full = False
        self.maxRequests = maxRequests
        self.inProgress = 0
        self.busy = False
        self.busyPauses = 0
        self.backlog: deque[tuple[Callable[[bytes], object], Iterator[bytes]]] = deque()
        #: Why requests are held beyond the buffer (L{hold}), such as a multicast service.
        self.holders: set[str] = set()
        #: Requests read while held, in order, for L{dispatch} after the release.
        self.waiting: deque[Any] = deque()
        #: Handles a request element (the stream's own dispatch); set by the stream's owner.
        self.dispatch: Callable[[Any], object] | None = None
        transport.bufferSize = highWater
        transport.registerProducer(self, True)
        if gate is not None:
            gate.join(self)

    def pendingBytes(self) -> int:
        """
        Bytes written to the transport and not yet sent to the server.
        """
        transport = self.transport
        return len(getattr(transport, "dataBuffer", b"")) + int(
            getattr(transport, "_tempDataLen", 0)
        )

    def feed(self, send: Callable[[bytes], object], messages: Iterable[bytes]) -> None:
        """
        Write C{messages} with C{send} as the transport takes them: now, as far as the
        high-water mark allows, and the rest each time the server has drained the buffer,
        after whatever was fed before.
        """
        iterator = iter(messages)
        # (after what waits already; else write now, and keep what the transport did not take)
        if self.backlog or self._full or not self._write(send, iterator):
            self.backlog.append((send, iterator))

    def _write(self, send: Callable[[bytes], object], messages: Iterator[bytes]) -> bool:
        """
        Write messages until the transport is above its mark, joined into writes of up to
        L{WRITE_CHUNK} bytes: one pass through the stream's send and the transport per chunk
        instead of per message (a fan-out is many small messages to one stream). The buffer
        may pass the mark by at most one chunk.

        @return: Whether C{messages} is exhausted.
        """
        parts: list[bytes] = []
        size = 0
        for message in messages:
            parts.append(message)
            size += len(message)
            if size >= WRITE_CHUNK:
                send(b"".join(parts))  # may call pauseProducing at once
                parts, size = [], 0
                if self._full:
                    return False
        if parts:
            send(b"".join(parts))
        return True

    def _writeBacklog(self) -> None:
        backlog = self.backlog
        while backlog and not self._full:
            send, messages = backlog[0]
            if not self._write(send, messages):
                return
            backlog.popleft()

    def pauseProducing(self) -> None:
        """
        The server is behind: stop writing the backlog and stop reading requests.
        """
        self._full = True
        if self.paused:
            return
        self.paused = True
        self.pauses += 1
        self._since = self.clock.seconds()
        self.log.info(
            "The server is {pending} bytes behind{on}; reading no requests until it catches up",
            pending=self.pendingBytes(),
            on=f" on {self.label}" if self.label else "",
        )
        self._behind()

    def resumeProducing(self) -> None:
        """
        The server has drained the buffer: write more of the backlog, and once it is all
        written and the buffer below the mark, read requests again.
        """
        self._full = False
        self._writeBacklog()
        if not self.paused or self._full or self.backlog:
            return
        self.paused = False
        waited = self.clock.seconds() - self._since
        self.pausedSeconds += waited
        self.log.info("The server caught up{on} after {seconds:.3f} s", seconds=waited,
                      on=f" on {self.label}" if self.label else "")
        self._caughtUp()

    @property
    def holding(self) -> bool:
        """
        Whether requests read now wait (this stream holds, or another of its gate does).
        """
        if self._gate is not None:
            return bool(self._gate.holders)
        return bool(self.holders)

    def hold(self, reason: str) -> None:
        """
        Let requests read from now on (on every stream of the gate) wait, for C{reason},
        until L{release}d; everything else read is handled as it comes.
        """
        if reason in self.holders:
            return
        self.holders.add(reason)
        if self._gate is not None and self not in self._gate.holders:
            self._gate.holders.append(self)

    def release(self, reason: str) -> None:
        """
        C{reason} no longer holds requests; once nothing does, the waiting ones are handled.
        """
        if reason not in self.holders:
            return
        self.holders.discard(reason)
        if self.holders:
            return
        if self._gate is None:
            self.handleWaiting()
            return
        if self in self._gate.holders:
            self._gate.holders.remove(self)
        if not self._gate.holders:
            for member in list(self._gate.members):
                member.handleWaiting()

    def wait(self, request: Any) -> bool:
        """
        Keep C{request}, read while held, for later, unless C{maxRequests} already wait.

        Reading never stops for held requests: what releases the hold is read from the stream.

        @return: Whether it was kept (else the stream refuses it for now).
        """
        if len(self.waiting) >= self.maxRequests:
            return False
        self.waiting.append(request)
        return True

    def handleWaiting(self) -> None:
        """
        Handle the requests that waited, in order, while nothing holds them; then read again
        if they had stopped reading.
        """
        while self.waiting and not self.holding and self.dispatch is not None:
            self.dispatch(self.waiting.popleft())
        if self.waiting or self.holding:
            return
        if not self.paused and (self._gate is None or not self._gate.closed):
            self.startReading()

    def _behind(self) -> None:
        """
        Output is behind (a full buffer, or a holder): stop reading.
        """
        if self._gate is None:
            self.stopReading()
        else:
            self._gate.full(self)

    def _caughtUp(self) -> None:
        """
        Nothing holds output back any more: read again (once no stream of the gate is behind).
        """
        if self._gate is None:
            self.startReading()
        else:
            self._gate.drained(self)

    def requestStarted(self) -> None:
        """
        A request read from this stream is being handled; at C{maxRequests} in progress,
        reading stops on this stream.
        """
        self.inProgress += 1
        if self.inProgress >= self.maxRequests and not self.busy:
            self.busy = True
            self.busyPauses += 1
            self.log.info(
                "{count} requests in progress{on}; reading no more until half are answered",
                count=self.inProgress, on=f" on {self.label}" if self.label else "",
            )
            self.stopReading()

    def requestDone(self) -> None:
        """
        A request of this stream is answered; at half of C{maxRequests}, reading resumes
        (unless the write buffer holds it back).
        """
        self.inProgress -= 1
        if self.busy and self.inProgress <= self.maxRequests // 2:
            self.busy = False
            if not self.paused and len(self.waiting) < self.maxRequests and (
                self._gate is None or not self._gate.closed
            ):
                self.startReading()

    def stopReading(self) -> None:
        """
        Stop reading from this stream's socket.
        """
        if self.reading:
            self.reading = False
            self.transport.pauseProducing()

    def startReading(self) -> None:
        """
        Read from this stream's socket again, unless too many of its requests are in progress.
        """
        if self.busy or len(self.waiting) >= self.maxRequests:
            return
        if not self.reading:
            self.reading = True
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The connection is going away: it no longer holds the other streams back. What was
        still to be written is lost with the connection, as what was in its buffers is.
        """
        if self.backlog:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Connection lost{on} with {count} fan-outs not fully written",
                on=f" ({self.label})" if self.label else "", count=len(self.backlog),
            )
            self.backlog.clear()
        self.paused = False
        self._full = False
        self.busy = False
        self.holders.clear()
        if self.waiting:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Connection lost{on} with {count} requests waiting", count=len(self.waiting),
                on=f" ({self.label})" if self.label else "",
            )
            self.waiting.clear()
        if self._gate is not None:
            self._gate.leave(self)


class ReadGate:
    """
    The streams of one component JID read only while none of them is above its high-water mark.

    @ivar members: The throttles of the streams that are up.
    @ivar behind: The members above their mark now.
    """

    log = Logger()

    def __init__(self) -> None:
        self.members: list[ReadThrottle] = []
        self.behind: list[ReadThrottle] = []
        #: The members holding requests now (L{ReadThrottle.hold}).
        self.holders: list[ReadThrottle] = []

    @property
    def closed(self) -> bool:
        """
        Whether reading is stopped on every stream now.
        """
        return bool(self.behind)

    def join(self, throttle: ReadThrottle) -> None:
        """
        A stream came up; it reads only if no other stream is behind.
        """
        if throttle not in self.members:
            self.members.append(throttle)
        if self.behind:
            throttle.stopReading()

    def leave(self, throttle: ReadThrottle) -> None:
        """
        A stream went away: if it was the last one behind, the others read again.
        """
        if throttle in self.members:
            self.members.remove(throttle)
        if throttle in self.behind:
            self.drained(throttle)
        if throttle in self.holders:
            self.holders.remove(throttle)
            if not self.holders:
                for member in list(self.members):
                    member.handleWaiting()

    def full(self, throttle: ReadThrottle) -> None:
        """
        C{throttle}'s stream is above its mark: stop reading on every stream.
        """
        if throttle not in self.behind:
            self.behind.append(throttle)
        for member in self.members:
            member.stopReading()

    def drained(self, throttle: ReadThrottle) -> None:
        """
        C{throttle}'s stream is below its mark: read on every stream once none is behind.
        """
        if throttle in self.behind:
            self.behind.remove(throttle)
        if not self.behind:
            for member in self.members:
                member.startReading()


def writeInOrder(stream: Any, messages: Iterable[bytes]) -> None:
    """
    Write C{messages} to C{stream}: through the L{ReadThrottle} of its transport when it has
    one (as the transport takes them, after what was fed before), at once otherwise.
    """
    throttle = throttleOf(stream)
    if throttle is not None:
        throttle.feed(stream.send, messages)
    else:
        send = stream.send
        for message in messages:
            send(message)


def throttleOf(stream: Any) -> ReadThrottle | None:
    """
    The L{ReadThrottle} registered on C{stream}'s transport, if any.
    """
    transport = getattr(stream, "transport", None)
    throttle = getattr(transport, "producer", None) or getattr(transport, "_producer", None)
    return throttle if isinstance(throttle, ReadThrottle) else None
