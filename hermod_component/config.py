"""
Hermod's configuration: frozen settings objects read once from a TOML file.

L{loadSettings} reads the file with C{tomllib}, checks every key against one table (L{KEYS}) of
C{(section, key, attribute, converter)} rows and builds the frozen settings objects. Every problem
becomes a L{ConfigError} with a one-line message that names the key in dotted form, such as
C{storage.engine: must be one of "sqlite", "postgresql", "memory", not "mysql"}.

To add a section, add its settings class, a L{Section} row in L{SECTIONS}, its keys in L{KEYS}
and, when keys depend on each other, a check function in the section row.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.words.protocols.jabber import jid as jabberJID

from hermod_component.errors import ConfigError


@attrs.frozen
class ComponentSettings:
    """
    The XEP-0114 connection.

    @ivar jid: The component's JID, such as C{pubsub.example.org}.
    @ivar secret: The shared secret, read from C{secret_file}.
    @ivar server: A Twisted client endpoint string for the server's component port.
    @ivar writeBuffer: Bytes of notifications waiting for the server on one connection above
        which Hermod stops reading new requests until the server has drained them
        (backpressure).
    @ivar connections: How many XEP-0114 streams to open as this JID (ejabberd balances among
        them; Prosody accepts one).
    @ivar maxRequests: Requests in progress on one connection at which Hermod stops reading
        new ones until half of them are answered.
    @ivar multicast: C{"off"} (every notification is its own message), C{"auto"} (use the
        XEP-0033 multicast service the server lists, if any), or that service's JID.
    """

    jid: str
    secret: str = attrs.field(repr=False)
    server: str = "tcp:host=127.0.0.1:port=5347"
    writeBuffer: int = 4 * 1024 * 1024
    connections: int = 1
    maxRequests: int = 1000
    multicast: str = "off"


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
    @ivar publishRate: Publishes per second one bare JID may sustain; C{0} for no limit.
    @ivar publishBurst: Publishes one bare JID may make at once before the rate applies.
    @ivar maxSubscribersPerNode: Subscriptions one node may hold; C{0} for no limit.
    @ivar archiveTrimInterval: Seconds between the passes applying every node's archive
        retention (C{hermod#archive_max_age}, C{hermod#archive_max_events}).
    """

    createNodes: str | tuple[str, ...] = "any"
    admins: tuple[str, ...] = ()
    autoCreate: bool = False
    maxPayloadSize: int = 65536
    maxItemsPerNode: int = 10000
    maxNodesPerOwner: int = 0
    defaultMaxItems: int = 10
    publishRate: float = 0.0
    publishBurst: int = 100
    maxSubscribersPerNode: int = 0
    archiveTrimInterval: int = 300


@attrs.frozen
class MetricsSettings:
    """
    The Prometheus metrics endpoint.

    @ivar port: TCP port of the HTTP endpoint serving C{/metrics}; C{0} turns it off.
    @ivar interface: The address it listens on.
    """

    port: int = 0
    interface: str = "127.0.0.1"


@attrs.frozen
class Settings:
    """
    The whole configuration.
    """

    component: ComponentSettings
    storage: StorageSettings = StorageSettings()
    pubsub: PubSubSettings = PubSubSettings()
    metrics: MetricsSettings = MetricsSettings()
    backends: Mapping[str, BackendSettings] = attrs.field(factory=dict)
    partners: tuple[PartnerSettings, ...] = ()
    discovery: DiscoverySettings | None = None


@attrs.frozen
class BackendSettings:
    """
    One C{[backends.NAME]} table: a named replication backend instance.

    @ivar name: The table's name, which partners refer to.
    @ivar type: The backend type (C{spool} or a third-party entry point name).
    @ivar options: The table's other keys, for the backend to check; C{path} is made absolute.
    @ivar pollInterval: Seconds between captures when nothing notifies.
    @ivar batchSize: At most this many changes per capture.
    @ivar whitelistInterval: Seconds between syncs of the nodes' members with the backend's
        whitelists (for backends that supply them).
    """

    name: str
    type: str
    options: Mapping[str, Any] = attrs.field(factory=dict)
    pollInterval: float = 1.0
    batchSize: int = 500
    whitelistInterval: float = 60.0


