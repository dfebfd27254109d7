"""``Normalizer.key`` (what the contacts store and the caller-ID index keep per number) takes the
common shape of a number (digits, a leading "+", spaces) apart without the separators' regex and
without ``e164``'s own cache (issue 18): it must give what the general functions give."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.pbap.callerid import Normalizer, tail

REGIONS = ["GB", "DE", "FR", "US", "IT", "CN", "ZZ", ""]


def _general(n: Normalizer, number: str) -> tuple[str, str, str]:
    d = Normalizer.digits(number)
    return Normalizer(n.region).e164(number) or "", tail(d), d


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(REGIONS), st.sampled_from(["+", "00", "0", "", "+44 ", "+1 ", " ", "٣", "+ "]),
       st.text("0123456789 ", max_size=18), st.sampled_from(["", " ", "\t", "-1", " ext 2", "²", "\u00a0"]))
def test_key_is_the_general_answer(region: str, prefix: str, body: str, suffix: str) -> None:
    n = Normalizer(region)
    number = prefix + body + suffix
    assert n.key(number) == _general(n, number)
    assert n.key(number) == _general(n, number)  # cached: the same
    assert n.key_uncached(number) == _general(n, number)  # what a bulk load uses


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REGIONS), st.text(max_size=24))
def test_key_of_any_text(region: str, text: str) -> None:
    n = Normalizer(region)
    assert n.key(text) == _general(n, text)
