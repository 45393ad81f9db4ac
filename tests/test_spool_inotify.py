"""
The spool backend's directory watch on the real reactor and the real inotify of the kernel.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from hermod_component.backends.errors import ParentMissing
from hermod_component.backends.spool import SpoolBackend
from hermod_component.model import Change, ChangeAction, ChangeBatch
from hermod_component.testing import HeldThreads


def write(path: str, data: bytes) -> None:
    """
    Write a file as an application would.
    """
    with open(path, "wb") as f:
        f.write(data)


class InotifyWatchTests(TestCase):
    """
    A file written into a watched spool wakes the pump and is captured without a full scan.
    """

    if not sys.platform.startswith("linux"):
        skip = "inotify is Linux's"

    def startedSpool(self, **kwargs: Any) -> Deferred[SpoolBackend]:
        """
        A spool backend on a directory of its own, watched on the reactor, started; removed
        and stopped after the test.
        """
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path)
        backend = SpoolBackend("docs", path, "/docs/all", reactor=reactor, **kwargs)
        self.addCleanup(backend.stop)
        return backend.start().addCallback(lambda _: backend)

    async def heldSpool(self) -> tuple[HeldThreads, SpoolBackend, ChangeBatch]:
        """
        A started spool whose applied writes wait in L{HeldThreads}, and its first capture.
        """
        threads = HeldThreads()
        backend = await self.startedSpool(inThread=threads)
        return threads, backend, await backend.capture(None, 10)

    async def _written(self) -> None:
        backend = await self.startedSpool()
        path = backend.path
        self.assertTrue(backend.watching)
        woken: Deferred[None] = Deferred()
        backend.setNotify(lambda: None if woken.called else woken.callback(None))
        first = await backend.capture(None, 10)
        self.assertEqual((first.changes, backend.scans), ((), 1))
        write(os.path.join(path, "doc1.xml"), b"<doc/>")
        woken.addTimeout(30, reactor)
        await woken
        await deferLater(reactor, 0.05, lambda: None)  # let every event of the write arrive
        batch = await backend.capture(first.position, 10)
        self.assertEqual([c.objectId for c in batch.changes], ["doc1"])
        self.assertEqual(backend.scans, 1)
        await backend.stop()
        self.assertFalse(backend.watching)

    def test_written(self) -> Deferred[None]:
        """
        See L{InotifyWatchTests}.
        """
        return Deferred.fromCoroutine(self._written())

    async def _appliedThenEdited(self) -> None:
        backend = await self.startedSpool()
        path = backend.path
        first = await backend.capture(None, 10)
        wakes: list[None] = []
        woken: Deferred[None] = Deferred()

        def notify() -> None:
            wakes.append(None)
            if not woken.called:
                woken.callback(None)

        backend.setNotify(notify)
        await backend.apply(Change(
            objectId="doc1", action=ChangeAction.CREATE, payload=b'<doc v="1"/>',
            contentType="application/xml",
        ))
        await deferLater(reactor, 0.1, lambda: None)  # the rename's event has arrived
        self.assertEqual(wakes, [])
        self.assertEqual((await backend.capture(first.position, 10)).changes, ())
        # The application rewrites it at once, with the same size: its own event marks it.
        write(os.path.join(path, "doc1.xml"), b'<doc v="2"/>')
        woken.addTimeout(30, reactor)
        await woken
        await deferLater(reactor, 0.05, lambda: None)
        batch = await backend.capture(first.position, 10)
        self.assertEqual(
            [(c.objectId, c.action, c.payload) for c in batch.changes],
            [("doc1", ChangeAction.UPDATE, b'<doc v="2"/>')],
        )
        self.assertEqual(backend.scans, 1)

    def test_appliedThenEdited(self) -> Deferred[None]:
        """
        A write of L{SpoolBackend.apply} does not wake the pump (the watch's event for its
        rename is the backend's own), while the application's write of the same file right
        after it, of the same size, does and is captured.
        """
        return Deferred.fromCoroutine(self._appliedThenEdited())

    async def _editedWhileFailedWrite(self) -> None:
        threads, backend, first = await self.heldSpool()
        path = backend.path
        applying = backend.applyMany([
            Change("c", ChangeAction.CREATE, b'<c parent="p"/>', "application/xml",
                   parent="p"),
        ])
        # While the write waits for its thread, the application saves c.xml its own way
        # (temporary file, rename), and the watch reports that rename.
        temporary = os.path.join(path, ".c.tmp")
        write(temporary, b"<c mine='yes'/>")
        os.rename(temporary, os.path.join(path, "c.xml"))
        await deferLater(reactor, 0.1, lambda: None)
        threads.run()  # the write finds no parent: nothing renamed
        [outcome] = await applying
        self.assertIsInstance(outcome, ParentMissing)
        batch = await backend.capture(first.position, 10)
        self.assertEqual([(c.objectId, c.payload) for c in batch.changes],
                         [("c", b"<c mine='yes'/>")])

    def test_editedWhileFailedWrite(self) -> None:
        """
        A write of L{SpoolBackend.applyMany} that fails (its parent is missing) while the
        application renames its own file into the same name: the application's file is
        captured, although the watch's event for it came while the backend expected its
        own rename.
        """
        return Deferred.fromCoroutine(self._editedWhileFailedWrite())

    async def _notReadWhileWriting(self) -> None:
        threads, backend, first = await self.heldSpool()
        path = backend.path
        wakes: list[None] = []
        backend.setNotify(lambda: wakes.append(None))
        applying = backend.applyMany([
            Change(f"o{n}", ChangeAction.CREATE, f"<o n='{n}'/>".encode(), "application/xml")
            for n in range(3)
        ])
        # While the run waits for its thread, the application writes a file of its own.
        write(os.path.join(path, "mine.xml"), b"<mine/>")
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(wakes, [])  # its events wait in the kernel's queue
        threads.run()
        self.assertEqual(await applying, [None, None, None])
        # Read at once when the run ends: the application's write wakes the pump (its events
        # may be several), the run's own renames do not.
        self.assertNotEqual(wakes, [])
        batch = await backend.capture(first.position, 10)
        self.assertEqual([(c.objectId, c.payload) for c in batch.changes],
                         [("mine", b"<mine/>")])
        self.assertEqual(backend.scans, 1)

    def test_notReadWhileWriting(self) -> None:
        """
        The watch is not read while L{SpoolBackend.applyMany} writes a run in its thread (each
        of its renames would wake the reactor); once the run is written, the events queued
        meanwhile are read at once, an application's write among them captured as before and
        the run's own renames dropped.
        """
        return Deferred.fromCoroutine(self._notReadWhileWriting())
