"""Property tests (hypothesis) for the vCard parser: total on any input, the same result however the
stream is chunked, what phones write comes back, garbage between cards costs nothing, memory stays
bounded with a 50 MB photo."""

from __future__ import annotations

import base64
import os
import tracemalloc
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashbridge.profiles.pbap.vcard import VCard, VCardError, VCardParser, parse_bytes
from dashbridge.simulator.vcards import SimCall, SimContact, render_card

# VCARD_EXAMPLES=5000 for a deeper fuzzing run; the suite keeps it quick.
FAST = settings(max_examples=int(os.environ.get("VCARD_EXAMPLES", "100")), deadline=2000, suppress_health_check=[HealthCheck.too_slow])

# Text a phone might store in a name: any printable Unicode (incl. multi-byte, CJK, emoji),
# and the characters vCard must escape.
name_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r\n"),
                    min_size=1, max_size=40).filter(lambda s: s.strip() == s and s.strip() != "")
numbers = st.lists(st.from_regex(r"\+?[0-9][0-9 ()\-]{3,18}[0-9]", fullmatch=True), min_size=1, max_size=3)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def _parse_chunked(chunks: list[bytes], **kw: int) -> tuple[list[VCard], list[str]]:
    p = VCardParser(**kw)  # type: ignore[arg-type]
    cards: list[VCard] = []
    for c in chunks:
        cards.extend(p.feed(c))
    cards.extend(p.close())
    return cards, [e.reason for e in p.take_errors()]


@FAST
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=8))
def test_any_bytes_never_raise_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = parse_bytes(data)
    got = _parse_chunked(_chunks(data, cuts))
    assert got[0] == whole[0]
    assert got[1] == [e.reason for e in whole[1]]


card_lines = st.lists(st.sampled_from([
    b"BEGIN:VCARD", b"END:VCARD", b"VERSION:2.1", b"VERSION:3.0", b"FN:A", b"N:B;C;;;", b"TEL:123", b" folded",
    b"\tfolded", b"TEL;CELL;ENCODING=QUOTED-PRINTABLE:=31=", b"=32", b"N;CHARSET=UTF-8:\xc3", b"\xa9",
    b"PHOTO;ENCODING=BASE64:", b"AAAA", b"", b"PHOTO;ENCODING=b:AAAA", b"item1.TEL:1", b"item1.X-ABLabel:x",
    b"X-IRMC-CALL-DATETIME;MISSED:20200101T000000", b"ADR:;;a\\;b;c", b'TEL;TYPE="a:b":5', b"begin:vcard",
    b"N;CHARSET=nonsense:x", b"EMAIL;ENCODING=B:!!!", b":", b";;;", b"=", b"\xff\xfe\x00"]), max_size=60)


@FAST
@given(card_lines, st.sampled_from([b"\r\n", b"\n"]), st.lists(st.integers(min_value=0), max_size=6))
def test_vcard_shaped_junk_is_total_and_chunking_invariant(lines: list[bytes], eol: bytes, cuts: list[int]) -> None:
    data = eol.join(lines)
    whole = parse_bytes(data)
    assert _parse_chunked(_chunks(data, cuts)) == (whole[0], [e.reason for e in whole[1]])


contacts = st.builds(
    lambda family, given, nums, org: SimContact(family=family, given=given, fn=f"{given} {family}",
                                                numbers=[(n, "cell") for n in nums], org=org),
    name_text, name_text, numbers, st.one_of(st.just(""), name_text))


@FAST
@given(st.lists(contacts, min_size=1, max_size=8), st.sampled_from(["2.1", "3.0"]),
       st.sampled_from(["android", "iphone", "feature"]), st.lists(st.integers(min_value=0), max_size=6))
def test_what_phones_write_comes_back(people: list[SimContact], version: str, style: str, cuts: list[int]) -> None:
    data = b"".join(render_card(c, None, version, style) for c in people)  # type: ignore[arg-type]
    cards, errors = _parse_chunked(_chunks(data, cuts))
    assert errors == []
    assert len(cards) == len(people)
    for sim, card in zip(people, cards, strict=True):
        assert card.n[:2] == (sim.family, sim.given)
        if style != "feature" or version == "3.0":
            assert card.display_name == sim.display
        assert [t.number for t in card.tels] == [n for n, _ in sim.numbers]


@FAST
@given(st.lists(contacts, min_size=2, max_size=6),
       st.lists(st.binary(max_size=200).filter(lambda b: b"BEGIN" not in b.upper() and b"END" not in b.upper()),
                min_size=1, max_size=6))
def test_garbage_between_cards_costs_nothing(people: list[SimContact], junk: list[bytes]) -> None:
    parts = []
    for i, c in enumerate(people):
        parts.append(junk[i % len(junk)] + b"\r\n")
        parts.append(render_card(c, None, "3.0", "android"))
    cards, errors = parse_bytes(b"".join(parts))
    assert errors == []
    assert [c.display_name for c in cards] == [p.display for p in people]


@FAST
@given(st.lists(contacts, min_size=3, max_size=6), st.integers(min_value=0, max_value=2))
def test_a_truncated_card_is_skipped_and_reported(people: list[SimContact], broken: int) -> None:
    rendered = [render_card(c, None, "3.0", "android") for c in people]
    rendered[broken] = rendered[broken].replace(b"END:VCARD\r\n", b"")
    cards, errors = parse_bytes(b"".join(rendered))
    assert [c.display_name for c in cards] == [p.display for i, p in enumerate(people) if i != broken]
    assert len(errors) == 1 and "truncated" in errors[0].reason


