"""
The one seam to the wokkel API.

Hermod is written against wokkel's modules and classes. wokkel 18.0.0, its last release, fails to
import on Twisted 21.2 and later (it reads C{twisted.python.compat._PY3}), so the API comes from
C{tx_xmpp}, its maintained continuation with the same modules and class names. Every other module
imports these names from here: switching back to a revived wokkel is an edit of this file only.
"""

from tx_xmpp import data_form, disco, generic, pubsub, shim, subprotocols
from tx_xmpp.component import Component
from tx_xmpp.data_form import Field, Form
from tx_xmpp.disco import DiscoFeature, DiscoIdentity, DiscoItem
from tx_xmpp.generic import Stanza
from tx_xmpp.pubsub import (
    NS_PUBSUB,
    NS_PUBSUB_EVENT,
    NS_PUBSUB_META_DATA,
    NS_PUBSUB_NODE_CONFIG,
    NS_PUBSUB_OWNER,
    NS_PUBSUB_SUBSCRIBE_OPTIONS,
    PubSubRequest,
    PubSubResource,
    PubSubService,
)
from tx_xmpp.subprotocols import IQHandlerMixin, StreamManager, XMPPHandler

__all__ = [
    "NS_PUBSUB",
    "NS_PUBSUB_EVENT",
    "NS_PUBSUB_META_DATA",
    "NS_PUBSUB_NODE_CONFIG",
    "NS_PUBSUB_OWNER",
    "NS_PUBSUB_SUBSCRIBE_OPTIONS",
    "Component",
    "DiscoFeature",
    "DiscoIdentity",
    "DiscoItem",
    "Field",
    "Form",
    "IQHandlerMixin",
    "PubSubRequest",
    "PubSubResource",
    "PubSubService",
    "Stanza",
    "StreamManager",
    "XMPPHandler",
    "data_form",
    "disco",
    "generic",
    "pubsub",
    "shim",
    "subprotocols",
]
