"""
Presence addressed to the component: subscription handshakes, probes, and the availability of
subscribers, which it records in the policy's L{hermod_component.presence.PresenceState}.

A user's server forwards the user's presence broadcasts to the component once the component
is subscribed to the user's presence: a C{subscribe} from a user is answered C{subscribed}
and the component asks C{subscribe} back. A directed presence to the component counts as
well (the user's server then also sends the unavailable presence when the user leaves).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.words.protocols.jabber import jid
from twisted.words.xish import domish

from hermod_component.xmpp._xmpplib import XMPPHandler
from hermod_component.xmpp.serialize import quoteAttribute


class PresenceHandler(XMPPHandler):
    """
    Answers presence subscription requests and probes addressed to the component JID, and
    tells the policy when a subscriber comes online or goes offline.

    @ivar policy: The pubsub policy, whose C{presence} state is kept here and whose
        C{lifecycle} reacts to changes.
    """

    log = Logger()

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy
        self.service = policy.service
        policy.presenceTracked = True

    def connectionInitialized(self) -> None:
        """
        Watch every presence stanza of the stream.
        """
        self.xmlstream.addObserver("/presence", self._onPresence)

    def connectionLost(self, reason: object) -> None:
        """
        The stream is gone: what was known of presence is stale (it is sent again once the
        users' servers route to the component anew).
        """
        self.policy.presence.clear()
        super().connectionLost(reason)

    def _reply(self, to: str, presenceType: str | None = None) -> None:
        """
        Send a presence from the component, in the stream's own namespace as the notifier
        does (Prosody refuses stanzas an external component sends in C{jabber:client}).
        """
        kind = b" type=" + quoteAttribute(presenceType) if presenceType else b""
        self.send(
            b"<presence from=" + quoteAttribute(self.service) + b" to=" + quoteAttribute(to)
            + kind + b"/>"
        )

    def _onPresence(self, presence: domish.Element) -> None:
        sender = presence.getAttribute("from")
        to = presence.getAttribute("to")
        if not sender or not to:
            return
        try:
            target = jid.JID(to)
            entity = jid.JID(sender)
        except (jid.InvalidFormat, RuntimeError):
            self.log.warn(  # noqa: G010
                "Ignored presence with a malformed JID from {sender}", sender=sender)
            return
        if target.user or target.host != self.service:
            return
        presence.handled = True  # type: ignore[attr-defined]
        kind = presence.getAttribute("type")
        full = entity.full()
        bare = entity.userhost()
        if kind == "subscribe":
            self._reply(bare, "subscribed")
            self._reply(bare, "subscribe")
            self._reply(bare)
        elif kind == "unsubscribe":
            self._reply(bare, "unsubscribed")
        elif kind == "probe":
            self._reply(bare)
        elif kind in ("unavailable", "error"):
            self._changed(self.policy.presence.unavailable(full))
        elif kind is None:
            show = None
            for child in presence.elements():
                if child.name == "show":
                    show = str(child).strip()
            self._changed(self.policy.presence.available(full, show))

    def _changed(self, change: Any) -> None:
        if change.cameOnline or change.wentOffline:
            self.log.debug(
                "Presence: {jid} {what}",
                jid=change.full,
                what="online" if change.cameOnline else "offline",
            )
            self.policy.lifecycle.presenceChanged(change)
