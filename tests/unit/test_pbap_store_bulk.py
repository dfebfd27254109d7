"""The first sync into an empty book (issue 18): its rows are held and written by the swap, or, past
``HELD_MAX``, staged page by page, both with multi-row INSERTs.  Every card of a page of any size
lands once, with its numbers (their order kept) and photo, whatever SQLite's limit on bound
values per statement and whether held or staged; ids stay unique when two books are held at once;
a write that fails part-way leaves nothing half written and the old book whole."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dashbridge.daemon.store import Store
from dashbridge.profiles.pbap import store as store_mod
from dashbridge.profiles.pbap.callerid import Normalizer
from dashbridge.profiles.pbap.store import ContactStore, Counters
from dashbridge.profiles.pbap.vcard import VCard, parse_bytes

PHONE = "AA:BB:CC:00:00:02"


def _cards(n: int) -> list[VCard]:
    text = "".join(
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person {i}\r\n"
        + "".join(f"TEL;TYPE=CELL:+44 7700 9{i:04d}{k}\r\n" for k in range(i % 3 + 1))
        + (f"UID:u{i}\r\n" if i % 2 else "")
        + ("PHOTO;ENCODING=b;TYPE=JPEG:/9j/AAAA\r\n" if i % 5 == 0 else "")
        + "END:VCARD\r\n" for i in range(n))
    cards, errors = parse_bytes(text.encode())
    assert not errors and len(cards) == n
    return cards


def _store(tmp_path: Path) -> Store:
    st = Store(tmp_path / "db.sqlite3")
    with st.transaction() as t:
        t.execute("INSERT INTO phones(address, name, paired_at) VALUES (?, 'p', 0)", (PHONE,))
    return st


def _numbers(st: Store) -> list[tuple[int, str, str, str]]:
    return [(r[0], r[1], r[2], r[3]) for r in st.execute(
        "SELECT c.pos, c.name, n.number, n.e164 FROM contacts c JOIN contact_numbers n ON n.contact_id=c.id"
        " WHERE c.phone=? AND c.book='pb' ORDER BY c.pos, n.rowid", (PHONE,))]


@pytest.mark.parametrize("held_max", [store_mod.HELD_MAX, 0, 100_000])  # all held, none held, spilled part-way
@pytest.mark.parametrize("limit", [None, 40, 11])  # None: SQLite's own; 11: one contact per statement
@pytest.mark.parametrize("page", [1, 3, 255, 256, 257, 341, 700])
def test_every_card_of_any_page_lands_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: int,
                                           limit: int | None, held_max: int) -> None:
    monkeypatch.setattr(store_mod, "HELD_MAX", held_max)
    st = _store(tmp_path)
    if limit is not None:
        st.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    cards = _cards(700)
    cs = ContactStore(st, Normalizer("GB"))
    cs.begin_snapshot(PHONE, "pb")
    pos = 0
    for i in range(0, len(cards), page):
        pos += cs.stage(PHONE, "pb", pos, cards[i:i + page])
    assert cs.commit(PHONE, {"pb": Counters("1", "1", "db")}, {}) == (700, 0)
    got = _numbers(st)
    want = [(i, c.fn, t.number, "+447700" + t.number[-6:].replace(" ", "")) for i, c in enumerate(cards)
            for t in c.tels]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert all(g[3] == "+4477009" + g[2][10:].replace(" ", "") for g in got)
    assert st.execute("SELECT COUNT(*) FROM contact_photos").fetchone()[0] == 140
    ids = [r[0] for r in st.execute("SELECT id FROM contacts WHERE phone=? ORDER BY pos", (PHONE,))]
    assert ids == sorted(ids) and len(set(ids)) == 700


def _sync(cs: ContactStore, cards: list[VCard], page: int = 100) -> None:
    cs.begin_snapshot(PHONE, "pb")
    pos = 0
    for i in range(0, len(cards), page):
        pos += cs.stage(PHONE, "pb", pos, cards[i:i + page])
    cs.commit(PHONE, {"pb": Counters("1", "1", "db")}, {})


@pytest.mark.parametrize("held_max", [store_mod.HELD_MAX, 0])
def test_a_failing_write_leaves_the_old_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_max: int) -> None:
    monkeypatch.setattr(store_mod, "HELD_MAX", held_max)
    st = _store(tmp_path)
    cs = ContactStore(st, Normalizer("GB"))
    old = _cards(3)
    _sync(cs, old)
    before = _numbers(st)
    cards = _cards(300)
    # the statement with the 281st contact fails (after the first 256 were inserted): the
    # transaction writing it is rolled back whole
    st.execute("CREATE TEMP TRIGGER boom BEFORE INSERT ON contacts WHEN NEW.pos = 280"
               " BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError):
        _sync(cs, cards)
    cs.abort_snapshot(PHONE, "pb")  # as the sync does when it fails
    assert _numbers(st) == before
    assert st.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 3
    st.execute("DROP TRIGGER boom")
    _sync(cs, cards)  # nothing left half done: the same sync again
    assert len({r[0] for r in _numbers(st)}) == 300


def test_an_interrupted_sync_keeps_the_old_book(tmp_path: Path) -> None:
    """Rows held for the swap are never seen before it: a sync that stops (an error, or the
    daemon stopping) before its commit leaves the previous book as it was."""
    st = _store(tmp_path)
    cs = ContactStore(st, Normalizer("GB"))
    _sync(cs, _cards(5))
    before = _numbers(st)
    cs.begin_snapshot(PHONE, "pb")
    cs.stage(PHONE, "pb", 0, _cards(50))
    assert _numbers(st) == before  # held, not written
    cs.abort_snapshot(PHONE, "pb")
    assert cs.commit(PHONE, {}, {}) == (5, 0) and _numbers(st) == before
    cs.begin_snapshot(PHONE, "pb")
    cs.stage(PHONE, "pb", 0, _cards(50))
    cs2 = ContactStore(st, Normalizer("GB"))  # a restart: nothing held survives it
    cs2.clear_staging()
    assert _numbers(st) == before


def test_two_books_held_at_once_get_distinct_ids(tmp_path: Path) -> None:
    st = _store(tmp_path)
    other = "AA:BB:CC:00:00:03"
    with st.transaction() as t:
        t.execute("INSERT INTO phones(address, name, paired_at) VALUES (?, 'q', 0)", (other,))
    cs = ContactStore(st, Normalizer("GB"))
    cs.begin_snapshot(PHONE, "pb")
    cs.begin_snapshot(other, "pb")
    a, b = _cards(120), _cards(80)
    cs.stage(PHONE, "pb", 0, a[:60])
    cs.stage(other, "pb", 0, b)  # the same ids as PHONE's first page, until written
    cs.stage(PHONE, "pb", 60, a[60:])
    cs.commit(other, {"pb": Counters("1", "1", "db")}, {})
    cs.commit(PHONE, {"pb": Counters("1", "1", "db")}, {})
    rows = st.execute("SELECT phone, COUNT(*), COUNT(DISTINCT id) FROM contacts GROUP BY phone ORDER BY phone").fetchall()
    assert rows == [(PHONE, 120, 120), (other, 80, 80)]
    (orphans,) = st.execute("SELECT COUNT(*) FROM contact_numbers n JOIN contacts c ON c.id = n.contact_id"
                            " WHERE c.name != 'Person ' || CAST(substr(n.number, 11, 4) AS INTEGER)").fetchone()
    assert orphans == 0  # every number with its own contact
