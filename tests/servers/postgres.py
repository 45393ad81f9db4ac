"""
A throwaway PostgreSQL server for tests.

L{PostgresServer} runs C{initdb} and C{pg_ctl} in a temporary directory, on a free port that
listens on 127.0.0.1 only, with its socket directory in the same temporary directory. As root,
C{initdb} refuses to run, so the server then runs as the unprivileged system user
C{hermodtest} (created if missing). When C{HERMOD_TEST_POSTGRES_DSN} is set, that server is used
instead and nothing is started.

Starting a server takes seconds, so a test module starts one and creates a fresh database per
test with L{PostgresServer.createDatabase}.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Sequence

from tests.servers import ServerUnavailable, freePort, requireBinary, waitForPort

DSN_VARIABLE = "HERMOD_TEST_POSTGRES_DSN"
TEST_USER = "hermodtest"
DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"


def postgresBinDir() -> str:
    """
    The directory holding C{initdb} and C{pg_ctl}: Debian's PostgreSQL 15 directory if it is
    there, else what C{pg_config --bindir} says, else the directory of C{initdb} on C{PATH}.
    """
    if os.access(os.path.join(DEFAULT_BINDIR, "initdb"), os.X_OK):
        return DEFAULT_BINDIR
    pgConfig = shutil.which("pg_config")
    if pgConfig:
        try:
            found = subprocess.run(
                [pgConfig, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            found = ""
        if found and os.access(os.path.join(found, "initdb"), os.X_OK):
            return found
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    return DEFAULT_BINDIR


def _ensureTestUser() -> None:
    """
    Create the unprivileged system user that runs the server when we are root.
    """
    try:
        pwd.getpwnam(TEST_USER)
        return
    except KeyError:
        pass
    useradd = requireBinary("useradd", "apt-get install passwd")
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 9):  # 9: the user exists (created meanwhile)
        raise ServerUnavailable(f"useradd {TEST_USER} failed: {result.stderr.strip()}")


class PostgresServer:
    """
    One PostgreSQL server for the tests of a module, or the one named by
    C{HERMOD_TEST_POSTGRES_DSN}.

    @ivar dsn: The libpq connection string of the server's C{postgres} database, once started.
    """

    def __init__(self) -> None:
        self.dsn: str | None = None
        self._external = os.environ.get(DSN_VARIABLE) or None
        self._directory: str | None = None
        self._dataDir: str | None = None
        self._binDir = postgresBinDir()
        self._runAs: str | None = None
        self._port: int | None = None

    def _command(self, argv: Sequence[str]) -> list[str]:
        """
        C{argv} prefixed to run as the unprivileged test user when we are root.
        """
        if self._runAs is None:
            return list(argv)
        return ["runuser", "-u", self._runAs, "--", *argv]

    def _run(self, argv: Sequence[str]) -> None:
        """
        Run one server tool, raising L{ServerUnavailable} with its output if it fails.
        """
        result = subprocess.run(
            self._command(argv), check=False, capture_output=True, text=True, cwd=self._directory
        )
        if result.returncode != 0:
            raise ServerUnavailable(
                f"{os.path.basename(argv[0])} failed ({result.returncode}): "
                f"{result.stdout.strip()} {result.stderr.strip()}"
            )

    def start(self) -> str:
        """
        Start the server (or adopt the external one) and return its libpq DSN.

        @raise ServerUnavailable: it did not come up; under CI also when a binary is missing.
        @raise SkipTest: outside CI, when a binary is missing.
        """
        if self.dsn is not None:
            return self.dsn
        if self._external is not None:
            self.dsn = self._external
            return self.dsn
        initdb = requireBinary(
            os.path.join(self._binDir, "initdb"), "apt-get install postgresql-15"
        )
        pgCtl = requireBinary(os.path.join(self._binDir, "pg_ctl"), "apt-get install postgresql-15")
        if os.geteuid() == 0:
            requireBinary("runuser", "apt-get install util-linux")
            _ensureTestUser()
            self._runAs = TEST_USER
        self._directory = tempfile.mkdtemp(prefix="hermod-pg-")
        self._dataDir = os.path.join(self._directory, "data")
        if self._runAs is not None:
            entry = pwd.getpwnam(self._runAs)
            os.chown(self._directory, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                [initdb, "-D", self._dataDir, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                 "--locale=C", "--no-sync"]
            )
            self._port = freePort()
            options = (
                f"-k {self._directory} -p {self._port} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            self._run(
                [pgCtl, "-D", self._dataDir, "-o", options,
                 "-l", os.path.join(self._directory, "server.log"), "-w", "-t", "60", "start"]
            )
            waitForPort(self._port)
        except BaseException:
            self._cleanUp()
            raise
        self.dsn = f"host=127.0.0.1 port={self._port} user=postgres dbname=postgres"
        return self.dsn

    def createDatabase(self, name: str | None = None) -> str:
        """
        Create a fresh, empty database and return its DSN.

        @param name: The database name; a unique one is made up when C{None}.
        """
        import psycopg2
        from psycopg2.extensions import make_dsn

        dsn = self.start()
        name = name or f"hermod_test_{uuid.uuid4().hex[:12]}"
        connection = psycopg2.connect(dsn)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return str(make_dsn(dsn, dbname=name))

    def dropDatabase(self, name: str) -> None:
        """
        Drop a database made by L{createDatabase}, disconnecting anyone still using it.
        """
        import psycopg2

        if self.dsn is None:
            return
        connection = psycopg2.connect(self.dsn)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            connection.close()

    def stop(self) -> None:
        """
        Stop the server we started (C{pg_ctl stop -m fast}, then its PID if that failed) and
        remove its directory. An external server is left alone.
        """
        if self._external is not None or self._dataDir is None:
            self.dsn = None
            return
        try:
            self._run(
                [os.path.join(self._binDir, "pg_ctl"), "-D", self._dataDir,
                 "-m", "fast", "-w", "stop"]
            )
        except ServerUnavailable:
            self._killPostmaster()
        self._cleanUp()
        self.dsn = None

    def _killPostmaster(self) -> None:
        """
        Terminate the postmaster named by our data directory's C{postmaster.pid}, if any.
        """
        assert self._dataDir is not None
        try:
            with open(os.path.join(self._dataDir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass

    def _cleanUp(self) -> None:
        """
        Remove the temporary directory.
        """
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._directory = None
        self._dataDir = None
