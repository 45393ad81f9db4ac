-- Prosody (0.12) snippet for Hermod: add to /etc/prosody/prosody.cfg.lua (or a file under
-- /etc/prosody/conf.d/) and run `prosodyctl reload`.
--
-- Hermod connects as an external component (XEP-0114). Its [component] section must match:
--   jid = "pubsub.example.org"
--   secret_file = "/etc/hermod/component.secret"   -- holds the same secret as below
--   server = "tcp:host=127.0.0.1:port=5347"

---------------------------------------------------------------------------------------------------
-- Global section: these lines must come before the first VirtualHost/Component line, because
-- everything after such a line belongs to that host.

-- The component port. Keep it on loopback (or a private network): the handshake is a SHA-1 of
-- the stream id and the secret, and the stream itself is not encrypted.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Largest stanza accepted from a component (default 512 KiB, or s2s_stanza_size_limit).
-- Keep it above Hermod's pubsub.max_payload_size plus the envelope.
-- component_stanza_size_limit = 1024 * 1024

-- What happens when a second connection claims the component's JID:
--   "kick_new" (default): the new one is refused with a <conflict/> stream error. Hermod logs
--     "refused component ...: conflict" and retries with backoff until the old connection is
--     gone; after a crash that left a half-open TCP connection this may take a while.
--   "kick_old": the new one replaces the old one. Faster recovery after a crash, but two
--     Hermods started with the same JID by mistake would keep replacing each other.
-- component_conflict_resolve = "kick_new"

---------------------------------------------------------------------------------------------------
-- A firehose: many items per second to many subscribers.
--
-- mod_limits throttles what Prosody READS from c2s and incoming s2s connections (Debian's
-- default config sets c2s to 10 kb/s). Component connections are not throttled by it, but
-- publishers and subscribers talking to Hermod through c2s (and partner servers over s2s) are:
-- raise the rates, or exempt the publishing accounts.
limits = {
	c2s = { rate = "512kb/s"; burst = "2s" };
	s2sin = { rate = "1mb/s"; burst = "2s" };
}
-- Accounts that are never throttled (for example the publishers of a firehose):
-- unlimited_jids = { "publisher@example.org" }
--
-- Or leave "limits" out of modules_enabled entirely on a dedicated server.

-- Prosody is single-threaded; the generational Lua GC measurably raised component-path
-- throughput (about 1.7x in Hermod's benchmark) over the incremental default.
gc = { mode = "generational" }

-- Subscribers that cannot keep up are disconnected when their send buffer fills; a server that
-- has handled many short-lived sessions slows down over time: restart it between load tests.

---------------------------------------------------------------------------------------------------
-- Host section (after the VirtualHost "example.org" section, at the end of the file)

Component "pubsub.example.org"
	component_secret = "CHANGE-ME-same-as-/etc/hermod/component.secret"
	-- Optional: the name shown in Prosody's own disco (Hermod answers disco itself).
	-- name = "Hermod publish-subscribe"
