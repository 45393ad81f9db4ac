"""
XEP-0335 JSON containers: recognize a payload that is one C{<json xmlns='urn:xmpp:json:0'>}
element holding valid JSON text.

Payloads travel as serialized XML bytes, so the check reads those bytes without an XML parser:
a container has no attributes besides its namespace and no child elements, which leaves only
the five predefined entities and character references to undo before the text goes to
C{json.loads}.
"""

from __future__ import annotations

import html
import json
import re

NS_JSON = "urn:xmpp:json:0"

_CONTAINER = re.compile(
    rb"""\A\s*<json\s+xmlns\s*=\s*(["'])urn:xmpp:json:0\1\s*(?:/>|>(?P<text>[^<]*)</json\s*>)\s*\Z"""
)


def isJSONPayload(payload: bytes) -> bool:
    """
    Whether C{payload} is exactly one XEP-0335 C{<json/>} container whose text is valid JSON.

    A container with child elements, CDATA, other attributes or a prefix, an empty one, or one
    whose text does not parse as JSON is not.
    """
    match = _CONTAINER.match(payload)
    if match is None or match.group("text") is None:
        return False
    try:
        text = html.unescape(match.group("text").decode("utf-8"))
        json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return False
    return True
