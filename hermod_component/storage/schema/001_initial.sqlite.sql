-- Hermod's initial schema, SQLite dialect. Timestamps are POSIX seconds (REAL).
-- Node-scoped tables cascade when their node is deleted; the event log does not.

CREATE TABLE nodes (
    identifier TEXT NOT NULL PRIMARY KEY,
    config TEXT NOT NULL,            -- NodeConfig as a JSON object
    creator TEXT NOT NULL,
    created REAL NOT NULL
);

CREATE TABLE affiliations (
    node TEXT NOT NULL REFERENCES nodes (identifier) ON DELETE CASCADE,
    jid TEXT NOT NULL,               -- bare JID
    affiliation TEXT NOT NULL,
    PRIMARY KEY (node, jid)
);
CREATE INDEX affiliations_jid ON affiliations (jid, node);

CREATE TABLE subscriptions (
    seq INTEGER PRIMARY KEY,         -- creation order
    node TEXT NOT NULL REFERENCES nodes (identifier) ON DELETE CASCADE,
    subid TEXT NOT NULL,
    jid TEXT NOT NULL,               -- as subscribed, bare or full
    jid_bare TEXT NOT NULL,
    state TEXT NOT NULL,
    options TEXT NOT NULL,           -- JSON object of string lists
    UNIQUE (node, subid)
);
CREATE INDEX subscriptions_node ON subscriptions (node, seq);
CREATE INDEX subscriptions_jid_bare ON subscriptions (jid_bare, node);

CREATE TABLE items (
    seq INTEGER PRIMARY KEY,         -- publish order; a republished item gets a new one
    node TEXT NOT NULL REFERENCES nodes (identifier) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    publisher TEXT NOT NULL,
    published REAL NOT NULL,
    UNIQUE (node, item_id)
);
CREATE INDEX items_node_seq ON items (node, seq);
CREATE INDEX items_node_published ON items (node, published);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused
    node TEXT NOT NULL,
    action TEXT NOT NULL,
    item_id TEXT,
    publisher TEXT NOT NULL,
    payload BLOB NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX events_node_id ON events (node, id);
