"""
Escaping for stanzas Hermod writes as bytes (notifications, answers, barrier pings, multicast
probes and queries), without building domish elements.
"""

from __future__ import annotations

_ATTRIBUTE_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def quoteAttribute(value: str) -> bytes:
    """
    An attribute value, escaped and in double quotes, as UTF-8.
    """
    return b'"' + value.translate(_ATTRIBUTE_ESCAPES).encode("utf-8") + b'"'


def escapeText(value: str) -> bytes:
    """
    Character data, escaped, as UTF-8.
    """
    return value.translate(_TEXT_ESCAPES).encode("utf-8")
