"""
Tests for L{hermod_component.storage._executor}: the one-thread SQLite executor, with a real
worker thread and a real SQLite file; outcomes come back through L{ThreadCallQueue}, so the
Deferreds fire in the test's thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hermod_component.storage._executor import ExecutorStopped, SQLiteExecutor
from hermod_component.testing import ThreadCallQueue


class Abort(BaseException):
    """
    Not an C{Exception}: what a C{KeyboardInterrupt} or C{SystemExit} looks like to the executor.
    """


class RecordingConnection(sqlite3.Connection):
    """
    A connection that records the thread it was closed in.

    @ivar closedIn: The identifier of the thread that closed it, or C{None}.
    """

    closedIn: int | None = None

    def close(self) -> None:
        """
        Record the closing thread, then close.
        """
        self.closedIn = threading.get_ident()
        super().close()


class SQLiteExecutorTests(SynchronousTestCase):
    """
    Tests for L{SQLiteExecutor}.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "e.sqlite")
        self.reactor = ThreadCallQueue()
        self.connections: list[RecordingConnection] = []
        self.connectThreads: list[int] = []
        self.failConnects = 0
        setup = sqlite3.connect(self.path)
        setup.execute("CREATE TABLE t (n INTEGER)")
        setup.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        setup.execute(
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
        setup.commit()
        setup.close()
        self.executor = SQLiteExecutor(self.connect, self.reactor)
        self.addCleanup(self.executor.close)

    def connect(self) -> sqlite3.Connection:
        """
        Open a L{RecordingConnection} (failing while C{failConnects} is positive), recording
        the thread.
        """
        self.connectThreads.append(threading.get_ident())
        if self.failConnects:
            self.failConnects -= 1
            raise sqlite3.OperationalError("unable to open database file")
        connection = sqlite3.connect(self.path, factory=RecordingConnection)
        connection.execute("PRAGMA foreign_keys=ON")
        self.connections.append(connection)
        return connection

    def rows(self, table: str = "t") -> list[Any]:
        """
        The committed rows of C{table}, read through a connection of the test's own.
        """
        connection = sqlite3.connect(self.path)
        try:
            return [row[0] for row in connection.execute(f"SELECT * FROM {table} ORDER BY rowid")]
        finally:
            connection.close()

    @staticmethod
    def insert(cursor: Any, n: int, fail: BaseException | None = None) -> int:
        """
        Insert C{n}, then raise C{fail} if given.
        """
        cursor.execute("INSERT INTO t (n) VALUES (?)", (n,))
        if fail is not None:
            raise fail
        return n * 10

    def test_resultAfterCommit(self) -> None:
        """
        The Deferred fires with the interaction's result once its transaction has committed.
        """
        d = self.executor.runInteraction(self.insert, 4)
        self.reactor.runCalls(1)
        self.assertEqual(self.successResultOf(d), 40)
        self.assertEqual(self.rows(), [4])

    def test_keywordArguments(self) -> None:
        """
        Positional and keyword arguments reach the interaction after the cursor.
        """
        d = self.executor.runInteraction(self.insert, n=5, fail=None)
        self.reactor.runCalls(1)
        self.assertEqual(self.successResultOf(d), 50)

    def test_order(self) -> None:
        """
        Interactions run one at a time in call order, and their outcomes arrive in that order.
        """
        fired: list[int] = []
        for n in range(30):
            self.executor.runInteraction(self.insert, n).addCallback(fired.append)
        self.reactor.runCalls(30)
        self.assertEqual(fired, [n * 10 for n in range(30)])
        self.assertEqual(self.rows(), list(range(30)))

    def test_oneConnectionInTheWorkerThread(self) -> None:
        """
        One connection serves every interaction; it is opened, used and closed in the worker
        thread, never in the caller's.
        """
        usedIn: list[int] = []

        def where(cursor: Any) -> None:
            usedIn.append(threading.get_ident())

        for _ in range(3):
            self.executor.runInteraction(where)
        self.reactor.runCalls(3)
        self.executor.close()
        [connection] = self.connections
        self.assertEqual(len(set(usedIn)), 1)
        self.assertEqual(self.connectThreads, usedIn[:1])
        self.assertEqual(connection.closedIn, usedIn[0])
        self.assertNotEqual(usedIn[0], threading.get_ident())

    def assertRollsBack(self, error: BaseException) -> None:
        """
        An interaction that inserts and then raises C{error} fails with that same error and
        leaves no row; the next interaction runs in a fresh transaction.
        """
        d = self.executor.runInteraction(self.insert, 1, error)
        after = self.executor.runInteraction(self.insert, 2)
        self.reactor.runCalls(2)
        self.assertIs(self.failureResultOf(d, type(error)).value, error)
        self.assertEqual(self.successResultOf(after), 20)
        self.assertEqual(self.rows(), [2])

    def test_exceptionRollsBack(self) -> None:
        """
        An exception from the interaction rolls its transaction back and fails the Deferred
        with that same exception; the next interaction runs in a fresh transaction.
        """
        self.assertRollsBack(ValueError("bad"))

    def test_baseExceptionRollsBack(self) -> None:
        """
        A C{BaseException} that is not an C{Exception} rolls back and fails the Deferred too,
        and the worker thread carries on.
        """
        self.assertRollsBack(Abort())
        self.assertTrue(self.executor.running)

    def test_failedCommitRollsBack(self) -> None:
        """
        A commit the database refuses (a deferred foreign key) fails the Deferred with the
        driver's error and leaves nothing of the transaction behind.
        """

        def orphan(cursor: Any) -> None:
            cursor.execute("INSERT INTO t (n) VALUES (1)")
            cursor.execute("INSERT INTO child (parent) VALUES (99)")

        d = self.executor.runInteraction(orphan)
        after = self.executor.runInteraction(self.insert, 2)
        self.reactor.runCalls(2)
        self.failureResultOf(d, sqlite3.IntegrityError)
        self.assertEqual(self.successResultOf(after), 20)
        self.assertEqual(self.rows(), [2])
        self.assertEqual(self.rows("child"), [])

    def test_closeFinishesQueuedWork(self) -> None:
        """
        Closing lets the interactions already queued run and commit, then closes the connection
        and joins the thread; their outcomes arrive afterwards.
        """
        release = threading.Event()

        def held(cursor: Any) -> int:
            release.wait(30)
            return self.insert(cursor, 0)

        first = self.executor.runInteraction(held)
        queued = [self.executor.runInteraction(self.insert, n) for n in (1, 2, 3)]
        # Released from another thread while close() waits, whenever that thread gets to run.
        threading.Thread(target=release.set).start()
        self.executor.close()
        self.assertFalse(self.executor.running)
        self.assertIsNotNone(self.connections[0].closedIn)
        self.assertEqual(self.rows(), [0, 1, 2, 3])
        self.reactor.runCalls(4)
        self.assertEqual(self.successResultOf(first), 0)
        self.assertEqual([self.successResultOf(d) for d in queued], [10, 20, 30])

    def test_nothingRunsAfterClose(self) -> None:
        """
        After L{SQLiteExecutor.close}, an interaction is not run and its Deferred fails at once
        with L{ExecutorStopped}; closing again is harmless.
        """
        self.executor.close()
        called: list[object] = []
        d = self.executor.runInteraction(called.append)
        failure = self.failureResultOf(d, ExecutorStopped)
        self.assertIn("closed", str(failure.value))
        self.executor.close()
        self.assertEqual(called, [])
        self.assertEqual(self.reactor.pending(), 0)
        self.assertEqual(self.connectThreads, [])

    def test_connectFailureRetried(self) -> None:
        """
        If the connection cannot be opened, that interaction fails with the error, and the
        next interaction tries to open it again.
        """
        self.failConnects = 1
        d = self.executor.runInteraction(self.insert, 1)
        after = self.executor.runInteraction(self.insert, 2)
        self.reactor.runCalls(2)
        self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(self.successResultOf(after), 20)
        self.assertEqual(len(self.connectThreads), 2)
        self.assertEqual(self.rows(), [2])
