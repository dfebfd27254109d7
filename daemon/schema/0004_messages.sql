-- Messages and email per phone (issue: MAP).
CREATE TABLE messages (
    phone      TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    handle     TEXT NOT NULL,
    folder     TEXT NOT NULL DEFAULT '',
    type       TEXT NOT NULL DEFAULT '',   -- sms | mms | email
    sender     TEXT NOT NULL DEFAULT '',
    sender_name TEXT NOT NULL DEFAULT '',
    subject    TEXT NOT NULL DEFAULT '',
    body       TEXT,
    received   TEXT NOT NULL DEFAULT '',
    read       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (phone, handle)
);
