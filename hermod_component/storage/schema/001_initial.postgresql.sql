-- Hermod's initial schema, PostgreSQL dialect. Timestamps are POSIX seconds (DOUBLE PRECISION).
-- Node-scoped tables cascade when their node is deleted; the event log does not.
-- Names and JIDs use the "C" collation so that ORDER BY is code point order on every database.

CREATE TABLE nodes (
    identifier TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    config TEXT NOT NULL,            -- NodeConfig as a JSON object
    creator TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);

CREATE TABLE affiliations (
    node TEXT COLLATE "C" NOT NULL REFERENCES nodes (identifier) ON DELETE CASCADE,
    jid TEXT COLLATE "C" NOT NULL,   -- bare JID
    affiliation TEXT NOT NULL,
    PRIMARY KEY (node, jid)
);
CREATE INDEX affiliations_jid ON affiliations (jid, node);

CREATE TABLE subscriptions (
    node TEXT COLLATE "C" NOT NULL REFERENCES nodes (identifier) ON DELETE CASCADE,
    subid TEXT COLLATE "C" NOT NULL,
    jid TEXT COLLATE "C" NOT NULL,   -- as subscribed, bare or full
    jid_bare TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    options TEXT NOT NULL,           -- JSON object of string lists
    seq BIGSERIAL NOT NULL,          -- creation order
    PRIMARY KEY (node, subid)
);
CREATE INDEX subscriptions_node ON subscriptions (node, seq);
CREATE INDEX subscriptions_jid_bare ON subscriptions (jid_bare, node);

CREATE SEQUENCE item_order;

CREATE TABLE items (
    node TEXT COLLATE "C" NOT NULL REFERENCES nodes (identifier) ON DELETE CASCADE,
    item_id TEXT COLLATE "C" NOT NULL,
    payload BYTEA NOT NULL,
    publisher TEXT NOT NULL,
    published DOUBLE PRECISION NOT NULL,
    seq BIGINT NOT NULL DEFAULT nextval('item_order'),  -- publish order; renewed on republish
    PRIMARY KEY (node, item_id)
);
CREATE INDEX items_node_seq ON items (node, seq);
CREATE INDEX items_node_published ON items (node, published);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    node TEXT COLLATE "C" NOT NULL,
    action TEXT NOT NULL,
    item_id TEXT COLLATE "C",
    publisher TEXT NOT NULL,
    payload BYTEA NOT NULL,
    time DOUBLE PRECISION NOT NULL
);
CREATE INDEX events_node_id ON events (node, id);
