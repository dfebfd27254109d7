"""The caller-ID index: exact E.164, the trailing-digits fallback for numbers without a country code,
ambiguity, short codes, per-phone separation."""

from __future__ import annotations

from dashbridge.profiles.pbap.callerid import CallerIdIndex, Match, Normalizer

A = "AA:00:00:00:00:01"
B = "BB:00:00:00:00:02"


def _index(region: str, book: dict[str, list[tuple[int, str, str]]]) -> CallerIdIndex:
    idx = CallerIdIndex(Normalizer(region))
    for phone, rows in book.items():
        idx.replace_phone(phone, [idx.entry_for(cid, name, number) for cid, name, number in rows])
    return idx


def test_exact_match_in_any_format() -> None:
    idx = _index("GB", {A: [(1, "Mum", "07700 900123"), (2, "Office", "+44 20 7946 0000")]})
    for number in ("+447700900123", "07700900123", "+44 7700 900123", "0044 7700 900 123"):
        assert idx.lookup(A, number) == Match(1, "Mum")
    assert idx.lookup(A, "020 7946 0000") == Match(2, "Office")
    assert idx.lookup(A, "+447700900999") is None


def test_trailing_digits_when_the_region_differs() -> None:
    # A UK phone in a car configured for Germany: "07700 900123" normalises to +49..., wrongly;
    # the network presents the caller as +44...: the last digits still find Mum.
    idx = _index("DE", {A: [(1, "Mum", "07700 900123")]})
    assert idx.lookup(A, "+447700900123") == Match(1, "Mum")
    # ... and the other way round: stored in E.164, presented without a country code.
    idx = _index("DE", {A: [(1, "Dad", "+44 7700 900456")]})
    assert idx.lookup(A, "07700 900456") == Match(1, "Dad")


def test_ambiguous_tails_give_no_name_rather_than_a_wrong_one() -> None:
    idx = _index("DE", {A: [(1, "Ann", "+44 7700 900123"), (2, "Bob", "+33 6 00 90 01 23")]})
    assert idx.lookup(A, "+447700900123") == Match(1, "Ann")  # exact still works
    assert idx.lookup(A, "+3212 00900123") is None  # only the tail matches, and it is ambiguous
    # The same person twice (phonebook and favourites) is not ambiguous.
    idx = _index("DE", {A: [(1, "Ann", "+44 7700 900123"), (7, "Ann", "07700 900123")]})
    assert idx.lookup(A, "+4915 00900123") == Match(1, "Ann")


def test_short_codes_and_empty_names() -> None:
    idx = _index("GB", {A: [(1, "Voicemail", "*100#"), (2, "", "+447700900001"), (3, "Taxi", "8080")]})
    assert idx.lookup(A, "*100#") == Match(1, "Voicemail")
    assert idx.lookup(A, "+447700900001") is None  # a contact without a name names nobody
    assert idx.lookup(A, "") is None


def test_per_phone_and_replace_and_drop() -> None:
    idx = _index("GB", {A: [(1, "Mum", "07700 900123")], B: [(9, "Boss", "07700 900123")]})
    assert idx.lookup(A, "+447700900123") == Match(1, "Mum")
    assert idx.lookup(B, "+447700900123") == Match(9, "Boss")
    idx.replace_phone(A, [idx.entry_for(5, "Mother", "07700 900123")])
    assert idx.lookup(A, "+447700900123") == Match(5, "Mother")
    idx.drop_phone(B)
    assert idx.lookup(B, "+447700900123") is None
    assert idx.lookup("CC:00:00:00:00:03", "+447700900123") is None
