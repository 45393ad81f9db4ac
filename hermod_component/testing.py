"""
Shared test doubles for Hermod's own tests and for third-party backends.
"""

from __future__ import annotations

from typing import Any, Sequence

from zope.interface import implementer

from hermod_component.interfaces import INotifier
from hermod_component.model import Item, NodeConfig, Subscription


@implementer(INotifier)
class RecordingNotifier:
    """
    An L{INotifier} that records each call as C{(method name, keyword arguments)}.

    @ivar calls: The calls in order; recipient lists are copied as lists of C{(jid, [subids])}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, kind: str, **kwargs: Any) -> None:
        if "recipients" in kwargs:
            kwargs["recipients"] = [(j, list(s)) for j, s in kwargs["recipients"]]
        self.calls.append((kind, kwargs))

    def publish(
        self,
        node: str,
        items: Sequence[Item],
        withPayload: bool,
        messageType: str,
        recipients: Sequence[tuple[str, Sequence[str]]],
    ) -> None:
        self._record("publish", node=node, items=list(items), withPayload=withPayload,
                     messageType=messageType, recipients=recipients)

    def retract(self, node: str, itemIds: Sequence[str], messageType: str,
                recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("retract", node=node, itemIds=list(itemIds), messageType=messageType,
                     recipients=recipients)

    def purge(self, node: str, messageType: str,
              recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("purge", node=node, messageType=messageType, recipients=recipients)

    def delete(self, node: str, redirect: str | None, messageType: str,
               recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("delete", node=node, redirect=redirect, messageType=messageType,
                     recipients=recipients)

    def configuration(self, node: str, config: NodeConfig | None, messageType: str,
                      recipients: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._record("configuration", node=node, config=config, messageType=messageType,
                     recipients=recipients)

    def subscriptionChanged(self, subscription: Subscription) -> None:
        self._record("subscriptionChanged", subscription=subscription)

    def authorizationRequest(self, subscription: Subscription, owners: Sequence[str]) -> None:
        self._record("authorizationRequest", subscription=subscription, owners=list(owners))
