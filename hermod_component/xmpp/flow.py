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
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer


@implementer(IPushProducer)
class ReadThrottle:
    """
    Stops reading requests while the stream's write buffer is above the high-water mark.

    @ivar paused: Whether this stream's write buffer is above the mark (so reading is paused,
        on this stream alone or, with a L{ReadGate}, on all).
    @ivar pauses: How many times this stream went above the mark.
    @ivar pausedSeconds: Total time spent above the mark (up to the last resume).
    @ivar reading: Whether this stream's transport reads now.
    """

    log = Logger()

    def __init__(
        self,
        transport: Any,
        highWater: int,
        clock: IReactorTime,
        gate: ReadGate | None = None,
        label: str = "",
    ) -> None:
        """
        @param transport: The stream's transport, which must be an C{IConsumer} with a
            C{bufferSize} (Twisted's TCP and TLS transports are).
        @param highWater: Unsent bytes above which reading stops.
        @param gate: Shared by the throttles of the streams of one component JID; without it
            only this stream stops reading.
        @param label: Names the stream in log messages, such as C{"connection 2 of 4"}.
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

    def pauseProducing(self) -> None:
        """
        The server is behind: stop reading requests.
        """
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
        if self._gate is None:
            self.stopReading()
        else:
            self._gate.full(self)

    def resumeProducing(self) -> None:
        """
        The server has drained the buffer: read requests again.
        """
        if not self.paused:
            return
        self.paused = False
        waited = self.clock.seconds() - self._since
        self.pausedSeconds += waited
        self.log.info("The server caught up{on} after {seconds:.3f} s", seconds=waited,
                      on=f" on {self.label}" if self.label else "")
        if self._gate is None:
            self.startReading()
        else:
            self._gate.drained(self)

    def stopReading(self) -> None:
        """
        Stop reading from this stream's socket.
        """
        if self.reading:
            self.reading = False
            self.transport.pauseProducing()

    def startReading(self) -> None:
        """
        Read from this stream's socket again.
        """
        if not self.reading:
            self.reading = True
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The connection is going away: it no longer holds the other streams back.
        """
        self.paused = False
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
