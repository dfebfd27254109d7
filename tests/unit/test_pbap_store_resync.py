"""A resync writes only what changed (issue 18): contacts the phone sent unchanged keep their row
(same id, no write), changed ones are replaced (their id carried over by identity), removed ones
go, positions follow the phone's order; a crash before the commit leaves the old book whole.
Each test runs on cards parsed as the sync parses them (salted with the store's
``digest_salt``: the card's digest is its fingerprint) and on cards parsed without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.daemon.store import Store
from dashbridge.profiles.pbap.callerid import Normalizer
from dashbridge.profiles.pbap.store import ContactStore, Counters
from dashbridge.profiles.pbap.vcard import VCardParser

PHONE = "AA:BB:CC:00:00:01"


def _card(uid: str, name: str, number: str, photo: str = "") -> str:
    p = f"PHOTO;ENCODING=b;TYPE=JPEG:{photo}\r\n" if photo else ""
    return f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=CELL:{number}\r\nUID:{uid}\r\n{p}END:VCARD\r\n"


@pytest.fixture(params=["salted", "unsalted"])
def salted(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "salted")


def _sync(salted: bool, cs: ContactStore, text: str, *, commit: bool = True) -> None:
    parser = VCardParser(digest_salt=cs.digest_salt) if salted else VCardParser()
    cards = parser.feed(text.encode()) + parser.close()
    assert not parser.errors
    if salted:  # the digest is the fingerprint as it is
        assert all(c.digest_salt == cs.digest_salt and len(c.digest) == 16 for c in cards)
    cs.begin_snapshot(PHONE, "pb")
    pos = 0
    for i in range(0, len(cards), 2):  # pages of two
        pos += cs.stage(PHONE, "pb", pos, cards[i:i + 2])
    assert pos == len(cards)
    if commit:
        cs.commit(PHONE, {"pb": Counters("1", "1", "db")}, {})


def _book(st: Store) -> list[tuple[int, int, str, str]]:
    return [(r[0], r[1], r[2], r[3]) for r in st.execute(
        "SELECT c.id, c.pos, c.name, n.number FROM contacts c JOIN contact_numbers n ON n.contact_id=c.id"
        " WHERE c.phone=? AND c.book='pb' ORDER BY c.pos", (PHONE,))]


def test_resync_keeps_unchanged_rows_and_replaces_changed_ones(tmp_path: Path, salted: bool) -> None:
    st = Store(tmp_path / "db.sqlite3")
    with st.transaction() as t:
        t.execute("INSERT INTO phones(address, name, paired_at) VALUES (?, 'p', 0)", (PHONE,))
    cs = ContactStore(st, Normalizer("GB"))
    first = (_card("a", "Ann", "07700900001", "/9j/AAAA") + _card("b", "Bob", "07700900002")
             + _card("c", "Cat", "07700900003") + _card("d", "Dan", "07700900004"))
    _sync(salted, cs, first)
    before = _book(st)
    ids = {name: cid for cid, _, name, _ in before}
    # Bob's number changes, Cat goes, Eve arrives before Ann, Dan and Ann are as they were.
    second = (_card("e", "Eve", "07700900005") + _card("a", "Ann", "07700900001", "/9j/AAAA")
              + _card("b", "Bob", "07700900022") + _card("d", "Dan", "07700900004"))
    _sync(salted, cs, second)
    after = _book(st)
    assert [(pos, name, number) for _, pos, name, number in after] == [
        (0, "Eve", "07700900005"), (1, "Ann", "07700900001"), (2, "Bob", "07700900022"), (3, "Dan", "07700900004")]
    got = {name: cid for cid, _, name, _ in after}
    assert got["Ann"] == ids["Ann"] and got["Dan"] == ids["Dan"] and got["Bob"] == ids["Bob"]
    assert got["Eve"] not in ids.values()
    assert st.execute("SELECT COUNT(*) FROM contacts WHERE book LIKE '%staging'").fetchone()[0] == 0
    assert st.execute("SELECT COUNT(*) FROM contact_photos").fetchone()[0] == 1
    assert cs.counts(PHONE)[0] == 4
    assert st.execute("SELECT entries FROM pbap_sync WHERE phone=? AND book='pb'", (PHONE,)).fetchone()[0] == 4
    # A photo that changes is a change.
    _sync(salted, cs, second.replace("/9j/AAAA", "/9j/BBBB"))
    assert cs.contact(got["Ann"])["photo"] == b"\xff\xd8\xff\x04\x10\x41"  # type: ignore[index]
    st.close()


def test_an_unfinished_resync_leaves_the_old_book_whole(tmp_path: Path, salted: bool) -> None:
    st = Store(tmp_path / "db.sqlite3")
    with st.transaction() as t:
        t.execute("INSERT INTO phones(address, name, paired_at) VALUES (?, 'p', 0)", (PHONE,))
    cs = ContactStore(st, Normalizer("GB"))
    first = _card("a", "Ann", "07700900001") + _card("b", "Bob", "07700900002")
    _sync(salted, cs, first)
    before = _book(st)
    _sync(salted, cs, _card("a", "Ann", "07700900001") + _card("z", "Zed", "07700900009"), commit=False)
    assert _book(st) == before  # staged, not committed: readers see the old book
    cs = ContactStore(st, Normalizer("GB"))  # a restart: staging cleared, nothing remembered
    cs.clear_staging()
    assert _book(st) == before
    _sync(salted, cs, first)
    assert _book(st) == before
    st.close()


def test_the_same_cards_under_another_region_are_derived_again(tmp_path: Path, salted: bool) -> None:
    st = Store(tmp_path / "db.sqlite3")
    with st.transaction() as t:
        t.execute("INSERT INTO phones(address, name, paired_at) VALUES (?, 'p', 0)", (PHONE,))
    text = _card("a", "Ann", "07700 900001") + _card("b", "Bob", "07700 900002")
    _sync(salted, ContactStore(st, Normalizer("GB")), text)
    ids = [r[0] for r in _book(st)]
    e164 = st.execute("SELECT e164 FROM contact_numbers ORDER BY rowid").fetchall()
    assert e164 == [("+447700900001",), ("+447700900002",)]
    _sync(salted, ContactStore(st, Normalizer("DE")), text)
    assert [r[0] for r in _book(st)] == ids  # same cards: ids carried over by identity
    assert st.execute("SELECT e164 FROM contact_numbers ORDER BY rowid").fetchall() != e164
    st.close()
