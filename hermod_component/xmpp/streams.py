"""
Notifications spread over the component streams of one JID (C{component.connections}).

ejabberd accepts several XEP-0114 connections for one component name and balances the stanzas
it routes to the component among them; the work of parsing and routing what a component sends
is done by the process serving that connection, so one connection is one core's worth of
server work at most. Spreading notifications over several connections lets the server use more.

L{StreamSet} picks the stream of each recipient from a stable hash of its bare JID: each bare
JID has a fixed order of preference over the configured streams (its own stream first, then the
others in an order that differs from JID to JID, so that the recipients of a stream that drops
spread evenly over the rest) and uses the first stream in that order that is I{eligible}. So:

 - while the streams stay up, a recipient's notifications all go through one stream and the
   server delivers them in the order Hermod wrote them;
 - when a stream drops, only its recipients move, to other streams that are up; nothing is
   written twice, and the notifications written after the drop are not lost (what was still in
   the dropped connection's buffers is lost, as with a single connection);
 - a stream that comes (back) up becomes eligible only once every other eligible stream has
   passed a barrier: Hermod sends each of them an XEP-0199 ping addressed to its own JID, and
   when that ping comes back (on whichever stream the server picks) the server has routed
   everything written to that stream before it. Recipients that move back to the new stream
   therefore cannot overtake their own notifications still queued on the old one.
"""

from __future__ import annotations

import zlib
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.words.xish import domish

from hermod_component.xmpp._xmpplib import XMPPHandler
from hermod_component.xmpp.flow import writeInOrder
from hermod_component.xmpp.serialize import quoteAttribute

NS_PING = "urn:xmpp:ping"

#: The C{id} prefix of barrier pings.
BARRIER_PREFIX = "hermod-barrier-"

#: Seconds a stream waits for its barrier pings before it takes recipients anyway.
BARRIER_TIMEOUT = 10.0


