"""
Tests for L{hermod_component.metrics}.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hermod_component import metrics
from hermod_component.config import PubSubSettings
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import RecordingNotifier


def sample(name: str, **labels: str) -> float:
    """
    The current value of one sample of L{metrics.REGISTRY}, 0 when absent.
    """
    value = metrics.REGISTRY.get_sample_value(name, labels or None)
    return value or 0.0


class TimedStorageTests(SynchronousTestCase):
    """
    Storage latency is recorded per method.
    """

    def test_recordsCalls(self) -> None:
        """
        Each call through the proxy adds one observation for its method and passes the result
        through.
        """
        before = sample("hermod_storage_seconds_count", method="listNodes")
        storage = metrics.TimedStorage(MemoryStorage())
        self.assertEqual(self.successResultOf(storage.listNodes()), [])
        self.assertEqual(sample("hermod_storage_seconds_count", method="listNodes"), before + 1)


class CollectorTests(SynchronousTestCase):
    """
    Gauges read at scrape time.
    """

    def tearDown(self) -> None:
        metrics.COLLECTOR.policy = None
        metrics.COLLECTOR.component = None

    def test_subscriptionsPerNode(self) -> None:
        """
        The scrape shows each cached node's active subscriptions.
        """
        policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), "pubsub.example.org", Clock())
        policy.notifier = RecordingNotifier()
        self.successResultOf(defer.Deferred.fromCoroutine(
            policy.createNode("o@example.org", "n", None)))
        self.successResultOf(defer.Deferred.fromCoroutine(
            policy.subscribe("a@example.org/r", "n", "a@example.org/r", None)))
        metrics.COLLECTOR.policy = policy
        self.assertEqual(sample("hermod_node_subscriptions", node="n"), 1.0)
        self.assertEqual(sample("hermod_connected"), 0.0)
        self.assertIn(b"hermod_write_buffer_bytes", generate_latest(metrics.REGISTRY))


    def test_singleConnection(self) -> None:
        """
        With one connection the component is a L{ComponentService}, whose own C{connections}
        is the configured count, not a list: the scrape still works and shows that
        connection.
        """
        from hermod_component.config import ComponentSettings
        from hermod_component.xmpp.component import makeComponentService

        component = makeComponentService(
            ComponentSettings("pubsub.example.org", "secret"), Clock()
        )
        metrics.COLLECTOR.component = component
        self.assertIn(b"hermod_connection_up", generate_latest(metrics.REGISTRY))
        self.assertEqual(
            metrics.REGISTRY.get_sample_value("hermod_connection_up", {"connection": "1"}), 0.0
        )


class EndpointTests(TestCase):
    """
    The HTTP endpoint serves the registry.
    """

    async def test_serves(self) -> None:
        """
        GET /metrics over real HTTP returns the text format with Hermod's metrics.
        """
        from twisted.internet import reactor
        from twisted.web.client import Agent, readBody

        await metrics.TimedStorage(MemoryStorage()).listNodes()
        service = metrics.makeMetricsService(0, "127.0.0.1", reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = service._port.getHost().port
        response = await Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{port}/metrics".encode()
        )
        body = await readBody(response)
        self.assertEqual(response.code, 200)
        self.assertIn(b"hermod_notifications_total", body)
        self.assertIn(b"hermod_storage_seconds_bucket", body)
