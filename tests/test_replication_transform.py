"""
Tests for per-partner XSLT transforms: applied before the backend's C{apply()}, and denied file
and network access.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.config import PartnerSettings
from hermod_component.replication.engine import Received, ReplicationEngine
from tests.test_replication_engine import NODE, Network, Replica, remoteItem

#: Copies the item, renaming every C{old} element (no namespace) to C{new}.
RENAME = b"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>
  <xsl:template match="old">
    <new><xsl:apply-templates select="@*|node()"/></new>
  </xsl:template>
</xsl:stylesheet>
"""

#: Tries to read a local file into the item.
READS_FILE = b"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <xsl:copy-of select="document('file:///etc/passwd')"/>
  </xsl:template>
</xsl:stylesheet>
"""


class TransformTests(SynchronousTestCase):
    """
    A partner subscription with a C{transform} stylesheet.
    """

    def replicaWith(self, stylesheet: bytes) -> Replica:
        """
        A started replica following C{a.example} as a publisher through C{stylesheet}.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        replica = Replica(Network(), "b.example", clock, [("a.example", "publisher")])
        fd, path = tempfile.mkstemp(suffix=".xsl")
        with os.fdopen(fd, "wb") as f:
            f.write(stylesheet)
        self.addCleanup(os.unlink, path)
        replica.partners = [PartnerSettings("a.example", NODE, "docs", transform=path)]
        replica.engine = ReplicationEngine(
            replica.policy, replica.store, {"docs": replica.backend}, replica.partners, clock
        )
        replica.start(self)
        return replica

    def test_renameAppliedBeforeApply(self) -> None:
        """
        The stylesheet's output is what the backend writes and what is republished, with a
        hash of its own; the partner's item is still checked as sent.
        """
        b = self.replicaWith(RENAME)
        payload = remoteItem("x", b'<old n="1"><keep/></old>', "1:5:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(b.partners[0], "x", payload)]))
        self.assertEqual(b.read("x"), b'<new n="1"><keep/></new>')
        self.assertEqual(self.successResultOf(b.store.listParked(None)), [])
        [item] = self.successResultOf(b.storage.getItems(NODE))
        self.assertIn(b'<new xmlns="" n="1"><keep/></new>', item.payload)
        counts = b.engine.counters[("a.example", NODE)]
        self.assertEqual((counts["received"], counts["applied"]), (1, 1))

    def test_tamperedItemStillRefusedWithTransform(self) -> None:
        """
        An item whose content does not match the partner's hash is parked even though the
        transform would produce a consistent document.
        """
        b = self.replicaWith(RENAME)
        payload = remoteItem("x", b"<old/>", "1:5:a.example", "a.example")
        tampered = payload.replace(b"<old", b'<old extra="1"', 1)
        self.assertNotEqual(tampered, payload)
        self.successResultOf(b.engine.receive([Received(b.partners[0], "x", tampered)]))
        self.assertIsNone(b.read("x"))
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertIn("does not match its hash", parked.reason)

    def test_fileAccessDenied(self) -> None:
        """
        A stylesheet reading C{file:///etc/passwd} fails on the item, which is parked with the
        transform's failure as its reason and written nowhere.
        """
        b = self.replicaWith(READS_FILE)
        payload = remoteItem("x", b"<doc/>", "1:5:a.example", "a.example")
        self.successResultOf(b.engine.receive([Received(b.partners[0], "x", payload)]))
        self.assertIsNone(b.read("x"))
        [parked] = self.successResultOf(b.store.listParked(None))
        self.assertEqual((parked.objectId, parked.waitingFor), ("x", ""))
        self.assertIn("broken: transform", parked.reason)
        self.assertIn("failed", parked.reason)
        self.assertIn("read rights for file:///etc/passwd denied", parked.reason)
        self.assertEqual(b.engine.counters[("a.example", NODE)]["parked"], 1)
