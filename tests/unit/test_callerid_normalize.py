"""E.164 normalisation: our fast path for the common shapes must agree with phonenumbers wherever
it answers (it exists only for speed), and no input makes it raise."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.pbap.callerid import Normalizer, tail

REGIONS = ["GB", "DE", "FR", "US", "IT", "CN", "BR", "AU", "JP", "IN", "NL", "AR"]
PREFIXES = ["+", "00", "0", "", "+44", "+1", "+49 (0)", "+39 0", "+86 1", "+55", "+54 9", "011", "(0)", "+44 (0)",
            "+33 (0)", "+39 (0)", "+1 (0)", "+61 (0)", "+31 (0)"]


def _reference(number: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not parsed.national_number:
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REGIONS), st.sampled_from(PREFIXES), st.text("0123456789 -().", min_size=3, max_size=16))
def test_fast_path_agrees_with_phonenumbers(region: str, prefix: str, body: str) -> None:
    n = Normalizer(region)
    number = prefix + body
    fast = n._fast(number)
    if fast is None:
        return  # handed to phonenumbers: nothing to compare
    assert (fast or None) == _reference(number, region), number
    assert n.e164(number) == _reference(number, region)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REGIONS), st.text(max_size=40))
def test_any_text_is_total(region: str, text: str) -> None:
    n = Normalizer(region)
    out = n.e164(text)
    assert out is None or (out.startswith("+") and out[1:].isdigit())
    assert isinstance(tail(Normalizer.digits(text)), str)


@pytest.mark.parametrize(("region", "number", "e164"), [
    ("GB", "+44 7700 900123", "+447700900123"),
    ("GB", "07700 900123", "+447700900123"),
    ("GB", "07700-900-123", "+447700900123"),
    ("GB", "+44 (0)7700 900123", "+447700900123"),
    ("DE", "+33 (0)6 12 34 56 78", "+33612345678"),
    ("GB", "+39 (0)6 1234 5678", "+390612345678"),
    ("GB", "0044 7700 900123", "+447700900123"),
    ("GB", "+44 7700 900123 ext. 4", "+447700900123"),
    ("GB", "+44 7700 900123,,1234", "+447700900123"),
    ("DE", "0170 1234567", "+491701234567"),
    ("DE", "+49 (0)30 123456", "+4930123456"),
    ("US", "(555) 010-1234", "+15550101234"),
    ("US", "1 555 010 1234", "+15550101234"),
    ("US", "011 44 7700 900123", "+447700900123"),
    ("IT", "+39 06 1234 5678", "+390612345678"),
    ("FR", "06 12 34 56 78", "+33612345678"),
])
def test_known_formats(region: str, number: str, e164: str) -> None:
    assert Normalizer(region).e164(number) == e164


def test_not_numbers() -> None:
    n = Normalizer("GB")
    for text in ("", "   ", "withheld", "Unknown", "*", "+"):
        assert n.e164(text) is None
    assert tail("12345") == "" and tail("+447700900123") == "00900123"
