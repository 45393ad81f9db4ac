"""
Tests for the partner link's archive catch-up and checkpoints, on a stub stream whose IQ
requests the tests answer.
"""

from __future__ import annotations

import base64
import gc
import os
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component.backends.spool import SpoolBackend
from hermod_component.config import PartnerSettings, PubSubSettings
from hermod_component.policy import PubSubPolicy
from hermod_component.replication.engine import Received, ReplicationEngine
from hermod_component.replication.store import MemoryReplicationStore
from hermod_component.replication.xmpp import (
    NS_DISCO_INFO,
    NS_MAM,
    NS_PAGES,
    NS_RSM,
    PartnerLink,
)
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import (
    AnsweringStreamManager,
    FailingCall,
    RecordingNotifier,
    parseStanzas,
)
from hermod_component.xmpp._xmpplib import NS_PUBSUB
from tests.test_replication_engine import remoteItem

JID = "pubsub.b.example"
PARTNER = "pubsub.a.example"


def replica(case: SynchronousTestCase, clock: Clock) -> ReplicationEngine:
    """
    Replica B's engine on memory storage and a started spool, following the partner's node.
    """
    policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), JID, clock)
    policy.notifier = RecordingNotifier()  # type: ignore[assignment]
    backend = SpoolBackend("docs", tempfile.mkdtemp(), "/docs/all")
    case.successResultOf(backend.start())
    engine = ReplicationEngine(
        policy, MemoryReplicationStore(), {"docs": backend},
        [PartnerSettings(PARTNER, "/docs/all", "docs")], clock,
    )
    case.successResultOf(Deferred.fromCoroutine(engine.prepare()))
    return engine


def pageOf(events: list[tuple[str, str, bytes]], complete: bool) -> domish.Element:
    """
    A partner's answer to an archive query in Hermod's archive pages, holding
    C{(archive id, item id, payload)} events.
    """
    iq = domish.Element((None, "iq"))
    iq["type"] = "result"
    fin = iq.addElement((NS_MAM, "fin"))
    if complete:
        fin["complete"] = "true"
    container = fin.addElement((NS_PAGES, "events"))
    for archiveId, itemId, payload in events:
        event = container.addElement("e", content=base64.b64encode(payload).decode())
        event["id"], event["item"] = archiveId, itemId
    return iq


def archivePage(ids: range, complete: bool) -> domish.Element:
    """
    L{pageOf} one event per archive id C{a<id>}, for object C{o<id>}.
    """
    return pageOf([(f"a{n}", f"o{n}", b"<x/>") for n in ids], complete)


def answerArchiveQuery(
    case: SynchronousTestCase, manager: AnsweringStreamManager, after: str | None,
    page: domish.Element,
) -> None:
    """
    Answer the disco#info queries (an archive serving pages) and then the one pending
    archive query, which must ask for the page after C{after} (L{None}: the newest id).
    """
    while manager.pending(NS_DISCO_INFO):  # asked whether it archives, then pages
        for _, info in manager.pending(NS_DISCO_INFO):
            reply = domish.Element((None, "iq"))
            query = reply.addElement((NS_DISCO_INFO, "query"))
            for feature in (NS_MAM, NS_PAGES):
                query.addElement("feature")["var"] = feature
            info.callback(reply)
    [(request, d)] = manager.pending(NS_MAM)
    [query] = request.elements(NS_MAM, "query")
    [rsm] = query.elements(NS_RSM, "set")
    case.assertEqual([str(e) for e in rsm.elements(NS_RSM, "after")],
                     [] if after is None else [after])
    d.callback(page)


class CheckpointTests(SynchronousTestCase):
    """
    The periodic query for the partner archive's newest id.
    """

    def setUp(self) -> None:
        clock = Clock()
        clock.advance(1_700_000_000)
        engine = replica(self, clock)
        [self.partner] = engine.partners
        self.manager = AnsweringStreamManager()
        self.link = PartnerLink(engine)
        self.link.setHandlerParent(self.manager)
        self.events: list[dict[str, Any]] = []
        self.link.log = Logger(observer=self.events.append)

    def pendingQuery(self) -> Deferred[domish.Element]:
        """
        The one unanswered archive query of the link, after telling it that the partner
        serves no archive pages (a plain XEP-0313 archive).
        """
        for _, info in self.manager.pending(NS_DISCO_INFO):
            info.errback(StanzaError("service-unavailable"))
        [(_, d)] = self.manager.pending(NS_MAM)
        return d

    def test_disconnectedDuringCheckpoint(self) -> None:
        """
        A checkpoint whose query fails because the stream closed is logged at info level as
        abandoned, not as a critical failure.
        """
        for d in [d for _, d in self.manager.requests if not d.called]:
            d.errback(ConnectionDone())
        self.events.clear()
        self.link._checkpoint(self.partner, self.link.xmlstream)
        self.pendingQuery().errback(ConnectionDone())
        levels = [(e["log_level"], e["log_format"]) for e in self.events]
        self.assertEqual(
            levels,
            [(LogLevel.info, "Archive checkpoint of {partner} {node} abandoned: disconnected")],
        )

    def test_otherCheckpointFailure(self) -> None:
        """
        Any other failure of a checkpoint is logged as a failure, with its traceback.
        """
        for d in [d for _, d in self.manager.requests if not d.called]:
            d.errback(ConnectionDone())
        self.events.clear()
        self.link._checkpoint(self.partner, self.link.xmlstream)
        self.pendingQuery().errback(ValueError("bad answer"))
        [event] = self.events
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertEqual(event["log_format"], "Archive checkpoint failed")
        self.assertTrue(event["log_failure"].check(ValueError))


