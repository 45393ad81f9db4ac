"""
Throwaway real servers for tests and benchmarks.

Each helper starts its own instance in a temporary directory on a free loopback port and stops
exactly the process it started. Outside CI a missing binary skips the test with a message naming
it; under CI (C{CI=true}) it fails the test, because a skipped test is not a passing one.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

from twisted.trial.unittest import SkipTest


class ServerUnavailable(Exception):
    """
    A server binary is missing or the server did not come up.
    """


def underCI() -> bool:
    """
    Whether we run under CI, where a missing server is a failure.
    """
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def requireBinary(name: str, hint: str) -> str:
    """
    The path of executable C{name}, or skip (fail under CI) naming it and how to install it.

    @param hint: How to install it, such as C{"apt-get install prosody"}.
    """
    path = shutil.which(name) if not os.path.isabs(name) else (name if os.access(name, os.X_OK) else None)
    if path:
        return path
    message = f"{name} not found ({hint}; scripts/install-deps installs it)"
    if underCI():
        raise ServerUnavailable(message)
    raise SkipTest(message)


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitForPort(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """
    Block until something accepts connections on C{port}, or raise L{ServerUnavailable}.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerUnavailable(f"nothing listens on {host}:{port} after {timeout}s")
