"""
The replication service: backends, engine, pumps and the partner link, built from settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from hermod_component.backends import makeBackend
from hermod_component.backends.errors import BackendSettingsError
from hermod_component.config import BackendSettings, DiscoverySettings, PartnerSettings
from hermod_component.interfaces import (
    IContactSource,
    IReplicationBackend,
    IReplicationStore,
    IWhitelistSource,
)
from hermod_component.replication.engine import ReplicationEngine
from hermod_component.replication.pump import ReplicationPump
from hermod_component.replication.whitelists import syncWhitelists


class ReplicationService(MultiService):
    """
    Starts the backends, prepares the nodes, then runs one L{ReplicationPump} per backend,
    retries parked items at an interval, and keeps the members of the nodes in step with the
    whitelists of the backends that supply them (at start and every C{whitelist_interval}). Partner items received before the nodes are ready wait.

    @ivar engine: The engine (the partner link feeds it).
    @ivar pumps: The pumps by backend name.
    """

    log = Logger()

    def __init__(
        self,
        engine: ReplicationEngine,
        settings: Mapping[str, BackendSettings],
        clock: IReactorTime,
        retryInterval: float = 10.0,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.pumps: dict[str, ReplicationPump] = {}
        for name, backend in engine.backends.items():
            options = settings.get(name)
            pump = ReplicationPump(
                engine, backend, engine.store, clock,
                interval=options.pollInterval if options else 1.0,
                batchSize=options.batchSize if options else 500,
            )
            pump.setName(f"pump-{name}")
            self.pumps[name] = pump
        self._whitelists: dict[str, LoopingCall] = {}
        for name, backend in engine.backends.items():
            if IWhitelistSource.providedBy(backend):
                loop = LoopingCall(self._syncWhitelists, name)
                loop.clock = clock
                self._whitelists[name] = loop
        self._settings = dict(settings)
        self._retry = LoopingCall(self._retryParked)
        self._retry.clock = clock
        self._retryInterval = retryInterval
        self._starting: Deferred[None] | None = None

    def startService(self) -> None:
        """
        Start the backends and prepare the nodes, then start the pumps.
        """
        from twisted.application.service import Service

        Service.startService(self)
        self._starting = Deferred.fromCoroutine(self._start())
        self._starting.addErrback(lambda f: self.log.failure("Replication failed to start", f))

    async def _start(self) -> None:
        for backend in self.engine.backends.values():
            await backend.start()
        await self.engine.prepare()
        for pump in self.pumps.values():
            pump.setServiceParent(self)
        self._retry.start(self._retryInterval, now=False)
        for name, loop in self._whitelists.items():
            options = self._settings.get(name)
            loop.start(options.whitelistInterval if options else 60.0, now=True)
        self.log.info(
            "Replication started: backends {backends}, {partners} partner subscriptions",
            backends=sorted(self.engine.backends), partners=len(self.engine.partners),
        )

    async def _syncWhitelists(self, backendName: str) -> None:
        try:
            await syncWhitelists(self.engine, backendName)
        except Exception:  # noqa: BLE001 - the loop must survive
            self.log.failure("Syncing the whitelists of {backend} failed", backend=backendName)

    async def _retryParked(self) -> None:
        try:
            await self.engine.retryAllParked()
        except Exception:  # noqa: BLE001 - the loop must survive
            self.log.failure("Retrying parked items failed")

    def stopService(self) -> Deferred[Any]:
        """
        Stop the pumps, save counters, stop the backends.
        """
        if self._retry.running:
            self._retry.stop()
        for loop in self._whitelists.values():
            if loop.running:
                loop.stop()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await MultiService.stopService(self)
        await self.engine.flush()
        for backend in self.engine.backends.values():
            await backend.stop()


def makeReplication(
    policy: Any,
    store: IReplicationStore,
    backends: Mapping[str, BackendSettings],
    partners: Sequence[PartnerSettings],
    reactor: Any,
    discovery: DiscoverySettings | None = None,
) -> ReplicationService:
    """
    Build the backends named in the settings, the engine and its service.

    @param discovery: The C{[discovery]} section, checked here: its backend must list
        contacts.
    @raise hermod_component.backends.UnknownBackend: A backend type is unknown.
    @raise hermod_component.backends.errors.BackendSettingsError: A backend table is wrong.
    """
    instances: dict[str, IReplicationBackend] = {
        name: makeBackend(b.type, name, b.options, reactor) for name, b in backends.items()
    }
    if discovery is not None and not IContactSource.providedBy(instances[discovery.backend]):
        raise BackendSettingsError(
            f"discovery.backend: backend {discovery.backend!r} "
            f"(type {backends[discovery.backend].type!r}) cannot list contacts"
        )
    engine = ReplicationEngine(policy, store, instances, partners, reactor)
    return ReplicationService(engine, backends, reactor)
