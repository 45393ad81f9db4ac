"""
The pump: capture a backend's local changes, publish them, then save the position.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hermod_component.interfaces import IReplicationBackend, IReplicationStore
from hermod_component.replication.engine import ReplicationEngine


class ReplicationPump(Service):
    """
    Drives one backend's C{capture()}: each pass publishes a batch through the engine and only
    then saves the new position, so a restart resumes from the last committed batch (delivery
    is at least once; the engine skips content it already holds). A failed pass is logged and
    tried again after the poll interval.

    @ivar passes: Completed passes, for tests and progress logs.
    @ivar total: Changes published since start.
    """

    log = Logger()

    def __init__(
        self,
        engine: ReplicationEngine,
        backend: IReplicationBackend,
        store: IReplicationStore,
        clock: IReactorTime,
        interval: float = 1.0,
        batchSize: int = 500,
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.store = store
        self.clock = clock
        self.interval = interval
        self.batchSize = batchSize
        self.passes = 0
        self.total = 0
        self._position: str | None = None
        self._loaded = False
        self._call: IDelayedCall | None = None
        self._running: Deferred[Any] | None = None
        self._startedAt = 0.0
        self._lastProgress = 0.0
        #: L{wake} was called during the pass in flight: the next pass starts at once.
        self._woken = False

    def startService(self) -> None:
        """
        Start capturing at once.
        """
        super().startService()
        self._startedAt = self._lastProgress = self.clock.seconds()
        self.backend.setNotify(self.wake)
        self._schedule(0)

    def stopService(self) -> Deferred[None]:
        """
        Stop after the pass in flight, if any.
        """
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        running = self._running
        if running is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        running.addBoth(lambda _: done.callback(None))
        return done

    def wake(self) -> None:
        """
        Capture now rather than at the end of the poll interval; during a pass, as soon as it
        ends.
        """
        if not self.running:
            return
        if self._running is None:
            self._schedule(0)
        else:
            self._woken = True

    def _schedule(self, delay: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.clock.callLater(delay, self._runPass)

    def _runPass(self) -> None:
        self._call = None
        self._woken = False
        self._running = Deferred.fromCoroutine(self._pass())

        def finished(limited: object) -> None:
            self._running = None
            if self.running:
                self._schedule(0 if limited is True or self._woken else self.interval)

        self._running.addCallback(finished)

    async def _pass(self) -> bool:
        try:
            if not self._loaded:
                self._position = await self.store.getPosition(self.backend.name)
                self._loaded = True
            batch = await self.backend.capture(self._position, self.batchSize)
            if batch.changes:
                published = await self.engine.publishLocal(self.backend.name, batch.changes)
                self.total += published
            if batch.position != self._position:
                await self.store.savePosition(self.backend.name, batch.position)
                self._position = batch.position
            self.passes += 1
            self._progress(batch.limited)
            return batch.limited
        except Exception:  # noqa: BLE001 - a loop must survive any one failure
            self.log.failure("Capture from {backend} failed", backend=self.backend.name)
            return False

    def _progress(self, limited: bool) -> None:
        now = self.clock.seconds()
        if limited and now - self._lastProgress >= 5:
            elapsed = max(now - self._startedAt, 1e-9)
            self.log.info(
                "Initial sync of {backend}: {count} changes published ({rate:.0f}/s)",
                backend=self.backend.name, count=self.total, rate=self.total / elapsed,
            )
            self._lastProgress = now
