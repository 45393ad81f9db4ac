"""
The spool directory backend: one file per object, C{<id>.xml} or C{<id>.json}.

A file created or changed in the directory is a create or update of object C{<id>}; a file
removed is a delete. Remote objects are written atomically (a temporary file, then a rename) and
removed for deletes; those writes are not captured again. A parent is named by a C{parent}
attribute on an XML document's root or a top-level C{"parent"} key of a JSON object.

Tag nodes: with C{tag_field}, an object is also published to C{<tag_prefix>/<value>} for each
value of that field (a JSON key holding a string or a list of strings; in XML, an attribute of
the root holding space-separated values, or the text of each child element of that name). An
object whose tags change moves between those nodes. C{tag_prefix} defaults to the parent path
of C{node} (C{/docs} for C{/docs/all}).

Application data that is not replicated lives in dot files, which capture ignores: the
whitelists file (default C{.whitelists.json}: C{{"node": ["jid", ...]}}, the JIDs allowed to
subscribe to each node) and the contacts file (default C{.contacts.json}: C{["jid", ...]}, the
JIDs to discover partner Hermods at).

Where the platform has inotify (Linux) and a reactor is given, the backend watches the directory
(C{watch = true}, the default): it wakes the pump as soon as a file is written, moved or removed,
and a capture looks only at the files named by those events instead of scanning the whole
directory. A full scan still runs at start, after the index was reloaded, and after the kernel's
event queue overflowed. Without inotify, or with C{watch = false} (a directory on a network
file system, whose remote changes inotify does not see), it scans at every poll.

Positions are generations of an index of the directory (C{.hermod/index-N.json}: id to size,
modification time and SHA-256), written at each capture; an index is removed only once a later
position has been handed back to L{SpoolBackend.capture}, which proves the later one was saved.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat as statModule
import struct
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from hermod_component.backends.errors import BackendSettingsError, BrokenChange, ParentMissing
from hermod_component.interfaces import (
    IBatchApply,
    IContactSource,
    IReplicationBackend,
    IWhitelistSource,
)
from hermod_component.model import Change, ChangeAction, ChangeBatch

T = TypeVar("T")

#: File extensions and their content types.
EXTENSIONS: Mapping[str, str] = {".xml": "application/xml", ".json": "application/json"}
_EXTENSION_OF = {contentType: extension for extension, contentType in EXTENSIONS.items()}

STATE_DIR = ".hermod"

#: A directory scan that took longer than this (seconds) is not repeated before
#: C{SCAN_SPACING} times its duration has passed, so that polling a large spool every few
#: milliseconds does not take the CPU from applying and publishing.
#: A file changed this recently (ns) is hashed even if its size and mtime are unchanged.
RACY_NS = 2_000_000_000
SLOW_SCAN = 0.005
SCAN_SPACING = 5.0

#: One index entry: size, mtime in ns, raw SHA-256 hex, extension.
Entry = tuple[int, int, str, str]

#: inotify event bits (linux/inotify.h): what marks a file as changed, and what means that
#: events were lost (the queue overflowed, or the watch itself went away).
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
WATCH_MASK = IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE


def _watchDirectory(
    reactor: Any, path: str, report: Callable[[str, int], None]
) -> Any | None:
    """
    Start an inotify watch of C{path} on C{reactor} that calls C{report(name, mask)} for every
    event, the queue overflow (C{IN_Q_OVERFLOW}, which Twisted's own dispatch drops) included.

    @return: The watch (a file descriptor to C{loseConnection()}), or L{None} where inotify
        is not available.
    """
    try:
        from twisted.internet import inotify
        from twisted.python.filepath import FilePath

        class DirectoryWatch(inotify.INotify):
            def _doRead(self, data: bytes) -> None:
                # Read at an offset: cutting the buffer after each event copied the rest of
                # it every time (a read holds up to 8 KiB of events).
                buffer = self._buffer + data if self._buffer else data
                offset, end = 0, len(buffer)
                while end - offset >= 16:
                    _wd, mask, _cookie, size = struct.unpack_from("=LLLL", buffer, offset)
                    if end - offset < 16 + size:
                        break
                    name = buffer[offset + 16 : offset + 16 + size].rstrip(b"\0")
                    offset += 16 + size
                    report(os.fsdecode(name), mask)
                self._buffer = buffer[offset:]

            def drain(self) -> None:
                """
                Read every event queued now (the descriptor does not block).
                """
                while True:
                    try:
                        data = os.read(self._fd, 65536)
                    except OSError:  # nothing queued (EAGAIN), or the watch was closed
                        return
                    if not data:
                        return
                    self._doRead(data)

        watch = DirectoryWatch(reactor)
        watch.startReading()
        watch.watch(FilePath(path), mask=WATCH_MASK)
    except Exception:  # noqa: BLE001 - no inotify here (another platform, no instances left)
        return None
    return watch


def _parentOf(payload: bytes, extension: str) -> str | None:
    """
    The parent named in a spool file, if any (a file that does not parse names none).
    """
    try:
        if extension == ".json":
            document = json.loads(payload)
            parent = document.get("parent") if isinstance(document, dict) else None
            return parent if isinstance(parent, str) and parent else None
        from lxml import etree

        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        return etree.fromstring(payload, parser).get("parent") or None
    except Exception:  # noqa: BLE001 - a broken file is published as is; the far side parks it
        return None


def _tagsOf(payload: bytes, contentType: str, field: str) -> list[str]:
    """
    The values of the tag field of an object (none if it does not parse).
    """
    values: list[str] = []
    try:
        if contentType.endswith("json"):
            document = json.loads(payload)
            found = document.get(field) if isinstance(document, dict) else None
            if isinstance(found, str):
                values = [found]
            elif isinstance(found, list):
                values = [v for v in found if isinstance(v, str)]
        else:
            from lxml import etree

            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            root = etree.fromstring(payload, parser)
            attribute = root.get(field)
            if attribute is not None:
                values = attribute.split()
            values += [
                (child.text or "").strip() for child in root
                if isinstance(child.tag, str) and etree.QName(child).localname == field
            ]
    except Exception:  # noqa: BLE001 - a broken file has no tags; it goes to the main node
        return []
    return [v for v in dict.fromkeys(values) if v and "/" not in v and not v.startswith(".")]


def _readJSON(path: str) -> Any:
    """
    A JSON file's content, or L{None} if there is no such file.
    """
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _validId(objectId: str) -> bool:
    return bool(objectId) and "/" not in objectId and "\x00" not in objectId and not (
        objectId.startswith(".")
    )


@implementer(IReplicationBackend, IBatchApply, IWhitelistSource, IContactSource)
class SpoolBackend:
    """
    L{IReplicationBackend} on a directory of files.

    @ivar path: The directory.
    @ivar node: The node every object is published to.
    @ivar tagField: The field naming an object's tag nodes, or L{None}.
    @ivar tagPrefix: Tag nodes are C{<tagPrefix>/<tag>}.
    @ivar whitelistFile: The JSON file of JIDs allowed to subscribe, per node.
    @ivar contactsFile: The JSON file of contact JIDs.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        path: str,
        node: str,
        tagField: str | None = None,
        tagPrefix: str | None = None,
        whitelistFile: str | None = None,
        contactsFile: str | None = None,
        reactor: Any = None,
        watch: bool = True,
        inThread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
    ) -> None:
        """
        @param reactor: The reactor to watch the directory on (with C{watch}); L{None}: poll.
        @param inThread: Runs a callable in a thread and fires with its result, for the file
            writes of L{applyMany}; L{None}: they run at once, on the caller's thread.
        """
        self._inThread = inThread
        self.name = name
        self.path = path
        self.node = node
        self.nodes = (node,)
        self.tagField = tagField
        self.tagPrefix = (
            tagPrefix if tagPrefix is not None else node.rsplit("/", 1)[0]
        ).rstrip("/")
        self.whitelistFile = whitelistFile or os.path.join(path, ".whitelists.json")
        self.contactsFile = contactsFile or os.path.join(path, ".contacts.json")
        self._state = os.path.join(path, STATE_DIR)
        self._generation: int | None = None
        #: The position whose older index files were last removed.
        self._forgotten: str | None = None
        self._index: dict[str, Entry] = {}
        #: Names for temporary files; next() on it is safe from any thread.
        self._temporaries = itertools.count(1)
        self._scanCost = 0.0
        self._nextScan = 0.0
        self._notify: Callable[[], object] | None = None
        self._reactor = reactor if watch else None
        #: The inotify watch, while it lasts.
        self._watch: Any = None
        #: File names (C{<id>.<ext>}) that events named since the last capture looked.
        self._dirty: set[str] = set()
        #: Per file name, the renames into the directory made by L{apply} whose events have
        #: not arrived yet: those events are the backend's own writes, already in the index.
        self._ownMoves: dict[str, int] = {}
        #: The next capture must scan the whole directory (at start, after a reload of the
        #: index, after lost events).
        self._rescan = True
        #: Full scans done, for tests.
        self.scans = 0
        #: Writes of L{applyMany} going on in a thread, during which the watch is not read.
        self._writing = 0

    # Lifecycle

    def start(self) -> Deferred[None]:
        """
        Create the directory and its state directory if missing, and remove the temporary
        files of writes that a crash interrupted: the changes they held were not marked as
        applied, so the partner delivers them again.
        """
        os.makedirs(self._state, exist_ok=True)
        if self._reactor is not None and self._watch is None:
            self._watch = _watchDirectory(self._reactor, self.path, self.changed)
            self._rescan = True
        for directory, prefixes in (
            (self.path, (".apply-",)), (self._state, (".index-", ".apply-"))
        ):
            for name in os.listdir(directory):
                if name.startswith(prefixes) and name.endswith(".tmp"):
                    os.remove(os.path.join(directory, name))
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """
        Stop watching the directory.
        """
        watch, self._watch = self._watch, None
        self._ownMoves.clear()
        if watch is not None:
            watch.loseConnection()
        return succeed(None)

    def setNotify(self, callback: object) -> None:
        """
        Called when the directory watch reports a change.
        """
        self._notify = callback  # type: ignore[assignment]

    @property
    def watching(self) -> bool:
        """
        Whether the directory is watched (captures look only at the files events named).
        """
        return self._watch is not None

    def changed(self, name: str, mask: int) -> None:
        """
        The directory watch saw C{mask} happen to the file C{name} ("" for the directory):
        note the file for the next capture and wake the pump. Lost events make the next
        capture scan everything; a watch that went away (the directory was removed or moved)
        leaves the backend polling.
        """
        if mask & (IN_Q_OVERFLOW | IN_IGNORED):
            self._rescan = True
            self._ownMoves.clear()  # the rescan compares every file with the index
            if mask & IN_IGNORED:
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Spool {name}: the watch of {path} ended; scanning at each poll",
                    name=self.name, path=self.path,
                )
                watch, self._watch = self._watch, None
                if watch is not None:
                    watch.loseConnection()
        elif name and not name.startswith(".") and os.path.splitext(name)[1] in EXTENSIONS:
            if mask & IN_MOVED_TO and self._takeOwnMove(name):
                # The rename of an applied write: apply() put it in the index already, so it
                # is neither read again nor a reason to wake the pump. Any other event for the
                # file (the application writing it after us) still marks it.
                return
            self._dirty.add(name)
        else:
            return
        if self._notify is not None:
            self._notify()

    def _takeOwnMove(self, name: str) -> bool:
        """
        Count off one pending rename of L{apply} into C{name}.

        @return: Whether there was one.
        """
        left = self._ownMoves.pop(name, 0)
        if left > 1:
            self._ownMoves[name] = left - 1
        return left > 0

    def nodesFor(self, change: Change) -> Sequence[str]:
        """
        Every object belongs to the configured node and, with a tag field, to the node of each
        of its tags (a deleted object to the configured node only).
        """
        if self.tagField is None or change.action is ChangeAction.DELETE:
            return self.nodes
        tags = _tagsOf(change.payload, change.contentType, self.tagField)
        return self.nodes + tuple(f"{self.tagPrefix}/{tag}" for tag in tags)

    def whitelists(self) -> Deferred[Mapping[str, Sequence[str]] | None]:
        """
        The whitelists file; see L{IWhitelistSource.whitelists}.
        """
        try:
            raw = _readJSON(self.whitelistFile)
            if raw is None:
                return succeed(None)
            if not isinstance(raw, dict) or not all(
                isinstance(k, str) and k and isinstance(v, list)
                and all(isinstance(j, str) for j in v)
                for k, v in raw.items()
            ):
                raise BrokenChange(
                    f"{self.whitelistFile}: expected an object of node names to lists of JIDs"
                )
            return succeed({k: tuple(v) for k, v in raw.items()})
        except Exception:  # noqa: BLE001 - reported through the Deferred
            return fail()

    def contacts(self) -> Deferred[Sequence[str]]:
        """
        The contacts file; see L{IContactSource.contacts}.
        """
        try:
            raw = _readJSON(self.contactsFile)
            if raw is None:
                return succeed(())
            if not isinstance(raw, list) or not all(isinstance(j, str) for j in raw):
                raise BrokenChange(f"{self.contactsFile}: expected a list of JIDs")
            return succeed(tuple(raw))
        except Exception:  # noqa: BLE001 - reported through the Deferred
            return fail()

    # Index generations

    def _indexPath(self, generation: int) -> str:
        return os.path.join(self._state, f"index-{generation}.json")

    def _load(self, since: str | None) -> None:
        if since is None:
            self._generation, self._index = 0, {}
            return
        generation = int(since)
        try:
            with open(self._indexPath(generation), encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Spool {name}: index {generation} is missing; capturing every file again",
                name=self.name, generation=generation,
            )
            raw = {}
        self._generation = generation
        self._index = {k: (v[0], v[1], v[2], v[3]) for k, v in raw.items()}

    def _save(self, generation: int) -> None:
        fd, temporary = tempfile.mkstemp(dir=self._state, prefix=".index-", suffix=".tmp")
        # json.dumps, not json.dump: only dumps uses the C encoder (several times faster on a
        # large index, written at every capture).
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(self._index, separators=(",", ":")))
        os.replace(temporary, self._indexPath(generation))

    def _forgetOlder(self, generation: int) -> None:
        for entry in os.scandir(self._state):
            if entry.name.startswith("index-") and entry.name.endswith(".json"):
                try:
                    older = int(entry.name[6:-5])
                except ValueError:
                    continue
                if older < generation:
                    os.unlink(entry.path)

    # Capture

    def _scan(self) -> dict[str, tuple[str, os.stat_result]]:
        self.scans += 1
        found: dict[str, tuple[str, os.stat_result]] = {}
        for entry in os.scandir(self.path):
            name = entry.name
            if name.startswith(".") or not entry.is_file():
                continue
            objectId, extension = os.path.splitext(name)
            if extension in EXTENSIONS:
                found[objectId] = (extension, entry.stat())
        return found

    def _look(self, names: set[str]) -> tuple[dict[str, tuple[str, os.stat_result]], set[str]]:
        """
        Stat the files of the objects that C{names} belong to, instead of the whole directory.

        @return: What L{_scan} returns for those objects, and the objects looked at.
        """
        objectIds = {os.path.splitext(name)[0] for name in names}
        found: dict[str, tuple[str, os.stat_result]] = {}
        for objectId in objectIds:
            for extension in EXTENSIONS:
                try:
                    result = os.stat(os.path.join(self.path, objectId + extension))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if statModule.S_ISREG(result.st_mode) and (
                    objectId not in found or objectId + extension in names
                ):
                    found[objectId] = (extension, result)
        return found, objectIds

    def capture(self, since: str | None, limit: int) -> Deferred[ChangeBatch]:
        """
        Compare the directory with the index of position C{since}; see
        L{IReplicationBackend.capture}.
        """
        try:
            return succeed(self._capture(since, limit))
        except Exception:  # noqa: BLE001 - reported through the Deferred
            return fail()

    def _capture(self, since: str | None, limit: int) -> ChangeBatch:
        # Generation 0 is the empty index of no position yet (nothing captured so far).
        if self._generation is None or since != (str(self._generation) if self._generation
                                                 else None):
            self._load(since)
            self._nextScan = 0.0
            self._rescan = True
        if since is not None and since != self._forgotten:
            # Once per saved position, not at every pass: the engine passes the same position
            # until a batch of changes is committed.
            self._forgetOlder(int(since))
            self._forgotten = since
        assert self._generation is not None
        looked: set[str] | None = None  # None: every object
        names: set[str] = set()
        if self._watch is not None and not self._rescan:
            if not self._dirty:
                return ChangeBatch((), since, False)
            names, self._dirty = self._dirty, set()
            present, looked = self._look(names)
        else:
            started = time.monotonic()
            if started < self._nextScan:
                return ChangeBatch((), since, False)
            # Events from now on name what changes after this scan.
            self._dirty, self._rescan = set(), False
            present = self._scan()
            self._scanCost = time.monotonic() - started
        # Stat first, read later: only the files that will be taken are read and hashed, so
        # a backlog larger than C{limit} is not read again at every pass.
        pending: list[tuple[int, str, str, os.stat_result | None]] = []  # None: removed
        # File times come from the kernel's coarse clock: two writes a few milliseconds apart
        # can leave the same size and mtime. A file changed within RACY_NS of now is therefore
        # read and hashed again instead of being trusted by its stat ("racily clean").
        racy = time.time_ns() - RACY_NS
        for objectId, (extension, found) in present.items():
            known = self._index.get(objectId)
            if (
                known
                and known[0] == found.st_size
                and known[1] == found.st_mtime_ns
                and found.st_mtime_ns < racy
            ):
                continue
            pending.append((found.st_mtime_ns, objectId, extension, found))
        removed = set(self._index) - set(present) if looked is None else {
            o for o in looked if o not in present and o in self._index
        }
        for objectId in removed:
            pending.append((0, objectId, "", None))
        pending.sort(key=lambda c: (c[0], c[1]))
        candidates: list[tuple[int, str, Change, Entry | None]] = []  # None: removed
        more = False
        for mtime, objectId, extension, stat in pending:
            if len(candidates) >= limit:
                more = True
                break
            if stat is None:
                change = Change(objectId=objectId, action=ChangeAction.DELETE, payload=b"",
                                contentType="")
                candidates.append((0, objectId, change, None))
                continue
            known = self._index.get(objectId)
            try:
                with open(os.path.join(self.path, objectId + extension), "rb") as f:
                    payload = f.read()
            except FileNotFoundError:
                more = True  # removed since the scan: the next pass sees it
                continue
            digest = hashlib.sha256(payload).hexdigest()
            entry: Entry = (stat.st_size, stat.st_mtime_ns, digest, extension)
            if known and known[2] == digest:
                self._index[objectId] = entry
                continue
            change = Change(
                objectId=objectId,
                action=ChangeAction.UPDATE if known else ChangeAction.CREATE,
                payload=payload,
                contentType=EXTENSIONS[extension],
                parent=_parentOf(payload, extension),
                updated=stat.st_mtime_ns / 1e9,
            )
            candidates.append((mtime, objectId, change, entry))
        if more and looked is None:
            self._rescan = True  # the rest is found by the next scan
        elif more:
            # What this batch did not take is looked at again by the next capture.
            takenIds = {c[1] for c in candidates}
            self._dirty |= {n for n in names if os.path.splitext(n)[0] not in takenIds}
        if not more and looked is None and self._scanCost > SLOW_SCAN:
            self._nextScan = time.monotonic() + SCAN_SPACING * self._scanCost
        if not candidates:
            return ChangeBatch((), since, False)
        taken = candidates
        for _, objectId, _change, taking in taken:
            if taking is None:
                self._index.pop(objectId, None)
            else:
                self._index[objectId] = taking
        self._generation += 1
        self._save(self._generation)
        return ChangeBatch(
            tuple(c[2] for c in taken), str(self._generation), more
        )

    # Apply

    def _existing(self, objectId: str) -> list[str]:
        return [
            os.path.join(self.path, objectId + extension)
            for extension in EXTENSIONS
            if os.path.exists(os.path.join(self.path, objectId + extension))
        ]

    def apply(self, change: Change) -> Deferred[None]:
        """
        Write or remove the object's file; see L{IReplicationBackend.apply}.
        """
        try:
            extension = self._extensionOf(change)
            self._expectMove(change, extension)
            try:
                written = self._write(change, extension)
            except BaseException:
                self._unexpectMove(change, extension)
                raise
            self._written(change, extension, written)
        except Exception:  # noqa: BLE001 - reported through the Deferred
            return fail()
        return succeed(None)

    def applyMany(self, changes: Sequence[Change]) -> Deferred[list[Exception | None]]:
        """
        Write or remove the objects' files in order, in a thread when the backend was given
        one (the file system's work then runs beside the reactor); see
        L{IBatchApply.applyMany}.
        """
        prepared: list[tuple[Change, str | None | BrokenChange]] = []
        for change in changes:
            try:
                extension = self._extensionOf(change)
            except BrokenChange as e:
                prepared.append((change, e))
                continue
            self._expectMove(change, extension)
            prepared.append((change, extension))

        def write() -> tuple[list[tuple[int, int, str] | Exception | None], BaseException | None]:
            results: list[tuple[int, int, str] | Exception | None] = []
            for change, extension in prepared:
                if isinstance(extension, BrokenChange):
                    results.append(extension)
                    continue
                try:
                    results.append(self._write(change, extension))
                except Exception as e:  # noqa: BLE001 - this change's outcome
                    results.append(e)
                except BaseException as e:  # noqa: BLE001 - handed to the reactor's side
                    return results, e
            return results, None

        def written(
            outcome: tuple[list[tuple[int, int, str] | Exception | None], BaseException | None],
        ) -> list[Exception | None]:
            results, error = outcome
            outcomes: list[Exception | None] = []
            for (change, extension), result in zip(prepared, results):
                if isinstance(extension, BrokenChange):
                    outcomes.append(extension)
                elif isinstance(result, Exception):
                    self._unexpectMove(change, extension)
                    outcomes.append(result)
                else:
                    self._written(change, extension, result)
                    outcomes.append(None)
            if error is not None:
                for change, extension in prepared[len(results):]:
                    if not isinstance(extension, BrokenChange):
                        self._unexpectMove(change, extension)
                raise error
            return outcomes

        if self._inThread is None:
            return maybeDeferred(write).addCallback(written)
        # The watch is not read while the thread writes: each rename into the directory is an
        # event, and reading them as they came woke the reactor every few writes (a third of
        # a catch-up's wake-ups). The kernel queues them meanwhile (an overflow makes the
        # next capture scan), and they are read together once the run is written.
        self._pauseWatch()
        return self._inThread(write).addBoth(self._resumeWatch).addCallback(written)

    def _pauseWatch(self) -> None:
        """
        Stop reading the watch's events while a run is written (see L{applyMany}).
        """
        self._writing += 1
        if self._writing == 1 and self._watch is not None:
            self._watch.stopReading()

    def _resumeWatch(self, result: T) -> T:
        """
        Read the watch's events again once no run is being written, passing C{result} on.
        """
        self._writing -= 1
        if not self._writing and self._watch is not None:
            self._watch.startReading()
            # The events of the run's time first, as if read while it was written: an
            # application's rename into a name the run expected its own rename for is then
            # seen before the run's outcome takes back a failed write's expectation.
            self._watch.drain()
        return result

    def _extensionOf(self, change: Change) -> str | None:
        """
        The extension of the file a change writes (L{None} for a delete).

        @raise BrokenChange: The object id cannot be a file name, or a spool cannot hold the
            content type.
        """
        if not _validId(change.objectId):
            raise BrokenChange(f"{change.objectId!r} cannot be a spool file name")
        if change.action is ChangeAction.DELETE:
            return None
        extension = _EXTENSION_OF.get(change.contentType)
        if extension is None:
            if change.contentType.endswith("json"):
                extension = ".json"
            elif change.contentType.endswith("xml"):
                extension = ".xml"
            else:
                raise BrokenChange(f"a spool cannot store {change.contentType!r}")
        return extension

    def _expectMove(self, change: Change, extension: str | None) -> None:
        """
        Note the rename into the directory that writing C{change} makes, before making it, so
        that the watch's event for it is known as the backend's own (see L{changed}).
        """
        if extension is not None and self._watch is not None:
            name = change.objectId + extension
            self._ownMoves[name] = self._ownMoves.get(name, 0) + 1

    def _unexpectMove(self, change: Change, extension: str | None) -> None:
        """
        Take back L{_expectMove} for a write that failed. Its rename may have happened all the
        same: its event then marks the file, which only costs the capture a read. When the
        count is gone already, an event took it while the write was going on in a thread, and
        that event may have been the application's own rename: the file is marked then.
        """
        if extension is None or self._watch is None:
            return
        name = change.objectId + extension
        if not self._takeOwnMove(name):
            self._dirty.add(name)
            if self._notify is not None:
                self._notify()

    def _write(self, change: Change, extension: str | None) -> tuple[int, int, str] | None:
        """
        Write the object's file (temporary file and rename) or remove it. This touches only
        the file system, never the backend's state, so that it can run in a thread.

        @return: The written file's size and mtime and the payload's digest (L{None} for a
            delete).
        @raise ParentMissing: The parent the change names has no file; nothing was written.
        """
        objectId = change.objectId
        if extension is None:
            for path in self._existing(objectId):
                os.unlink(path)
            return None
        if change.parent and not self._existing(change.parent):
            raise ParentMissing(change.parent)
        target = os.path.join(self.path, objectId + extension)
        # A name of our own (cheaper than mkstemp); O_EXCL still refuses to follow a stranger.
        # In the state directory (the same file system, so the rename stays atomic): the
        # watch then sees one event per write, the move in, and overflows later.
        temporary = os.path.join(
            self._state, f".apply-{os.getpid()}-{next(self._temporaries)}.tmp"
        )
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                view = memoryview(change.payload)
                while view:
                    view = view[os.write(fd, view):]
                # The file's size and mtime as the index keeps them: a rename changes neither,
                # so the stat of the open file spares a path lookup after the rename.
                stat = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        # The object's file under another extension (its content type changed): removing it
        # directly costs one system call where asking whether it exists costs one more.
        for other in EXTENSIONS:
            if other != extension:
                try:
                    os.unlink(os.path.join(self.path, objectId + other))
                except FileNotFoundError:
                    pass
        return stat.st_size, stat.st_mtime_ns, hashlib.sha256(change.payload).hexdigest()

    def _written(
        self, change: Change, extension: str | None, written: tuple[int, int, str] | None
    ) -> None:
        """
        Record a write of L{_write} in the index, so that the capture does not take it for a
        local change.
        """
        if written is None or extension is None:
            self._index.pop(change.objectId, None)
        else:
            self._index[change.objectId] = (*written, extension)


