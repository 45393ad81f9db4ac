"""
Errors a replication backend reports from C{apply()}.
"""

from __future__ import annotations


class ParentMissing(Exception):
    """
    The change needs an object that does not exist yet; nothing was written.

    @ivar parent: The identity of the missing object.
    """

    def __init__(self, parent: str) -> None:
        super().__init__(f"parent {parent!r} is missing")
        self.parent = parent


class BrokenChange(Exception):
    """
    The change cannot be applied at all (bad identity, payload the backend cannot store).
    """


class BackendSettingsError(Exception):
    """
    A backend's configuration table is wrong; the message names the key.
    """