class Outlet:
    """
    One configured component stream, as the notifier sees it.

    @ivar index: Its position among the configured streams, from 0.
    @ivar stream: The initialized XML stream, or L{None} while it is down.
    @ivar eligible: Whether recipients are routed to it now.
    @ivar notifications: Notification messages written to it, over all its connections.
    @ivar bytes: Bytes of those messages.
    @ivar waiting: The ids of the barrier pings it still waits for before it becomes eligible.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.stream: Any = None
        self.eligible = False
        self.notifications = 0
        self.bytes = 0
        self.waiting: set[str] = set()
        self.timeout: IDelayedCall | None = None


def bareHash(recipient: str) -> int:
    """
    The stable hash of C{recipient}'s bare JID (the same in every process and every run).
    """
    return zlib.crc32(recipient.partition("/")[0].encode("utf-8"))


class StreamSet:
    """
    The streams notifications may be written to, and the choice of one per recipient.

    @ivar outlets: One L{Outlet} per configured stream, in index order.
    @ivar eligible: The eligible outlets, in index order.
    """

    log = Logger()

    def __init__(self, service: str, size: int = 1, clock: IReactorTime | None = None) -> None:
        """
        @param service: The component JID, which barrier pings are addressed to and from.
        @param size: How many streams are configured.
        @param clock: Bounds the wait for barrier pings (L{BARRIER_TIMEOUT}); without it a
            stream waits until its barrier pings come back or their streams drop.
        """
        if size < 1:
            raise ValueError(f"at least one stream, not {size}")
        self.service = service
        self.outlets = [Outlet(index) for index in range(size)]
        self.eligible: list[Outlet] = []
        self._clock = clock
        self._barriers: dict[str, tuple[Outlet, Outlet]] = {}
        self._counter = 0

    def route(self, recipient: str) -> Outlet | None:
        """
        The eligible outlet C{recipient}'s notifications go to, or L{None} if none is up.
        """
        eligible = self.eligible
        if not eligible:
            return None
        outlets = self.outlets
        size = len(outlets)
        if size == 1:
            return eligible[0]
        value = bareHash(recipient)
        first = value % size
        outlet = outlets[first]
        if outlet.eligible:
            return outlet
        others = size - 1
        start = (value // size) % others
        for step in range(others):
            outlet = outlets[(first + 1 + (start + step) % others) % size]
            if outlet.eligible:
                return outlet
        raise AssertionError("an eligible outlet exists but none was found")

    def streamUp(self, index: int, stream: Any) -> None:
        """
        Stream C{index} is initialized; it becomes eligible at once if no other stream is, or
        after the barrier otherwise.
        """
        outlet = self.outlets[index]
        self._forget(outlet)
        outlet.stream = stream
        others = [o for o in self.eligible if o is not outlet]
        if not others:
            self._makeEligible(outlet)
            return
        for other in others:
            self._counter += 1
            stanzaId = f"{BARRIER_PREFIX}{index}-{self._counter}"
            self._barriers[stanzaId] = (outlet, other)
            outlet.waiting.add(stanzaId)
            # After the notifications still waiting to be written to that stream.
            writeInOrder(other.stream, (
                b"<iq type='get' id='" + stanzaId.encode("ascii") + b"' from="
                + quoteAttribute(self.service) + b" to=" + quoteAttribute(self.service)
                + b"><ping xmlns='urn:xmpp:ping'/></iq>",
            ))
        if self._clock is not None:
            outlet.timeout = self._clock.callLater(BARRIER_TIMEOUT, self._barrierTimedOut, outlet)
        self.log.info(
            "Component stream {number} is up; it takes its share of notifications once the "
            "{count} other streams have passed a ping barrier",
            number=index + 1,
            count=len(others),
        )

    def streamDown(self, index: int) -> None:
        """
        Stream C{index} is gone: its recipients move to the others. Streams that waited for
        its barrier ping no longer need it (nothing queued on it can overtake them now).
        """
        outlet = self.outlets[index]
        outlet.stream = None
        wasEligible = outlet.eligible
        outlet.eligible = False
        self._forget(outlet)
        for stanzaId, (waiter, pinged) in list(self._barriers.items()):
            if pinged is outlet:
                self.barrierPassed(stanzaId)
        self._refresh()
        if wasEligible and len(self.outlets) > 1:
            self.log.info(
                "Component stream {number} is down; its recipients move to the {count} "
                "streams still up",
                number=index + 1,
                count=len(self.eligible),
            )

    def barrierPassed(self, stanzaId: str) -> bool:
        """
        A barrier ping with id C{stanzaId} came back.

        @return: Whether C{stanzaId} was one of ours.
        """
        entry = self._barriers.pop(stanzaId, None)
        if entry is None:
            return stanzaId.startswith(BARRIER_PREFIX)
        waiter, _ = entry
        waiter.waiting.discard(stanzaId)
        if not waiter.waiting and waiter.stream is not None and not waiter.eligible:
            self._makeEligible(waiter)
        return True

    def _barrierTimedOut(self, outlet: Outlet) -> None:
        """
        The barrier pings did not all come back in time: take recipients anyway.
        """
        outlet.timeout = None
        if outlet.stream is None or outlet.eligible:
            return
        self.log.warn(  # noqa: G010 - twisted.logger has no warning()
            "Component stream {number}: {count} barrier pings unanswered after {timeout} s; "
            "taking its share of notifications anyway",
            number=outlet.index + 1,
            count=len(outlet.waiting),
            timeout=BARRIER_TIMEOUT,
        )
        self._forget(outlet)
        self._makeEligible(outlet)

    def _makeEligible(self, outlet: Outlet) -> None:
        """
        Route C{outlet}'s recipients to it from now on.
        """
        outlet.eligible = True
        self._refresh()

    def _forget(self, outlet: Outlet) -> None:
        """
        Drop C{outlet}'s pending barrier pings and timeout.
        """
        for stanzaId in outlet.waiting:
            self._barriers.pop(stanzaId, None)
        outlet.waiting.clear()
        if outlet.timeout is not None:
            if outlet.timeout.active():
                outlet.timeout.cancel()
            outlet.timeout = None

    def _refresh(self) -> None:
        """
        Recompute L{eligible}.
        """
        self.eligible = [o for o in self.outlets if o.eligible]


class NotifierOutlet(XMPPHandler):
    """
    The handler, one per component stream, that tells a L{StreamSet} when its stream is up or
    down and answers the set's barrier pings.

    @ivar index: The stream's index in the set.
    """

    def __init__(self, streams: StreamSet, index: int) -> None:
        super().__init__()
        self.streams = streams
        self.index = index

    def connectionInitialized(self) -> None:
        """
        The stream is up: watch for barrier pings, and offer the stream to the set.
        """
        self.xmlstream.addObserver("/iq", self._onIQ, priority=10)
        self.streams.streamUp(self.index, self.xmlstream)

    def connectionLost(self, reason: object) -> None:
        """
        The stream is gone.
        """
        self.streams.streamDown(self.index)
        super().connectionLost(reason)

    def _onIQ(self, iq: domish.Element) -> None:
        """
        A barrier ping (as a request, or its answer): note it, answer a request, and keep the
        other handlers from answering it.
        """
        stanzaId = iq.getAttribute("id", "")
        if not stanzaId.startswith(BARRIER_PREFIX):
            return
        if iq.getAttribute("from") != self.streams.service:
            return
        self.streams.barrierPassed(stanzaId)
        iq.handled = True  # type: ignore[attr-defined]
        if iq.getAttribute("type") == "get":
            self.xmlstream.send(
                b"<iq type='result' id=" + quoteAttribute(stanzaId) + b" from="
                + quoteAttribute(self.streams.service) + b" to=" + quoteAttribute(self.streams.service) + b"/>"
            )