class CatchUpPagesTests(SynchronousTestCase):
    """
    Catching up from a partner's archive in pages.
    """

    def setUp(self) -> None:
        self.engine = replica(self, Clock())
        [self.partner] = self.engine.partners
        self.successResultOf(
            self.engine.store.updatePartner(PARTNER, "/docs/all", "a0", {}, None, None)
        )
        #: What the engine was handed, and the Deferreds that say it applied them.
        self.handed: list[tuple[list[Received], Deferred[None]]] = []

        def receive(items: list[Received], mark: object = None) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            self.handed.append((list(items), d))
            return d

        self.engine.receive = receive  # type: ignore[method-assign]
        self.manager = AnsweringStreamManager()
        self.link = PartnerLink(self.engine, pageSize=3)
        self.manager.addHandler(self.link)
        for _, d in self.manager.requests:
            # The subscription at connection (not these tests'): retried after a delay that
            # the tests' clock never reaches.
            d.errback(StanzaError("service-unavailable"))

    def answerQuery(self, after: str, page: domish.Element) -> None:
        """
        Answer the one pending archive query, which must ask for the page after C{after}.
        """
        answerArchiveQuery(self, self.manager, after, page)

    def test_nextPageAskedWhileApplying(self) -> None:
        """
        The next page is asked for as soon as a page arrives, and handed to the engine while
        it still applies the one before (the engine overlaps saving one with applying the
        next); at most two pages are with the engine: a third waits until the first is
        applied. The engine gets the pages in order, and no query is left after the
        complete page.
        """
        done = Deferred.fromCoroutine(self.link.catchUpArchive(self.partner))
        self.answerQuery("a0", archivePage(range(1, 4), complete=False))
        [(first, applied)] = self.handed
        self.assertEqual([r.archiveId for r in first], ["a1", "a2", "a3"])
        self.answerQuery("a3", archivePage(range(4, 7), complete=False))
        self.assertEqual([r.itemId for r in self.handed[1][0]], ["o4", "o5", "o6"])
        self.answerQuery("a6", archivePage(range(7, 8), complete=True))
        self.assertEqual(len(self.handed), 2)  # page 3 waits for page 1
        applied.callback(None)
        self.assertEqual([r.itemId for r in self.handed[2][0]], ["o7"])
        self.handed[1][1].callback(None)
        self.assertNoResult(done)
        self.handed[2][1].callback(None)
        self.assertEqual(self.successResultOf(done), 7)
        self.assertEqual(self.manager.pending(NS_MAM), [])

    def test_progressLogged(self) -> None:
        """
        A catch-up logs how far it is every L{PROGRESS_INTERVAL} seconds, with its rate, and
        ends with the count, the time and the rate.
        """
        from hermod_component.replication.xmpp import PROGRESS_INTERVAL

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = self.engine.clock
        done = Deferred.fromCoroutine(self.link.catchUpArchive(self.partner))
        clock.advance(PROGRESS_INTERVAL / 2)  # type: ignore[attr-defined]
        self.answerQuery("a0", archivePage(range(1, 4), complete=False))
        clock.advance(PROGRESS_INTERVAL / 2)  # type: ignore[attr-defined]
        self.answerQuery("a3", archivePage(range(4, 7), complete=False))
        self.handed[0][1].callback(None)
        self.answerQuery("a6", archivePage(range(7, 8), complete=True))
        for _, applied in self.handed[1:]:
            applied.callback(None)
        self.assertEqual(self.successResultOf(done), 7)
        lines = [
            formatEvent(e) for e in events
            if "from its archive" in str(e.get("log_format", ""))
        ]
        self.assertEqual(lines, [
            f"Catching up on {PARTNER} /docs/all from its archive: 6 items so far (1/s)",
            (f"Caught up on {PARTNER} /docs/all from its archive: 7 items in 10.0 s "
             "(1/s, archive pages)"),
        ])

    def test_failedPageEndsCatchUpAtOnce(self) -> None:
        """
        When a page handed to the engine fails while the next one is awaited, the catch-up
        fails with that error at once, and the page that arrives afterwards is not handed to
        the engine.
        """
        done = Deferred.fromCoroutine(self.link.catchUpArchive(self.partner))
        self.answerQuery("a0", archivePage(range(1, 4), complete=False))
        self.answerQuery("a3", archivePage(range(4, 7), complete=False))
        self.assertEqual(len(self.handed), 2)
        self.handed[0][1].errback(ValueError("disk full"))
        self.failureResultOf(done, ValueError)
        self.handed[1][1].errback(ValueError("disk full"))  # failed with it, and dropped
        self.answerQuery("a6", archivePage(range(7, 10), complete=False))
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(ValueError), [])
        self.assertEqual(len(self.handed), 2)
        self.assertEqual(self.manager.pending(NS_MAM), [])

    def test_removedPartnerNotPagedFurther(self) -> None:
        """
        A partner subscription removed during its catch-up (its contact went) gets no
        further page query; the page that came is still applied.
        """
        done = Deferred.fromCoroutine(self.link.catchUpArchive(self.partner))
        self.engine.removePartner(self.partner)
        self.answerQuery("a0", archivePage(range(1, 4), complete=False))
        self.assertEqual(self.manager.pending(NS_MAM), [])
        self.handed[0][1].callback(None)
        self.assertEqual(self.successResultOf(done), 3)

    def test_unfollowWhileDisconnected(self) -> None:
        """
        A partner subscription removed while the stream is down is unsubscribed from at the
        next connection, and not subscribed to again.
        """
        self.engine.removePartner(self.partner)
        stream = self.link.xmlstream
        self.link.connectionLost(None)
        self.link.unfollow(self.partner)
        before = len(self.manager.requests)
        self.link.makeConnection(stream)
        self.link.connectionInitialized()
        sent = [
            (request["to"], child.name, child["node"])
            for request, _ in self.manager.requests[before:]
            for pubsub in request.elements(NS_PUBSUB, "pubsub")
            for child in pubsub.elements()
        ]
        self.assertEqual(sent, [(PARTNER, "unsubscribe", "/docs/all")])

    def test_applyFailsWithNextPageAsked(self) -> None:
        """
        When applying a page fails, the catch-up fails with that error; the next page's
        query, asked for meanwhile, is abandoned: neither its answer nor its failure reaches
        the engine or the log as an unhandled error.
        """
        done = Deferred.fromCoroutine(self.link.catchUpArchive(self.partner))
        self.answerQuery("a0", archivePage(range(1, 4), complete=False))
        self.handed[0][1].errback(ValueError("disk full"))
        self.failureResultOf(done, ValueError)
        [(_, d)] = self.manager.pending(NS_MAM)
        d.errback(ConnectionDone())
        del d
        gc.collect()  # an unhandled failure would be logged now, failing the test
        self.assertEqual(self.flushLoggedErrors(ConnectionDone), [])
        self.assertEqual(len(self.handed), 1)


