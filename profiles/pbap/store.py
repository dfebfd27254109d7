"""Contacts and call history in SQLite: staged snapshots swapped in one transaction, plus the reads
the API and caller ID need.  Runs on the event-loop thread (statements are short; the biggest, the
swap of a 5,000-contact snapshot, takes tens of milliseconds: ~25 ms for a first sync, its commit
included; the WAL checkpoint after it runs on the store's own thread, see daemon/store.py).

A snapshot is pulled page by page; each page's rows are derived as it comes.  While they come to
at most :data:`HELD_MAX` bytes (by :func:`_held_cost`; the bench's 5,000 contacts, one in ten with
a 4 KB photo, are ~5.8 MB) they are held in memory and written by the swap itself, straight into
the book: one transaction, no staging rows written and then renamed (measured: 26 ms of SQLite
instead of 34 ms for the bench's first sync; the price is that memory and one longer swap, ~25 ms
for 5,000 contacts).  Beyond, what is held goes to ``<book>:staging`` and the rest of the snapshot
follows page by page, each page its own small transaction, so memory stays bounded however many
photos the phone has.  :meth:`commit_snapshot` then replaces the phone's previous snapshot of that
book in ONE transaction.  Until then the old snapshot is what everyone sees; a failure part-way
(:meth:`abort_snapshot`, or a crash: held rows are gone, staging is cleared at start-up) leaves it
intact, and nothing can be duplicated because the swap deletes before it inserts, atomically.

A resync only writes what changed: each contact keeps a fingerprint of the card it came from
(``fp``, migration 0008); :meth:`begin_snapshot` loads the live book's fingerprints, and a staged
card whose fingerprint a live contact has is not derived, normalised or written at all -- that
contact is kept as it is (same row, same id) and only its position is updated at the swap.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dashbridge.daemon.store import Store

from ..limits import MAX_NAME, clip
from .callerid import IndexEntry, Normalizer
from .vcard import VCard

PHONEBOOKS = ("pb", "fav")
STAGING = ":staging"
_EMPTY = "{}"
HISTORY_BOOKS = ("ich", "och", "mch", "cch")
_KIND_OF_BOOK = {"ich": "received", "och": "dialed", "mch": "missed"}
_INSERT_CONTACT = "INSERT INTO contacts(id, phone, book, pos, uid, name, search, data, ident, sortkey, fp) VALUES "
_CONTACT_COLS = 11
_INSERT_NUMBER = "INSERT INTO contact_numbers(contact_id, number, kind, e164, tail, digits) VALUES "
_NUMBER_COLS = 6
# Rows per multi-row INSERT: the sizes a page is cut into (a few distinct statements, each prepared
# once: the connection's statement cache), within SQLite's limit on bound values per statement.
_CHUNK_ROWS = (256, 64, 16, 4, 1)
_SQL: dict[tuple[str, int], str] = {}
_INSERT_PHOTO = "INSERT INTO contact_photos(contact_id, mime, data) VALUES (?,?,?)"


_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def fold(text: str) -> str:
    """Case-folded, accent-free text for searching ("Zoë" matches "zoe").  Text that is not ASCII
    is folded word by word (words split at spaces), each distinct word once (cached, bounded): a
    space is a starter that NFKD leaves alone and nothing reorders across, and case folding and
    dropping combining marks go character by character, so the words folded apart and joined are
    the text folded whole (tests/unit/test_pbap_store_fold.py checks it)."""
    if text.isascii():
        return text.casefold()
    get = _FOLDED.get
    words = text.split(" ")
    if len(_FOLDED) > _FOLDED_MAX:
        _FOLDED.clear()
    out = []
    for w in words:
        f = get(w)
        if f is None:
            f = _FOLDED[w] = _fold_word(w)
        out.append(f)
    return " ".join(out)


_FOLDED: dict[str, str] = {}
_FOLDED_MAX = 4096


def _fold_word(text: str) -> str:
    if text.isascii():
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    if not decomposed.isascii():
        decomposed = _COMBINING.sub("", decomposed)
    return decomposed.casefold()


_SORT_STRIP = " \t\"'([{.-_*+#@!?¡¿"


def sort_key(name: str) -> str:
    """How contacts are ordered for display (``List``, ``Index``): the folded name without leading
    punctuation; names not starting with a letter a-z (digits, other scripts, empty) sort after
    "z" behind a "~" and are listed under "#"."""
    s = fold(name).lstrip(_SORT_STRIP)
    return s if s[:1].isascii() and s[:1].isalpha() else "~" + s


def letter_of(key: str) -> str:
    """The index letter of a sort key: "A".."Z", or "#"."""
    return key[0].upper() if key[:1].isascii() and key[:1].isalpha() else "#"


def identity(uid: str, name: str, digits: Iterable[str]) -> str:
    """A contact's identity on its phone, the same for the same card in every sync: its UID when
    it has one, else a hash of its normalised name and numbers."""
    if uid.strip():
        return "u:" + uid.strip()
    text = fold(" ".join(name.split())) + "\x1f" + "\x1f".join(sorted(set(d for d in digits if d)))
    return "h:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class Counters:
    primary: str = ""
    secondary: str = ""
    database_id: str = ""

    @property
    def known(self) -> bool:
        return bool(self.primary or self.secondary)


@dataclass(frozen=True)
class BookState:
    counters: Counters
    entries: int
    synced_at: float | None


_TEL_TYPES: dict[tuple[str, ...], str] = {}


def _tel_type(types: tuple[str, ...]) -> str:
    """The one type to show for a number ("mobile", "home", ...); cached per type tuple."""
    got = _TEL_TYPES.get(types)
    if got is None:
        got = types[0] if types else ""
        for t in ("cell", "home", "work", "fax", "pager", "main", "iphone", "car", "voice"):
            if t in types:
                got = "mobile" if t in ("cell", "iphone") else t
                break
        if len(_TEL_TYPES) < 1024:
            _TEL_TYPES[types] = got
    return got


class ContactStore:
    def __init__(self, store: Store, normalizer: Normalizer) -> None:
        self.store = store
        self.normalizer = normalizer
        # The salt for the parser's card digests (VCardParser(digest_salt=...)): a card parsed with
        # it has a digest that is already its fingerprint (see _fingerprint), no second hash.
        self.digest_salt = fingerprint_salt(normalizer.region)
        # Per (phone, book) being staged: the live snapshot's contents (begin_snapshot) and the
        # live contacts a staged card matched, [(id, old pos, ident, new pos), ...] (kept at the swap).
        self._live: dict[tuple[str, str], dict[bytes | None, list[tuple[int, int, str]]]] = {}
        self._kept: dict[tuple[str, str], list[tuple[int, int, str, int]]] = {}
        # Per (phone, book) being staged: the rows held for the swap (until they outgrow HELD_MAX).
        self._held: dict[tuple[str, str], _Held] = {}

    # -- snapshots --------------------------------------------------------------------------------
    def phone_known(self, phone: str) -> bool:
        row = self.store.execute("SELECT 1 FROM phones WHERE address=?", (phone,)).fetchone()
        return row is not None

    def clear_staging(self, phone: str | None = None) -> None:
        """Drop half-pulled snapshots (a crash mid-sync leaves them; nobody reads them)."""
        with self.store.transaction() as db:
            if phone is None:
                db.execute("DELETE FROM contacts WHERE book LIKE '%:staging'")
            else:
                db.execute("DELETE FROM contacts WHERE phone=? AND book LIKE '%:staging'", (phone,))

    def begin_snapshot(self, phone: str, book: str) -> None:
        """Start staging ``book``: clear any old staging, and remember what the live snapshot holds
        (each contact's fingerprint: a digest of the card it came from) so :meth:`stage` can skip the cards the
        phone sent unchanged: a resync only writes what changed (see :meth:`_swap`)."""
        self.abort_snapshot(phone, book)
        self._live[(phone, book)] = self._load_live(phone, book)
        self._held[(phone, book)] = _Held()

    def abort_snapshot(self, phone: str, book: str) -> None:
        self._live.pop((phone, book), None)
        self._kept.pop((phone, book), None)
        self._held.pop((phone, book), None)
        with self.store.transaction() as db:
            db.execute("DELETE FROM contacts WHERE phone=? AND book=?", (phone, book + STAGING))

    def _load_live(self, phone: str, book: str) -> dict[bytes | None, list[tuple[int, int, str]]]:
        """fingerprint -> [(id, pos, ident), ...] (phone order) of the live snapshot of ``book``
        (every live contact: those without a fingerprint under None, never matched)."""
        live: dict[bytes | None, list[tuple[int, int, str]]] = {}
        for fp, cid, pos, ident in self.store.execute("SELECT fp, id, pos, ident FROM contacts WHERE phone=? AND"
                                                      " book=? ORDER BY pos", (phone, book)):
            live.setdefault(fp, []).append((cid, pos, ident))
        return live

    def stage(self, phone: str, book: str, start_pos: int, cards: Iterable[VCard]) -> int:
        """Stage one page (positions ``start_pos``...); returns how many.  The rows are built
        first, every value derived once per card (numbers through the normaliser's cache), then
        held for the swap (see the module's doc) or written in the page's own transaction with
        multi-row INSERTs (statements prepared once: the connection's statement cache)."""
        number_key = self.normalizer.key_uncached  # a bulk load: nearly every number is new
        staging = book + STAGING
        rows: list[Any] = []  # the contacts' values, row after row (_CONTACT_COLS each)
        nums: list[Any] = []  # the numbers' values, row after row (_NUMBER_COLS each)
        photos: list[tuple[Any, ...]] = []
        # Ids follow the positions, above every id there is (and after the pages held); if
        # something takes them before the rows are written, _free_ids moves them up then.
        (base,) = self.store.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM contacts").fetchone()
        held = self._held.get((phone, book))
        cid = int(base) if held is None else max(int(base), held.next_id)  # after the pages held
        pos = start_pos
        live = self._live.get((phone, book)) or None  # an empty book (a first sync): nothing to match
        kept = self._kept.setdefault((phone, book), []) if live is not None else []
        region = self.normalizer.region
        salt = self.digest_salt
        tel_type, fold_, ident_of, mime_of = _tel_type, fold, identity, _mime
        known_type = _TEL_TYPES.get  # _tel_type's cache, looked up without the call
        n = 0
        for card in cards:
            n += 1
            # = _fingerprint(card, region), its common case inlined
            fp = card.digest if card.digest_salt == salt and card.digest else _fingerprint(card, region)
            if live is not None:
                same = live.get(fp)
                if same:
                    # The live snapshot holds this very card: its contact stays as it is (same
                    # row, same id, nothing derived or written), only its position may change.
                    kept.append((*same.pop(0), pos))
                    pos += 1
                    continue
            # Derived in one pass, each value once (the folded name serves search and sort key).
            name = card.fn.strip() or card.display_name
            if len(name) > MAX_NAME:
                name = clip(name, MAX_NAME)
            tels = card.tels
            first_num = len(nums)
            if tels:
                if not name:
                    name = tels[0].number
                for t in tels:
                    number = t.number
                    nums += (cid, number, t.label or known_type(t.types) or tel_type(t.types), *number_key(number))
            nickname, org = card.nickname, card.org
            data = _EMPTY
            if card.emails or card.addresses or org or card.title or nickname or card.bday:
                data = _extra_json(card)
            folded = name.casefold() if name.isascii() else fold_(name)
            search = folded if not (nickname or org) else fold_(" ".join(x for x in (name, nickname, org) if x))
            key = folded.lstrip(_SORT_STRIP)
            if not (key[:1].isascii() and key[:1].isalpha()):
                key = "~" + key
            uid = card.uid
            u = uid.strip()
            ident = "u:" + u if u else ident_of(uid, name, nums[first_num + 5::_NUMBER_COLS])  # their digits
            rows += (cid, phone, staging, pos, uid, name, search, data, ident, key, fp)
            if card.photo:
                photos.append((cid, mime_of(card.photo_type), card.photo))
            pos += 1
            cid += 1
        if not rows:
            return n
        if held is not None:
            held.next_id = cid
            cost = _held_cost(rows, nums, photos)
            held.rows += rows
            held.nums += nums
            held.photos += photos
            held.cost += cost
            if held.cost <= HELD_MAX:
                return n
            # Too much to hold: what is held goes to staging, and so does the rest of the snapshot.
            del self._held[(phone, book)]
            rows, nums, photos = held.rows, held.nums, held.photos
        with self.store.transaction() as db:
            _free_ids(db, rows, nums, photos)
            _insert_all(db, rows, nums, photos)
        return n

    def commit(self, phone: str, staged: Mapping[str, Counters], histories: Mapping[str, Sequence[VCard]],
               unchanged: Iterable[str] = (), *, now: float | None = None) -> tuple[int, int]:
        """One sync's result in ONE transaction: staged books swapped in, call history replaced,
        unchanged books stamped.  Returns (contacts in ``pb``, call-history entries)."""
        now = time.time() if now is None else now
        with self.store.transaction() as db:
            for book, counters in staged.items():
                n = self._swap(db, phone, book)
                self._set_state(db, phone, book, counters, n, now)
            for book, cards in histories.items():
                self._history(db, phone, book, cards)
                self._set_state(db, phone, book, Counters(), len(cards), now)
            for book in unchanged:
                db.execute("UPDATE pbap_sync SET synced_at=? WHERE phone=? AND book=?", (now, phone, book))
        return self.counts(phone)

    def commit_snapshot(self, phone: str, book: str, counters: Counters, *, now: float | None = None) -> int:
        """Replace the phone's snapshot of ``book`` with what is staged, atomically."""
        with self.store.transaction() as db:
            n = self._swap(db, phone, book)
            self._set_state(db, phone, book, counters, n, now)
        return n

    def _swap(self, db: sqlite3.Connection, phone: str, book: str) -> int:
        """Inside a transaction: the staged snapshot of ``book`` replaces the live one.  Live
        contacts a staged card matched exactly (:meth:`stage`) stay in place (their new positions
        written); the other live ones go, and the staged rows are renamed into the book.  A staged
        contact with the identity of a live one that goes takes over its row id (in the phone's
        order when a card is there twice), so ids stay stable across re-syncs of the same cards."""
        live = self._live.pop((phone, book), None)
        kept = self._kept.pop((phone, book), [])
        held = self._held.pop((phone, book), None)
        gone: list[tuple[int, str]]
        if live is None:  # not begun on this store object: every live contact goes
            gone = [(int(c), str(i)) for c, i in db.execute(
                "SELECT id, ident FROM contacts WHERE phone=? AND book=? ORDER BY pos", (phone, book))]
        else:  # what no staged card matched, in the phone's order
            gone = [(c, i) for _, c, i in sorted((p, c, i) for rows in live.values() for c, p, i in rows)]
        (present,) = db.execute("SELECT COUNT(*) FROM contacts WHERE phone=? AND book=?", (phone, book)).fetchone()
        if present != len(kept) + len(gone):  # the live snapshot changed since begin_snapshot: not ours to guess
            raise RuntimeError(f"{book}: the live snapshot changed during the sync")
        pool: dict[str, list[int]] = {}
        for cid, ident in gone:
            if ident:
                pool.setdefault(ident, []).append(cid)
        if held is not None and held.rows:
            # the held rows' ids are above every id there is, the gone contacts' included
            _free_ids(db, held.rows, held.nums, held.photos)
        if gone:
            db.executemany("DELETE FROM contacts WHERE id=?", [(c,) for c, _ in gone])
        moved = [(new, cid) for cid, old, _, new in kept if new != old]
        if moved:
            db.executemany("UPDATE contacts SET pos=? WHERE id=?", moved)
        if held is not None:
            return len(kept) + self._insert_held(db, book, held, pool)
        moves: list[tuple[int, int]] = []
        if pool:
            for sid, ident in db.execute("SELECT id, ident FROM contacts WHERE phone=? AND book=? ORDER BY pos",
                                         (phone, book + STAGING)).fetchall():
                ids = pool.get(ident)
                if ids:
                    moves.append((ids.pop(0), int(sid)))
        if moves:
            # Staged ids are above every live id (MAX(id)+1 when staged), so an old id is free
            # once the live rows are gone; the children follow within the same transaction.
            db.execute("PRAGMA defer_foreign_keys=ON")
            db.executemany("UPDATE contacts SET id=? WHERE id=?", moves)
            db.executemany("UPDATE contact_numbers SET contact_id=? WHERE contact_id=?", moves)
            db.executemany("UPDATE contact_photos SET contact_id=? WHERE contact_id=?", moves)
        n = db.execute("UPDATE contacts SET book=? WHERE phone=? AND book=?",
                       (book, phone, book + STAGING)).rowcount
        return int(n) + len(kept)

    @staticmethod
    def _insert_held(db: sqlite3.Connection, book: str, held: _Held, pool: dict[str, list[int]]) -> int:
        """Inside the swap: the held rows straight into ``book``.  A held contact with the identity
        of a live one that went takes over its id (in the phone's order), as a staged one would."""
        rows, nums, photos = held.rows, held.nums, held.photos
        count = len(rows) // _CONTACT_COLS
        if not count:
            return 0
        if pool:
            ids: dict[int, int] = {}
            for cid, ident in zip(rows[0::_CONTACT_COLS], rows[8::_CONTACT_COLS], strict=True):
                old = pool.get(ident)
                if old:
                    ids[cid] = old.pop(0)
            if ids:
                _renumber(rows, nums, photos, lambda c: ids.get(c, c))
        rows[2::_CONTACT_COLS] = [book] * count
        _insert_all(db, rows, nums, photos)
        return count

    @staticmethod
    def _set_state(db: sqlite3.Connection, phone: str, book: str, counters: Counters, n: int,
                   now: float | None) -> None:
        db.execute("INSERT OR REPLACE INTO pbap_sync(phone, book, primary_ctr, secondary_ctr, database_id, entries,"
                   " synced_at) VALUES (?,?,?,?,?,?,?)",
                   (phone, book, counters.primary, counters.secondary, counters.database_id, n,
                    time.time() if now is None else now))

    def mark_unchanged(self, phone: str, book: str, *, now: float | None = None) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE pbap_sync SET synced_at=? WHERE phone=? AND book=?",
                       (time.time() if now is None else now, phone, book))

    def replace_history(self, phone: str, book: str, cards: Sequence[VCard], *, now: float | None = None) -> int:
        with self.store.transaction() as db:
            self._history(db, phone, book, cards)
            self._set_state(db, phone, book, Counters(), len(cards), now)
        return len(cards)

    def _history(self, db: sqlite3.Connection, phone: str, book: str, cards: Sequence[VCard]) -> None:
        e164 = self.normalizer.e164
        rows = []
        for pos, c in enumerate(cards):
            number = c.tels[0].number if c.tels else ""
            kind = c.call_type or _KIND_OF_BOOK.get(book, "")
            rows.append((phone, book, kind, pos, clip(c.display_name, MAX_NAME), number,
                         (e164(number) or "") if number else "", c.call_datetime))
        db.execute("DELETE FROM call_history WHERE phone=? AND book=?", (phone, book))
        db.executemany("INSERT INTO call_history(phone, book, kind, pos, name, number, e164, at)"
                       " VALUES (?,?,?,?,?,?,?,?)", rows)

    def wipe_phone(self, phone: str) -> None:
        """Everything the car holds about this phone's contacts and calls (keeps the phone row)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM contacts WHERE phone=?", (phone,))
            db.execute("DELETE FROM call_history WHERE phone=?", (phone,))
            db.execute("DELETE FROM pbap_sync WHERE phone=?", (phone,))

    # -- reads ------------------------------------------------------------------------------------
    def book_state(self, phone: str, book: str) -> BookState | None:
        row = self.store.execute("SELECT primary_ctr, secondary_ctr, database_id, entries, synced_at FROM pbap_sync"
                                 " WHERE phone=? AND book=?", (phone, book)).fetchone()
        if row is None:
            return None
        return BookState(Counters(row[0], row[1], row[2]), int(row[3]), row[4])

    def phones_with_data(self) -> list[str]:
        rows = self.store.execute("SELECT DISTINCT phone FROM contacts WHERE book IN ('pb', 'fav')").fetchall()
        return [r[0] for r in rows]

    def index_entries(self, phone: str) -> list[IndexEntry]:
        rows = self.store.execute(
            "SELECT c.id, c.name, n.e164, n.tail, n.digits FROM contacts c JOIN contact_numbers n"
            " ON n.contact_id = c.id WHERE c.phone=? AND c.book IN ('pb', 'fav') ORDER BY c.book DESC, c.pos",
            (phone,)).fetchall()
        # "pb" before "fav" (DESC), then the phone's order: the first contact with a number wins.
        return [IndexEntry(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def counts(self, phone: str) -> tuple[int, int]:
        (c,) = self.store.execute("SELECT COUNT(*) FROM contacts WHERE phone=? AND book='pb'",
                                  (phone,)).fetchone()
        (h,) = self.store.execute("SELECT COUNT(*) FROM call_history WHERE phone=?", (phone,)).fetchone()
        return int(c), int(h)

    def last_synced(self, phone: str) -> float | None:
        (t,) = self.store.execute("SELECT MAX(synced_at) FROM pbap_sync WHERE phone=?", (phone,)).fetchone()
        return float(t) if t is not None else None

    def search(self, text: str, limit: int, phones: Sequence[str]) -> list[tuple[int, str, str, str]]:
        """(id, name, phone, first number) of contacts whose name/nickname/org contains ``text``
        (case- and accent-insensitive) or whose number contains its digits."""
        if not phones:
            return []
        marks = ",".join("?" * len(phones))
        needle = fold(text.strip())
        digits = "".join(ch for ch in text if ch.isdigit())
        like = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = (f"SELECT id, name, phone FROM contacts WHERE phone IN ({marks}) AND book='pb' AND"
               f" (search LIKE ? ESCAPE '\\'")
        params: list[Any] = [*phones, like]
        if len(digits) >= 3:
            sql += " OR id IN (SELECT contact_id FROM contact_numbers WHERE digits LIKE ?)"
            params.append(f"%{digits}%")
        sql += ") ORDER BY search, id LIMIT ?"
        params.append(limit)
        out = []
        for cid, name, phone in self.store.execute(sql, tuple(params)).fetchall():
            first = self.store.execute("SELECT number FROM contact_numbers WHERE contact_id=? LIMIT 1",
                                       (cid,)).fetchone()
            out.append((int(cid), name, phone, first[0] if first else ""))
        return out

    _ROW = ("SELECT c.id, c.name, c.sortkey, (SELECT number FROM contact_numbers WHERE contact_id=c.id"
            " ORDER BY rowid LIMIT 1), c.book = 'fav' OR (c.ident != '' AND EXISTS (SELECT 1 FROM contacts f"
            " WHERE f.phone=c.phone AND f.book='fav' AND f.ident=c.ident)) FROM contacts c")

    def list_contacts(self, phone: str, offset: int, count: int) -> tuple[int, list[dict[str, Any]]]:
        """(how many contacts the phone has, ``count`` of them from ``offset`` in display order)."""
        (total,) = self.store.execute("SELECT COUNT(*) FROM contacts WHERE phone=? AND book='pb'",
                                      (phone,)).fetchone()
        rows = self.store.execute(self._ROW + " WHERE c.phone=? AND c.book='pb' ORDER BY c.sortkey, c.name, c.id"
                                  " LIMIT ? OFFSET ?", (phone, count, offset)).fetchall()
        return int(total), [self._row(r, phone) for r in rows]

    def favourites(self, phone: str) -> list[dict[str, Any]]:
        """The phone's favourites, in the phone's order."""
        rows = self.store.execute(self._ROW + " WHERE c.phone=? AND c.book='fav' ORDER BY c.pos",
                                  (phone,)).fetchall()
        return [self._row(r, phone) for r in rows]

    def letter_index(self, phone: str) -> list[tuple[str, int]]:
        """(letter, offset in :meth:`list_contacts` order of its first contact) for every letter
        that has contacts; "#" (names not starting with A-Z) last."""
        out: list[tuple[str, int]] = []
        last = ""
        for pos, (key,) in enumerate(self.store.execute(
                "SELECT sortkey FROM contacts WHERE phone=? AND book='pb' ORDER BY sortkey, name, id", (phone,))):
            letter = letter_of(key)
            if letter != last:
                out.append((letter, pos))
                last = letter
        return out

    @staticmethod
    def _row(r: Sequence[Any], phone: str) -> dict[str, Any]:
        return {"id": int(r[0]), "name": r[1], "letter": letter_of(r[2]), "number": r[3] or "",
                "favourite": bool(r[4]), "phone": phone}

    def contact(self, contact_id: int) -> dict[str, Any] | None:
        row = self.store.execute("SELECT id, phone, book, name, uid, data FROM contacts WHERE id=? AND"
                                 " book IN ('pb', 'fav')", (contact_id,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[5])
        data["numbers"] = [(r[0], r[1]) for r in self.store.execute(
            "SELECT number, kind FROM contact_numbers WHERE contact_id=? ORDER BY rowid", (contact_id,))]
        photo = self.store.execute("SELECT mime, data FROM contact_photos WHERE contact_id=?",
                                   (contact_id,)).fetchone()
        out: dict[str, Any] = {"id": int(row[0]), "phone": row[1], "book": row[2], "name": row[3], "uid": row[4],
                               **data}
        if photo is not None:
            out["photo_mime"], out["photo"] = photo[0], bytes(photo[1])
        return out

    def history(self, phone: str, limit: int) -> list[dict[str, Any]]:
        rows = self.store.execute(
            "SELECT kind, name, number, e164, at, book FROM call_history WHERE phone=? AND book != 'cch'"
            " ORDER BY at DESC, pos LIMIT ?", (phone, limit)).fetchall()
        if not rows:  # a phone that only offered the combined folder
            rows = self.store.execute(
                "SELECT kind, name, number, e164, at, book FROM call_history WHERE phone=? ORDER BY at DESC, pos"
                " LIMIT ?", (phone, limit)).fetchall()
        return [{"kind": r[0], "name": r[1], "number": r[2], "e164": r[3], "at": r[4], "book": r[5]} for r in rows]


# Bump when what the store derives from a card changes (name fallback, fold, sort key, identity,
# number normalisation, JSON): a card fingerprinted by an older derivation is then rewritten.
_FP_VERSION = "1"
_FP_RAW_KEY = b"raw" + _FP_VERSION.encode()


def fingerprint_salt(region: str) -> bytes:
    """What the parser salts its card digests with for a store normalising numbers for ``region``
    (``VCardParser(digest_salt=...)``): the derivation's version and the region."""
    return b"fp\x1f" + _FP_VERSION.encode() + b"\x1f" + region.encode("utf-8", "surrogatepass")


def _fingerprint(card: VCard, region: str) -> bytes:
    """A digest of everything the store derives a contact from: the card's fields as parsed (the
    numbers as sent: their E.164 forms follow from them and ``region``), its photo, and
    :data:`_FP_VERSION`.  Fields are joined by US (``repr`` when a field holds a US itself, so
    fields can't run into each other).  A card of the parser's fast path has a digest of its bytes
    as sent (and of the parser's settings and version): that stands for its fields, cheaper; made
    with :func:`fingerprint_salt` of ``region`` it is the fingerprint itself, else it is hashed
    with the region."""
    if card.digest:
        if card.digest_salt == fingerprint_salt(region):
            return card.digest
        return hashlib.blake2b(card.digest + region.encode("utf-8", "surrogatepass"), digest_size=16,
                               key=_FP_RAW_KEY).digest()
    parts = [_FP_VERSION, region, card.uid, card.display_name, card.org, card.title, card.nickname, card.bday,
             card.photo_type, str(len(card.tels)), str(len(card.emails)), str(len(card.addresses))]
    for t in card.tels:
        parts += (t.number, t.label, ",".join(t.types))
    for e in card.emails:
        parts += (e.address, ",".join(e.types))
    for a in card.addresses:
        parts += (a.formatted(), ",".join(a.types))
    text = "\x1f".join(parts)
    if text.count("\x1f") != len(parts) - 1:
        text = repr(parts)
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    if card.photo:
        h.update(b"\x00")
        h.update(card.photo)
    return h.digest()


def _extra(card: VCard) -> dict[str, Any]:
    """What the ``data`` column holds (JSON) besides the numbers: emails, addresses, org, title,
    nickname, birthday (the keys present only when the card has them)."""
    extra: dict[str, Any] = {}
    if card.emails:
        extra["emails"] = [(e.address, e.types[0] if e.types else "") for e in card.emails]
    if card.addresses:
        extra["addresses"] = [(a.formatted(), a.types[0] if a.types else "") for a in card.addresses]
    if card.org:
        extra["org"] = card.org
    if card.title:
        extra["title"] = card.title
    if card.nickname:
        extra["nickname"] = card.nickname
    if card.bday:
        extra["bday"] = card.bday
    return extra


_STR = json.encoder.encode_basestring  # a JSON string as json.dumps(x, ensure_ascii=False) writes it (C)


def _extra_json(card: VCard) -> str:
    """= ``json.dumps(_extra(card), ensure_ascii=False)``, written directly (no encoder built per
    call: measured ~3x faster on the bench book's cards; tests/unit/test_pbap_store_json.py
    checks they are the same)."""
    parts: list[str] = []
    if card.emails:
        parts.append('"emails": [' + ", ".join([
            f"[{_STR(e.address)}, {_STR(e.types[0] if e.types else '')}]" for e in card.emails]) + "]")
    if card.addresses:
        parts.append('"addresses": [' + ", ".join([
            f"[{_STR(a.formatted())}, {_STR(a.types[0] if a.types else '')}]" for a in card.addresses]) + "]")
    if card.org:
        parts.append('"org": ' + _STR(card.org))
    if card.title:
        parts.append('"title": ' + _STR(card.title))
    if card.nickname:
        parts.append('"nickname": ' + _STR(card.nickname))
    if card.bday:
        parts.append('"bday": ' + _STR(card.bday))
    return "{" + ", ".join(parts) + "}"


HELD_MAX = 8 * 1024 * 1024  # bytes (by _held_cost) of a snapshot's rows held for the swap


@dataclass
class _Held:
    """A snapshot's rows held for the swap: contacts and numbers as flat value lists (as
    :func:`_insert_rows` takes them), photos as rows; ``cost``: :func:`_held_cost` of them."""

    rows: list[Any] = field(default_factory=list)
    nums: list[Any] = field(default_factory=list)
    photos: list[tuple[Any, ...]] = field(default_factory=list)
    cost: int = 0
    next_id: int = 0  # the id the next page's first contact gets (at least)


def _held_cost(rows: list[Any], nums: list[Any], photos: list[tuple[Any, ...]]) -> int:
    """Roughly the memory a page's rows take (Python objects and strings, photos); measured
    (tracemalloc) ~620 bytes a contact with its 1.4 numbers on the bench's book, photos apart."""
    return (len(rows) // _CONTACT_COLS * 512 + len(nums) // _NUMBER_COLS * 160
            + sum(len(p[2]) + 64 for p in photos))


def _renumber(rows: list[Any], nums: list[Any], photos: list[tuple[Any, ...]], new: Callable[[int], int]) -> None:
    """Contact ids changed in place wherever they are (contacts, numbers, photos)."""
    rows[0::_CONTACT_COLS] = [new(c) for c in rows[0::_CONTACT_COLS]]
    nums[0::_NUMBER_COLS] = [new(c) for c in nums[0::_NUMBER_COLS]]
    photos[:] = [(new(c), m, d) for c, m, d in photos]


def _free_ids(db: sqlite3.Connection, rows: list[Any], nums: list[Any], photos: list[tuple[Any, ...]]) -> None:
    """Inside a write transaction: rows given ids (ascending) when their page was derived get ids
    above every id there is now, if something took those since (another book held or staged
    meanwhile); moved up together, their order kept."""
    if not rows:
        return
    (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()
    delta = int(top) + 1 - rows[0]
    if delta > 0:
        _renumber(rows, nums, photos, lambda c: c + delta)


def _insert_all(db: sqlite3.Connection, rows: list[Any], nums: list[Any], photos: list[tuple[Any, ...]]) -> None:
    """A snapshot's contacts, their numbers and photos (the flat row lists of :class:`_Held`)."""
    _insert_rows(db, _INSERT_CONTACT, _CONTACT_COLS, rows)
    if nums:
        _insert_rows(db, _INSERT_NUMBER, _NUMBER_COLS, nums)
    if photos:
        db.executemany(_INSERT_PHOTO, photos)


def _insert_rows(db: sqlite3.Connection, insert: str, cols: int, values: list[Any]) -> None:
    """INSERT the rows whose values follow each other in ``values`` (``cols`` each), many rows per
    statement ("VALUES (...),(...),..."): measured ~20 % cheaper than ``executemany`` for the
    contacts and numbers of a page (one step per statement instead of one per row, no tuple per
    row).  Up to 256 rows per statement, fewer if SQLite allows fewer bound values."""
    total = len(values) // cols
    limit = max(1, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // cols)
    done = 0
    for size in _CHUNK_ROWS:
        if size > limit:
            continue
        sql = _SQL.get((insert, size))
        if sql is None:
            sql = _SQL[(insert, size)] = insert + ",".join(["(" + ",".join("?" * cols) + ")"] * size)
        step = size * cols
        while total - done >= size:
            start = done * cols
            db.execute(sql, values[start:start + step])
            done += size


def _mime(photo_type: str) -> str:
    t = photo_type.lower()
    if "/" in t:
        return t
    return {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "gif": "image/gif",
            "bmp": "image/bmp", "heic": "image/heic", "webp": "image/webp"}.get(t, "image/jpeg" if not t else
                                                                                f"image/{t}")
