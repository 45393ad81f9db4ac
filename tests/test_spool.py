"""
Tests for the spool directory backend.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hermod_component.backends import UnknownBackend, makeBackend
from hermod_component.backends.errors import BackendSettingsError, BrokenChange, ParentMissing
from hermod_component.backends.spool import STATE_DIR, SpoolBackend
from hermod_component.interfaces import IReplicationBackend
from hermod_component.model import Change, ChangeAction, ChangeBatch
from hermod_component.testing import HeldThreads


def write(directory: str, name: str, data: bytes) -> None:
    """
    Write a file as an application would.
    """
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


class SpoolBackendTests(SynchronousTestCase):
    """
    The directory is the object store: files in, changes out, applied writes not captured.
    """

    def setUp(self) -> None:
        self.path = tempfile.mkdtemp()
        self.backend = SpoolBackend("docs", self.path, "/docs/all")
        self.successResultOf(self.backend.start())

    def capture(self, since: str | None, limit: int = 100) -> ChangeBatch:
        """
        Capture synchronously.
        """
        return self.successResultOf(self.backend.capture(since, limit))

    def test_interface(self) -> None:
        """
        The spool backend provides L{IReplicationBackend} and is found by name.
        """
        self.assertTrue(verifyObject(IReplicationBackend, self.backend))
        made = makeBackend("spool", "docs", {"path": self.path, "node": "/n"}, None)
        self.assertIsInstance(made, SpoolBackend)
        self.assertEqual(made.nodes, ("/n",))
        self.assertRaises(UnknownBackend, makeBackend, "nosuch", "x", {}, None)
        self.assertRaises(BackendSettingsError, makeBackend, "spool", "x", {"path": "/p"}, None)
        self.assertRaises(
            BackendSettingsError, makeBackend, "spool", "x",
            {"path": "/p", "node": "/n", "colour": "red"}, None,
        )

    def test_createUpdateDelete(self) -> None:
        """
        A new file is a create, a changed file an update, a removed file a delete; an unchanged
        directory captures nothing and keeps its position.
        """
        write(self.path, "a.xml", b"<a parent='p'/>")
        write(self.path, "b.json", b'{"x": 1}')
        batch = self.capture(None)
        self.assertEqual(
            sorted((c.objectId, c.action, c.contentType) for c in batch.changes),
            [("a", ChangeAction.CREATE, "application/xml"),
             ("b", ChangeAction.CREATE, "application/json")],
        )
        self.assertEqual({c.objectId: c.parent for c in batch.changes}, {"a": "p", "b": None})
        again = self.capture(batch.position)
        self.assertEqual((again.changes, again.position), ((), batch.position))
        write(self.path, "b.json", b'{"x": 2}')
        os.unlink(os.path.join(self.path, "a.xml"))
        later = self.capture(batch.position)
        self.assertEqual(
            sorted((c.objectId, c.action) for c in later.changes),
            [("a", ChangeAction.DELETE), ("b", ChangeAction.UPDATE)],
        )

    def test_sameSizeAndTimeRewrite(self) -> None:
        """
        A file rewritten within the kernel's timestamp tick, with the same size, is still
        captured: a recent file is hashed rather than trusted by its size and mtime.
        """
        write(self.path, "s.xml", b'<doc v="c3"/>')
        batch = self.capture(None)
        path = os.path.join(self.path, "s.xml")
        before = os.stat(path)
        write(self.path, "s.xml", b'<doc v="a4"/>')
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        later = self.capture(batch.position)
        self.assertEqual([(c.objectId, c.payload) for c in later.changes],
                         [("s", b'<doc v="a4"/>')])

    def test_limit(self) -> None:
        """
        At most C{limit} changes come per capture, with C{limited} set while more wait.
        """
        for n in range(5):
            write(self.path, f"o{n}.json", b"{}")
        first = self.capture(None, limit=3)
        self.assertEqual((len(first.changes), first.limited), (3, True))
        second = self.capture(first.position, limit=3)
        self.assertEqual((len(second.changes), second.limited), (2, False))
        ids = {c.objectId for c in first.changes + second.changes}
        self.assertEqual(ids, {f"o{n}" for n in range(5)})

    def test_resumeFromSavedPosition(self) -> None:
        """
        A new backend instance (a restart) capturing from a saved position sees only what
        changed after it; capturing from an older position sees the changes again.
        """
        write(self.path, "a.json", b"{}")
        first = self.capture(None)
        write(self.path, "b.json", b"{}")
        restarted = SpoolBackend("docs", self.path, "/docs/all")
        batch = self.successResultOf(restarted.capture(first.position, 100))
        self.assertEqual([c.objectId for c in batch.changes], ["b"])
        replay = SpoolBackend("docs", self.path, "/docs/all")
        self.assertEqual(
            [c.objectId for c in self.successResultOf(replay.capture(None, 100)).changes],
            ["a", "b"],
        )

    def test_olderIndexesRemovedOnce(self) -> None:
        """
        Capturing from a saved position removes the index files of older positions, once:
        the passes that follow with the same position do not look for them again.
        """
        write(self.path, "a.json", b"{}")
        first = self.capture(None)
        write(self.path, "b.json", b"{}")
        second = self.capture(first.position)
        state = os.path.join(self.path, STATE_DIR)
        indexes = sorted(n for n in os.listdir(state) if n.startswith("index-"))
        self.assertEqual(len(indexes), 2)
        looked: list[int] = []
        original = self.backend._forgetOlder

        def counting(generation: int) -> None:
            looked.append(generation)
            original(generation)

        self.backend._forgetOlder = counting  # type: ignore[method-assign]
        for _ in range(3):
            self.capture(second.position)
        self.assertEqual(looked, [int(second.position or "0")])
        self.assertEqual(sorted(n for n in os.listdir(state) if n.startswith("index-")),
                         [f"index-{second.position}.json"])

    def test_appliedWritesNotCaptured(self) -> None:
        """
        apply() writes atomically (no temporary file left) and its writes and deletes are
        not captured.
        """
        write(self.path, "a.json", b"{}")
        position = self.capture(None).position
        self.successResultOf(self.backend.apply(
            Change("r", ChangeAction.CREATE, b"<r/>", "application/xml")
        ))
        self.successResultOf(self.backend.apply(Change("a", ChangeAction.DELETE, b"", "")))
        self.assertEqual(sorted(os.listdir(self.path)), [".hermod", "r.xml"])
        with open(os.path.join(self.path, "r.xml"), "rb") as f:
            self.assertEqual(f.read(), b"<r/>")
        self.assertEqual(self.capture(position).changes, ())

    def test_startRemovesInterruptedWrites(self) -> None:
        """
        Temporary files left by a write that a crash interrupted are removed at start; the
        application's own files, even ones named like them, are left alone.
        """
        leftover = os.path.join(self.path, ".apply-123-4.tmp")
        # Where writes keep their temporary files now (outside the watched directory).
        inState = os.path.join(self.path, ".hermod", ".apply-123-5.tmp")
        mine = os.path.join(self.path, "apply-notes.tmp")
        for name in (leftover, inState, mine):
            with open(name, "wb") as f:
                f.write(b"x")
        restarted = SpoolBackend("docs", self.path, "/docs/all")
        self.successResultOf(restarted.start())
        self.assertFalse(os.path.exists(leftover))
        self.assertFalse(os.path.exists(inState))
        self.assertTrue(os.path.exists(mine))

    def test_applyParentMissing(self) -> None:
        """
        A change whose parent file is missing writes nothing and raises L{ParentMissing}.
        """
        child = Change("c", ChangeAction.CREATE, b'{"parent": "p"}', "application/json",
                       parent="p")
        failure = self.failureResultOf(self.backend.apply(child), ParentMissing)
        self.assertEqual(failure.value.parent, "p")
        self.assertFalse(os.path.exists(os.path.join(self.path, "c.json")))
        write(self.path, "p.xml", b"<p/>")
        self.successResultOf(self.backend.apply(child))
        with open(os.path.join(self.path, "c.json")) as f:
            self.assertEqual(json.load(f), {"parent": "p"})

    def test_applyBrokenId(self) -> None:
        """
        An id that cannot be a file name is refused as broken.
        """
        for bad in ("../etc/passwd", ".hidden", ""):
            self.failureResultOf(
                self.backend.apply(Change(bad, ChangeAction.CREATE, b"{}", "application/json")),
                BrokenChange,
            )

    def test_applyMany(self) -> None:
        """
        L{SpoolBackend.applyMany} applies changes in order, each seeing those before it (a
        child after its parent in the same run is applied), and answers per change: L{None}
        when applied, the L{ParentMissing} or L{BrokenChange} of the others, which write
        nothing. What it wrote is not captured as local changes.
        """
        first = self.capture(None)
        write(self.path, "gone.xml", b"<gone/>")
        second = self.capture(first.position)
        changes = [
            Change("p", ChangeAction.CREATE, b"<p/>", "application/xml"),
            Change("c", ChangeAction.CREATE, b'<c parent="p"/>', "application/xml",
                   parent="p"),
            Change("orphan", ChangeAction.CREATE, b"<o/>", "application/xml", parent="none"),
            Change("../x", ChangeAction.CREATE, b"<x/>", "application/xml"),
            Change("gone", ChangeAction.DELETE, b"", ""),
        ]
        outcomes = self.successResultOf(self.backend.applyMany(changes))
        self.assertEqual(outcomes[:2], [None, None])
        self.assertIsInstance(outcomes[2], ParentMissing)
        self.assertIsInstance(outcomes[3], BrokenChange)
        self.assertIsNone(outcomes[4])
        self.assertEqual(sorted(os.listdir(self.path)), [".hermod", "c.xml", "p.xml"])
        self.assertEqual(self.capture(second.position).changes, ())

    def test_applyManyInThread(self) -> None:
        """
        Given a way to run work in a thread, L{SpoolBackend.applyMany} does the file writes
        there, in one call per run, and records them when that call's result comes back.
        """
        threads = HeldThreads()
        backend = SpoolBackend("docs", self.path, "/docs/all", inThread=threads)
        self.successResultOf(backend.start())
        first = self.successResultOf(backend.capture(None, 10))
        d = backend.applyMany([
            Change("a", ChangeAction.CREATE, b"<a/>", "application/xml"),
            Change("b", ChangeAction.CREATE, b"<b/>", "application/xml"),
        ])
        self.assertEqual(len(threads.works), 1)
        self.assertFalse(os.path.exists(os.path.join(self.path, "a.xml")))  # not run yet
        threads.run()
        self.assertEqual(self.successResultOf(d), [None, None])
        self.assertEqual(self.successResultOf(backend.capture(first.position, 10)).changes, ())

    def test_applyManyFailureOfOne(self) -> None:
        """
        An unexpected error writing one change of L{SpoolBackend.applyMany} is that change's
        outcome; the changes around it are applied.
        """
        self.successResultOf(self.backend.applyMany([
            Change("d", ChangeAction.CREATE, b"<d/>", "application/xml"),
        ]))
        os.mkdir(os.path.join(self.path, "blocked.xml"))  # in the way of the object's file
        outcomes = self.successResultOf(self.backend.applyMany([
            Change("d", ChangeAction.DELETE, b"", ""),
            Change("blocked", ChangeAction.CREATE, b"<b/>", "application/xml"),
            Change("after", ChangeAction.CREATE, b"<a/>", "application/xml"),
        ]))
        self.assertIsNone(outcomes[0])
        self.assertIsInstance(outcomes[1], IsADirectoryError)
        self.assertIsNone(outcomes[2])
        self.assertEqual(sorted(os.listdir(self.path)), [".hermod", "after.xml", "blocked.xml"])

    def test_typeChangeReplacesFile(self) -> None:
        """
        An object that arrives as JSON after being XML replaces its old file.
        """
        self.successResultOf(self.backend.apply(
            Change("o", ChangeAction.CREATE, b"<o/>", "application/xml")))
        self.successResultOf(self.backend.apply(
            Change("o", ChangeAction.UPDATE, b"{}", "application/json")))
        self.assertEqual(sorted(os.listdir(self.path)), [".hermod", "o.json"])

    def test_appliedIndexEntryIsTheFile(self) -> None:
        """
        The index entry of an applied object (size and mtime from the temporary file before
        its rename) is the renamed file's, so capture trusts it even when the application
        wrote a file of another extension before; a large payload is written whole, and no
        temporary file is left in the state directory.
        """
        write(self.path, "o.json", b"{}")
        payload = b"<o>" + b"x" * 300_000 + b"</o>"
        self.successResultOf(self.backend.apply(
            Change("o", ChangeAction.UPDATE, payload, "application/xml")))
        self.assertEqual(sorted(os.listdir(self.path)), [".hermod", "o.xml"])
        with open(os.path.join(self.path, "o.xml"), "rb") as f:
            self.assertEqual(f.read(), payload)
        found = os.stat(os.path.join(self.path, "o.xml"))
        size, mtime, _digest, extension = self.backend._index["o"]
        self.assertEqual((size, mtime, extension), (found.st_size, found.st_mtime_ns, ".xml"))
        self.assertEqual(
            [n for n in os.listdir(os.path.join(self.path, ".hermod")) if n.endswith(".tmp")], []
        )


class SpoolScanCostTests(SynchronousTestCase):
    """
    Capturing a large spool does not cost more than it must.
    """

    def setUp(self) -> None:
        self.path = tempfile.mkdtemp()
        self.backend = SpoolBackend("docs", self.path, "/docs/all")
        self.successResultOf(self.backend.start())

    def test_backlogReadOnce(self) -> None:
        """
        A backlog larger than C{limit} is taken in order over several passes, each file read
        once, not once per pass.
        """
        from hermod_component.backends import spool

        reads: list[bytes] = []
        original = spool._parentOf

        def counting(payload: bytes, extension: str) -> str | None:
            reads.append(payload)
            return original(payload, extension)

        self.patch(spool, "_parentOf", counting)
        for n in range(10):
            write(self.path, f"o{n}.xml", f'<o n="{n}"/>'.encode())
            stamp = 1_700_000_000_000_000_000 + n * 1_000_000
            os.utime(os.path.join(self.path, f"o{n}.xml"), ns=(stamp, stamp))
        position: str | None = None
        taken: list[str] = []
        limited = True
        while limited:
            batch = self.successResultOf(self.backend.capture(position, 3))
            taken += [c.objectId for c in batch.changes]
            position, limited = batch.position, batch.limited
        self.assertEqual(taken, [f"o{n}" for n in range(10)])
        self.assertEqual(len(reads), 10)

    def test_slowScanSpaced(self) -> None:
        """
        After a scan slower than L{spool.SLOW_SCAN} that found everything, the next scan
        waits L{spool.SCAN_SPACING} times its duration; then a new file is captured.
        """
        from hermod_component.backends import spool

        now = [100.0]

        class FakeTime:
            @staticmethod
            def monotonic() -> float:
                now[0] += 0.01  # every reading: each scan seems to take 10 ms
                return now[0]

            time_ns = staticmethod(time.time_ns)

        self.patch(spool, "time", FakeTime)
        write(self.path, "a.xml", b"<a/>")
        first = self.successResultOf(self.backend.capture(None, 10))
        self.assertEqual([c.objectId for c in first.changes], ["a"])
        write(self.path, "b.xml", b"<b/>")
        skipped = self.successResultOf(self.backend.capture(first.position, 10))
        self.assertEqual((skipped.changes, skipped.position), ((), first.position))
        now[0] += spool.SCAN_SPACING * 0.01
        later = self.successResultOf(self.backend.capture(first.position, 10))
        self.assertEqual([c.objectId for c in later.changes], ["b"])


class SpoolTagTests(SynchronousTestCase):
    """
    With C{tag_field}, objects belong to C{<tag_prefix>/<tag>} nodes next to the main node.
    """

    def nodes(self, payload: bytes, contentType: str, **options: str) -> tuple[str, ...]:
        """
        The nodes of an object with this payload, from a backend made with these options.
        """
        backend = makeBackend(
            "spool", "docs", {"path": tempfile.mkdtemp(), "node": "/docs/all", **options}, None
        )
        change = Change("x", ChangeAction.UPDATE, payload, contentType)
        return tuple(backend.nodesFor(change))

    def test_jsonTags(self) -> None:
        """
        A JSON key holding a string or a list of strings names tag nodes under the parent
        path of the main node; values that cannot be node names are left out.
        """
        self.assertEqual(
            self.nodes(b'{"tag": "a"}', "application/json", tag_field="tag"),
            ("/docs/all", "/docs/a"),
        )
        self.assertEqual(
            self.nodes(b'{"tags": ["a", "b", "a", 3, "x/y", ""]}', "application/json",
                       tag_field="tags", tag_prefix="/tagged"),
            ("/docs/all", "/tagged/a", "/tagged/b"),
        )
        self.assertEqual(
            self.nodes(b'{"other": "a"}', "application/json", tag_field="tag"), ("/docs/all",)
        )

    def test_xmlTags(self) -> None:
        """
        In XML, the root's attribute (space-separated values) and child elements of that name
        name tag nodes; a file that does not parse belongs to the main node only.
        """
        self.assertEqual(
            self.nodes(b'<doc tag="a b"><tag>c</tag><tag> d </tag></doc>', "application/xml",
                       tag_field="tag"),
            ("/docs/all", "/docs/a", "/docs/b", "/docs/c", "/docs/d"),
        )
        self.assertEqual(
            self.nodes(b"<doc tag=", "application/xml", tag_field="tag"), ("/docs/all",)
        )

    def test_withoutTagFieldOrForDeletes(self) -> None:
        """
        Without C{tag_field}, and for a delete, an object belongs to the main node only.
        """
        self.assertEqual(self.nodes(b'<doc tag="a"/>', "application/xml"), ("/docs/all",))
        backend = SpoolBackend("docs", tempfile.mkdtemp(), "/docs/all", tagField="tag")
        self.assertEqual(
            tuple(backend.nodesFor(Change("x", ChangeAction.DELETE, b"", ""))), ("/docs/all",)
        )

    def test_badOptions(self) -> None:
        """
        Empty or mistyped tag and file options, and a tag prefix without a tag field, are
        refused naming the key.
        """
        for options, key in (
            ({"tag_field": ""}, "tag_field"),
            ({"tag_field": "t", "tag_prefix": "docs"}, "tag_prefix"),
            ({"tag_prefix": "/docs"}, "tag_prefix"),
            ({"whitelist_file": 3}, "whitelist_file"),
        ):
            error = self.assertRaises(
                BackendSettingsError, makeBackend, "spool", "docs",
                {"path": "/p", "node": "/n", **options}, None,
            )
            self.assertIn(f"backends.docs.{key}", str(error))


class SpoolApplicationFilesTests(SynchronousTestCase):
    """
    The whitelists and contacts files: application data next to the objects, not replicated.
    """

    def setUp(self) -> None:
        self.path = tempfile.mkdtemp()
        self.backend = SpoolBackend("docs", self.path, "/docs/all")
        self.successResultOf(self.backend.start())

    def test_interfaces(self) -> None:
        """
        The spool backend supplies whitelists and contacts.
        """
        from hermod_component.interfaces import IContactSource, IWhitelistSource

        self.assertTrue(verifyObject(IWhitelistSource, self.backend))
        self.assertTrue(verifyObject(IContactSource, self.backend))

    def test_whitelists(self) -> None:
        """
        Missing: L{None}; present: the mapping; wrong shape: a failure naming the file.
        """
        self.assertIsNone(self.successResultOf(self.backend.whitelists()))
        write(self.path, ".whitelists.json", b'{"/docs/all": ["u@x.example"]}')
        self.assertEqual(
            self.successResultOf(self.backend.whitelists()), {"/docs/all": ("u@x.example",)}
        )
        write(self.path, ".whitelists.json", b'{"/docs/all": "u@x.example"}')
        failure = self.failureResultOf(self.backend.whitelists(), BrokenChange)
        self.assertIn(".whitelists.json", str(failure.value))

    def test_contacts(self) -> None:
        """
        Missing: none; present: the JIDs; wrong shape: a failure; a configured path is read
        relative to the directory.
        """
        self.assertEqual(self.successResultOf(self.backend.contacts()), ())
        write(self.path, ".contacts.json", b'["pubsub.a.example", "bob@b.example"]')
        self.assertEqual(
            self.successResultOf(self.backend.contacts()), ("pubsub.a.example", "bob@b.example")
        )
        write(self.path, ".contacts.json", b'{"jid": 1}')
        self.failureResultOf(self.backend.contacts(), BrokenChange)
        write(self.path, "people.list", b'["c.example"]')
        other = makeBackend(
            "spool", "docs", {"path": self.path, "node": "/n", "contacts_file": "people.list"},
            None,
        )
        self.assertEqual(self.successResultOf(other.contacts()), ("c.example",))

    def test_filesNotCaptured(self) -> None:
        """
        The files are not objects: capture ignores them.
        """
        write(self.path, ".whitelists.json", b"{}")
        write(self.path, ".contacts.json", b"[]")
        batch = self.successResultOf(self.backend.capture(None, 100))
        self.assertEqual(batch.changes, ())


class _FakeWatch:
    """
    Stands for the inotify watch in L{SpoolWatchTests}: the tests deliver its events.

    @ivar lost: Whether the backend closed it.
    """

    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        """
        Note that the backend closed the watch.
        """
        self.lost = True


class SpoolWatchTests(SynchronousTestCase):
    """
    With a directory watch, a capture looks only at the files the events named, after one full
    scan at start; lost events bring the full scan back.
    """

    def setUp(self) -> None:
        from hermod_component.backends import spool

        self.spool = spool
        self.path = tempfile.mkdtemp()
        self.watches: list[tuple[_FakeWatch, object]] = []

        def fakeWatch(reactor: object, path: str, report: object) -> _FakeWatch:
            watch = _FakeWatch()
            self.watches.append((watch, report))
            return watch

        self.patch(spool, "_watchDirectory", fakeWatch)
        self.backend = SpoolBackend("docs", self.path, "/docs/all", reactor=object())
        self.woken: list[bool] = []
        self.backend.setNotify(lambda: self.woken.append(True))
        self.successResultOf(self.backend.start())

    def capture(self, since: str | None, limit: int = 100) -> ChangeBatch:
        """
        Capture synchronously.
        """
        return self.successResultOf(self.backend.capture(since, limit))

    def event(self, name: str, mask: int | None = None) -> None:
        """
        Deliver an event of the watch, by default "written and closed".
        """
        self.backend.changed(name, self.spool.IN_CLOSE_WRITE if mask is None else mask)

    def test_onlyNamedFilesLooked(self) -> None:
        """
        After the first (full) capture, a capture without events scans nothing; one with
        events takes exactly the named files' changes and wakes the pump for each event.
        """
        write(self.path, "a.xml", b"<a/>")
        first = self.capture(None)
        self.assertEqual(([c.objectId for c in first.changes], self.backend.scans), (["a"], 1))
        self.assertTrue(self.backend.watching)
        # Not named by any event: not seen (the watch is trusted).
        write(self.path, "b.xml", b"<b/>")
        idle = self.capture(first.position)
        self.assertEqual((idle.changes, idle.position, self.backend.scans),
                         ((), first.position, 1))
        write(self.path, "c.xml", b"<c/>")
        self.event("c.xml")
        os.unlink(os.path.join(self.path, "a.xml"))
        self.event("a.xml", self.spool.IN_DELETE)
        self.event(".hidden.xml")
        self.event("notes.txt")
        self.assertEqual(len(self.woken), 2)
        second = self.capture(first.position)
        self.assertEqual(
            sorted((c.objectId, c.action) for c in second.changes),
            [("a", ChangeAction.DELETE), ("c", ChangeAction.CREATE)],
        )
        self.assertEqual(self.backend.scans, 1)

    def test_overflowScansAgain(self) -> None:
        """
        A queue overflow (events lost) makes the next capture scan the whole directory.
        """
        first = self.capture(None)
        write(self.path, "lost.xml", b"<lost/>")
        self.event("", self.spool.IN_Q_OVERFLOW)
        self.assertEqual(self.woken, [True])
        second = self.capture(first.position)
        self.assertEqual([c.objectId for c in second.changes], ["lost"])
        self.assertEqual(self.backend.scans, 2)

    def test_watchEndedPolls(self) -> None:
        """
        When the watch ends (the directory went away), the backend closes it and scans at
        every capture from then on.
        """
        first = self.capture(None)
        self.event("", self.spool.IN_IGNORED)
        self.assertFalse(self.backend.watching)
        self.assertTrue(self.watches[0][0].lost)
        write(self.path, "x.xml", b"<x/>")
        second = self.capture(first.position)
        self.assertEqual([c.objectId for c in second.changes], ["x"])
        self.assertEqual(self.backend.scans, 2)

    def test_limitedScanContinues(self) -> None:
        """
        A full scan that found more than the limit is followed by full scans until everything
        was taken, though no event names those files.
        """
        for n in range(5):
            write(self.path, f"o{n}.xml", b"<o/>")
        position: str | None = None
        taken: list[str] = []
        for _ in range(3):
            batch = self.capture(position, 2)
            taken += [c.objectId for c in batch.changes]
            position = batch.position
        self.assertEqual(sorted(taken), [f"o{n}" for n in range(5)])
        self.assertEqual(self.backend.scans, 3)

    def test_limitedLookKeepsTheRest(self) -> None:
        """
        Named files beyond the limit stay named for the next capture.
        """
        first = self.capture(None)
        for n in range(5):
            write(self.path, f"o{n}.xml", b"<o/>")
            self.event(f"o{n}.xml")
        position = first.position
        taken: list[str] = []
        limited = True
        while limited:
            batch = self.capture(position, 2)
            taken += [c.objectId for c in batch.changes]
            position, limited = batch.position, batch.limited
        self.assertEqual(sorted(taken), [f"o{n}" for n in range(5)])
        self.assertEqual(self.backend.scans, 1)

    def test_reloadScans(self) -> None:
        """
        A capture from another position than the last (a restart, an older saved position)
        scans the whole directory against that position's index.
        """
        write(self.path, "a.xml", b"<a/>")
        first = self.capture(None)
        again = self.capture(None)
        self.assertEqual([c.objectId for c in again.changes], ["a"])
        self.assertEqual(self.backend.scans, 2)
        self.assertEqual(again.position, first.position)

    def test_stopClosesWatch(self) -> None:
        """
        Stopping the backend closes the watch; C{watch = false} does not watch at all.
        """
        self.successResultOf(self.backend.stop())
        self.assertTrue(self.watches[0][0].lost)
        self.assertFalse(self.backend.watching)
        unwatched = makeBackend(
            "spool", "other", {"path": self.path, "node": "/n", "watch": False}, object()
        )
        self.successResultOf(unwatched.start())
        self.assertFalse(unwatched.watching)  # type: ignore[attr-defined]
        self.assertEqual(len(self.watches), 1)
        self.assertRaises(
            BackendSettingsError, makeBackend, "spool", "x",
            {"path": self.path, "node": "/n", "watch": "yes"}, None,
        )
