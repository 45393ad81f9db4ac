"""
Contracts between Hermod's layers.

Every method that does I/O returns a L{Deferred}; failures arrive through it as the domain errors
of L{hermod_component.errors}. JIDs are normalized strings; C{bare} means C{user@host}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from hermod_component.model import (
    Affiliation,
    Event,
    Item,
    Node,
    NodeConfig,
    PublishResult,
    Subscription,
)


class IStorage(Interface):
    """
    Durable state of the pubsub service: nodes, affiliations, subscriptions, items and the
    append-only event log. Each method is one transaction: when its Deferred fires, the change
    is committed.
    """

    def start() -> Deferred[None]:
        """
        Open connections and apply pending schema migrations.
        """

    def stop() -> Deferred[None]:
        """
        Finish in-flight work and close connections.
        """

    def createNode(node: Node) -> Deferred[None]:
        """
        Create C{node}; its creator becomes its owner in the same transaction.

        @raise NodeExists: a node with that identifier exists.
        """

    def getNode(identifier: str) -> Deferred[Node]:
        """
        The node named C{identifier}.

        @raise NodeNotFound: there is no such node.
        """

    def listNodes() -> Deferred[list[Node]]:
        """
        Every node, ordered by identifier.
        """

    def countNodesOwnedBy(entity: str) -> Deferred[int]:
        """
        How many nodes list the bare JID C{entity} as owner.
        """

    def configureNode(identifier: str, config: NodeConfig) -> Deferred[None]:
        """
        Replace the node's configuration.

        @raise NodeNotFound: there is no such node.
        """

    def deleteNode(identifier: str, when: float) -> Deferred[None]:
        """
        Remove the node with its items, affiliations and subscriptions, and log a C{delete}
        event at time C{when}.

        @raise NodeNotFound: there is no such node.
        """

    def getAffiliations(identifier: str) -> Deferred[dict[str, Affiliation]]:
        """
        The node's affiliations by bare JID; entities with C{none} are absent.

        @raise NodeNotFound: there is no such node.
        """

    def setAffiliations(identifier: str, changes: Mapping[str, Affiliation]) -> Deferred[None]:
        """
        Set each bare JID's affiliation; L{Affiliation.NONE} removes it.

        @raise NodeNotFound: there is no such node.
        """

    def getEntityAffiliations(entity: str) -> Deferred[list[tuple[str, Affiliation]]]:
        """
        C{(node, affiliation)} pairs of the bare JID C{entity}, ordered by node.
        """

    def getSubscriptions(identifier: str) -> Deferred[list[Subscription]]:
        """
        All subscriptions of the node, in every state, oldest first.

        @raise NodeNotFound: there is no such node.
        """

    def getEntitySubscriptions(entity: str) -> Deferred[list[Subscription]]:
        """
        All subscriptions whose subscriber's bare JID is C{entity}, ordered by node.
        """

    def saveSubscription(subscription: Subscription) -> Deferred[None]:
        """
        Insert or replace the subscription keyed by its node and subscription id.

        @raise NodeNotFound: there is no such node.
        """

    def removeSubscription(identifier: str, subscriptionId: str) -> Deferred[None]:
        """
        Remove one subscription; removing a missing one is harmless.
        """

    def storeItems(
        identifier: str, items: Sequence[Item], maxItems: int | None, persist: bool
    ) -> Deferred[PublishResult]:
        """
        Log a C{publish} event per item and, if C{persist}, store the items as the node's
        newest (an existing item id is replaced and becomes the newest); then drop the oldest
        items beyond C{maxItems} (C{None}: keep all). The result's C{removed} names the
        items dropped; where publishes to one node share a transaction (group commit), the
        last of them reports the items their trim dropped.

        @raise NodeNotFound: there is no such node.
        """

    def getItems(
        identifier: str, maxItems: int | None = None, itemIds: Sequence[str] | None = None
    ) -> Deferred[list[Item]]:
        """
        The node's items, newest first, at most C{maxItems}; with C{itemIds}, only those
        (in the order asked, missing ones left out).

        @raise NodeNotFound: there is no such node.
        """

    def retractItems(
        identifier: str, itemIds: Sequence[str], publisher: str, when: float
    ) -> Deferred[list[str]]:
        """
        Remove the items and log a C{retract} event for each one that existed.

        @return: the ids that were removed, in the order asked.
        @raise NodeNotFound: there is no such node.
        """

    def purgeNode(identifier: str, publisher: str, when: float) -> Deferred[None]:
        """
        Remove every item of the node and log a C{purge} event.

        @raise NodeNotFound: there is no such node.
        """

    def expireItems(identifier: str, publishedBefore: float) -> Deferred[list[str]]:
        """
        Remove the items published before C{publishedBefore}, logging no event.

        @return: the removed ids.
        """

    def getEvents(
        identifier: str, afterId: int | None = None, limit: int = 100
    ) -> Deferred[list[Event]]:
        """
        The node's events with an id above C{afterId}, oldest first, at most C{limit}. Events
        of a deleted node stay readable.
        """

    def queryEvents(
        identifier: str,
        afterId: int | None = None,
        beforeId: int | None = None,
        start: float | None = None,
        end: float | None = None,
        publisher: str | None = None,
        limit: int = 100,
        newestFirst: bool = False,
    ) -> Deferred[list[Event]]:
        """
        The node's events matching every filter given, ordered by id (oldest first, or newest
        first when C{newestFirst}), at most C{limit}: id above C{afterId} and below
        C{beforeId}, time from C{start} to C{end} inclusive, and published by C{publisher}
        (a bare JID matches its full JIDs too). The archive (XEP-0313) reads this.
        """

    def countEvents(
        identifier: str,
        afterId: int | None = None,
        beforeId: int | None = None,
        start: float | None = None,
        end: float | None = None,
        publisher: str | None = None,
    ) -> Deferred[int]:
        """
        How many events L{queryEvents} would return with the same filters and no limit.
        """

    def hasEvent(identifier: str, eventId: int) -> Deferred[bool]:
        """
        Whether the node's log still holds the event C{eventId} (it may have been trimmed).
        """

    def trimEvents(identifier: str, before: float | None, keep: int | None) -> Deferred[int]:
        """
        Remove the node's events older than C{before} and all but its newest C{keep} (L{None}:
        no such bound), for archive retention.

        @return: How many were removed.
        """

    def getItemsPage(
        identifier: str, afterId: str | None, beforeId: str | None, limit: int, lastPage: bool
    ) -> Deferred[tuple[list[Item], int, int]]:
        """
        One page of the node's items in a stable order, newest first (the order of
        L{getItems}): those after the item C{afterId} or before C{beforeId} in that order, at
        most C{limit}; with C{lastPage}, the last C{limit} items. For XEP-0059 paging.

        @return: The page, the total number of items and the position of the page's first
            item in the whole order (0 for the newest).
        @raise NodeNotFound: there is no such node.
        @raise ItemNotFound: C{afterId} or C{beforeId} is not an item of the node.
        """


class INotifier(Interface):
    """
    Delivers notifications that the policy decided on. Implemented at the XMPP edge; each call
    writes the stanzas at once and returns nothing.

    A recipient is a C{(jid, subscriptionIds)} pair: the full or bare JID to address and the
    SubIDs to name in SHIM headers (the matching ones, when the JID holds more than one
    subscription to the node; none otherwise). The recipients may be a
    L{hermod_component.subscriptionoptions.RecipientList}, whose C{bodies} ask for a
    C{<body/>} and whose C{digests} are subscriptions whose notification joins a digest.
    """

    def publish(
        node: str,
        items: Sequence[Item],
        withPayload: bool,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the recipients of new items, with or without their payloads. All items of one call
        share the same SHIM headers (those of C{items[0]}); the policy groups items by headers.
        """

    def retract(
        node: str, itemIds: Sequence[str], messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """
        Tell the recipients that items were retracted.

        @param headers: SHIM headers the message carries: C{(("Collection", C),)} when the
            recipients are the C{items} subscribers of collection C{C} above the node.
        """

    def purge(
        node: str, messageType: str, recipients: Sequence[tuple[str, Sequence[str]]],
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """
        Tell the recipients that the node was purged.

        @param headers: As for L{retract}.
        """

    def delete(
        node: str, redirect: str | None, messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the recipients that the node was deleted, with an optional redirect URI.
        """

    def configuration(
        node: str, config: NodeConfig | None, messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the recipients that the node's configuration changed; C{config} is the new
        configuration when payloads are delivered, else C{None}.
        """

    def subscriptionChanged(subscription: Subscription) -> None:
        """
        Tell the subscriber that an owner changed the state of its subscription.
        """

    def collectionChanged(
        collection: str, node: str, associated: bool, messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        """
        Tell the C{nodes} subscribers of a collection (XEP-0248) that C{node} is now in it
        (C{associated}: created below it or associated with it) or no longer is (deleted or
        dissociated).
        """

    def authorizationRequest(subscription: Subscription, owners: Sequence[str]) -> None:
        """
        Ask each owner to approve or deny a pending subscription (XEP-0060 8.6 form).
        """


class IPubSubPolicy(Interface):
    """
    Who may do what on which node, what is stored, and who is told. Called by the XMPP edge with
    the requester's full JID; every method is a coroutine function (C{async def}) whose result
    the edge wraps with C{Deferred.fromCoroutine}. Failures are the domain errors.
    """

    service = Attribute("The component JID this policy serves, as a string.")

    def createNode(
        requester: str, identifier: str | None, options: Mapping[str, Sequence[str]] | None
    ) -> object:
        """
        Create a node (instant when C{identifier} is C{None}) with optional configuration form
        values. Returns the node identifier.
        """

    def defaultConfiguration(requester: str, nodeType: str) -> object:
        """
        Returns the default L{NodeConfig} for C{'leaf'} or C{'collection'} nodes.
        """

    def getConfiguration(requester: str, identifier: str) -> object:
        """
        Returns the node's L{NodeConfig}; owners only.
        """

    def configure(requester: str, identifier: str, options: Mapping[str, Sequence[str]]) -> object:
        """
        Apply submitted configuration form values; owners only.
        """

    def deleteNode(requester: str, identifier: str, redirect: str | None) -> object:
        """
        Delete a node and notify its subscribers; owners only.
        """

    def purge(requester: str, identifier: str) -> object:
        """
        Remove every item of a node and notify; owners only.
        """

    def publish(
        requester: str,
        identifier: str,
        items: Sequence[tuple[str | None, bytes]],
        publishOptions: Mapping[str, Sequence[str]] | None,
    ) -> object:
        """
        Publish C{(itemId or None, payload bytes)} pairs, or C{(itemId, payload, headers)}
        triples where the item carries XEP-0131 SHIM headers as C{(name, value)} pairs.
        Returns the stored item ids.
        """

    def retract(requester: str, identifier: str, itemIds: Sequence[str], notify: bool) -> object:
        """
        Retract items, notifying subscribers when C{notify} or the node says so.
        """

    def subscribe(
        requester: str,
        identifier: str,
        subscriber: str,
        options: Mapping[str, Sequence[str]] | None,
    ) -> object:
        """
        Subscribe C{subscriber}. Returns the L{Subscription} (state subscribed, pending or
        unconfigured).
        """

    def unsubscribe(
        requester: str, identifier: str, subscriber: str, subscriptionId: str | None
    ) -> object:
        """
        Remove a subscription.
        """

    def getSubscriptionOptions(
        requester: str, identifier: str, subscriber: str, subscriptionId: str | None
    ) -> object:
        """
        Returns the L{Subscription} whose options are asked for.
        """

    def setSubscriptionOptions(
        requester: str,
        identifier: str,
        subscriber: str,
        subscriptionId: str | None,
        options: Mapping[str, Sequence[str]],
    ) -> object:
        """
        Replace a subscription's options.
        """

    def items(
        requester: str,
        identifier: str,
        maxItems: int | None,
        itemIds: Sequence[str] | None,
        subscriptionId: str | None,
    ) -> object:
        """
        Returns the L{Item}s the requester may see, newest first.
        """

    def entitySubscriptions(requester: str, identifier: str | None) -> object:
        """
        Returns the requester's own L{Subscription}s, on one node or all.
        """

    def entityAffiliations(requester: str, identifier: str | None) -> object:
        """
        Returns the requester's own C{(node, Affiliation)} pairs, on one node or all.
        """

    def getAffiliations(requester: str, identifier: str) -> object:
        """
        Returns the node's affiliations by bare JID; owners only.
        """

    def setAffiliations(
        requester: str, identifier: str, changes: Mapping[str, str]
    ) -> object:
        """
        Modify affiliations; owners only. An owner cannot remove the last owner.
        """

    def getSubscriptions(requester: str, identifier: str) -> object:
        """
        Returns every L{Subscription} of the node; owners only.
        """

    def setSubscriptions(
        requester: str, identifier: str, changes: Sequence[tuple[str, str, str | None]]
    ) -> object:
        """
        Modify subscriptions given as C{(jid, state, subid or None)}; owners only.
        """

    def answerAuthorization(
        requester: str, identifier: str, subscriber: str, subscriptionId: str | None,
        allow: bool,
    ) -> object:
        """
        An owner's answer to a pending subscription request.
        """

    def nodeInfo(requester: str, identifier: str) -> object:
        """
        Returns the L{NodeMetaData} (node, owners, publishers, subscriber count) for disco#info.
        """

    def listNodes(requester: str, parent: str | None) -> object:
        """
        Returns C{(identifier, title)} pairs of the nodes visible to the requester.
        """

    def itemIds(requester: str, identifier: str) -> object:
        """
        Returns the ids of the node's items visible to the requester (disco#items of a node).
        """


# -- replication ---------------------------------------------------------------------------------

from hermod_component.model import (
    Change,
    ChangeBatch,
    Conflict,
    ParkedItem,
    PartnerState,
    VersionRecord,
)


class IReplicationBackend(Interface):
    """
    Bridge between Hermod nodes and one external system (a spool directory, Midgard, CouchDB,
    LDAP).
    """

    name = Attribute("The configured instance name, for example C{'docs'}.")
    nodes = Attribute(
        "The nodes this backend always publishes to, as a tuple of strings (created at start);"
        " L{nodesFor} may name more, such as tag nodes, created when first published to."
    )

    def start() -> Deferred[None]:
        """
        Open connections or directories.
        """

    def stop() -> Deferred[None]:
        """
        Close them.
        """

    def capture(since: str | None, limit: int) -> Deferred[ChangeBatch]:
        """
        Local changes after position C{since} (L{None}: from the beginning), oldest first, about
        C{limit} of them. Writes made by L{apply} are not captured.
        """

    def apply(change: Change) -> Deferred[None]:
        """
        Make a remote change visible locally; applying it twice is harmless.

        @raise hermod_component.backends.errors.ParentMissing: an object it needs is missing;
            nothing was written.
        @raise hermod_component.backends.errors.BrokenChange: the payload cannot be applied.
        """

    def nodesFor(change: Change) -> Sequence[str]:
        """
        The nodes the changed object belongs to now (not a Deferred: computed from the change).
        The engine publishes the change item to each, and retracts the object from the nodes
        it was last published to and no longer belongs to (a delete's tombstone goes to all of
        them).
        """

    def setNotify(callback: object) -> None:
        """
        Register a no-argument callable to call when local changes are waiting, so the pump
        need not wait for its poll interval. A backend that cannot tell ignores it.
        """


class IBatchApply(Interface):
    """
    Optional for an L{IReplicationBackend}: apply a run of changes in one call, so that the
    backend can do the work away from the reactor (in a thread, one database round trip)
    while the reactor goes on reading and decoding what partners send.
    """

    def applyMany(changes: Sequence[Change]) -> Deferred[list[Exception | None]]:
        """
        Apply the changes in order, as L{IReplicationBackend.apply} would one after the other:
        each sees the ones before it (a parent applied earlier in the run is there). The
        engine passes at most one change per object in a run.

        @return: Fires with one entry per change: L{None} when applied, or the exception
            applying it raised (C{ParentMissing} or C{BrokenChange}: nothing written for it;
            anything else is parked as "apply failed" for an operator to retry). Fails only
            when it cannot tell the outcome of each change: the engine then parks the whole
            run as failed (retrying a change that was applied is harmless).
        """


class IWhitelistSource(Interface):
    """
    Optional for an L{IReplicationBackend}: the application database says who may subscribe
    to which node (a non-replicated table of whitelisted JIDs per node). Hermod makes the listed
    JIDs members of each node and removes the members no longer listed (and so, on a whitelist
    node, their subscriptions); owners, publishers, outcasts and configured partners are left
    alone. A listed node that does not exist is created as a whitelist node.
    """

    def whitelists() -> Deferred[Mapping[str, Sequence[str]] | None]:
        """
        The JIDs allowed to subscribe, per node name.

        @return: Fires with the mapping, or with L{None} when the application keeps no
            whitelists (nothing is changed then); a node absent from the mapping is not
            managed. Fails when the source cannot be read; Hermod logs that and tries again
            at the next interval.
        """


class IContactSource(Interface):
    """
    Optional for an L{IReplicationBackend}: the application database lists contacts with
    JIDs (persons, sites). Hermod disco-queries each at start and at the configured interval
    and subscribes to the pubsub nodes of those that are pubsub services, as far as the
    C{[discovery]} section allows.
    """

    def contacts() -> Deferred[Sequence[str]]:
        """
        The contacts' JIDs.

        @return: Fires with the JIDs (bare or domain JIDs), possibly none. Fails when the
            source cannot be read; Hermod logs that and tries again at the next interval.
        """


class IReplicationStore(Interface):
    """
    Durable replication state: capture positions, partner marks and counters, object versions,
    losing versions and parked items. Each method is one transaction.
    """

    def getPosition(backend: str) -> Deferred[str | None]:
        """
        The saved capture position of C{backend}, or L{None}.
        """

    def savePosition(backend: str, position: str | None) -> Deferred[None]:
        """
        Save the capture position of C{backend}.
        """

    def getVersions(backend: str, objectIds: Sequence[str]) -> Deferred[dict[str, VersionRecord]]:
        """
        The known versions of the objects, by object id; unknown ones are absent.
        """

    def saveVersions(backend: str, records: Sequence[VersionRecord]) -> Deferred[None]:
        """
        Insert or replace the current version of each object.
        """

    def saveApplied(
        versions: Mapping[str, Sequence[VersionRecord]],
        partners: Sequence[
            tuple[str, str, str | None, Mapping[str, int], float | None, float | None]
        ],
    ) -> Deferred[None]:
        """
        In one transaction: L{saveVersions} for each backend of C{versions}, then
        L{updatePartner} with each tuple of C{partners} (partner, node, mark, counts,
        lastApplied, lag), so a partner mark is never saved without the versions it covers.
        """

    def getPartner(partner: str, node: str) -> Deferred[PartnerState]:
        """
        The state of one partner subscription (zero counters if never seen).
        """

    def listPartners() -> Deferred[list[PartnerState]]:
        """
        Every partner subscription seen, ordered by partner and node.
        """

    def updatePartner(
        partner: str,
        node: str,
        mark: str | None,
        counts: Mapping[str, int],
        lastApplied: float | None,
        lag: float | None,
    ) -> Deferred[None]:
        """
        Add C{counts} (keys C{received}, C{applied}, C{refused}, C{parked}, C{ignored}) to the
        subscription's counters and, when not L{None}, set its mark, last apply time and lag.
        """

    def listPositions() -> Deferred[list[tuple[str, str | None]]]:
        """
        C{(backend, position)} pairs, ordered by backend.
        """

    def addConflict(backend: str, conflict: Conflict) -> Deferred[None]:
        """
        Keep a losing version; the same conflict (object, loser and winner) kept already is
        not added again.
        """

    def listConflicts(backend: str | None) -> Deferred[list[Conflict]]:
        """
        Losing versions, oldest first, of one backend or all.
        """

    def park(item: ParkedItem) -> Deferred[int]:
        """
        Keep an item that could not be applied; C{item.parkedId} is ignored. The same
        payload of the same object from the same partner node, parked already for the
        backend (delivered again), updates that parked item's reason, wait and time instead.

        @return: Its id.
        """

    def listParked(backend: str | None) -> Deferred[list[ParkedItem]]:
        """
        Parked items, oldest first, of one backend or all.
        """

    def updateParked(parkedId: int, reason: str, waitingFor: str) -> Deferred[None]:
        """
        Record a failed retry: count an attempt, set the reason.
        """

    def removeParked(parkedId: int) -> Deferred[bool]:
        """
        Remove a parked item (applied or discarded).

        @return: Whether it existed.
        """

    def listDiscovered() -> Deferred[list[tuple[str, str]]]:
        """
        The C{(partner, node)} subscriptions partner discovery made and has not undone, so
        that a later run can undo those whose contact went while Hermod was stopped.
        """

    def setDiscovered(partner: str, node: str, discovered: bool) -> Deferred[None]:
        """
        Record that discovery subscribed to C{node} of C{partner} (C{discovered}), or that
        it unsubscribed.
        """
