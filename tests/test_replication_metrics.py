"""
Tests for the replication figures on Hermod's Prometheus registry.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hermod_component import metrics
from hermod_component.replication.engine import Received
from tests.test_replication_engine import NODE, Network, Replica, remoteItem


def sample(name: str, labels: dict[str, str]) -> float:
    """
    The current value of one sample of L{metrics.REGISTRY}, 0 when it is not there yet.
    """
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class ReplicationMetricsTests(SynchronousTestCase):
    """
    The engine counts partner items by outcome and sets the lag, per partner and node.
    """

    def test_countsAndLag(self) -> None:
        """
        One applied, one parked (broken) and one refused item (from a read-only partner) move
        their partner's counters by exactly that; the lag is the time since the change.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        network = Network()
        b = Replica(network, "metrics-b.example", clock,
                    [("metrics-a.example", "publisher"), ("metrics-r.example", "member")])
        b.start(self)
        writer, reader = b.partners

        def value(partner: str, outcome: str) -> float:
            return sample("hermod_replication_items_total",
                          {"partner": partner, "node": NODE, "outcome": outcome})

        outcomes = ("received", "applied", "refused", "parked")
        before = {(p, o): value(p, o)
                  for p in ("metrics-a.example", "metrics-r.example") for o in outcomes}
        clock.advance(3)
        good = remoteItem("x", b"<x/>", "1:5:metrics-a.example", "metrics-a.example")
        # remoteItem stamps the change at t=1; the lag is measured against the clock.
        self.successResultOf(b.engine.receive([
            Received(writer, "x", good),
            Received(writer, "bad", b'<entry xmlns="http://www.w3.org/2005/Atom"/>'),
            Received(reader, "x", good),
        ]))
        delta = {key: value(*key) - was for key, was in before.items()}
        self.assertEqual(
            [delta[("metrics-a.example", o)] for o in outcomes], [2.0, 1.0, 0.0, 1.0]
        )
        self.assertEqual(
            [delta[("metrics-r.example", o)] for o in outcomes], [1.0, 0.0, 1.0, 0.0]
        )
        self.assertEqual(
            sample("hermod_replication_lag_seconds",
                   {"partner": "metrics-a.example", "node": NODE}),
            clock.seconds() - 1.0,
        )
