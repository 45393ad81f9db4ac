#!/usr/bin/env python3
"""
The replication benchmark: two Hermod processes (A -> B) on one real Prosody, spool backends.

  /tmp/venv/bin/python bench/replication.py [--rates 100,500] [--seconds 10] [--backlog 20000]
      [--dir DIR] [--keep] [--verbose]

Lag: an application writes objects into A's spool at a steady rate; a watcher polls B's spool
every 2 ms and records when each object appears. The lag of an object is "appeared on B" minus
"written on A" (so it includes A's capture poll interval, 20 ms here). Catch-up: B is stopped,
the backlog is written on A and published, B is started, and the time from B's start to the last
object applied is measured. It prints figures and asserts nothing.

The work directories (spools, databases, Hermod logs, and a copy of Prosody's log) are removed at
the end, unless C{--keep} is given or some objects never reached B (a stall): then their paths
are printed, with the errors in B's log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.procstat import cpuSeconds, mainThreadSeconds
from tests.servers.prosody import ProsodyServer
from tests.test_replication_integration import SECRET, Replica

A, B = "pubsub-a.localhost", "pubsub-b.localhost"


def percentile(values: list[float], p: float) -> float:
    """
    The C{p}-th percentile (nearest rank) of C{values}.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def tune(replica: Replica, backlog: int) -> None:
    """
    Faster capture polling and a node large enough for the backlog.
    """
    with open(replica.process.configPath) as f:
        text = f.read()
    text = text.replace("poll_interval = 0.1", "poll_interval = 0.02\nbatch_size = 2000")
    text += f"\n[pubsub]\nmax_items_per_node = {max(backlog * 2, 10000)}\n"
    with open(replica.process.configPath, "w") as f:
        f.write(text)


