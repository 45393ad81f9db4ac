"""
End-to-end tests of multi-subscribe, digests, bodies and presence: Hermod run as
C{twistd -n hermod} behind a real Prosody and a real ejabberd, driven by slixmpp clients.

The scenarios use the bed of L{tests.test_integration.PubSubScenarios} (servers, Hermod,
logged-in users and request helpers) without running its scenarios a second time.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import TestCase

from tests.servers.ejabberd import EjabberdServer
from tests.servers.prosody import ProsodyServer
from tests.test_integration import (
    ENTRY,
    NS_DISCO_INFO,
    NS_EVENT,
    NS_PUBSUB,
    NS_SHIM,
    PASSWORD,
    SECRET,
    SERVICE,
    PubSubScenarios,
    form,
    q,
    sleep,
)
from tests.xmppclient import connectClient


def itemIds(message: ET.Element) -> list[str]:
    """
    The ids of every item in a message, in every C{<event/>} of it.
    """
    return [i.get("id", "") for i in message.iter(q("item", NS_EVENT))]


def subIds(message: ET.Element) -> list[str]:
    """
    The SHIM SubID headers of a message.
    """
    return sorted(
        h.text or "" for h in message.iter(q("header", NS_SHIM)) if h.get("name") == "SubID"
    )


class SubscriptionScenarios:
    """
    Subscriber-side scenarios, written once and run against each XMPP server.
    """

    serverFactory: Callable[[], Any]
    # The bed and request helpers of the pubsub scenarios (not their tests).
    startBed = PubSubScenarios.startBed
    startHermod = PubSubScenarios.startHermod
    login = PubSubScenarios.login
    waitForService = PubSubScenarios.waitForService
    jid = PubSubScenarios.jid
    bare = PubSubScenarios.bare
    pubsub = PubSubScenarios.pubsub
    owner = PubSubScenarios.owner
    assertError = PubSubScenarios.assertError
    createNode = PubSubScenarios.createNode
    subscribe = PubSubScenarios.subscribe
    publish = PubSubScenarios.publish
    nextEvent = PubSubScenarios.nextEvent
    assertNoEvent = PubSubScenarios.assertNoEvent

    async def subscribeWith(self, node: str, user: str, **options: str | list[str]) -> str:
        """
        Subscribe C{user}'s full JID to C{node} with subscription options; returns the SubID.
        """
        values = {f"pubsub#{k}" if "#" not in k else k: v for k, v in options.items()}
        result = await self.pubsub(
            user,
            f"<subscribe node='{node}' jid='{self.jid(user)}'/><options>"
            + form(NS_PUBSUB + "#subscribe_options", values)  # type: ignore[arg-type]
            + "</options>",
        )
        subscription = result.find(f".//{q('subscription', NS_PUBSUB)}")
        assert subscription is not None, ET.tostring(result)
        return subscription.get("subid", "")

    async def test_multiSubscribeWithTwoHeaderFilters(self) -> None:
        """
        A JID subscribed twice with different header filters gets one notification naming
        both SubIDs for an item matching both, naming one SubID for an item matching one, and
        nothing for an item matching neither; the service advertises multi-subscribe.
        """
        case: TestCase = self  # type: ignore[assignment]
        await self.startBed()
        info = await self.clients["subscriber"].iq(
            f"<query xmlns='{NS_DISCO_INFO}'/>", to=SERVICE, type="get"
        )
        features = {f.get("var") for f in info.iter(q("feature", NS_DISCO_INFO))}
        for feature in ("multi-subscribe", "last-published", "presence-notifications",
                        "subscription-options"):
            case.assertIn(f"{NS_PUBSUB}#{feature}", features)
        await self.createNode("builds")
        johnp = await self.subscribeWith(
            "builds", "subscriber", **{"hermod#header_filter": ["built_by=johnp"]}
        )
        koji = await self.subscribeWith(
            "builds", "subscriber", **{"hermod#header_filter": ["topic=koji"]}
        )
        case.assertNotEqual(johnp, koji)
        again = await self.subscribeWith(
            "builds", "subscriber", **{"hermod#header_filter": ["topic=koji"]}
        )
        case.assertEqual(again, koji)
        await self.assertError(
            self.pubsub(
                "subscriber", f"<unsubscribe node='builds' jid='{self.jid('subscriber')}'/>"
            ),
            "bad-request", "subid-required",
        )
        await self.assertError(
            self.pubsub("subscriber", "<items node='builds'/>", type="get"),
            "bad-request", "subid-required",
        )
        await self.pubsub("subscriber", f"<items node='builds' subid='{koji}'/>", type="get")
        for itemId, headers in (
            ("both", (("built_by", "johnp"), ("topic", "koji"))),
            ("neither", (("built_by", "ralph"),)),
            ("koji", (("built_by", "ralph"), ("topic", "koji"))),
        ):
            shim = "".join(f"<header name='{n}'>{v}</header>" for n, v in headers)
            await self.publish(
                "builds", itemId, ENTRY + f"<headers xmlns='{NS_SHIM}'>{shim}</headers>"
            )
        first = await self.nextEvent("subscriber", "builds", "items")
        second = await self.nextEvent("subscriber", "builds", "items")
        case.assertEqual((itemIds(first), subIds(first)), (["both"], sorted([johnp, koji])))
        case.assertEqual((itemIds(second), subIds(second)), (["koji"], [koji]))
        await self.assertNoEvent("subscriber", "builds")
        await self.pubsub(
            "subscriber",
            f"<unsubscribe node='builds' jid='{self.jid('subscriber')}' subid='{koji}'/>",
        )
        await self.publish("builds", "after", ENTRY + f"<headers xmlns='{NS_SHIM}'>"
                           "<header name='topic'>koji</header></headers>")
        await self.assertNoEvent("subscriber", "builds")

    async def test_lastItemWhenComingBackOnline(self) -> None:
        """
        A subscriber that subscribed to the component's presence goes offline, an item is
        published, and when it comes back online (its presence broadcast reaching Hermod
        through the server) it receives that item from an on_sub_and_presence node; a
        directed presence does the same for an entity not in a presence subscription.
        """
        case: TestCase = self  # type: ignore[assignment]
        await self.startBed()
        await self.createNode("status", send_last_published_item="on_sub_and_presence")
        subscriber = self.clients["subscriber"]
        subscriber.send(f"<presence to='{SERVICE}' type='subscribe'/>")
        deadline = time.monotonic() + 20
        roster = subscriber.xmpp.client_roster
        # "from": the component is subscribed to the user's presence, so the user's server
        # sends it the user's broadcasts (the client's view of the other direction may lag).
        while roster[SERVICE]["subscription"] not in ("from", "both"):
            if time.monotonic() > deadline:
                case.fail(
                    f"no mutual presence subscription: {roster[SERVICE]['subscription']}\n"
                    + self.hermod.logText()[-6000:]
                )
            await sleep(0.2)
        await self.subscribe("status")
        await self.subscribe("status", user="outsider")
        await subscriber.disconnect()
        await self.clients["outsider"].disconnect()
        await sleep(1.0)  # the unavailable presences reach Hermod
        await self.publish("status", "while-away")

        back = await connectClient(
            self.jid("subscriber"), PASSWORD, "127.0.0.1", self.server.c2sPort, presence=False
        )
        case.addCleanup(back.disconnect)
        self.clients["subscriber"] = back
        await self.assertNoEvent("subscriber", "status", seconds=1.0)
        back.xmpp.send_presence()
        message = await self.nextEvent("subscriber", "status", "items")
        case.assertEqual(itemIds(message), ["while-away"])

        outsider = await connectClient(
            self.jid("outsider"), PASSWORD, "127.0.0.1", self.server.c2sPort, presence=False
        )
        case.addCleanup(outsider.disconnect)
        self.clients["outsider"] = outsider
        outsider.send(f"<presence to='{SERVICE}'/>")
        message = await self.nextEvent("outsider", "status", "items")
        case.assertEqual(itemIds(message), ["while-away"])

    async def test_digestAndBody(self) -> None:
        """
        A digest subscriber receives several items published within its period in one
        message; an include_body subscriber's notification carries the Atom title as body.
        """
        case: TestCase = self  # type: ignore[assignment]
        await self.startBed()
        await self.createNode("digest")
        subid = await self.subscribeWith(
            "digest", "subscriber", digest="1", digest_frequency="4000"
        )
        await self.subscribeWith("digest", "outsider", include_body="1")
        for n in range(3):
            await self.publish("digest", f"d{n}")
        message = await self.clients["outsider"].waitForMessage(
            lambda m: m.xml.find(q("body", "jabber:client")) is not None
        )
        case.assertEqual(message.xml.find(q("body", "jabber:client")).text,  # type: ignore
                         "Tōkyō & more")
        case.assertEqual(itemIds(message.xml), ["d0"])
        digest = await self.clients["subscriber"].waitForMessage(
            lambda m: m.xml.find(q("event", NS_EVENT)) is not None, timeout=20
        )
        case.assertEqual(itemIds(digest.xml), ["d0", "d1", "d2"])
        case.assertEqual(subIds(digest.xml), [subid])
        case.assertEqual(len(digest.xml.findall(q("event", NS_EVENT))), 3)
        self.clients["subscriber"].messages.remove(digest)
        await self.assertNoEvent("subscriber", "digest", seconds=1.0)


class ProsodySubscriptionTests(SubscriptionScenarios, TestCase):
    """
    The subscription scenarios behind Prosody.
    """

    timeout = 180

    def serverFactory(self) -> ProsodyServer:  # type: ignore[override]
        return ProsodyServer(SERVICE, SECRET)


class EjabberdSubscriptionTests(SubscriptionScenarios, TestCase):
    """
    The subscription scenarios behind ejabberd.
    """

    timeout = 240

    def serverFactory(self) -> EjabberdServer:  # type: ignore[override]
        return EjabberdServer(SERVICE, SECRET)
