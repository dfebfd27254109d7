-- Navigation intents and their durable delivery queue (issue: MAP/navigation; the cloud feeds
-- send-to-car destinations into the same table).  States: offered -> accepted -> delivered, or
-- dismissed / expired.  An accepted intent stays until the navigation service answered its
-- call (delivered exactly once from our side) or it expires.
CREATE TABLE nav_intents (
    id              TEXT PRIMARY KEY,
    dedup_key       TEXT NOT NULL UNIQUE,      -- the same destination from the same source = one intent
    source          TEXT NOT NULL,             -- message | cloud | ...
    source_ref      TEXT NOT NULL DEFAULT '',  -- message id, cloud request id
    phone           TEXT REFERENCES phones(address) ON DELETE CASCADE,
    kind            TEXT NOT NULL,             -- coordinates | query | link
    label           TEXT NOT NULL DEFAULT '',
    lat             REAL,
    lon             REAL,
    query           TEXT NOT NULL DEFAULT '',
    url             TEXT NOT NULL DEFAULT '',
    confidence      REAL NOT NULL DEFAULT 1.0,
    state           TEXT NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL NOT NULL,
    accepted_at     REAL,
    delivered_at    REAL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX nav_intents_state ON nav_intents(state, accepted_at);
