"""
The replication engine: local changes into Hermod's own nodes, partner items into the local
backend.

L{ReplicationEngine.publishLocal} turns a backend's captured changes into change items and
publishes them through the L{PubSubPolicy} as the component itself, with no XMPP round trip.
L{ReplicationEngine.receive} takes items that arrived from a partner's node (live notifications,
archive pages or refresh pages), queues them, and applies them in order in batches: transform,
decode, drop echoes, refuse read-only partners, keep only newer versions, apply, park what cannot
be applied yet, and republish what was applied into the own nodes (with one more hop) so that
changes travel around a ring.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hermod_component.backends.errors import BrokenChange, ParentMissing
from hermod_component.config import PartnerSettings
from hermod_component.errors import NodeExists, NodeNotFound
from hermod_component.interfaces import IBatchApply, IReplicationBackend, IReplicationStore
from hermod_component.metrics import REPLICATION_ITEMS, REPLICATION_LAG
from hermod_component.model import (
    Affiliation,
    Change,
    ChangeAction,
    Conflict,
    ParkedItem,
    VersionRecord,
)
from hermod_component.replication.codec import (
    DecodeError,
    contentHash,
    decodeChange,
    decodeItem,
    encodeChange,
    treeWithHop,
    withHop,
)
from hermod_component.replication.transform import Transform, TransformError
from hermod_component.replication.version import (
    HybridClock,
    isConcurrent,
    isNewer,
    nextVersion,
)

T = TypeVar("T")

#: Items that travelled through more Hermods than this are dropped as looping.
MAX_HOPS = 16

#: Affiliations that make a partner a read-write replica.
WRITERS = (Affiliation.OWNER, Affiliation.PUBLISHER)

#: The most payload bytes published in one request, so that one notification stays well under
#: XMPP servers' stanza limits (Prosody closes a component stream sending a stanza over
#: C{component_stanza_size_limit}, 512 KiB by default, as not-well-formed).
MAX_PUBLISH_BYTES = 128 * 1024

#: A batch of received entries takes whole L{ReplicationEngine.receive} calls up to this many
#: entries (one call may hold more): fewer, the storage's per-transaction cost weighs more;
#: more, an archive page queued while the one before is applied joins the page after it, and
#: both are applied (and then saved) one after the other instead of overlapping.
STAGE_ITEMS = 256

#: A batch of fewer received entries is saved before the next one is applied (see
#: L{_Stage.sequential}); larger ones (archive pages) are saved while the next is applied.
OVERLAP_ENTRIES = 64

#: Configuration of the nodes a backend publishes to, when Hermod creates them.
NODE_OPTIONS: Mapping[str, Sequence[str]] = {"pubsub#max_items": ["max"]}



@attrs.frozen
class Received:
    """
    One item from a partner node, waiting to be applied.

    @ivar archiveId: The partner's archive id of the item, when it came from the archive.
    @ivar retracted: The partner retracted the item from its node (the object left the node);
        C{payload} is then C{b""}.
    """

    partner: PartnerSettings
    itemId: str
    payload: bytes
    archiveId: str | None = None
    parkedId: int | None = None
    retracted: bool = False


class _Batch:
    """
    What applying one batch of partner items for a backend gathers.

    @ivar known: The version held for each object, updated as the batch goes.
    @ivar records: The new version records, in order, saved at the next flush.
    @ivar republish: Per own node, the items to republish (with one more hop).
    @ivar leaving: Per own node, the objects to retract from it.
    @ivar applied: The objects applied.
    @ivar marks: The partner archive ids that the batch's items reach, per C{(jid, node)}.
    @ivar ready: The parked items waiting for an object the batch applied, retried once it is
        saved.
    """

    def __init__(self, backend: IReplicationBackend, known: dict[str, VersionRecord]) -> None:
        self.backend = backend
        self.known = known
        self.records: list[VersionRecord] = []
        self.republish: dict[str, list[tuple[str | None, bytes]]] = defaultdict(list)
        self.leaving: dict[str, list[str]] = defaultdict(list)
        self.applied: set[str] = set()
        self.marks: dict[tuple[str, str], str] = {}
        self.ready: list[ParkedItem] = []

    def keep(self, record: VersionRecord) -> None:
        """
        Hold C{record} as its object's version from now on.
        """
        self.known[record.objectId] = record
        self.records.append(record)


class _Stage:
    """
    One drained batch of queued entries, applied to the backends and waiting to be saved: its
    republish into the own nodes, its versions and its partner marks.

    @ivar entries: The queued entries (received items and marks).
    @ivar receivers: Fired once the batch is saved (or failed with it).
    @ivar batches: What applying its items to each backend gathered.
    @ivar marks: The marks queued with the items, saved after them.
    """

    def __init__(
        self,
        entries: Sequence[Received | tuple[PartnerSettings, str]],
        receivers: list[Deferred[None]],
    ) -> None:
        self.entries = entries
        self.receivers = receivers
        self.batches: list[_Batch] = []
        self.marks: list[tuple[PartnerSettings, str]] = []

    @property
    def sequential(self) -> bool:
        """
        Whether this stage is saved before anything else is applied: when saving it retries
        parked items (a retry applies and saves items of its own), and when it is small (live
        notifications), which gains nothing from applying the next meanwhile: the next
        batch's reads wait behind its save in the storage's thread, and both threads then
        contend for the interpreter lock, which delayed live changes.
        """
        return len(self.entries) < OVERLAP_ENTRIES or any(batch.ready for batch in self.batches)


class _Saving:
    """
    A stage being saved, while the engine applies the next batch: its outcome once known.

    @ivar failure: Why saving failed, once it did.
    """

    def __init__(self, stage: _Stage, saved: Deferred[None]) -> None:
        self.stage = stage
        self.done = False
        self.failure: Failure | None = None
        self._waiters: list[Deferred[None]] = []
        saved.addCallbacks(self._finished, self._failed)

    def _failed(self, failure: Failure) -> None:
        self.failure = failure
        self._finished(None)

    def _finished(self, _: object) -> None:
        self.done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def wait(self) -> Deferred[None]:
        """
        A L{Deferred} that fires (never fails) once saving is done.
        """
        waiter: Deferred[None] = Deferred()
        if self.done:
            waiter.callback(None)
        else:
            self._waiters.append(waiter)
        return waiter


async def _applyOne(backend: IReplicationBackend, change: Change) -> Exception | None:
    """
    The outcome of applying one change through L{IReplicationBackend.apply}: L{None}, or the
    exception it raised (a backend failing on one change does not stop the others).
    """
    try:
        await backend.apply(change)
    except Exception as e:  # noqa: BLE001 - the outcome of this change, parked by the engine
        return e
    return None


def sourceOf(partner: PartnerSettings) -> str:
    """
    How a partner subscription is named in L{VersionRecord.sources}.
    """
    return f"{partner.jid} {partner.node}"


class ReplicationEngine:
    """
    Replication between the local backends and Hermod's nodes, for one Hermod.

    @ivar counters: Per C{(partner, node)}: in-memory counts since start, by outcome
        (C{received}, C{applied}, C{refused}, C{parked}, C{ignored}); the same are added to
        the store at each flush.
    @ivar published: How many local changes were published since start.
    """

    log = Logger()

    def __init__(
        self,
        policy: Any,
        store: IReplicationStore,
        backends: Mapping[str, IReplicationBackend],
        partners: Sequence[PartnerSettings],
        clock: IReactorTime,
    ) -> None:
        """
        @param policy: The L{hermod_component.policy.PubSubPolicy} of this Hermod.
        """
        self.policy = policy
        self.store = store
        self.backends = dict(backends)
        self.partners = tuple(partners)
        self.clock = clock
        self.jid: str = policy.service
        self.hlc = HybridClock(clock)
        self.counters: dict[tuple[str, str], dict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.published = 0
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        #: The received entries (items and marks) waiting, one group per L{receive} call,
        #: each with the L{Deferred} fired once the batch holding them is applied and saved.
        self._queue: list[tuple[list[Received | tuple[PartnerSettings, str]], Deferred[None]]] = []
        self._lock = DeferredLock()
        #: Whether a drain of the queue holds or awaits the lock.
        self._draining = False
        self._stillParked: set[int] = set()
        self._transforms: dict[str, Transform] = {}
        #: Nodes known to exist, created by L{_ensureNode}.
        self._ready: set[str] = set()
        #: The nodes prepared for each backend.
        self._nodesOf: dict[str, set[str]] = defaultdict(set)
        self._itemCounters: dict[tuple[tuple[str, str], str], Any] = {}
        #: Partner subscriptions with items that failed to apply as a whole, and how many
        #: times: their checkpoint marks are ignored until L{settled}.
        self._unsettled: dict[tuple[str, str], int] = {}
        #: Versions of applied changes, by backend and object, saved at the next flush in the
        #: same transaction as the partner marks.
        self._unsaved: dict[str, dict[str, VersionRecord]] = defaultdict(dict)
        #: Batches applied and not saved yet (their republish and versions being written
        #: while the next batch is applied), oldest first: their versions are held already.
        self._inflight: list[_Batch] = []
        #: The stage being saved while the next batch is applied, during that apply.
        self._behind: _Saving | None = None
        #: Fired when items are queued while a drain waits for a stage being saved.
        self._wake: Deferred[None] | None = None
        for partner in self.partners:
            if partner.transform and partner.transform not in self._transforms:
                self._transforms[partner.transform] = Transform(partner.transform)

    # -- start -------------------------------------------------------------------------------

    def _locked(
        self, work: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> Deferred[T]:
        """
        Run C{work(*args)} once the engine lock is free, holding it: publishing local
        changes, applying partner items, retrying parked ones and saving what they gathered
        never interleave.
        """
        return self._lock.run(lambda: Deferred.fromCoroutine(work(*args)))

    async def prepare(self) -> None:
        """
        Create each backend's nodes if missing (owned by the component) and give each partner
        its configured role on them when it has no affiliation yet.
        """
        for backend in self.backends.values():
            for node in backend.nodes:
                await self._ensureNode(backend.name, node)

    async def _ensureNode(self, backendName: str, node: str) -> None:
        await self.ensureNode(backendName, node, NODE_OPTIONS)

    async def ensureNode(
        self, backendName: str, node: str, options: Mapping[str, Sequence[str]]
    ) -> None:
        """
        Create an own node of a backend with C{options} if missing (such as a tag node an
        object is published to for the first time) and give the backend's partners their
        roles on it; an existing node keeps its configuration.
        """
        if node in self._ready:
            return
        try:
            await self.policy.createNode(self.jid, node, options)
        except NodeExists:
            pass
        await self._giveRoles(backendName, node, self.partners)
        self._ready.add(node)
        self._nodesOf[backendName].add(node)

    async def _giveRoles(
        self, backendName: str, node: str, partners: Sequence[PartnerSettings]
    ) -> None:
        """
        Give each of C{partners} of the backend its configured role on C{node} when it has no
        affiliation there yet.
        """
        affiliations = await self.policy.getAffiliations(self.jid, node)
        changes = {
            p.jid: p.role
            for p in partners
            if p.backend == backendName and p.jid not in affiliations
        }
        if changes:
            await self.policy.setAffiliations(self.jid, node, changes)

    async def addPartner(self, partner: PartnerSettings) -> bool:
        """
        Add a partner subscription found at run time (partner discovery): it is handled like a
        configured one from now on, and gets its role on the backend's nodes when it has none.

        @return: Whether it was new.
        """
        if self.partnerFor(partner.jid, partner.node) is not None:
            return False
        if partner.transform and partner.transform not in self._transforms:
            self._transforms[partner.transform] = Transform(partner.transform)
        self.partners = self.partners + (partner,)
        backend = self.backends[partner.backend]
        for node in sorted(set(backend.nodes) | self._nodesOf[backend.name]):
            await self._ensureNode(backend.name, node)
            await self._giveRoles(backend.name, node, [partner])
        return True

    def failures(self, partner: PartnerSettings) -> int:
        """
        How many batches with the partner's items failed as a whole since it last settled.
        """
        return self._unsettled.get((partner.jid, partner.node), 0)

    def settled(self, partner: PartnerSettings, failures: int) -> None:
        """
        A catch-up from the partner's saved mark, started when L{failures} was C{failures},
        has ended: what failed before it started was fetched and applied again, so its
        checkpoint marks count again, unless more failed meanwhile.
        """
        key = (partner.jid, partner.node)
        if self._unsettled.get(key, 0) == failures:
            self._unsettled.pop(key, None)

    def removePartner(self, partner: PartnerSettings) -> bool:
        """
        Stop handling a partner subscription found at run time whose contact has gone: its
        items are ignored from now on (those queued already are still applied). Its saved
        mark and counters stay, so that it resumes where it was if it comes back.

        @return: Whether it was a partner subscription.
        """
        kept = tuple(
            p for p in self.partners if (p.jid, p.node) != (partner.jid, partner.node)
        )
        removed = len(kept) != len(self.partners)
        self.partners = kept
        return removed

    # -- local changes -----------------------------------------------------------------------

    async def publishLocal(self, backendName: str, changes: Sequence[Change]) -> int:
        """
        Publish captured changes into the backend's nodes as change items, after giving each a
        version; changes whose content Hermod already holds (such as the backend's copy of an
        applied remote change) are skipped.

        This runs under the same lock as applying partner items: both read the versions held
        and then write them, so interleaving them could overwrite a newer version with the
        older one read before it (a local edit lost against a concurrent remote one).

        @return: How many changes were published.
        """
        published: int = await self._locked(self._publishLocal, backendName, changes)
        return published

    async def _publishLocal(self, backendName: str, changes: Sequence[Change]) -> int:
        backend = self.backends[backendName]
        latest: dict[str, Change] = {}
        for change in changes:
            latest.pop(change.objectId, None)
            latest[change.objectId] = change
        known = await self._knownVersions(backendName, list(latest))
        byNode: dict[str, list[tuple[str | None, bytes]]] = defaultdict(list)
        leaving: dict[str, list[str]] = defaultdict(list)
        records = []
        now = self.clock.seconds()
        for objectId, change in latest.items():
            current = known.get(objectId)
            deleted = change.action is ChangeAction.DELETE
            try:
                digest = "" if deleted else contentHash(change.payload, change.contentType)
            except DecodeError as e:
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Not publishing {object} of {backend}: {reason}",
                    object=objectId, backend=backendName, reason=str(e),
                )
                continue
            if current is not None and current.deleted == deleted and (
                deleted or current.hash == digest
            ):
                continue
            if current is None and deleted:
                continue
            version = nextVersion(current.version if current else None, self.hlc, self.jid)
            full = attrs.evolve(
                change,
                version=version,
                previous=current.version if current else "",
                origin=self.jid,
                hops=(self.jid,),
                hash=digest,
                updated=now,
            )
            payload = encodeChange(full)
            nodes = self._route(backend, full, current, byNode, leaving, payload)
            records.append(VersionRecord(
                objectId, version, digest, deleted, nodes,
                current.sources if current else (),
            ))
        await self._publishAndRetract(backendName, byNode, leaving)
        if records:
            unsaved = self._unsaved[backendName]
            for record in records:
                unsaved.pop(record.objectId, None)  # this one is newer
            await self.store.saveVersions(backendName, records)
            self.published += len(records)
        return len(records)

    def _route(
        self,
        backend: IReplicationBackend,
        change: Change,
        current: VersionRecord | None,
        byNode: dict[str, list[tuple[str | None, bytes]]],
        leaving: dict[str, list[str]],
        payload: bytes,
    ) -> tuple[str, ...]:
        """
        Add a change item to the nodes it goes to, and its object to the nodes it leaves.

        An update goes to the nodes the object belongs to now and leaves (is retracted from)
        the other nodes it was last published to; a delete's tombstone goes to both, so every
        node that held the object learns of its deletion.

        @return: The nodes the item goes to.
        """
        nodes = tuple(dict.fromkeys(backend.nodesFor(change)))
        previous = current.nodes if current is not None else ()
        if change.action is ChangeAction.DELETE:
            nodes = tuple(dict.fromkeys(previous + nodes))
        else:
            for node in previous:
                if node not in nodes:
                    leaving[node].append(change.objectId)
        for node in nodes:
            byNode[node].append((change.objectId, payload))
        return nodes

    async def _publishAndRetract(
        self,
        backendName: str,
        byNode: Mapping[str, Sequence[tuple[str | None, bytes]]],
        leaving: Mapping[str, Sequence[str]],
    ) -> None:
        """
        Publish the items, then retract the objects that left nodes: in this order, so that a
        partner subscribed to both the old and the new node of an object receives it in the
        new one before it leaves the old one, and never loses it.
        """
        for node, items in byNode.items():
            await self._ensureNode(backendName, node)
            await self._publish(node, items)
        for node, objectIds in leaving.items():
            await self._retract(node, objectIds)

    async def _retract(self, node: str, objectIds: Sequence[str]) -> None:
        """
        Retract those of the objects' items that the own node holds, notifying subscribers.
        """
        try:
            present = await self.policy.storage.getItems(node, itemIds=list(objectIds))
        except NodeNotFound:
            return
        ids = [item.itemId for item in present]
        if ids:
            await self.policy.retract(self.jid, node, ids, True)
            self.log.info(
                "Retracted {count} objects that left {node}", count=len(ids), node=node
            )

    async def _publish(self, node: str, items: Sequence[tuple[str | None, bytes]]) -> None:
        """
        Publish items into an own node in requests of at most L{MAX_PUBLISH_BYTES} of payload
        (at least one item each).
        """
        chunk: list[tuple[str | None, bytes]] = []
        size = 0
        for item in items:
            if chunk and size + len(item[1]) > MAX_PUBLISH_BYTES:
                await self.policy.publish(self.jid, node, chunk, None)
                chunk, size = [], 0
            chunk.append(item)
            size += len(item[1])
        if chunk:
            await self.policy.publish(self.jid, node, chunk, None)

    async def _knownVersions(
        self, backendName: str, objectIds: Sequence[str]
    ) -> dict[str, VersionRecord]:
        """
        The versions held for the objects: saved ones, overridden by those applied and not
        saved yet.
        """
        # Taken before reading the store: a batch being saved meanwhile leaves the lists
        # (its versions then saved), and the store's answer may predate its commit.
        held: dict[str, VersionRecord] = {}
        unsaved = self._unsaved.get(backendName)
        if unsaved:
            for objectId in objectIds:
                record = unsaved.get(objectId)
                if record is not None:
                    held[objectId] = record
        if self._inflight:
            wanted = set(objectIds)
            for batch in self._inflight:
                if batch.backend.name == backendName:
                    for record in batch.records:
                        if record.objectId in wanted:
                            held[record.objectId] = record
        known = await self.store.getVersions(backendName, objectIds)
        known.update(held)
        return known

    # -- partner items -----------------------------------------------------------------------

    def partnerFor(self, jid: str, node: str) -> PartnerSettings | None:
        """
        The configured subscription to C{node} of partner C{jid}, if any.
        """
        for partner in self.partners:
            if partner.jid == jid and partner.node == node:
                return partner
        return None

    def receive(
        self, items: Sequence[Received], mark: tuple[PartnerSettings, str] | None = None
    ) -> Deferred[None]:
        """
        Queue items from partners; they are applied in arrival order, in batches.

        @param mark: A partner archive id that every item received before this call (and
            these items) reach: saved as the partner's mark once they are applied.
        @return: Fires once these items (and all queued before) are applied, parked or
            refused, and the partner marks and counters are saved.
        """
        entries: list[Received | tuple[PartnerSettings, str]] = list(items)
        if mark is not None:
            entries.append(mark)
        applied: Deferred[None] = Deferred()
        self._queue.append((entries, applied))
        if not self._draining:
            # One drain at a time takes the lock, whatever the number of notifications that
            # arrive meanwhile: a lock waiter per notification made the lock's release run
            # every waiting drain inside the previous one's stack (each found an empty queue
            # and finished at once), and a few hundred of them (notifications arriving while
            # a slow batch was applied) overflowed the stack, leaving the lock held for ever.
            self._draining = True
            self._locked(self._drain)
        else:
            self._poke()
        return applied

    def _poke(self) -> None:
        """
        Wake a drain waiting for new items or for the stage being saved.
        """
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.callback(None)

    async def _drain(self) -> None:
        """
        Apply and save the queued entries in batches, in order, one batch being saved while
        the next is applied: the storage's work for one (its republish into the own nodes, its
        versions and marks, in the storage's thread) overlaps with decoding and writing the
        next, as during a catch-up, whose next archive page is queued meanwhile.

        A batch is applied knowing the versions of the one being saved. Each batch's marks
        are saved after its own items (and those before them) are applied and republished;
        when saving a batch fails, the one applied meanwhile fails with it (receivers
        errbacked, marks not saved), since its marks would skip the failed one's items.
        """
        saving: _Saving | None = None
        try:
            while True:
                if not self._queue:
                    if saving is None:
                        break
                    if not saving.done:
                        # Nothing to apply meanwhile: wait for new items or the save.
                        self._wake = Deferred()
                        saving.wait().addCallback(lambda _: self._poke())
                        await self._wake
                        continue
                    self._settle(saving.stage, saving.failure)
                    saving = None
                    continue
                stage = self._nextStage()
                error: Failure | None = None
                self._behind = saving
                try:
                    await self._applyStage(stage)
                except Exception:  # noqa: BLE001 - handed to that batch's receivers, the drain goes on
                    error = Failure()
                finally:
                    self._behind = None
                if saving is not None:
                    await saving.wait()
                    self._settle(saving.stage, saving.failure)
                    if saving.failure is not None and error is None:
                        error = saving.failure
                    saving = None
                if error is not None:
                    self._forget(stage)
                    self._settle(stage, error)
                    continue
                self._inflight.extend(stage.batches)
                saving = _Saving(stage, Deferred.fromCoroutine(self._saveStage(stage)))
                if stage.sequential:
                    await saving.wait()
        finally:
            self._draining = False

    def _nextStage(self) -> _Stage:
        """
        The next batch of queued entries: whole L{receive} calls, up to L{STAGE_ITEMS}
        entries (or one call holding more), so that an archive page handed over while the
        one before is applied makes a batch of its own, saved while the next is applied, and
        single notifications are still applied together.
        """
        taken = 0
        count = 0
        for entries, _ in self._queue:
            if count and taken + len(entries) > STAGE_ITEMS:
                break
            taken += len(entries)
            count += 1
        groups, self._queue = self._queue[:count], self._queue[count:]
        return _Stage([e for entries, _ in groups for e in entries],
                      [receiver for _, receiver in groups])

    def _settle(self, stage: _Stage, failure: Failure | None) -> None:
        """
        Fire a stage's receivers with its outcome.
        """
        if failure is None:
            for receiver in stage.receivers:
                receiver.callback(None)
            return
        # Their items are neither applied nor parked: no checkpoint may move those partners'
        # marks past them until a catch-up has brought them.
        for key in {(e.partner.jid, e.partner.node)
                    for e in stage.entries if isinstance(e, Received)}:
            self._unsettled[key] = self._unsettled.get(key, 0) + 1
        for receiver in stage.receivers:
            receiver.errback(failure)

    def _forget(self, stage: _Stage) -> None:
        """
        Stop holding the versions of a stage's batches (saved or failed).
        """
        for batch in stage.batches:
            if batch in self._inflight:
                self._inflight.remove(batch)

    async def _applyStage(self, stage: _Stage) -> None:
        """
        Apply the items of a stage to their backends, gathering what saving it writes.
        """
        byBackend: dict[str, list[Received]] = defaultdict(list)
        for entry in stage.entries:
            if isinstance(entry, tuple):
                stage.marks.append(entry)
            else:
                byBackend[entry.partner.backend].append(entry)
        for backendName, received in byBackend.items():
            stage.batches.append(await self._prepareBatch(backendName, received))

    async def _saveStage(self, stage: _Stage) -> None:
        """
        Republish what a stage applied and save its versions, marks and counters.
        """
        try:
            for batch in stage.batches:
                await self._finishBatch(batch)
            # A mark follows the items received before it, all applied now.
            for partner, archiveId in stage.marks:
                if (partner.jid, partner.node) in self._unsettled:
                    continue
                self._pending.setdefault(
                    (partner.jid, partner.node), {"counts": defaultdict(int)}
                )["mark"] = archiveId
            await self._flush()
        finally:
            self._forget(stage)

    def _countEach(self, outcome: str, partners: Sequence[PartnerSettings]) -> None:
        """
        L{_count} one C{outcome} per entry of C{partners}, with one call per subscription.
        """
        counts: dict[tuple[str, str], list[Any]] = {}
        for partner in partners:
            key = (partner.jid, partner.node)
            counted = counts.get(key)
            if counted is None:
                counts[key] = [partner, 1]
            else:
                counted[1] += 1
        for partner, n in counts.values():
            self._count(partner, outcome, n)

    def _count(self, partner: PartnerSettings, outcome: str, n: int = 1) -> None:
        key = (partner.jid, partner.node)
        self.counters[key][outcome] += n
        counter = self._itemCounters.get((key, outcome))
        if counter is None:
            counter = REPLICATION_ITEMS.labels(partner.jid, partner.node, outcome)
            self._itemCounters[(key, outcome)] = counter
        counter.inc(n)
        pending = self._pending.setdefault(key, {"counts": defaultdict(int)})
        pending["counts"][outcome] += n

    async def flush(self) -> None:
        """
        Save the versions of the changes applied, and the counters, marks, last apply times and
        lags gathered since the last flush, in one store transaction.

        It waits for a batch being applied to end: a batch's versions and partner marks are
        gathered before it republishes into the own nodes, and saving them in between (a
        periodic flush did) let a replica killed at that moment restart past items it had
        applied but never republished.
        """
        await self._locked(self._flush)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        unsaved, self._unsaved = self._unsaved, defaultdict(dict)
        versions = {name: list(records.values()) for name, records in unsaved.items() if records}
        if not pending and not versions:
            return
        try:
            await self.store.saveApplied(
                versions,
                [
                    (jid, node, values.get("mark"), dict(values["counts"]),
                     values.get("lastApplied"), values.get("lag"))
                    for (jid, node), values in pending.items()
                ],
            )
        except Exception:
            # Kept for the next flush: dropping them would let a later one save marks past
            # changes whose versions were never saved (applied again, or taken for local
            # edits). What was gathered meanwhile is newer and wins.
            for key, values in pending.items():
                newer = self._pending.setdefault(key, {"counts": defaultdict(int)})
                for outcome, n in values["counts"].items():
                    newer["counts"][outcome] += n
                for name in ("mark", "lastApplied", "lag"):
                    if name in values:
                        newer.setdefault(name, values[name])
            for name, records in unsaved.items():
                for objectId, record in records.items():
                    self._unsaved[name].setdefault(objectId, record)
            raise

    async def _writers(self, backend: IReplicationBackend) -> set[str]:
        writers: set[str] = set()
        for node in backend.nodes:
            affiliations = await self.policy.getAffiliations(self.jid, node)
            writers.update(j for j, a in affiliations.items() if a in WRITERS)
        return writers

    def _decode(self, item: Received) -> tuple[Change, Any]:
        """
        Decode an item, after the partner's transform if it has one: the item as sent must be
        intact (its hash checked), then the transformed content gets a hash of its own.

        @return: The change, and the parsed item to republish with one more hop (L{None} for
            a transformed item, which is encoded again).
        """
        if not item.partner.transform:
            return decodeItem(item.itemId, item.payload)
        decodeChange(item.itemId, item.payload)
        payload = self._transforms[item.partner.transform](item.payload)
        change = decodeChange(item.itemId, payload, verifyHash=False)
        if change.action is ChangeAction.DELETE:
            return change, None
        return attrs.evolve(change, hash=contentHash(change.payload, change.contentType)), None

    async def _park(
        self, backendName: str, item: Received, reason: str, waitingFor: str
    ) -> None:
        if item.parkedId is not None:
            self._stillParked.add(item.parkedId)
            await self.store.updateParked(item.parkedId, reason, waitingFor)
            return
        self.log.warn(  # noqa: G010 - twisted.logger has no warning()
            "Parked {object} from {partner} {node}: {reason}",
            object=item.itemId, partner=item.partner.jid, node=item.partner.node, reason=reason,
        )
        await self.store.park(
            ParkedItem(0, backendName, item.partner.jid, item.partner.node, item.itemId,
                       item.payload, reason, waitingFor, 0, self.clock.seconds())
        )
        self._count(item.partner, "parked")

    async def _applyBatch(self, backendName: str, received: Sequence[Received]) -> set[str]:
        """
        Apply items for one backend in order, then republish and hold what was applied.

        @return: The ids of the objects applied.
        """
        batch = await self._prepareBatch(backendName, received)
        await self._finishBatch(batch)
        return batch.applied

    async def _prepareBatch(self, backendName: str, received: Sequence[Received]) -> _Batch:
        """
        Apply items for one backend in order, gathering what L{_finishBatch} republishes and
        holds: their versions are not held (nor saved) until then.
        """
        backend = self.backends[backendName]
        writers = await self._writers(backend)
        # (item, change or None when retracted, parsed item or None)
        decoded: list[tuple[Received, Change | None, Any]] = []
        # Partner marks, saved only once every item before them is applied, parked or
        # refused: a batch that fails leaves the marks where they were, so that its items are
        # delivered again and not skipped.
        marks: dict[tuple[str, str], str] = {}
        self._countEach("received", [item.partner for item in received if item.parkedId is None])
        for item in received:
            if item.archiveId is not None:
                marks[(item.partner.jid, item.partner.node)] = item.archiveId
            if item.retracted:
                if item.partner.jid in writers:
                    decoded.append((item, None, None))
                else:
                    self._count(item.partner, "refused")
                continue
            try:
                change, tree = self._decode(item)
            except (DecodeError, TransformError) as e:
                if item.partner.jid in writers:
                    await self._park(backendName, item, f"broken: {e}", "")
                else:
                    self._count(item.partner, "refused")
                continue
            if change.origin == self.jid or self.jid in change.hops or (
                len(change.hops) >= MAX_HOPS
            ):
                self._count(item.partner, "ignored")
                continue
            if item.partner.jid not in writers:
                self.log.warn(  # noqa: G010 - twisted.logger has no warning()
                    "Refused {object} from read-only partner {partner}",
                    object=item.itemId, partner=item.partner.jid,
                )
                self._count(item.partner, "refused")
                continue
            decoded.append((item, change, tree))
        batch = _Batch(
            backend,
            await self._knownVersions(
                backendName, [c.objectId if c else i.itemId for i, c, _ in decoded]
            ),
        )
        # Changes to apply, handed to the backend together: a run ends before a retraction
        # and before a second change of an object in it, whose fate depends on the first's.
        run: list[tuple[Received, Change, VersionRecord | None, Any]] = []
        inRun: set[str] = set()
        for item, maybe, tree in decoded:
            objectId = maybe.objectId if maybe is not None else item.itemId
            if run and (maybe is None or objectId in inRun):
                await self._applyRun(batch, run)
                run, inRun = [], set()
            if maybe is None:
                left = await self._leave(backend, item, batch.known.get(item.itemId))
                if left is not None:
                    record, fromNodes = left
                    batch.keep(record)
                    for node in fromNodes:
                        batch.leaving[node].append(item.itemId)
                continue
            change = maybe
            self.hlc.observe(change.version)
            current = batch.known.get(change.objectId)
            if await self._toApply(backendName, backend, item, change, current, batch):
                run.append((item, change, current, tree))
                inRun.add(objectId)
        if run:
            await self._applyRun(batch, run)
        batch.marks = marks
        if batch.applied:
            parked = await self.store.listParked(backendName)
            batch.ready = [p for p in parked if p.waitingFor and p.waitingFor in batch.applied]
        return batch

    async def _finishBatch(self, batch: _Batch) -> None:
        """
        Republish what a batch applied into the own nodes, then hold its versions and marks
        for the next flush, and retry the parked items that waited for what it applied.
        """
        backendName = batch.backend.name
        await self._publishAndRetract(backendName, batch.republish, batch.leaving)
        # After the republish: if it fails, the versions are not held either, and the items
        # delivered again are applied and republished again.
        unsaved = self._unsaved[backendName]
        for record in batch.records:
            unsaved[record.objectId] = record
        for key, archiveId in batch.marks.items():
            self._pending.setdefault(key, {"counts": defaultdict(int)})["mark"] = archiveId
        for item in batch.ready:
            await self._retryOne(item.parkedId)

    async def _leave(
        self, backend: IReplicationBackend, item: Received, current: VersionRecord | None
    ) -> tuple[VersionRecord, tuple[str, ...]] | None:
        """
        A partner node no longer holds an object: forget it as a source of the object, and when
        it was the last subscription the object was received through, remove the local copy
        and retract it from the own nodes (it is out of this replica's scope now; a later
        version published to a subscribed node brings it back).

        @return: The new version record and the own nodes to retract the object from, or
            L{None} when the retraction changes nothing.
        """
        source = sourceOf(item.partner)
        if current is None or source not in current.sources:
            self._count(item.partner, "ignored")
            return None
        sources = tuple(s for s in current.sources if s != source)
        if sources or current.deleted:
            self._count(item.partner, "ignored")
            return attrs.evolve(current, sources=sources), ()
        try:
            await backend.apply(
                Change(objectId=item.itemId, action=ChangeAction.DELETE, payload=b"",
                       contentType="", version=current.version, origin=item.partner.jid)
            )
        except BrokenChange as e:
            await self._park(backend.name, item, f"broken: {e}", "")
            return None
        except Exception as e:  # noqa: BLE001 - parked like a change the backend fails on
            self.log.failure(
                "Backend {backend} failed removing {object}", Failure(e),
                backend=backend.name, object=item.itemId,
            )
            await self._park(backend.name, item, f"apply failed: {e!r}", "")
            return None
        self.log.info(
            "Removed {object}: it left {node} of {partner}, the last subscribed node holding it",
            object=item.itemId, node=item.partner.node, partner=item.partner.jid,
        )
        self._count(item.partner, "applied")
        record = attrs.evolve(current, hash="", deleted=True, nodes=(), sources=())
        return record, current.nodes

    async def _toApply(
        self,
        backendName: str,
        backend: IReplicationBackend,
        item: Received,
        change: Change,
        current: VersionRecord | None,
        batch: _Batch,
    ) -> bool:
        """
        Whether a decoded change is newer than what is held and so to be applied. An older or
        equal one is ignored (an equal one from another subscription adds that source to the
        record; a concurrent older one is kept as a loser); a newer concurrent one keeps the
        local version as the loser first.
        """
        source = sourceOf(item.partner)
        # An object removed because it left every subscribed node is the same version again
        # when a subscribed node holds it anew.
        relinked = (
            current is not None and current.deleted and not current.sources
            and current.version == change.version and change.action is not ChangeAction.DELETE
        )
        if current is not None and not relinked and not isNewer(change.version, current.version):
            if current.version != change.version and isConcurrent(
                current.version, "", change.version, change.previous
            ):
                await self.store.addConflict(
                    backendName,
                    Conflict(change.objectId, change.version, current.version, change.payload,
                             self.clock.seconds()),
                )
            self._count(item.partner, "ignored")
            if current.version == change.version and source not in current.sources:
                batch.keep(attrs.evolve(current, sources=current.sources + (source,)))
            return False
        if current is not None and not relinked and isConcurrent(
            current.version, "", change.version, change.previous
        ):
            await self._keepLocalLoser(backendName, backend, change, current)
        return True

    async def _applyRun(
        self,
        batch: _Batch,
        run: Sequence[tuple[Received, Change, VersionRecord | None, Any]],
    ) -> None:
        """
        Apply a run of changes (at most one per object) through the backend, then park those
        it could not apply and record the others, with the payload each republishes.
        """
        backend = batch.backend
        changes = [change for _, change, _, _ in run]
        outcomes: Sequence[Exception | None]
        if IBatchApply.providedBy(backend):
            try:
                outcomes = await backend.applyMany(changes)
            except Exception as e:  # noqa: BLE001 - every change of the run is parked with it
                outcomes = [e] * len(changes)
        else:
            outcomes = [await _applyOne(backend, change) for change in changes]
        now = self.clock.seconds()
        failures: set[int] = set()
        # Per partner subscription: the subscription, how many were applied, the last lag.
        applied: dict[tuple[str, str], list[Any]] = {}
        try:
            await self._recordRun(batch, run, outcomes, failures, applied, now)
        finally:
            # Counted once per run: a counter per change cost more than the rest of its
            # bookkeeping.
            for partner, count, lag in applied.values():
                self._count(partner, "applied", count)
                pending = self._pending[(partner.jid, partner.node)]
                pending["lastApplied"] = now
                if lag is not None:
                    pending["lag"] = lag
                    REPLICATION_LAG.labels(partner.jid, partner.node).set(lag)

    async def _recordRun(
        self,
        batch: _Batch,
        run: Sequence[tuple[Received, Change, VersionRecord | None, Any]],
        outcomes: Sequence[Exception | None],
        failures: set[int],
        applied: dict[tuple[str, str], list[Any]],
        now: float,
    ) -> None:
        """
        Park the changes of a run that the backend could not apply and record the others,
        with the payload each republishes, counting them in C{applied}.
        """
        backend = batch.backend
        for (item, change, current, tree), outcome in zip(run, outcomes, strict=True):
            if isinstance(outcome, ParentMissing):
                await self._park(backend.name, item, str(outcome), outcome.parent)
                continue
            if isinstance(outcome, BrokenChange):
                await self._park(backend.name, item, f"broken: {outcome}", "")
                continue
            if outcome is not None:
                # Not the change's fault (a full disk, a database gone): parked, so neither
                # lost nor skipped by the partner mark; an operator retries it (hermod admin
                # retry).
                if id(outcome) not in failures:
                    failures.add(id(outcome))
                    self.log.failure(
                        "Backend {backend} failed applying {object}",
                        Failure(outcome), backend=backend.name, object=change.objectId,
                    )
                await self._park(backend.name, item, f"apply failed: {outcome!r}", "")
                continue
            deleted = change.action is ChangeAction.DELETE
            # decodeChange has checked a carried hash against the content already.
            digest = "" if deleted else (
                change.hash or contentHash(change.payload, change.contentType)
            )
            source = sourceOf(item.partner)
            sources = current.sources if current is not None else ()
            if source not in sources:
                sources += (source,)
            if item.partner.transform:
                payload = encodeChange(attrs.evolve(change, hops=change.hops + (self.jid,)))
            elif tree is not None:
                payload = treeWithHop(tree, self.jid)
            else:
                payload = withHop(item.payload, self.jid)
            nodes = self._route(backend, change, current, batch.republish, batch.leaving,
                                payload)
            batch.keep(VersionRecord(change.objectId, change.version, digest, deleted, nodes,
                                     sources))
            batch.applied.add(change.objectId)
            key = (item.partner.jid, item.partner.node)
            counted = applied.get(key)
            if counted is None:
                counted = applied[key] = [item.partner, 0, None]
            counted[1] += 1
            if change.updated:
                counted[2] = max(0.0, now - change.updated)

    async def _keepLocalLoser(
        self,
        backendName: str,
        backend: IReplicationBackend,
        change: Change,
        current: VersionRecord,
    ) -> None:
        if self._behind is not None:
            # The own node gets the local version's item when the batch being saved is.
            await self._behind.wait()
        payload = b""
        for node in backend.nodes:
            items = await self.policy.storage.getItems(node, itemIds=[change.objectId])
            if items:
                payload = items[0].payload
                break
        await self.store.addConflict(
            backendName,
            Conflict(change.objectId, current.version, change.version, payload,
                     self.clock.seconds()),
        )

    async def retryParked(self, parkedId: int) -> bool:
        """
        Try a parked item again, as if it had just arrived; it stays parked (with a new reason
        and one more attempt) if it still cannot be applied.

        @return: Whether it left the parked queue (applied, ignored or refused).
        """
        done: bool = await self._locked(self._retryOne, parkedId)
        return done

    async def _retryOne(self, parkedId: int) -> bool:
        items = {p.parkedId: p for p in await self.store.listParked(None)}
        parked = items.get(parkedId)
        if parked is None:
            return False
        partner = self.partnerFor(parked.partner, parked.node)
        if partner is None:
            # Still waiting for its parent: retried when the partner is back (discovered
            # again, say).
            await self.store.updateParked(
                parkedId, "partner no longer configured", parked.waitingFor
            )
            return False
        self.counters[(partner.jid, partner.node)]["retried"] += 1
        self._stillParked.discard(parkedId)
        await self._applyBatch(
            parked.backend,
            # A parked retraction has no payload (a change item always has one).
            [Received(partner, parked.objectId, parked.payload, parkedId=parkedId,
                      retracted=not parked.payload)],
        )
        if parkedId in self._stillParked:
            return False
        await self._flush()  # its version is saved before it leaves the queue
        await self.store.removeParked(parkedId)
        return True

    async def retryAllParked(self) -> int:
        """
        Retry every parked item that waits for a parent (broken ones wait for an operator),
        one at a time with the items arriving from partners, and save what was gathered.

        @return: How many left the queue.
        """
        done: int = await self._locked(self._retryAll)
        return done

    async def _retryAll(self) -> int:
        done = 0
        for item in await self.store.listParked(None):
            if item.waitingFor and await self._retryOne(item.parkedId):
                done += 1
        await self._flush()
        return done

    # -- helpers for catch-up ----------------------------------------------------------------

    def contentDigest(self, payload: bytes) -> str:
        """
        A short digest of a raw item payload, for logs.
        """
        return hashlib.sha256(payload).hexdigest()[:12]
