"""
Proof that the throwaway server helpers and the slixmpp test client work on this machine.

These tests need the real Prosody and ejabberd binaries. Outside CI a missing binary skips; under
CI (C{CI=true}) it fails. Run them under the asyncio reactor:
C{python -m twisted.trial --reactor=asyncio tests.test_servers}.
"""

from __future__ import annotations

import os
import signal
import tomllib
import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.words.protocols.jabber import component, xmlstream
from twisted.words.xish import domish

from tests.servers import ServerUnavailable
from tests.servers.ejabberd import EjabberdServer
from tests.servers.hermod import HermodProcess, toTOML
from tests.servers.prosody import ProsodyServer
from tests.xmppclient import Client, ConnectionFailed, XMPPRequestError, connectClient

COMPONENT = "pubsub.localhost"


class ComponentRefused(Exception):
    """
    The server ended the component stream before the handshake succeeded.
    """


class RawComponent:
    """
    A bare XEP-0114 component built on Twisted's C{jabber.component}, recording messages.

    @ivar messages: Message elements received, oldest first.
    @ivar stream: The authenticated stream, once connected.
    """

    def __init__(self) -> None:
        self.messages: list[domish.Element] = []
        self.stream: xmlstream.XmlStream | None = None
        self._waiting: list[Deferred[domish.Element]] = []

    def connect(self, port: int, jid: str, secret: str) -> Deferred[None]:
        """
        Connect to 127.0.0.1:C{port} and complete the component handshake.

        @return: Fires once authenticated, or fails if the handshake is refused.
        """
        from twisted.internet import reactor

        factory = component.componentFactory(jid, secret)
        ready: Deferred[None] = Deferred()

        def authenticated(stream: xmlstream.XmlStream) -> None:
            self.stream = stream
            stream.addObserver("/message", self._received)
            ready.callback(None)

        def failed(reason: Any) -> None:
            if not ready.called:
                ready.errback(reason)

        def streamError(reason: Any) -> None:
            failed(ComponentRefused(f"stream error: {reason.value}"))

        def streamEnded(reason: Any) -> None:
            failed(ComponentRefused(f"stream closed before the handshake: {reason}"))

        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, authenticated)
        factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, failed)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, streamError)
        factory.addBootstrap(xmlstream.STREAM_END_EVENT, streamEnded)
        factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self._connected)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        connecting = endpoint.connect(factory)
        connecting.addErrback(failed)
        return ready

    def _connected(self, stream: xmlstream.XmlStream) -> None:
        """
        Remember the stream as soon as it exists, so that L{disconnect} can always close it.
        """
        self.stream = stream

    def _received(self, element: domish.Element) -> None:
        """
        Record C{element} and hand it to whoever waits.
        """
        self.messages.append(element)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(element)

    def nextMessage(self, timeout: float = 10.0) -> Deferred[domish.Element]:
        """
        The first message received, waiting for it if needed.
        """
        from twisted.internet import reactor

        if self.messages:
            return Deferred.fromCoroutine(_now(self.messages[0]))
        d: Deferred[domish.Element] = Deferred()
        self._waiting.append(d)
        d.addTimeout(timeout, reactor)
        return d

    def disconnect(self) -> None:
        """
        Drop the connection, if any.
        """
        if self.stream is not None and self.stream.transport is not None:
            self.stream.transport.loseConnection()


async def _now(value: Any) -> Any:
    """
    C{value}, as a coroutine.
    """
    return value


