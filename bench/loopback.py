#!/usr/bin/env python3
"""
Hermod alone: a stand-in XMPP server on loopback drives Hermod's component stream directly.

  .venv/bin/python bench/loopback.py [--subscribers 1,100] [--window 1,32] [--items 2000]
      [--profile DIR]

No Prosody, no ejabberd, no clients: this process accepts Hermod's component connection
(XEP-0114 handshake), creates one node, subscribes N full JIDs, and publishes M 2 KB Atom entries
with W publish IQs outstanding, counting the answers and the C{<message>} notifications Hermod
writes back. It measures what Hermod itself costs: its CPU per publish and per notification
(all threads, from C{/proc}) and the rate it reaches when the server is free. It prints figures
and asserts nothing; C{--profile DIR} runs Hermod under py-spy (if installed) and writes one
flame graph input per scenario there (CPU figures then include py-spy's own).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import procstat
from bench.payload import atomEntry
from tests.servers._process import removeAtExit, startProcess, stopProcess
from tests.servers.hermod import HermodProcess

SERVICE = "pubsub.localhost"
SECRET = "loopback-bench-secret"
PUBLISHER = "publisher@localhost/bench"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
WARMUP = 5

_IQ_RE = re.compile(rb"<iq\b[^>]*>")
_ID_RE = re.compile(rb"\bid=['\"]([^'\"]*)['\"]")
_TYPE_RE = re.compile(rb"\btype=['\"](\w+)['\"]")


class ProfiledHermod(HermodProcess):
    """
    Hermod with C{py-spy record} attached, which writes raw (collapsed) stacks to C{output}
    when Hermod exits.
    """

    def __init__(self, *args: object, output: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.output = output
        self._spy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """
        Start Hermod, then attach py-spy to it.
        """
        super().start()
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        self._spy = subprocess.Popen(
            [spy, "record", "--rate", "250", "--threads", "--format", "raw", "--output",
             self.output, "--pid", str(self.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        Stop Hermod; py-spy then writes its file and exits.
        """
        status = super().stop(timeout)
        if self._spy is not None:
            self._spy.wait(30)
            self._spy = None
        return status


