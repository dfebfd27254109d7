-- Cheaper bulk loads (issue 18): the display-order and identity indexes hold only the rows their
-- readers look up, so a staged snapshot ("<book>:staging") is not indexed twice (once when staged,
-- again when renamed into its book at the swap).  contacts_sort serves List/Index, which read
-- book='pb' only; contacts_ident serves the favourite check (book='fav' AND ident=?), the only
-- lookup by ident (the swap matches idents in Python).  A reader must repeat the index's WHERE
-- term verbatim (c.book='pb', f.book='fav') for SQLite to use it.  contacts_phone (phone, book,
-- pos) still covers every row, staging included.
DROP INDEX IF EXISTS contacts_sort;
DROP INDEX IF EXISTS contacts_ident;
CREATE INDEX contacts_sort ON contacts(phone, sortkey, name, id) WHERE book = 'pb';
CREATE INDEX contacts_fav_ident ON contacts(phone, ident) WHERE book = 'fav';
