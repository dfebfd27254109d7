-- Navigation intents and their durable delivery queue (issue: MAP/navigation; fed by cloud).
CREATE TABLE nav_intents (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,              -- message | cloud
    source_ref  TEXT NOT NULL DEFAULT '',
    phone       TEXT,
    label       TEXT NOT NULL DEFAULT '',
    lat         REAL,
    lon         REAL,
    query       TEXT NOT NULL DEFAULT '',
    confidence  REAL NOT NULL DEFAULT 1.0,
    state       TEXT NOT NULL,              -- offered | accepted | delivered | dismissed | expired
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX nav_intents_state ON nav_intents(state);
