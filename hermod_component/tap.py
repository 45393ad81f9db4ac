"""
The C{twistd hermod} plugin's options and service tree: wiring only.

C{twistd -n hermod -c /etc/hermod/hermod.toml} reads the configuration in L{Options.postOptions}
(a bad file stops twistd there with one line naming the key, before anything connects) and
L{makeService} builds::

    MultiService                    (policy and handlers as attributes, for inspection)
    ├── "storage"  StorageService
    └── "xmpp"     StartAfterStorage
                   └── "component"  ComponentService  (the XMPP handlers added to it)

With C{[component] connections} above 1, "component" is a L{ComponentPool} whose children
"connection-1", "connection-2", ... are one L{ComponentService} each, with handlers of their own
and one shared notifier.

The component connects only once storage has started, so no request meets an unmigrated
database; if storage cannot start, Hermod logs why and stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python import usage

from hermod_component.config import loadSettings
from hermod_component.errors import ConfigError

DEFAULT_CONFIG = "/etc/hermod/hermod.toml"


class Options(usage.Options):
    """
    Command line options of C{twistd hermod}.
    """

    synopsis = "[-c FILE] [-v]"
    optParameters: ClassVar[list[list[str]]] = [
        ["config", "c", DEFAULT_CONFIG, "Configuration file (TOML)."]
    ]
    optFlags: ClassVar[list[list[str]]] = [
        ["verbose", "v", "Log every stanza sent and received (debug level)."]
    ]

    def postOptions(self) -> None:
        """
        Read the configuration file now, so a bad one stops twistd with one clear line.

        @raise usage.UsageError: The file is missing or wrong; the message names the file and
            the key.
        """
        try:
            self["settings"] = loadSettings(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"{self['config']}: {e}") from None


class StartAfterStorage(MultiService):
    """
    Starts its children only once the storage service has started.

    If storage fails to start (the storage service has logged why), the children are not
    started and C{onStorageFailure} is called.
    """

    log = Logger()

    def __init__(
        self,
        ready: Callable[[], Deferred[bool] | None],
        onStorageFailure: Callable[[], object],
    ) -> None:
        """
        @param ready: Returns the storage service's C{started} Deferred (after it has started).
        @param onStorageFailure: Called when storage did not start, such as C{reactor.stop}.
        """
        super().__init__()
        self._ready = ready
        self._onStorageFailure = onStorageFailure
        self._waiting: Deferred[None] | None = None
        self._childrenStarted = False

    def startService(self) -> None:
        """
        Wait for storage, then start the children.
        """
        Service.startService(self)
        started = self._ready()
        if started is None:
            self._startChildren(True)
            return
        self._waiting = started.addCallback(self._startChildren)

    def _startChildren(self, storageStarted: bool) -> None:
        """
        Start the children if storage started and we are still running.
        """
        self._waiting = None
        if not self.running:
            return
        if not storageStarted:
            self.log.error("Storage did not start; not connecting to the XMPP server; stopping")
            self._onStorageFailure()
            return
        self._childrenStarted = True
        for service in self:
            service.startService()

    def stopService(self) -> Deferred[Any]:
        """
        Stop the children if they were started.
        """
        if self._childrenStarted:
            self._childrenStarted = False
            return super().stopService()
        Service.stopService(self)
        return succeed(None)


def makeService(options: Options) -> IService:
    """
    Build Hermod's service tree from the options' settings. Builds objects only: connecting,
    opening databases and migrating happen when the services start.
    """
    from twisted.internet import reactor  # the one place the global reactor is named

    from hermod_component.policy import PubSubPolicy
    from hermod_component.storage import StorageService, makeStorage
    from hermod_component.xmpp.component import makeComponentService
    from hermod_component.xmpp.handler import makeHandlers, makeNotifier, makeStreamHandlers
    from hermod_component.xmpp.pool import makeComponentPool

    settings = options["settings"]
    root = MultiService()

    storageService = StorageService(makeStorage(settings.storage, reactor))
    storageService.setName("storage")
    storageService.setServiceParent(root)

    from hermod_component import metrics

    policyStorage: Any = storageService.storage
    if settings.metrics.port:
        policyStorage = metrics.TimedStorage(policyStorage)
    policy = PubSubPolicy(
        policyStorage, settings.pubsub, service=settings.component.jid, clock=reactor
    )
    component: Any
    if settings.component.connections == 1:
        handlers = makeHandlers(policy, settings.component.multicast, answerFirst=True)
        component = makeComponentService(
            settings.component, reactor, verbose=bool(options["verbose"])
        )
        for handler in handlers:
            component.addHandler(handler)
    else:
        notifier = makeNotifier(
            policy, settings.component.connections, reactor, answerFirst=True
        )
        perStream: list[list[Any]] = []

        def handlersFor(index: int) -> list[Any]:
            perStream.append(
                makeStreamHandlers(policy, notifier, index, settings.component.multicast)
            )
            return perStream[-1]

        component = makeComponentPool(
            settings.component, reactor, handlersFor, verbose=bool(options["verbose"])
        )
        handlers = [h for stream in perStream for h in stream]
    replication = _makeReplication(settings, policy, storageService.storage, component, reactor)

    # Services start before the reactor runs, so stopping is scheduled rather than done at once.
    xmpp = StartAfterStorage(
        lambda: storageService.started, lambda: _stopFailed(reactor)
    )
    xmpp.setName("xmpp")
    xmpp.setServiceParent(root)
    if hasattr(storageService.storage, "watchNodeChanges"):
        watch = NodeChangeWatch(storageService.storage, policy)
        watch.setName("node-changes")
        watch.setServiceParent(xmpp)
    component.setName("component")
    component.setServiceParent(xmpp)
    if replication is not None:
        replication.setName("replication")
        replication.setServiceParent(xmpp)
    root.replication = replication  # type: ignore[attr-defined]

    expiry = TimerService(EXPIRY_INTERVAL, _expireItems, policy)
    expiry.clock = reactor
    expiry.setName("expiry")
    expiry.setServiceParent(xmpp)

    trim = TimerService(float(settings.pubsub.archiveTrimInterval), _trimArchives, policy)
    trim.clock = reactor
    trim.setName("archive-trim")
    trim.setServiceParent(xmpp)

    if settings.metrics.port:
        metrics.COLLECTOR.component = component
        metrics.COLLECTOR.policy = policy
        metrics.COLLECTOR.notifier = policy.notifier
        endpoint = metrics.makeMetricsService(
            settings.metrics.port, settings.metrics.interface, reactor
        )
        endpoint.setName("metrics")
        endpoint.setServiceParent(root)

    root.policy = policy  # type: ignore[attr-defined]
    root.handlers = handlers  # type: ignore[attr-defined]
    return root


class NodeChangeWatch(Service):
    """
    With several instances on one PostgreSQL database: drops a node from this instance's
    policy cache when another instance changes it. Started once storage is up.
    """

    log = Logger()

    def __init__(self, storage: Any, policy: Any) -> None:
        self.storage = storage
        self.policy = policy

    def startService(self) -> None:
        super().startService()
        d = self.storage.watchNodeChanges(self.policy.forget)
        d.addErrback(lambda f: self.log.failure("Cannot listen for node changes", f))


def _stopFailed(reactor: Any) -> None:
    """
    Stop Hermod with exit status 1, so a supervisor (systemd's C{Restart=on-failure}) sees
    the failure and tries again later. Services start before the reactor runs, so the stop is
    scheduled rather than done at once; the exit status is set once shutdown has finished.
    """
    import os

    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    reactor.callLater(0, reactor.stop)


#: Seconds between passes that remove items older than their node's item_expire.
EXPIRY_INTERVAL = 60.0

_log = Logger()


def _expireItems(policy: Any) -> Deferred[int]:
    """
    One expiry pass; a failure is logged and the next pass runs as usual.
    """

    def done(removed: int) -> None:
        if removed:
            _log.info("Removed {count} expired items", count=removed)

    async def expire() -> int:
        await policy.lifecycle.armLeases()  # once: subscription leases of unloaded nodes
        removed: int = await policy.expireItems()
        return removed

    d = Deferred.fromCoroutine(expire())
    d.addCallback(done)
    d.addErrback(lambda f: _log.failure("Expiring items failed", f))
    return d


def _trimArchives(policy: Any) -> Deferred[None]:
    """
    One archive retention pass over every node; a failure is logged and the next pass runs as
    usual.
    """

    def done(removed: int) -> None:
        if removed:
            _log.info("Trimmed {count} events from node archives", count=removed)

    d = Deferred.fromCoroutine(policy.trimArchives())
    d.addCallback(done)
    d.addErrback(lambda f: _log.failure("Trimming node archives failed", f))
    return d


def _makeReplication(
    settings: Any, policy: Any, storage: Any, component: Any, reactor: Any
) -> IService | None:
    """
    The replication service when backends are configured (issue 5), with its partner link
    added to the component's stream; L{None} otherwise.
    """
    if not settings.backends:
        return None
    from hermod_component.backends import UnknownBackend
    from hermod_component.backends.errors import BackendSettingsError
    from hermod_component.replication.service import makeReplication
    from hermod_component.replication.store import replicationStoreFor
    from hermod_component.replication.xmpp import makePartnerLink

    try:
        service = makeReplication(
            policy, replicationStoreFor(storage), settings.backends, settings.partners, reactor,
            settings.discovery,
        )
    except (UnknownBackend, BackendSettingsError) as e:
        raise ConfigError(str(e)) from None
    link = makePartnerLink(service.engine)
    component.addHandler(link)
    if settings.discovery is not None:
        from hermod_component.replication.discovery import makeDiscovery

        component.addHandler(makeDiscovery(link, settings.discovery))
    return service
