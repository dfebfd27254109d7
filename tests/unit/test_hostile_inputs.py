"""A hostile phone (issue 11, item 4): texts, e-mails and contacts built to stall the loop or eat
memory cost bounded time and bounded memory, and whatever comes out is clipped."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from dashbridge.profiles.limits import MARK, MAX_NAME, MAX_NUMBERS_PER_CONTACT, MAX_SUBJECT, MAX_TYPES, clip, echo
from dashbridge.profiles.map import bmessage, intents
from dashbridge.profiles.map.handler import MAX_TEXT_CHARS, decode_message
from dashbridge.profiles.map.listing import Listing
from dashbridge.profiles.pbap.sync import BATCH_BYTES, BATCH_CARDS, CardReader, card_cost
from dashbridge.profiles.pbap.vcard import VCardParser, parse_bytes


def _card(*lines: bytes, version: bytes = b"3.0") -> bytes:
    return b"BEGIN:VCARD\r\nVERSION:" + version + b"\r\n" + b"".join(x + b"\r\n" for x in lines) + b"END:VCARD\r\n"


def _elapsed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


# --- limits -----------------------------------------------------------------------------------------

def test_clip_marks_the_cut_and_never_exceeds_the_limit() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 11, 10) == "x" * 9 + MARK and len(clip("x" * 11, 10)) == 10
    assert clip("x" * 10, 10) == "x" * 10
    assert len(echo("y" * 10_000_000)) <= 64


# --- destinations in message text --------------------------------------------------------------------

def test_64kb_of_postcodes_is_extracted_fast_and_bounded() -> None:
    text = "SW1A 1AA " * (64 * 1024 // 9)  # took 2.3 s (each match rescanned the earlier ones)
    took = _elapsed(lambda: intents.extract(text))
    found = intents.extract(text)
    assert took < 0.25
    assert [i.query for i in found] == ["SW1A 1AA"]


def test_many_distinct_destinations_return_at_most_max_intents_quickly() -> None:
    text = " ".join(f"SW{i % 9 + 1}A {i % 10}AB 12 Baker Street https://maps.google.com/?q={i % 80}.5,0.{i}"
                    for i in range(1500))
    took = _elapsed(lambda: intents.extract(text))
    assert took < 0.25
    assert len(intents.extract(text)) == intents.MAX_INTENTS


def test_a_postcode_inside_a_link_is_still_not_a_destination() -> None:
    found = intents.extract("see https://example.com/SW1A1AA/x and NW1 6XE")
    assert [i.query for i in found] == ["NW1 6XE"]


# --- vCards ------------------------------------------------------------------------------------------

def test_a_093mb_card_of_type_lists_parses_in_well_under_a_second() -> None:
    types = b",".join(b"T%d" % i for i in range(10_500))
    data = _card(b"FN:Types", *[b"TEL;TYPE=" + types + b":+4477009%05d" % i for i in range(15)])
    assert len(data) > 900_000
    took = _elapsed(lambda: parse_bytes(data))  # took 11.9 s (quadratic de-duplication)
    cards, errors = parse_bytes(data)
    assert took < 1.0
    assert errors == [] and len(cards) == 1
    assert all(len(t.types) <= MAX_TYPES for t in cards[0].tels)


def test_a_100000_character_name_is_clipped_with_the_marker() -> None:
    cards, _ = parse_bytes(_card(b"FN:" + b"A" * 100_000, b"TEL:+447700900001"))
    assert cards[0].display_name == "A" * (MAX_NAME - 1) + MARK


def test_a_card_with_2000_numbers_keeps_at_most_the_limit() -> None:
    cards, _ = parse_bytes(_card(b"FN:Many", *[b"TEL;CELL:+44770090%04d" % i for i in range(1990)]))
    assert len(cards[0].tels) == MAX_NUMBERS_PER_CONTACT
    assert cards[0].tels[0].number == "+447700900000"


def test_charset_punycode_or_a_bytes_codec_keeps_the_contact() -> None:
    data = b"".join(_card(b"N;CHARSET=" + cs + b":Smith;John", b"TEL:+447700900004", version=b"2.1")
                    for cs in (b"punycode", b"idna", b"base64", b"x-unknown-42"))
    cards, errors = parse_bytes(data)
    assert errors == []
    assert [c.display_name for c in cards] == ["John Smith"] * 4


# --- PBAP pages are streamed ------------------------------------------------------------------------

def _near_limit(i: int) -> bytes:
    big = b"x" * 60_000
    photo = base64.b64encode(bytes(200 * 1024))
    return _card(b"FN:" + big, *[b"TEL:+44" + b"7" * 59_000 + b"%02d" % k for k in range(8)],
                 b"PHOTO;ENCODING=b;TYPE=JPEG:" + photo, b"UID:u%d" % i)


def test_a_page_is_read_card_by_card_in_bounded_batches(tmp_path: Path) -> None:
    vcf = tmp_path / "page.vcf"
    with open(vcf, "wb") as fh:
        for i in range(60):  # ~60 MB on disk: never held whole
            fh.write(_near_limit(i))
    reader = CardReader(str(vcf), VCardParser(), 1 << 40)
    batches = []
    while not reader.done:
        batch = reader.next_batch()
        batches.append((len(batch), sum(card_cost(c) for c in batch)))
        assert all(len(c.fn) <= MAX_NAME for c in batch)
    assert reader.cards == 60 and not reader.over and len(batches) > 1
    biggest = max(card_cost(c) for c in parse_bytes(_near_limit(0))[0])
    assert all(n <= BATCH_CARDS + 16 and cost <= BATCH_BYTES + biggest for n, cost in batches)


def test_the_byte_budget_stops_the_page(tmp_path: Path) -> None:
    vcf = tmp_path / "page.vcf"
    vcf.write_bytes(b"".join(_near_limit(i) for i in range(10)))
    one = card_cost(parse_bytes(_near_limit(0))[0][0])
    reader = CardReader(str(vcf), VCardParser(), 3 * one + one // 2)
    got = []
    while not reader.done:
        got.extend(reader.next_batch())
    assert len(got) == 3 and reader.over


# --- messages ---------------------------------------------------------------------------------------

def test_a_huge_email_subject_is_stored_clipped() -> None:
    text = "From: a@example.com\r\nSubject: " + "S" * 900_000 + "\r\n\r\nhello"
    data = bmessage.serialize(bmessage.new_message(text, recipient="a@example.com", msg_type="EMAIL"))
    item = Listing("h1", "inbox", "email", "", "20240101T120000", "", "", "", len(data), False, "complete")
    took = _elapsed(lambda: decode_message("AA:BB:CC:DD:EE:FF", "h1", item, data, False, max_text=MAX_TEXT_CHARS,
                                           max_bytes=1024 * 1024))
    m = decode_message("AA:BB:CC:DD:EE:FF", "h1", item, data, False, max_text=MAX_TEXT_CHARS,
                       max_bytes=1024 * 1024).message
    assert took < 0.5
    assert len(m.subject) == MAX_SUBJECT and m.subject.endswith(MARK)


def test_a_10mb_argument_is_not_echoed_back_in_the_error() -> None:
    from types import SimpleNamespace

    from dashbridge.daemon.api.base import to_dbus_error
    from dashbridge.daemon.errors import NotConnected, NotFound
    from dashbridge.profiles.map.handler import MessagesComponent

    huge = "AA:" * 3_500_000
    try:
        MessagesComponent._ready_session(SimpleNamespace(sessions={}), huge)  # type: ignore[arg-type]
    except NotConnected as exc:
        assert len(exc.message) < 200
    else:
        raise AssertionError("not refused")
    assert len(to_dbus_error(NotFound("no such " + huge)).text) <= 512
