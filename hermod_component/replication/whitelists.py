"""
Whitelists from the application database: the member affiliations of a backend's nodes kept
in step with the JIDs the backend lists per node (L{IWhitelistSource}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.logger import Logger

from hermod_component.errors import HermodError
from hermod_component.interfaces import IWhitelistSource
from hermod_component.model import Affiliation
from hermod_component.policy import bareJID
from hermod_component.replication.engine import NODE_OPTIONS, ReplicationEngine

#: Configuration of a node that a backend's whitelists name and that Hermod creates.
WHITELIST_NODE_OPTIONS: Mapping[str, Sequence[str]] = {
    **NODE_OPTIONS, "pubsub#access_model": ["whitelist"],
}

log = Logger()


def _wanted(node: str, backendName: str, jids: Sequence[str]) -> set[str]:
    """
    The bare JIDs of a node's list; entries that are not JIDs are logged and left out.
    """
    wanted = set()
    for jid in jids:
        try:
            wanted.add(bareJID(jid))
        except HermodError:
            log.warn(  # noqa: G010 - twisted.logger has no warning()
                "Whitelist of {node} from {backend}: not a JID: {jid!r}",
                node=node, backend=backendName, jid=jid,
            )
    return wanted


async def syncWhitelists(engine: ReplicationEngine, backendName: str) -> int:
    """
    Make the member affiliations of the nodes a backend supplies whitelists for match them:
    listed JIDs without an affiliation become members, members no longer listed lose it (and,
    on a whitelist node, their subscriptions, by the policy); owners, publishers, outcasts and
    partner JIDs are never touched. A listed node that does not exist is created as a
    whitelist node; a node the backend does not list is not managed.

    @return: How many affiliations were changed; 0 for a backend without whitelists.
    @raise Exception: Whatever the backend's C{whitelists()} fails with.
    """
    backend = engine.backends[backendName]
    if not IWhitelistSource.providedBy(backend):
        return 0
    lists = await backend.whitelists()
    if lists is None:
        return 0
    partners = {p.jid for p in engine.partners} | {engine.jid}
    changed = 0
    for node, jids in sorted(lists.items()):
        await engine.ensureNode(backendName, node, WHITELIST_NODE_OPTIONS)
        wanted = _wanted(node, backendName, jids)
        affiliations = await engine.policy.getAffiliations(engine.jid, node)
        changes = {j: Affiliation.MEMBER.value for j in sorted(wanted - set(affiliations))}
        changes.update({
            j: Affiliation.NONE.value
            for j, a in affiliations.items()
            if a is Affiliation.MEMBER and j not in wanted and j not in partners
        })
        if changes:
            await engine.policy.setAffiliations(engine.jid, node, changes)
            changed += len(changes)
            log.info(
                "Whitelist of {node} from {backend}: {added} members added, {removed} removed",
                node=node, backend=backendName,
                added=sum(v == Affiliation.MEMBER.value for v in changes.values()),
                removed=sum(v == Affiliation.NONE.value for v in changes.values()),
            )
    return changed
