-- The registry of paired phones (issue: pairing).  Everything else about a phone hangs off
-- its address with ON DELETE CASCADE, so forgetting a phone deletes what the car stored.
-- priority: lower comes first (0 = the primary phone when it is connected).
CREATE TABLE phones (
    address        TEXT PRIMARY KEY,
    name           TEXT NOT NULL DEFAULT '',
    priority       INTEGER NOT NULL DEFAULT 100,
    profiles       TEXT NOT NULL DEFAULT '[]',
    paired_at      REAL NOT NULL,
    last_connected REAL,
    connected_once INTEGER NOT NULL DEFAULT 0,
    needs_repair   INTEGER NOT NULL DEFAULT 0   -- the phone lost its key: offer forget + re-pair
);
-- Phones forgotten while bluetoothd was away: their BlueZ bond is removed when it is back.
-- Only the address is kept, and only until the removal succeeded.
CREATE TABLE phone_removals (
    address    TEXT PRIMARY KEY,
    requested  REAL NOT NULL
);
