-- Replication (issue 5): the partner subscriptions partner discovery made, so that a run after
-- a stop unsubscribes from those whose contact the application no longer lists.

CREATE TABLE discovered_partners (
    partner TEXT NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (partner, node)
);
