-- A fingerprint of each stored contact (issue 18): a digest of the card it was derived from (the
-- fields as parsed, numbers as sent, the photo, the car's region and the derivation's version).
-- A resync compares the cards the phone sends with the live snapshot's fingerprints and leaves
-- the contacts whose card did not change where they are (same row, same id, nothing derived or
-- written); only what changed is staged and swapped.  NULL (rows from before) never matches.
ALTER TABLE contacts ADD COLUMN fp BLOB;
