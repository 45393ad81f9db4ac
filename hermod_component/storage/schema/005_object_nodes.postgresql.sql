-- Replication (issue 5): per replicated object, the own nodes it was last published to (a JSON
-- array; a change that moves it out of a node retracts it there) and the partner subscriptions
-- it was received through (a JSON array of "<jid> <node>"; when the last one retracts it, the
-- local copy is removed). '' = not known yet.

ALTER TABLE versions ADD COLUMN nodes TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN sources TEXT NOT NULL DEFAULT '';
