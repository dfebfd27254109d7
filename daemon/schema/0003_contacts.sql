-- Phonebook snapshots and call history per phone (issue: PBAP).  A snapshot replaces the
-- previous one for (phone, book) in one transaction.
CREATE TABLE contacts (
    id        INTEGER PRIMARY KEY,
    phone     TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    book      TEXT NOT NULL,             -- pb | fav
    handle    TEXT NOT NULL DEFAULT '',
    name      TEXT NOT NULL DEFAULT '',
    data      TEXT NOT NULL              -- JSON: numbers, emails, addresses, org, photo ref
);
CREATE INDEX contacts_phone ON contacts(phone, book);
CREATE TABLE contact_numbers (
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    phone      TEXT NOT NULL,
    e164       TEXT NOT NULL,
    tail       TEXT NOT NULL              -- last digits, for numbers without a country code
);
CREATE INDEX contact_numbers_e164 ON contact_numbers(e164);
CREATE INDEX contact_numbers_tail ON contact_numbers(tail);
CREATE TABLE contact_photos (
    contact_id INTEGER PRIMARY KEY REFERENCES contacts(id) ON DELETE CASCADE,
    mime       TEXT NOT NULL DEFAULT '',
    data       BLOB NOT NULL
);
CREATE TABLE call_history (
    id        INTEGER PRIMARY KEY,
    phone     TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    kind      TEXT NOT NULL,             -- ich | och | mch | cch
    name      TEXT NOT NULL DEFAULT '',
    number    TEXT NOT NULL DEFAULT '',
    at        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX call_history_phone ON call_history(phone, kind);
CREATE TABLE pbap_sync (
    phone         TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    book          TEXT NOT NULL,
    primary_ctr   TEXT NOT NULL DEFAULT '',
    secondary_ctr TEXT NOT NULL DEFAULT '',
    database_id   TEXT NOT NULL DEFAULT '',
    synced_at     REAL,
    PRIMARY KEY (phone, book)
);
