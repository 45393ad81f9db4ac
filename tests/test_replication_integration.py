"""
Replication end to end: three Hermod processes (C{twistd -n hermod}), each with its own SQLite
database and spool directory, as components C{pubsub-a/b/c.localhost} of one real Prosody.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lxml import etree
from twisted.trial.unittest import TestCase

from tests.servers.ejabberd import EjabberdServer
from tests.servers.hermod import HermodProcess
from tests.servers.prosody import ProsodyServer

SECRET = "replication-secret"
A, B, C = "pubsub-a.localhost", "pubsub-b.localhost", "pubsub-c.localhost"
NODE = "/docs/all"


def canonical(data: bytes) -> bytes:
    """
    The exclusive C14N form of an XML document, to compare content rather than bytes.
    """
    return bytes(etree.tostring(etree.fromstring(data), method="c14n", exclusive=True))


def waitFor(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Poll C{predicate} until it holds.

    @raise AssertionError: It did not hold within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def prosodyWithComponents() -> ProsodyServer:
    """
    A started Prosody serving the components A, B and C.
    """
    extra = "\n".join(f'Component "{jid}"\n  component_secret = "{SECRET}"' for jid in (B, C))
    server = ProsodyServer(A, SECRET, extraConfig=extra)
    server.start()
    return server


def ejabberdWithComponents() -> EjabberdServer:
    """
    A started ejabberd serving the components A, B and C.
    """
    server = EjabberdServer(A, SECRET, extraComponents=(B, C))
    server.start()
    return server


class Replica:
    """
    One Hermod process with its spool and database.
    """

    def __init__(
        self,
        jid: str,
        port: int,
        partners: Sequence[tuple[str, str]],
        backend: Sequence[str] = (),
        follows: Sequence[tuple[str, str]] = (),
        extra: Sequence[str] = (),
        contacts: Sequence[str] | None = None,
    ) -> None:
        """
        @param partners: C{(JID, role)} subscriptions to the partners' C{/docs/all}.
        @param backend: More lines for the C{[backends.docs]} table.
        @param follows: C{(JID, node)} read-write subscriptions to other partner nodes.
        @param extra: More configuration lines (such as a C{[discovery]} section).
        @param contacts: JIDs for the spool's contacts file, written before start.
        """
        self.jid = jid
        self.workdir = tempfile.mkdtemp(prefix=f"hermod-{jid.split('.')[0]}-")
        self.spool = os.path.join(self.workdir, "spool")
        os.makedirs(self.spool)
        self.database = os.path.join(self.workdir, "hermod.sqlite")
        lines = [
            "[component]", f'jid = "{jid}"', 'secret_file = "component.secret"',
            f'server = "tcp:host=127.0.0.1:port={port}"', "",
            "[storage]", 'engine = "sqlite"', 'path = "hermod.sqlite"', "",
            "[backends.docs]", 'type = "spool"', 'path = "spool"', f'node = "{NODE}"',
            "poll_interval = 0.1", *backend, "",
        ]
        for partner, role in partners:
            lines += ["[[partners]]", f'jid = "{partner}"', f'node = "{NODE}"',
                      'backend = "docs"', f'role = "{role}"', ""]
        for partner, node in follows:
            lines += ["[[partners]]", f'jid = "{partner}"', f'node = "{node}"',
                      'backend = "docs"', ""]
        lines += extra
        if contacts is not None:
            with open(os.path.join(self.spool, ".contacts.json"), "w", encoding="utf-8") as f:
                json.dump(list(contacts), f)
        self.process = HermodProcess("\n".join(lines), workdir=self.workdir, secret=SECRET)
        self.starts = 0

    def start(self) -> None:
        """
        Start and wait until replication runs.
        """
        self.process.start()
        self.starts += 1
        self.process.waitForLog("Replication started", timeout=30, count=self.starts)

    def write(self, objectId: str, data: bytes) -> None:
        """
        The application writes an object file (atomically, as a careful application does).
        """
        temporary = os.path.join(self.spool, f".{objectId}.tmp")
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, os.path.join(self.spool, objectId + ".xml"))

    def objects(self) -> dict[str, bytes]:
        """
        The spool's objects by id, in canonical form.
        """
        found = {}
        for name in os.listdir(self.spool):
            if name.endswith(".xml") and not name.startswith("."):
                with open(os.path.join(self.spool, name), "rb") as f:
                    found[name[:-4]] = canonical(f.read())
        return found

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        """
        Read Hermod's database while it runs.
        """
        connection = sqlite3.connect(self.database, timeout=10)
        try:
            return list(connection.execute(sql, args))
        finally:
            connection.close()

    def publishEvents(self) -> int:
        """
        How many publish events the replicated node has logged.
        """
        return int(self.query(
            "SELECT COUNT(*) FROM events WHERE node = ? AND action = 'publish'", NODE
        )[0][0])  # type: ignore[call-overload]

    def itemIds(self, node: str) -> list[str]:
        """
        The ids of a node's current items.
        """
        return sorted(str(r[0]) for r in self.query(
            "SELECT item_id FROM items WHERE node = ?", node
        ))

    def counter(self, partner: str, name: str) -> int:
        """
        One of the replication counters of a partner subscription.
        """
        rows = self.query(f"SELECT {name} FROM partners WHERE partner = ?", partner)
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


class ReplicaHelpers(TestCase):
    """
    Starting Hermod replicas on C{self.server} (set by the subclass's C{setUp}) and comparing
    their spools.
    """

    timeout = 300
    server: Any

    def replica(self, jid: str, partners: Sequence[tuple[str, str]], **kwargs: Any) -> Replica:
        """
        A started Hermod for C{jid} following C{partners} (JID, role); C{kwargs} go to
        L{Replica}.
        """
        ports = getattr(self.server, "componentPorts", {})
        replica = Replica(jid, ports.get(jid, self.server.componentPort), partners, **kwargs)
        self.addCleanup(shutil.rmtree, replica.workdir, True)
        self.addCleanup(replica.process.stop)
        replica.start()
        return replica

    def converged(self, replicas: Sequence[Replica], count: int) -> Callable[[], bool]:
        """
        A predicate: every replica holds the same C{count} objects.
        """

        def check() -> bool:
            contents = [r.objects() for r in replicas]
            return len(contents[0]) == count and all(c == contents[0] for c in contents)

        return check

    def followerStopped(self, count: int) -> tuple[Replica, Replica]:
        """
        A, and B following it: C{count} objects created on A reach B, B's mark reaches A's
        newest archive id, and B stops.
        """
        a = self.replica(A, [])
        b = self.replica(B, [(A, "publisher")])
        b.process.waitForLog("Subscribed to", timeout=30)
        for n in range(count):
            a.write(f"old{n}", f'<doc n="{n}"/>'.encode())
        waitFor(self.converged([a, b], count), 60, f"the first {count} objects on B")
        waitFor(lambda: b.counter(A, "applied") == count, 10, "B's counters saved")
        newest = str(a.query("SELECT MAX(id) FROM events")[0][0])
        waitFor(lambda: b.query("SELECT mark FROM partners") == [(newest,)], 15,
                "B's mark checkpointed at A's newest archive id")
        b.process.stop()
        return a, b


class ReplicationIntegrationTests(ReplicaHelpers):
    """
    The issue 5 scenarios on a real Prosody with three Hermod processes.
    """

    def setUp(self) -> None:
        self.server = prosodyWithComponents()
        self.addCleanup(self.server.stop)

    def test_ringConvergesWithoutEcho(self) -> None:
        """
        A ring A->B->C->A: changes made on A and on C reach every replica, each object is
        published once per replica (no echo), and A ignores its own changes coming back.
        """
        a = self.replica(A, [(C, "publisher")])
        b = self.replica(B, [(A, "publisher")])
        c = self.replica(C, [(B, "publisher")])
        for replica in (a, b, c):
            replica.process.waitForLog("Subscribed to", timeout=30)
        for n in range(20):
            a.write(f"a{n}", f'<doc n="{n}" from="a"/>'.encode())
        waitFor(self.converged([a, b, c], 20), 60, "A's 20 objects on B and C")
        for n in range(5):
            c.write(f"c{n}", f'<doc n="{n}" from="c"/>'.encode())
        waitFor(self.converged([a, b, c], 25), 60, "C's 5 objects on A and B")
        time.sleep(2)  # let any echo come round
        self.assertEqual([r.publishEvents() for r in (a, b, c)], [25, 25, 25])
        # Its own 20 changes came back from C and were ignored (more if a refresh at start
        # overlapped live notifications).
        self.assertGreaterEqual(a.counter(C, "ignored"), 20)
        self.assertEqual(a.counter(C, "applied"), 5)
        self.assertEqual(self.converged([a, b, c], 25)(), True)

    def test_concurrentEditsConverge(self) -> None:
        """
        One object edited on A and on C at the same moment ends the same on all three.
        """
        a = self.replica(A, [(C, "publisher")])
        b = self.replica(B, [(A, "publisher")])
        c = self.replica(C, [(B, "publisher")])
        for replica in (a, b, c):
            replica.process.waitForLog("Subscribed to", timeout=30)
        a.write("shared", b'<doc v="base"/>')
        waitFor(self.converged([a, b, c], 1), 60, "the base version everywhere")
        for round in range(5):
            a.write("shared", f'<doc v="a{round}"/>'.encode())
            c.write("shared", f'<doc v="c{round}"/>'.encode())
            time.sleep(0.05)
        try:
            waitFor(self.converged([a, b, c], 1), 60, "one winner everywhere")
        except AssertionError as e:
            states = "\n".join(
                f"{r.process.configPath}: {r.objects()} versions "
                f"{r.query('SELECT * FROM versions')}"
                for r in (a, b, c)
            )
            raise AssertionError(f"{e}\n{states}") from None
        time.sleep(2)
        self.assertTrue(self.converged([a, b, c], 1)())
        winner = a.objects()["shared"]
        self.assertIn(winner, (canonical(b'<doc v="a4"/>'), canonical(b'<doc v="c4"/>')))

    def test_offlineReplicaCatchesUp(self) -> None:
        """
        B, offline while 200 changes happen on A, catches up from A's node archive (XEP-0313)
        after its mark: it receives and applies exactly those 200, no full pull.
        """
        a, b = self.followerStopped(20)
        for n in range(200):
            a.write(f"new{n}", f'<doc n="{n}" new="yes"/>'.encode())
        waitFor(lambda: a.publishEvents() == 220, 60, "A publishing its 200 changes")
        b.start()
        waitFor(self.converged([a, b], 220), 120, "B catching up")
        waitFor(lambda: b.counter(A, "applied") == 220, 10, "B's counters saved")
        self.assertEqual(b.counter(A, "applied"), 220)
        # A advertises XEP-0313 on the node: B asked the archive after its mark, and got
        # exactly the 200 events it missed.
        # (logged once the last page is applied, just after the counters are saved)
        caught = re.compile(
            rf"Caught up on {re.escape(A)} {re.escape(NODE)} from its archive: 200 items in "
            r"[0-9.]+ s \([0-9]+/s, archive pages\)"
        )
        waitFor(lambda: caught.search(b.process.logText()) is not None, 10,
                "B's catch-up logged")
        self.assertRegex(b.process.logText(), caught)

    def test_readOnlyReplicaRefused(self) -> None:
        """
        C is a read-only replica of A (member): A refuses and counts C's changes, while C
        still receives A's.
        """
        a = self.replica(A, [(C, "member")])
        c = self.replica(C, [(A, "publisher")])
        a.process.waitForLog("Subscribed to", timeout=30)
        c.process.waitForLog("Subscribed to", timeout=30)
        a.write("mine", b'<doc from="a"/>')
        waitFor(lambda: "mine" in c.objects(), 60, "A's object on C")
        c.write("theirs", b'<doc from="c"/>')
        waitFor(lambda: a.counter(C, "refused") >= 1, 60, "A refusing C's change")
        self.assertNotIn("theirs", a.objects())
        self.assertIn("Refused theirs from read-only partner", a.process.logText())

    def test_killedSubscriberResumes(self) -> None:
        """
        B killed (SIGKILL) in the middle of a stream of 300 changes resumes with every object
        once: nothing lost, no temporary file left, one current item per object.
        """
        a = self.replica(A, [])
        b = self.replica(B, [(A, "publisher")])
        b.process.waitForLog("Subscribed to", timeout=30)
        for n in range(300):
            a.write(f"o{n}", f'<doc n="{n}"/>'.encode())
            if n == 150:
                waitFor(lambda: len(b.objects()) > 20, 30, "B applying part of the stream")
                b.process.kill()
        b.start()
        waitFor(self.converged([a, b], 300), 120, "B holding all 300 objects")
        self.assertEqual(
            [n for n in os.listdir(b.spool) if n.endswith(".tmp")], []
        )
        # B republishes what it applied into its own node right after each batch's files.
        def republished() -> list[Any]:
            return b.query(
                "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM items WHERE node = ?", NODE
            )

        try:
            waitFor(lambda: republished() == [(300, 300)], 30, "B's node holding all 300")
        except AssertionError as e:
            raise AssertionError(f"{e}: {republished()}") from None


_Base = ReplicaHelpers if TYPE_CHECKING else object


class NodeReplicationTestsMixin(_Base):  # type: ignore[valid-type,misc]
    """
    Tag nodes and moves, whitelists from the application and partner discovery, with Hermod
    processes on a real server.
    """

    def test_taggedObjectMoves(self) -> None:
        """
        An object whose tag changes on A moves from C{/docs/a} to C{/docs/b}: on A, and on B
        (which follows A's C{/docs/all}) it is gone from C{/docs/a}, present in C{/docs/b} and
        still in C{/docs/all}; C, which follows only A's C{/docs/a}, removes its copy.
        """
        tags = ['tag_field = "tag"']
        a = self.replica(A, [], backend=tags)
        b = self.replica(B, [(A, "publisher")], backend=tags)
        c = self.replica(C, [], backend=tags, follows=[(A, "/docs/a")])
        # C's subscription to A's /docs/a succeeds once the first tagged object creates it.
        a.write("doc", b'<doc tag="a" n="1"/>')
        waitFor(lambda: a.itemIds("/docs/a") == ["doc"], 30, "A publishing to /docs/a")
        c.process.waitForLog(f"Subscribed to {A} /docs/a", timeout=60)
        waitFor(lambda: "doc" in c.objects(), 60, "the object on C")
        waitFor(lambda: b.itemIds("/docs/a") == ["doc"], 60, "the object in B's /docs/a")
        a.write("doc", b'<doc tag="b" n="2"/>')
        waitFor(lambda: b.itemIds("/docs/b") == ["doc"], 60, "the object in B's /docs/b")
        waitFor(lambda: b.itemIds("/docs/a") == [], 30, "the object gone from B's /docs/a")
        self.assertEqual(b.itemIds(NODE), ["doc"])
        self.assertEqual(b.objects()["doc"], canonical(b'<doc tag="b" n="2"/>'))
        self.assertEqual((a.itemIds("/docs/a"), a.itemIds("/docs/b"), a.itemIds(NODE)),
                         ([], ["doc"], ["doc"]))
        waitFor(lambda: "doc" not in c.objects(), 30, "C removing its copy")
        self.assertEqual(c.itemIds("/docs/a"), [])
        time.sleep(1)
        self.assertEqual(c.publishEvents(), 1)  # the removal is not published as a change
        # Back in /docs/a, the object is written on C again.
        a.write("doc", b'<doc tag="a" n="3"/>')
        waitFor(lambda: "doc" in c.objects(), 60, "the object back on C")
        self.assertEqual(c.objects()["doc"], canonical(b'<doc tag="a" n="3"/>'))

    def test_whitelistFromApplication(self) -> None:
        """
        Listing B in A's whitelists file makes it a member of the whitelist node, so its
        subscription (refused before) succeeds; removing it from the file drops B's
        membership and subscription.
        """
        a = self.replica(A, [], backend=["whitelist_interval = 0.5"])
        whitelists = os.path.join(a.spool, ".whitelists.json")

        def lists(jids: list[str]) -> None:
            temporary = whitelists + ".tmp"
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump({"/docs/private": jids}, f)
            os.replace(temporary, whitelists)

        lists([])
        waitFor(lambda: a.query("SELECT identifier FROM nodes WHERE identifier = ?",
                                "/docs/private") != [], 30, "the whitelist node on A")
        b = self.replica(B, [], follows=[(A, "/docs/private")])
        b.process.waitForLog(f"Subscribing to {A} /docs/private failed", timeout=30)
        lists([B, "someone@localhost"])
        b.process.waitForLog(f"Subscribed to {A} /docs/private", timeout=60)

        def affiliation(jid: str) -> list[tuple[object, ...]]:
            return a.query("SELECT affiliation FROM affiliations WHERE node = ? AND jid = ?",
                           "/docs/private", jid)

        self.assertEqual(affiliation(B), [("member",)])
        self.assertEqual(affiliation("someone@localhost"), [("member",)])
        subscribed = "SELECT jid_bare, state FROM subscriptions WHERE node = ?"
        self.assertEqual(a.query(subscribed, "/docs/private"), [(B, "subscribed")])
        lists(["someone@localhost"])
        waitFor(lambda: affiliation(B) == [], 30, "B no longer a member")
        waitFor(lambda: a.query(subscribed, "/docs/private") == [], 30,
                "B's subscription dropped")
        self.assertEqual(affiliation("someone@localhost"), [("member",)])

    def test_discoveredPartner(self) -> None:
        """
        B finds A among its contacts (next to one that is no pubsub service and one that does
        not exist), subscribes to A's node with no [[partners]] entry, replicates it, and the
        operator's view lists the discovered partner.
        """
        a = self.replica(A, [])
        a.write("early", b'<doc n="0"/>')
        waitFor(lambda: a.publishEvents() == 1, 30, "A publishing")
        b = self.replica(
            B, [], contacts=["localhost", "nobody.invalid", A],
            extra=["[discovery]", 'backend = "docs"', 'nodes = ["/docs/*"]',
                   "interval = 2", "timeout = 5"],
        )
        b.process.waitForLog(f"Discovered partner {A} {NODE}", timeout=60)
        b.process.waitForLog(f"Subscribed to {A} {NODE}", timeout=60)
        waitFor(lambda: "early" in b.objects(), 60, "A's earlier object on B")
        a.write("later", b'<doc n="1"/>')
        waitFor(self.converged([a, b], 2), 60, "A's later object on B")
        self.assertIn("Discovering nobody.invalid failed", b.process.logText())
        listing = subprocess.run(
            [sys.executable, "-m", "hermod_component.admin", "-c", b.process.configPath,
             "partners"],
            capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        self.assertIn(f"{A}\t{NODE}\t", listing)
        # The next passes find nothing new and subscribe nothing twice.
        time.sleep(5)
        self.assertEqual(b.process.logText().count(f"Discovered partner {A} {NODE}"), 1)


    def test_catchUpInArchivePages(self) -> None:
        """
        Between Hermods the archive catch-up travels in Hermod's archive pages (a page of
        events inside each query's C{<fin/>}, through the server as one stanza per page): B,
        offline while objects are created, changed and deleted on A, ends with A's objects
        and applied each missed change once.
        """
        a, b = self.followerStopped(5)
        for n in range(40):
            a.write(f"new{n}", f'<doc n="{n}" note="a &amp; b &lt; c"><p>{n}</p></doc>'.encode())
        a.write("old0", b'<doc n="0" changed="yes"/>')
        os.unlink(os.path.join(a.spool, "old1.xml"))
        waitFor(lambda: a.publishEvents() == 47, 60, "A publishing its 42 changes")
        b.start()
        waitFor(self.converged([a, b], 44), 120, "B catching up")
        waitFor(lambda: b.counter(A, "applied") == 47, 10, "B's counters saved")
        self.assertRegex(
            b.process.logText(),
            rf"Caught up on {re.escape(A)} {re.escape(NODE)} from its archive: 42 items in "
            r"[0-9.]+ s \([0-9]+/s, archive pages\)",
        )
        self.assertEqual(b.objects(), a.objects())

class ProsodyNodeReplicationTests(NodeReplicationTestsMixin, ReplicaHelpers):
    """
    L{NodeReplicationTestsMixin} on Prosody.
    """

    def setUp(self) -> None:
        self.server = prosodyWithComponents()
        self.addCleanup(self.server.stop)


class EjabberdNodeReplicationTests(NodeReplicationTestsMixin, ReplicaHelpers):
    """
    L{NodeReplicationTestsMixin} on ejabberd.
    """

    def setUp(self) -> None:
        self.server = ejabberdWithComponents()
        self.addCleanup(self.server.stop)
