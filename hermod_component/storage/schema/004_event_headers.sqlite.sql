-- XEP-0131 SHIM headers of a publish event (issue 3, archived headers), SQLite dialect: the
-- item's headers as a JSON array of [name, value] pairs, '' for none and for other actions, so
-- the archive (MAM) forwards a publish exactly as it was notified.

ALTER TABLE events ADD COLUMN headers TEXT NOT NULL DEFAULT '';
