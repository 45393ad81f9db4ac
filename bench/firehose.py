#!/usr/bin/env python3
"""
The firehose benchmark: one node, N subscribers, M published 2 KB Atom entries, through a real
Prosody (and ejabberd), against Hermod, the server's own pubsub and a reference component.

  .venv/bin/python bench/firehose.py [--server prosody|ejabberd|both] [--subscribers 1,10,100,1000]
      [--items M] [--window 1,32] [--quick] [--json FILE]

It prints figures and never asserts anything; see bench/README.rst for how to read the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import procstat
from bench.leanxmpp import NS_PUBSUB, Publisher, login, registerInBand
from bench.payload import ENTRY_BYTES, atomEntry
from bench.report import printServerTables
from tests.servers._process import logTail, removeAtExit, startProcess, stopProcess
from tests.servers.ejabberd import EjabberdServer, ejabberdLibs
from tests.servers.hermod import HermodProcess
from tests.servers.prosody import ProsodyServer

SERVICE = "pubsub.localhost"
BUILTIN = "pubsub2.localhost"
#: ejabberd's XEP-0033 service with C{--multicast}.
MULTICAST = "multicast.localhost"
SECRET = "firehose-bench-secret"
PASSWORD = "bench-pw"
PUBLISHER = "publisher"
DOMAIN = "localhost"
TARGETS = ("hermod", "builtin", "reference")
WARMUP = 5


def subscriberName(index: int) -> str:
    """
    The local part of subscriber C{index}.
    """
    return f"sub{index:05d}"


def itemsFor(subscribers: int, options: argparse.Namespace) -> int:
    """
    How many items a scenario with C{subscribers} publishes: C{--items}, lowered so that the
    scenario delivers at most C{--notifications}, but never below C{--min-items}.
    """
    return max(options.min_items, min(options.items, options.notifications // subscribers))


def prosodyEscape(host: str) -> str:
    """
    C{host} as Prosody's datamanager names its directory (every non-alphanumeric byte as %xx).
    """
    return "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in host)


class Bed:
    """
    One XMPP server (Prosody or ejabberd) with the bench accounts, restarted for each scenario.

    @ivar kind: C{"prosody"} or C{"ejabberd"}.
    @ivar version: The server's version, for the report.
    """

    def __init__(self, kind: str, multicast: bool = False) -> None:
        """
        @param multicast: Also run ejabberd's C{mod_multicast} (Prosody has none).
        """
        self.kind = kind
        self.registered = 0
        self.version = ""
        if kind == "prosody":
            self.server: Any = ProsodyServer(
                SERVICE, SECRET, domain=DOMAIN, pubsubHost=BUILTIN,
                admins=(f"{PUBLISHER}@{DOMAIN}",),
            )
        else:
            self.server = EjabberdServer(
                SERVICE, SECRET, domain=DOMAIN, pubsubHost=BUILTIN,
                admins=(f"{PUBLISHER}@{DOMAIN}",),
                multicastHost=MULTICAST if multicast else None,
            )

    def start(self) -> None:
        """
        Start the server for the first time and find its version.
        """
        self.server.start()
        if self.kind == "prosody":
            about = subprocess.run(
                ["prosodyctl", "--config", self.server.configPath, "about"],
                capture_output=True, text=True, timeout=30, check=False,
            ).stdout
            # "prosodyctl about" may print warnings first ("Prosody was unable to find ...").
            match = re.search(r"^Prosody (\d[\w.+~-]*)\s*$", about, re.MULTILINE)
            self.version = f"Prosody {match.group(1)}" if match else "Prosody ?"
        else:
            libs = ejabberdLibs() or ""
            found = sorted(glob.glob(os.path.join(libs, "ejabberd-*", "ebin", "ejabberd.app")))
            version = "?"
            if found:
                match = re.search(r'\{vsn,\s*"([^"]+)"', _read(found[0]))
                version = match.group(1) if match else found[0].split(os.sep)[-3][9:]
            self.version = f"ejabberd {version}"

    async def ensureAccounts(self, subscribers: int) -> float:
        """
        Make sure the publisher and subscribers 0 .. C{subscribers} - 1 exist.

        Prosody's accounts are written straight into its C{internal_plain} store (one Lua
        file per user, the format C{prosodyctl register} writes); ejabberd's are registered
        in-band, 20 at a time.

        @return: Seconds spent.
        """
        started = time.monotonic()
        users = [PUBLISHER] if self.registered == 0 else []
        users += [subscriberName(i) for i in range(self.registered, subscribers)]
        if self.kind == "prosody":
            directory = os.path.join(self.server.directory, "data", prosodyEscape(DOMAIN), "accounts")
            os.makedirs(directory, exist_ok=True)
            for user in users:
                # Before the scenario is timed: a blocking write of a small file is fine here.
                with open(os.path.join(directory, f"{user}.dat"), "w") as f:  # noqa: ASYNC230
                    f.write(f'return {{\n\t["password"] = "{PASSWORD}";\n}};\n')
        else:
            semaphore = asyncio.Semaphore(20)

            async def one(user: str) -> None:
                async with semaphore:
                    await registerInBand("127.0.0.1", self.server.c2sPort, DOMAIN, user, PASSWORD)

            await asyncio.gather(*(one(u) for u in users))
        self.registered = max(self.registered, subscribers)
        return time.monotonic() - started

    def restart(self) -> None:
        """
        A fresh server process (same ports, same accounts) for the next scenario.
        """
        self.server.restart()

    def stop(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.server.stop()


class Component:
    """
    The component under test (Hermod or the reference), or nothing for the server's own pubsub.

    @ivar pid: The component's PID, or L{None} for the built-in target.
    @ivar service: The pubsub service JID the clients talk to.
    """

    def __init__(
        self, target: str, bed: Bed, connections: int = 1, multicast: bool = False
    ) -> None:
        """
        @param connections: Hermod's C{component.connections}.
        @param multicast: Run Hermod with C{component.multicast = "auto"}.
        """
        self.target = target
        self.bed = bed
        self.connections = connections
        self.multicast = multicast
        self.pid: int | None = None
        self.service = BUILTIN if target == "builtin" else SERVICE
        self._hermod: HermodProcess | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.logPath = ""

    def start(self, timeout: float = 30.0) -> None:
        """
        Start the component and wait until it is authenticated to the server.

        @raise RuntimeError: It did not authenticate in time; the message holds its log.
        """
        port = self.bed.server.componentPort
        if self.target == "hermod":
            workdir = removeAtExit(tempfile.mkdtemp(prefix="hermod-bench-"))
            self._hermod = HermodProcess(
                {
                    "component": {
                        "jid": SERVICE, "server": f"tcp:host=127.0.0.1:port={port}",
                        "connections": self.connections,
                        "multicast": "auto" if self.multicast else "off",
                    },
                    "storage": {"engine": "sqlite", "path": os.path.join(workdir, "hermod.sqlite")},
                },
                workdir=workdir,
                secret=SECRET,
            )
            self.logPath = self._hermod.logPath
            self._hermod.start()
            self.pid = self._hermod.pid
            # Prosody accepts one connection per component and refuses the others.
            expected = self.connections if self.bed.kind == "ejabberd" else 1
            self._hermod.waitForLog("Authenticated to", timeout=timeout, count=expected)
        elif self.target == "reference":
            workdir = removeAtExit(tempfile.mkdtemp(prefix="hermod-bench-ref-"))
            self.logPath = os.path.join(workdir, "reference.log")
            self._process = startProcess(
                [sys.executable, "-m", "bench.reference", "--port", str(port), "--jid", SERVICE,
                 "--secret", SECRET],
                self.logPath, cwd=ROOT,
            )
            self.pid = self._process.pid
            deadline = time.monotonic() + timeout
            while "authenticated" not in _read(self.logPath):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"reference component did not start:\n{logTail(self.logPath)}")
                time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop the component (by PID, through the helpers).
        """
        if self._hermod is not None:
            self._hermod.stop()
            self._hermod = None
        if self._process is not None:
            stopProcess(self._process)
            self._process = None


