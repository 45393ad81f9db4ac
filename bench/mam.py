#!/usr/bin/env python3
"""
MAM paging throughput: how many archived events per second Hermod serves when a client pages a
node's archive (XEP-0313 + XEP-0059), for a node with 100,000 events, on SQLite and PostgreSQL.

  .venv/bin/python bench/mam.py [--events 100000] [--engines sqlite,postgresql]
      [--pages 250,1000] [--payload 512]

Level measured: storage + policy + stanzas. Each page is a real C{<iq><query
xmlns='urn:xmpp:mam:2'/></iq>} dispatched to Hermod's handlers (L{makeHandlers}) on a recording
stream that keeps the bytes written (result messages and the IQ result) without parsing them; the
policy and the SQL engine run as in the service, with the reactor and its storage threads. The
XMPP server's routing and the client's parsing are not included. It prints figures and asserts
nothing except that every event was served exactly once.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet import defer, task
from twisted.words.protocols.jabber.xmlstream import XMPPHandlerCollection
from twisted.words.xish import domish, utility

from hermod_component.config import PubSubSettings
from hermod_component.model import Item, Node, NodeConfig
from hermod_component.policy import PubSubPolicy
from hermod_component.testing import parseStanzas
from hermod_component.xmpp.handler import makeHandlers

SERVICE = "pubsub.bench"
OWNER = "owner@bench"
READER = "reader@bench/r"
NODE = "/bench/archive"


class CountingStream(utility.EventDispatcher):
    """
    A stream stand-in that counts what is written and keeps the last IQ response.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytesSent = 0
        self.results = 0
        self.lastIQ: domish.Element | None = None
        self.waiter: defer.Deferred[domish.Element] | None = None

    def send(self, obj: object) -> None:
        if isinstance(obj, bytes):
            self.bytesSent += len(obj)
            self.results += obj.count(b"<result xmlns=")
        elif isinstance(obj, domish.Element):
            self.lastIQ = obj
            self.bytesSent += len(obj.toXml().encode("utf-8"))
            waiter, self.waiter = self.waiter, None
            if waiter is not None:
                waiter.callback(obj)
        else:
            self.bytesSent += len(str(obj).encode("utf-8"))


class Manager(XMPPHandlerCollection):
    """
    Brings the handlers up on a L{CountingStream}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.xmlstream = CountingStream()

    def addHandler(self, handler: Any) -> None:
        super().addHandler(handler)
        handler.parent = self
        handler.makeConnection(self.xmlstream)
        handler.connectionInitialized()

    def send(self, obj: object) -> None:
        self.xmlstream.send(obj)


async def fill(storage: Any, events: int, payloadSize: int) -> float:
    """
    Create the node and log C{events} publishes in batches; returns the seconds taken.
    """
    await storage.createNode(Node(NODE, NodeConfig(maxItems=10), OWNER, time.time()))
    body = b"x" * max(payloadSize - 40, 0)
    started = time.perf_counter()
    batch = 1000
    for first in range(0, events, batch):
        items = [
            Item(f"i{n}", b"<p xmlns='urn:bench'>" + body + b"</p>", OWNER, time.time())
            for n in range(first, min(first + batch, events))
        ]
        await storage.storeItems(NODE, items, 10, True)
    return time.perf_counter() - started


async def page(stream: CountingStream, pageSize: int, after: str | None, n: int) -> Any:
    """
    Send one archive query and wait for its IQ response; returns the C{<fin/>}.
    """
    rsm = f"<max>{pageSize}</max>" + (f"<after>{after}</after>" if after else "")
    stream.lastIQ = None
    stream.waiter = defer.Deferred()
    waiter = stream.waiter
    (iq,) = parseStanzas(
        f"<iq type='set' from='{READER}' to='{SERVICE}' id='q{n}'>"
        f"<query xmlns='urn:xmpp:mam:2' queryid='q{n}' node='{NODE}'>"
        f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>"
    )
    stream.dispatch(iq)
    response = await waiter
    if response.getAttribute("type") != "result":
        raise RuntimeError(response.toXml())
    return response.fin


def _vacuumAnalyze(dsn: str) -> None:
    """
    What autovacuum does soon after a bulk load: fresh planner statistics and a visibility
    map, so the archive query walks the (node, id) index and the count is index-only.
    """
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        connection.cursor().execute("VACUUM ANALYZE events")
    finally:
        connection.close()


async def run(
    storage: Any, engine: str, events: int, pageSizes: list[int], payload: int,
    afterLoad: Any = None,
) -> None:
    await storage.start()
    try:
        from twisted.internet import reactor

        filled = await fill(storage, events, payload)
        print(f"{engine}: logged {events} events in {filled:.1f}s ({events / filled:,.0f}/s)")
        if afterLoad is not None:
            afterLoad()
            print(f"{engine}: VACUUM ANALYZE events (as autovacuum would after the load)")
        policy = PubSubPolicy(storage, PubSubSettings(admins=(OWNER,)), SERVICE, reactor)
        manager = Manager()
        for handler in makeHandlers(policy):
            handler.setHandlerParent(manager)
        stream = manager.xmlstream
        for pageSize in pageSizes:
            pages = 0
            after: str | None = None
            lastId = 0
            stream.bytesSent = 0
            stream.results = 0
            started = time.perf_counter()
            while True:
                fin = await page(stream, pageSize, after, pages)
                pages += 1
                rsmSet = fin.firstChildElement()
                last = [c for c in rsmSet.elements() if c.name == "last"]
                if last:
                    ids = int(str(last[0]))
                    if ids <= lastId:
                        raise RuntimeError("paging went backwards")
                    lastId = ids
                    after = str(last[0])
                if fin.getAttribute("complete") == "true":
                    break
            elapsed = time.perf_counter() - started
            served = stream.results
            if served != events:
                raise RuntimeError(f"served {served} events, expected {events}")
            print(
                f"{engine}: page {pageSize:>5}: {served} events in {pages} pages, "
                f"{elapsed:.2f}s -> {served / elapsed:,.0f} events/s, "
                f"{stream.bytesSent / elapsed / 1e6:.1f} MB/s of stanzas"
            )
    finally:
        await storage.stop()


def main(reactor: Any) -> defer.Deferred[None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--pages", default="250,1000")
    parser.add_argument("--payload", type=int, default=512)
    options = parser.parse_args()
    pageSizes = [int(p) for p in options.pages.split(",")]

    async def go() -> None:
        for engine in options.engines.split(","):
            if engine == "sqlite":
                from hermod_component.storage.sqlite import SQLiteStorage

                directory = tempfile.mkdtemp(prefix="hermod-bench-mam-")
                storage = SQLiteStorage(os.path.join(directory, "bench.sqlite"), reactor)
                await run(storage, engine, options.events, pageSizes, options.payload)
            elif engine == "postgresql":
                from hermod_component.storage.postgresql import PostgreSQLStorage
                from tests.servers.postgres import PostgresServer

                server = PostgresServer()
                try:
                    server.start()
                    dsn = server.createDatabase("bench_mam")
                    storage = PostgreSQLStorage(dsn, reactor)
                    await run(
                        storage, engine, options.events, pageSizes, options.payload,
                        functools.partial(_vacuumAnalyze, dsn),
                    )
                finally:
                    server.stop()
            else:
                raise SystemExit(f"unknown engine {engine}")

    return defer.Deferred.fromCoroutine(go())


if __name__ == "__main__":
    task.react(main)
