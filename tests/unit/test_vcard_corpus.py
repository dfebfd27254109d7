"""The vCard parser on a corpus of phone-style dumps (tests/data/vcards): Android 2.1/3.0, iPhone,
older feature phones, call history, Shift_JIS, vCard 4.0 and garbage."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashbridge.profiles.pbap.vcard import VCard, VCardParser, parse_bytes

DATA = Path(__file__).parents[1] / "data" / "vcards"


def _parse(name: str) -> tuple[list[VCard], list[str]]:
    cards, errors = parse_bytes((DATA / name).read_bytes())
    return cards, [e.reason for e in errors]


def _by_name(cards: list[VCard]) -> dict[str, VCard]:
    return {c.display_name: c for c in cards}


def test_android_21_quoted_printable_soft_breaks_inside_utf8() -> None:
    cards, errors = _parse("android_21.vcf")
    assert errors == []
    assert [c.display_name for c in cards] == ["Me", "Jürgen Müller", "山田 太郎", "Plumber"]
    j = cards[1]
    assert j.n[:2] == ("Müller", "Jürgen")  # the soft break split "ü" between =C3= and =BC
    assert [(t.number, t.types) for t in j.tels] == [("+49 170 1234567", ("cell",)), ("+49 30 1234567", ("home",))]
    assert j.addresses[0].street == "Hauptstraße 5" and j.addresses[0].country == "Deutschland"
    assert j.photo is not None and j.photo.startswith(b"\xff\xd8") and j.photo.endswith(b"\xff\xd9")
    assert cards[2].n[:2] == ("山田", "太郎")  # three-byte sequences split by soft breaks
    assert cards[2].tels[1].types == ("assistant",)


def test_android_30_escapes_folding_structured_values() -> None:
    cards, errors = _parse("android_30.vcf")
    assert errors == []
    s = _by_name(cards)["Dr Siobhán O'Brien"]
    assert s.n == ("O'Brien", "Siobhán", "", "Dr", "")
    assert s.org == "Example Hospital Cardiology" and s.title == "Consultant"
    assert s.addresses[0].street == "1 Grand Canal Sq, Docklands"
    assert s.emails[0].address == "siobhan@example.ie" and s.emails[0].types == ("work",)
    assert s.photo is not None and len(s.photo) == 1037
    j = _by_name(cards)["John Smith, Jr."]
    assert j.n[0] == "Smith, Jr." and j.nickname == "Johnny" and j.bday == "1980-02-29"
    nameless = cards[3]
    assert nameless.display_name == "" and nameless.tels[0].number == "+44 7700 900789"


def test_iphone_groups_and_labels() -> None:
    cards, errors = _parse("iphone_30.vcf")
    assert errors == []
    j = cards[0]
    assert [(t.number, t.label) for t in j.tels] == [("(408) 555-0123", "Mobile"), ("+1 408 555 0199", "Mum's work")]
    assert j.tels[0].types == ("cell",)  # VOICE dropped when there is something more telling
    assert j.emails[0].address == "johnny@example.com"
    assert j.addresses[0].locality == "Cupertino"
    assert j.org == "Apple Inc."
    assert j.photo is not None and len(j.photo) == 1037
    assert cards[1].display_name == "Zoë"


def test_feature_phone_latin1_bare_params_unindented_base64_lf_endings() -> None:
    cards, errors = _parse("feature_21.vcf")
    assert errors == []
    assert [c.display_name for c in cards] == ["María González", "Café “Quoted”", "Émile François"]
    m = cards[0]
    assert m.fn == ""  # 2.1 without FN: the name comes from N
    assert [t.types for t in m.tels] == [("cell",), ("home",)]
    assert m.photo is not None and len(m.photo) == 1037


def test_call_history() -> None:
    cards, errors = _parse("callhistory_cch.vcf")
    assert errors == []
    assert [(c.call_type, c.call_datetime) for c in cards] == [
        ("missed", "2026-11-22T18:30:00"), ("received", "2026-11-22T09:05:12Z"),
        ("dialed", "2026-11-21T23:59:59"), ("missed", "garbage")]
    assert cards[1].display_name == "" and cards[1].tels[0].number == "+447700900222"
    assert cards[3].tels == []


def test_shift_jis_and_vcard40() -> None:
    (sj,), errors = _parse("sjis_21.vcf")
    assert errors == [] and sj.n[:2] == ("山田", "太郎")
    (ada,), errors = _parse("vcard40.vcf")
    assert errors == []
    assert ada.tels[0].number == "+44-20-7946-0000" and ada.tels[0].types == ("cell",)
    assert ada.photo is not None and ada.photo.startswith(b"\x89PNG") and ada.photo_type == "image/png"


def test_garbage_skips_broken_cards_and_keeps_the_rest() -> None:
    cards, errors = _parse("garbage.vcf")
    assert [c.display_name for c in cards] == ["Good One", "Good Two", "Huge Note", "Soft", "Good Three"]
    assert errors == ["truncated: BEGIN:VCARD before END:VCARD", "truncated: no END:VCARD"]
    assert [t.number for t in cards[1].tels] == ["+447700900003"]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.vcf")))
def test_any_chunking_gives_the_same_cards(name: str) -> None:
    data = (DATA / name).read_bytes()
    whole, errs = parse_bytes(data)
    for size in (1, 2, 3, 7, 64, 1000):
        p = VCardParser()
        got: list[VCard] = []
        for i in range(0, len(data), size):
            got.extend(p.feed(data[i:i + size]))
        got.extend(p.close())
        assert got == whole, f"chunks of {size}"
        assert [e.reason for e in p.take_errors()] == [e.reason for e in errs]
