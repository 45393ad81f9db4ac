"""
The client half of C{scripts/demo}: two slixmpp users talk to Hermod through Prosody.

Alice creates a node, Bob subscribes to it, Alice publishes an Atom entry, and the notification
Bob receives is printed. Run by C{scripts/demo}; on its own::

    python scripts/demo_client.py --port 5222 --service pubsub.localhost \\
        --alice alice@localhost:alicepw --bob bob@localhost:bobpw
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import uuid
import xml.dom.minidom
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

NS_ATOM = "http://www.w3.org/2005/Atom"


def makeClient(jid: str, password: str) -> slixmpp.ClientXMPP:
    """
    A slixmpp client for a loopback server without TLS: plain authentication allowed.

    @param jid: The account.
    @param password: Its password.
    """
    xmpp = slixmpp.ClientXMPP(jid, password)
    xmpp.enable_direct_tls = False
    xmpp.enable_starttls = False
    xmpp.enable_plaintext = True
    for plugin in ("xep_0030", "xep_0004", "xep_0060"):
        xmpp.register_plugin(plugin)
    xmpp.plugin["feature_mechanisms"].unencrypted_plain = True
    xmpp.plugin["feature_mechanisms"].unencrypted_scram = True
    return xmpp


async def login(xmpp: slixmpp.ClientXMPP, host: str, port: int, timeout: float = 15) -> None:
    """
    Connect C{xmpp}, wait for its session, and send presence.

    @raise RuntimeError: Login failed or timed out.
    """
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def sessionStarted(event: object) -> None:
        if not started.done():
            started.set_result(None)

    def authFailed(event: object) -> None:
        if not started.done():
            started.set_exception(RuntimeError(f"{xmpp.boundjid}: login refused"))

    xmpp.add_event_handler("session_start", sessionStarted)
    xmpp.add_event_handler("failed_all_auth", authFailed)
    xmpp.connect(host, port)
    try:
        await asyncio.wait_for(started, timeout)
    except TimeoutError:
        raise RuntimeError(f"{xmpp.boundjid}: no session after {timeout}s") from None
    xmpp.send_presence()


def atomEntry(title: str, text: str) -> ET.Element:
    """
    An Atom entry with a fresh id and the current time.

    @param title: The entry's title.
    @param text: Its content.
    """
    entry = ET.Element(f"{{{NS_ATOM}}}entry")
    ET.SubElement(entry, f"{{{NS_ATOM}}}id").text = f"urn:uuid:{uuid.uuid4()}"
    ET.SubElement(entry, f"{{{NS_ATOM}}}title").text = title
    ET.SubElement(entry, f"{{{NS_ATOM}}}updated").text = (
        datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    )
    ET.SubElement(entry, f"{{{NS_ATOM}}}content", type="text").text = text
    return entry


def pretty(stanza: slixmpp.ElementBase) -> str:
    """
    C{stanza} as indented XML text, with its namespaces as default declarations.
    """
    text = xml.dom.minidom.parseString(str(stanza)).toprettyxml(indent="  ")
    return "\n".join(line for line in text.splitlines()[1:] if line.strip())


async def run(args: argparse.Namespace) -> None:
    """
    The demo scenario.
    """
    aliceJID, alicePassword = args.alice.split(":", 1)
    bobJID, bobPassword = args.bob.split(":", 1)
    alice = makeClient(aliceJID + "/demo", alicePassword)
    bob = makeClient(bobJID + "/demo", bobPassword)
    notified: asyncio.Future[slixmpp.Message] = asyncio.get_running_loop().create_future()

    def onEvent(message: slixmpp.Message) -> None:
        if message["pubsub_event"]["items"]["node"] == args.node and not notified.done():
            notified.set_result(message)

    bob.add_event_handler("pubsub_publish", onEvent)
    await login(alice, args.host, args.port)
    await login(bob, args.host, args.port)
    print(f"demo: {aliceJID} and {bobJID} logged in on {args.host}:{args.port}")

    alicePubsub = alice.plugin["xep_0060"]
    await alicePubsub.create_node(args.service, args.node)
    print(f"demo: {aliceJID} created node {args.node!r} on {args.service}")
    subscription = await bob.plugin["xep_0060"].subscribe(args.service, args.node)
    state = subscription["pubsub"]["subscription"]["subscription"]
    print(f"demo: {bobJID} subscribed to {args.node!r} ({state})")
    entry = atomEntry("Hello from Hermod", "Alice published this; Bob was told.")
    reply = await alicePubsub.publish(args.service, args.node, payload=entry)
    itemID = reply["pubsub"]["publish"]["item"]["id"]
    print(f"demo: {aliceJID} published item {itemID!r}")

    message = await asyncio.wait_for(notified, args.timeout)
    print(f"demo: {bobJID} received this notification:")
    print(pretty(message))

    for xmpp in (alice, bob):
        await xmpp.disconnect()


def main() -> int:
    """
    Parse the arguments and run the scenario; return the exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222, help="the server's c2s port")
    parser.add_argument("--service", default="pubsub.localhost", help="Hermod's component JID")
    parser.add_argument("--node", default="news")
    parser.add_argument("--alice", required=True, help="JID:PASSWORD of the publisher")
    parser.add_argument("--bob", required=True, help="JID:PASSWORD of the subscriber")
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except IqError as e:
        print(f"demo: request refused: {ET.tostring(e.iq.xml).decode()}", file=sys.stderr)
        return 1
    except (TimeoutError, IqTimeout, RuntimeError) as e:
        print(f"demo: failed: {e or type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
