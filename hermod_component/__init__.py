"""
Hermod: an XEP-0114 pubsub component that carries data changes over XMPP.
"""

__version__ = "0.1.0.dev0"
