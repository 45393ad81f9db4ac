"""
Prometheus metrics: what an operator watches on a firehose.

The counters live in one registry of Hermod's own (not the process-global default), so tests and
several services in one process never clash. The XMPP edge counts what crosses it
(notifications, bytes, error answers, published items); storage latency comes from
L{TimedStorage}; gauges that are cheaper to read than to keep (write buffer, subscriptions per
node) are read at scrape time by L{HermodCollector}. The policy itself stays free of metrics.

C{[metrics] port} serves them at C{/metrics} over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

PUBLISHED_ITEMS = Counter(
    "hermod_published_items", "Items accepted by publish requests.", registry=REGISTRY
)
NOTIFICATIONS = Counter(
    "hermod_notifications",
    "Notification messages written to the XMPP server, by kind.",
    ["kind"],
    registry=REGISTRY,
)
NOTIFICATION_BYTES = Counter(
    "hermod_notification_bytes", "Bytes of notification messages written.", registry=REGISTRY
)
MULTICAST_MESSAGES = Counter(
    "hermod_multicast_messages",
    "XEP-0033 multicast messages written, each for several subscribers (counted in "
    "hermod_notifications too).",
    registry=REGISTRY,
)
ERRORS = Counter(
    "hermod_error_responses",
    "Requests answered with an error, by stanza error condition.",
    ["condition"],
    registry=REGISTRY,
)
STORAGE_SECONDS = Histogram(
    "hermod_storage_seconds",
    "Time storage took per call, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)

REPLICATION_ITEMS = Counter(
    "hermod_replication_items",
    "Items from partner nodes, by partner JID, node and outcome (received, applied, refused, "
    "parked, ignored).",
    ["partner", "node", "outcome"],
    registry=REGISTRY,
)
REPLICATION_LAG = Gauge(
    "hermod_replication_lag_seconds",
    "Seconds between a partner's change and its application here, for the latest applied.",
    ["partner", "node"],
    registry=REGISTRY,
)


class HermodCollector(Collector):
    """
    Gauges read at scrape time from the running service.

    @ivar component: The component service (for its L{ReadThrottle}), or the pool of its
        connections, once set.
    @ivar policy: The L{PubSubPolicy}, once set.
    @ivar notifier: The notifier (for the notifications written per connection), once set.
    """

    def __init__(self) -> None:
        self.component: Any = None
        self.policy: Any = None
        self.notifier: Any = None

    def collect(self) -> Iterator[Metric]:
        component = self.component
        # A ComponentPool lists its connections; a single ComponentService is the connection
        # (its own C{connections} is the configured count).
        pooled = getattr(component, "connections", None)
        if isinstance(pooled, list):
            connections = list(pooled)
        else:
            connections = [component] if component is not None else []
        throttles = [c.throttle for c in connections if getattr(c, "throttle", None)]
        pending = GaugeMetricFamily(
            "hermod_write_buffer_bytes",
            "Notification bytes written and not yet taken by the XMPP server (all connections).",
        )
        paused = GaugeMetricFamily(
            "hermod_reading_paused", "1 while Hermod reads no requests because of backpressure."
        )
        pauses = CounterMetricFamily(
            "hermod_backpressure_pauses",
            "Times reading was paused by backpressure (all connections).",
        )
        pending.add_metric([], sum(t.pendingBytes() for t in throttles))
        paused.add_metric([], 1 if any(not t.reading or t.paused for t in throttles) else 0)
        pauses.add_metric([], sum(t.pauses for t in throttles))
        yield pending
        yield paused
        yield pauses
        connected = GaugeMetricFamily(
            "hermod_connected", "1 while a component stream is authenticated."
        )
        connected.add_metric([], 1 if getattr(component, "authenticated", False) else 0)
        yield connected
        yield from self._perConnection(connections)
        yield from self._nodes()

    def _perConnection(self, connections: list[Any]) -> Iterator[Metric]:
        """
        The per-connection families, labelled C{connection="1"} and up.
        """
        up = GaugeMetricFamily(
            "hermod_connection_up", "1 while this component stream is authenticated.",
            labels=["connection"],
        )
        buffered = GaugeMetricFamily(
            "hermod_connection_write_buffer_bytes",
            "Bytes written to this stream and not yet taken by the server.",
            labels=["connection"],
        )
        pauses = CounterMetricFamily(
            "hermod_connection_backpressure_pauses",
            "Times this stream went above the write buffer mark.",
            labels=["connection"],
        )
        eligible = GaugeMetricFamily(
            "hermod_connection_routing",
            "1 while notifications are routed to this stream.",
            labels=["connection"],
        )
        sent = CounterMetricFamily(
            "hermod_connection_notifications",
            "Notification messages written to this stream.",
            labels=["connection"],
        )
        sentBytes = CounterMetricFamily(
            "hermod_connection_notification_bytes",
            "Bytes of notification messages written to this stream.",
            labels=["connection"],
        )
        for index, connection in enumerate(connections):
            label = [str(index + 1)]
            throttle = getattr(connection, "throttle", None)
            up.add_metric(label, 1 if getattr(connection, "authenticated", False) else 0)
            buffered.add_metric(label, throttle.pendingBytes() if throttle else 0)
            pauses.add_metric(label, throttle.pauses if throttle else 0)
        streams = getattr(self.notifier, "streams", None)
        for outlet in getattr(streams, "outlets", []):
            label = [str(outlet.index + 1)]
            eligible.add_metric(label, 1 if outlet.eligible else 0)
            sent.add_metric(label, outlet.notifications)
            sentBytes.add_metric(label, outlet.bytes)
        yield up
        yield buffered
        yield pauses
        yield eligible
        yield sent
        yield sentBytes

    def _nodes(self) -> Iterator[Metric]:
        """
        Subscriptions per cached node.
        """
        if self.policy is not None:
            subscribers = GaugeMetricFamily(
                "hermod_node_subscriptions",
                "Active subscriptions per node (nodes in memory).",
                labels=["node"],
            )
            for node, count in self.policy.subscriptionCounts():
                subscribers.add_metric([node], count)
            yield subscribers


COLLECTOR = HermodCollector()
REGISTRY.register(COLLECTOR)


class TimedStorage:
    """
    An L{IStorage} proxy that records each call's time in L{STORAGE_SECONDS}.

    It forwards any attribute, so it proxies every storage method without listing them.

    Every method of the wrapped storage returns a Deferred; the time is taken when it fires.
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._storage, name)
        if not callable(method) or name.startswith("_"):
            return method
        timed = _timed(method, STORAGE_SECONDS.labels(name).observe)
        setattr(self, name, timed)  # looked up once per method
        return timed


def _timed(method: Callable[..., Any], observe: Callable[[float], None]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = method(*args, **kwargs)

        def done(value: Any) -> Any:
            observe(time.perf_counter() - started)
            return value

        if hasattr(result, "addBoth"):
            result.addBoth(done)
        return result

    return timed


def makeMetricsService(port: int, interface: str, reactor: Any) -> Any:
    """
    The HTTP service serving C{/metrics} from L{REGISTRY}.
    """
    from prometheus_client.twisted import MetricsResource
    from twisted.application.internet import TCPServer
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=REGISTRY))
    site = Site(root)
    site.noisy = False
    return TCPServer(port, site, interface=interface, reactor=reactor)
