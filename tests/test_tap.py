"""
Tests for L{hermod_component.tap}: the twistd options and the service tree.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.tap import Options, StartAfterStorage, makeService

CONFIG = """\
[component]
jid = "pubsub.example.org"
secret_file = "secret"
server = "tcp:host=127.0.0.1:port=1"

[storage]
engine = "memory"
"""


def writeConfig(case: SynchronousTestCase, text: str) -> str:
    """
    Write C{text} as C{hermod.toml} next to a secret file in a fresh temp dir; return its path.
    """
    directory = os.path.abspath(case.mktemp())
    os.makedirs(directory)
    with open(os.path.join(directory, "secret"), "w") as f:
        f.write("s3cret\n")
    path = os.path.join(directory, "hermod.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{Options}.
    """

    def test_defaults(self) -> None:
        """
        Without arguments the configuration is C{/etc/hermod/hermod.toml} and verbose is off.
        """
        options = Options()
        self.assertEqual(options["config"], "/etc/hermod/hermod.toml")
        self.assertFalse(options["verbose"])

    def test_loadsSettings(self) -> None:
        """
        C{-c FILE -v} loads the settings from FILE and turns verbose on.
        """
        path = writeConfig(self, CONFIG)
        options = Options()
        options.parseOptions(["-c", path, "-v"])
        self.assertEqual(options["settings"].component.jid, "pubsub.example.org")
        self.assertTrue(options["verbose"])

    def test_badConfig(self) -> None:
        """
        A bad configuration is a L{usage.UsageError} with one line naming the file and the key.
        """
        path = writeConfig(self, CONFIG.replace('"memory"', '"mysql"'))
        e = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", path])
        self.assertEqual(
            str(e),
            f'{path}: storage.engine: must be one of "sqlite", "postgresql", "memory", not "mysql"',
        )

    def test_missingConfig(self) -> None:
        """
        A missing configuration file is a L{usage.UsageError} naming it.
        """
        e = self.assertRaises(usage.UsageError, Options().parseOptions, ["-c", "/nonexistent.toml"])
        self.assertEqual(
            str(e), "/nonexistent.toml: cannot read /nonexistent.toml: No such file or directory"
        )


class StartAfterStorageTests(SynchronousTestCase):
    """
    Tests for L{StartAfterStorage}.
    """

    def setUp(self) -> None:
        """
        A gate around one child service, with a storage Deferred the test fires.
        """
        self.started: Deferred[bool] = Deferred()
        self.failures: list[str] = []
        self.gate = StartAfterStorage(lambda: self.started, lambda: self.failures.append("stop"))
        self.child = Service()
        self.child.setServiceParent(self.gate)

    def test_waitsForStorage(self) -> None:
        """
        The child starts only once storage has started.
        """
        self.gate.startService()
        self.assertFalse(self.child.running)
        self.started.callback(True)
        self.assertTrue(self.child.running)
        self.successResultOf(self.gate.stopService())
        self.assertFalse(self.child.running)

    def test_storageFailed(self) -> None:
        """
        If storage did not start, the child is not started, the failure callback runs and the
        reason is logged.
        """
        self.gate.startService()
        self.started.callback(False)
        self.assertFalse(self.child.running)
        self.assertEqual(self.failures, ["stop"])
        self.successResultOf(self.gate.stopService())

    def test_stoppedBeforeStorage(self) -> None:
        """
        Stopped before storage is ready, the child never starts.
        """
        self.gate.startService()
        self.successResultOf(self.gate.stopService())
        self.started.callback(True)
        self.assertFalse(self.child.running)
        self.assertEqual(self.failures, [])


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for L{makeService}.
    """

    def setUp(self) -> None:
        """
        Skip when the policy or the XMPP handler module has not landed yet.
        """
        try:
            import hermod_component.policy
            import hermod_component.xmpp.handler  # noqa: F401
        except ImportError as e:
            raise self.skipTest(f"makeService needs a module that is missing: {e}") from None

    def makeTree(self, text: str = CONFIG, verbose: bool = False) -> Any:
        """
        Parse options for C{text} and build the service tree, checking that nothing connected.
        """
        from twisted.internet import reactor

        options = Options()
        options.parseOptions(["-c", writeConfig(self, text)] + (["-v"] if verbose else []))
        before = list(reactor.getDelayedCalls())  # type: ignore[attr-defined]
        root = makeService(options)
        self.assertEqual(list(reactor.getDelayedCalls()), before)  # type: ignore[attr-defined]
        return root

    def test_tree(self) -> None:
        """
        The tree holds the storage service and, behind the storage gate, the component
        connection with the handlers added; the policy uses the storage and the component JID.
        """
        from hermod_component.policy import PubSubPolicy
        from hermod_component.storage import StorageService
        from hermod_component.storage.memory import MemoryStorage
        from hermod_component.xmpp.component import ComponentService

        root = self.makeTree()
        self.assertTrue(IService.providedBy(root))
        self.assertIsInstance(root, MultiService)
        self.assertEqual([s.name for s in root], ["storage", "xmpp"])
        storage = root.getServiceNamed("storage")
        self.assertIsInstance(storage, StorageService)
        self.assertIsInstance(storage.storage, MemoryStorage)
        xmpp = root.getServiceNamed("xmpp")
        self.assertIsInstance(xmpp, StartAfterStorage)
        component = xmpp.getServiceNamed("component")
        self.assertIsInstance(component, ComponentService)
        self.assertEqual(component.jid, "pubsub.example.org")
        self.assertFalse(component.running)

        policy = root.policy
        self.assertIsInstance(policy, PubSubPolicy)
        self.assertIs(policy.storage, storage.storage)
        self.assertEqual(policy.service, "pubsub.example.org")
        self.assertTrue(root.handlers)
        managed = list(component.streamManager)
        for handler in root.handlers:
            self.assertIn(handler, managed)
            self.assertIs(handler.parent, component.streamManager)
        self.assertTrue(type(policy.notifier).__module__.startswith("hermod_component.xmpp"))

    def test_noPostgreSQLImport(self) -> None:
        """
        Building a tree for the memory engine does not import psycopg2's storage engine.
        """
        sys.modules.pop("hermod_component.storage.postgresql", None)
        self.makeTree()
        self.assertNotIn("hermod_component.storage.postgresql", sys.modules)

    def test_verbose(self) -> None:
        """
        C{-v} turns on stanza logging in the component connection.
        """
        root = self.makeTree(verbose=True)
        component = root.getServiceNamed("xmpp").getServiceNamed("component")
        self.assertTrue(component.verbose)
