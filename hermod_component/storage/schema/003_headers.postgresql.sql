-- XEP-0131 SHIM headers of an item (issue 3, header filters), PostgreSQL dialect: a JSON array of
-- [name, value] pairs, '' for an item without headers.

ALTER TABLE items ADD COLUMN headers TEXT NOT NULL DEFAULT '';
