"""
C{python -m hermod_component.admin -c FILE COMMAND}: the operator's view of replication, read
from Hermod's storage (it may run while Hermod runs).

Commands: C{partners} (configured and discovered subscriptions: marks, counters, lag),
C{positions}, C{parked}, C{conflicts}, C{retry ID} (the running Hermod retries it within its
retry interval), C{discard ID}, C{objects BACKEND ID...} (each object's version, the own nodes it
was last published to and the partner nodes it came through).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from hermod_component.config import loadSettings
from hermod_component.errors import ConfigError

#: What C{retry} puts in a parked item's C{waiting_for}: the periodic retry picks it up.
RETRY_REQUESTED = "operator"


async def run(reactor: Any, argv: Sequence[str], out: Any = sys.stdout) -> int:
    """
    Run one command; see the module docstring.

    @return: The exit status.
    """
    from hermod_component.replication.store import replicationStoreFor
    from hermod_component.storage import makeStorage

    args = list(argv)
    config = "/etc/hermod/hermod.toml"
    if len(args) >= 2 and args[0] in ("-c", "--config"):
        config, args = args[1], args[2:]
    if not args:
        out.write(__doc__ or "")
        return 2
    try:
        settings = loadSettings(config)
    except ConfigError as e:
        out.write(f"{config}: {e}\n")
        return 1
    storage = makeStorage(settings.storage, reactor)
    await storage.start()
    store = replicationStoreFor(storage)
    try:
        command, rest = args[0], args[1:]
        if command == "partners":
            now = time.time()
            out.write("partner\tnode\tmark\treceived\tapplied\trefused\tparked\tignored\t"
                      "lag_s\tidle_s\n")
            for p in await store.listPartners():
                idle = f"{now - p.lastApplied:.1f}" if p.lastApplied else "-"
                out.write(f"{p.partner}\t{p.node}\t{p.mark or '-'}\t{p.received}\t{p.applied}\t"
                          f"{p.refused}\t{p.parked}\t{p.ignored}\t{p.lag:.3f}\t{idle}\n")
        elif command == "positions":
            for backend, position in await store.listPositions():
                out.write(f"{backend}\t{position}\n")
        elif command == "parked":
            out.write("id\tbackend\tpartner\tnode\tobject\tattempts\twaiting_for\treason\n")
            for item in await store.listParked(None):
                out.write(f"{item.parkedId}\t{item.backend}\t{item.partner}\t{item.node}\t"
                          f"{item.objectId}\t{item.attempts}\t{item.waitingFor or '-'}\t"
                          f"{item.reason}\n")
        elif command == "conflicts":
            for c in await store.listConflicts(None):
                out.write(f"{c.objectId}\tloser={c.loser}\twinner={c.winner}\n")
        elif command == "objects" and len(rest) >= 2:
            found = await store.getVersions(rest[0], rest[1:])
            out.write("object\tversion\tdeleted\tnodes\tsources\n")
            for objectId in rest[1:]:
                record = found.get(objectId)
                if record is None:
                    out.write(f"{objectId}\t-\t-\t-\t-\n")
                    continue
                out.write(f"{objectId}\t{record.version}\t{'yes' if record.deleted else 'no'}\t"
                          f"{','.join(record.nodes) or '-'}\t"
                          f"{','.join(record.sources) or '-'}\n")
        elif command in ("retry", "discard") and len(rest) == 1 and rest[0].isdigit():
            parkedId = int(rest[0])
            known = {p.parkedId: p for p in await store.listParked(None)}
            if parkedId not in known:
                out.write(f"no parked item {parkedId}\n")
                return 1
            if command == "discard":
                await store.removeParked(parkedId)
                out.write(f"discarded {parkedId}\n")
            else:
                await store.updateParked(parkedId, known[parkedId].reason, RETRY_REQUESTED)
                out.write(f"{parkedId} will be retried\n")
        else:
            out.write(f"unknown command {' '.join(args)!r}\n{__doc__}")
            return 2
        return 0
    finally:
        await storage.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """
    The console entry point.
    """

    def go(reactor: Any) -> Deferred[None]:
        async def body() -> None:
            status = await run(reactor, sys.argv[1:] if argv is None else argv)
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(body())

    react(go)


if __name__ == "__main__":
    main()
