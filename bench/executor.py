#!/usr/bin/env python3
"""
The SQLite thread hop alone: round trips through C{adbapi.ConnectionPool} (as SQLite ran before
issue 4's executor) and through L{SQLiteExecutor}, each a one-row insert and its commit.

  .venv/bin/python bench/executor.py [--count 5000] [--rounds 3]

W=1 waits for each result before the next call (a lone publish's path); W=32 keeps 32 in flight.
It prints wall and process CPU µs per round trip and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def insert(cursor: Any, n: int) -> int:
    """
    The interaction: one row and its commit.
    """
    cursor.execute("INSERT INTO t (n) VALUES (?)", (n,))
    return n


def processCPU() -> float:
    """
    This process's user and system CPU seconds.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(reactor: Any, kind: str, count: int, window: int) -> tuple[float, float]:
    """
    Run C{count} round trips through C{kind}, C{window} at a time.

    @return: Wall and CPU µs per round trip.
    """
    from twisted.enterprise.adbapi import ConnectionPool
    from twisted.internet.defer import gatherResults

    from hermod_component.storage._executor import SQLiteExecutor
    from hermod_component.storage.sqlite import _configureConnection, _connect

    path = os.path.join(tempfile.mkdtemp(prefix="hermod-executor-"), "bench.sqlite")
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (n INTEGER)")
    setup.commit()
    setup.close()
    runner: Any
    if kind == "adbapi":
        runner = ConnectionPool(
            "sqlite3", path, cp_min=1, cp_max=1, cp_noisy=False,
            cp_openfun=_configureConnection, cp_reactor=reactor, check_same_thread=False,
        )
    else:
        runner = SQLiteExecutor(lambda: _connect(path), reactor)
    try:
        await runner.runInteraction(insert, -1)
        wall, cpu = time.perf_counter(), processCPU()
        for start in range(0, count, window):
            await gatherResults([runner.runInteraction(insert, start + i) for i in range(window)])
        wall, cpu = time.perf_counter() - wall, processCPU() - cpu
    finally:
        runner.close()
    return wall / count * 1e6, cpu / count * 1e6


def main() -> None:
    """
    Alternate the two runners for some rounds and print the figures.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    async def run() -> None:
        try:
            for round in range(options.rounds):
                for kind in ("adbapi", "executor"):
                    for window in (1, 32):
                        wall, cpu = await measure(reactor, kind, options.count, window)
                        print(f"round {round} {kind:8s} W={window:2d}: {wall:6.1f} µs wall,"
                              f" {cpu:6.1f} µs CPU per round trip", flush=True)
        finally:
            reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
