"""
The XMPP edge with the real policy on the memory storage, driven by literal stanzas.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish

from hermod_component.config import PubSubSettings
from hermod_component.policy import PubSubPolicy
from hermod_component.storage.memory import MemoryStorage
from hermod_component.testing import StubStreamManager
from hermod_component.xmpp.handler import makeHandlers

SERVICE = "pubsub.example.org"
OWNER = "owner@example.org/desk"
READER = "reader@example.org/phone"
OTHER = "other@example.org/home"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_DATA = "jabber:x:data"
NS_ERRORS = NS_PUBSUB + "#errors"


def _fields(namespace: str, values: dict[str, str], formType: str = "submit") -> str:
    fields = "".join(f"<field var='{var}'><value>{value}</value></field>"
                     for var, value in values.items())
    return (f"<x xmlns='{NS_DATA}' type='{formType}'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{namespace}</value></field>{fields}</x>")


class MemoryIntegrationTests(SynchronousTestCase):
    """
    Create, configure, subscribe, publish, retract, purge and delete over the stub stream.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), SERVICE, self.clock)
        self.manager = StubStreamManager()
        for handler in makeHandlers(self.policy):
            handler.setHandlerParent(self.manager)
        self.stream = self.manager.xmlstream
        self.counter = 0

    def iq(self, sender: str, iqType: str, inner: str,
           namespace: str = NS_PUBSUB) -> tuple[domish.Element, list[domish.Element]]:
        """
        Send a pubsub IQ; return the IQ response and the messages sent alongside it.
        """
        self.counter += 1
        stanzaId = f"r{self.counter}"
        self.stream.clear()
        self.stream.receive(
            f"<iq type='{iqType}' from='{sender}' to='{SERVICE}' id='{stanzaId}'>"
            f"<pubsub xmlns='{namespace}'>{inner}</pubsub></iq>"
        )
        responses = [s for s in self.stream.sent if s.name == "iq"]
        self.assertEqual([r["id"] for r in responses], [stanzaId])
        self.assertEqual(responses[0]["to"], sender)
        return responses[0], [s for s in self.stream.sent if s.name == "message"]

    def ok(self, sender: str, iqType: str, inner: str,
           namespace: str = NS_PUBSUB) -> tuple[domish.Element, list[domish.Element]]:
        """
        Like L{iq}, and the response is a result.
        """
        response, messages = self.iq(sender, iqType, inner, namespace)
        self.assertEqual(response["type"], "result", response.toXml())
        return response, messages

    def errorOf(self, response: domish.Element) -> list[str]:
        """
        The condition names of an error response.
        """
        self.assertEqual(response["type"], "error")
        (error,) = [c for c in response.elements() if c.name == "error"]
        return [c.name for c in error.elements() if c.name != "text"]

    def event(self, message: domish.Element) -> domish.Element:
        """
        The action element of a notification.
        """
        (eventElement,) = [c for c in message.elements() if c.name == "event"]
        self.assertEqual(eventElement.uri, NS_EVENT)
        return eventElement.firstChildElement()

    def test_lifecycle(self) -> None:
        """
        A node goes through its whole life with the right responses and notifications.
        """
        self.ok(OWNER, "set", "<create node='news'/><configure>"
                + _fields(NS_PUBSUB + "#node_config",
                          {"pubsub#title": "News &amp; views", "pubsub#max_items": "5"})
                + "</configure>")
        response, _ = self.ok(OWNER, "get", "<configure node='news'/>", NS_OWNER)
        form = response.pubsub.configure.x
        values = {f["var"]: [str(v) for v in f.elements(NS_DATA, "value")]
                  for f in form.elements(NS_DATA, "field")}
        self.assertEqual(values["pubsub#title"], ["News & views"])
        self.assertEqual(values["pubsub#max_items"], ["5"])

        response, _ = self.ok(READER, "set", f"<subscribe node='news' jid='{READER}'/>")
        self.assertEqual(response.pubsub.subscription["subscription"], "subscribed")

        response, messages = self.ok(
            OWNER, "set",
            "<publish node='news'><item id='first'>"
            "<entry xmlns='http://www.w3.org/2005/Atom'><title>Hello</title></entry>"
            "</item></publish>",
        )
        self.assertEqual(response.pubsub.publish.item["id"], "first")
        self.assertEqual([m["to"] for m in messages], [READER])
        items = self.event(messages[0])
        self.assertEqual((items.name, items["node"]), ("items", "news"))
        entry = items.item.firstChildElement()
        self.assertEqual((entry.uri, str(entry.title)), ("http://www.w3.org/2005/Atom", "Hello"))

        response, _ = self.ok(READER, "get", "<items node='news'/>")
        self.assertEqual([i["id"] for i in response.pubsub.items.elements()], ["first"])

        response, messages = self.ok(
            OWNER, "set", "<retract node='news' notify='true'><item id='first'/></retract>")
        retract = self.event(messages[0])
        self.assertEqual(retract.firstChildElement()["id"], "first")

        self.ok(OWNER, "set", "<publish node='news'><item id='second'><p xmlns='urn:p'/></item></publish>")
        _, messages = self.ok(OWNER, "set", "<purge node='news'/>", NS_OWNER)
        self.assertEqual([self.event(m).name for m in messages], ["purge"])
        response, _ = self.ok(READER, "get", "<items node='news'/>")
        self.assertEqual(list(response.pubsub.items.elements()), [])

        _, messages = self.ok(
            OWNER, "set", "<delete node='news'><redirect uri='xmpp:pubsub.example.org?;node=new'/>"
            "</delete>", NS_OWNER)
        delete = self.event(messages[0])
        self.assertEqual((delete.name, delete.redirect["uri"]),
                         ("delete", "xmpp:pubsub.example.org?;node=new"))
        response, _ = self.iq(READER, "get", "<items node='news'/>")
        self.assertEqual(self.errorOf(response), ["item-not-found"])

    def test_refusals(self) -> None:
        """
        The policy's refusals arrive as XEP-0060 errors.
        """
        self.ok(OWNER, "set", "<create node='n'/>")
        response, _ = self.iq(OTHER, "set", "<publish node='n'><item id='x'/></publish>")
        self.assertEqual(self.errorOf(response), ["forbidden"])
        response, _ = self.iq(OTHER, "set", f"<subscribe node='n' jid='{READER}'/>")
        self.assertEqual(self.errorOf(response), ["bad-request", "invalid-jid"])
        response, _ = self.iq(OWNER, "set", "<create node='n'/>")
        self.assertEqual(self.errorOf(response), ["conflict"])
        response, _ = self.iq(OTHER, "get", "<configure node='n'/>", NS_OWNER)
        self.assertEqual(self.errorOf(response), ["forbidden"])

    def test_instantNodeAndDisco(self) -> None:
        """
        An instant node gets a generated id that disco then lists with its items.
        """
        response, _ = self.ok(OWNER, "set", "<create/>")
        node = response.pubsub.create["node"]
        self.assertTrue(node)
        self.ok(OWNER, "set", f"<publish node='{node}'><item id='i1'><p xmlns='urn:p'/></item></publish>")
        self.stream.clear()
        self.stream.receive(
            f"<iq type='get' from='{OWNER}' to='{SERVICE}' id='d1'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        (reply,) = self.stream.sent
        self.assertEqual([i["node"] for i in reply.query.elements()], [node])
        self.stream.clear()
        self.stream.receive(
            f"<iq type='get' from='{OWNER}' to='{SERVICE}' id='d2'>"
            f"<query xmlns='http://jabber.org/protocol/disco#items' node='{node}'/></iq>")
        (reply,) = self.stream.sent
        self.assertEqual([i["name"] for i in reply.query.elements()], ["i1"])


class AnswerFirstTests(SynchronousTestCase):
    """
    As the service runs it (C{answerFirst}): a publish is answered before its notifications
    are written, and they follow at the reactor's next turn.
    """

    def test_answerBeforeNotifications(self) -> None:
        """
        The publisher's result is written first; the subscriber's notification follows when
        the turn ends, and nothing is lost.
        """
        clock = Clock()
        policy = PubSubPolicy(MemoryStorage(), PubSubSettings(), SERVICE, clock)
        manager = StubStreamManager()
        for handler in makeHandlers(policy, answerFirst=True):
            handler.setHandlerParent(manager)
        stream = manager.xmlstream
        stream.receive(f"<iq type='set' from='{OWNER}' to='{SERVICE}' id='c1'>"
                       f"<pubsub xmlns='{NS_PUBSUB}'><create node='news'/></pubsub></iq>")
        stream.receive(f"<iq type='set' from='{READER}' to='{SERVICE}' id='s1'>"
                       f"<pubsub xmlns='{NS_PUBSUB}'><subscribe node='news' jid='{READER}'/>"
                       "</pubsub></iq>")
        clock.advance(0)
        stream.clear()
        stream.receive(f"<iq type='set' from='{OWNER}' to='{SERVICE}' id='p1'>"
                       f"<pubsub xmlns='{NS_PUBSUB}'><publish node='news'><item id='i1'>"
                       "<x xmlns='urn:x'/></item></publish></pubsub></iq>")
        self.assertEqual([(s.name, s.getAttribute("id")) for s in stream.sent], [("iq", "p1")])
        clock.advance(0)
        self.assertEqual([(s.name, s["to"]) for s in stream.sent],
                         [("iq", OWNER), ("message", READER)])