def makeBackend(name: str, options: Mapping[str, Any], reactor: Any) -> SpoolBackend:
    """
    A spool backend from its C{[backends.NAME]} keys C{path} and C{node}, and the optional
    C{tag_field}, C{tag_prefix}, C{whitelist_file}, C{contacts_file} and C{watch} (watch the
    directory with inotify on C{reactor} where possible; default true).

    @raise BackendSettingsError: A key is missing, unknown or of the wrong type.
    """
    known = {
        "path", "node", "poll_interval", "batch_size", "whitelist_interval", "tag_field",
        "tag_prefix", "whitelist_file", "contacts_file", "watch",
    }
    for key in options:
        if key not in known:
            raise BackendSettingsError(
                f"backends.{name}.{key}: unknown key for a spool backend "
                f"(known: {', '.join(sorted(known | {'type'}))})"
            )
    for key in ("path", "node"):
        if not isinstance(options.get(key), str) or not options[key]:
            raise BackendSettingsError(f"backends.{name}.{key}: required for a spool backend")
    for key in ("tag_field", "tag_prefix", "whitelist_file", "contacts_file"):
        if key in options and (not isinstance(options[key], str) or not options[key]):
            raise BackendSettingsError(f"backends.{name}.{key}: expected a non-empty string")
    if not isinstance(options.get("watch", True), bool):
        raise BackendSettingsError(f"backends.{name}.watch: expected true or false")
    if "tag_prefix" in options and not options["tag_prefix"].startswith("/"):
        raise BackendSettingsError(f"backends.{name}.tag_prefix: expected a node path like /docs")
    if "tag_prefix" in options and "tag_field" not in options:
        raise BackendSettingsError(f"backends.{name}.tag_prefix: needs tag_field")
    files = {
        key: os.path.join(options["path"], options[key]) if key in options else None
        for key in ("whitelist_file", "contacts_file")
    }
    return SpoolBackend(
        name, options["path"], options["node"], options.get("tag_field"),
        options.get("tag_prefix"), files["whitelist_file"], files["contacts_file"],
        reactor, options.get("watch", True), inThread=_threadsOf(reactor),
    )


def _threadsOf(reactor: Any) -> Callable[[Callable[[], Any]], Deferred[Any]] | None:
    """
    Run callables in C{reactor}'s thread pool, when it has one.
    """
    if not IReactorThreads.providedBy(reactor):
        return None
    return lambda work: deferToThreadPool(reactor, reactor.getThreadPool(), work)
