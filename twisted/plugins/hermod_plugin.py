"""
The C{twistd hermod} plugin.

It names L{hermod_component.tap} without importing it, so listing twistd's plugins (such as
C{twistd --help}) does not import Hermod. This directory has no C{__init__.py}: it extends
Twisted's own C{twisted.plugins} package.
"""

from twisted.application.service import ServiceMaker

hermod = ServiceMaker(
    "Hermod",
    "hermod_component.tap",
    "XMPP publish-subscribe component (XEP-0114) that carries data changes between databases.",
    "hermod",
)