class ServerTestsMixin:
    """
    Tests every server helper must pass; a subclass names the helper in L{makeServer}.
    """

    def makeServer(
        self, secret: str, pubsubHost: str | None = None, admins: tuple[str, ...] = ()
    ) -> Any:
        """
        A started server with component L{COMPONENT} and shared secret C{secret}, the server's
        own pubsub service on C{pubsubHost} if given, and C{admins} as server admins.
        """
        raise NotImplementedError()

    def setUp(self) -> None:
        """
        Start a fresh server for each test, stopped when the test ends.
        """
        self.secret = uuid.uuid4().hex
        self.server = self.makeServer(self.secret)
        self.addCleanup(self.server.stop)  # type: ignore[attr-defined]

    async def login(self, user: str, password: str) -> Client:
        """
        A logged-in client for C{user}, disconnected when the test ends.
        """
        client = await connectClient(
            f"{user}@{self.server.domain}/test", password, "127.0.0.1", self.server.c2sPort
        )
        self.addCleanup(client.disconnect)  # type: ignore[attr-defined]
        return client

    async def test_usersExchangeMessage(self) -> None:
        """
        Two registered users log in with slixmpp and one receives the other's message.
        """
        self.server.register("alice", "alicepw")
        self.server.register("bob", "bobpw")
        alice = await self.login("alice", "alicepw")
        bob = await self.login("bob", "bobpw")
        alice.sendMessage(f"bob@{self.server.domain}/test", "hello bob")
        message = await bob.waitForMessage(lambda m: m["body"] == "hello bob")
        self.assertEqual(message["from"].bare, f"alice@{self.server.domain}")  # type: ignore[attr-defined]

    async def test_wrongPasswordRefused(self) -> None:
        """
        Logging in with a wrong password fails with L{ConnectionFailed}.
        """
        self.server.register("carol", "right")
        with self.assertRaises(ConnectionFailed):  # type: ignore[attr-defined]
            await connectClient(
                f"carol@{self.server.domain}", "wrong", "127.0.0.1", self.server.c2sPort
            )

    async def test_componentReceivesMessage(self) -> None:
        """
        A raw XEP-0114 component connects and receives a message a user sends to it.
        """
        self.server.register("alice", "alicepw")
        raw = RawComponent()
        await raw.connect(self.server.componentPort, COMPONENT, self.secret)
        self.addCleanup(raw.disconnect)  # type: ignore[attr-defined]
        alice = await self.login("alice", "alicepw")
        alice.sendMessage(COMPONENT, "to the component")
        message = await raw.nextMessage()
        self.assertEqual(str(message.body), "to the component")  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            message["from"], f"alice@{self.server.domain}/test"
        )

    async def test_componentWrongSecretRefused(self) -> None:
        """
        The component handshake fails with a wrong secret.
        """
        raw = RawComponent()
        self.addCleanup(raw.disconnect)  # type: ignore[attr-defined]
        with self.assertRaises(ComponentRefused):  # type: ignore[attr-defined]
            await raw.connect(self.server.componentPort, COMPONENT, "not-the-secret")
        self.assertIsNotNone(raw.stream)  # type: ignore[attr-defined]

    async def test_restartKeepsAccounts(self) -> None:
        """
        After a restart on the same ports a registered account still logs in.
        """
        self.server.register("dave", "davepw")
        ports = (self.server.c2sPort, self.server.componentPort)
        self.server.restart()
        self.assertEqual((self.server.c2sPort, self.server.componentPort), ports)  # type: ignore[attr-defined]
        client = await self.login("dave", "davepw")
        self.assertEqual(client.xmpp.boundjid.bare, f"dave@{self.server.domain}")  # type: ignore[attr-defined]

    async def test_builtinPubsub(self) -> None:
        """
        With C{pubsubHost} the server's own pubsub service creates a node, lists it, and
        notifies a subscriber, whose client records the body-less event message.
        """
        server = self.makeServer(
            self.secret, pubsubHost="pubsub2.localhost", admins=("erin@localhost",)
        )
        self.addCleanup(server.stop)  # type: ignore[attr-defined]
        server.register("erin", "erinpw")
        client = await connectClient(
            f"erin@{server.domain}/test", "erinpw", "127.0.0.1", server.c2sPort
        )
        self.addCleanup(client.disconnect)  # type: ignore[attr-defined]
        await client.iq(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='bench'/></pubsub>",
            to="pubsub2.localhost", type="set",
        )
        reply = await client.iq(
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
            to="pubsub2.localhost", type="get",
        )
        nodes = [i.get("node") for i in reply.iter("{http://jabber.org/protocol/disco#items}item")]
        self.assertIn("bench", nodes)  # type: ignore[attr-defined]
        await client.run(client.pubsub.subscribe("pubsub2.localhost", "bench"))
        await client.iq(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='bench'>"
            "<item id='one'><entry xmlns='http://www.w3.org/2005/Atom'><title>t</title></entry>"
            "</item></publish></pubsub>",
            to="pubsub2.localhost", type="set",
        )
        event = await client.waitForMessage(
            lambda m: m["pubsub_event"]["items"]["node"] == "bench"
        )
        self.assertEqual(event["pubsub_event"]["items"]["item"]["id"], "one")  # type: ignore[attr-defined]

    async def test_iqErrorCarriesConditions(self) -> None:
        """
        An error answer fails L{Client.iq} with L{XMPPRequestError} naming its conditions.
        """
        self.server.register("frank", "frankpw")
        client = await self.login("frank", "frankpw")
        with self.assertRaises(XMPPRequestError) as caught:  # type: ignore[attr-defined]
            await client.iq(
                "<query xmlns='urn:example:nothing-implements-this'/>",
                to=self.server.domain, type="get",
            )
        self.assertEqual(caught.exception.condition, "service-unavailable")  # type: ignore[attr-defined]
        self.assertEqual(caught.exception.errorType, "cancel")  # type: ignore[attr-defined]

    def test_stopRemovesEverything(self) -> None:
        """
        L{stop} ends the server process and removes its directory.
        """
        pid, directory = self.server.pid, self.server.directory
        self.server.stop()
        self.assertFalse(os.path.exists(directory))  # type: ignore[attr-defined]
        with self.assertRaises(ProcessLookupError):  # type: ignore[attr-defined]
            os.kill(pid, 0)


