"""
Replication backends, found by configuration name.

Built-in names map to module paths in L{BACKENDS}; a third party ships a backend as a distribution
with an entry point in the C{hermod.backends} group whose value is its module. A backend module
has C{makeBackend(name, options, reactor) -> IReplicationBackend}. Modules are imported only when
named, so an unused backend's driver is never loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from hermod_component.interfaces import IReplicationBackend

#: Built-in backend types and their modules.
BACKENDS: Mapping[str, str] = {
    "spool": "hermod_component.backends.spool",
}

#: The entry point group third-party backends register in.
ENTRY_POINT_GROUP = "hermod.backends"


class UnknownBackend(LookupError):
    """
    No built-in backend or entry point has that type name.
    """


def backendModule(typeName: str) -> Any:
    """
    The module implementing backend type C{typeName}.

    @raise UnknownBackend: No such type.
    """
    path = BACKENDS.get(typeName)
    if path is None:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == typeName:
                return entry.load()
        known = sorted(set(BACKENDS) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)})
        raise UnknownBackend(
            f"unknown backend type {typeName!r} (known: {', '.join(known)})"
        )
    return importlib.import_module(path)


def makeBackend(
    typeName: str, name: str, options: Mapping[str, Any], reactor: Any
) -> IReplicationBackend:
    """
    A backend instance of type C{typeName} called C{name}, configured by C{options} (the keys
    of its C{[backends.NAME]} table other than C{type}).

    @raise UnknownBackend: No such type.
    @raise hermod_component.backends.errors.BackendSettingsError: Bad options.
    """
    backend: IReplicationBackend = backendModule(typeName).makeBackend(name, options, reactor)
    return backend
