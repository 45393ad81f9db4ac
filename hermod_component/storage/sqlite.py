"""
SQLite storage: the embedded default, one file and no server.

One connection in WAL mode with C{synchronous=NORMAL} and foreign keys on, owned by one worker
thread (L{SQLiteExecutor}); SQLite allows one writer at a time, so a single connection
serializes transactions without lock waits.

The write-ahead log is checkpointed by a thread of its own (L{Checkpointer}), not by the
commit that happens to fill it: in WAL mode with C{synchronous=NORMAL} a commit does not sync,
but SQLite's automatic checkpoint runs inside a commit, copies the log into the database and
syncs it, and that publish waited for all of it (its p99 was about 6 ms, its worst over 10 ms,
in a loop of single-publish transactions). The writer keeps a high automatic checkpoint as
the safety net should the checkpointer fall behind.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hermod_component.interfaces import IStorage
from hermod_component.storage._executor import SQLiteExecutor
from hermod_component.storage._groupcommit import GroupCommitMixin
from hermod_component.storage._sql import Cursor, Dialect, SQLStorage


class SQLiteDialect(Dialect):
    """
    SQLite's side of the SQL: C{?} placeholders, item sequence numbers from the largest one in
    use (one writer at a time makes that safe; the index on C{seq} makes it cheap).
    """

    name = "sqlite"
    placeholder = "?"
    nextItemSeq = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM items)"
    integrityErrors = (sqlite3.IntegrityError,)

    def lockMigrations(self, cursor: Cursor) -> None:
        """
        Open the transaction before the schema statements: the C{sqlite3} module otherwise runs
        DDL outside any transaction, and a failed migration would be left half applied.
        """
        self.beginTransaction(cursor)

    def beginTransaction(self, cursor: Cursor) -> None:
        """
        The C{sqlite3} module opens a transaction only before data-changing statements. A
        C{SAVEPOINT} outside one is a transaction of its own, which its C{RELEASE} commits:
        group commit would then commit every publish of a batch separately.
        """
        if not cursor.connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")


def _connect(path: str) -> sqlite3.Connection:
    """
    Open and configure the connection to C{path}; in the executor's thread, which alone uses it.
    """
    connection = sqlite3.connect(path)
    try:
        _configureConnection(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _configureConnection(connection: sqlite3.Connection) -> None:
    """
    Per-connection settings: write-ahead log, C{NORMAL} sync, foreign keys (for the cascades).
    """
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")


#: Seconds between two checkpoints of the write-ahead log by the L{Checkpointer}.
CHECKPOINT_INTERVAL = 0.5

#: The writer's own automatic checkpoint, in log pages (about 40 MB): a safety net only.
WRITER_AUTOCHECKPOINT = 10_000


def _connectWriter(path: str) -> sqlite3.Connection:
    """
    L{_connect}, for the connection that writes while a L{Checkpointer} checkpoints.
    """
    connection = _connect(path)
    connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
    return connection


class Checkpointer:
    """
    A thread with a connection of its own that checkpoints the database's write-ahead log
    every C{interval} seconds, in C{PASSIVE} mode: it neither waits for the writer nor makes
    the writer wait, and the copying and syncing happen on this thread.

    @ivar checkpoints: Checkpoints run so far.
    """

    log = Logger()

    def __init__(self, path: str, reactor: Any, interval: float = CHECKPOINT_INTERVAL) -> None:
        """
        Start the thread.

        @param reactor: Failures are logged through its C{callFromThread}.
        """
        self._path = path
        self._reactor = reactor
        self._interval = interval
        self._stopping = threading.Event()
        self._failing = False
        self.checkpoints = 0
        self._thread = threading.Thread(
            target=self._work, name="hermod-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """
        Stop the thread (a checkpoint under way ends first) and close its connection.
        """
        self._stopping.set()
        self._thread.join()

    def _work(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while not self._stopping.wait(self._interval):
                try:
                    if connection is None:
                        connection = _connect(self._path)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    if not self._failing:
                        # Once until it works again: the writer's own checkpoints go on.
                        self._failing = True
                        self._reactor.callFromThread(
                            self.log.failure,
                            "Checkpointing {path} failed; the writer checkpoints meanwhile",
                            Failure(), path=self._path,
                        )
                else:
                    self._failing = False
                    self.checkpoints += 1
        finally:
            if connection is not None:
                connection.close()


@implementer(IStorage)
class SQLiteStorage(GroupCommitMixin, SQLStorage):
    """
    L{IStorage} in one SQLite file.
    """

    dialect = SQLiteDialect()

    def __init__(self, path: str, reactor: Any) -> None:
        """
        @param path: The database file; its directory is created at start if missing.
        @param reactor: The reactor the executor reports through.
        """
        super().__init__(reactor)
        self.path = path
        #: Checkpoints the write-ahead log while the storage runs.
        self.checkpointer: Checkpointer | None = None

    def _prepare(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)

    def _openPool(self) -> SQLiteExecutor:
        path = self.path
        return SQLiteExecutor(lambda: _connectWriter(path), self._reactor)

    async def _start(self) -> None:
        await super()._start()
        if self.checkpointer is None:
            self.checkpointer = Checkpointer(self.path, self._reactor)

    async def _stop(self) -> None:
        await super()._stop()
        checkpointer, self.checkpointer = self.checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
