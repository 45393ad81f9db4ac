"""
Hermod's configuration: frozen settings objects read once from a TOML file.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ComponentSettings:
    """
    The XEP-0114 connection.

    @ivar jid: The component's JID, such as C{pubsub.example.org}.
    @ivar secret: The shared secret, read from C{secret_file}.
    @ivar server: A Twisted client endpoint string for the server's component port.
    """

    jid: str
    secret: str = attrs.field(repr=False)
    server: str = "tcp:host=127.0.0.1:port=5347"


@attrs.frozen
class StorageSettings:
    """
    Where Hermod keeps its state.

    @ivar engine: C{"sqlite"} (default), C{"postgresql"} or C{"memory"}.
    @ivar path: The SQLite database file.
    @ivar dsn: The libpq connection string for PostgreSQL.
    """

    engine: str = "sqlite"
    path: str = "hermod.sqlite"
    dsn: str = attrs.field(default="", repr=False)


@attrs.frozen
class PubSubSettings:
    """
    Service-wide pubsub policy and limits.

    @ivar createNodes: C{"any"}, C{"local"} (same domain as the server), or a tuple of bare JIDs.
    @ivar admins: Bare JIDs with owner rights on every node.
    @ivar autoCreate: Whether publishing to a missing node creates it.
    @ivar maxPayloadSize: Largest payload accepted, in bytes.
    @ivar maxItemsPerNode: Largest C{max_items} a node may have; also what C{max} means.
    @ivar maxNodesPerOwner: How many nodes one bare JID may own; C{0} for no limit.
    @ivar defaultMaxItems: C{max_items} of a node created without one.
    """

    createNodes: str | tuple[str, ...] = "any"
    admins: tuple[str, ...] = ()
    autoCreate: bool = False
    maxPayloadSize: int = 65536
    maxItemsPerNode: int = 10000
    maxNodesPerOwner: int = 0
    defaultMaxItems: int = 10


@attrs.frozen
class Settings:
    """
    The whole configuration.
    """

    component: ComponentSettings
    storage: StorageSettings = StorageSettings()
    pubsub: PubSubSettings = PubSubSettings()
