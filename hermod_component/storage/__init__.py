"""
Storage back ends behind IStorage: memory, SQLite (the embedded default) and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hermod_component.config import StorageSettings
from hermod_component.errors import ConfigError
from hermod_component.interfaces import IStorage

ENGINES = ("memory", "sqlite", "postgresql")


def makeStorage(settings: StorageSettings, reactor: Any) -> IStorage:
    """
    The storage engine named by C{settings.engine}, not yet started. Engines are imported only
    when named, so psycopg2 is loaded only for PostgreSQL.

    @param reactor: The reactor the SQL engines' connection pools report through.
    @raise ConfigError: the engine is unknown, or PostgreSQL has no DSN.
    """
    if settings.engine == "memory":
        from hermod_component.storage.memory import MemoryStorage

        return MemoryStorage()
    if settings.engine == "sqlite":
        from hermod_component.storage.sqlite import SQLiteStorage

        return SQLiteStorage(settings.path, reactor)
    if settings.engine == "postgresql":
        if not settings.dsn:
            raise ConfigError("storage.dsn is required when storage.engine is 'postgresql'")
        from hermod_component.storage.postgresql import PostgreSQLStorage

        return PostgreSQLStorage(settings.dsn, reactor)
    raise ConfigError(
        f"storage.engine must be one of {', '.join(ENGINES)}, not {settings.engine!r}"
    )


class StorageService(Service):
    """
    Starts and stops an L{IStorage} with the application.

    @ivar storage: The storage this service runs.
    @ivar started: After L{startService}, fires with C{True} once the storage is started, or
        with C{False} if starting failed (the failure is logged). Other services wait on it
        before they read state.
    """

    log = Logger()

    def __init__(self, storage: IStorage) -> None:
        self.storage = storage
        self.started: Deferred[bool] | None = None

    @classmethod
    def fromSettings(cls, settings: StorageSettings, reactor: Any) -> StorageService:
        """
        A service for the engine that C{settings} names (see L{makeStorage}).

        @raise ConfigError: the settings name no usable engine.
        """
        return cls(makeStorage(settings, reactor))

    def startService(self) -> None:
        """
        Start the storage: open connections and apply migrations. See L{started}.
        """
        super().startService()

        def ok(_: object) -> bool:
            return True

        def failed(failure: Failure) -> bool:
            self.log.failure("Storage failed to start", failure)
            return False

        self.started = self.storage.start().addCallbacks(ok, failed)

    def stopService(self) -> Deferred[None]:
        """
        Finish in-flight storage work and close connections.
        """
        super().stopService()
        return self.storage.stop()
