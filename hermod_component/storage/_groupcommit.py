"""
Group commit for publishes.

While one batch of publishes is being written, further C{storeItems} calls queue up; when the
batch commits, everything queued meanwhile is written in ONE transaction (one thread hand-off,
one commit). Under load this amortizes the connection pool's per-call cost and the commit over
many publishes; with one publish at a time it changes nothing. Each publish of a batch runs in
its own savepoint, so one that fails (a node deleted meanwhile) fails alone, and each caller's
Deferred fires only after the transaction holding its items has committed, in call order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from hermod_component.model import Item, PublishResult

#: At most this many publishes share one transaction.
MAX_BATCH = 256

_Request = tuple[str, tuple[Item, ...], "int | None", bool]


class GroupCommitMixin:
    """
    Mixed in before L{SQLStorage}: batches C{storeItems} calls.
    """

    _run: Any
    _storeItems: Any
    _trim: Any
    dialect: Any
    _publishQueue: list[tuple[_Request, Deferred[PublishResult]]]
    _writing: bool

    def _queue(self) -> list[tuple[_Request, Deferred[PublishResult]]]:
        queue: list[tuple[_Request, Deferred[PublishResult]]] | None = getattr(
            self, "_publishQueue", None
        )
        if queue is None:
            queue = self._publishQueue = []
            self._writing = False
        return queue

    def _queuedWork(self) -> bool:
        """
        Whether publishes are queued behind the batch being written: the storage's stop waits
        for them, instead of closing the pool under them when that batch ends.
        """
        return bool(getattr(self, "_publishQueue", None))

    def storeItems(
        self, identifier: str, items: Sequence[Item], maxItems: int | None, persist: bool
    ) -> Deferred[PublishResult]:
        """
        Log and store items as L{IStorage.storeItems} does, sharing a transaction with the
        publishes that arrive while an earlier batch is being written.
        """
        d: Deferred[PublishResult] = Deferred()
        self._queue().append(((identifier, tuple(items), maxItems, persist), d))
        if not self._writing:
            self._writeBatch()
        return d

    def _writeBatch(self) -> None:
        queue = self._queue()
        batch, self._publishQueue = queue[:MAX_BATCH], queue[MAX_BATCH:]
        if not batch:
            return
        self._writing = True
        written = self._run(self._storeBatch, [request for request, _ in batch])

        def done(outcomes: list[tuple[bool, Any]] | Failure) -> None:
            self._writing = False
            if isinstance(outcomes, Failure):
                for _, d in batch:
                    d.errback(outcomes)
            else:
                for (ok, value), (_, d) in zip(outcomes, batch):
                    if ok:
                        d.callback(value)
                    else:
                        d.errback(Failure(value))
            if self._publishQueue:
                self._writeBatch()

        written.addBoth(done)

    def _storeBatch(self, cursor: Any, requests: list[_Request]) -> list[tuple[bool, Any]]:
        """
        Write every request of the batch in this transaction, each in a savepoint; then trim
        each node the batch published to once, beyond the C{maxItems} of its last publish.
        The ids a trim removes are reported by that node's last successful publish of the
        batch (a full node's trim is three statements: once per batch, not per publish).
        """
        if len(requests) == 1:
            return [(True, self._storeItems(cursor, *requests[0]))]
        self.dialect.beginTransaction(cursor)
        outcomes: list[tuple[bool, Any]] = []
        # node -> (index of its last stored publish, that publish's maxItems)
        trims: dict[str, tuple[int, int | None]] = {}
        for index, (identifier, items, maxItems, persist) in enumerate(requests):
            cursor.execute("SAVEPOINT hermod_publish")
            try:
                result = self._storeItems(cursor, identifier, items, None, persist)
            except Exception as e:  # noqa: BLE001 - that publish's outcome; the batch goes on
                cursor.execute("ROLLBACK TO SAVEPOINT hermod_publish")
                cursor.execute("RELEASE SAVEPOINT hermod_publish")
                outcomes.append((False, e))
            else:
                cursor.execute("RELEASE SAVEPOINT hermod_publish")
                outcomes.append((True, result))
                trims[identifier] = (index, maxItems)
        for identifier, (index, maxItems) in trims.items():
            if maxItems is not None:
                removed = self._trim(cursor, identifier, maxItems)
                if removed:
                    result = outcomes[index][1]
                    outcomes[index] = (True, attrs.evolve(result, removed=tuple(removed)))
        return outcomes