@attrs.frozen
class DiscoverySettings:
    """
    The C{[discovery]} section: partner Hermods found among a backend's contacts.

    @ivar backend: The local backend that lists the contacts and applies their items.
    @ivar nodes: Glob patterns (C{fnmatch}) of the contacts' nodes to subscribe to.
    @ivar interval: Seconds between discovery passes (the first one is at connection).
    @ivar role: The role discovered partners get on the backend's nodes, as for partners.
    @ivar transform: An XSLT file applied before C{apply()}, or L{None}.
    @ivar timeout: Seconds to wait for a contact's disco answer.
    """

    backend: str
    nodes: tuple[str, ...]
    interval: float = 300.0
    role: str = "publisher"
    transform: str | None = None
    timeout: float = 30.0


@attrs.frozen
class PartnerSettings:
    """
    One C{[[partners]]} entry: a subscription to a partner Hermod's node.

    @ivar jid: The partner's component JID.
    @ivar node: Its node.
    @ivar backend: The local backend instance that applies its items.
    @ivar transform: An XSLT file applied before C{apply()}, or L{None}.
    @ivar role: The partner's affiliation on the backend's nodes set at start when it has none:
        C{publisher} (read-write replica) or C{member} (read-only: its items are refused).
    """

    jid: str
    node: str
    backend: str
    transform: str | None = None
    role: str = "publisher"


class Invalid(Exception):
    """
    Raised by a converter: the value of the key being converted is wrong.

    L{loadSettings} prefixes the message with the key's dotted name and raises L{ConfigError}.
    """


@attrs.frozen
class Context:
    """
    What a converter may need besides the value.

    @ivar directory: The directory of the configuration file; relative paths start here.
    """

    directory: str


Converter = Callable[[Any, Context], Any]


@attrs.frozen
class Key:
    """
    One configuration key: where it lives in the file and in the settings objects.

    @ivar section: The TOML table, such as C{"storage"}.
    @ivar key: The key in the file, snake_case.
    @ivar attribute: The settings attribute it sets, mixedCase.
    @ivar convert: Checks the value and returns the attribute's value, or raises L{Invalid}.
    @ivar required: Whether the key must be present.
    """

    section: str
    key: str
    attribute: str
    convert: Converter
    required: bool = False


@attrs.frozen
class Section:
    """
    One TOML table of the file and the settings class it becomes.

    @ivar name: The table's name, also the L{Settings} attribute.
    @ivar factory: Builds the section's settings object from attribute keyword arguments.
    @ivar check: Checks rules between keys of the section, on the built object; raises
        L{ConfigError} naming the key.
    """

    name: str
    factory: Callable[..., Any]
    check: Callable[[Any], None] | None = None


def show(value: object) -> str:
    """
    A value as it would be written in TOML, for error messages.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def string(value: object, context: Context) -> str:
    """
    A non-empty string.
    """
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {show(value)}")
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def boolean(value: object, context: Context) -> bool:
    """
    A TOML boolean (C{true} or C{false}, unquoted).
    """
    if not isinstance(value, bool):
        raise Invalid(f"expected a boolean, got {show(value)}")
    return value


def positiveOrZero(value: object, context: Context) -> float:
    """
    A number of zero or more (an integer or a float).
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise Invalid(f"expected a number of 0 or more, got {show(value)}")
    return float(value)


def integer(minimum: int, maximum: int) -> Converter:
    """
    A converter for integers from C{minimum} to C{maximum} inclusive.
    """

    def convert(value: object, context: Context) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"expected an integer, got {show(value)}")
        if not minimum <= value <= maximum:
            raise Invalid(f"must be between {minimum} and {maximum}, not {value}")
        return value

    return convert


def choice(*options: str) -> Converter:
    """
    A converter for one of the strings C{options}.
    """
    known = ", ".join(json.dumps(o) for o in options)

    def convert(value: object, context: Context) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {show(value)}")
        if value not in options:
            raise Invalid(f"must be one of {known}, not {show(value)}")
        return value

    return convert


def _parseJID(value: object) -> jabberJID.JID:
    """
    Parse and normalize a JID, or raise L{Invalid}.
    """
    if not isinstance(value, str):
        raise Invalid(f"expected a JID string, got {show(value)}")
    if not value or value.startswith(("@", "/")):
        raise Invalid(f"{show(value)} is not a valid JID")
    try:
        return jabberJID.JID(value)
    except (jabberJID.InvalidFormat, RuntimeError) as e:
        raise Invalid(f"{show(value)} is not a valid JID: {e}") from None


def domainJID(value: object, context: Context) -> str:
    """
    A domain-only JID, such as a component's C{pubsub.example.org}, normalized.
    """
    parsed = _parseJID(value)
    if parsed.user is not None or parsed.resource is not None:
        raise Invalid(f'must be a domain JID such as "pubsub.example.org", not {show(value)}')
    return str(parsed.full())


