-- Messages and e-mail per phone (issue: MAP).  One row per (phone, MAP handle); outgoing
-- messages the car sent get handles "out-<n>".  Forgetting a phone deletes its rows (CASCADE).
CREATE TABLE messages (
    phone       TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    handle      TEXT NOT NULL,              -- MAP handle as obexd shows it (decimal), or out-<n>
    folder      TEXT NOT NULL DEFAULT '',   -- inbox | outbox | sent | deleted | draft
    type        TEXT NOT NULL DEFAULT '',   -- sms | mms | email
    direction   TEXT NOT NULL DEFAULT 'in', -- in | out
    sender      TEXT NOT NULL DEFAULT '',   -- number or e-mail address
    sender_name TEXT NOT NULL DEFAULT '',   -- the name the phone gave (contacts resolve at read time)
    recipient   TEXT NOT NULL DEFAULT '',
    subject     TEXT NOT NULL DEFAULT '',
    body        TEXT,                       -- NULL until fetched
    body_state  TEXT NOT NULL DEFAULT 'none', -- none | complete | truncated | broken
    problems    TEXT NOT NULL DEFAULT '[]', -- JSON list: what the parsers had to repair
    attachments TEXT NOT NULL DEFAULT '[]', -- JSON list of {name, type, size}; never fetched
    received    TEXT NOT NULL DEFAULT '',   -- ISO 8601 (phone local time, offset when known)
    size        INTEGER NOT NULL DEFAULT 0,
    read        INTEGER NOT NULL DEFAULT 0,
    stored_at   REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (phone, handle)
);
CREATE INDEX messages_received ON messages(phone, received);
-- Per phone: whether it ever sent a MAP notification (phones that never do are polled while
-- connected) and when it was last synced.
CREATE TABLE map_phones (
    phone       TEXT PRIMARY KEY REFERENCES phones(address) ON DELETE CASCADE,
    notifies    INTEGER NOT NULL DEFAULT 0,
    last_sync   REAL
);
