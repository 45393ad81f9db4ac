"""
What happens to subscriptions over time and with their subscriber's presence: C{pubsub#expire}
leases (a dateTime, or C{presence}) and C{send_last_published_item=on_sub_and_presence}.

L{SubscriptionLifecycle} belongs to the L{hermod_component.policy.PubSubPolicy}, which tells
it of every subscription saved, removed or loaded and of every presence change; it works
through the policy's storage, node cache and notifier. No XML here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hermod_component import errors
from hermod_component.model import Item, SendLastPublished, Subscription, SubscriptionState
from hermod_component.presence import PresenceChange, splitJID
from hermod_component.subscriptionoptions import EXPIRE, PRESENCE, directRecipient, expiry

if TYPE_CHECKING:
    from hermod_component.policy import PubSubPolicy, _NodeState


class SubscriptionLifecycle:
    """
    Ends subscriptions whose lease is over and sends the last items on presence.

    One timer per subscription with a C{pubsub#expire} dateTime, for the nodes whose state the
    policy has loaded (every node with such a subscription is loaded once after Hermod
    starts, by L{armLeases}).
    """

    log = Logger()

    def __init__(self, policy: PubSubPolicy, clock: IReactorTime) -> None:
        self.policy = policy
        self.clock = clock
        self._timers: dict[tuple[str, str], tuple[float, IDelayedCall]] = {}
        self._armed = False

    # -- leases --------------------------------------------------------------------------

    def saved(self, subscription: Subscription) -> None:
        """
        A subscription was created or changed: (re)arm its lease timer.
        """
        key = (subscription.node, subscription.subscriptionId)
        try:
            ends = expiry(subscription.options)
        except ValueError:
            ends = None
        current = self._timers.get(key)
        if isinstance(ends, float):
            if current is not None and current[0] == ends:
                return
            self._cancel(key)
            delay = max(0.0, ends - self.clock.seconds())
            call = self.clock.callLater(delay, self._leaseOver, subscription.node,
                                        subscription.subscriptionId, ends)
            self._timers[key] = (ends, call)
        else:
            self._cancel(key)

    def removed(self, subscription: Subscription) -> None:
        """
        A subscription is gone: forget its timer.
        """
        self._cancel((subscription.node, subscription.subscriptionId))

    def loaded(self, state: _NodeState) -> None:
        """
        The policy read a node's state from storage: arm the timers of its subscriptions.
        """
        for subscription in state.subscriptions:
            if subscription.options:
                self.saved(subscription)

    async def armLeases(self) -> int:
        """
        Once after start: load the state of every node holding a subscription with a lease,
        which arms its timer (leases already over end at once). Later calls do nothing.

        @return: How many nodes were loaded.
        """
        if self._armed:
            return 0
        self._armed = True
        loaded = 0
        for node in await self.policy.storage.listNodes():
            subscriptions = await self.policy.storage.getSubscriptions(node.identifier)
            if any(s.options.get(EXPIRE) for s in subscriptions):
                await self.policy._state(node.identifier)
                loaded += 1
        return loaded

    def _cancel(self, key: tuple[str, str]) -> None:
        entry = self._timers.pop(key, None)
        if entry is not None and entry[1].active():
            entry[1].cancel()

    def pendingLeases(self) -> int:
        """
        How many lease timers are armed (for tests and metrics).
        """
        return len(self._timers)

    def _leaseOver(self, node: str, subscriptionId: str, ends: float) -> None:
        self._timers.pop((node, subscriptionId), None)
        d = Deferred.fromCoroutine(self._end(node, subscriptionId, ends))
        d.addErrback(lambda f: self.log.failure("Ending an expired subscription failed", f))

    async def _end(self, node: str, subscriptionId: str, ends: float | str) -> None:
        """
        End a subscription whose lease C{ends} is over, if it still has that lease, and tell
        the subscriber (a subscription notification with C{subscription='none'}).
        """
        policy = self.policy
        try:
            state = await policy._state(node)
        except errors.NodeNotFound:
            return
        for subscription in state.subscriptions:
            if subscription.subscriptionId == subscriptionId:
                break
        else:
            return
        try:
            if expiry(subscription.options) != ends:
                return
        except ValueError:
            return
        await policy._removeSubscription(state, subscription)
        self.log.info(
            "Subscription {subid} of {jid} to {node} expired",
            subid=subscriptionId,
            jid=subscription.subscriber,
            node=node,
        )
        policy.notifier.subscriptionChanged(
            attrs.evolve(subscription, state=SubscriptionState.NONE)
        )

    # -- presence ------------------------------------------------------------------------

    def presenceChanged(self, change: PresenceChange) -> Deferred[None]:
        """
        React to a subscriber coming online or going offline: presence leases end, and nodes
        with C{send_last_published_item=on_sub_and_presence} send their last item.
        """
        d = Deferred.fromCoroutine(self._presenceChanged(change))
        d.addErrback(lambda f: self.log.failure("Handling presence of {jid} failed", f,
                                                jid=change.full))
        return d

    async def _presenceChanged(self, change: PresenceChange) -> None:
        if not (change.cameOnline or change.wentOffline):
            return
        bare, resource = splitJID(change.full)
        subscriptions = await self.policy.storage.getEntitySubscriptions(bare)

        def concerned(subscription: Subscription, whole: bool) -> bool:
            # A full-JID subscription follows that resource; a bare one follows the first
            # resource to come online and the last to go.
            if subscription.subscriber == change.full:
                return True
            return whole and subscription.subscriber == bare

        if change.wentOffline:
            for subscription in subscriptions:
                if concerned(subscription, change.lastResource) and (
                    subscription.options.get(EXPIRE, ()) == (PRESENCE,)
                ):
                    await self._end(subscription.node, subscription.subscriptionId, PRESENCE)
            return
        byNode: dict[str, list[Subscription]] = {}
        for subscription in subscriptions:
            if subscription.state is SubscriptionState.SUBSCRIBED and concerned(
                subscription, change.firstResource or not resource
            ):
                byNode.setdefault(subscription.node, []).append(subscription)
        for node, mine in byNode.items():
            await self._sendLast(node, mine, change.full)

    async def _sendLast(self, node: str, mine: list[Subscription], to: str) -> None:
        """
        Send C{to} the last item of C{node} if the node sends it on presence, with the SubIDs
        of the subscriptions that want it (their header filters and C{pubsub#deliver} apply).
        """
        from hermod_component.policy import _matches

        try:
            state = await self.policy._state(node)
        except errors.NodeNotFound:
            return
        config = state.node.config
        if (
            config.sendLastPublishedItem is not SendLastPublished.ON_SUB_AND_PRESENCE
            or not config.deliverNotifications
        ):
            return
        current = {s.subscriptionId: s for s in state.subscriptions}
        items: list[Item] = await self.policy.storage.getItems(node, maxItems=1)
        if not items:
            return
        wanting = [
            current[s.subscriptionId]
            for s in mine
            if s.subscriptionId in current and _matches(current[s.subscriptionId], items[0])
        ]
        if not wanting:
            return
        multi = state.multiSubscribers() or frozenset()
        subscriptionIds = (
            [s.subscriptionId for s in wanting] if any(s.subscriber in multi for s in mine) else []
        )
        self.policy.notifier.publish(
            node, items, config.deliverPayloads, config.notificationType,
            directRecipient(to, subscriptionIds, [s.options for s in wanting]),
        )
