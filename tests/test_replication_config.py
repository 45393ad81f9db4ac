"""
Tests for the [backends.NAME] and [[partners]] configuration sections.
"""

from __future__ import annotations

import tomllib

from twisted.trial.unittest import SynchronousTestCase

from hermod_component.config import (
    BackendSettings,
    DiscoverySettings,
    PartnerSettings,
    settingsFromDict,
)
from hermod_component.errors import ConfigError


class ReplicationConfigTests(SynchronousTestCase):
    """
    The keys of issue 5 work exactly as named; mistakes name the key.
    """

    def test_keys(self) -> None:
        """
        A backend table and a partner entry become settings; path and transform are resolved.
        """
        settings = settingsFromDict(tomllib.loads(
            '[component]\njid = "pubsub.a.example"\nsecret_file = "/etc/hostname"\n'
            '[backends.docs]\ntype = "spool"\npath = "docs"\nnode = "/docs/all"\n'
            "poll_interval = 0.5\n"
            '[[partners]]\njid = "pubsub.b.example"\nnode = "/docs/all"\nbackend = "docs"\n'
            'transform = "x.xsl"\n'
        ), "/etc/hermod")
        self.assertEqual(settings.backends, {"docs": BackendSettings(
            "docs", "spool", {"path": "/etc/hermod/docs", "node": "/docs/all"}, 0.5, 500)})
        self.assertEqual(settings.partners, (PartnerSettings(
            "pubsub.b.example", "/docs/all", "docs", "/etc/hermod/x.xsl", "publisher"),))

    def test_errors(self) -> None:
        """
        A missing type, an unknown partner key, an unknown backend and a bad role are refused
        with the key's name.
        """
        head = '[component]\njid = "pubsub.a.example"\nsecret_file = "/etc/hostname"\n'
        cases = {
            '[backends.docs]\npath = "x"\n': "backends.docs.type",
            '[backends.d]\ntype = "spool"\n[[partners]]\njid = "b.x"\nnode = "/n"\n'
            'backend = "d"\ncolour = 1\n': "partners[0].colour",
            '[[partners]]\njid = "b.x"\nnode = "/n"\nbackend = "nope"\n': "partners[0].backend",
            '[backends.d]\ntype = "spool"\n[[partners]]\njid = "b.x"\nnode = "/n"\n'
            'backend = "d"\nrole = "boss"\n': "partners[0]",
        }
        for text, key in cases.items():
            error = self.assertRaises(
                ConfigError, settingsFromDict, tomllib.loads(head + text), "/etc/hermod"
            )
            self.assertIn(key, str(error))


class TagAndDiscoveryConfigTests(SynchronousTestCase):
    """
    The keys for tag nodes, whitelists and partner discovery.
    """

    head = '[component]\njid = "pubsub.a.example"\nsecret_file = "/etc/hostname"\n'

    def test_spoolTagAndFileKeys(self) -> None:
        """
        C{tag_field}, C{tag_prefix}, C{whitelist_file}, C{contacts_file} and
        C{whitelist_interval} reach the spool backend, which puts objects on the tag nodes.
        """
        from hermod_component.backends import makeBackend
        from hermod_component.model import Change, ChangeAction

        settings = settingsFromDict(tomllib.loads(
            self.head + '[backends.docs]\ntype = "spool"\npath = "docs"\nnode = "/docs/all"\n'
            'tag_field = "tag"\ntag_prefix = "/docs/tag"\nwhitelist_file = "wl.json"\n'
            'contacts_file = "/etc/hermod/contacts.json"\nwhitelist_interval = 5\n'
        ), "/etc/hermod")
        options = settings.backends["docs"]
        self.assertEqual(options.whitelistInterval, 5.0)
        backend = makeBackend(options.type, "docs", options.options, None)
        self.assertEqual(backend.whitelistFile, "/etc/hermod/docs/wl.json")
        self.assertEqual(backend.contactsFile, "/etc/hermod/contacts.json")
        change = Change("x", ChangeAction.UPDATE, b'{"tag": "a"}', "application/json")
        self.assertEqual(tuple(backend.nodesFor(change)), ("/docs/all", "/docs/tag/a"))

    def test_discovery(self) -> None:
        """
        A C{[discovery]} section becomes settings with its defaults.
        """
        settings = settingsFromDict(tomllib.loads(
            self.head + '[backends.docs]\ntype = "spool"\npath = "d"\nnode = "/docs/all"\n'
            '[discovery]\nbackend = "docs"\nnodes = ["/docs/*"]\n'
        ), "/etc/hermod")
        self.assertEqual(settings.discovery, DiscoverySettings("docs", ("/docs/*",)))
        settings = settingsFromDict(tomllib.loads(
            self.head + '[backends.docs]\ntype = "spool"\npath = "d"\nnode = "/docs/all"\n'
            '[discovery]\nbackend = "docs"\nnodes = ["/a", "/b/*"]\ninterval = 60\n'
            'role = "member"\ntransform = "x.xsl"\ntimeout = 5\n'
        ), "/etc/hermod")
        self.assertEqual(settings.discovery, DiscoverySettings(
            "docs", ("/a", "/b/*"), 60.0, "member", "/etc/hermod/x.xsl", 5.0))

    def test_discoveryErrors(self) -> None:
        """
        Missing, unknown and wrong discovery keys are refused with the key's name, and so is
        a backend that cannot list contacts.
        """
        backend = '[backends.docs]\ntype = "spool"\npath = "d"\nnode = "/docs/all"\n'
        cases = {
            '[discovery]\nnodes = ["/x"]\n': "discovery.backend",
            '[discovery]\nbackend = "docs"\n': "discovery.nodes",
            '[discovery]\nbackend = "docs"\nnodes = []\n': "discovery.nodes",
            '[discovery]\nbackend = "nope"\nnodes = ["/x"]\n': "discovery.backend",
            '[discovery]\nbackend = "docs"\nnodes = ["/x"]\ncolour = 1\n': "discovery.colour",
            '[discovery]\nbackend = "docs"\nnodes = ["/x"]\ninterval = 0\n':
                "discovery.interval",
            '[discovery]\nbackend = "docs"\nnodes = ["/x"]\nrole = "boss"\n': "discovery.role",
            'discovery = 3\n': "discovery",
        }
        for text, key in cases.items():
            error = self.assertRaises(
                ConfigError, settingsFromDict, tomllib.loads(self.head + text + backend),
                "/etc/hermod",
            )
            self.assertIn(key, str(error))

    def test_discoveryBackendMustListContacts(self) -> None:
        """
        Building replication with a discovery backend that cannot list contacts fails with a
        message naming C{discovery.backend}.
        """
        from hermod_component.backends import errors
        from hermod_component.replication import service

        class Plain:
            name = "docs"
            nodes = ("/n",)

        self.patch(service, "makeBackend", lambda *args: Plain())
        error = self.assertRaises(
            errors.BackendSettingsError, service.makeReplication, None, None,
            {"docs": BackendSettings("docs", "plain")}, (), None,
            DiscoverySettings("docs", ("/x",)),
        )
        self.assertIn("discovery.backend", str(error))
