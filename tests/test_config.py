"""
Tests for L{hermod_component.config}: reading the TOML file and every way it can be wrong.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hermod_component.config import (
    KEYS,
    SECTIONS,
    ComponentSettings,
    PubSubSettings,
    Settings,
    StorageSettings,
    loadSettings,
)
from hermod_component.errors import ConfigError

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "etc", "hermod.example.toml")

MINIMAL = """\
[component]
jid = "pubsub.example.org"
secret_file = "secret"
"""


class LoadSettingsTests(SynchronousTestCase):
    """
    Tests for L{loadSettings}.
    """

    def setUp(self) -> None:
        """
        A temp dir holding a secret file.
        """
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.write("secret", "  s3cret\n\n")

    def write(self, name: str, text: str) -> str:
        """
        Write C{text} to C{name} in the temp dir and return its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(self, text: str) -> Settings:
        """
        Load C{text} as C{hermod.toml} in the temp dir.
        """
        return loadSettings(self.write("hermod.toml", text))

    def assertConfigError(self, text: str, expected: str) -> str:
        """
        Loading C{text} fails with a one-line L{ConfigError} whose message matches the regular
        expression C{expected} from its start; return the message.
        """
        e = self.assertRaises(ConfigError, self.load, text)
        message = str(e)
        self.assertNotIn("\n", message)
        self.assertTrue(re.match(expected, message), f"{message!r} does not match {expected!r}")
        return message

    def test_minimal(self) -> None:
        """
        A file with only the required keys loads with defaults elsewhere; the secret is read from
        its file and stripped; the SQLite path is next to the configuration file.
        """
        settings = self.load(MINIMAL)
        self.assertEqual(
            settings,
            Settings(
                component=ComponentSettings(jid="pubsub.example.org", secret="s3cret"),
                storage=StorageSettings(
                    path=os.path.join(os.path.abspath(self.directory), "hermod.sqlite")
                ),
                pubsub=PubSubSettings(),
            ),
        )

    def test_everything(self) -> None:
        """
        Every key is mapped to its attribute, JIDs are normalized and relative paths resolved.
        """
        self.write("dsn", "dbname=hermod password=x\n")
        settings = self.load(
            """
            [component]
            jid = "PubSub.Example.ORG"
            secret_file = "secret"
            server = "tcp:host=xmpp.example.org:port=5275"

            [storage]
            engine = "postgresql"
            dsn_file = "dsn"

            [pubsub]
            create_nodes = ["Alice@Example.org", "example.org", "alice@example.org"]
            admins = ["Root@Example.org"]
            auto_create = true
            max_payload_size = 1024
            max_items_per_node = 50
            max_nodes_per_owner = 3
            default_max_items = 5
            archive_trim_interval = 60
            """
        )
        self.assertEqual(settings.component.jid, "pubsub.example.org")
        self.assertEqual(settings.component.server, "tcp:host=xmpp.example.org:port=5275")
        self.assertEqual(settings.storage.engine, "postgresql")
        self.assertEqual(settings.storage.dsn, "dbname=hermod password=x")
        self.assertEqual(
            settings.pubsub,
            PubSubSettings(
                createNodes=("alice@example.org", "example.org"),
                admins=("root@example.org",),
                autoCreate=True,
                maxPayloadSize=1024,
                maxItemsPerNode=50,
                maxNodesPerOwner=3,
                defaultMaxItems=5,
                archiveTrimInterval=60,
            ),
        )

    def test_secretsNotInRepr(self) -> None:
        """
        Neither the component secret nor the DSN appears in the settings' repr.
        """
        settings = self.load(
            MINIMAL + '[storage]\nengine = "postgresql"\ndsn = "dbname=h password=topsecret"\n'
        )
        self.assertNotIn("s3cret", repr(settings))
        self.assertNotIn("topsecret", repr(settings))

    def test_createNodesKeywords(self) -> None:
        """
        C{create_nodes} takes C{"any"} and C{"local"} as they are.
        """
        for value in ("any", "local"):
            settings = self.load(MINIMAL + f'[pubsub]\ncreate_nodes = "{value}"\n')
            self.assertEqual(settings.pubsub.createNodes, value)

    def test_memoryAndAbsolutePath(self) -> None:
        """
        An absolute SQLite path is kept; the memory engine needs nothing else.
        """
        settings = self.load(MINIMAL + '[storage]\nengine = "sqlite"\npath = "/var/lib/h.db"\n')
        self.assertEqual(settings.storage.path, "/var/lib/h.db")
        settings = self.load(MINIMAL + '[storage]\nengine = "memory"\n')
        self.assertEqual(settings.storage.engine, "memory")

    def test_relativePaths(self) -> None:
        """
        Relative C{storage.path} and C{component.secret_file} start at the file's directory,
        not at the working directory.
        """
        os.makedirs(os.path.join(self.directory, "sub"))
        self.write("sub/secret2", "other")
        settings = self.load(
            '[component]\njid = "p.example.org"\nsecret_file = "sub/secret2"\n'
            '[storage]\npath = "data/h.sqlite"\n'
        )
        self.assertEqual(settings.component.secret, "other")
        self.assertEqual(
            settings.storage.path, os.path.join(os.path.abspath(self.directory), "data/h.sqlite")
        )

    def test_missingFile(self) -> None:
        """
        A missing configuration file is a L{ConfigError} naming the file and the reason.
        """
        path = os.path.join(self.directory, "nope.toml")
        e = self.assertRaises(ConfigError, loadSettings, path)
        self.assertEqual(str(e), f"cannot read {path}: No such file or directory")

    def test_syntaxError(self) -> None:
        """
        A TOML syntax error is reported with its line number.
        """
        self.assertConfigError(MINIMAL + "[pubsub]\nauto_create = \n", r"invalid TOML: .*line 5")

    def test_unknownSection(self) -> None:
        """
        An unknown section is an error listing the known ones.
        """
        self.assertConfigError(
            MINIMAL + "[pubsbu]\n", r"unknown section \[pubsbu\] \(known: component, storage"
        )

    def test_sectionNotATable(self) -> None:
        """
        A section name used as a plain key is an error.
        """
        self.assertConfigError('storage = "memory"\n' + MINIMAL, r"storage: expected a table")

    def test_unknownKey(self) -> None:
        """
        An unknown key is an error naming it in dotted form and listing the known keys.
        """
        message = self.assertConfigError(
            MINIMAL + "[pubsub]\nmax_item = 3\n", r"unknown key pubsub\.max_item \(known: "
        )
        self.assertIn("max_items_per_node", message)

    def test_missingRequired(self) -> None:
        """
        A missing required key, or a missing [component] section, names the key.
        """
        self.assertConfigError('[component]\nsecret_file = "secret"\n', r"component\.jid: required")
        self.assertConfigError(
            '[component]\njid = "p.example.org"\n', r"component\.secret_file: required"
        )
        self.assertConfigError('[storage]\nengine = "memory"\n', r"component\.jid: required")

    def test_secretFileUnreadable(self) -> None:
        """
        A secret file that cannot be read is an error naming the key, the path and the reason.
        """
        self.assertConfigError(
            '[component]\njid = "p.example.org"\nsecret_file = "/nonexistent/x"\n',
            r"component\.secret_file: cannot read /nonexistent/x: No such file or directory$",
        )

    def test_secretFileEmpty(self) -> None:
        """
        A secret file holding only whitespace is an error.
        """
        path = self.write("empty", " \n\t\n")
        self.assertConfigError(
            f'[component]\njid = "p.example.org"\nsecret_file = "{path}"\n',
            rf"component\.secret_file: {re.escape(path)} is empty$",
        )

    def test_badComponentJID(self) -> None:
        """
        The component JID must be a valid domain JID.
        """
        for jid in ("user@example.org", "example.org/res", "bad host", "@x", ""):
            self.assertConfigError(
                f'[component]\njid = "{jid}"\nsecret_file = "secret"\n', r"component\.jid: "
            )
        self.assertConfigError(
            '[component]\njid = 5\nsecret_file = "secret"\n',
            r"component\.jid: expected a JID string, got 5$",
        )

    def test_badServer(self) -> None:
        """
        A server that is not a client endpoint description is an error naming the key.
        """
        for server in ("tcp:127.0.0.1", "smtp:x", "tcp:host=x:port=abc"):
            self.assertConfigError(
                MINIMAL + f'server = "{server}"\n', r"component\.server: not a client endpoint"
            )

    def test_badEngine(self) -> None:
        """
        An unknown storage engine is an error listing the valid ones.
        """
        self.assertConfigError(
            MINIMAL + '[storage]\nengine = "mysql"\n',
            r'storage\.engine: must be one of "sqlite", "postgresql", "memory", not "mysql"$',
        )

    def test_postgresqlNeedsDSN(self) -> None:
        """
        The PostgreSQL engine without a DSN is an error naming C{storage.dsn}.
        """
        self.assertConfigError(
            MINIMAL + '[storage]\nengine = "postgresql"\n', r"storage\.dsn: required"
        )

    def test_dsnTwice(self) -> None:
        """
        C{storage.dsn} and C{storage.dsn_file} together are an error.
        """
        self.write("dsn", "dbname=x")
        self.assertConfigError(
            MINIMAL + '[storage]\ndsn = "dbname=y"\ndsn_file = "dsn"\n',
            r"storage\.dsn_file: give either storage\.dsn or storage\.dsn_file, not both$",
        )

    def test_dsnFileUnreadable(self) -> None:
        """
        An unreadable C{dsn_file} names that key.
        """
        self.assertConfigError(
            MINIMAL + '[storage]\nengine = "postgresql"\ndsn_file = "missing"\n',
            r"storage\.dsn_file: cannot read .*missing: No such file or directory$",
        )

    def test_wrongTypes(self) -> None:
        """
        Values of the wrong TOML type name the key, the expected type and the value.
        """
        cases = [
            ('auto_create = "yes"', r'pubsub\.auto_create: expected a boolean, got "yes"$'),
            ("auto_create = 1", r"pubsub\.auto_create: expected a boolean, got 1$"),
            (
                'max_payload_size = "10"',
                r'pubsub\.max_payload_size: expected an integer, got "10"$',
            ),
            ("max_items_per_node = true", r"pubsub\.max_items_per_node: expected an integer"),
            (
                "default_max_items = 1.5",
                r"pubsub\.default_max_items: expected an integer, got 1.5$",
            ),
            ('admins = "a@b"', r'pubsub\.admins: expected a list of JIDs, got "a@b"$'),
            ("admins = [1]", r"pubsub\.admins: expected a JID string, got 1$"),
            ("create_nodes = 5", r'pubsub\.create_nodes: expected "any", "local" or a list'),
            ('create_nodes = "all"', r'pubsub\.create_nodes: expected "any", "local"'),
            (
                'archive_trim_interval = "5m"',
                r'pubsub\.archive_trim_interval: expected an integer, got "5m"$',
            ),
        ]
        for line, expected in cases:
            self.assertConfigError(MINIMAL + f"[pubsub]\n{line}\n", expected)
        self.assertConfigError(
            MINIMAL + "[storage]\npath = 3\n", r"storage\.path: expected a string, got 3$"
        )
        self.assertConfigError(MINIMAL + "server = true\n", r"component\.server: expected a string")

    def test_bounds(self) -> None:
        """
        Integers outside their bounds are errors naming the key and the bounds.
        """
        cases = [
            (
                "max_payload_size = 0",
                r"pubsub\.max_payload_size: must be between 1 and \d+, not 0$",
            ),
            ("max_items_per_node = -1", r"pubsub\.max_items_per_node: must be between 1 and"),
            ("max_nodes_per_owner = -5", r"pubsub\.max_nodes_per_owner: must be between 0 and"),
            ("default_max_items = 1000000000", r"pubsub\.default_max_items: must be between 0"),
            ("archive_trim_interval = 0", r"pubsub\.archive_trim_interval: must be between 1"),
        ]
        for line, expected in cases:
            self.assertConfigError(MINIMAL + f"[pubsub]\n{line}\n", expected)

    def test_connections(self) -> None:
        """
        C{component.connections} defaults to 1, takes 1 to 64, and anything else is an error
        naming the key.
        """
        self.assertEqual(self.load(MINIMAL).component.connections, 1)
        self.assertEqual(self.load(MINIMAL + "connections = 4\n").component.connections, 4)
        for value, expected in [
            ("0", r"component\.connections: must be between 1 and 64, not 0$"),
            ("65", r"component\.connections: must be between 1 and 64, not 65$"),
            ('"4"', r"component\.connections: expected an integer, got "),
            ("true", r"component\.connections: expected an integer, got "),
        ]:
            self.assertConfigError(MINIMAL + f"connections = {value}\n", expected)

    def test_multicast(self) -> None:
        """
        C{component.multicast} defaults to C{"off"} and takes C{"auto"} or a domain JID
        (normalized); anything else is an error naming the key and the choices.
        """
        self.assertEqual(self.load(MINIMAL).component.multicast, "off")
        self.assertEqual(self.load(MINIMAL + 'multicast = "auto"\n').component.multicast, "auto")
        self.assertEqual(
            self.load(MINIMAL + 'multicast = "Multicast.Example.org"\n').component.multicast,
            "multicast.example.org",
        )
        for value in ('"a@example.org"', '"example.org/r"', "true", '""', '"on"'):
            self.assertConfigError(
                MINIMAL + f"multicast = {value}\n",
                r'component\.multicast: must be "off", "auto" or a multicast service',
            )

    def test_connectionsWithPartners(self) -> None:
        """
        Several connections together with C{[[partners]]} are refused, naming the key.
        """
        self.assertConfigError(
            MINIMAL + "connections = 2\n"
            '[backends.docs]\ntype = "spool"\npath = "spool"\n'
            '[[partners]]\njid = "pubsub.b.example"\nnode = "/docs/all"\nbackend = "docs"\n',
            r"component\.connections: must be 1 when \[\[partners\]\] or \[discovery\] are configured "
            r".*not 2$",
        )

    def test_defaultMaxItemsAboveMaximum(self) -> None:
        """
        C{default_max_items} larger than C{max_items_per_node} is an error.
        """
        self.assertConfigError(
            MINIMAL + "[pubsub]\nmax_items_per_node = 5\ndefault_max_items = 10\n",
            r"pubsub\.default_max_items: must not exceed pubsub\.max_items_per_node \(5\), not 10$",
        )

    def test_badJIDsInLists(self) -> None:
        """
        Invalid or full JIDs in C{admins} and C{create_nodes} are errors naming the key.
        """
        self.assertConfigError(
            MINIMAL + '[pubsub]\nadmins = ["a@b/phone"]\n',
            r'pubsub\.admins: must be a bare JID without a resource, not "a@b/phone"$',
        )
        self.assertConfigError(
            MINIMAL + '[pubsub]\ncreate_nodes = ["a@"]\n',
            r'pubsub\.create_nodes: "a@" is not a valid JID',
        )

    def test_tableCoversEverySettingsAttribute(self) -> None:
        """
        Every attribute of every section's settings class can be set from the file.
        """
        import attrs

        for section in SECTIONS:
            factory: Any = section.factory
            attributes = {a.name for a in attrs.fields(factory)}
            mapped = {k.attribute for k in KEYS if k.section == section.name}
            self.assertEqual(attributes, mapped, section.name)

    def test_exampleLoads(self) -> None:
        """
        The documented example configuration loads once its secret file exists.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        secret = os.path.abspath(os.path.join(self.directory, "secret"))
        text, count = re.subn(r'(?m)^secret_file = ".*"$', f'secret_file = "{secret}"', text)
        self.assertEqual(count, 1)
        settings = self.load(text)
        self.assertEqual(settings.component.secret, "s3cret")
        self.assertEqual(settings.pubsub, PubSubSettings())

    def test_exampleDocumentsEveryKey(self) -> None:
        """
        The example configuration mentions every key, set or commented out.
        """
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        for key in KEYS:
            self.assertTrue(
                re.search(rf"(?m)^#? ?{key.key} = ", text),
                f"{key.section}.{key.key} not in example",
            )
