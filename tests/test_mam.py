"""
XEP-0313 archives of nodes and XEP-0059 paging, through the XMPP edge with the real policy on
the memory storage, driven by literal stanzas.
"""

from __future__ import annotations

import base64

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish

from hermod_component.config import PubSubSettings
from hermod_component.model import ArchivePage, ArchiveQuery
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import StubStreamManager
from hermod_component.xmpp.handler import makeHandlers
from hermod_component.xmpp.mam import (
    NS_MAM,
    NS_PAGES,
    NS_RSM,
    pageEvents,
    parseStamp,
    stamp,
)

SERVICE = "pubsub.example.org"
OWNER = "owner@example.org/desk"
READER = "reader@example.org/phone"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = NS_PUBSUB + "#event"
NS_DATA = "jabber:x:data"
NS_FORWARD = "urn:xmpp:forward:0"
T0 = 1_700_000_000


def _form(values: dict[str, str]) -> str:
    fields = "".join(f"<field var='{var}'><value>{value}</value></field>"
                     for var, value in values.items())
    return (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_MAM}</value></field>{fields}</x>")


def _rsm(**values: str) -> str:
    inner = "".join(f"<{name}>{value}</{name}>" if value else f"<{name}/>"
                    for name, value in values.items())
    return f"<set xmlns='{NS_RSM}'>{inner}</set>"


