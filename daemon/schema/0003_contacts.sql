-- Phonebook snapshots and call history per phone (issue: PBAP).  A snapshot replaces the
-- previous one for (phone, book) in one transaction: pages arrive as rows of the staging book
-- "<book>:staging" (invisible to every reader), then one transaction deletes the old snapshot and
-- renames the staging book.  A failure part-way leaves the old snapshot untouched; memory stays
-- bounded by one page.
CREATE TABLE contacts (
    id        INTEGER PRIMARY KEY,
    phone     TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    book      TEXT NOT NULL,             -- pb | fav (| pb:staging | fav:staging while pulling)
    pos       INTEGER NOT NULL,          -- order in the phone's listing (handle order)
    uid       TEXT NOT NULL DEFAULT '',
    name      TEXT NOT NULL DEFAULT '',
    search    TEXT NOT NULL DEFAULT '',  -- case-folded, accent-free name/nickname/org
    data      TEXT NOT NULL              -- JSON: numbers, emails, addresses, org, title, ...
);
CREATE INDEX contacts_phone ON contacts(phone, book, pos);
CREATE TABLE contact_numbers (
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    number     TEXT NOT NULL,            -- as the phone sent it
    kind       TEXT NOT NULL DEFAULT '', -- mobile | home | work | ... or the phone's label
    e164       TEXT NOT NULL DEFAULT '',
    tail       TEXT NOT NULL DEFAULT '', -- last digits, for numbers without a country code
    digits     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX contact_numbers_contact ON contact_numbers(contact_id);
CREATE TABLE contact_photos (
    contact_id INTEGER PRIMARY KEY REFERENCES contacts(id) ON DELETE CASCADE,
    mime       TEXT NOT NULL DEFAULT '',
    data       BLOB NOT NULL
);
CREATE TABLE call_history (
    id        INTEGER PRIMARY KEY,
    phone     TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    book      TEXT NOT NULL,             -- ich | och | mch | cch (the folder it came from)
    kind      TEXT NOT NULL DEFAULT '',  -- received | dialed | missed ('' if the phone did not say)
    pos       INTEGER NOT NULL,          -- order in the folder (0 = newest)
    name      TEXT NOT NULL DEFAULT '',
    number    TEXT NOT NULL DEFAULT '',
    e164      TEXT NOT NULL DEFAULT '',
    at        TEXT NOT NULL DEFAULT ''   -- ISO 8601 as sent (local time unless it ends in Z)
);
CREATE INDEX call_history_phone ON call_history(phone, at);
CREATE TABLE pbap_sync (
    phone         TEXT NOT NULL REFERENCES phones(address) ON DELETE CASCADE,
    book          TEXT NOT NULL,
    primary_ctr   TEXT NOT NULL DEFAULT '',
    secondary_ctr TEXT NOT NULL DEFAULT '',
    database_id   TEXT NOT NULL DEFAULT '',
    entries       INTEGER NOT NULL DEFAULT 0,
    synced_at     REAL,
    PRIMARY KEY (phone, book)
);
