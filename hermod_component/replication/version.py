"""
Replication versions: C{counter:hlc-time:origin}, ordered by C{(counter, time, origin)}.

The counter counts edits along an object's history; the time is a hybrid logical clock in
milliseconds (never behind any version seen); the origin breaks ties. Every replica orders two
versions the same way, so concurrent edits end with the same winner everywhere without
synchronized clocks.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


def versionKey(version: str) -> tuple[int, int, str]:
    """
    The sort key of a version string; C{""} sorts before every version.

    @raise ValueError: The string is not C{counter:time:origin}.
    """
    if not version:
        return (-1, -1, "")
    counter, time, origin = version.split(":", 2)
    return (int(counter), int(time), origin)


def isNewer(candidate: str, current: str | None) -> bool:
    """
    Whether version C{candidate} wins over C{current} (L{None}: nothing known).
    """
    if current is None:
        return True
    return versionKey(candidate) > versionKey(current)


def isConcurrent(a: str, aPrevious: str, b: str, bPrevious: str) -> bool:
    """
    Whether two different versions were made without one seeing the other: neither replaces the
    other and they share a counter or a predecessor.
    """
    if a == b or aPrevious == b or bPrevious == a:
        return False
    return versionKey(a)[0] == versionKey(b)[0] or aPrevious == bPrevious


class HybridClock:
    """
    A hybrid logical clock in milliseconds: each reading is above the previous one and above
    every time observed in a remote version.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._last = 0

    def observe(self, version: str) -> None:
        """
        Move past the time of a version received from elsewhere.
        """
        if version:
            self._last = max(self._last, versionKey(version)[1])

    def now(self) -> int:
        """
        The next time stamp.
        """
        physical = int(self._clock.seconds() * 1000)
        self._last = max(physical, self._last + 1)
        return self._last


def nextVersion(previous: str | None, clock: HybridClock, origin: str) -> str:
    """
    The version of a local edit that replaces C{previous}.
    """
    counter = versionKey(previous)[0] + 1 if previous else 1
    return f"{counter}:{clock.now()}:{origin}"
