-- Stable contact ids and a display order (issue 15 item 13).  ident is the contact's identity on
-- its phone ("u:<UID>" when the card has a UID, else "h:<hash of its normalised name and
-- numbers>"): when a snapshot replaces the previous one, a staged contact with the ident of an old
-- one takes over the old row id, so an id a dashboard holds stays valid across re-syncs of the same
-- card.  sortkey orders contacts for display (List, Index): the case-folded, accent-free name,
-- "~"-prefixed when it does not start with a letter A-Z (those come last, under "#").
ALTER TABLE contacts ADD COLUMN ident TEXT NOT NULL DEFAULT '';
ALTER TABLE contacts ADD COLUMN sortkey TEXT NOT NULL DEFAULT '';
UPDATE contacts SET sortkey = lower(name);
CREATE INDEX contacts_ident ON contacts(phone, book, ident);
CREATE INDEX contacts_sort ON contacts(phone, book, sortkey);
