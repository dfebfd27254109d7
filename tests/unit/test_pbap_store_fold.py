"""``fold`` (search text and sort keys) folds text that is not ASCII word by word, each word once
(issue 18: names repeat their words): the result must be the text folded whole."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.pbap.store import fold, sort_key

_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _whole(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return _COMBINING.sub("", decomposed).casefold()


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["Zoë", "ÉMILE", "Ǆ", "ß", "ﬁ", "\u0301", " ", "  ",
                                                                 "\u00a0", "İ", "Σ", "ς", "ﾊﾟ", "①", "\u2003"])),
                max_size=6))
def test_folded_word_by_word_is_folded_whole(words: list[str]) -> None:
    text = "".join(words)
    assert fold(text) == _whole(text)
    assert fold(text) == _whole(text)  # again, from the cache


def test_examples() -> None:
    assert fold("Zoë Müller") == "zoe muller"
    assert fold("  Ǆemal  ") == "  dzemal  "
    assert sort_key("Émile") == "emile"
