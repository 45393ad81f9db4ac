"""
Tests for L{hermod_component.tap}: the twistd options and the service tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from hermod_component.tap import Options, StartAfterStorage, makeService

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
        If storage did not start, the child is not started, the failure callback runs and that
        is logged as an error.
        """
        self.gate.startService()
        with capturedLogs() as events:
            self.started.callback(False)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error])
        self.assertIn("Storage did not start", formatEvent(events[0]))
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

    def makeTree(self, text: str = CONFIG, verbose: bool = False) -> Any:
        """
        Parse options for C{text} and build the service tree, checking that nothing connected.
        """
        from twisted.internet import reactor

        options = Options()
        options.parseOptions(["-c", writeConfig(self, text)] + (["-v"] if verbose else []))
        before = list(reactor.getDelayedCalls())
        root = makeService(options)
        self.assertEqual(list(reactor.getDelayedCalls()), before)
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

    def test_treeWithSeveralConnections(self) -> None:
        """
        With C{connections = 3} the component is a pool of three connections, each with its
        own pubsub handler, sharing one notifier over three streams.
        """
        from hermod_component.xmpp.handler import HermodPubSubService
        from hermod_component.xmpp.pool import ComponentPool

        root = self.makeTree(CONFIG.replace("[storage]", "connections = 3\n\n[storage]"))
        component = root.getServiceNamed("xmpp").getServiceNamed("component")
        self.assertIsInstance(component, ComponentPool)
        self.assertEqual([c.name for c in component],
                         ["connection-1", "connection-2", "connection-3"])
        services = [h for h in root.handlers if isinstance(h, HermodPubSubService)]
        self.assertEqual(len(services), 3)
        self.assertEqual(
            {id(h.parent) for h in services},
            {id(c.streamManager) for c in component.connections},
        )
        self.assertEqual(len(root.policy.notifier.streams.outlets), 3)

    def test_archiveTrimTimer(self) -> None:
        """
        The tree holds a timer applying archive retention every C{archive_trim_interval}
        seconds (300 when not set), started with the component behind the storage gate.
        """
        from twisted.application.internet import TimerService

        default = self.makeTree().getServiceNamed("xmpp").getServiceNamed("archive-trim")
        self.assertIsInstance(default, TimerService)
        self.assertEqual(default.step, 300.0)
        root = self.makeTree(CONFIG + "[pubsub]\narchive_trim_interval = 42\n")
        trim = root.getServiceNamed("xmpp").getServiceNamed("archive-trim")
        self.assertEqual(trim.step, 42.0)
        self.assertEqual(trim.call[1], (root.policy,))

    def test_noPostgreSQLImport(self) -> None:
        """
        Building a tree for the memory engine does not import psycopg2's storage engine.
        """
        name = "hermod_component.storage.postgresql"
        saved = sys.modules.pop(name, None)
        if saved is not None:
            self.addCleanup(sys.modules.__setitem__, name, saved)
        self.makeTree()
        self.assertNotIn("hermod_component.storage.postgresql", sys.modules)

    def test_verbose(self) -> None:
        """
        C{-v} turns on stanza logging in the component connection.
        """
        root = self.makeTree(verbose=True)
        component = root.getServiceNamed("xmpp").getServiceNamed("component")
        self.assertTrue(component.verbose)


