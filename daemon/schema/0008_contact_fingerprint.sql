-- A fingerprint of each stored contact (issue 18): a digest of everything the store keeps for it
-- (row, numbers, photo).  A resync compares the cards the phone sends with the live snapshot's
-- fingerprints and leaves the contacts that did not change where they are (same row, same id, no
-- write); only what changed is staged and swapped.  NULL (rows from before) never matches.
ALTER TABLE contacts ADD COLUMN fp BLOB;
