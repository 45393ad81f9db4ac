#!/usr/bin/env python3
"""
In-process catch-up micro-benchmarks, without XMPP: B's apply path and A's archive pages.

  .venv/bin/python bench/apply.py [--changes 20000] [--page 1000] [--what apply,archive]
      [--repeat R] [--profile FILE]

C{apply}: N change items encoded as partner A publishes them (C{<doc n=.../>} XML objects, as
C{bench/replication.py} writes) are handed to L{ReplicationEngine.receive} of replica B in
archive pages of C{--page} items with their archive ids, as the catch-up does; B applies them to
a spool backend on SQLite storage (with its SQL replication store) in a temporary directory.
C{archive}: A's node holds N archived publishes on SQLite; the archive is paged through with
L{readPage}, the function A answers a partner's archive-page query with. Each prints changes per second (wall) and CPU microseconds per change (process CPU, all
threads: the reactor and the SQLite thread), which the machine's load affects less (on a loaded
machine, take the best of a few --repeat runs). C{parts}: the best of 15 rounds of decoding and
of the spool's file writes alone. It asserts only that every change arrived.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet import defer, task

from hermod_component.backends import makeBackend
from hermod_component.backends.spool import SpoolBackend
from hermod_component.config import PartnerSettings, PubSubSettings
from hermod_component.model import ArchiveQuery, Change, ChangeAction, Item, Node, NodeConfig
from hermod_component.policy import PubSubPolicy
from hermod_component.replication.codec import contentHash, encodeChange
from hermod_component.replication.engine import Received, ReplicationEngine
from hermod_component.replication.store import SQLReplicationStore
from hermod_component.storage.sqlite import SQLiteStorage
from hermod_component.xmpp.mam import PageSizes, readPage

A, B = "pubsub-a.bench", "pubsub-b.bench"
NODE = "/docs/all"


def changeItems(count: int, prefix: str = "backlog") -> list[tuple[str, bytes]]:
    """
    C{count} change items (object id, item payload) as partner A publishes them.
    """
    now = time.time()
    items = []
    for n in range(count):
        payload = f'<doc n="{n}" backlog="yes"/>'.encode()
        change = Change(
            objectId=f"{prefix}{n}", action=ChangeAction.CREATE, payload=payload,
            contentType="application/xml", version=f"1:{int(now * 1000) + n}:{A}", origin=A,
            hops=(A,), hash=contentHash(payload, "application/xml"), updated=now,
        )
        items.append((change.objectId, encodeChange(change)))
    return items


class Measure:
    """
    Wall and process CPU time of a block, optionally under cProfile.
    """

    def __init__(self, profile: cProfile.Profile | None) -> None:
        self.profile = profile
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Measure:  # noqa: PYI034 - a plain class, not subclassed
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        if self.profile is not None:
            self.profile.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profile is not None:
            self.profile.disable()
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def report(self, what: str, count: int) -> None:
        """
        Print the figures for C{count} changes.
        """
        print(f"{what}: {count} changes in {self.wall:.2f} s wall = {count / self.wall:,.0f}/s; "
              f"CPU {self.cpu:.2f} s = {self.cpu / count * 1e6:.0f} µs per change")


async def benchApply(reactor: Any, count: int, pageSize: int,
                     profile: cProfile.Profile | None) -> None:
    """
    Apply C{count} partner changes on B in pages of C{pageSize}.
    """
    directory = tempfile.mkdtemp(prefix="hermod-apply-")
    storage = SQLiteStorage(os.path.join(directory, "b.sqlite"), reactor)
    await storage.start()
    try:
        spool = os.path.join(directory, "spool")
        # As Hermod makes it from its configuration (file writes in the reactor's threads),
        # without the directory watch, which this benchmark does not exercise.
        backend = makeBackend("spool", "docs", {"path": spool, "node": NODE, "watch": False},
                              reactor)
        await backend.start()
        # Room for every object in the node, as bench/replication.py configures its replicas.
        policy = PubSubPolicy(
            storage, PubSubSettings(maxItemsPerNode=max(count * 2, 10000)), B, reactor
        )
        partner = PartnerSettings(A, NODE, "docs")
        engine = ReplicationEngine(
            policy, SQLReplicationStore(storage), {"docs": backend}, [partner], reactor
        )
        await engine.prepare()
        items = changeItems(count)
        # One page first, not counted: SQLite and the node warm up.
        warm = changeItems(pageSize, "warm")
        await engine.receive([Received(partner, i, p, str(n + 1)) for n, (i, p) in
                              enumerate(warm)])
        with Measure(profile) as measure:
            # As the catch-up hands them over: a page while the engine saves the one before.
            previous = None
            for start in range(0, count, pageSize):
                page = items[start:start + pageSize]
                handed = engine.receive([
                    Received(partner, itemId, payload, str(pageSize + start + n + 1))
                    for n, (itemId, payload) in enumerate(page)
                ])
                if previous is not None:
                    await previous
                previous = handed
            if previous is not None:
                await previous
        measure.report(f"apply (page {pageSize})", count)
        files = len(os.listdir(spool)) - 1 - pageSize
        state = await engine.store.getPartner(A, NODE)
        if files != count or state.mark != str(pageSize + count):
            raise RuntimeError(f"{files} files, mark {state.mark}: expected {count} changes")
    finally:
        await storage.stop()
        shutil.rmtree(directory)


async def benchArchive(reactor: Any, count: int, pageSize: int,
                       profile: cProfile.Profile | None) -> None:
    """
    Page through an archive of C{count} publishes with C{pageSize} events a page.
    """
    directory = tempfile.mkdtemp(prefix="hermod-archive-")
    storage = SQLiteStorage(os.path.join(directory, "a.sqlite"), reactor)
    await storage.start()
    try:
        now = time.time()
        await storage.createNode(Node(NODE, NodeConfig(maxItems=count * 2), A, now))
        items = changeItems(count)
        for start in range(0, count, 1000):
            await storage.storeItems(
                NODE, [Item(i, p, A, now) for i, p in items[start:start + 1000]], count * 2, True
            )
        policy = PubSubPolicy(storage, PubSubSettings(admins=(B,)), A, reactor)
        served = 0
        after: str | None = None
        sizes = PageSizes()
        with Measure(profile) as measure:
            while True:
                page, taken, _body = await readPage(
                    policy, sizes, B, NODE, ArchiveQuery(maxResults=pageSize, after=after)
                )
                served += taken
                if taken == len(page.events) and page.complete or not page.events:
                    break
                after = str(page.events[taken - 1].eventId)
        measure.report(f"archive pages (page {pageSize})", served)
        if served != count:
            raise RuntimeError(f"served {served} events, expected {count}")
    finally:
        await storage.stop()
        shutil.rmtree(directory)


def benchParts(count: int) -> None:
    """
    The apply path's pieces, each the fastest of 15 rounds of C{count} changes (the minimum is
    what the machine's load disturbs least): decoding an item and adding the republished hop,
    and the spool backend writing the object's file.
    """
    from hermod_component.replication import codec

    items = changeItems(count)
    rounds: dict[str, list[float]] = {"decode + hop": [], "spool apply": []}
    directory = tempfile.mkdtemp(prefix="hermod-parts-")
    try:
        backend = SpoolBackend("docs", directory, NODE)
        backend.start()
        changes = [codec.decodeChange(i, p) for i, p in items]
        for _ in range(15):
            started = time.process_time()
            if hasattr(codec, "decodeItem"):
                for itemId, payload in items:
                    codec.treeWithHop(codec.decodeItem(itemId, payload)[1], B)
            else:
                for itemId, payload in items:
                    codec.decodeChange(itemId, payload)
                    codec.withHop(payload, B)
            rounds["decode + hop"].append(time.process_time() - started)
            started = time.process_time()
            for change in changes:
                backend.apply(change)
            rounds["spool apply"].append(time.process_time() - started)
    finally:
        shutil.rmtree(directory)
    for what, times in rounds.items():
        print(f"{what}: {min(times) / count * 1e6:.1f} µs per change (best of 15 x {count})")


async def run(reactor: Any, options: argparse.Namespace) -> None:
    """
    Run the chosen benchmarks.
    """
    profile = cProfile.Profile() if options.profile else None
    what = options.what.split(",")
    if "parts" in what:
        benchParts(min(options.changes, 1000))
    for _ in range(options.repeat):
        if "apply" in what:
            await benchApply(reactor, options.changes, options.page, profile)
        if "archive" in what:
            await benchArchive(reactor, options.changes, options.page, profile)
    if profile is not None:
        profile.dump_stats(options.profile)
        print(f"cProfile statistics (reactor thread) in {options.profile}")


def main(reactor: Any) -> defer.Deferred[None]:
    """
    Parse the options and run.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--what", default="apply,archive", help="apply, archive, parts")
    parser.add_argument("--repeat", type=int, default=1, help="run each this many times")
    parser.add_argument("--profile", default="", help="write cProfile statistics to this file")
    options = parser.parse_args()
    return defer.Deferred.fromCoroutine(run(reactor, options))


if __name__ == "__main__":
    task.react(main)
