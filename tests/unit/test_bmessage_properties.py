"""Properties of the bMessage parser/serializer (hypothesis): serialize -> parse is the identity
with an exact LENGTH whatever the text (even text containing END:MSG lines), LENGTH is what MAP
counts, and any input either parses or raises BMessageError - quickly."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.map import bmessage

text_st = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
line_st = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
vcard_st = st.builds(
    bmessage.VCard,
    version=st.sampled_from(["2.1", "3.0"]),
    name=line_st.map(lambda s: s.strip()),
    formatted_name=line_st.map(lambda s: s.strip()),
    tels=st.lists(st.from_regex(r"\+?[0-9]{3,15}", fullmatch=True), max_size=2).map(tuple),
    emails=st.lists(st.from_regex(r"[a-z0-9._-]{1,12}@[a-z0-9-]{1,12}\.(com|org|co\.uk)", fullmatch=True),
                    max_size=2).map(tuple),
)
msg_st = st.builds(
    bmessage.BMessage,
    status=st.sampled_from(bmessage.STATUSES),
    type=st.sampled_from(bmessage.TYPES),
    folder=st.sampled_from(["", "TELECOM/MSG/INBOX", "TELECOM/MSG/OUTBOX"]),
    originators=st.lists(vcard_st, max_size=2).map(tuple),
    envelopes=st.lists(st.lists(vcard_st, max_size=2).map(tuple), min_size=1, max_size=3).map(tuple),
    part_id=st.one_of(st.none(), st.integers(0, 999)),
    parts=st.lists(text_st, min_size=1, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(msg_st)
def test_serialize_then_parse_is_identity(m: bmessage.BMessage) -> None:
    raw = bmessage.serialize(m)
    back = bmessage.parse(raw)
    assert back.parts == m.parts
    assert back.warnings == ()
    assert (back.type, back.status, back.folder, back.part_id) == (m.type, m.status, m.folder, m.part_id)
    assert len(back.envelopes) == len(m.envelopes)
    for got, want in zip(back.originators, m.originators, strict=True):
        assert got.tels == want.tels and got.emails == want.emails and got.name == want.name


@settings(max_examples=200, deadline=None)
@given(st.lists(text_st, min_size=1, max_size=4))
def test_length_is_what_map_counts(parts: list[str]) -> None:
    raw = bmessage.serialize(bmessage.BMessage(parts=tuple(parts)))
    length = int(raw.split(b"LENGTH:")[1].split(b"\r\n")[0])
    start = raw.index(b"BEGIN:MSG\r\n")
    end = raw.rindex(b"END:BBODY")
    assert length == end - start == sum(len(p.encode()) + 22 for p in parts)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_parse_or_raise_bmessage_error(data: bytes) -> None:
    for truncated in (False, True):
        try:
            m = bmessage.parse(data, truncated=truncated)
        except bmessage.BMessageError:
            continue
        assert isinstance(m.text, str) and len(m.warnings) <= bmessage.MAX_WARNINGS


fragments = st.sampled_from([b"BEGIN:BMSG\r\n", b"END:BMSG\r\n", b"BEGIN:BENV\r\n", b"END:BENV\r\n",
                             b"BEGIN:BBODY\r\n", b"END:BBODY\r\n", b"BEGIN:MSG\r\n", b"END:MSG\r\n",
                             b"BEGIN:VCARD\r\n", b"END:VCARD\r\n", b"LENGTH:12\r\n", b"LENGTH:-1\r\n",
                             b"CHARSET:NATIVE\r\n", b"CHARSET:rot13\r\n", b"N;ENCODING=QUOTED-PRINTABLE:=C3=\r\n",
                             b"TYPE:EMAIL\r\n", b"PARTID:x\r\n", b"hello\r\n", b"\n", b" folded\r\n"])


@settings(max_examples=500, deadline=None)
@given(st.lists(fragments, max_size=60))
def test_structure_shaped_noise_parses_or_raises(frags: list[bytes]) -> None:
    try:
        bmessage.parse(b"BEGIN:BMSG\r\n" + b"".join(frags))
    except bmessage.BMessageError:
        pass


def test_bounded_time_and_depth() -> None:
    deep = b"BEGIN:BMSG\r\n" + b"BEGIN:BENV\r\n" * 50
    with pytest.raises(bmessage.BMessageError):
        bmessage.parse(deep)
    many_cards = b"BEGIN:BMSG\r\n" + b"BEGIN:VCARD\r\nTEL:1\r\nEND:VCARD\r\n" * 20000
    t0 = time.perf_counter()
    m = bmessage.parse(many_cards)
    assert len(m.originators) == bmessage.MAX_VCARDS and time.perf_counter() - t0 < 2.0
    big = bmessage.serialize(bmessage.BMessage(parts=("x" * (8 * 1024 * 1024),)))
    t0 = time.perf_counter()
    assert len(bmessage.parse(big).text) == 8 * 1024 * 1024 and time.perf_counter() - t0 < 2.0
    with pytest.raises(bmessage.BMessageError):
        bmessage.parse(b"BEGIN:BMSG\r\n" + b"x" * (bmessage.MAX_BYTES + 1))
