"""The first sync into an empty book writes each page with multi-row INSERTs (issue 18): every card
of a page of any size lands once, with its numbers (their order kept) and photo, whatever SQLite's
limit on bound values per statement; a page that fails is not half written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dashbridge.daemon.store import Store
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


@pytest.mark.parametrize("limit", [None, 40, 11])  # None: SQLite's own; 11: one contact per statement
@pytest.mark.parametrize("page", [1, 3, 255, 256, 257, 341, 700])
def test_every_card_of_any_page_lands_once(tmp_path: Path, page: int, limit: int | None) -> None:
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


def test_a_failing_page_writes_nothing(tmp_path: Path) -> None:
    st = _store(tmp_path)
    cs = ContactStore(st, Normalizer("GB"))
    cs.begin_snapshot(PHONE, "pb")
    cards = _cards(300)
    # the statement with the 281st contact fails (after the first 256 were inserted): the
    # page's transaction is rolled back whole
    st.execute("CREATE TEMP TRIGGER boom BEFORE INSERT ON contacts WHEN NEW.pos = 280"
               " BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError):
        cs.stage(PHONE, "pb", 0, cards)
    assert st.execute("SELECT COUNT(*) FROM contacts WHERE book='pb:staging'").fetchone()[0] == 0
    assert st.execute("SELECT COUNT(*) FROM contact_numbers").fetchone()[0] == 0
    st.execute("DROP TRIGGER boom")
    assert cs.stage(PHONE, "pb", 0, cards) == 300  # nothing left half done: the page again
    assert st.execute("SELECT COUNT(*) FROM contacts WHERE book='pb:staging'").fetchone()[0] == 300
