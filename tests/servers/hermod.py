"""
Hermod itself as a child process, run exactly as an operator runs it: C{twistd -n hermod -c FILE}.

L{HermodProcess} writes the TOML configuration (and the component secret file) into a work
directory, starts twistd with this Python from the source tree, and sends its output to a log file
in the same directory. Stopping and starting again keeps the work directory, so a restart sees
the same SQLite file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from tests.servers import ServerUnavailable
from tests.servers._process import (
    killProcess,
    logTail,
    removeAtExit,
    startProcess,
    stopProcess,
)

#: The repository root: twistd runs there so that C{twisted/plugins/hermod_plugin.py} and
#: C{hermod_component} come from this source tree.
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def _tomlValue(value: object) -> str:
    """
    C{value} as a TOML value.

    @param value: A string, boolean, integer, float, or a list of those.
    @raise TypeError: Any other type.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_tomlValue(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toTOML(settings: Mapping[str, Any], prefix: str = "") -> str:
    """
    A TOML document for C{settings}, a mapping of table names to mappings of keys to values.

    Nested mappings become dotted tables (C{{"backends": {"midgard": {...}}}} gives
    C{[backends.midgard]}).

    @param settings: Tables, as written in the configuration file (snake_case keys).
    @param prefix: The dotted name of the enclosing table, for recursion.
    """
    out: list[str] = []
    for name, table in settings.items():
        dotted = f"{prefix}{name}"
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if scalars or not tables:
            out.append(f"[{dotted}]")
            out.extend(f"{key} = {_tomlValue(value)}" for key, value in scalars.items())
            out.append("")
        if tables:
            out.append(toTOML(tables, prefix=f"{dotted}."))
    return "\n".join(out)


class HermodProcess:
    """
    One C{twistd -n hermod} child process.

    @ivar workdir: The directory holding the configuration, secret and log.
    @ivar configPath: The TOML configuration file.
    @ivar logPath: Where twistd's output (Hermod's log) goes; kept across restarts.
    """

    def __init__(
        self,
        config: str | Mapping[str, Any],
        workdir: str | None = None,
        secret: str | None = None,
        verbose: bool = False,
    ) -> None:
        """
        @param config: The configuration: TOML text written as is, or a mapping of tables
            (C{{"component": {"jid": ..., "server": ...}, "storage": {...}}}) written as TOML.
        @param workdir: Where to put the files; a fresh temp dir if L{None}.
        @param secret: The component secret. It is written to C{component.secret} in
            C{workdir}, and a mapping C{config} without C{component.secret_file} points there.
            TOML text may refer to it by the relative name C{component.secret}.
        @param verbose: Pass C{--verbose} to log every stanza.
        """
        if workdir is None:
            # Kept across stop and start for restarts; removed when the test run ends.
            workdir = removeAtExit(tempfile.mkdtemp(prefix="hermod-process-"))
        workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.configPath = os.path.join(workdir, "hermod.toml")
        self.logPath = os.path.join(workdir, "hermod.log")
        self.verbose = verbose
        if secret is not None:
            secretPath = os.path.join(workdir, "component.secret")
            with open(secretPath, "w") as f:
                f.write(secret + "\n")
            os.chmod(secretPath, 0o600)
        if isinstance(config, str):
            text = config
        else:
            tables = {name: dict(table) for name, table in config.items()}
            component = tables.setdefault("component", {})
            if "secret_file" not in component:
                if secret is None:
                    raise ValueError("give secret= or component.secret_file")
                component["secret_file"] = os.path.join(workdir, "component.secret")
            text = toTOML(tables)
        with open(self.configPath, "w") as f:
            f.write(text)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """
        The PID of the running twistd, or L{None}.
        """
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """
        The command line that runs Hermod with this Python.
        """
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "hermod", "-c", self.configPath,
        ]
        if self.verbose:
            argv.append("--verbose")
        return argv

    def start(self) -> None:
        """
        Start Hermod. It then connects to the server on its own; see L{waitForLog}.

        @raise RuntimeError: It is already running.
        """
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"Hermod already runs as PID {self._process.pid}")
        with open(self.logPath, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {self.command()}\n".encode())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE, env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self._process = startProcess(self.command(), self.logPath, env=env, cwd=SOURCE)

    def running(self) -> bool:
        """
        Whether the process runs.
        """
        return self._process is not None and self._process.poll() is None

    def waitForLog(self, text: str, timeout: float = 30.0, count: int = 1) -> None:
        """
        Block until C{text} appears in the log (C{count} times in all, counting earlier runs).

        @raise ServerUnavailable: Hermod exited or C{timeout} passed first; the message holds
            the tail of the log.
        """
        deadline = time.monotonic() + timeout
        while self.logText().count(text) < count:
            if not self.running():
                raise ServerUnavailable(
                    f"Hermod exited before logging {text!r}:\n{logTail(self.logPath)}"
                )
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    f"Hermod did not log {text!r} in {timeout}s:\n{logTail(self.logPath)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        SIGTERM, wait up to C{timeout} seconds, then SIGKILL. Safe to call when not running.

        @return: The exit status as C{Popen.returncode}, or L{None} if it was not running.
            After a clean shutdown twistd re-raises the signal that stopped it, so that is
            C{-SIGTERM}; C{-SIGKILL} means it had to be killed.
        """
        process, self._process = self._process, None
        if process is None:
            return None
        stopProcess(process, timeout)
        return process.returncode

    def kill(self) -> int | None:
        """
        SIGKILL at once, as a crash would.

        @return: The exit status, or L{None} if it was not running.
        """
        process, self._process = self._process, None
        if process is None:
            return None
        killProcess(process)
        return process.returncode

    def logText(self) -> str:
        """
        Everything Hermod has logged, across restarts.
        """
        try:
            with open(self.logPath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
