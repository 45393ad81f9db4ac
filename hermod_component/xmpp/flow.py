"""
Backpressure on the component stream.

Hermod writes notifications as fast as publishes come in; a server that reads them more slowly
would make them pile up in Hermod's memory. L{ReadThrottle} registers with the stream's transport
as a streaming producer: when the transport's unsent bytes pass the high-water mark, the transport
pauses it, and it stops reading from the socket, so no new request (and so no new publish) is
taken until the server has drained what was written. Nothing is dropped; the server's own
buffering and TCP flow control push back on publishers in turn.
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

    @ivar paused: Whether reading is paused now.
    @ivar pauses: How many times reading was paused.
    @ivar pausedSeconds: Total time spent paused (up to the last resume).
    """

    log = Logger()

    def __init__(self, transport: Any, highWater: int, clock: IReactorTime) -> None:
        """
        @param transport: The stream's transport, which must be an C{IConsumer} with a
            C{bufferSize} (Twisted's TCP and TLS transports are).
        @param highWater: Unsent bytes above which reading stops.
        """
        self.transport = transport
        self.clock = clock
        self.paused = False
        self.pauses = 0
        self.pausedSeconds = 0.0
        self._since = 0.0
        transport.bufferSize = highWater
        transport.registerProducer(self, True)

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
        self.transport.pauseProducing()
        self.log.info(
            "The server is {pending} bytes behind; reading no requests until it catches up",
            pending=self.pendingBytes(),
        )

    def resumeProducing(self) -> None:
        """
        The server has drained the buffer: read requests again.
        """
        if not self.paused:
            return
        self.paused = False
        waited = self.clock.seconds() - self._since
        self.pausedSeconds += waited
        self.transport.resumeProducing()
        self.log.info("The server caught up after {seconds:.3f} s; reading requests again",
                      seconds=waited)

    def stopProducing(self) -> None:
        """
        The connection is going away; nothing to release.
        """
        self.paused = False