@FAST
@given(st.lists(st.sampled_from(["missed", "received", "dialed"]), min_size=1, max_size=5))
def test_call_history_kinds(kinds: list[str]) -> None:
    calls = [SimCall(k, f"+4477009001{i:02d}", f"202611{i + 1:02d}T101500") for i, k in enumerate(kinds)]  # type: ignore[arg-type]
    data = b"".join(render_card(None, c, v, "android") for c in calls for v in ("2.1",))
    cards, _ = parse_bytes(data)
    assert [c.call_type for c in cards] == kinds
    assert [c.call_datetime[:10] for c in cards] == [f"2026-11-{i + 1:02d}" for i in range(len(kinds))]


def test_feed_after_close_is_our_error() -> None:
    p = VCardParser()
    p.close()
    try:
        p.feed(b"x")
    except VCardError:
        return
    raise AssertionError("no VCardError")


def _photo_card(size: int, *, folded: bool) -> Iterator[bytes]:
    """A card with a ``size``-byte photo, chunk by chunk (never the whole thing in memory at once)."""
    yield b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Big Photo\r\nTEL:+447700900001\r\nPHOTO;ENCODING=b;TYPE=JPEG:"
    line = base64.b64encode(bytes(54 * 1024))  # 73,728 base64 characters per 54 KiB chunk
    chunk = b"\r\n ".join(line[i:i + 74] for i in range(0, len(line), 74)) + b"\r\n " if folded else line
    for _ in range(size // (54 * 1024)):
        yield chunk
    yield b"\r\nEND:VCARD\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Next\r\nTEL:1234567\r\nEND:VCARD\r\n"


def test_a_50mb_photo_is_dropped_with_bounded_memory() -> None:
    # folded at 75 (50 MB), and one unfolded physical line (20 MB: 27 MB of base64 without a newline)
    for folded, size in ((True, 50 * 1024 * 1024), (False, 20 * 1024 * 1024)):
        p = VCardParser(photo_max_bytes=256 * 1024)
        tracemalloc.start()
        cards: list[VCard] = []
        try:
            for chunk in _photo_card(size, folded=folded):
                cards.extend(p.feed(chunk))
            cards.extend(p.close())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [c.display_name for c in cards] == ["Big Photo", "Next"]
        assert cards[0].photo is None and cards[0].photo_dropped
        assert cards[0].tels[0].number == "+447700900001"
        assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB (folded={folded})"


def test_a_photo_under_the_cap_is_kept_on_one_long_line() -> None:
    raw = bytes(range(256)) * 400  # 100 KiB
    data = (b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:A;B\r\nPHOTO;ENCODING=BASE64;TYPE=JPEG:" + base64.b64encode(raw)
            + b"\r\n\r\nEND:VCARD\r\n")
    (card,), errors = parse_bytes(data, photo_max_bytes=256 * 1024)
    assert card.photo == raw and errors == []
    (card,), _ = parse_bytes(data, photo_max_bytes=50 * 1024)
    assert card.photo is None and card.photo_dropped


def test_an_over_long_property_is_dropped_the_card_kept() -> None:
    data = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Chatty\r\nNOTE:" + b"x" * 300_000 + b"\r\nTEL:1234\r\nEND:VCARD\r\n"
    for chunk in (len(data), 4096):
        p = VCardParser(max_line_bytes=64 * 1024)
        cards = []
        for i in range(0, len(data), chunk):
            cards.extend(p.feed(data[i:i + chunk]))
        cards.extend(p.close())
        assert [(c.fn, [t.number for t in c.tels]) for c in cards] == [("Chatty", ["1234"])]


def _big_photo_styles(raw: bytes) -> dict[str, bytes]:
    b64 = base64.b64encode(raw)
    tail = b"\r\nEND:VCARD\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Next\r\nTEL:1234567\r\nEND:VCARD\r\n"
    head = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Big Photo\r\nTEL:+447700900001\r\n"
    return {
        "3.0 folded": head + b"PHOTO;ENCODING=b;TYPE=JPEG:" + b"\r\n ".join(
            b64[i:i + 74] for i in range(0, len(b64), 74)) + tail,
        "3.0 one line": head + b"PHOTO;ENCODING=b;TYPE=JPEG:" + b64 + tail,
        "2.1 unindented": head.replace(b"3.0", b"2.1") + b"PHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n" + b"\r\n".join(
            b64[i:i + 64] for i in range(0, len(b64), 64)) + b"\r\n" + tail,
    }


def test_photos_over_the_cap_in_every_style_and_chunking() -> None:
    for style, data in _big_photo_styles(bytes(2 * 1024 * 1024)).items():
        for size in (len(data), 4096, 65536, 100_003):
            cards, errors = _parse_chunked([data[i:i + size] for i in range(0, len(data), size)],
                                           photo_max_bytes=256 * 1024)
            assert errors == [], (style, size)
            assert [(c.display_name, c.photo, c.photo_dropped) for c in cards] == [
                ("Big Photo", None, True), ("Next", None, False)], (style, size)
            assert cards[0].tels[0].number == "+447700900001"
