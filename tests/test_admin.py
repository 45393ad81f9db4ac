"""
Tests for the operator's command line, on a SQLite database that a Hermod would use.
"""

from __future__ import annotations

import io
import os
import tempfile

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from hermod_component.admin import run
from hermod_component.model import VersionRecord
from hermod_component.replication.store import SQLReplicationStore
from hermod_component.storage.sqlite import SQLiteStorage


class AdminTests(TestCase):
    """
    C{python -m hermod_component.admin} reads replication state from Hermod's storage.
    """

    def writeConfig(self) -> str:
        """
        A configuration file naming a SQLite database next to it.

        @return: The configuration file's path.
        """
        directory = tempfile.mkdtemp()
        with open(os.path.join(directory, "secret"), "w") as f:
            f.write("s\n")
        config = os.path.join(directory, "hermod.toml")
        with open(config, "w") as f:
            f.write('[component]\njid = "pubsub.a.example"\nsecret_file = "secret"\n'
                    '[storage]\nengine = "sqlite"\npath = "hermod.sqlite"\n')
        return config

    async def setUpState(self) -> str:
        """
        A configuration file and a database holding one object version and one partner.

        @return: The configuration file's path.
        """
        config = self.writeConfig()
        database = os.path.join(os.path.dirname(config), "hermod.sqlite")
        storage = SQLiteStorage(database, reactor)
        await storage.start()
        store = SQLReplicationStore(storage)
        await store.saveVersions("docs", [VersionRecord(
            "doc", "2:5:pubsub.a.example", "sha256:x", nodes=("/docs/all", "/docs/b"),
            sources=("pubsub.b.example /docs/all",),
        )])
        await store.updatePartner("pubsub.b.example", "/docs/all", None, {}, None, None)
        await storage.stop()
        return config

    async def test_objects(self) -> None:
        """
        C{objects} shows each object's version, nodes and sources, and a dash for unknown ones.
        """
        config = await self.setUpState()
        out = io.StringIO()
        status = await run(reactor, ["-c", config, "objects", "docs", "doc", "nope"], out)
        self.assertEqual(status, 0)
        self.assertEqual(out.getvalue().splitlines(), [
            "object\tversion\tdeleted\tnodes\tsources",
            "doc\t2:5:pubsub.a.example\tno\t/docs/all,/docs/b\tpubsub.b.example /docs/all",
            "nope\t-\t-\t-\t-",
        ])

    async def test_partnersBeforeAnyItem(self) -> None:
        """
        C{partners} lists a subscription recorded before any item arrived, with zero counts.
        """
        config = await self.setUpState()
        out = io.StringIO()
        self.assertEqual(await run(reactor, ["-c", config, "partners"], out), 0)
        rows = [line.split("\t") for line in out.getvalue().splitlines()[1:]]
        self.assertEqual([r[:8] for r in rows],
                         [["pubsub.b.example", "/docs/all", "-", "0", "0", "0", "0", "0"]])

    async def test_objectsNeedsArguments(self) -> None:
        """
        C{objects} without a backend and an id is a usage error.
        """
        config = await self.setUpState()
        out = io.StringIO()
        self.assertEqual(await run(reactor, ["-c", config, "objects", "docs"], out), 2)
        self.assertIn("unknown command", out.getvalue())