class CProfiledHermod(HermodProcess):
    """
    Hermod under twistd's own C{--profiler=cprofile}, which saves C{pstats} to C{output} when
    Hermod stops (the main thread only: SQL runs in the pool's thread).
    """

    def __init__(self, *args: object, output: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.output = output

    def command(self) -> list[str]:
        """
        The usual command line with twistd's profiling options.
        """
        argv = super().command()
        at = argv.index("-n")
        return argv[:at] + [f"--profile={self.output}", "--profiler=cprofile", "--savestats"] + argv[at:]


class ReferenceProcess:
    """
    C{bench/reference.py} instead of Hermod, to compare with the least work a component can do.
    """

    def __init__(self, port: int, workdir: str) -> None:
        self.port = port
        self.logPath = os.path.join(workdir, "reference.log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """
        The reference component's PID.
        """
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """
        Start it; it connects to the stand-in server.
        """
        self._process = startProcess(
            [sys.executable, "-m", "bench.reference", "--port", str(self.port), "--jid", SERVICE,
             "--secret", SECRET],
            self.logPath, cwd=ROOT,
        )

    def stop(self) -> None:
        """
        Stop it.
        """
        if self._process is not None:
            stopProcess(self._process)
            self._process = None


class FakeServer(asyncio.Protocol):
    """
    The server side of one component stream: answers the handshake, then sends what the
    scenario asks and counts what comes back.

    @ivar answers: IQ id to answer type, for the IQs sent and answered.
    @ivar notifications: C{<message} start tags received.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.authenticated = asyncio.get_running_loop().create_future()
        self.answers: dict[str, str] = {}
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.notifications = 0
        self.lastNotification = 0.0
        self.onAnswer: object = None
        self._tail = b""
        self._opened = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """
        Keep the transport.
        """
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """
        Handshake first; then count notifications and note IQ answers.
        """
        assert self.transport is not None
        if not self.authenticated.done():
            self.buffer += data
            if b"<stream:stream" in self.buffer and not self._opened:
                self._opened = True
                self.transport.write(
                    b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                    b"xmlns:stream='http://etherx.jabber.org/streams' id='loopback1' "
                    + b"from='" + SERVICE.encode() + b"'>"
                )
            match = re.search(rb"<handshake>([0-9a-f]+)</handshake>", self.buffer)
            if match:
                expected = hashlib.sha1(b"loopback1" + SECRET.encode()).hexdigest().encode()
                if match.group(1) != expected:
                    raise RuntimeError("bad handshake")
                self.transport.write(b"<handshake/>")
                self.buffer = b""
                self.authenticated.set_result(None)
            return
        now = time.monotonic()
        chunk = self._tail + data
        count = chunk.count(b"<message ") - self._tail.count(b"<message ")
        if count:
            self.notifications += count
            self.lastNotification = now
        skip = len(self._tail)
        for match in _IQ_RE.finditer(chunk):
            if match.end() <= skip:
                continue
            tag = match.group(0)
            found = _ID_RE.search(tag)
            kind = _TYPE_RE.search(tag)
            if found is None or kind is None:
                continue
            iqId = found.group(1).decode()
            self.answers[iqId] = kind.group(1).decode()
            future = self.waiting.pop(iqId, None)
            if future is not None and not future.done():
                future.set_result(kind.group(1).decode())
            if self.onAnswer is not None:
                self.onAnswer(iqId, now)  # type: ignore[operator]
        self._tail = chunk[-200:]

    def iq(self, iqId: str, sender: str, body: str) -> asyncio.Future[str]:
        """
        Send an IQ set to the service; the future fires with the answer's type.
        """
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.waiting[iqId] = future
        self.transport.write(
            f"<iq type='set' id='{iqId}' to='{SERVICE}' from='{sender}' xmlns='jabber:client'>"
            f"<pubsub xmlns='{NS_PUBSUB}'>{body}</pubsub></iq>".encode()
        )
        return future


def threadSeconds(pid: int) -> dict[str, float]:
    """
    CPU seconds (user + system) of each thread of C{pid}, by thread name.
    """
    seconds: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                head, _, rest = f.read().rpartition(b")")
        except OSError:
            continue
        name = "main" if tid == str(pid) else head.split(b"(", 1)[1].decode()
        fields = rest.split()
        seconds[name] = seconds.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return seconds


def publishBody(node: str, index: int) -> str:
    """
    The C{<publish/>} of item C{index}.
    """
    return f"<publish node='{node}'><item id='lb{index:08d}'>{atomEntry(index)}</item></publish>"


async def scenario(
    subscribers: int, window: int, items: int, profile: str | None, cprofile: str | None = None,
    target: str = "hermod", subscribeWindow: int = 500,
) -> dict[str, float]:
    """
    One run: a fresh Hermod on a fresh SQLite file, N subscribers, M publishes, window W.
    """
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[FakeServer] = loop.create_future()

    def factory() -> FakeServer:
        protocol = FakeServer()
        if not connected.done():
            connected.set_result(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    workdir = removeAtExit(tempfile.mkdtemp(prefix="hermod-loopback-"))
    config = {
        "component": {"jid": SERVICE, "server": f"tcp:host=127.0.0.1:port={port}"},
        "storage": {"engine": "sqlite", "path": os.path.join(workdir, "hermod.sqlite")},
    }
    hermod: HermodProcess | ReferenceProcess
    if target == "reference":
        hermod = ReferenceProcess(port, workdir)
    elif cprofile:
        output = os.path.join(cprofile, f"hermod-N{subscribers}-W{window}.pstats")
        hermod = CProfiledHermod(
            config, workdir=workdir, secret=SECRET, output=output
        )
    elif profile:
        output = os.path.join(profile, f"hermod-N{subscribers}-W{window}.txt")
        hermod = ProfiledHermod(
            config, workdir=workdir, secret=SECRET, output=output
        )
    else:
        hermod = HermodProcess(config, workdir=workdir, secret=SECRET)
    hermod.start()
    try:
        fake = await asyncio.wait_for(connected, 60)
        await asyncio.wait_for(fake.authenticated, 30)
        node = f"loopback-{subscribers}-{window}"
        if await asyncio.wait_for(fake.iq("create", PUBLISHER, f"<create node='{node}'/>"), 30) != "result":
            raise RuntimeError("create refused")
        kinds = []
        # Subscribers arrive subscribeWindow at a time, each waiting for its answer, as many
        # clients do (a burst of all 10,000 pipelined on one stream is a peak of its own).
        for start in range(0, subscribers, subscribeWindow):
            pending = [
                fake.iq(f"sub{i}", f"sub{i:05d}@localhost/r",
                        f"<subscribe node='{node}' jid='sub{i:05d}@localhost/r'/>")
                for i in range(start, min(subscribers, start + subscribeWindow))
            ]
            kinds += await asyncio.wait_for(asyncio.gather(*pending), 60)
        if set(kinds) != {"result"}:
            raise RuntimeError("subscribe refused")
        for i in range(WARMUP):
            await asyncio.wait_for(fake.iq(f"w{i}", PUBLISHER, publishBody(node, 90_000_000 + i)), 30)
        await asyncio.sleep(0.5)
        fake.notifications = 0
        # The peak so far is that of subscribing (all N subscribe requests are pipelined).
        subscribedRSS = procstat.peakRSS(hermod.pid or 0)

        bodies = [publishBody(node, i) for i in range(items)]
        sentAt = [0.0] * items
        answeredAt = [0.0] * items
        state = {"next": 0, "answered": 0, "errors": 0}
        finished: asyncio.Future[None] = loop.create_future()
        transport = fake.transport
        assert transport is not None

        def sendNext() -> None:
            index = state["next"]
            state["next"] += 1
            sentAt[index] = time.monotonic()
            transport.write(
                f"<iq type='set' id='p{index}' to='{SERVICE}' from='{PUBLISHER}' "
                f"xmlns='jabber:client'><pubsub xmlns='{NS_PUBSUB}'>{bodies[index]}</pubsub></iq>"
                .encode()
            )

        def onAnswer(iqId: str, now: float) -> None:
            if not iqId.startswith("p"):
                return
            index = int(iqId[1:])
            if answeredAt[index]:
                return
            answeredAt[index] = now
            state["answered"] += 1
            if fake.answers[iqId] != "result":
                state["errors"] += 1
            if state["next"] < items:
                sendNext()
            check()

        def check() -> None:
            if (
                state["answered"] == items
                and fake.notifications >= items * subscribers
                and not finished.done()
            ):
                finished.set_result(None)

        fake.onAnswer = onAnswer
        cpu0 = procstat.cpuSeconds(hermod.pid or 0)
        threads0 = threadSeconds(hermod.pid or 0)
        self0 = time.process_time()
        started = time.monotonic()
        for _ in range(min(window, items)):
            sendNext()
        while not finished.done():
            check()
            if time.monotonic() - started > 300:
                raise RuntimeError(
                    f"timed out: {state['answered']} answers, {fake.notifications} notifications"
                )
            await asyncio.sleep(0.005)
        ended = max(max(answeredAt), fake.lastNotification)
        cpu = procstat.cpuSeconds(hermod.pid or 0) - cpu0
        threads1 = threadSeconds(hermod.pid or 0)
        mainCPU = threads1.get("main", 0.0) - threads0.get("main", 0.0)
        latencies = sorted(a - s for a, s in zip(answeredAt, sentAt))
        return {
            "subscribers": subscribers,
            "window": window,
            "items": items,
            "errors": state["errors"],
            "wall": ended - started,
            "pubPerSecond": items / (max(answeredAt) - started),
            "notifPerSecond": fake.notifications / (ended - started),
            "cpu": cpu,
            "usPerPublish": cpu / items * 1e6,
            "usPerNotification": cpu / max(1, fake.notifications) * 1e6,
            "answerP50": latencies[len(latencies) // 2] * 1000,
            "answerP99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "driverCPU": time.process_time() - self0,
            "mainCPU": mainCPU,
            "notifications": fake.notifications,
            "peakRSS": procstat.peakRSS(hermod.pid or 0),
            "subscribedRSS": subscribedRSS,
        }
    finally:
        hermod.stop()
        server.close()


def main(argv: list[str]) -> int:
    """
    Run the scenarios and print one line each.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--subscribers", default="1,100")
    parser.add_argument("--window", default="1,32")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--subscribe-window", type=int, default=500,
                        help="subscribe requests outstanding at once while setting up")
    parser.add_argument("--profile", help="directory for py-spy stacks (one file per scenario)")
    parser.add_argument("--target", choices=("hermod", "reference"), default="hermod")
    parser.add_argument("--cprofile", help="directory for twistd cProfile stats (one per scenario)")
    options = parser.parse_args(argv)
    for directory in (options.profile, options.cprofile):
        if directory:
            os.makedirs(directory, exist_ok=True)
    print(f"# loopback: {options.target} alone, {options.items} items, load {os.getloadavg()[0]:.2f}")
    print("    N   W      M |   pub/s  notif/s | CPU s  us/pub us/ntf | answer p50  p99 ms | main s drv CPU | RSS MB: subs  end")
    for subscribers in [int(v) for v in options.subscribers.split(",")]:
        for window in [int(v) for v in options.window.split(",")]:
            items = options.items if subscribers < 100 else max(200, options.items // 4)
            r = asyncio.run(
                scenario(subscribers, window, items, options.profile, options.cprofile,
                         options.target, options.subscribe_window)
            )
            print(
                f"{r['subscribers']:5d} {r['window']:3d} {r['items']:6d} | "
                f"{r['pubPerSecond']:7.0f} {r['notifPerSecond']:8.0f} | "
                f"{r['cpu']:5.2f} {r['usPerPublish']:7.0f} {r['usPerNotification']:6.1f} | "
                f"{r['answerP50']:10.2f} {r['answerP99']:5.2f}    | {r['mainCPU']:6.2f} {r['driverCPU']:6.2f}"
                f" |        {r['subscribedRSS']:6.1f} {r['peakRSS']:6.1f}"
                + (f"  errors {r['errors']}" if r["errors"] else ""),
                flush=True,
            )
    print(f"# load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
