"""The contacts store writes a contact's extra fields (``data``) as JSON directly, without an
encoder per card: it must be exactly what ``json.dumps(..., ensure_ascii=False)`` writes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.pbap.store import _extra, _extra_json
from dashbridge.profiles.pbap.vcard import Address, Email, VCard

_TEXT = st.text(max_size=12)
_TYPES = st.lists(st.sampled_from(["home", "work", "cell", "x-\"odd\"", "ü"]), max_size=2).map(tuple)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TYPES), max_size=3), st.lists(st.tuples(_TEXT, _TEXT, _TYPES), max_size=2),
       _TEXT, _TEXT, _TEXT, _TEXT)
def test_extra_json_is_json_dumps(emails: list[tuple[str, tuple[str, ...]]],
                                  addresses: list[tuple[str, str, tuple[str, ...]]],
                                  org: str, title: str, nickname: str, bday: str) -> None:
    card = VCard(org=org, title=title, nickname=nickname, bday=bday,
                 emails=[Email(a, t) for a, t in emails],
                 addresses=[Address(t, street=s, locality=c) for s, c, t in addresses])
    assert _extra_json(card) == json.dumps(_extra(card), ensure_ascii=False)


def test_extra_json_escapes() -> None:
    card = VCard(org='A "quoted"\\ org\n\x00\u2028', nickname="\ud800", emails=[Email("a@b", ())])
    text = _extra_json(card)
    assert text == json.dumps(_extra(card), ensure_ascii=False)
    assert json.loads(text)["org"] == card.org