def fileCreationCost(directory: str, count: int = 2000) -> tuple[float, float]:
    """
    What creating a small file costs in C{directory} now: wall and system CPU microseconds
    per file, for C{count} files of 700 bytes (about a backlog object) created and removed.
    B's spool gets one new file per object in a catch-up, and on a file system where that
    costs hundreds of microseconds of kernel time the catch-up measures the file system.
    """
    probe = tempfile.mkdtemp(prefix="hermod-probe-", dir=directory)
    payload = b"x" * 700
    try:
        started, before = time.perf_counter(), os.times()
        for n in range(count):
            fd = os.open(os.path.join(probe, f"f{n}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, payload)
            os.close(fd)
        wall, after = time.perf_counter() - started, os.times()
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return wall / count * 1e6, (after.system - before.system) / count * 1e6


def profiled(replica: Replica, path: str) -> None:
    """
    Make C{replica} run under twistd's cProfile, saving its statistics to C{path} on exit.
    """
    command = replica.process.command

    def withProfile() -> list[str]:
        argv = command()
        at = argv.index("hermod")
        return [*argv[:at], f"--profile={path}", "--profiler=cprofile", "--savestats",
                *argv[at:]]

    replica.process.command = withProfile  # type: ignore[method-assign]


#: The stalls seen in this run, for the summary and to keep the work directories.
stalls: list[str] = []


def measureLag(a: Replica, b: Replica, rate: int, seconds: float, prefix: str) -> list[float]:
    """
    Write C{rate} objects per second on A for C{seconds}; return each object's lag.
    """
    written: dict[str, float] = {}
    seen: dict[str, float] = {}
    total = int(rate * seconds)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = time.monotonic()
            for entry in os.scandir(b.spool):
                name = entry.name
                if name.startswith(prefix) and name.endswith(".xml"):
                    seen.setdefault(name[:-4], now)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        objectId = f"{prefix}{n}"
        written[objectId] = time.monotonic()
        a.write(objectId, f'<doc n="{n}" rate="{rate}"/>'.encode())
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    watcher.join()
    missing = total - len(seen)
    if missing:
        print(f"  {missing} of {total} objects never reached B within 60 s")
        stalls.append(f"{missing} of {total} at {rate}/s")
        for line in b.process.logText().splitlines():
            if "#critical]" in line or "#error]" in line or "failed" in line or "Error" in line:
                print("   B:", line[:300])
    return [seen[k] - written[k] for k in seen]


def main() -> None:
    """
    Run the benchmark and print its figures.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="100,500")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--profile", default="",
                        help="a directory for cProfile statistics of A and B (pubsub-a.prof, pubsub-b.prof)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directories (Hermod logs, spools, databases, a copy "
                             "of Prosody's log) and print where; they are kept after a stall too")
    parser.add_argument("--dir", default="",
                        help="where the work directories (spools, databases) go, such as "
                             "/dev/shm to take the disk's file system out (default: the "
                             "system's temporary directory)")
    parser.add_argument("--verbose", action="store_true",
                        help="run both Hermods with --verbose (every stanza logged: slower)")
    options = parser.parse_args()
    if options.dir:
        tempfile.tempdir = options.dir
    server = ProsodyServer(A, SECRET, extraConfig=f'Component "{B}"\n  component_secret = "{SECRET}"')
    server.start()
    replicas: list[Replica] = []
    try:
        a = Replica(A, server.componentPort, [])
        b = Replica(B, server.componentPort, [(A, "publisher")])
        replicas += [a, b]
        for replica in replicas:
            tune(replica, options.backlog)
            replica.process.verbose = options.verbose
            if options.profile:
                profiled(replica, os.path.join(options.profile, replica.jid.split(".")[0] + ".prof"))
            replica.start()
        b.process.waitForLog("Subscribed to", timeout=30)
        print(f"Replication A -> B on Prosody, {os.cpu_count()} CPUs, capture poll 20 ms")
        for rate in (int(r) for r in options.rates.split(",")):
            lags = measureLag(a, b, rate, options.seconds, f"r{rate}-")
            print(
                f"  {rate:4d} changes/s for {options.seconds:.0f} s: {len(lags)} applied, lag "
                f"p50 {percentile(lags, 50) * 1000:.0f} ms, p99 {percentile(lags, 99) * 1000:.0f} "
                f"ms, max {max(lags) * 1000:.0f} ms"
            )
        # Catch-up: B misses a backlog.
        b.process.stop()
        before = len(a.objects())
        started = time.monotonic()
        for n in range(options.backlog):
            a.write(f"backlog{n}", f'<doc n="{n}" backlog="yes"/>'.encode())
        goal = before + options.backlog
        while a.publishEvents() < goal:
            time.sleep(0.2)
        print(f"  backlog: {options.backlog} changes written and published on A in "
              f"{time.monotonic() - started:.1f} s")
        wall, system = fileCreationCost(os.path.dirname(b.spool))
        print(f"  file system of {tempfile.gettempdir()}: a new file costs {wall:.0f} µs "
              f"({system:.0f} µs of it in the kernel)")
        started = time.monotonic()
        cpuBefore = {"A": cpuSeconds(a.process.pid), "Prosody": cpuSeconds(server.pid)}
        b.start()
        while len(os.listdir(b.spool)) - 1 < goal:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = {name: cpuSeconds(pid) - cpuBefore.get(name, 0.0) for name, pid in (
            ("A", a.process.pid), ("B", b.process.pid), ("Prosody", server.pid))}
        reactorB = mainThreadSeconds(b.process.pid)
        # The files are all there before the catch-up loop logs how it ran: wait for that line
        # (reading the log at once used to report "refresh" for an archive catch-up).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = b.process.logText().split("starting:")[-1]
            if "Caught up on" in log or "Refreshed from" in log:
                break
            time.sleep(0.05)
        path = "archive (MAM)" if "from its archive" in log else "refresh"
        for line in log.split("starting:")[-1].splitlines():
            if "PartnerLink" in line:
                print("   B:", line.split("] ", 1)[-1])
        print(f"  catch-up of {options.backlog} missed changes via {path}: {elapsed:.1f} s "
              f"(from process start) = {options.backlog / elapsed:.0f} changes/s")
        print("  catch-up CPU: " + ", ".join(
            f"{name} {seconds:.1f} s ({seconds / options.backlog * 1e6:.0f} µs/change)"
            for name, seconds in cpu.items()
        ) + f"; {os.cpu_count()} CPUs x {elapsed:.1f} s = {os.cpu_count() * elapsed:.1f} s")
        print(f"  B's reactor thread {reactorB:.1f} s, its thread pools "
              f"{cpu['B'] - reactorB:.1f} s")
    finally:
        for replica in replicas:
            replica.process.stop()
        keep = bool(replicas) and (options.keep or bool(stalls))
        if keep and server.logPath and os.path.exists(server.logPath):
            # Before stopping: stopping the server removes its directory.
            shutil.copy(server.logPath, os.path.join(replicas[0].workdir, "prosody.log"))
        server.stop()
        if keep:
            for replica in replicas:
                print(f"  kept {replica.jid}: {replica.workdir} (hermod.log, spool, hermod.sqlite)")
        else:
            for replica in replicas:
                shutil.rmtree(replica.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