class EdgeTestCase(SynchronousTestCase):
    """
    The real policy on memory storage behind the XMPP handlers, with helpers to send literal
    stanzas and read the answers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), SERVICE, self.clock)
        self.manager = StubStreamManager()
        for handler in makeHandlers(self.policy):
            handler.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream
        self.counter = 0

    def iq(self, sender: str, iqType: str, xml: str) -> tuple[domish.Element, list[domish.Element]]:
        """
        Send an IQ; return its response and the messages sent before it.
        """
        self.counter += 1
        stanzaId = f"r{self.counter}"
        self.stream.clear()
        self.stream.receive(
            f"<iq type='{iqType}' from='{sender}' to='{SERVICE}' id='{stanzaId}'>{xml}</iq>"
        )
        names = [s.name for s in self.stream.sent]
        self.assertEqual(names.count("iq"), 1, names)
        self.assertEqual(names[-1], "iq", "the IQ response comes after the results")
        response = self.stream.sent[-1]
        self.assertEqual(response["id"], stanzaId)
        return response, [s for s in self.stream.sent if s.name == "message"]

    def pubsub(self, sender: str, inner: str, namespace: str = NS_PUBSUB) -> domish.Element:
        response, _ = self.iq(sender, "set", f"<pubsub xmlns='{namespace}'>{inner}</pubsub>")
        self.assertEqual(response["type"], "result", response.toXml())
        return response

    def query(
        self, sender: str = READER, node: str = "news", form: str = "", rsm: str = "",
        queryId: str = "q1",
    ) -> tuple[domish.Element, list[domish.Element]]:
        """
        An archive query of C{node}.
        """
        return self.iq(
            sender, "set",
            f"<query xmlns='{NS_MAM}' queryid='{queryId}' node='{node}'>{form}{rsm}</query>",
        )

    def results(self, messages: list[domish.Element]) -> list[tuple[str, str, str | None]]:
        """
        C{(archive id, action, item id or node)} of each result message, checking its shape.
        """
        found = []
        for message in messages:
            self.assertEqual((message["from"], message["to"]), (SERVICE, READER))
            (result,) = list(message.elements(NS_MAM, "result"))
            self.assertEqual(result["queryid"], "q1")
            (forwarded,) = list(result.elements(NS_FORWARD, "forwarded"))
            (delay,) = list(forwarded.elements("urn:xmpp:delay", "delay"))
            self.assertTrue(delay["stamp"].endswith("Z"))
            (inner,) = list(forwarded.elements("jabber:client", "message"))
            (event,) = list(inner.elements(NS_EVENT, "event"))
            action = event.firstChildElement()
            child = action.firstChildElement()
            if child is not None:
                found.append((result["id"], child.name, child["id"]))
            else:
                found.append((result["id"], action.name, action["node"]))
        return found

    def fin(self, response: domish.Element) -> tuple[bool, str | None, str | None, int | None]:
        """
        C{(complete, first, last, count)} of a query's result (count L{None} when absent).
        """
        self.assertEqual(response["type"], "result", response.toXml())
        (fin,) = list(response.elements(NS_MAM, "fin"))
        (rsm,) = list(fin.elements(NS_RSM, "set"))
        values = {child.name: str(child) for child in rsm.elements()}
        return (
            fin.getAttribute("complete") == "true",
            values.get("first"),
            values.get("last"),
            int(values["count"]) if "count" in values else None,
        )

    def errorOf(self, response: domish.Element) -> str:
        self.assertEqual(response["type"], "error", response.toXml())
        (error,) = [c for c in response.elements() if c.name == "error"]
        return next(c.name for c in error.elements() if c.name != "text")

    def history(self) -> None:
        """
        Node C{news}: five publishes, a retract and a purge, a second apart.
        """
        self.pubsub(OWNER, "<create node='news'/>")
        for n in range(5):
            self.clock.advance(1)
            self.pubsub(OWNER, f"<publish node='news'><item id='i{n}'><p xmlns='x'>{n}</p>"
                               "</item></publish>")
        self.clock.advance(1)
        self.pubsub(OWNER, "<retract node='news'><item id='i0'/></retract>")
        self.clock.advance(1)
        self.pubsub(OWNER, "<purge node='news'/>", NS_PUBSUB + "#owner")



class ArchiveTests(EdgeTestCase):
    """
    Archive queries of a node: results, paging, filters, retention and errors.
    """

    def test_wholeArchive(self) -> None:
        """
        An archive query without paging returns every event of the node in order, each as a
        forwarded notification with its archive id and time, then C{<fin complete='true'/>}
        with first, last and count.
        """
        self.history()
        response, messages = self.query()
        results = self.results(messages)
        self.assertEqual(
            [r[1:] for r in results],
            [("item", f"i{n}") for n in range(5)] + [("retract", "i0"), ("purge", "news")],
        )
        ids = [int(r[0]) for r in results]
        self.assertEqual(ids, sorted(set(ids)))
        self.assertEqual(self.fin(response), (True, results[0][0], results[-1][0], 7))
        first = messages[0].result.forwarded
        self.assertEqual(first.delay["stamp"], stamp(T0 + 1))
        self.assertEqual(str(first.message.event.items.item.p), "0")

    def test_pagingForwardAndBackward(self) -> None:
        """
        RSM C{max} with C{after} pages forward exactly once through the archive; C{before}
        pages backward, the empty C{before} giving the last page.
        """
        self.history()
        _, messages = self.query()
        allIds = [r[0] for r in self.results(messages)]
        seen: list[str] = []
        after = ""
        while True:
            response, messages = self.query(rsm=_rsm(max="3", **({"after": after} if after else {})))
            page = [r[0] for r in self.results(messages)]
            seen += page
            complete, first, last, count = self.fin(response)
            self.assertEqual(count, 7)
            if complete:
                break
            self.assertEqual((first, last), (page[0], page[-1]))
            after = page[-1]
        self.assertEqual(seen, allIds)

        response, messages = self.query(rsm=_rsm(max="2", before=""))
        self.assertEqual([r[0] for r in self.results(messages)], allIds[-2:])
        self.assertFalse(self.fin(response)[0])
        response, messages = self.query(rsm=_rsm(max="10", before=allIds[2]))
        self.assertEqual([r[0] for r in self.results(messages)], allIds[:2])
        self.assertTrue(self.fin(response)[0])

    def test_countOnly(self) -> None:
        """
        C{max} 0 sends no results and tells the count.
        """
        self.history()
        response, messages = self.query(rsm=_rsm(max="0"))
        self.assertEqual(messages, [])
        self.assertEqual(self.fin(response)[1:], (None, None, 7))

    def test_filters(self) -> None:
        """
        The form's C{start}, C{end}, C{after-id}, C{before-id} and C{with} filter the archive;
        the count is that of the filtered set.
        """
        self.history()
        _, messages = self.query()
        allIds = [r[0] for r in self.results(messages)]
        response, messages = self.query(
            form=_form({"start": stamp(T0 + 2), "end": stamp(T0 + 4)})
        )
        self.assertEqual([r[2] for r in self.results(messages)], ["i1", "i2", "i3"])
        self.assertEqual(self.fin(response)[3], 3)
        response, messages = self.query(
            form=_form({"after-id": allIds[3], "before-id": allIds[6]})
        )
        self.assertEqual([r[0] for r in self.results(messages)], allIds[4:6])
        _, messages = self.query(form=_form({"with": "reader@example.org"}))
        self.assertEqual(messages, [])
        _, messages = self.query(form=_form({"with": "owner@example.org"}))
        self.assertEqual(len(messages), 7)

    def test_unknownOrTrimmedIdIsItemNotFound(self) -> None:
        """
        An id that is malformed, of another node, or trimmed by retention is answered
        C{item-not-found} (XEP-0313), whether given as RSM C{after} or as C{after-id}.
        """
        self.history()
        _, messages = self.query()
        allIds = [r[0] for r in self.results(messages)]
        response, _ = self.query(rsm=_rsm(after="nonsense"))
        self.assertEqual(self.errorOf(response), "item-not-found")
        response, _ = self.query(rsm=_rsm(after="999999"))
        self.assertEqual(self.errorOf(response), "item-not-found")
        self.pubsub(
            OWNER,
            "<configure node='news'><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
            "<field var='hermod#archive_max_events'><value>3</value></field></x></configure>",
            NS_PUBSUB + "#owner",
        )
        response, _ = self.query(form=_form({"after-id": allIds[0]}))
        self.assertEqual(self.errorOf(response), "item-not-found")
        response, messages = self.query(rsm=_rsm(after=allIds[4]))
        self.assertEqual([r[0] for r in self.results(messages)], allIds[5:])
        self.assertEqual(self.fin(response)[3], 3)

    def test_retentionByAge(self) -> None:
        """
        Events older than C{hermod#archive_max_age} leave the archive.
        """
        self.history()
        self.pubsub(
            OWNER,
            "<configure node='news'><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
            "<field var='hermod#archive_max_age'><value>3</value></field></x></configure>",
            NS_PUBSUB + "#owner",
        )
        _, messages = self.query()
        self.assertEqual(
            [r[1:] for r in self.results(messages)],
            [("item", "i3"), ("item", "i4"), ("retract", "i0"), ("purge", "news")],
        )
        self.clock.advance(100)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(self.policy.trimArchives())), 4)
        _, messages = self.query()
        self.assertEqual(messages, [])

    def test_notAllowedToRead(self) -> None:
        """
        A whitelist node's archive is closed to outsiders, like its items.
        """
        self.pubsub(OWNER, "<create node='news'/><configure><x xmlns='jabber:x:data' "
                           "type='submit'><field var='FORM_TYPE' type='hidden'><value>"
                           "http://jabber.org/protocol/pubsub#node_config</value></field>"
                           "<field var='pubsub#access_model'><value>whitelist</value></field>"
                           "</x></configure>")
        response, _ = self.query()
        self.assertEqual(self.errorOf(response), "not-allowed")

    def test_missingNode(self) -> None:
        """
        A query of a node that does not exist, or of none, is C{item-not-found}.
        """
        response, _ = self.query(node="nope")
        self.assertEqual(self.errorOf(response), "item-not-found")
        response, _ = self.iq(READER, "set", f"<query xmlns='{NS_MAM}'/>")
        self.assertEqual(self.errorOf(response), "item-not-found")

    def test_badForm(self) -> None:
        """
        An unknown field or a malformed date is a C{bad-request}.
        """
        self.history()
        response, _ = self.query(form=_form({"fulltext": "x"}))
        self.assertEqual(self.errorOf(response), "bad-request")
        response, _ = self.query(form=_form({"start": "yesterday"}))
        self.assertEqual(self.errorOf(response), "bad-request")
        response, _ = self.query(rsm=_rsm(max="many"))
        self.assertEqual(self.errorOf(response), "bad-request")

    def test_queryForm(self) -> None:
        """
        A query get returns the form with the supported fields.
        """
        response, _ = self.iq(READER, "get", f"<query xmlns='{NS_MAM}' node='news'/>")
        self.assertEqual(response["type"], "result")
        fields = [f["var"] for f in response.query.x.elements(NS_DATA, "field")]
        self.assertEqual(
            sorted(fields), ["FORM_TYPE", "after-id", "before-id", "end", "start", "with"]
        )

    def test_disco(self) -> None:
        """
        A node advertises C{urn:xmpp:mam:2}; the service advertises RSM; a missing node
        advertises nothing.
        """
        self.pubsub(OWNER, "<create node='news'/>")

        def features(node: str) -> list[str]:
            attribute = f" node='{node}'" if node else ""
            response, _ = self.iq(
                READER, "get",
                f"<query xmlns='http://jabber.org/protocol/disco#info'{attribute}/>",
            )
            return [f["var"] for f in response.query.elements() if f.name == "feature"]

        self.assertIn(NS_MAM, features("news"))
        self.assertNotIn(NS_MAM, features(""))
        self.assertIn(NS_RSM, features(""))
        self.assertEqual(features("nope"), [])

    def test_stampRoundTrip(self) -> None:
        """
        L{stamp} and L{parseStamp} agree to the millisecond; offsets are honoured.
        """
        self.assertAlmostEqual(parseStamp(stamp(T0 + 0.25)), T0 + 0.25, places=3)
        self.assertEqual(parseStamp("2023-11-14T22:13:20+01:00"), T0 - 3600)


class ArchivePolicyTests(SynchronousTestCase):
    """
    The policy's archive paging where the edge adds nothing.
    """

    def test_maxIsCapped(self) -> None:
        """
        A C{max} above the service's largest page is served as the largest page.
        """
        clock = Clock()
        storage = MemoryStorage()
        policy = PubSubPolicy(storage, PubSubSettings(), SERVICE, clock)
        policy.maxPageSize = 4

        async def run() -> tuple[int, bool, int]:
            await policy.createNode(OWNER, "n", None)
            for n in range(6):
                await policy.publish(OWNER, "n", [(f"i{n}", b"<p/>")], None)
            page = await policy.archive(READER, "n", ArchiveQuery(maxResults=100))
            return len(page.events), page.complete, page.count

        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(run())), (4, False, 6))


class ResultSetTests(EdgeTestCase):
    """
    XEP-0059 paging of items and of disco#items.
    """

    def publishMany(self, count: int) -> None:
        self.pubsub(OWNER, "<create node='news'/><configure><x xmlns='jabber:x:data' "
                           "type='submit'><field var='FORM_TYPE' type='hidden'><value>"
                           "http://jabber.org/protocol/pubsub#node_config</value></field>"
                           "<field var='pubsub#max_items'><value>max</value></field>"
                           "</x></configure>")
        for n in range(count):
            self.pubsub(OWNER, f"<publish node='news'><item id='i{n}'><p xmlns='x'/></item>"
                               "</publish>")

    def itemsPage(self, rsm: str) -> tuple[list[str], dict[str, str]]:
        response, _ = self.iq(
            READER, "get", f"<pubsub xmlns='{NS_PUBSUB}'><items node='news'/>{rsm}</pubsub>"
        )
        self.assertEqual(response["type"], "result", response.toXml())
        ids = [item["id"] for item in response.pubsub.items.elements(NS_PUBSUB, "item")]
        (rsmSet,) = list(response.pubsub.elements(NS_RSM, "set"))
        return ids, {child.name: str(child) for child in rsmSet.elements()}

    def test_itemsPagesStableWhilePublishing(self) -> None:
        """
        Items come newest first in pages of C{max}; paging C{after} the last id of a page
        continues exactly where it left off although items were published meanwhile.
        """
        self.publishMany(7)
        ids, rsm = self.itemsPage(_rsm(max="3"))
        self.assertEqual(ids, ["i6", "i5", "i4"])
        self.assertEqual(rsm, {"first": "i6", "last": "i4", "count": "7"})
        self.pubsub(OWNER, "<publish node='news'><item id='late'><p xmlns='x'/></item></publish>")
        ids, rsm = self.itemsPage(_rsm(max="3", after="i4"))
        self.assertEqual(ids, ["i3", "i2", "i1"])
        self.assertEqual(rsm["count"], "8")
        ids, _ = self.itemsPage(_rsm(max="3", after="i1"))
        self.assertEqual(ids, ["i0"])
        ids, _ = self.itemsPage(_rsm(max="2", before=""))
        self.assertEqual(ids, ["i1", "i0"])
        response, _ = self.iq(
            READER, "get",
            f"<pubsub xmlns='{NS_PUBSUB}'><items node='news'/>{_rsm(after='gone')}</pubsub>",
        )
        self.assertEqual(self.errorOf(response), "item-not-found")

    def test_discoItemsPaged(self) -> None:
        """
        disco#items of a node pages its item names with RSM, with count and index.
        """
        self.publishMany(5)
        response, _ = self.iq(
            READER, "get",
            "<query xmlns='http://jabber.org/protocol/disco#items' node='news'>"
            + _rsm(max="2", after="i3") + "</query>",
        )
        self.assertEqual(response["type"], "result", response.toXml())
        names = [c["name"] for c in response.query.elements() if c.name == "item"]
        self.assertEqual(names, ["i2", "i1"])
        (rsmSet,) = list(response.query.elements(NS_RSM, "set"))
        self.assertEqual(rsmSet.first["index"], "2")
        self.assertEqual(str(rsmSet.count), "5")
        response, _ = self.iq(
            READER, "get",
            "<query xmlns='http://jabber.org/protocol/disco#items'>"
            + _rsm(max="10") + "</query>",
        )
        names = [c["node"] for c in response.query.elements() if c.name == "item"]
        self.assertEqual(names, ["news"])


class SerializationTests(SynchronousTestCase):
    """
    The archive's serialization matches the live notifications.
    """

    def test_publishBodyIsTheNotification(self) -> None:
        """
        A published event is forwarded with exactly the C{<event/>} bytes L{itemsEvent} makes
        for a notification with payload, escaping included; other actions use L{eventBody}.
        """
        from hermod_component.model import Event, EventAction, Item
        from hermod_component.xmpp.mam import eventBody, resultMessages
        from hermod_component.xmpp.notifier import itemsEvent

        events = [
            Event(7, "a&b", EventAction.PUBLISH, "i<1>", "o@x/r", b"<p xmlns='x'/>", T0 + 0.5),
            Event(8, "a&b", EventAction.PUBLISH, "i2", "", b"", T0 + 0.5),
            Event(9, "a&b", EventAction.RETRACT, "i2", "o@x", b"", T0 + 1),
        ]
        data = resultMessages(SERVICE, READER, "q&", events)
        self.assertIn(itemsEvent("a&b", [Item("i<1>", b"<p xmlns='x'/>", "o@x/r")], True), data)
        self.assertIn(itemsEvent("a&b", [Item("i2", b"")], True), data)
        self.assertIn(eventBody(events[2]), data)
        self.assertEqual(data.count(b'stamp="' + stamp(T0 + 0.5).encode() + b'"'), 2)
        self.assertEqual(data.count(b'queryid="q&amp;"'), 3)


class ArchivedHeadersTests(EdgeTestCase):
    """
    Archived publishes keep the SHIM headers their items carried.
    """

    def test_headersForwardedLikeTheNotification(self) -> None:
        """
        A publish whose item carried SHIM headers is forwarded with the same C{<headers/>}
        the live notification had, right after its C{<event/>}; an item without headers gets
        none.
        """
        NS_SHIM = "http://jabber.org/protocol/shim"
        self.pubsub(OWNER, "<create node='news'/>")
        self.pubsub(READER, f"<subscribe node='news' jid='{READER}'/>")
        self.pubsub(
            OWNER,
            "<publish node='news'><item id='h'><p xmlns='x'>1</p>"
            f"<headers xmlns='{NS_SHIM}'><header name='built_by'>johnp</header>"
            "<header name='topic'>a &amp; b</header></headers></item>"
            "<item id='plain'><p xmlns='x'>2</p></item></publish>",
        )
        live = {
            m.firstChildElement().firstChildElement().firstChildElement()["id"]: m
            for m in self.stream.sent
            if m.name == "message"
        }

        def headersOf(message: domish.Element) -> list[tuple[str, str]]:
            return [
                (h["name"], str(h))
                for hs in message.elements(NS_SHIM, "headers")
                for h in hs.elements(NS_SHIM, "header")
            ]

        self.assertEqual(
            headersOf(live["h"]), [("built_by", "johnp"), ("topic", "a & b")]
        )
        _, messages = self.query()
        self.assertEqual([r[2] for r in self.results(messages)], ["h", "plain"])
        inner = [
            next(fw.elements("jabber:client", "message"))
            for fw in (
                next(next(m.elements(NS_MAM, "result")).elements(NS_FORWARD, "forwarded"))
                for m in messages
            )
        ]
        self.assertEqual(headersOf(inner[0]), headersOf(live["h"]))
        self.assertEqual(headersOf(inner[1]), [])
        self.assertEqual(headersOf(live["plain"]), [])

    def test_eventBodyCarriesHeaders(self) -> None:
        """
        L{eventBody} and L{resultMessages} put a published event's headers after its
        C{<event/>} exactly as the notifier serializes them.
        """
        from hermod_component.model import Event, EventAction, Item
        from hermod_component.xmpp.mam import eventBody, resultMessages
        from hermod_component.xmpp.notifier import itemsEvent, shimHeaders, subIdHeaders

        headers = (("built_by", "johnp"), ("x", "<&>"))
        event = Event(
            7, "n", EventAction.PUBLISH, "i", "o@x", b"<p xmlns='x'/>", T0, headers
        )
        expected = itemsEvent("n", [Item("i", b"<p xmlns='x'/>", "o@x")], True) + subIdHeaders(
            (), shimHeaders(headers)
        )
        self.assertEqual(eventBody(event), expected)
        self.assertIn(expected + b"</message>", resultMessages(SERVICE, READER, None, [event]))


class ArchivePagesTests(EdgeTestCase):
    """
    Hermod's archive pages: a query carrying C{<pages/>} gets its page inside C{<fin/>}.
    """

    def pages(self, rsm: str = "") -> tuple[domish.Element, list[domish.Element]]:
        """
        An archive query of C{news} asking for archive pages.
        """
        return self.query(rsm=rsm + f"<pages xmlns='{NS_PAGES}'/>")

    def events(self, response: domish.Element) -> list[tuple[str, str, str | None]]:
        """
        C{(archive id, item id, decoded payload or None for a retraction)} of a page.
        """
        (fin,) = list(response.elements(NS_MAM, "fin"))
        (events,) = list(fin.elements(NS_PAGES, "events"))
        return [
            (e["id"], e["item"], None if e.getAttribute("retract") == "true"
             else base64.b64decode(str(e), validate=True).decode("utf-8"))
            for e in events.elements(NS_PAGES, "e")
        ]

    def test_pageInFin(self) -> None:
        """
        No result message is sent; the publishes (with their payload as text) and the
        retraction come in order inside C{<fin/>}, the purge is left out, and the RSM set
        is the one of the plain query without its count (a scan of the node's whole log at
        every page).
        """
        self.history()
        plain, messages = self.query()
        response, sent = self.pages()
        self.assertEqual(sent, [])
        found = self.events(response)
        ids = [archiveId for archiveId, _, _ in self.results(messages)]
        self.assertEqual([f[0] for f in found], ids[:6])
        self.assertEqual([f[1] for f in found], [f"i{n}" for n in range(5)] + ["i0"])
        self.assertEqual(found[1][2], "<p xmlns='x'>1</p>")
        self.assertIsNone(found[5][2])
        self.assertEqual(self.fin(response), (*self.fin(plain)[:3], None))
        self.assertEqual(self.fin(plain)[3], 7)

    def test_pagedWithRSM(self) -> None:
        """
        RSM C{max} and C{after} page the events the same way as result messages.
        """
        self.history()
        first, _ = self.pages(_rsm(max="2"))
        self.assertEqual([f[1] for f in self.events(first)], ["i0", "i1"])
        complete, _, last, count = self.fin(first)
        self.assertEqual((complete, count), (False, None))
        second, _ = self.pages(_rsm(max="10", after=str(last)))
        self.assertEqual([f[1] for f in self.events(second)], ["i2", "i3", "i4", "i0"])
        self.assertTrue(self.fin(second)[0])

    def test_sizeLimit(self) -> None:
        """
        A page stops before the payload that would pass C{MAX_PAGE_BYTES} (never before the
        first); it is then not complete, and its last id is the last event it holds.
        """
        from hermod_component.xmpp import mam

        self.patch(mam, "MAX_PAGE_BYTES", 80)
        self.pubsub(OWNER, "<create node='news'/>")
        big = "x" * 30
        for n in range(3):
            self.pubsub(OWNER, f"<publish node='news'><item id='b{n}'><p xmlns='x'>{big}</p>"
                               "</item></publish>")
        response, _ = self.pages()
        found = self.events(response)
        self.assertEqual([f[1] for f in found], ["b0"])
        complete, first, last, count = self.fin(response)
        self.assertEqual((complete, first, last, count), (False, found[0][0], found[0][0], None))
        # The next pages read as many events as the first suggests fit, and still go on
        # where the one before ended, to the end.
        archived: list[int | None] = []
        archive = self.policy.archive

        async def counted(requester: str, node: str, query: ArchiveQuery) -> ArchivePage:
            archived.append(query.maxResults)
            return await archive(requester, node, query)

        self.patch(self.policy, "archive", counted)
        second, _ = self.pages(_rsm(max="100", after=str(last)))
        self.assertEqual([f[1] for f in self.events(second)], ["b1"])
        third, _ = self.pages(_rsm(max="100", after=self.fin(second)[2]))
        self.assertEqual([f[1] for f in self.events(third)], ["b2"])
        self.assertTrue(self.fin(third)[0])
        self.assertEqual(len(archived), 2)
        self.assertLess(max(n for n in archived if n is not None), 5)
        taken, body = pageEvents([], 10)
        self.assertEqual((taken, body), (0, f'<events xmlns="{NS_PAGES}"></events>'.encode()))

    def test_escapedPayload(self) -> None:
        """
        Markup, entities and non-ASCII text in a payload survive the base64 round trip.
        """
        self.pubsub(OWNER, "<create node='news'/>")
        self.pubsub(OWNER, "<publish node='news'><item id='e'><p xmlns='x' a='&amp;&lt;'>"
                           "1 &lt; 2 &amp;&amp; \u00e9 <b/></p></item></publish>")
        response, _ = self.pages()
        ((_, _, text),) = self.events(response)
        assert text is not None
        self.assertIn("1 &lt; 2 &amp;&amp; \u00e9 <b", text)
        self.assertTrue(text.startswith("<p"), text)

    def test_advertised(self) -> None:
        """
        The service advertises archive pages next to RSM.
        """
        response, _ = self.iq(
            READER, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>"
        )
        features = [f["var"] for f in response.query.elements() if f.name == "feature"]
        self.assertIn(NS_PAGES, features)


class PageSizesTests(SynchronousTestCase):
    """
    L{PageSizes} reads for a page as many events as the node's last page suggests fit.
    """

    def test_estimate(self) -> None:
        from hermod_component.xmpp.mam import MAX_PAGE_BYTES, PageSizes

        sizes = PageSizes()
        # Nothing known of the node yet: what was asked for.
        self.assertEqual(sizes.toRead("n", 1000), 1000)
        sizes.served("n", MAX_PAGE_BYTES, 256)
        # 256 fit: 25 % more are read, never more than asked, at least one.
        self.assertEqual(sizes.toRead("n", 1000), 321)
        self.assertEqual(sizes.toRead("n", 100), 100)
        sizes.served("big", MAX_PAGE_BYTES * 10, 1)
        self.assertEqual(sizes.toRead("big", 1000), 1)
        # A page without events says nothing; other nodes are apart.
        sizes.served("n", 0, 0)
        self.assertEqual(sizes.toRead("n", 1000), 321)
        self.assertEqual(sizes.toRead("other", 1000), 1000)

    def test_bounded(self) -> None:
        """
        Only the most recently served nodes are kept.
        """
        from hermod_component.xmpp import mam

        self.patch(mam, "PAGE_SIZES_KEPT", 2)
        sizes = mam.PageSizes()
        for node in ("a", "b", "c"):
            sizes.served(node, mam.MAX_PAGE_BYTES, 16)
        sizes.served("b", mam.MAX_PAGE_BYTES, 16)
        sizes.served("d", mam.MAX_PAGE_BYTES, 16)
        self.assertEqual([sizes.toRead(n, 1000) for n in "abcd"], [1000, 21, 1000, 21])
