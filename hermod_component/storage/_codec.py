"""
How storage writes model values into columns: node configurations and subscription options as
JSON text, JIDs reduced to their bare form for lookups.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hermod_component.model import (
    AccessModel,
    NodeConfig,
    NodeType,
    PublishModel,
    SendLastPublished,
)

_CONFIG_ENUMS: dict[str, type[enum.Enum]] = {
    "accessModel": AccessModel,
    "publishModel": PublishModel,
    "sendLastPublishedItem": SendLastPublished,
    "nodeType": NodeType,
}


def bareJID(jid: str) -> str:
    """
    The bare part of a normalized JID: C{user@host/resource} becomes C{user@host}.
    """
    return jid.split("/", 1)[0]


def configToJSON(config: NodeConfig) -> str:
    """
    Serialize a node configuration as a JSON object keyed by attribute name.
    """
    values = {
        field.name: (value.value if isinstance(value, enum.Enum) else value)
        for field in attrs.fields(NodeConfig)
        for value in [getattr(config, field.name)]
    }
    return json.dumps(values, ensure_ascii=False, sort_keys=True)


def configFromJSON(text: str) -> NodeConfig:
    """
    Read a configuration written by L{configToJSON}. Keys this version does not know are
    ignored and missing ones take their defaults, so older rows stay readable.
    """
    stored = json.loads(text)
    values: dict[str, Any] = {}
    for field in attrs.fields(NodeConfig):
        if field.name in stored:
            value = stored[field.name]
            enumType = _CONFIG_ENUMS.get(field.name)
            values[field.name] = enumType(value) if enumType is not None else value
    return NodeConfig(**values)


def optionsToJSON(options: Mapping[str, Sequence[str]]) -> str:
    """
    Serialize subscription options as a JSON object of string lists.
    """
    return json.dumps(
        {key: list(values) for key, values in options.items()}, ensure_ascii=False, sort_keys=True
    )


def optionsFromJSON(text: str) -> dict[str, tuple[str, ...]]:
    """
    Read options written by L{optionsToJSON}, values as tuples.
    """
    return {key: tuple(values) for key, values in json.loads(text).items()}


def headersToJSON(headers: Sequence[tuple[str, str]]) -> str:
    """
    Serialize an item's SHIM headers as a JSON array of C{[name, value]} pairs; C{""} for none.
    """
    if not headers:
        return ""
    return json.dumps([list(pair) for pair in headers], ensure_ascii=False)


def headersFromJSON(text: str | None) -> tuple[tuple[str, str], ...]:
    """
    Read headers written by L{headersToJSON}.
    """
    if not text:
        return ()
    return tuple((str(name), str(value)) for name, value in json.loads(text))