class ProsodyServerTests(ServerTestsMixin, TestCase):
    """
    L{ProsodyServer} runs a working private Prosody.
    """

    def makeServer(
        self, secret: str, pubsubHost: str | None = None, admins: tuple[str, ...] = ()
    ) -> ProsodyServer:
        """
        A started L{ProsodyServer}.
        """
        server = ProsodyServer(COMPONENT, secret, pubsubHost=pubsubHost, admins=admins)
        server.start()
        return server

    def test_startFailureShowsLog(self) -> None:
        """
        A config Prosody rejects fails L{start} with the tail of its log in the message.
        """
        broken = ProsodyServer(COMPONENT, "x", extraConfig="this is not lua (")
        self.addCleanup(broken.stop)
        error = self.assertRaises(ServerUnavailable, broken.start)
        self.assertIn("Prosody did not start", str(error))
        self.assertIn("prosody.cfg.lua", str(error))


class EjabberdServerTests(ServerTestsMixin, TestCase):
    """
    L{EjabberdServer} runs a working private ejabberd.
    """

    timeout = 120

    def makeServer(
        self, secret: str, pubsubHost: str | None = None, admins: tuple[str, ...] = ()
    ) -> EjabberdServer:
        """
        A started L{EjabberdServer}.
        """
        server = EjabberdServer(COMPONENT, secret, pubsubHost=pubsubHost, admins=admins)
        server.start()
        return server


class ToTOMLTests(SynchronousTestCase):
    """
    L{toTOML} writes configuration mappings that C{tomllib} reads back unchanged.
    """

    def test_roundTrip(self) -> None:
        """
        Strings with quotes, booleans, numbers, lists and nested tables survive a round trip.
        """
        settings = {
            "component": {"jid": "pubsub.localhost", "server": 'tcp:host=127.0.0.1:port=5347'},
            "storage": {"engine": "sqlite", "path": 'C:\\odd "name".sqlite'},
            "pubsub": {"auto_create": True, "admins": ["a@b", "c@d"], "max_payload_size": 7},
            "backends": {"midgard": {"poll_interval": 5.0}},
        }
        self.assertEqual(tomllib.loads(toTOML(settings)), settings)


class HermodProcessTests(TestCase):
    """
    L{HermodProcess} runs C{twistd -n hermod} against a real Prosody.
    """

    timeout = 120

    def setUp(self) -> None:
        """
        Start a Prosody for Hermod to connect to.
        """
        self.prosody = ProsodyServer(COMPONENT, "hermod-secret")
        self.prosody.start()
        self.addCleanup(self.prosody.stop)
        self.workdir = os.path.abspath(self.mktemp())

    def makeHermod(self, secret: str = "hermod-secret") -> HermodProcess:
        """
        A L{HermodProcess} on SQLite in the test's directory, stopped at the end.
        """
        hermod = HermodProcess(
            {
                "component": {
                    "jid": COMPONENT,
                    "server": f"tcp:host=127.0.0.1:port={self.prosody.componentPort}",
                },
                "storage": {"engine": "sqlite", "path": os.path.join(self.workdir, "h.sqlite")},
            },
            workdir=self.workdir,
            secret=secret,
        )
        self.addCleanup(hermod.stop)
        return hermod

    async def test_startConnectStop(self) -> None:
        """
        Hermod authenticates to Prosody, answers a user's disco#info, shuts down cleanly on
        L{stop}, and starts again on the same SQLite file.
        """
        self.prosody.register("alice", "pw")
        hermod = self.makeHermod()
        hermod.start()
        hermod.waitForLog("Authenticated to")
        alice = await connectClient(
            "alice@localhost/t", "pw", "127.0.0.1", self.prosody.c2sPort
        )
        self.addCleanup(alice.disconnect)
        reply = await alice.iq(
            "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=COMPONENT, type="get"
        )
        identity = reply.find(".//{http://jabber.org/protocol/disco#info}identity")
        assert identity is not None
        self.assertEqual((identity.get("category"), identity.get("type")), ("pubsub", "service"))
        # twistd ends by re-raising the signal that stopped it, after a clean shutdown.
        self.assertEqual(hermod.stop(), -signal.SIGTERM)
        self.assertIn("Server Shut Down.", hermod.logText())
        self.assertTrue(os.path.exists(os.path.join(self.workdir, "h.sqlite")))
        hermod.start()
        hermod.waitForLog("Authenticated to", count=2)
        self.assertTrue(hermod.running())

    def test_killEndsAtOnce(self) -> None:
        """
        L{HermodProcess.kill} ends the process with SIGKILL.
        """
        hermod = self.makeHermod()
        hermod.start()
        hermod.waitForLog("Authenticated to")
        self.assertEqual(hermod.kill(), -signal.SIGKILL)
        self.assertFalse(hermod.running())

    def test_badConfigReported(self) -> None:
        """
        When Hermod exits at start, L{HermodProcess.waitForLog} raises with its log.
        """
        hermod = HermodProcess('[component]\njid = "pubsub.localhost"\n', workdir=self.workdir)
        self.addCleanup(hermod.stop)
        hermod.start()
        error = self.assertRaises(ServerUnavailable, hermod.waitForLog, "Authenticated to")
        self.assertIn("exited before logging", str(error))
        self.assertIn("secret_file", str(error))
