"""
End-to-end tests: Hermod run as C{twistd -n hermod} behind a real Prosody and a real ejabberd,
driven by slixmpp clients logged in as an owner, a publisher, a subscriber and an outsider.

Every test starts its own XMPP server and Hermod in temporary directories on free loopback
ports. The scenarios are written once (L{PubSubScenarios}) and run against both servers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from tests.servers.ejabberd import EjabberdServer
from tests.servers.hermod import HermodProcess
from tests.servers.prosody import ProsodyServer
from tests.xmppclient import Client, XMPPRequestError, connectClient

SERVICE = "pubsub.localhost"
SECRET = "integration-secret"
PASSWORD = "secret-pw"
USERS = ("owner", "publisher", "subscriber", "outsider")

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
NS_ATOM = "http://www.w3.org/2005/Atom"
NS_SHIM = "http://jabber.org/protocol/shim"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"

ENTRY = (
    f"<entry xmlns='{NS_ATOM}'><title>Tōkyō &amp; more</title>"
    "<link rel='alternate' href='https://example.org/a?x=1&amp;y=2'/>"
    "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><p>Hi</p></div></content>"
    "</entry>"
)


def q(tag: str, namespace: str) -> str:
    """
    The ElementTree name of C{tag} in C{namespace}.
    """
    return f"{{{namespace}}}{tag}"


def form(formType: str, fields: dict[str, str | list[str]], submit: str = "submit") -> str:
    """
    A data form as XML text.
    """
    parts = [f"<x xmlns='{NS_DATA}' type='{submit}'>",
             f"<field var='FORM_TYPE' type='hidden'><value>{formType}</value></field>"]
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                     + "</field>")
    parts.append("</x>")
    return "".join(parts)


def formValues(element: ET.Element | None) -> dict[str, list[str]]:
    """
    The values of the data form C{element}, by field name.
    """
    assert element is not None, "no data form"
    return {
        field.get("var", ""): [v.text or "" for v in field.findall(q("value", NS_DATA))]
        for field in element.findall(q("field", NS_DATA))
    }


def sleep(seconds: float) -> defer.Deferred[None]:
    """
    Wait without blocking the reactor.
    """
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


def _archiveResult(message: ET.Element, queryId: str) -> ET.Element | None:
    """
    The XEP-0313 C{<result/>} of C{message} for the query C{queryId}, if it is one.
    """
    found = message.find(q("result", NS_MAM))
    if found is not None and found.get("queryid") == queryId:
        return found
    return None


class PubSubScenarios:
    """
    XEP-0060 use cases, written once and run against each XMPP server.
    """

    serverFactory: Callable[[], Any]

    # -- the bed ------------------------------------------------------------------------------

    async def startBed(self, storagePath: str | None = None) -> None:
        """
        Start the XMPP server, register the users, start Hermod and log everyone in.
        """
        case: TestCase = self  # type: ignore[assignment]
        self.server = self.serverFactory()
        self.server.start()
        case.addCleanup(self.server.stop)
        for user in USERS:
            self.server.register(user, PASSWORD)
        self.workdir = tempfile.mkdtemp(prefix="hermod-it-")
        case.addCleanup(shutil.rmtree, self.workdir, True)
        self.storagePath = storagePath or os.path.join(self.workdir, "hermod.sqlite")
        await self.startHermod()
        self.clients: dict[str, Client] = {}
        for user in USERS:
            await self.login(user)
        await self.waitForService()

    async def startHermod(self) -> None:
        """
        Start Hermod on the bed's SQLite file.
        """
        case: TestCase = self  # type: ignore[assignment]
        self.hermod = HermodProcess(
            {
                "component": {
                    "jid": SERVICE,
                    "server": f"tcp:host=127.0.0.1:port={self.server.componentPort}",
                },
                "storage": {"engine": "sqlite", "path": self.storagePath},
                "pubsub": {"max_payload_size": 20000},
            },
            workdir=self.workdir,
            secret=SECRET,
        )
        self.hermod.start()
        case.addCleanup(self.hermod.stop)

    async def login(self, user: str) -> Client:
        """
        Log C{user} in (again) and remember its client.
        """
        case: TestCase = self  # type: ignore[assignment]
        client = await connectClient(
            f"{user}@{self.server.domain}/test", PASSWORD, "127.0.0.1", self.server.c2sPort
        )
        case.addCleanup(client.disconnect)
        self.clients[user] = client
        return client

    async def waitForService(self, timeout: float = 30.0) -> None:
        """
        Wait until Hermod answers disco#info through the server.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.clients["owner"].iq(
                    f"<query xmlns='{NS_DISCO_INFO}'/>", to=SERVICE, type="get", timeout=2
                )
                return
            except (XMPPRequestError, TimeoutError, defer.TimeoutError) as e:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"Hermod did not answer within {timeout}s: {e}\n{self.hermod.logText()}"
                    )
            await sleep(0.3)

    def jid(self, user: str) -> str:
        """
        The full JID of C{user}'s test client.
        """
        return self.clients[user].jid

    def bare(self, user: str) -> str:
        """
        The bare JID of C{user}.
        """
        return f"{user}@{self.server.domain}"

    def pubsub(self, user: str, body: str, type: str = "set",
               namespace: str = NS_PUBSUB) -> defer.Deferred[ET.Element]:
        """
        Send a pubsub request from C{user}.
        """
        return self.clients[user].iq(
            f"<pubsub xmlns='{namespace}'>{body}</pubsub>", to=SERVICE, type=type
        )

    def owner(self, user: str, body: str, type: str = "set") -> defer.Deferred[ET.Element]:
        """
        Send a pubsub#owner request from C{user}.
        """
        return self.pubsub(user, body, type, NS_OWNER)

    async def assertError(
        self, request: defer.Deferred[Any], condition: str, pubsubCondition: str | None = None
    ) -> XMPPRequestError:
        """
        Assert that C{request} fails with the stanza condition and pubsub condition.
        """
        case: TestCase = self  # type: ignore[assignment]
        try:
            await request
        except XMPPRequestError as e:
            case.assertEqual((e.condition, e.pubsubCondition), (condition, pubsubCondition), str(e))
            return e
        case.fail(f"expected {condition}/{pubsubCondition}, got a result")
        raise AssertionError("unreachable")

    async def createNode(self, node: str, user: str = "owner", **config: str) -> None:
        """
        Create C{node} with C{pubsub#} options.
        """
        configure = "<configure/>"
        if config:
            configure = "<configure>" + form(
                NS_PUBSUB + "#node_config", {f"pubsub#{k}": v for k, v in config.items()}
            ) + "</configure>"
        await self.pubsub(user, f"<create node='{node}'/>{configure}")

    async def subscribe(self, node: str, user: str = "subscriber") -> ET.Element:
        """
        Subscribe C{user}'s full JID to C{node}; returns the <subscription/> element.
        """
        result = await self.pubsub(user, f"<subscribe node='{node}' jid='{self.jid(user)}'/>")
        subscription = result.find(f"{q('pubsub', NS_PUBSUB)}/{q('subscription', NS_PUBSUB)}")
        assert subscription is not None, ET.tostring(result)
        return subscription

    async def publish(self, node: str, itemId: str | None = None, payload: str = ENTRY,
                      user: str = "owner") -> str:
        """
        Publish one item; returns the item id the service stored.
        """
        attribute = f" id='{itemId}'" if itemId else ""
        result = await self.pubsub(
            user, f"<publish node='{node}'><item{attribute}>{payload}</item></publish>"
        )
        item = result.find(f".//{q('item', NS_PUBSUB)}")
        if item is not None:
            return item.get("id", "")
        assert itemId, "service returned no id for an item published without one"
        return itemId

    async def nextEvent(self, user: str, node: str, kind: str) -> ET.Element:
        """
        Wait for C{user}'s next pubsub event of C{kind} (items, purge, delete, ...) on C{node}.
        """

        def matches(message: Any) -> bool:
            event = message.xml.find(q("event", NS_EVENT))
            if event is None:
                return False
            child = event.find(q(kind, NS_EVENT))
            return child is not None and child.get("node") == node

        message = await self.clients[user].waitForMessage(matches, timeout=10)
        self.clients[user].messages.remove(message)
        return message.xml  # type: ignore[no-any-return]

    async def assertNoEvent(self, user: str, node: str, seconds: float = 1.0) -> None:
        """
        Assert that C{user} receives no event about C{node} within C{seconds}.
        """
        case: TestCase = self  # type: ignore[assignment]
        await sleep(seconds)
        for message in self.clients[user].messages:
            event = message.xml.find(q("event", NS_EVENT))
            if event is not None and any(c.get("node") == node for c in event):
                case.fail(f"unexpected event: {ET.tostring(message.xml).decode()}")

    # -- scenarios ----------------------------------------------------------------------------

    async def test_discovery(self) -> None:
        """
        disco#info names the pubsub service and its features; disco#items lists nodes and a
        node's items; a node's disco#info carries its meta-data.
        """
        await self.startBed()
        info = await self.clients["outsider"].iq(
            f"<query xmlns='{NS_DISCO_INFO}'/>", to=SERVICE, type="get"
        )
        query = info.find(q("query", NS_DISCO_INFO))
        identities = [(i.get("category"), i.get("type"))
                      for i in query.findall(q("identity", NS_DISCO_INFO))]
        self.assertIn(("pubsub", "service"), identities)  # type: ignore[attr-defined]
        features = {f.get("var") for f in query.findall(q("feature", NS_DISCO_INFO))}
        for feature in ("create-nodes", "publish", "subscribe", "retrieve-items", "purge-nodes",
                        "delete-nodes", "retract-items", "config-node", "modify-affiliations",
                        "manage-subscriptions", "instant-nodes", "persistent-items",
                        "publish-options", "subscription-options", "outcast-affiliation",
                        "member-affiliation", "access-authorize", "access-whitelist",
                        "access-open", "collections", "multi-collection", "multi-collections"):
            self.assertIn(f"{NS_PUBSUB}#{feature}", features)  # type: ignore[attr-defined]
        for absent in ("access-presence", "access-roster"):
            self.assertNotIn(f"{NS_PUBSUB}#{absent}", features)  # type: ignore[attr-defined]

        await self.createNode("princely_musings", title="Princely Musings")
        await self.publish("princely_musings", "ae890ac52d0df67ed7cfdf51b644e901")
        items = await self.clients["outsider"].iq(
            f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=SERVICE, type="get"
        )
        listed = [(i.get("jid"), i.get("node"), i.get("name"))
                  for i in items.iter(q("item", NS_DISCO_ITEMS))]
        self.assertIn((SERVICE, "princely_musings", "Princely Musings"), listed)  # type: ignore

        nodeItems = await self.clients["outsider"].iq(
            f"<query xmlns='{NS_DISCO_ITEMS}' node='princely_musings'/>", to=SERVICE, type="get"
        )
        names = [i.get("name") for i in nodeItems.iter(q("item", NS_DISCO_ITEMS))]
        self.assertEqual(names, ["ae890ac52d0df67ed7cfdf51b644e901"])  # type: ignore

        nodeInfo = await self.clients["outsider"].iq(
            f"<query xmlns='{NS_DISCO_INFO}' node='princely_musings'/>", to=SERVICE, type="get"
        )
        identity = nodeInfo.find(f".//{q('identity', NS_DISCO_INFO)}")
        self.assertEqual((identity.get("category"), identity.get("type")),  # type: ignore
                         ("pubsub", "leaf"))
        meta = formValues(nodeInfo.find(f".//{q('x', NS_DATA)}"))
        self.assertEqual(meta["FORM_TYPE"], [NS_PUBSUB + "#meta-data"])  # type: ignore
        self.assertEqual(meta["pubsub#title"], ["Princely Musings"])  # type: ignore
        self.assertIn(self.bare("owner"), meta["pubsub#owner"])  # type: ignore

        await self.assertError(
            self.clients["outsider"].iq(
                f"<query xmlns='{NS_DISCO_INFO}' node='nope'/>", to=SERVICE, type="get"
            ),
            "item-not-found",
        )

    async def test_createConfigureDelete(self) -> None:
        """
        Owners create named and instant nodes, read and change their configuration, and
        delete them with a redirect that subscribers receive.
        """
        await self.startBed()
        await self.createNode("news", access_model="open", max_items="5")
        await self.assertError(self.pubsub("owner", "<create node='news'/>"), "conflict")

        instant = await self.pubsub("owner", "<create/>")
        created = instant.find(f"{q('pubsub', NS_PUBSUB)}/{q('create', NS_PUBSUB)}")
        self.assertTrue(created is not None and created.get("node"))  # type: ignore

        default = await self.owner("owner", "<default/>", type="get")
        values = formValues(default.find(f".//{q('x', NS_DATA)}"))
        self.assertEqual(values["pubsub#access_model"], ["open"])  # type: ignore

        config = await self.owner("owner", "<configure node='news'/>", type="get")
        values = formValues(config.find(f".//{q('x', NS_DATA)}"))
        self.assertEqual(values["FORM_TYPE"], [NS_PUBSUB + "#node_config"])  # type: ignore
        self.assertEqual(values["pubsub#max_items"], ["5"])  # type: ignore

        await self.owner(
            "owner",
            "<configure node='news'>"
            + form(NS_PUBSUB + "#node_config", {"pubsub#title": "Court News",
                                                "pubsub#notify_config": "1"})
            + "</configure>",
        )
        config = await self.owner("owner", "<configure node='news'/>", type="get")
        values = formValues(config.find(f".//{q('x', NS_DATA)}"))
        self.assertEqual(values["pubsub#title"], ["Court News"])  # type: ignore
        await self.owner(
            "owner", f"<configure node='news'><x xmlns='{NS_DATA}' type='cancel'/></configure>"
        )
        await self.assertError(
            self.owner(
                "owner",
                "<configure node='news'>"
                + form(NS_PUBSUB + "#node_config", {"pubsub#access_model": "roster"})
                + "</configure>",
            ),
            "not-acceptable",
            "unsupported-access-model",
        )
        await self.assertError(
            self.owner("outsider", "<configure node='news'/>", type="get"), "forbidden"
        )

        await self.subscribe("news")
        await self.owner(
            "owner",
            "<configure node='news'>"
            + form(NS_PUBSUB + "#node_config", {"pubsub#description": "All the news"})
            + "</configure>",
        )
        await self.nextEvent("subscriber", "news", "configuration")

        await self.assertError(self.owner("outsider", "<delete node='news'/>"), "forbidden")
        await self.owner(
            "owner",
            "<delete node='news'><redirect uri='xmpp:pubsub.localhost?;node=archive'/></delete>",
        )
        event = await self.nextEvent("subscriber", "news", "delete")
        redirect = event.find(f".//{q('redirect', NS_EVENT)}")
        self.assertEqual(redirect.get("uri"), "xmpp:pubsub.localhost?;node=archive")  # type: ignore
        await self.assertError(
            self.owner("owner", "<configure node='news'/>", type="get"), "item-not-found"
        )

    async def test_publishAndRetrieve(self) -> None:
        """
        A publisher's items reach every subscriber with their payload, and can be retrieved,
        retracted (with notify) and purged.
        """
        await self.startBed()
        await self.createNode("feed")
        await self.owner(
            "owner",
            f"<affiliations node='feed'><affiliation jid='{self.bare('publisher')}' "
            "affiliation='publisher'/></affiliations>",
        )
        subscription = await self.subscribe("feed")
        self.assertEqual(subscription.get("subscription"), "subscribed")  # type: ignore
        self.assertTrue(subscription.get("subid"))  # type: ignore

        await self.publish("feed", "one", user="publisher")
        event = await self.nextEvent("subscriber", "feed", "items")
        item = event.find(f".//{q('item', NS_EVENT)}")
        self.assertEqual(item.get("id"), "one")  # type: ignore
        entry = item.find(q("entry", NS_ATOM))  # type: ignore
        self.assertEqual(entry.find(q("title", NS_ATOM)).text, "Tōkyō & more")  # type: ignore
        self.assertEqual(
            entry.find(q("link", NS_ATOM)).get("href"),  # type: ignore
            "https://example.org/a?x=1&y=2",
        )

        generated = await self.publish("feed", None, user="publisher")
        self.assertTrue(generated)  # type: ignore
        await self.nextEvent("subscriber", "feed", "items")

        several = await self.pubsub(
            "publisher",
            "<publish node='feed'>"
            + "".join(f"<item id='batch{n}'>{ENTRY}</item>" for n in range(3))
            + "</publish>",
        )
        self.assertEqual(  # type: ignore
            [i.get("id") for i in several.iter(q("item", NS_PUBSUB))],
            ["batch0", "batch1", "batch2"],
        )
        event = await self.nextEvent("subscriber", "feed", "items")
        self.assertEqual(  # type: ignore
            [i.get("id") for i in event.iter(q("item", NS_EVENT))],
            ["batch0", "batch1", "batch2"],
        )

        await self.assertError(
            self.pubsub("outsider", f"<publish node='feed'><item>{ENTRY}</item></publish>"),
            "forbidden",
        )
        await self.assertError(
            self.pubsub("owner", f"<publish node='missing'><item>{ENTRY}</item></publish>"),
            "item-not-found",
        )

        everything = await self.pubsub("subscriber", "<items node='feed'/>", type="get")
        ids = [i.get("id") for i in everything.iter(q("item", NS_PUBSUB))]
        self.assertEqual(len(ids), 5)  # type: ignore
        latest = await self.pubsub("subscriber", "<items node='feed' max_items='2'/>", type="get")
        self.assertEqual(  # type: ignore
            [i.get("id") for i in latest.iter(q("item", NS_PUBSUB))], ["batch2", "batch1"]
        )
        byId = await self.pubsub(
            "subscriber", "<items node='feed'><item id='one'/></items>", type="get"
        )
        [one] = list(byId.iter(q("item", NS_PUBSUB)))
        self.assertIsNotNone(one.find(q("entry", NS_ATOM)))  # type: ignore

        await self.pubsub("publisher", "<retract node='feed' notify='true'><item id='one'/></retract>")
        event = await self.nextEvent("subscriber", "feed", "items")
        self.assertEqual(event.find(f".//{q('retract', NS_EVENT)}").get("id"), "one")  # type: ignore
        await self.assertError(
            self.pubsub("publisher", "<retract node='feed'><item id='one'/></retract>"),
            "item-not-found",
        )

        await self.owner("owner", "<purge node='feed'/>")
        await self.nextEvent("subscriber", "feed", "purge")
        empty = await self.pubsub("subscriber", "<items node='feed'/>", type="get")
        self.assertEqual(list(empty.iter(q("item", NS_PUBSUB))), [])  # type: ignore

    async def test_subscriptionErrors(self) -> None:
        """
        The XEP-0060 subscribe and unsubscribe error cases, whitelist membership and outcasts.
        """
        await self.startBed()
        await self.createNode("open")
        await self.assertError(
            self.pubsub("subscriber", f"<subscribe node='open' jid='{self.jid('outsider')}'/>"),
            "bad-request", "invalid-jid",
        )
        await self.assertError(
            self.pubsub("subscriber", f"<subscribe node='nope' jid='{self.jid('subscriber')}'/>"),
            "item-not-found",
        )
        await self.assertError(
            self.pubsub("subscriber",
                        f"<unsubscribe node='open' jid='{self.jid('subscriber')}'/>"),
            "unexpected-request", "not-subscribed",
        )
        subscription = await self.subscribe("open")
        await self.assertError(
            self.pubsub("subscriber", f"<unsubscribe node='open' jid='{self.jid('subscriber')}'"
                        " subid='wrong'/>"),
            "not-acceptable", "invalid-subid",
        )
        await self.pubsub(
            "subscriber",
            f"<unsubscribe node='open' jid='{self.jid('subscriber')}' "
            f"subid='{subscription.get('subid')}'/>",
        )

        await self.createNode("club", access_model="whitelist")
        await self.assertError(
            self.pubsub("subscriber", f"<subscribe node='club' jid='{self.jid('subscriber')}'/>"),
            "not-allowed", "closed-node",
        )
        await self.assertError(
            self.pubsub("subscriber", "<items node='club'/>", type="get"),
            "not-allowed", "closed-node",
        )
        await self.owner(
            "owner",
            f"<affiliations node='club'><affiliation jid='{self.bare('subscriber')}' "
            f"affiliation='member'/><affiliation jid='{self.bare('outsider')}' "
            "affiliation='outcast'/></affiliations>",
        )
        await self.subscribe("club")
        await self.assertError(
            self.pubsub("outsider", f"<subscribe node='club' jid='{self.jid('outsider')}'/>"),
            "forbidden",
        )
        affiliations = await self.owner("owner", "<affiliations node='club'/>", type="get")
        found = {a.get("jid"): a.get("affiliation")
                 for a in affiliations.iter(q("affiliation", NS_OWNER))}
        self.assertEqual(found, {self.bare("owner"): "owner",  # type: ignore
                                 self.bare("subscriber"): "member",
                                 self.bare("outsider"): "outcast"})

        mine = await self.pubsub("subscriber", "<subscriptions/>", type="get")
        nodes = [s.get("node") for s in mine.iter(q("subscription", NS_PUBSUB))]
        self.assertEqual(nodes, ["club"])  # type: ignore
        affs = await self.pubsub("subscriber", "<affiliations/>", type="get")
        self.assertEqual(  # type: ignore
            [(a.get("node"), a.get("affiliation")) for a in affs.iter(q("affiliation", NS_PUBSUB))],
            [("club", "member")],
        )

    async def test_authorizeModel(self) -> None:
        """
        On an authorize node a subscription waits; the owner gets an approval form, approves
        it, and the subscriber is told and can read.
        """
        await self.startBed()
        await self.createNode("private", access_model="authorize")
        subscription = await self.subscribe("private")
        self.assertEqual(subscription.get("subscription"), "pending")  # type: ignore
        request = await self.clients["owner"].waitForMessage(
            lambda m: m.xml.find(q("x", NS_DATA)) is not None, timeout=10
        )
        values = formValues(request.xml.find(q("x", NS_DATA)))
        self.assertEqual(values["FORM_TYPE"], [NS_PUBSUB + "#subscribe_authorization"])  # type: ignore
        self.assertEqual(values["pubsub#node"], ["private"])  # type: ignore
        self.assertEqual(values["pubsub#subscriber_jid"], [self.jid("subscriber")])  # type: ignore
        await self.assertError(
            self.pubsub("subscriber", "<items node='private'/>", type="get"),
            "not-authorized", "not-subscribed",
        )
        pending = await self.owner("owner", "<subscriptions node='private'/>", type="get")
        self.assertEqual(  # type: ignore
            [s.get("subscription") for s in pending.iter(q("subscription", NS_OWNER))],
            ["pending"],
        )
        answer = {f: v[0] for f, v in values.items() if f != "FORM_TYPE" and v}
        answer["pubsub#allow"] = "true"
        self.clients["owner"].send(
            f"<message to='{SERVICE}'>"
            + form(NS_PUBSUB + "#subscribe_authorization", answer)
            + "</message>"
        )
        await self.nextEvent("subscriber", "private", "subscription")
        await self.pubsub("subscriber", "<items node='private'/>", type="get")

    async def test_ownerManagesSubscriptions(self) -> None:
        """
        An owner lists and changes subscriptions; the subscriber is told of the change.
        """
        await self.startBed()
        await self.createNode("managed")
        await self.subscribe("managed")
        listed = await self.owner("owner", "<subscriptions node='managed'/>", type="get")
        entries = [(s.get("jid"), s.get("subscription"))
                   for s in listed.iter(q("subscription", NS_OWNER))]
        self.assertEqual(entries, [(self.jid("subscriber"), "subscribed")])  # type: ignore
        await self.owner(
            "owner",
            f"<subscriptions node='managed'><subscription jid='{self.jid('subscriber')}' "
            "subscription='none'/></subscriptions>",
        )
        await self.nextEvent("subscriber", "managed", "subscription")
        listed = await self.owner("owner", "<subscriptions node='managed'/>", type="get")
        self.assertEqual(list(listed.iter(q("subscription", NS_OWNER))), [])  # type: ignore
        await self.assertError(
            self.owner("outsider", "<subscriptions node='managed'/>", type="get"), "forbidden"
        )

    async def test_subscriptionOptions(self) -> None:
        """
        A subscriber reads its options form and turns delivery off and on again.
        """
        await self.startBed()
        await self.createNode("opts")
        await self.subscribe("opts")
        me = self.jid("subscriber")
        options = await self.pubsub("subscriber", f"<options node='opts' jid='{me}'/>", type="get")
        values = formValues(options.find(f".//{q('x', NS_DATA)}"))
        self.assertEqual(values["FORM_TYPE"], [NS_PUBSUB + "#subscribe_options"])  # type: ignore
        self.assertIn(values["pubsub#deliver"], (["1"], ["true"]))  # type: ignore
        await self.pubsub(
            "subscriber",
            f"<options node='opts' jid='{me}'>"
            + form(NS_PUBSUB + "#subscribe_options", {"pubsub#deliver": "0"})
            + "</options>",
        )
        await self.publish("opts", "quiet")
        await self.assertNoEvent("subscriber", "opts")
        await self.pubsub(
            "subscriber",
            f"<options node='opts' jid='{me}'>"
            + form(NS_PUBSUB + "#subscribe_options", {"pubsub#deliver": "1"})
            + "</options>",
        )
        await self.publish("opts", "loud")
        event = await self.nextEvent("subscriber", "opts", "items")
        self.assertEqual(event.find(f".//{q('item', NS_EVENT)}").get("id"), "loud")  # type: ignore
        await self.assertError(
            self.pubsub(
                "subscriber",
                f"<options node='opts' jid='{me}'>"
                + form(NS_PUBSUB + "#subscribe_options", {"pubsub#bogus": "1"})
                + "</options>",
            ),
            "bad-request", "invalid-options",
        )

    async def test_publishOptionsAndLimits(self) -> None:
        """
        Publish-options preconditions, the payload size limit and max_items are enforced.
        """
        await self.startBed()
        await self.createNode("limited", max_items="2", max_payload_size="1000")
        options = (
            "<publish-options>"
            + form(NS_PUBSUB + "#publish-options", {"pubsub#access_model": "open"})
            + "</publish-options>"
        )
        await self.pubsub("owner", f"<publish node='limited'><item id='a'>{ENTRY}</item>"
                                   f"</publish>{options}")
        wrong = options.replace(">open<", ">whitelist<")
        await self.assertError(
            self.pubsub("owner", f"<publish node='limited'><item id='b'>{ENTRY}</item>"
                                 f"</publish>{wrong}"),
            "conflict", "precondition-not-met",
        )
        big = f"<blob xmlns='urn:example:blob'>{'x' * 2000}</blob>"
        await self.assertError(
            self.pubsub("owner", f"<publish node='limited'><item>{big}</item></publish>"),
            "not-acceptable", "payload-too-big",
        )
        for name in ("b", "c", "d"):
            await self.publish("limited", name)
        items = await self.pubsub("owner", "<items node='limited'/>", type="get")
        self.assertEqual(  # type: ignore
            sorted(i.get("id") for i in items.iter(q("item", NS_PUBSUB))), ["c", "d"]
        )

    async def test_sendLastPublishedItem(self) -> None:
        """
        With send_last_published_item on_sub, a new subscriber gets the last item at once.
        """
        await self.startBed()
        await self.createNode("last", send_last_published_item="on_sub")
        await self.publish("last", "first")
        await self.publish("last", "latest")
        await self.subscribe("last")
        event = await self.nextEvent("subscriber", "last", "items")
        self.assertEqual(  # type: ignore
            [i.get("id") for i in event.iter(q("item", NS_EVENT))], ["latest"]
        )

    async def test_badRequests(self) -> None:
        """
        Unimplemented features and malformed requests get precise errors, not silence.
        """
        await self.startBed()
        await self.createNode("strict")
        error = await self.assertError(
            self.pubsub("owner", "<create node='c'/><configure>"
                       + form(NS_PUBSUB + "#node_config", {"pubsub#node_type": "tree"})
                       + "</configure>"),
            "not-acceptable",
        )
        self.assertIsNotNone(error.stanza)  # type: ignore
        await self.assertError(
            self.pubsub("owner", "<publish node='strict'/>"), "bad-request", "item-required"
        )
        await self.assertError(
            self.pubsub("owner", "<publish node='strict'><item id='x'/></publish>"),
            "bad-request", "payload-required",
        )
        await self.assertError(
            self.pubsub("owner", "<retract node='strict'/>"), "bad-request", "item-required"
        )
        await self.assertError(
            self.pubsub("owner", "<items/>", type="get"), "bad-request", "nodeid-required"
        )

    async def test_slixmppPluginClient(self) -> None:
        """
        slixmpp's own XEP-0060 API (its stanzas, not ours) works end to end.
        """
        await self.startBed()
        owner = self.clients["owner"]
        subscriber = self.clients["subscriber"]
        await owner.run(owner.pubsub.create_node(SERVICE, "slix"))
        await subscriber.run(subscriber.pubsub.subscribe(SERVICE, "slix"))
        payload = ET.fromstring(ENTRY)
        await owner.run(owner.pubsub.publish(SERVICE, "slix", id="s1", payload=payload))
        event = await self.nextEvent("subscriber", "slix", "items")
        self.assertEqual(event.find(f".//{q('item', NS_EVENT)}").get("id"), "s1")  # type: ignore
        result = await subscriber.run(subscriber.pubsub.get_items(SERVICE, "slix"))
        ids = [item["id"] for item in result["pubsub"]["items"]]
        self.assertEqual(ids, ["s1"])  # type: ignore
        await owner.run(owner.pubsub.delete_node(SERVICE, "slix"))

    async def test_restartLosesNothing(self) -> None:
        """
        After Hermod restarts on the same database, nodes, items, affiliations and
        subscriptions are all still there and notifications flow.
        """
        await self.startBed()
        await self.createNode("durable", access_model="whitelist")
        await self.owner(
            "owner",
            f"<affiliations node='durable'><affiliation jid='{self.bare('subscriber')}' "
            "affiliation='member'/></affiliations>",
        )
        await self.subscribe("durable")
        await self.publish("durable", "before")
        await self.nextEvent("subscriber", "durable", "items")

        self.hermod.stop()
        self.hermod.start()
        await self.waitForService()

        items = await self.pubsub("subscriber", "<items node='durable'/>", type="get")
        self.assertEqual(  # type: ignore
            [i.get("id") for i in items.iter(q("item", NS_PUBSUB))], ["before"]
        )
        affiliations = await self.owner("owner", "<affiliations node='durable'/>", type="get")
        self.assertIn(  # type: ignore
            (self.bare("subscriber"), "member"),
            [(a.get("jid"), a.get("affiliation"))
             for a in affiliations.iter(q("affiliation", NS_OWNER))],
        )
        await self.publish("durable", "after")
        event = await self.nextEvent("subscriber", "durable", "items")
        self.assertEqual(event.find(f".//{q('item', NS_EVENT)}").get("id"), "after")  # type: ignore

    async def test_reconnectAfterServerRestart(self) -> None:
        """
        When the XMPP server restarts, Hermod reconnects by itself and serves again.
        """
        await self.startBed()
        await self.createNode("resilient")
        self.server.restart()
        for user in ("owner", "subscriber"):
            await self.login(user)
        await self.waitForService(timeout=60)
        await self.subscribe("resilient")
        await self.publish("resilient", "back")
        event = await self.nextEvent("subscriber", "resilient", "items")
        self.assertEqual(event.find(f".//{q('item', NS_EVENT)}").get("id"), "back")  # type: ignore
        self.assertIn("reconnect", self.hermod.logText().lower())  # type: ignore


    # -- catch-up: XEP-0313 archives of nodes and XEP-0059 paging (issue 3) ---------------------

    async def archivePage(
        self, user: str, node: str, rsm: str, queryId: str, formXML: str = ""
    ) -> tuple[list[tuple[str, str, str]], ET.Element]:
        """
        One archive query of C{node} by C{user}: the C{(archive id, kind, item id or node)} of
        each result, in the order received, and the C{<fin/>}.
        """
        client = self.clients[user]
        result = await client.iq(
            f"<query xmlns='{NS_MAM}' queryid='{queryId}' node='{node}'>{formXML}"
            f"<set xmlns='{NS_RSM}'>{rsm}</set></query>",
            to=SERVICE, type="set", timeout=30,
        )
        fin = result.find(q("fin", NS_MAM))
        assert fin is not None, ET.tostring(result)
        last = fin.findtext(f"{q('set', NS_RSM)}/{q('last', NS_RSM)}")
        if last is not None:  # results travel ahead of the IQ result; wait for the page's end
            await client.waitForMessage(
                lambda m: _archiveResult(m.xml, queryId) is not None
                and _archiveResult(m.xml, queryId).get("id") == last,  # type: ignore[union-attr]
                timeout=30,
            )
        page = []
        for message in list(client.messages):
            found = _archiveResult(message.xml, queryId)
            if found is None:
                continue
            client.messages.remove(message)
            event = found.find(
                f"{q('forwarded', NS_FORWARD)}/{{jabber:client}}message/{q('event', NS_EVENT)}"
            )
            assert event is not None, ET.tostring(message.xml)
            action = event[0]
            child = action[0] if len(action) else None
            if child is not None:
                page.append((found.get("id", ""), child.tag.split("}")[1], child.get("id", "")))
            else:
                page.append((found.get("id", ""), action.tag.split("}")[1], action.get("node", "")))
        return page, fin

    async def test_offlineSubscriberCatchesUpThroughTheArchive(self) -> None:
        """
        A subscriber notes the archive's newest id and goes offline; 1,000 items are
        published, 100 of them retracted, then the node is purged. Back online, it pages the
        archive after its mark and gets exactly the missed events, in order, each once, the
        last page marked complete; a trimmed or unknown mark is item-not-found.
        """
        await self.startBed()
        await self.createNode("catchup", max_items="max")
        await self.subscribe("catchup")
        await self.publish("catchup", "seen")
        await self.nextEvent("subscriber", "catchup", "items")
        features = await self.clients["subscriber"].iq(
            f"<query xmlns='{NS_DISCO_INFO}' node='catchup'/>", to=SERVICE, type="get"
        )
        self.assertIn(  # type: ignore
            NS_MAM, [f.get("var") for f in features.iter(q("feature", NS_DISCO_INFO))]
        )
        page, fin = await self.archivePage("subscriber", "catchup", "<max>1</max><before/>", "m")
        self.assertEqual([p[1:] for p in page], [("item", "seen")])  # type: ignore
        mark = page[0][0]
        await self.clients["subscriber"].disconnect()

        for n in range(1000):
            await self.publish("catchup", f"i{n}", f"<n xmlns='urn:example:n'>{n}</n>")
        for start in range(0, 100, 10):
            ids = "".join(f"<item id='i{n}'/>" for n in range(start, start + 10))
            await self.pubsub("owner", f"<retract node='catchup'>{ids}</retract>")
        await self.owner("owner", "<purge node='catchup'/>")
        expected = (
            [("item", f"i{n}") for n in range(1000)]
            + [("retract", f"i{n}") for n in range(100)]
            + [("purge", "catchup")]
        )

        await self.login("subscriber")
        seen: list[tuple[str, str, str]] = []
        after = mark
        for pageNumber in range(20):
            page, fin = await self.archivePage(
                "subscriber", "catchup", f"<max>250</max><after>{after}</after>", f"p{pageNumber}"
            )
            seen += page
            self.assertEqual(  # type: ignore
                fin.findtext(f"{q('set', NS_RSM)}/{q('count', NS_RSM)}"), "1102"
            )
            if fin.get("complete") in ("true", "1"):
                break
            after = page[-1][0]
        self.assertEqual([p[1:] for p in seen], expected)  # type: ignore
        archiveIds = [int(p[0]) for p in seen]
        self.assertEqual(archiveIds, sorted(set(archiveIds)))  # type: ignore
        self.assertTrue(archiveIds[0] > int(mark))  # type: ignore

        await self.assertError(
            self.archivePage("subscriber", "catchup", "<after>123456789</after>", "bad"),
            "item-not-found",
        )
        await self.owner(
            "owner",
            "<configure node='catchup'>"
            + form(NS_PUBSUB + "#node_config", {"hermod#archive_max_events": "10"})
            + "</configure>",
        )
        await self.assertError(
            self.archivePage("subscriber", "catchup", f"<after>{mark}</after>", "trimmed"),
            "item-not-found",
        )

    async def test_itemPagesStableWhileItemsArrive(self) -> None:
        """
        Paging a node's items with RSM after the last id of each page visits every item that
        existed when paging began exactly once, newest first, while new items are published
        between the pages; disco#items pages the same way.
        """
        await self.startBed()
        await self.createNode("paged", max_items="max")
        for n in range(30):
            await self.publish("paged", f"i{n:02d}")
        seen: list[str] = []
        after = ""
        published = 30
        for extra in range(10):
            rsm = "<max>7</max>" + (f"<after>{after}</after>" if after else "")
            result = await self.pubsub(
                "subscriber", f"<items node='paged'/><set xmlns='{NS_RSM}'>{rsm}</set>", type="get"
            )
            ids = [i.get("id", "") for i in result.iter(q("item", NS_PUBSUB))]
            if not ids:
                break
            seen += ids
            after = ids[-1]
            await self.publish("paged", f"new{extra}")
            published += 1
        self.assertEqual(seen, [f"i{n:02d}" for n in reversed(range(30))])  # type: ignore

        result = await self.clients["subscriber"].iq(
            f"<query xmlns='{NS_DISCO_ITEMS}' node='paged'><set xmlns='{NS_RSM}'><max>3</max>"
            "<after>i05</after></set></query>", to=SERVICE, type="get",
        )
        self.assertEqual(  # type: ignore
            [i.get("name") for i in result.iter(q("item", NS_DISCO_ITEMS))],
            ["i04", "i03", "i02"],
        )
        count = result.findtext(f"{q('query', NS_DISCO_ITEMS)}/{q('set', NS_RSM)}/{q('count', NS_RSM)}")
        self.assertEqual(count, str(published))  # type: ignore

    async def test_headerFiltersDeliverOnlyMatchingItems(self) -> None:
        """
        A subscriber filtering on C{built_by=johnp} gets only the items whose SHIM headers
        match, with the headers in the message; an unfiltered subscriber gets every item.
        """
        await self.startBed()
        await self.createNode("koji")
        await self.subscribe("koji")
        await self.subscribe("koji", user="outsider")
        me = self.jid("subscriber")
        await self.pubsub(
            "subscriber",
            f"<options node='koji' jid='{me}'>"
            + form(NS_PUBSUB + "#subscribe_options", {"hermod#header_filter": ["built_by=johnp"]})
            + "</options>",
        )
        for itemId, builder in (("r1", "ralph"), ("j1", "johnp"), ("r2", "ralph")):
            await self.publish(
                "koji",
                itemId,
                ENTRY + f"<headers xmlns='{NS_SHIM}'><header name='built_by'>{builder}</header>"
                "<header name='topic'>org.fedoraproject.koji.build</header></headers>",
            )
        message = await self.nextEvent("subscriber", "koji", "items")
        self.assertEqual(  # type: ignore[attr-defined]
            [i.get("id") for i in message.iter(q("item", NS_EVENT))], ["j1"]
        )
        headers = [(h.get("name"), h.text) for h in message.iter(q("header", NS_SHIM))]
        self.assertEqual(  # type: ignore[attr-defined]
            headers, [("built_by", "johnp"), ("topic", "org.fedoraproject.koji.build")]
        )
        await self.assertNoEvent("subscriber", "koji")
        # Headers given as publish-options (hermod#headers) select the same way.
        options = (
            "<publish-options>"
            + form(NS_PUBSUB + "#publish-options", {"hermod#headers": ["built_by=johnp"]})
            + "</publish-options>"
        )
        await self.pubsub(
            "owner", f"<publish node='koji'><item id='j2'>{ENTRY}</item></publish>{options}"
        )
        message = await self.nextEvent("subscriber", "koji", "items")
        self.assertEqual(  # type: ignore[attr-defined]
            [i.get("id") for i in message.iter(q("item", NS_EVENT))], ["j2"]
        )
        self.assertEqual(  # type: ignore[attr-defined]
            [(h.get("name"), h.text) for h in message.iter(q("header", NS_SHIM))],
            [("built_by", "johnp")],
        )
        seen = []
        for _ in range(4):
            message = await self.nextEvent("outsider", "koji", "items")
            seen += [i.get("id") for i in message.iter(q("item", NS_EVENT))]
        self.assertEqual(seen, ["r1", "j1", "r2", "j2"])  # type: ignore[attr-defined]

    async def test_jsonRequiredRejectsXML(self) -> None:
        """
        A node with C{hermod#payload_format} json refuses an XML payload (bad-request,
        invalid-payload) and stores and delivers a XEP-0335 JSON payload untouched.
        """
        await self.startBed()
        configure = "<configure>" + form(
            NS_PUBSUB + "#node_config", {"hermod#payload_format": "json"}
        ) + "</configure>"
        await self.pubsub("owner", f"<create node='signals'/>{configure}")
        await self.subscribe("signals")
        await self.assertError(
            self.pubsub("owner", f"<publish node='signals'><item id='x'>{ENTRY}</item></publish>"),
            "bad-request", "invalid-payload",
        )
        text = '{"build": 42, "owner": "johnp", "note": "a < b & c"}'
        escaped = text.replace("&", "&amp;").replace("<", "&lt;")
        await self.publish("signals", "j", f"<json xmlns='urn:xmpp:json:0'>{escaped}</json>")
        message = await self.nextEvent("subscriber", "signals", "items")
        self.assertEqual(  # type: ignore[attr-defined]
            [i.get("id") for i in message.iter(q("item", NS_EVENT))], ["j"]
        )
        delivered = message.find(f".//{q('json', 'urn:xmpp:json:0')}")
        assert delivered is not None
        self.assertEqual(json.loads(delivered.text or ""), json.loads(text))  # type: ignore
        items = await self.pubsub("owner", "<items node='signals'/>", type="get")
        stored = items.find(f".//{q('json', 'urn:xmpp:json:0')}")
        assert stored is not None
        self.assertEqual(stored.text, delivered.text)  # type: ignore[attr-defined]


    async def test_collectionSubscriberReceivesFromThreeLevels(self) -> None:
        """
        A depth C{all} subscriber of collection C{/tree} gets the items of leaves one, two and
        three levels below it, each with a SHIM C{Collection} header naming C{/tree}; a depth
        1 subscriber only those of the direct child.
        """
        await self.startBed()
        await self.createNode("/tree", node_type="collection")
        leaves = ("/tree/one", "/tree/two/leaf", "/tree/two/three/leaf")
        for leaf in leaves:
            await self.createNode(leaf)
        me = self.jid("subscriber")
        await self.pubsub(
            "subscriber",
            f"<subscribe node='/tree' jid='{me}'/><options>"
            + form(NS_PUBSUB + "#subscribe_options", {
                "pubsub#subscription_type": "items", "pubsub#subscription_depth": "all",
            })
            + "</options>",
        )
        await self.subscribe("/tree", user="outsider")
        for n, leaf in enumerate(leaves):
            await self.publish(leaf, f"i{n}")
        for n, leaf in enumerate(leaves):
            message = await self.nextEvent("subscriber", leaf, "items")
            self.assertEqual(  # type: ignore[attr-defined]
                [i.get("id") for i in message.iter(q("item", NS_EVENT))], [f"i{n}"]
            )
            self.assertEqual(  # type: ignore[attr-defined]
                [(h.get("name"), h.text) for h in message.iter(q("header", NS_SHIM))],
                [("Collection", "/tree")],
            )
        message = await self.nextEvent("outsider", "/tree/one", "items")
        self.assertIsNotNone(message.find(f".//{q('item', NS_EVENT)}"))  # type: ignore
        for leaf in leaves[1:]:
            await self.assertNoEvent("outsider", leaf, seconds=0.5)

    async def subscribeWith(self, node: str, user: str = "subscriber", **options: str) -> None:
        """
        Subscribe C{user}'s full JID to C{node} with C{pubsub#} subscription options.
        """
        me = self.jid(user)
        await self.pubsub(
            user,
            f"<subscribe node='{node}' jid='{me}'/><options>"
            + form(NS_PUBSUB + "#subscribe_options",
                   {f"pubsub#{k}": v for k, v in options.items()})
            + "</options>",
        )

    async def test_nodesSubscriberToldOfNodesBelow(self) -> None:
        """
        A C{nodes} subscriber (depth all) of C{/a} gets an associate event when C{/a/b/c} is
        created and a dissociate event (XEP-0248 spelling) when it is deleted; an items subscriber gets neither,
        and the nodes subscriber no items.
        """
        await self.startBed()
        await self.createNode("/a", node_type="collection")
        await self.subscribeWith(
            "/a", subscription_type="nodes", subscription_depth="all"
        )
        await self.subscribeWith(
            "/a", user="outsider", subscription_type="items", subscription_depth="all"
        )
        await self.createNode("/a/b/c")
        message = await self.nextEvent("subscriber", "/a", "collection")
        associate = message.find(f".//{q('associate', NS_EVENT)}")
        assert associate is not None, ET.tostring(message)
        self.assertEqual(associate.get("node"), "/a/b/c")  # type: ignore[attr-defined]
        await self.publish("/a/b/c", "i1")
        await self.nextEvent("outsider", "/a/b/c", "items")
        await self.owner("owner", "<delete node='/a/b/c'/>")
        message = await self.nextEvent("subscriber", "/a", "collection")
        dissociate = message.find(f".//{q('dissociate', NS_EVENT)}")
        assert dissociate is not None, ET.tostring(message)
        self.assertEqual(dissociate.get("node"), "/a/b/c")  # type: ignore[attr-defined]
        await self.assertNoEvent("subscriber", "/a/b/c", seconds=0.5)
        await self.assertNoEvent("outsider", "/a", seconds=0.5)

    async def test_associatedLeafDeliversToCollection(self) -> None:
        """
        A leaf associated through C{pubsub#collection} with a collection elsewhere in the tree
        delivers its items to that collection's items subscriber with the Collection header;
        the collection's configuration form lists it in C{pubsub#children}; an unknown or leaf
        collection is refused.
        """
        await self.startBed()
        await self.createNode("/feeds", node_type="collection")
        await self.createNode("/elsewhere/leaf", collection="/feeds")
        await self.subscribeWith("/feeds", subscription_type="items")
        await self.publish("/elsewhere/leaf", "i1")
        message = await self.nextEvent("subscriber", "/elsewhere/leaf", "items")
        self.assertEqual(  # type: ignore[attr-defined]
            [i.get("id") for i in message.iter(q("item", NS_EVENT))], ["i1"]
        )
        self.assertEqual(  # type: ignore[attr-defined]
            [(h.get("name"), h.text) for h in message.iter(q("header", NS_SHIM))],
            [("Collection", "/feeds")],
        )
        result = await self.owner("owner", "<configure node='/feeds'/>", type="get")
        values = formValues(result.find(f".//{q('x', NS_DATA)}"))
        self.assertEqual(values["pubsub#children"], ["/elsewhere/leaf"])  # type: ignore
        await self.assertError(
            self.owner(
                "owner",
                "<configure node='/elsewhere/leaf'>"
                + form(NS_PUBSUB + "#node_config", {"pubsub#collection": "/nope"})
                + "</configure>",
            ),
            "item-not-found",
        )
        await self.assertError(
            self.owner(
                "owner",
                "<configure node='/feeds'>"
                + form(NS_PUBSUB + "#node_config", {"pubsub#collection": "/elsewhere/leaf"})
                + "</configure>",
            ),
            "not-allowed", "invalid-options",
        )

    async def test_discoItemsOfCollection(self) -> None:
        """
        disco#items of a collection lists the nodes one level below it and those associated
        with it, paged with RSM.
        """
        await self.startBed()
        await self.createNode("/dir", node_type="collection")
        for name in ("/dir/a", "/dir/b", "/dir/b/deeper"):
            await self.createNode(name)
        await self.createNode("/other", collection="/dir")
        result = await self.clients["outsider"].iq(
            f"<query xmlns='{NS_DISCO_ITEMS}' node='/dir'/>", to=SERVICE, type="get"
        )
        self.assertEqual(  # type: ignore[attr-defined]
            [(i.get("jid"), i.get("node")) for i in result.iter(q("item", NS_DISCO_ITEMS))],
            [(SERVICE, "/dir/a"), (SERVICE, "/dir/b"), (SERVICE, "/other")],
        )
        result = await self.clients["outsider"].iq(
            f"<query xmlns='{NS_DISCO_ITEMS}' node='/dir'><set xmlns='{NS_RSM}'><max>1</max>"
            "<after>/dir/a</after></set></query>", to=SERVICE, type="get",
        )
        self.assertEqual(  # type: ignore[attr-defined]
            [i.get("node") for i in result.iter(q("item", NS_DISCO_ITEMS))], ["/dir/b"]
        )
        self.assertEqual(  # type: ignore[attr-defined]
            result.findtext(f".//{q('count', NS_RSM)}"), "3"
        )

    async def test_archiveCarriesHeaders(self) -> None:
        """
        A MAM result forwards a publish with the SHIM headers its publisher attached, as the
        live notification carried them.
        """
        await self.startBed()
        await self.createNode("signals")
        await self.subscribe("signals")
        await self.publish(
            "signals", "h1",
            ENTRY + f"<headers xmlns='{NS_SHIM}'><header name='built_by'>johnp</header>"
            "<header name='topic'>org.fedoraproject.koji.build</header></headers>",
        )
        live = await self.nextEvent("subscriber", "signals", "items")
        liveHeaders = [(h.get("name"), h.text) for h in live.iter(q("header", NS_SHIM))]
        self.assertEqual(  # type: ignore[attr-defined]
            liveHeaders, [("built_by", "johnp"), ("topic", "org.fedoraproject.koji.build")]
        )
        client = self.clients["subscriber"]
        await client.iq(
            f"<query xmlns='{NS_MAM}' queryid='hq' node='signals'/>", to=SERVICE, type="set",
            timeout=30,
        )
        message = await client.waitForMessage(
            lambda m: _archiveResult(m.xml, "hq") is not None, timeout=30
        )
        forwarded = message.xml.find(
            f".//{q('forwarded', NS_FORWARD)}/{{jabber:client}}message"
        )
        assert forwarded is not None, ET.tostring(message.xml)
        self.assertEqual(  # type: ignore[attr-defined]
            [(h.get("name"), h.text) for h in forwarded.iter(q("header", NS_SHIM))], liveHeaders
        )
        self.assertEqual(  # type: ignore[attr-defined]
            [i.get("id") for i in forwarded.iter(q("item", NS_EVENT))], ["h1"]
        )


class ProsodyTests(PubSubScenarios, TestCase):
    """
    The scenarios behind Prosody.
    """

    timeout = 180

    def serverFactory(self) -> ProsodyServer:  # type: ignore[override]
        return ProsodyServer(SERVICE, SECRET)


class EjabberdTests(PubSubScenarios, TestCase):
    """
    The scenarios behind ejabberd.
    """

    timeout = 240

    def serverFactory(self) -> EjabberdServer:  # type: ignore[override]
        return EjabberdServer(SERVICE, SECRET)