def _read(path: str) -> str:
    """
    The text of C{path}, or C{""}.
    """
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Worker:
    """
    One subscriber client process (L{bench.subscribers}) and the events it reports.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.received = 0
        self.progressAt = 0.0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        """
        Dispatch the worker's events to the futures.
        """
        assert self.process.stdout is not None
        futures = {"ready": self.ready, "done": self.done, "result": self.result}
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event["event"] == "progress":
                self.received = event["received"]
                self.progressAt = time.monotonic()
                continue
            future = futures.get(event["event"])
            if future is not None and not future.done():
                future.set_result(event)
        for future in futures.values():
            if not future.done():
                future.set_exception(RuntimeError("subscriber process exited early"))

    def send(self, message: dict[str, Any]) -> None:
        """
        Send one command line.
        """
        assert self.process.stdin is not None
        if self.process.returncode is None:
            self.process.stdin.write((json.dumps(message) + "\n").encode())

    async def close(self) -> None:
        """
        Make sure the process is gone (it exits by itself after C{stop}).
        """
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.reader.cancel()


def shortError(error: BaseException) -> str:
    """
    C{error} in a few hundred characters: its first line and, for a message holding a log or a
    traceback, its last lines.
    """
    lines = [x for x in str(error).splitlines() if x.strip()]
    if len(lines) > 4:
        lines = lines[:1] + ["..."] + lines[-3:]
    return f"{type(error).__name__}: " + " / ".join(x.strip() for x in lines)[:600]


def hermodImports() -> str | None:
    """
    L{None} if this Python can import Hermod's service and protocol modules, else the error's
    last line (a missing dependency, a broken tree), so the run stops before any scenario.
    """
    check = subprocess.run(
        [sys.executable, "-c", "import hermod_component.tap, hermod_component.xmpp.handler"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    if check.returncode == 0:
        return None
    return (check.stderr.strip().splitlines() or [f"exit status {check.returncode}"])[-1]


def percentile(values: list[float], fraction: float) -> float | None:
    """
    The nearest-rank C{fraction} percentile of the sorted C{values}, or L{None} if empty.
    """
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))]


async def runScenario(
    bed: Bed, target: str, subscribers: int, window: int, items: int, options: argparse.Namespace,
    connections: int = 1, multicast: bool = False,
) -> dict[str, Any]:
    """
    Run one scenario on a freshly restarted server and return its figures.

    @param connections: Hermod's component connections; Hermod's results are labelled
        C{hermod:K} when it is not 1 or when several counts are compared.
    @param multicast: Hermod writes through the server's multicast service; its results are
        labelled C{hermod:K+mc}.

    Every step has a time bound. A scenario that stops making progress (no publish answered
    and no notification delivered for C{--stall} seconds) or outlasts C{--timeout} is
    reported as stalled with the counts reached.
    """
    label = target
    if target == "hermod" and (connections != 1 or len(options.connections) > 1 or multicast):
        label = f"hermod:{connections}" + ("+mc" if multicast else "")
    result: dict[str, Any] = {
        "target": label, "subscribers": subscribers, "window": window, "items": items,
        "status": "ok", "notes": [], "connections": connections if target == "hermod" else None,
    }
    component = Component(target, bed, connections, multicast)
    workers: list[Worker] = []
    publisherConnection = None
    try:
        bed.restart()
        serverPid = bed.server.pid
        component.start()
        publisherConnection = await login(
            "127.0.0.1", bed.server.c2sPort, DOMAIN, PUBLISHER, PASSWORD, "bench", timeout=30
        )
        node = f"firehose-{subscribers}-{window}-{int(time.time() * 1000) % 10**8}"
        await publisherConnection.iq(
            "create",
            f"<iq type='set' id='create' to='{component.service}'><pubsub xmlns='{NS_PUBSUB}'>"
            f"<create node='{node}'/></pubsub></iq>",
            timeout=30,
        )

        # Subscribers: as many client processes as asked, each with its share of accounts.
        setupStarted = time.monotonic()
        processes = options.client_procs or (1 if subscribers <= 200 else 2)
        processes = min(processes, subscribers)
        users = [subscriberName(i) for i in range(subscribers)]
        for p in range(processes):
            share = users[p::processes]
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.subscribers",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
                limit=2**28,
            )
            worker = Worker(process)
            workers.append(worker)
            worker.send({
                "host": "127.0.0.1", "port": bed.server.c2sPort, "domain": DOMAIN,
                "password": PASSWORD, "users": share, "service": component.service, "node": node,
                "items": items, "timeout": options.setup_timeout,
                "concurrency": max(1, 100 // processes),
            })
        readies = await asyncio.wait_for(
            asyncio.gather(*(w.ready for w in workers)), options.setup_timeout + 10
        )
        subscribed = sum(r["subscribed"] for r in readies)
        failed = sum(r["failed"] for r in readies)
        result["setupSeconds"] = round(time.monotonic() - setupStarted, 2)
        result["subscribed"] = subscribed
        if failed:
            result["status"] = "setup"
            result["notes"].append(
                f"{failed} of {subscribers} subscribers failed to log in or subscribe: "
                + "; ".join(e for r in readies for e in r["errors"])[:600]
            )
            if subscribed == 0:
                return result

        # Warm-up publishes, not counted by the subscribers.
        warm = Publisher(publisherConnection, component.service, node, WARMUP, 1, atomEntry, "fw")
        warm.start()
        await asyncio.wait_for(warm.finished, 30)
        if warm.errors:
            result["status"] = "error"
            result["notes"].append(f"warm-up publish refused: {warm.firstError}")
            return result
        await asyncio.sleep(0.5)
        publisherConnection.onData = None

        # The measured phase.
        componentPid = component.pid
        cpu0 = {"server": procstat.cpuSeconds(serverPid)}
        if componentPid:
            cpu0["component"] = procstat.cpuSeconds(componentPid)
        machine0 = procstat.machineTimes()
        self0 = os.times()
        for worker in workers:
            worker.send({"cmd": "go"})
        publisher = Publisher(publisherConnection, component.service, node, items, window, atomEntry)
        started = time.monotonic()
        publisher.start()
        deadline = started + options.timeout
        allDone = asyncio.gather(*(w.done for w in workers))
        lastProgress = (0, 0)
        lastChange = started
        while True:
            if publisher.finished.done() and allDone.done():
                break
            now = time.monotonic()
            progress = (publisher.answered, sum(w.received for w in workers))
            if progress != lastProgress:
                lastProgress, lastChange = progress, now
            if now > deadline:
                result["status"] = "stalled"
                result["notes"].append(f"time bound of {options.timeout:.0f} s reached")
                break
            if now - lastChange > options.stall:
                result["status"] = "stalled"
                result["notes"].append(f"no progress for {options.stall:.0f} s")
                break
            await asyncio.sleep(0.05)
        ended = time.monotonic()
        cpu1 = {"server": procstat.cpuSeconds(serverPid)}
        if componentPid:
            cpu1["component"] = procstat.cpuSeconds(componentPid)
        machine1 = procstat.machineTimes()
        self1 = os.times()
        result["serverCPU"] = round(cpu1["server"] - cpu0["server"], 2)
        result["serverRSS"] = round(procstat.peakRSS(serverPid), 1)
        if componentPid:
            result["componentCPU"] = round(cpu1["component"] - cpu0["component"], 2)
            result["componentRSS"] = round(procstat.peakRSS(componentPid), 1)
        if not allDone.done():
            allDone.cancel()
        elif allDone.exception() is not None:
            result["status"] = "error"
            result["notes"].append(f"subscriber process failed: {allDone.exception()}")

        for worker in workers:
            worker.send({"cmd": "stop"})
        outcomes = await asyncio.wait_for(asyncio.gather(*(w.result for w in workers)), 60)

        # Figures.
        sent = publisher.sent
        acked = [t for t in publisher.acked if t]
        latencies: list[float] = []
        unique = duplicates = unexpected = disconnected = 0
        lastArrival = 0.0
        perSubscriberLost: list[int] = []
        for outcome in outcomes:
            for sub in outcome["subscribers"]:
                first = array("d")
                first.frombytes(base64.b64decode(sub["first"]))
                unique += sub["unique"]
                duplicates += sub["duplicates"]
                unexpected += sub["unexpected"]
                disconnected += bool(sub["lost"])
                perSubscriberLost.append(items - sub["unique"])
                for index, arrived in enumerate(first):
                    if arrived:
                        latencies.append(arrived - sent[index])
                        lastArrival = max(lastArrival, arrived)
        latencies.sort()
        clientCPU = sum(o["cpu"] for o in outcomes) + (
            (self1.user - self0.user) + (self1.system - self0.system)
        )
        wall = ended - started
        busy = (machine1[0] - machine0[0]) / max(1e-9, machine1[1] - machine0[1])
        expected = subscribers * items
        result.update({
            "published": publisher.answered - publisher.errors,
            "publishErrors": publisher.errors,
            "pubPerSecond": round(len(acked) / (max(acked) - started), 1) if acked else 0.0,
            "notifications": unique,
            "notifPerSecond": round(unique / (lastArrival - started), 1) if unique else 0.0,
            "expectedNotifications": expected,
            "lost": expected - unique,
            "duplicates": duplicates,
            "unexpected": unexpected,
            "subscribersMissingItems": sum(1 for x in perSubscriberLost if x),
            "disconnected": disconnected,
            "latencyMs": {
                name: (round(v * 1000, 2) if v is not None else None)
                for name, v in (
                    ("p50", percentile(latencies, 0.50)),
                    ("p95", percentile(latencies, 0.95)),
                    ("p99", percentile(latencies, 0.99)),
                    ("max", latencies[-1] if latencies else None),
                )
            },
            "wallSeconds": round(wall, 2),
            "clientCPU": round(clientCPU, 2),
            "clientShare": round(clientCPU / (wall * (os.cpu_count() or 1)), 3),
            "clientProcesses": processes,
            "machineBusy": round(busy, 3),
            "machineCPU": round(machine1[0] - machine0[0], 2),
        })
        # CPU the machine spent outside the server, the component and the bench client: other
        # processes on the box (the kernel's own work for our sockets is in the processes).
        result["otherCPU"] = round(
            result["machineCPU"] - result["serverCPU"] - result.get("componentCPU", 0.0) - clientCPU,
            2,
        )
        if disconnected:
            result["notes"].append(f"{disconnected} subscriber connections were closed by the server")
        if unexpected:
            result["notes"].append(f"{unexpected} notifications carried an item id never published")
        if publisher.errors:
            result["notes"].append(f"{publisher.errors} publishes refused; first: {publisher.firstError[:300]}")
        if componentPid and unique:
            result["componentMicrosPerNotification"] = round(
                result["componentCPU"] / unique * 1e6, 1
            )
        if result["status"] == "stalled":
            result["notes"].append(
                f"publishes answered {publisher.answered}/{items}, "
                f"notifications {unique}/{expected}"
            )
        return result
    except Exception as e:  # noqa: BLE001 - a broken scenario is reported, and the run goes on
        result["status"] = "error"
        result["notes"].append(shortError(e))
        if options.verbose:
            traceback.print_exc()
        return result
    finally:
        if publisherConnection is not None:
            publisherConnection.close()
        for worker in workers:
            worker.send({"cmd": "stop"})
        for worker in workers:
            await worker.close()
        component.stop()


def parseList(text: str) -> list[int]:
    """
    C{"1,10,100"} as C{[1, 10, 100]}.
    """
    return [int(x) for x in text.split(",") if x.strip()]


def parseOptions(argv: list[str]) -> argparse.Namespace:
    """
    The command line; C{--quick} changes the defaults only of options not given.
    """
    parser = argparse.ArgumentParser(
        description="Firehose benchmark: Hermod vs the server's own pubsub vs a reference "
        "component, through a real Prosody and/or ejabberd. Prints figures; asserts nothing.",
    )
    parser.add_argument("--server", choices=("prosody", "ejabberd", "both"), default="prosody")
    parser.add_argument("--subscribers", type=parseList, help="N values (default 1,10,100,1000)")
    parser.add_argument("--window", type=parseList, help="W values (default 1,32)")
    parser.add_argument("--items", type=int, help="M, items per scenario (default 1000)")
    parser.add_argument(
        "--notifications", type=int,
        help="cap on N*M per scenario: M is lowered for large N (default 50000)",
    )
    parser.add_argument("--min-items", type=int, help="M never goes below this (default 50)")
    parser.add_argument(
        "--targets", type=lambda t: t.split(","), default=list(TARGETS),
        help="comma-separated subset of hermod,builtin,reference",
    )
    parser.add_argument("--timeout", type=float, help="time bound of a measured phase, s (default 120)")
    parser.add_argument("--stall", type=float, default=15.0, help="no progress for this long = stalled, s")
    parser.add_argument("--setup-timeout", type=float, default=120.0, help="bound on logins, s")
    parser.add_argument("--client-procs", type=int, default=0,
                        help="subscriber processes (default 1, 2 above 200 subscribers)")
    parser.add_argument(
        "--connections", type=parseList, default=[1],
        help="Hermod's component connections, one Hermod run per value (default 1); ejabberd "
        "balances among them, Prosody accepts one",
    )
    parser.add_argument(
        "--multicast", action="store_true",
        help="ejabberd: also run its mod_multicast (XEP-0033) and, beside each Hermod run, one "
        "with multicast = \"auto\" (labelled +mc); Prosody has no multicast service",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: N=1,100, M=100 (50 at N=100), about two minutes per server")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed scenarios")
    options = parser.parse_args(argv)
    defaults = (
        {"subscribers": [1, 100], "window": [1, 32], "items": 100, "notifications": 5000,
         "min_items": 20, "timeout": 60.0}
        if options.quick
        else {"subscribers": [1, 10, 100, 1000], "window": [1, 32], "items": 1000,
              "notifications": 50000, "min_items": 50, "timeout": 120.0}
    )
    for key, value in defaults.items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    if not options.connections or min(options.connections) < 1:
        parser.error("--connections: values of 1 or more")
    unknown = set(options.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return options


async def runServer(kind: str, options: argparse.Namespace) -> dict[str, Any]:
    """
    Every scenario against every target on one server kind.
    """
    multicast = options.multicast and kind == "ejabberd"
    bed = Bed(kind, multicast)
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {"server": kind, "results": results}
    try:
        bed.start()
        report["version"] = bed.version
        seconds = await bed.ensureAccounts(max(options.subscribers))
        report["accountSeconds"] = round(seconds, 2)
        print(f"# {bed.version}: {max(options.subscribers) + 1} accounts ready in {seconds:.1f} s",
              flush=True)
        for subscribers in options.subscribers:
            items = itemsFor(subscribers, options)
            for window in options.window:
                runs = [
                    (target, connections, viaMulticast)
                    for target in options.targets
                    for connections in (options.connections if target == "hermod" else [1])
                    for viaMulticast in (
                        (False, True) if multicast and target == "hermod" else (False,)
                    )
                ]
                for target, connections, viaMulticast in runs:
                    began = time.monotonic()
                    outcome = await runScenario(
                        bed, target, subscribers, window, items, options, connections,
                        viaMulticast,
                    )
                    outcome["scenarioSeconds"] = round(time.monotonic() - began, 1)
                    results.append(outcome)
                    print(_progressLine(kind, outcome), flush=True)
    finally:
        bed.stop()
    return report


def _progressLine(kind: str, r: dict[str, Any]) -> str:
    """
    One line per finished scenario, so that a long run shows where it is.
    """
    text = (
        f"# {kind} N={r['subscribers']} W={r['window']} M={r['items']} {r['target']}: "
        f"{r['status']}"
    )
    if "pubPerSecond" in r:
        text += (
            f", {r['pubPerSecond']} pub/s, {r['notifPerSecond']} notif/s, "
            f"lost {r['lost']}, dup {r['duplicates']}"
        )
    text += f" ({r.get('scenarioSeconds', 0)} s)"
    if r["notes"]:
        text += " -- " + " | ".join(r["notes"])
    return text


def main(argv: list[str]) -> int:
    """
    Run the benchmark, print one table per server, and write the JSON file if asked.
    """
    options = parseOptions(argv)
    if "hermod" in options.targets:
        problem = hermodImports()
        if problem is not None:
            print(f"firehose: {sys.executable} cannot import Hermod: {problem}\n"
                  "Install its dependencies (scripts/install-deps) or run with the Python "
                  "that has them.", file=sys.stderr)
            return 2
    kinds = ["prosody", "ejabberd"] if options.server == "both" else [options.server]
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", ROOT, "status", "--porcelain", "--", "hermod_component", "twisted"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    if dirty:
        commit += "+uncommitted"
    meta = {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + argv),
        "hermodCommit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "entryBytes": ENTRY_BYTES,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "options": {k: v for k, v in vars(options).items() if k != "json"},
    }
    print(f"# firehose: {meta['command']} (hermod {commit}, {meta['cpus']} CPUs, "
          f"{ENTRY_BYTES}-byte Atom entries, hermod component connections "
          f"{','.join(map(str, options.connections))})", flush=True)
    reports = []
    for kind in kinds:
        reports.append(asyncio.run(runServer(kind, options)))
    for report in reports:
        printServerTables(report, meta)
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"meta": meta, "servers": reports}, f, indent=1)
        print(f"\nJSON written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