def multicastService(value: object, context: Context) -> str:
    """
    C{"off"}, C{"auto"}, or the domain JID of an XEP-0033 multicast service (with at least
    one dot, as C{multicast.example.org}: a bare word is a mistyped choice).
    """
    if value in ("off", "auto"):
        return str(value)
    try:
        jid = domainJID(value, context)
        if "." not in jid:  # such as "on": a service has a name under the server's domain
            raise Invalid(jid)
        return jid
    except Invalid:
        raise Invalid(
            f'must be "off", "auto" or a multicast service\'s domain JID such as '
            f'"multicast.example.org", not {show(value)}'
        ) from None


def bareJID(value: object, context: Context) -> str:
    """
    A bare JID (C{user@host} or C{host}), normalized.
    """
    parsed = _parseJID(value)
    if parsed.resource is not None:
        raise Invalid(f"must be a bare JID without a resource, not {show(value)}")
    return str(parsed.userhost())


def bareJIDs(value: object, context: Context) -> tuple[str, ...]:
    """
    A list of bare JIDs, normalized, duplicates removed, order kept.
    """
    if not isinstance(value, list):
        raise Invalid(f"expected a list of JIDs, got {show(value)}")
    result: list[str] = []
    for element in value:
        normalized = bareJID(element, context)
        if normalized not in result:
            result.append(normalized)
    return tuple(result)


def createNodes(value: object, context: Context) -> str | tuple[str, ...]:
    """
    C{"any"}, C{"local"} or a list of bare JIDs.
    """
    if value in ("any", "local"):
        assert isinstance(value, str)
        return value
    if isinstance(value, list):
        return bareJIDs(value, context)
    raise Invalid(f'expected "any", "local" or a list of JIDs, got {show(value)}')


def clientEndpoint(value: object, context: Context) -> str:
    """
    A Twisted client endpoint string, such as C{tcp:host=127.0.0.1:port=5347}.

    The string is parsed against a memory reactor, so nothing connects.
    """
    from twisted.internet.endpoints import clientFromString
    from twisted.internet.testing import MemoryReactor

    description = string(value, context)
    try:
        clientFromString(MemoryReactor(), description)
    except Exception as e:  # noqa: BLE001 - endpoint parsers raise anything
        raise Invalid(f"not a client endpoint description ({show(description)}): {e}") from None
    return description


def _resolve(path: str, context: Context) -> str:
    """
    C{path}, made absolute relative to the configuration file's directory.
    """
    return os.path.normpath(os.path.join(context.directory, os.path.expanduser(path)))


def filePath(value: object, context: Context) -> str:
    """
    A file name; a relative one is relative to the configuration file's directory.
    """
    return _resolve(string(value, context), context)