class TwistdTests(SynchronousTestCase):
    """
    C{twistd -n hermod} run for real, as a child process, from the source tree.
    """

    def twistd(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """
        Start C{twistd ARGS} with this Python, with the source tree first on the path, its output
        going to C{self.output}.
        """
        self.output = os.path.abspath(self.mktemp())
        with open(self.output, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args],
                cwd=SOURCE,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **kwargs,
            )
        self.addCleanup(self.reap, process)
        return process

    def reap(self, process: subprocess.Popen[bytes]) -> None:
        """
        Kill C{process} (by PID, through Popen) if it still runs, and wait for it.
        """
        if process.poll() is None:
            process.kill()
        process.wait(10)

    def read(self) -> str:
        """
        What twistd has written so far.
        """
        with open(self.output, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def test_badConfigExits(self) -> None:
        """
        With a bad configuration twistd exits with status 1 and its last line names the file and
        the key; nothing is started.
        """
        path = writeConfig(self, CONFIG + '[pubsub]\nauto_create = "yes"\n')
        process = self.twistd("--pidfile=", "-n", "hermod", "-c", path)
        self.assertEqual(process.wait(60), 1)
        lastLine = self.read().strip().splitlines()[-1]
        self.assertTrue(
            lastLine.endswith(f'{path}: pubsub.auto_create: expected a boolean, got "yes"')
        )
        self.assertNotIn("Connecting", self.read())

    def test_storageFailureExits(self) -> None:
        """
        When storage cannot start (PostgreSQL unreachable), twistd exits with status 1 after
        logging why, so a supervisor restarts it; it never connects to the XMPP server.
        """
        path = writeConfig(
            self,
            CONFIG.replace(
                'engine = "memory"',
                'engine = "postgresql"\n'
                'dsn = "host=127.0.0.1 port=1 dbname=none connect_timeout=2"',
            ),
        )
        process = self.twistd("--pidfile=", "-n", "hermod", "-c", path)
        self.assertEqual(process.wait(60), 1, self.read())
        self.assertIn("Storage did not start", self.read())
        self.assertNotIn("Connecting", self.read())

    def test_connectsToProsody(self) -> None:
        """
        Against a real Prosody, twistd starts Hermod, which authenticates as the component and
        stops cleanly on SIGTERM.
        """
        from tests.servers.prosody import ProsodyServer

        prosody = ProsodyServer("pubsub.localhost", "s3cret")
        prosody.start()
        self.addCleanup(prosody.stop)
        path = writeConfig(
            self,
            CONFIG.replace("pubsub.example.org", "pubsub.localhost").replace(
                "port=1", f"port={prosody.componentPort}"
            ),
        )
        process = self.twistd("--pidfile=", "-n", "hermod", "-c", path)
        deadline = time.monotonic() + 30
        while "Authenticated to" not in self.read():
            if time.monotonic() > deadline or process.poll() is not None:
                self.fail(f"Hermod did not authenticate:\n{self.read()}")
            time.sleep(0.1)
        self.assertIn("as component pubsub.localhost", self.read())
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        self.assertIn("Disconnected from", self.read())
        self.assertIn("Server Shut Down.", self.read())


class ArchiveTrimPassTests(SynchronousTestCase):
    """
    Tests for one pass of the archive retention timer.
    """

    def test_passTrimsAndLogs(self) -> None:
        """
        A pass applies every node's retention and logs how many events it removed.
        """
        from twisted.internet.task import Clock

        from hermod_component.config import PubSubSettings
        from hermod_component.policy import PubSubPolicy
        from hermod_component.storage.memory import MemoryStorage
        from hermod_component.tap import _trimArchives

        storage = MemoryStorage()
        policy = PubSubPolicy(storage, PubSubSettings(), "pubsub.example.org", Clock())
        owner = "owner@example.org"
        self.successResultOf(Deferred.fromCoroutine(
            policy.createNode(owner, "n", {"hermod#archive_max_events": ["2"]})
        ))
        for n in range(5):
            self.successResultOf(Deferred.fromCoroutine(
                policy.publish(owner, "n", [(f"i{n}", b"<p/>")], None)
            ))
        with capturedLogs() as events:
            self.successResultOf(_trimArchives(policy))
        self.assertEqual(len(self.successResultOf(storage.getEvents("n"))), 2)
        self.assertIn("Trimmed 3 events from node archives", [formatEvent(e) for e in events])
        with capturedLogs() as events:
            self.successResultOf(_trimArchives(policy))
        self.assertEqual([formatEvent(e) for e in events], [])

    def test_failedPassLoggedAndNextRuns(self) -> None:
        """
        A pass that fails is logged and does not stop the timer: the next pass runs.
        """
        from twisted.application.internet import TimerService
        from twisted.internet.task import Clock

        from hermod_component.tap import _trimArchives

        class Failing:
            calls = 0

            async def trimArchives(self) -> int:
                self.calls += 1
                raise RuntimeError("storage went away")

        policy = Failing()
        clock = Clock()
        timer = TimerService(10.0, _trimArchives, policy)
        timer.clock = clock
        timer.startService()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        clock.advance(10)
        self.assertEqual(policy.calls, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(timer.running)
        timer.stopService()