class LiveFailureTests(SynchronousTestCase):
    """
    Live items that fail to apply as a whole are fetched again from the saved mark, which no
    checkpoint moves past them meanwhile.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.engine = replica(self, self.clock)
        self.policy = self.engine.policy
        self.path = self.engine.backends["docs"].path  # type: ignore[attr-defined]
        [self.partner] = self.engine.partners
        self.successResultOf(
            self.engine.store.updatePartner(PARTNER, "/docs/all", "a0", {}, None, None)
        )
        self.manager = AnsweringStreamManager()
        self.link = PartnerLink(self.engine)
        self.manager.addHandler(self.link)
        [(_, d)] = self.manager.requests  # the subscription
        d.callback(domish.Element((None, "iq")))
        self.answerMAM("a0", pageOf([], complete=True))  # caught up at start

    def answerMAM(self, after: str | None, page: domish.Element) -> None:
        """
        Answer the one pending archive query, which must ask for the page after C{after}
        (L{None}: the newest id).
        """
        answerArchiveQuery(self, self.manager, after, page)

    def mark(self) -> str | None:
        self.successResultOf(self.engine.flush())
        return self.successResultOf(self.engine.store.getPartner(PARTNER, "/docs/all")).mark

    def test_failedLiveItemsFetchedAgain(self) -> None:
        """
        The storage fails while live items are applied: a checkpoint meanwhile leaves the
        mark where it was, the link catches up from it once the retry delay has passed, the
        items are applied, and checkpoints move the mark again.
        """
        payload = remoteItem("x", b"<x/>", "1:5:pubsub.a.example", "pubsub.a.example")
        storage = FailingCall(self.policy, "publish")
        [message] = parseStanzas(
            f"<message from='{PARTNER}' to='{JID}'>"
            "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='/docs/all'>"
            f"<item id='x'>{payload.decode()}</item></items></event></message>"
        )
        self.link._onEvent(message)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.link._checkpoint(self.partner, self.link.xmlstream)
        self.answerMAM(None, pageOf([("a9", "x", payload)], complete=False))
        self.assertEqual(self.mark(), "a0")
        storage.failing = False
        self.clock.advance(self.link.retryDelay)
        self.answerMAM("a0", pageOf([("a1", "x", payload)], complete=True))
        with open(os.path.join(self.path, "x.xml"), "rb") as f:
            self.assertEqual(f.read(), b"<x/>")
        self.assertEqual(self.mark(), "a1")
        self.link._checkpoint(self.partner, self.link.xmlstream)
        self.answerMAM(None, pageOf([("a9", "x", payload)], complete=False))
        self.assertEqual(self.mark(), "a9")