def secretFile(value: object, context: Context) -> str:
    """
    The contents of the file named by the value, stripped of surrounding whitespace.

    Keeps secrets (the component secret, a DSN with a password) out of the configuration.
    """
    path = filePath(value, context)
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as e:
        raise Invalid(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text") from None
    if not secret:
        raise Invalid(f"{path} is empty")
    return secret


def _checkStorage(storage: StorageSettings) -> None:
    """
    PostgreSQL needs a DSN.
    """
    if storage.engine == "postgresql" and not storage.dsn:
        raise ConfigError('storage.dsn: required when storage.engine is "postgresql"')


def _checkPubSub(pubsub: PubSubSettings) -> None:
    """
    The default C{max_items} fits under the per-node maximum.
    """
    if pubsub.defaultMaxItems > pubsub.maxItemsPerNode:
        raise ConfigError(
            f"pubsub.default_max_items: must not exceed pubsub.max_items_per_node "
            f"({pubsub.maxItemsPerNode}), not {pubsub.defaultMaxItems}"
        )


#: Most component connections C{component.connections} may ask for.
MAX_CONNECTIONS = 64

SECTIONS: Sequence[Section] = (
    Section("component", ComponentSettings),
    Section("storage", StorageSettings, _checkStorage),
    Section("pubsub", PubSubSettings, _checkPubSub),
    Section("metrics", MetricsSettings),
)

KEYS: Sequence[Key] = (
    Key("component", "jid", "jid", domainJID, required=True),
    Key("component", "secret_file", "secret", secretFile, required=True),
    Key("component", "server", "server", clientEndpoint),
    Key("storage", "engine", "engine", choice("sqlite", "postgresql", "memory")),
    Key("storage", "path", "path", filePath),
    Key("storage", "dsn", "dsn", string),
    Key("storage", "dsn_file", "dsn", secretFile),
    Key("pubsub", "create_nodes", "createNodes", createNodes),
    Key("pubsub", "admins", "admins", bareJIDs),
    Key("pubsub", "auto_create", "autoCreate", boolean),
    Key("pubsub", "max_payload_size", "maxPayloadSize", integer(1, 64 * 1024 * 1024)),
    Key("pubsub", "max_items_per_node", "maxItemsPerNode", integer(1, 100_000_000)),
    Key("pubsub", "max_nodes_per_owner", "maxNodesPerOwner", integer(0, 100_000_000)),
    Key("pubsub", "default_max_items", "defaultMaxItems", integer(0, 100_000_000)),
    Key("pubsub", "publish_rate", "publishRate", positiveOrZero),
    Key("pubsub", "publish_burst", "publishBurst", integer(1, 1_000_000)),
    Key("pubsub", "max_subscribers_per_node", "maxSubscribersPerNode", integer(0, 100_000_000)),
    Key("pubsub", "archive_trim_interval", "archiveTrimInterval", integer(1, 7 * 86400)),
    Key("component", "write_buffer", "writeBuffer", integer(65536, 1024 * 1024 * 1024)),
    Key("component", "connections", "connections", integer(1, MAX_CONNECTIONS)),
    Key("component", "max_requests", "maxRequests", integer(2, 1_000_000)),
    Key("component", "multicast", "multicast", multicastService),
    Key("metrics", "port", "port", integer(0, 65535)),
    Key("metrics", "interface", "interface", string),
)

#: Attributes whose default is a path, resolved against the file's directory like given paths.
PATH_DEFAULTS: Mapping[tuple[str, str], str] = {("storage", "path"): "hermod.sqlite"}


def _readTOML(path: str) -> dict[str, Any]:
    """
    The parsed file, or L{ConfigError} saying why it cannot be had.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}") from None


def settingsFromDict(document: Mapping[str, Any], directory: str) -> Settings:
    """
    Check a parsed configuration document and build the settings from it.

    @param document: The TOML document as C{tomllib} returns it.
    @param directory: Where relative paths in the document start.
    @raise ConfigError: Any problem, naming the key.
    """
    context = Context(directory)
    sectionNames = [s.name for s in SECTIONS] + ["backends", "partners", "discovery"]
    for name in document:
        if name not in sectionNames:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sectionNames)})")

    built: dict[str, Any] = {}
    for section in SECTIONS:
        table = document.get(section.name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section.name}: expected a table, got {show(table)}")
        keys = [k for k in KEYS if k.section == section.name]
        known = [k.key for k in keys]
        for key in table:
            if key not in known:
                raise ConfigError(
                    f"unknown key {section.name}.{key} (known: {', '.join(sorted(known))})"
                )
        arguments: dict[str, Any] = {}
        setBy: dict[str, str] = {}
        for (sectionName, keyName), default in PATH_DEFAULTS.items():
            if sectionName == section.name:
                arguments[keyName] = _resolve(default, context)
        for key in keys:
            dotted = f"{section.name}.{key.key}"
            if key.key not in table:
                if key.required:
                    raise ConfigError(f"{dotted}: required")
                continue
            if key.attribute in setBy:
                raise ConfigError(
                    f"{dotted}: give either {setBy[key.attribute]} or {dotted}, not both"
                )
            try:
                arguments[key.attribute] = key.convert(table[key.key], context)
            except Invalid as e:
                raise ConfigError(f"{dotted}: {e}") from None
            setBy[key.attribute] = dotted
        value = section.factory(**arguments)
        if section.check is not None:
            section.check(value)
        built[section.name] = value
    built["backends"], built["partners"] = _replicationSettings(document, context)
    built["discovery"] = _discoverySettings(document, context, built["backends"])
    if built["component"].connections > 1 and (built["partners"] or built["discovery"]):
        raise ConfigError(
            "component.connections: must be 1 when [[partners]] or [discovery] are configured "
            "(the partner link keeps its requests on one stream, and the server may answer on "
            f"another), not {built['component'].connections}"
        )
    return Settings(**built)


def _number(value: object, dotted: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{dotted}: expected a positive number, got {show(value)}")
    return float(value)


def _replicationSettings(
    document: Mapping[str, Any], context: Context
) -> tuple[dict[str, BackendSettings], tuple[PartnerSettings, ...]]:
    """
    The C{[backends.NAME]} tables and C{[[partners]]} entries.

    Backend tables keep their type-specific keys in C{options} for the backend to check at
    start; C{type} is required and C{path} is resolved against the file's directory.
    """
    backends: dict[str, BackendSettings] = {}
    tables = document.get("backends", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"backends: expected tables [backends.NAME], got {show(tables)}")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"backends.{name}: expected a table, got {show(table)}")
        options = dict(table)
        kind = options.pop("type", None)
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"backends.{name}.type: required (for example \"spool\")")
        interval = _number(options.pop("poll_interval", 1.0), f"backends.{name}.poll_interval")
        whitelistInterval = _number(
            options.pop("whitelist_interval", 60.0), f"backends.{name}.whitelist_interval"
        )
        batch = options.pop("batch_size", 500)
        try:
            batch = integer(1, 100_000)(batch, context)
        except Invalid as e:
            raise ConfigError(f"backends.{name}.batch_size: {e}") from None
        if "path" in options:
            try:
                options["path"] = filePath(options["path"], context)
            except Invalid as e:
                raise ConfigError(f"backends.{name}.path: {e}") from None
        backends[name] = BackendSettings(name, kind, options, interval, batch, whitelistInterval)
    entries = document.get("partners", [])
    if not isinstance(entries, list):
        raise ConfigError(f"partners: expected [[partners]] entries, got {show(entries)}")
    partners = []
    known = ("backend", "jid", "node", "role", "transform")
    for number, entry in enumerate(entries):
        where = f"partners[{number}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table, got {show(entry)}")
        for key in entry:
            if key not in known:
                raise ConfigError(f"unknown key {where}.{key} (known: {', '.join(known)})")
        for key in ("jid", "node", "backend"):
            if key not in entry:
                raise ConfigError(f"{where}.{key}: required")
        try:
            partner = PartnerSettings(
                jid=domainJID(entry["jid"], context),
                node=string(entry["node"], context),
                backend=string(entry["backend"], context),
                transform=filePath(entry["transform"], context) if "transform" in entry else None,
                role=choice("publisher", "member")(entry.get("role", "publisher"), context),
            )
        except Invalid as e:
            raise ConfigError(f"{where}: {e}") from None
        if partner.backend not in backends:
            raise ConfigError(
                f"{where}.backend: no [backends.{partner.backend}] table "
                f"(known: {', '.join(sorted(backends)) or 'none'})"
            )
        partners.append(partner)
    return backends, tuple(partners)


def _discoverySettings(
    document: Mapping[str, Any], context: Context, backends: Mapping[str, BackendSettings]
) -> DiscoverySettings | None:
    """
    The C{[discovery]} section, if present.
    """
    table = document.get("discovery")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"discovery: expected a table, got {show(table)}")
    known = ("backend", "interval", "nodes", "role", "timeout", "transform")
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key discovery.{key} (known: {', '.join(known)})")
    for key in ("backend", "nodes"):
        if key not in table:
            raise ConfigError(f"discovery.{key}: required")
    nodes = table["nodes"]
    if not isinstance(nodes, list) or not nodes or not all(
        isinstance(n, str) and n for n in nodes
    ):
        raise ConfigError(
            f"discovery.nodes: expected a list of node patterns such as [\"/docs/*\"], "
            f"got {show(nodes)}"
        )
    try:
        backend = string(table["backend"], context)
    except Invalid as e:
        raise ConfigError(f"discovery.backend: {e}") from None
    if backend not in backends:
        raise ConfigError(
            f"discovery.backend: no [backends.{backend}] table "
            f"(known: {', '.join(sorted(backends)) or 'none'})"
        )
    try:
        role = choice("publisher", "member")(table.get("role", "publisher"), context)
    except Invalid as e:
        raise ConfigError(f"discovery.role: {e}") from None
    transform = None
    if "transform" in table:
        try:
            transform = filePath(table["transform"], context)
        except Invalid as e:
            raise ConfigError(f"discovery.transform: {e}") from None
    return DiscoverySettings(
        backend=backend,
        nodes=tuple(nodes),
        interval=_number(table.get("interval", 300.0), "discovery.interval"),
        role=role,
        transform=transform,
        timeout=_number(table.get("timeout", 30.0), "discovery.timeout"),
    )


def loadSettings(path: str) -> Settings:
    """
    Read the TOML configuration file at C{path}.

    Relative paths in it (C{storage.path}, C{component.secret_file}, C{storage.dsn_file}) are
    relative to the file's directory. Secret files are read now.

    @raise ConfigError: The file is missing, unreadable, not TOML, or has a bad, unknown or
        missing key. The message is one line and names the key.
    """
    document = _readTOML(path)
    return settingsFromDict(document, os.path.dirname(os.path.abspath(path)))
