"""
What the component knows of its users' presence: the available resources, each with its show.

The XMPP edge (L{hermod_component.xmpp.presence}) feeds it the presence stanzas addressed to
the component; the policy consults it for C{pubsub#show-values}, C{pubsub#expire=presence} and
C{send_last_published_item=on_sub_and_presence}. Only available resources are kept, so memory
follows the users online, not every user ever seen. No XML here.
"""

from __future__ import annotations

import attrs

#: The show of an available presence without C{<show/>}, as C{pubsub#show-values} names it.
ONLINE = "online"
#: The C{<show/>} values of RFC 6121 4.7.2.1, and L{ONLINE}.
SHOWS = frozenset({"away", "chat", "dnd", "xa", ONLINE})


def splitJID(full: str) -> tuple[str, str]:
    """
    C{(bare, resource)} of a normalized JID string; the resource is C{""} for a bare JID.
    """
    bare, _, resource = full.partition("/")
    return bare, resource


@attrs.frozen
class PresenceChange:
    """
    What one presence stanza changed.

    @ivar full: The JID it came from.
    @ivar cameOnline: C{full} was not available before and is now.
    @ivar firstResource: Its bare JID had no available resource before and has one now.
    @ivar wentOffline: C{full} was available before and is not now.
    @ivar lastResource: Its bare JID has no available resource left.
    """

    full: str
    cameOnline: bool = False
    firstResource: bool = False
    wentOffline: bool = False
    lastResource: bool = False


class PresenceState:
    """
    The available resources of every bare JID that told the component of its presence.
    """

    def __init__(self) -> None:
        self._resources: dict[str, dict[str, str]] = {}

    def available(self, full: str, show: str | None = None) -> PresenceChange:
        """
        C{full} is available, with C{show} (L{None} or unknown values mean L{ONLINE}).
        """
        bare, resource = splitJID(full)
        show = show if show in SHOWS else ONLINE
        resources = self._resources.get(bare)
        first = resources is None
        if resources is None:
            resources = self._resources[bare] = {}
        came = resource not in resources
        resources[resource] = show
        return PresenceChange(full, cameOnline=came, firstResource=first)

    def unavailable(self, full: str) -> PresenceChange:
        """
        C{full} went unavailable; a bare JID stands for all its resources.
        """
        bare, resource = splitJID(full)
        resources = self._resources.get(bare)
        if resources is None:
            return PresenceChange(full)
        if resource:
            gone = resources.pop(resource, None) is not None
        else:
            gone = bool(resources)
            resources.clear()
        if not resources:
            del self._resources[bare]
        return PresenceChange(full, wentOffline=gone, lastResource=gone and not resources)

    def clear(self) -> None:
        """
        Forget everything (the stream to the server is gone: presence will be sent again).
        """
        self._resources.clear()

    def isAvailable(self, entity: str) -> bool:
        """
        Whether C{entity} (a full JID, or a bare JID for any of its resources) is available.
        """
        bare, resource = splitJID(entity)
        resources = self._resources.get(bare)
        if not resources:
            return False
        return not resource or resource in resources

    def shows(self, entity: str) -> frozenset[str]:
        """
        The shows of C{entity}'s available resources (of that resource for a full JID).
        """
        bare, resource = splitJID(entity)
        resources = self._resources.get(bare, {})
        if resource:
            show = resources.get(resource)
            return frozenset() if show is None else frozenset((show,))
        return frozenset(resources.values())

    def __len__(self) -> int:
        """
        The number of available resources known.
        """
        return sum(len(r) for r in self._resources.values())
