"""
A one-thread executor for SQLite transactions, in place of C{adbapi.ConnectionPool}.

SQLite allows one writer at a time and Hermod uses one connection, so the pool's machinery (a
thread pool with its team coordinator, a connection per thread looked up by thread id, the
logging context carried into the thread) buys nothing and costs about 100 µs and two extra
thread hand-offs per transaction. L{SQLiteExecutor} owns one thread and one connection: calls
go into a C{queue.SimpleQueue}, the thread runs each interaction in a transaction and hands the
outcome back with C{reactor.callFromThread}.

The transaction semantics are those of C{ConnectionPool.runInteraction}: the interaction gets a
fresh cursor, its return value is the result once the cursor is closed and the connection has
committed; any exception (C{BaseException} included) rolls the transaction back and fails the
Deferred with that same exception (a failed rollback is logged and the original exception is
still the one reported).

Twisted's own C{twisted._threads.ThreadWorker} (a thread reading a queue) is a private module
without a compatibility policy, gives no way to join its thread nor a place to keep the
connection, and would replace only the ten lines of the loop below; hence this small class.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

_P = ParamSpec("_P")
_T = TypeVar("_T")

_Job = tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_STOP = None
"""
The sentinel that ends the worker thread's loop.
"""


class ExecutorStopped(RuntimeError):
    """
    The executor has been closed: it runs no more interactions.
    """


class SQLiteExecutor:
    """
    One thread, one SQLite connection, one transaction per interaction, in call order.

    The connection is opened in the worker thread, on its first interaction (and again on the
    next one if opening it failed), so it may keep C{check_same_thread} on: it is never used
    from any other thread. It is closed by the worker thread when the executor is closed.
    """

    log = Logger()

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        reactor: IReactorFromThreads,
        name: str = "hermod-sqlite",
    ) -> None:
        """
        Start the worker thread.

        @param connect: Opens and configures the connection; called in the worker thread.
        @param reactor: Outcomes are handed back through its C{callFromThread}.
        @param name: The worker thread's name.
        """
        self._connect = connect
        self._reactor = reactor
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """
        Whether the worker thread is still alive.
        """
        return self._thread.is_alive()

    def runInteraction(
        self,
        interaction: Callable[Concatenate[Any, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        Run C{interaction(cursor, *args, **kwargs)} in the worker thread, as one transaction.

        @return: Fires in the reactor thread with the interaction's result after the commit,
            or fails with its exception after the rollback; fails with L{ExecutorStopped} if
            the executor is closed.
        """
        if self._closed:
            return fail(ExecutorStopped("the SQLite executor is closed"))
        d: Deferred[_T] = Deferred()
        self._jobs.put((d, interaction, args, kwargs))
        return d

    def close(self) -> None:
        """
        Refuse new interactions, let the queued ones finish, close the connection and join the
        worker thread. Their outcomes reach the reactor after this returns. Closing twice is
        harmless.
        """
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)
        if self._thread is not threading.current_thread():
            self._thread.join()

    # In the worker thread

    def _work(self) -> None:
        connection: sqlite3.Connection | None = None
        callFromThread = self._reactor.callFromThread
        get = self._jobs.get
        while (job := get()) is not _STOP:
            d, interaction, args, kwargs = job
            try:
                if connection is None:
                    connection = self._connect()
                result = self._transact(connection, interaction, args, kwargs)
            except BaseException:  # noqa: BLE001 - reported through the Deferred, as adbapi does
                callFromThread(d.errback, Failure())
            else:
                callFromThread(d.callback, result)
            del job, d, interaction, args, kwargs
        if connection is not None:
            try:
                connection.close()
            except BaseException:  # noqa: BLE001 - logged; the thread is ending anyway
                self.log.failure("Closing the SQLite connection failed")

    def _transact(
        self,
        connection: sqlite3.Connection,
        interaction: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        cursor = connection.cursor()
        try:
            result = interaction(cursor, *args, **kwargs)
            cursor.close()
            connection.commit()
            return result
        except BaseException:
            try:
                connection.rollback()
            except BaseException:  # noqa: BLE001 - logged; the original exception is raised
                self.log.failure("Rollback failed")
            raise
