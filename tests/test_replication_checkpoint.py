"""
Tests for the partner link's archive checkpoints, on a stub stream whose IQ requests the tests
answer.
"""

from __future__ import annotations

import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from hermod_component.backends.spool import SpoolBackend
from hermod_component.config import PartnerSettings, PubSubSettings
from hermod_component.policy import PubSubPolicy
from hermod_component.replication.engine import ReplicationEngine
from hermod_component.replication.store import MemoryReplicationStore
from hermod_component.replication.xmpp import NS_DISCO_INFO, NS_MAM, PartnerLink
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import AnsweringStreamManager, RecordingNotifier

JID = "pubsub.b.example"
PARTNER = "pubsub.a.example"


class CheckpointTests(SynchronousTestCase):
    """
    The periodic query for the partner archive's newest id.
    """

    def setUp(self) -> None:
        clock = Clock()
        clock.advance(1_700_000_000)
        policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), JID, clock)
        policy.notifier = RecordingNotifier()  # type: ignore[assignment]
        backend = SpoolBackend("docs", tempfile.mkdtemp(), "/docs/all")
        self.successResultOf(backend.start())
        self.partner = PartnerSettings(PARTNER, "/docs/all", "docs")
        engine = ReplicationEngine(
            policy, MemoryReplicationStore(), {"docs": backend}, [self.partner], clock
        )
        self.successResultOf(Deferred.fromCoroutine(engine.prepare()))
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
