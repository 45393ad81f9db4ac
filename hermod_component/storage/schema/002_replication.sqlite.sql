-- Replication state (issue 5), SQLite dialect: capture positions per backend, partner marks and
-- counters per subscription, the current version of each replicated object, losing versions of
-- concurrent edits, and parked items.

CREATE TABLE positions (
    backend TEXT NOT NULL PRIMARY KEY,
    position TEXT
);

CREATE TABLE partners (
    partner TEXT NOT NULL,
    node TEXT NOT NULL,
    mark TEXT,
    received INTEGER NOT NULL DEFAULT 0,
    applied INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0,
    parked INTEGER NOT NULL DEFAULT 0,
    ignored INTEGER NOT NULL DEFAULT 0,
    last_applied REAL NOT NULL DEFAULT 0,
    lag REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (partner, node)
);

CREATE TABLE versions (
    backend TEXT NOT NULL,
    object_id TEXT NOT NULL,
    version TEXT NOT NULL,
    hash TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (backend, object_id)
);

CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY,
    backend TEXT NOT NULL,
    object_id TEXT NOT NULL,
    loser TEXT NOT NULL,
    winner TEXT NOT NULL,
    payload BLOB NOT NULL,
    time REAL NOT NULL
);

CREATE TABLE parked (
    id INTEGER PRIMARY KEY,
    backend TEXT NOT NULL,
    partner TEXT NOT NULL,
    node TEXT NOT NULL,
    object_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    waiting_for TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    time REAL NOT NULL
);
CREATE INDEX parked_waiting ON parked (backend, waiting_for);
