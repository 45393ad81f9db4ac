"""
Tests for the [backends.NAME] and [[partners]] configuration sections.
"""

from __future__ import annotations

import tomllib

from twisted.trial.unittest import SynchronousTestCase

from hermod_component.config import BackendSettings, PartnerSettings, settingsFromDict
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
