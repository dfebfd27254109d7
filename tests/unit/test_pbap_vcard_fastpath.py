"""The vCard parser's fast path for the PBAP bulk load (issue 18): a card's trailing, folded photo
is unfolded and decoded apart from the rest of the card, and a clean card is read as text.  Whatever
the photo's folding, size (around the cap) or content, a card must read exactly as the careful
line-by-line path reads it.  A card is sent down the careful path here by a property the parser
ignores whose value says "base64" (a 2.1 marker the fast path leaves to it)."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashbridge.profiles.pbap.vcard import VCard, VCardParser, parse_bytes

CAP = 3000  # photo_max_bytes in these tests: photos around it are kept or dropped


def _card(photo_line: bytes, *, extra: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    lines = [b"BEGIN:VCARD", b"VERSION:3.0", b"N:Doe;Jane;;;", "FN:Jane Doë".encode(), b"TEL;TYPE=CELL:+44 7700 900123",
             b"UID:u-1", *([extra] if extra else []), photo_line, b"END:VCARD"]
    return eol.join(lines) + eol


def _fold(text: bytes, width: int, sep: bytes) -> bytes:
    return sep.join(text[i:i + width] for i in range(0, len(text), width))


def _both(data: bytes, **kw: int) -> tuple[tuple[list[VCard], list[str]], tuple[list[VCard], list[str]]]:
    """(what the fast path makes of ``data``, what the careful path makes of it: one more
    property, so one more allowed)."""
    careful = data.replace(b"UID:u-1", b"UID:u-1\r\nX-HINT:base64", 1)
    fast, errors = parse_bytes(data, **kw)
    if "max_properties" in kw:
        kw = {**kw, "max_properties": kw["max_properties"] + 1}
    slow, slow_errors = parse_bytes(careful, **kw)
    return (fast, [e.reason for e in errors]), (slow, [e.reason for e in slow_errors])


def _same(data: bytes, **kw: int) -> list[VCard]:
    (fast, errors), (slow, slow_errors) = _both(data, **kw)
    assert errors == slow_errors
    assert fast == slow  # every field, photo, warnings (the digest is not part of equality)
    return fast


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=CAP - 40, max_value=CAP + 40), st.integers(min_value=1, max_value=120),
       st.sampled_from([b"\r\n ", b"\r\n\t", b"\n ", b"\r\n  "]), st.sampled_from([b"\r\n", b"\n"]),
       st.sampled_from([b"PHOTO;ENCODING=b;TYPE=JPEG:", b"PHOTO;TYPE=PNG;ENCODING=b:", b"PHOTO;ENCODING=B:",
                        b"PHOTO;VALUE=URI:", b"PHOTO;TYPE=JPEG:", b"PHOTO;ENCODING=b;MEDIATYPE=image/png:"]),
       st.binary(min_size=0, max_size=3))
def test_photo_reads_as_on_the_careful_path(size: int, width: int, fold: bytes, eol: bytes, head: bytes,
                                            tail: bytes) -> None:
    raw = bytes(range(256)) * (size // 256 + 1)
    data = base64.b64encode(raw[:size]) + base64.b64encode(tail).rstrip(b"=")  # sometimes unpadded
    card = _card(_fold(head + data, width, fold), eol=eol)
    cards = _same(card, photo_max_bytes=CAP)
    assert len(cards) == 1


@pytest.mark.parametrize("noise", [b":", b"-", b"BEGIN:VCARD", b"end:vcard", b"QUOTED-PRINTABLE", b"base64", b"\r",
                                   b"\r\n\r\n ", b"\r\nTEL:1", b"=", b"==", b"!!", b"\x00"])
def test_odd_bytes_in_photo_data(noise: bytes) -> None:
    data = _fold(b"PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(bytes(2000)), 75, b"\r\n ")
    cut = len(data) // 2
    _same(_card(data[:cut] + noise + data[cut:]), photo_max_bytes=CAP)


def test_photo_not_last_and_two_photos() -> None:
    photo = _fold(b"PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(bytes(range(200)) * 8), 75, b"\r\n ")
    _same(_card(b"TEL:2", extra=photo))  # a property after the photo
    _same(_card(photo, extra=photo.replace(b"JPEG", b"PNG")))  # two photos: the last one wins either way


def test_photo_decoded_and_dropped_at_the_cap() -> None:
    raw = bytes(range(256)) * 20
    for size, kept in ((CAP, True), (CAP + 1, False)):
        card = _card(_fold(b"PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(raw[:size]), 75, b"\r\n "))
        (got,) = _same(card, photo_max_bytes=CAP)
        assert (got.photo == raw[:size]) is kept and got.photo_dropped is not kept
        assert got.photo_type == ("JPEG" if kept else "")


def test_photo_limits_of_the_card_still_count() -> None:
    photo = _fold(b"PHOTO;ENCODING=b:" + base64.b64encode(bytes(1500)), 75, b"\r\n ")
    kept = []
    for extra_props in range(8, 14):  # the photo is the property that goes over max_properties
        extra = b"\r\n".join(b"X-A:%d" % i for i in range(extra_props))
        kept.append(len(_same(_card(photo, extra=extra), max_properties=16)))
    assert kept == sorted(kept, reverse=True) and kept[0] == 1 and kept[-1] == 0


def test_bad_base64_photo() -> None:
    photo = _fold(b"PHOTO;ENCODING=b;TYPE=JPEG:" + b"A" * 1601, 75, b"\r\n ")
    (card,) = _same(_card(photo))
    with pytest.raises(binascii.Error):
        binascii.a2b_base64(b"A" * 1601)
    assert card.photo_dropped


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.binary(max_size=20))
def test_text_lines_read_as_bytes_lines(name: str, org: str, junk: bytes) -> None:
    """A clean card is read as text (one decode, str.partition); a card that is not valid UTF-8
    is read line by line as bytes: both read the same fields."""
    body = "\r\n".join([f"FN:{name}", f"ORG:{org}", "N:a\\;b;c\\,d;;;", "item1.TEL:1", "item1.X-ABLabel:Mum",
                        "ADR;TYPE=HOME:;;1 High St\\; Flat 2;Town;;N1;UK", "FN"]).replace("\n\n", "\n")
    text = f"BEGIN:VCARD\r\nVERSION:3.0\r\n{body}\r\nEND:VCARD\r\n".encode("utf-8", "surrogatepass")
    _same(text.replace(b"VERSION:3.0", b"VERSION:3.0\r\nUID:u-1", 1))
    bad = text.replace(b"VERSION:3.0", b"VERSION:3.0\r\nUID:u-1\r\nX-JUNK:\xff" + junk.replace(b"\n", b""), 1)
    _same(bad)


def test_chunking_does_not_change_the_fast_path() -> None:
    photo = _fold(b"PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(bytes(range(256)) * 8), 75, b"\r\n ")
    data = _card(photo) * 3
    whole, _ = parse_bytes(data)
    for step in (1, 7, 100, 1000):
        p = VCardParser()
        got: list[VCard] = []
        for i in range(0, len(data), step):
            got.extend(p.feed(data[i:i + step]))
        got.extend(p.close())
        assert got == whole and [c.digest for c in got] == [c.digest for c in whole]
        assert all(c.digest for c in got)  # the fast path's cards


# Small cards in a row are checked, decoded and split together (VCardParser._fast_run); one odd
# card among them (QP, folded, LF-only, not UTF-8, a lower-case BEGIN, too many properties, a
# stray END) must leave every card read exactly as when each card comes alone.
_ODD_CARDS = [
    b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;Jo\r\nTEL:1\r\nEND:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Folded\r\n  Name\r\nTEL:2\r\nEND:VCARD\r\n",
    b"BEGIN:VCARD\nVERSION:3.0\nFN:Lf Only\nTEL:3\nEND:VCARD\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bad \xff Byte\r\nTEL:4\r\nEND:VCARD\r\n",
    b"begin:vcard\r\nVERSION:3.0\r\nFN:lower\r\nend:vcard\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Many\r\n" + b"NOTE:x\r\n" * 30 + b"END:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Base64 In Value\r\nNOTE:base64\r\nEND:VCARD\r\n",
    b"END:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No End\r\nBEGIN:VCARD\r\nFN:Inner\r\nEND:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:End Glued\r\nEND:VCARDX\r\nEND:VCARD\r\n",
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Tail Lf\r\nEND:VCARD\n",
]


def _plain(i: int, name: str) -> bytes:
    return (f"BEGIN:VCARD\r\nVERSION:3.0\r\nN:{name};Given{i};;;\r\nFN:Given{i} {name}\r\n"
            f"TEL;TYPE=CELL:+44 7700 9{i:05d}\r\nitem1.TEL:0{i}\r\nitem1.X-ABLabel:Lab{i}\r\n"
            f"ORG:Co\\; Ltd\r\nUID:u-{i}\r\nEND:VCARD\r\n").encode()


def _one_by_one(cards: list[bytes], **kw: int) -> tuple[list[VCard], list[tuple[int, int, str]], list[bytes]]:
    p = VCardParser(**kw)  # type: ignore[arg-type]
    got: list[VCard] = []
    for c in cards:
        got.extend(p.feed(c))
    got.extend(p.close())
    return got, [(e.index, e.line, e.reason) for e in p.take_errors()], [c.digest for c in got]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("plain"), st.text("abcé Øñ", min_size=1, max_size=12)),
                          st.tuples(st.just("odd"), st.integers(0, len(_ODD_CARDS) - 1))), max_size=40),
       st.sampled_from([16, 2000]))
def test_a_run_of_small_cards_reads_as_each_card_alone(picks: list[tuple[str, object]], max_properties: int) -> None:
    cards = [_plain(i, str(x)) if kind == "plain" else _ODD_CARDS[int(str(x))] for i, (kind, x) in enumerate(picks)]
    data = b"".join(cards)
    p = VCardParser(max_properties=max_properties)
    together = p.feed(data) + p.close()
    errors = [(e.index, e.line, e.reason) for e in p.take_errors()]
    alone, alone_errors, digests = _one_by_one(cards, max_properties=max_properties)
    assert together == alone
    assert errors == alone_errors
    assert [c.digest for c in together] == digests


def test_runs_are_taken_and_match_the_careful_path() -> None:
    cards = [_plain(i, "Sørensen") for i in range(70)]  # more than one run's worth
    fast, errors = parse_bytes(b"".join(cards))
    slow, slow_errors = parse_bytes(b"".join(c.replace(b"UID:", b"X-HINT:base64\r\nUID:") for c in cards))
    assert not errors and not slow_errors and fast == slow
    assert [c.tels[1].label for c in fast[:2]] == ["Lab0", "Lab1"]
    assert all(c.digest for c in fast)
