-- Cloud outbox and state (issue: cloud).  See docs/cloud-protocol.md and daemon/cloud/.
-- Every outbound write is a row here, committed (synchronous=FULL) before it is sent.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    coalesce_key    TEXT NOT NULL DEFAULT '',
    payload         TEXT NOT NULL,
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'refused'))
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at, id);
-- Small facts: discovery result, remembered redirects, registration/link state, consents.
CREATE TABLE cloud_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The last good entitlement document (one row); an invalid document never replaces it.
CREATE TABLE cloud_entitlements (
    slot        INTEGER PRIMARY KEY CHECK (slot = 1),
    jws         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    etag        TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL
);
-- Send-to-car destinations seen: new (not yet handed to navigation), handed_off (ack queued),
-- acked (the backend has the acknowledgement), rejected (unusable; a rejection ack is queued).
CREATE TABLE cloud_destinations (
    id          TEXT PRIMARY KEY,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('new', 'handed_off', 'acked', 'rejected')),
    intent_id   TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    updated_at  REAL NOT NULL
);
