-- The registry of paired phones (issue: pairing).  Everything else about a phone hangs off
-- its address with ON DELETE CASCADE, so forgetting a phone deletes what the car stored.
CREATE TABLE phones (
    address        TEXT PRIMARY KEY,
    name           TEXT NOT NULL DEFAULT '',
    priority       INTEGER NOT NULL DEFAULT 100,
    profiles       TEXT NOT NULL DEFAULT '[]',
    paired_at      REAL NOT NULL,
    last_connected REAL,
    connected_once INTEGER NOT NULL DEFAULT 0
);
