"""
L{IReplicationStore} in memory and on the SQL storage engines (tables of migrations
C{002_replication} and C{005_object_nodes}).

The SQL store shares the storage's connection pool: it runs its interactions through the
storage's own transaction runner, so replication state lives in the same database file as the
items it describes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from hermod_component.interfaces import IReplicationStore, IStorage
from hermod_component.model import Conflict, ParkedItem, PartnerState, VersionRecord

COUNTERS = ("received", "applied", "refused", "parked", "ignored")


def _names(column: str | None) -> tuple[str, ...]:
    """
    A C{nodes} or C{sources} column (a JSON array, or C{''} before anything was saved).
    """
    return tuple(json.loads(column)) if column else ()

_IN_CHUNK = 500


def _sameParked(parked: ParkedItem, item: ParkedItem) -> bool:
    """
    Whether C{item} is C{parked} delivered again: the same payload of the same object from the
    same partner node, for the same backend.
    """
    return (parked.backend, parked.objectId, parked.partner, parked.node, parked.payload) == (
        item.backend, item.objectId, item.partner, item.node, item.payload
    )


@implementer(IReplicationStore)
class MemoryReplicationStore:
    """
    L{IReplicationStore} in dictionaries, for tests and the memory storage engine.
    """

    def __init__(self) -> None:
        self._positions: dict[str, str | None] = {}
        self._partners: dict[tuple[str, str], PartnerState] = {}
        self._versions: dict[tuple[str, str], VersionRecord] = {}
        self._conflicts: list[tuple[str, Conflict]] = []
        self._parked: dict[int, ParkedItem] = {}
        self._nextParked = 1
        self._discovered: set[tuple[str, str]] = set()

    def getPosition(self, backend: str) -> Deferred[str | None]:
        """
        See L{IReplicationStore.getPosition}.
        """
        return succeed(self._positions.get(backend))

    def savePosition(self, backend: str, position: str | None) -> Deferred[None]:
        """
        See L{IReplicationStore.savePosition}.
        """
        self._positions[backend] = position
        return succeed(None)

    def listPositions(self) -> Deferred[list[tuple[str, str | None]]]:
        """
        See L{IReplicationStore.listPositions}.
        """
        return succeed(sorted(self._positions.items()))

    def getVersions(
        self, backend: str, objectIds: Sequence[str]
    ) -> Deferred[dict[str, VersionRecord]]:
        """
        See L{IReplicationStore.getVersions}.
        """
        found = {}
        for objectId in objectIds:
            record = self._versions.get((backend, objectId))
            if record is not None:
                found[objectId] = record
        return succeed(found)

    def saveVersions(self, backend: str, records: Sequence[VersionRecord]) -> Deferred[None]:
        """
        See L{IReplicationStore.saveVersions}.
        """
        for record in records:
            self._versions[(backend, record.objectId)] = record
        return succeed(None)

    def saveApplied(
        self,
        versions: Mapping[str, Sequence[VersionRecord]],
        partners: Sequence[
            tuple[str, str, str | None, Mapping[str, int], float | None, float | None]
        ],
    ) -> Deferred[None]:
        """
        See L{IReplicationStore.saveApplied}.
        """
        # The class's own methods: one call, whatever wraps this instance's methods.
        for backend, records in versions.items():
            MemoryReplicationStore.saveVersions(self, backend, records)
        for update in partners:
            MemoryReplicationStore.updatePartner(self, *update)
        return succeed(None)

    def getPartner(self, partner: str, node: str) -> Deferred[PartnerState]:
        """
        See L{IReplicationStore.getPartner}.
        """
        return succeed(self._partners.get((partner, node), PartnerState(partner, node)))

    def listPartners(self) -> Deferred[list[PartnerState]]:
        """
        See L{IReplicationStore.listPartners}.
        """
        return succeed([self._partners[key] for key in sorted(self._partners)])

    def updatePartner(
        self,
        partner: str,
        node: str,
        mark: str | None,
        counts: Mapping[str, int],
        lastApplied: float | None,
        lag: float | None,
    ) -> Deferred[None]:
        """
        See L{IReplicationStore.updatePartner}.
        """
        state = self._partners.get((partner, node), PartnerState(partner, node))
        changes: dict[str, Any] = {
            name: getattr(state, name) + counts.get(name, 0) for name in COUNTERS
        }
        if mark is not None:
            changes["mark"] = mark
        if lastApplied is not None:
            changes["lastApplied"] = lastApplied
        if lag is not None:
            changes["lag"] = lag
        self._partners[(partner, node)] = attrs.evolve(state, **changes)
        return succeed(None)

    def addConflict(self, backend: str, conflict: Conflict) -> Deferred[None]:
        """
        See L{IReplicationStore.addConflict}.
        """
        for known, kept in self._conflicts:
            if known == backend and (kept.objectId, kept.loser, kept.winner) == (
                conflict.objectId, conflict.loser, conflict.winner
            ):
                return succeed(None)
        self._conflicts.append((backend, conflict))
        return succeed(None)

    def listConflicts(self, backend: str | None) -> Deferred[list[Conflict]]:
        """
        See L{IReplicationStore.listConflicts}.
        """
        return succeed([c for b, c in self._conflicts if backend is None or b == backend])

    def park(self, item: ParkedItem) -> Deferred[int]:
        """
        See L{IReplicationStore.park}.
        """
        for parkedId, parked in self._parked.items():
            if _sameParked(parked, item):
                self._parked[parkedId] = attrs.evolve(
                    parked, reason=item.reason, waitingFor=item.waitingFor, time=item.time
                )
                return succeed(parkedId)
        parkedId, self._nextParked = self._nextParked, self._nextParked + 1
        self._parked[parkedId] = attrs.evolve(item, parkedId=parkedId)
        return succeed(parkedId)

    def listParked(self, backend: str | None) -> Deferred[list[ParkedItem]]:
        """
        See L{IReplicationStore.listParked}.
        """
        return succeed(
            [
                self._parked[k]
                for k in sorted(self._parked)
                if backend is None or self._parked[k].backend == backend
            ]
        )

    def updateParked(self, parkedId: int, reason: str, waitingFor: str) -> Deferred[None]:
        """
        See L{IReplicationStore.updateParked}.
        """
        item = self._parked.get(parkedId)
        if item is not None:
            self._parked[parkedId] = attrs.evolve(
                item, reason=reason, waitingFor=waitingFor, attempts=item.attempts + 1
            )
        return succeed(None)

    def removeParked(self, parkedId: int) -> Deferred[bool]:
        """
        See L{IReplicationStore.removeParked}.
        """
        return succeed(self._parked.pop(parkedId, None) is not None)

    def listDiscovered(self) -> Deferred[list[tuple[str, str]]]:
        """
        See L{IReplicationStore.listDiscovered}.
        """
        return succeed(sorted(self._discovered))

    def setDiscovered(self, partner: str, node: str, discovered: bool) -> Deferred[None]:
        """
        See L{IReplicationStore.setDiscovered}.
        """
        if discovered:
            self._discovered.add((partner, node))
        else:
            self._discovered.discard((partner, node))
        return succeed(None)


@implementer(IReplicationStore)
class SQLReplicationStore:
    """
    L{IReplicationStore} in the tables of migration C{002_replication}, run through an SQL
    storage's pool (L{hermod_component.storage.sqlite.SQLiteStorage} or
    L{hermod_component.storage.postgresql.PostgreSQLStorage}).
    """

    def __init__(self, storage: Any) -> None:
        """
        @param storage: A started or starting C{SQLStorage}; its C{_run} and C{dialect} are used.
        """
        self._storage = storage
        self._dialect = storage.dialect

    def _run(self, interaction: Any, *args: Any) -> Deferred[Any]:
        result: Deferred[Any] = self._storage._run(interaction, *args)
        return result

    def _sql(self, statement: str) -> str:
        sql: str = self._dialect.sql(statement)
        return sql

    def getPosition(self, backend: str) -> Deferred[str | None]:
        """
        See L{IReplicationStore.getPosition}.
        """

        def interaction(cursor: Any) -> str | None:
            cursor.execute(self._sql("SELECT position FROM positions WHERE backend = ?"), (backend,))
            row = cursor.fetchone()
            return None if row is None else row[0]

        return self._run(interaction)

    def savePosition(self, backend: str, position: str | None) -> Deferred[None]:
        """
        See L{IReplicationStore.savePosition}.
        """

        def interaction(cursor: Any) -> None:
            cursor.execute(
                self._sql(
                    "INSERT INTO positions (backend, position) VALUES (?, ?) "
                    "ON CONFLICT (backend) DO UPDATE SET position = excluded.position"
                ),
                (backend, position),
            )

        return self._run(interaction)

    def listPositions(self) -> Deferred[list[tuple[str, str | None]]]:
        """
        See L{IReplicationStore.listPositions}.
        """

        def interaction(cursor: Any) -> list[tuple[str, str | None]]:
            cursor.execute("SELECT backend, position FROM positions ORDER BY backend")
            return [(row[0], row[1]) for row in cursor.fetchall()]

        return self._run(interaction)

    def getVersions(
        self, backend: str, objectIds: Sequence[str]
    ) -> Deferred[dict[str, VersionRecord]]:
        """
        See L{IReplicationStore.getVersions}.
        """
        ids = list(dict.fromkeys(objectIds))

        def interaction(cursor: Any) -> dict[str, VersionRecord]:
            found = {}
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start:start + _IN_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                cursor.execute(
                    self._sql(
                        "SELECT object_id, version, hash, deleted, nodes, sources FROM versions "
                        f"WHERE backend = ? AND object_id IN ({marks})"
                    ),
                    (backend, *chunk),
                )
                for row in cursor.fetchall():
                    found[row[0]] = VersionRecord(
                        row[0], row[1], row[2], bool(row[3]), _names(row[4]), _names(row[5])
                    )
            return found

        return self._run(interaction)

    def saveVersions(self, backend: str, records: Sequence[VersionRecord]) -> Deferred[None]:
        """
        See L{IReplicationStore.saveVersions}.
        """
        return self._run(self._saveVersions, backend, list(records))

    def _saveVersions(self, cursor: Any, backend: str, records: Sequence[VersionRecord]) -> None:
        rows = [
            (backend, r.objectId, r.version, r.hash, int(r.deleted), json.dumps(list(r.nodes)),
             json.dumps(list(r.sources)))
            for r in records
        ]
        if rows:
            self._dialect.executeMany(
                cursor,
                "INSERT INTO versions (backend, object_id, version, hash, deleted, nodes, sources) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (backend, object_id) DO UPDATE SET "
                "version = excluded.version, hash = excluded.hash, deleted = excluded.deleted, "
                "nodes = excluded.nodes, sources = excluded.sources",
                rows,
            )

    def saveApplied(
        self,
        versions: Mapping[str, Sequence[VersionRecord]],
        partners: Sequence[
            tuple[str, str, str | None, Mapping[str, int], float | None, float | None]
        ],
    ) -> Deferred[None]:
        """
        See L{IReplicationStore.saveApplied}.
        """
        versions = {backend: list(records) for backend, records in versions.items()}
        partners = list(partners)

        def interaction(cursor: Any) -> None:
            for backend, records in versions.items():
                self._saveVersions(cursor, backend, records)
            for update in partners:
                self._updatePartner(cursor, *update)

        return self._run(interaction)

    def _partner(self, row: Sequence[Any]) -> PartnerState:
        return PartnerState(
            partner=row[0], node=row[1], mark=row[2], received=row[3], applied=row[4],
            refused=row[5], parked=row[6], ignored=row[7], lastApplied=row[8], lag=row[9],
        )

    _PARTNER_COLUMNS = (
        "partner, node, mark, received, applied, refused, parked, ignored, last_applied, lag"
    )

    def getPartner(self, partner: str, node: str) -> Deferred[PartnerState]:
        """
        See L{IReplicationStore.getPartner}.
        """

        def interaction(cursor: Any) -> PartnerState:
            cursor.execute(
                self._sql(
                    f"SELECT {self._PARTNER_COLUMNS} FROM partners WHERE partner = ? AND node = ?"
                ),
                (partner, node),
            )
            row = cursor.fetchone()
            return PartnerState(partner, node) if row is None else self._partner(row)

        return self._run(interaction)

    def listPartners(self) -> Deferred[list[PartnerState]]:
        """
        See L{IReplicationStore.listPartners}.
        """

        def interaction(cursor: Any) -> list[PartnerState]:
            cursor.execute(f"SELECT {self._PARTNER_COLUMNS} FROM partners ORDER BY partner, node")
            return [self._partner(row) for row in cursor.fetchall()]

        return self._run(interaction)

    def updatePartner(
        self,
        partner: str,
        node: str,
        mark: str | None,
        counts: Mapping[str, int],
        lastApplied: float | None,
        lag: float | None,
    ) -> Deferred[None]:
        """
        See L{IReplicationStore.updatePartner}.
        """
        return self._run(
            self._updatePartner, partner, node, mark, dict(counts), lastApplied, lag
        )

    def _updatePartner(
        self,
        cursor: Any,
        partner: str,
        node: str,
        mark: str | None,
        counts: Mapping[str, int],
        lastApplied: float | None,
        lag: float | None,
    ) -> None:
        values = [counts.get(name, 0) for name in COUNTERS]
        cursor.execute(
            self._sql(
                "INSERT INTO partners (partner, node) VALUES (?, ?) "
                "ON CONFLICT (partner, node) DO NOTHING"
            ),
            (partner, node),
        )
        cursor.execute(
            self._sql(
                "UPDATE partners SET received = received + ?, applied = applied + ?, "
                "refused = refused + ?, parked = parked + ?, ignored = ignored + ?, "
                "mark = COALESCE(?, mark), last_applied = COALESCE(?, last_applied), "
                "lag = COALESCE(?, lag) WHERE partner = ? AND node = ?"
            ),
            (*values, mark, lastApplied, lag, partner, node),
        )

    def addConflict(self, backend: str, conflict: Conflict) -> Deferred[None]:
        """
        See L{IReplicationStore.addConflict}.
        """

        def interaction(cursor: Any) -> None:
            cursor.execute(
                self._sql(
                    "SELECT 1 FROM conflicts WHERE backend = ? AND object_id = ? AND loser = ?"
                    " AND winner = ?"
                ),
                (backend, conflict.objectId, conflict.loser, conflict.winner),
            )
            if cursor.fetchone() is not None:
                return
            cursor.execute(
                self._sql(
                    "INSERT INTO conflicts (backend, object_id, loser, winner, payload, time) "
                    "VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (backend, conflict.objectId, conflict.loser, conflict.winner,
                 conflict.payload, conflict.time),
            )

        return self._run(interaction)

    def listConflicts(self, backend: str | None) -> Deferred[list[Conflict]]:
        """
        See L{IReplicationStore.listConflicts}.
        """

        def interaction(cursor: Any) -> list[Conflict]:
            query = "SELECT object_id, loser, winner, payload, time FROM conflicts"
            if backend is None:
                cursor.execute(query + " ORDER BY id")
            else:
                cursor.execute(self._sql(query + " WHERE backend = ? ORDER BY id"), (backend,))
            return [
                Conflict(row[0], row[1], row[2], self._dialect.blob(row[3]), row[4])
                for row in cursor.fetchall()
            ]

        return self._run(interaction)

    def park(self, item: ParkedItem) -> Deferred[int]:
        """
        See L{IReplicationStore.park}.
        """

        def interaction(cursor: Any) -> int:
            cursor.execute(
                self._sql(
                    "SELECT id FROM parked WHERE backend = ? AND object_id = ? AND partner = ?"
                    " AND node = ? AND payload = ?"
                ),
                (item.backend, item.objectId, item.partner, item.node, item.payload),
            )
            row = cursor.fetchone()
            if row is not None:
                cursor.execute(
                    self._sql(
                        "UPDATE parked SET reason = ?, waiting_for = ?, time = ? WHERE id = ?"
                    ),
                    (item.reason, item.waitingFor, item.time, row[0]),
                )
                return int(row[0])
            cursor.execute(
                self._sql(
                    "INSERT INTO parked (backend, partner, node, object_id, payload, reason, "
                    "waiting_for, attempts, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                ),
                (item.backend, item.partner, item.node, item.objectId, item.payload,
                 item.reason, item.waitingFor, item.attempts, item.time),
            )
            return int(cursor.fetchone()[0])

        return self._run(interaction)

    def listParked(self, backend: str | None) -> Deferred[list[ParkedItem]]:
        """
        See L{IReplicationStore.listParked}.
        """

        def interaction(cursor: Any) -> list[ParkedItem]:
            query = (
                "SELECT id, backend, partner, node, object_id, payload, reason, waiting_for, "
                "attempts, time FROM parked"
            )
            if backend is None:
                cursor.execute(query + " ORDER BY id")
            else:
                cursor.execute(self._sql(query + " WHERE backend = ? ORDER BY id"), (backend,))
            return [
                ParkedItem(row[0], row[1], row[2], row[3], row[4], self._dialect.blob(row[5]),
                           row[6], row[7], row[8], row[9])
                for row in cursor.fetchall()
            ]

        return self._run(interaction)

    def updateParked(self, parkedId: int, reason: str, waitingFor: str) -> Deferred[None]:
        """
        See L{IReplicationStore.updateParked}.
        """

        def interaction(cursor: Any) -> None:
            cursor.execute(
                self._sql(
                    "UPDATE parked SET reason = ?, waiting_for = ?, attempts = attempts + 1 "
                    "WHERE id = ?"
                ),
                (reason, waitingFor, parkedId),
            )

        return self._run(interaction)

    def removeParked(self, parkedId: int) -> Deferred[bool]:
        """
        See L{IReplicationStore.removeParked}.
        """

        def interaction(cursor: Any) -> bool:
            cursor.execute(self._sql("DELETE FROM parked WHERE id = ?"), (parkedId,))
            return bool(cursor.rowcount)

        return self._run(interaction)

    def listDiscovered(self) -> Deferred[list[tuple[str, str]]]:
        """
        See L{IReplicationStore.listDiscovered}.
        """

        def interaction(cursor: Any) -> list[tuple[str, str]]:
            cursor.execute("SELECT partner, node FROM discovered_partners ORDER BY partner, node")
            return [(row[0], row[1]) for row in cursor.fetchall()]

        return self._run(interaction)

    def setDiscovered(self, partner: str, node: str, discovered: bool) -> Deferred[None]:
        """
        See L{IReplicationStore.setDiscovered}.
        """

        def interaction(cursor: Any) -> None:
            if discovered:
                cursor.execute(
                    self._sql(
                        "INSERT INTO discovered_partners (partner, node) VALUES (?, ?) "
                        "ON CONFLICT (partner, node) DO NOTHING"
                    ),
                    (partner, node),
                )
            else:
                cursor.execute(
                    self._sql("DELETE FROM discovered_partners WHERE partner = ? AND node = ?"),
                    (partner, node),
                )

        return self._run(interaction)


def replicationStoreFor(storage: IStorage) -> IReplicationStore:
    """
    The replication store kept next to C{storage}: the same database for the SQL engines,
    dictionaries for the memory engine.
    """
    from hermod_component.storage._sql import SQLStorage

    if isinstance(storage, SQLStorage):
        return SQLReplicationStore(storage)
    return MemoryReplicationStore()
