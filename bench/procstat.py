"""
CPU time and peak memory of the processes under test, read from C{/proc}.

A server or Hermod is started by the C{tests.servers} helpers in its own session, so its PID
leads a process group; figures are summed over that group (an Erlang VM's helper processes,
for instance). CPU is user plus system time of every thread.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _groupMembers(leader: int) -> list[int]:
    """
    PIDs of the live processes whose process group is C{leader}.
    """
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ...
        if int(fields[2]) == leader:
            members.append(int(name))
    return members or [leader]


def cpuSeconds(leader: int) -> float:
    """
    User plus system CPU seconds used so far by the process group led by C{leader}.
    """
    total = 0
    for pid in _groupMembers(leader):
        total += _ticks(f"/proc/{pid}/stat")
    return total / _TICK


def _ticks(path: str) -> int:
    """
    User plus system clock ticks in a C{stat} file of C{/proc} (0 when it is gone).
    """
    try:
        with open(path, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0
    # utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the command.
    return int(fields[11]) + int(fields[12])


def peakRSS(leader: int) -> float:
    """
    The peak resident set (C{VmHWM}) of the process group led by C{leader}, in MB.

    Peaks of several members are added, which overstates a group whose members peaked at
    different times; the servers and Hermod are single processes in practice.
    """
    total = 0
    for pid in _groupMembers(leader):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


def machineTimes() -> tuple[float, float]:
    """
    Busy and total CPU seconds of the whole machine so far (all cores), from C{/proc/stat}.
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


def mainThreadSeconds(pid: int) -> float:
    """
    User plus system CPU seconds used so far by the main thread of process C{pid} (for
    Hermod, its reactor thread; the rest of the process's CPU is its thread pools').
    """
    return _ticks(f"/proc/{pid}/task/{pid}/stat") / _TICK
