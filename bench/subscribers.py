"""
A subscriber client process: C{python -m bench.subscribers}, driven by L{bench.firehose}.

It reads one JSON line of settings on stdin (server, accounts, service, node, item count), logs
every account in, subscribes it to the node, and writes C{{"event": "ready", ...}} on stdout.
Then it obeys commands on stdin, one JSON line each:

  - C{{"cmd": "go"}}: start the CPU clock; every subscriber already counts items.
  - C{{"cmd": "stop"}}: write the results (C{{"event": "result", ...}}) and exit.

When every subscriber has every item it writes C{{"event": "done"}} at once, so the driver need
not wait for the stop timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

from bench.leanxmpp import NS_PUBSUB, Connection, SubscriberCounter, escape, login


def emit(event: dict[str, Any]) -> None:
    """
    Write one JSON line to the driver.
    """
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def setUp(
    settings: dict[str, Any], user: str, semaphore: asyncio.Semaphore, onComplete: Any
) -> tuple[Connection, SubscriberCounter]:
    """
    Log C{user} in and subscribe its full JID to the node; count items from then on.
    """
    async with semaphore:
        connection = await login(
            settings["host"], settings["port"], settings["domain"], user, settings["password"],
            "bench", timeout=settings["timeout"],
        )
        counter = SubscriberCounter(settings["items"], onComplete)
        await connection.iq(
            "sub",
            f"<iq type='set' id='sub' to='{escape(settings['service'])}'>"
            f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{escape(settings['node'])}' "
            f"jid='{escape(connection.jid)}'/></pubsub></iq>",
            timeout=settings["timeout"],
        )
        # Anything after the subscribe answer is a notification.
        rest = bytes(connection.buffer)
        connection.buffer.clear()
        connection.onData = counter
        if rest:
            counter(rest, time.monotonic())
        return connection, counter


async def main() -> None:
    """
    Set up the subscribers, then follow the driver's commands.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    settings = json.loads(await reader.readline())
    users: list[str] = settings["users"]
    remaining = [len(users)]
    started = time.monotonic()

    def onComplete() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            emit({"event": "done", "at": time.monotonic()})

    semaphore = asyncio.Semaphore(settings.get("concurrency", 50))
    results = await asyncio.gather(
        *(setUp(settings, user, semaphore, onComplete) for user in users), return_exceptions=True
    )
    pairs = [r for r in results if not isinstance(r, BaseException)]
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    remaining[0] = len(pairs)  # nothing is published before we report ready
    emit({
        "event": "ready", "subscribed": len(pairs), "failed": len(failures),
        "errors": failures[:3], "seconds": time.monotonic() - started,
    })
    cpuStart = os.times()

    async def progress() -> None:
        while True:
            await asyncio.sleep(0.5)
            emit({
                "event": "progress",
                "received": sum(c.unique + c.duplicates for _, c in pairs),
            })

    reporter = asyncio.ensure_future(progress())
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)["cmd"]
        if command == "go":
            cpuStart = os.times()
        elif command == "stop":
            break
    cpuEnd = os.times()
    reporter.cancel()
    emit({
        "event": "result",
        "cpu": (cpuEnd.user - cpuStart.user) + (cpuEnd.system - cpuStart.system),
        "subscribers": [
            {
                "jid": connection.jid,
                "first": base64.b64encode(counter.first.tobytes()).decode(),
                "unique": counter.unique,
                "duplicates": counter.duplicates,
                "unexpected": counter.unexpected,
                "lost": connection.lost,
            }
            for connection, counter in pairs
        ],
    })
    for connection, _ in pairs:
        connection.close()
    await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
