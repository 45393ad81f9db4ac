"""
Process-group handling shared by the throwaway server helpers.

Every server runs in its own session (C{start_new_session=True}), so it leads its own process
group and stopping it can signal the whole group (the server and anything it forked) without
touching any other process on the machine.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import IO

#: Processes started here and not yet stopped; killed at interpreter exit as a last resort, so
#: that a test run that dies half-way (a crashed trial worker) leaves no server behind.
_live: set[subprocess.Popen[bytes]] = set()

#: Temporary directories to remove at interpreter exit if nobody removed them before.
_directories: list[str] = []


@atexit.register
def _killLeftovers() -> None:
    """
    SIGKILL and reap every process group still in L{_live}, then remove the directories
    registered with L{removeAtExit}.
    """
    for process in list(_live):
        killProcess(process)
    for directory in _directories:
        shutil.rmtree(directory, ignore_errors=True)


def removeAtExit(directory: str) -> str:
    """
    Remove C{directory} when the interpreter exits, in case the test that made it crashed.

    @return: C{directory}.
    """
    _directories.append(directory)
    return directory


def startProcess(
    argv: list[str],
    logPath: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """
    Start C{argv} in a new session with stdout and stderr appended to C{logPath}.

    @param argv: The command and its arguments.
    @param logPath: The file that receives the process's output.
    @param env: The complete environment, or L{None} to inherit ours.
    @param cwd: The working directory, or L{None} to inherit ours.
    @return: The running process.
    """
    output: IO[bytes]
    with open(logPath, "ab") as output:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    _live.add(process)
    return process


def signalGroup(process: subprocess.Popen[bytes], signum: int) -> None:
    """
    Send C{signum} to the process group that C{process} leads, ignoring a group already gone.

    @param process: A process started by L{startProcess}, so that its PID is its group ID.
    @param signum: The signal number.
    """
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def stopProcess(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """
    Stop C{process} and its group: SIGTERM, wait up to C{timeout} seconds, then SIGKILL.

    The process is always reaped, so no zombie is left behind. Children of the group that
    outlive their leader still receive the SIGKILL.

    @param process: A process started by L{startProcess}, or L{None} (nothing to do).
    @param timeout: Seconds to wait after SIGTERM before SIGKILL.
    """
    if process is None:
        return
    if process.poll() is None:
        signalGroup(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (the leader or a child it forked) goes now.
    signalGroup(process, signal.SIGKILL)
    process.wait()
    _live.discard(process)


def killProcess(process: subprocess.Popen[bytes] | None) -> None:
    """
    SIGKILL C{process} and its group at once, then reap it.

    @param process: A process started by L{startProcess}, or L{None} (nothing to do).
    """
    if process is None:
        return
    signalGroup(process, signal.SIGKILL)
    process.wait()
    _live.discard(process)


def logTail(path: str, lines: int = 40) -> str:
    """
    The last C{lines} lines of the file at C{path}, or a note that it cannot be read.

    @param path: A log file.
    @param lines: How many lines to keep.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def waitForPorts(
    process: subprocess.Popen[bytes], ports: list[int], timeout: float, host: str = "127.0.0.1"
) -> str | None:
    """
    Wait until every port in C{ports} accepts connections while C{process} stays alive.

    @param process: The server expected to open the ports.
    @param ports: TCP ports on C{host}.
    @param timeout: Seconds to wait in all.
    @return: L{None} on success, otherwise why the wait failed.
    """
    import socket

    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        code = process.poll()
        if code is not None:
            return f"process {process.pid} exited with status {code}"
        if time.monotonic() > deadline:
            return f"ports {pending} on {host} not open after {timeout}s"
        try:
            with socket.create_connection((host, pending[0]), timeout=0.5):
                pending.pop(0)
        except OSError:
            time.sleep(0.05)
    return None


class ServerProcess:
    """
    What every throwaway server helper shares: one child process and one temp dir.

    Subclasses set C{stopTimeout} and implement C{_launch()} (write the config, start the
    process, wait for its ports).
    """

    stopTimeout = 10.0
    directory: str
    _process: subprocess.Popen[bytes] | None
    _launch: Callable[[], None]

    @property
    def pid(self) -> int | None:
        """
        The PID of the running server, or L{None}.
        """
        return self._process.pid if self._process is not None else None

    def _stopProcess(self) -> None:
        """
        Stop the process we started (and its process group) and reap it.
        """
        stopProcess(self._process, timeout=self.stopTimeout)
        self._process = None

    def stop(self) -> None:
        """
        Stop the server and remove its temp dir. Safe to call twice.
        """
        self._stopProcess()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    def restart(self) -> None:
        """
        Stop the server and start it again on the same ports with the same data.

        @raise ServerUnavailable: It did not come back.
        """
        self._stopProcess()
        self._launch()
