"""Caller ID: phone numbers normalised to E.164 and an index that answers "who is calling?" in O(1).

Normalisation uses ``phonenumbers`` (``phonenumberslite``) with the car's region for numbers the
phone stored without a country code.  ``phonenumbers.parse`` costs ~28 us per number here, which
alone would take 0.2 s of a 5,000-contact sync (7,000 numbers), so :class:`Normalizer` answers the
common, unambiguous shapes itself (``+<country code><digits>``, ``00...`` where that is the
region's international prefix, and ``<national prefix><digits>``) in ~1 us and hands everything
else to ``phonenumbers``; a property test (tests/unit/test_callerid_normalize.py) checks that the
fast path agrees with ``phonenumbers`` wherever it answers.  Results are cached (bounded).

The index keeps, per phone: exact E.164 -> contact; the last :data:`TAIL_DIGITS` digits ->
contact (for a number the phone or the network sent without a country code while the car's region
differs from the phone's, e.g. a UK phone in a car configured for Germany); and bare digit strings
for numbers that have no E.164 form (short codes).  Two *different* names behind the same tail
make that tail ambiguous: no name rather than a wrong one.

Pure: no I/O; imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

TAIL_DIGITS = 8
_CACHE_MAX = 8192
_LEAD = frozenset("+0123456789")  # how a number in the common shape starts

_SEPARATORS = re.compile("[ \\-().\u00a0/\t\u2010\u2011\u2012\u2013\u2212\\[\\]]+")  # what a number may be written with
_EXTENSION_RE = re.compile(r"[,;pwxe#*]", re.IGNORECASE)  # pauses, "ext", DTMF suffixes


@dataclass(frozen=True, slots=True)
class Match:
    contact_id: int
    name: str


class Normalizer:
    """``e164(number)`` -> ``"+447700900123"`` or None; ``digits(number)`` -> ``"07700900123"``."""

    def __init__(self, region: str) -> None:
        self.region = (region or "ZZ").upper()
        self.country_code = phonenumbers.country_code_for_region(self.region)  # 0 if unknown
        md = phonenumbers.PhoneMetadata.metadata_for_region(self.region)
        prefix = md.national_prefix if md is not None else None
        parsing = md.national_prefix_for_parsing if md is not None else None
        # The fast national path only where stripping is the plain prefix (e.g. GB/DE/FR "0").
        self._national = prefix if prefix and prefix.isdigit() and parsing and (
            parsing == prefix or parsing.split("|")[0] == prefix) and self.country_code else None
        intl = md.international_prefix if md is not None else None
        self._intl = intl if intl and intl.isdigit() else None
        self._cache: dict[str, str | None] = {}
        self._keys: dict[str, tuple[str, str, str]] = {}

    @staticmethod
    def digits(number: str) -> str:
        """The dialable digits (``+`` kept), extensions and separators removed."""
        n = _SEPARATORS.sub("", number.strip())
        if n[1:].isdigit():
            return n  # the common case: no extension to cut
        m = _EXTENSION_RE.search(n, 1)
        return n[:m.start()] if m is not None else n

    def key(self, number: str) -> tuple[str, str, str]:
        """(E.164 or "", trailing digits, digits): what the index and the store keep per number.
        Each distinct number is worked out once (cached, bounded).  The common shape, digits
        with an optional leading "+" and spaces, is taken apart here without the separators'
        regex (the result is the same: a space is the only separator in it)."""
        k = self._keys.get(number)
        if k is None:
            k = self.key_uncached(number)
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()
            self._keys[number] = k
        return k

    def key_uncached(self, number: str) -> tuple[str, str, str]:
        """:meth:`key` without its cache: for a bulk load, whose numbers are nearly all distinct
        (the bench's 5,000 contacts: 6,958 distinct numbers of 6,987), the cache would only cost
        (~1 ms there) and push out the numbers lookups hit."""
        d = number.replace(" ", "")
        lead = d[:1]
        if lead == "+" and d[1:].isdigit():
            n = d[1:]  # = tail(d), without the checks that can't fail here
            size = len(n)
            t = n[-TAIL_DIGITS:] if size >= TAIL_DIGITS else ""
            # = _fast(number, d), the "+" branch: _international(n), its plain case inline (a known
            # country code, no trunk prefix after it)
            got = _COUNTRY_OF.get(n[:3]) if 7 <= size <= 15 and n[0] != "0" else None
            if got and got[2] is not None and n[got[1]] != "0" and not n.startswith(got[2], got[1]):
                e: str | None = "+" + n
            else:
                e = _international(n)
        else:
            if d[1:].isdigit() and lead in _LEAD:
                t = d[-TAIL_DIGITS:] if len(d) >= TAIL_DIGITS else ""  # = tail(d)
            else:
                d = self.digits(number)
                t = tail(d)
            e = self._fast(number, d)  # = e164(number, d), without its own cache: key's is enough
        if e is None:
            e = self._slow(number)
        return (e or "", t, d)

    def e164(self, number: str, digits: str | None = None) -> str | None:
        if number in self._cache:
            return self._cache[number]
        result = self._fast(number, digits)
        if result is None:
            result = self._slow(number)
        elif result == "":
            result = None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[number] = result
        return result

    def _fast(self, number: str, digits: str | None = None) -> str | None:
        """E.164, ``""`` for "certainly not a number", or None for "ask phonenumbers"."""
        d = self.digits(number) if digits is None else digits
        if not d:
            return ""
        if d[0] == "+":
            rest = d[1:]
        elif self._intl and d.startswith(self._intl):
            rest = d[len(self._intl):]
        else:
            rest = ""
        if rest:
            return _international(rest)
        if not d.isdigit():
            return None
        np = self._national
        if np == "0" and d.startswith("0") and not d.startswith("00") and _strips(self.country_code, d):
            return f"+{self.country_code}{d[1:]}"
        return None

    def _slow(self, number: str) -> str | None:
        try:
            parsed = phonenumbers.parse(number, self.region if self.country_code else None)
        except phonenumbers.NumberParseException:
            return None
        if not parsed.national_number:
            return None
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def _international(rest: str) -> str | None:
    """E.164 of a number written with its country code (``rest``: what follows "+" or the
    international prefix, not empty), or None for "ask phonenumbers"."""
    if not rest.isdigit() or not 7 <= len(rest) <= 15 or rest[0] == "0":
        return None
    head = rest[:3]
    got = _COUNTRY_OF.get(head)
    if got is None:
        got = _COUNTRY_OF[head] = _country_of(head)
    if not got:
        return None
    cc, n, trunk = got
    nat = rest[n:]
    if trunk is None:
        return None  # a pattern (carrier codes): phonenumbers knows
    if "0" in trunk and nat[0] == "0" and nat[1:2] not in ("", "0") and _strips(cc, nat):
        return f"+{cc}{nat[1:]}"  # "+44 (0)7700 900123": the trunk zero goes
    if nat[0] == "0" or nat.startswith(trunk):
        return None  # "+1 1...", Italian zeros, short numbers: phonenumbers knows
    return "+" + rest


_TRUNK: dict[int, tuple[str, ...] | None] = {}
# The first three digits after "+" -> (country code, its length, _trunk_prefixes) or () when no
# country code starts them (at most 1,000 entries: the country code depends on those digits only).
_COUNTRY_OF: dict[str, tuple[int, int, tuple[str, ...] | None] | tuple[()]] = {}


def _country_of(head: str) -> tuple[int, int, tuple[str, ...] | None] | tuple[()]:
    for n in (1, 2, 3):
        cc = int(head[:n])
        if cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return cc, n, _trunk_prefixes(cc)
    return ()


def _trunk_prefixes(cc: int) -> tuple[str, ...] | None:
    """What phonenumbers strips after a country code: the plain national prefixes of its main
    region, or None when the rule is a pattern (carrier codes, e.g. China): always ask it."""
    if cc in _TRUNK:
        return _TRUNK[cc]
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
    md = phonenumbers.PhoneMetadata.metadata_for_region(regions[0]) if regions else None
    got: tuple[str, ...] | None = ()
    if md is not None:
        rule = md.national_prefix_for_parsing
        if rule:
            alts = tuple(rule.split("|"))
            got = alts if all(a.isdigit() for a in alts) else None
        elif md.national_prefix:
            got = (md.national_prefix,)
    _TRUNK[cc] = got
    return got


_PATTERNS: dict[int, re.Pattern[str] | None] = {}


def _strips(cc: int, nat: str) -> bool:
    """True when phonenumbers certainly strips the trunk "0" of ``nat`` (national digits with the
    zero): the number without it is a valid shape for the country and the one with it is not
    (``_maybe_strip_national_prefix_and_carrier_code``).  Anything else goes to phonenumbers."""
    if cc not in _PATTERNS:
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
        md = phonenumbers.PhoneMetadata.metadata_for_region(regions[0]) if regions else None
        pattern = md.general_desc.national_number_pattern if md is not None and md.general_desc else None
        _PATTERNS[cc] = re.compile(pattern) if pattern else None
    rx = _PATTERNS[cc]
    return rx is not None and rx.fullmatch(nat[1:]) is not None and rx.fullmatch(nat) is None


def tail(digits: str) -> str:
    """The last :data:`TAIL_DIGITS` digits, or ``""`` for shorter numbers."""
    d = digits.lstrip("+")
    return d[-TAIL_DIGITS:] if len(d) >= TAIL_DIGITS and d.isdigit() else ""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    contact_id: int
    name: str
    e164: str  # "" when the number has no E.164 form
    tail: str
    digits: str


_AMBIGUOUS = Match(-1, "")


class _PhoneIndex:
    __slots__ = ("digits", "exact", "tails")

    def __init__(self) -> None:
        self.exact: dict[str, Match] = {}
        self.tails: dict[str, Match] = {}
        self.digits: dict[str, Match] = {}


class CallerIdIndex:
    """Per-phone lookup tables; replace a phone's entries after each sync (cheap: dict builds)."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        self._phones: dict[str, _PhoneIndex] = {}

    def replace_phone(self, phone: str, entries: Iterable[IndexEntry]) -> int:
        idx = _PhoneIndex()
        exact, tails, digits = idx.exact, idx.tails, idx.digits
        n = 0
        for e in entries:
            if not e.name:
                continue
            n += 1
            m = Match(e.contact_id, e.name)
            if e.e164:
                exact.setdefault(e.e164, m)
            elif e.digits:
                digits.setdefault(e.digits.lstrip("+"), m)
            if e.tail:
                old = tails.get(e.tail)
                if old is None:
                    tails[e.tail] = m
                elif old is not _AMBIGUOUS and old.name != m.name:
                    tails[e.tail] = _AMBIGUOUS
        self._phones[phone.upper()] = idx
        return n

    def drop_phone(self, phone: str) -> None:
        self._phones.pop(phone.upper(), None)

    def phones(self) -> list[str]:
        return list(self._phones)

    def lookup(self, phone: str, number: str) -> Match | None:
        idx = self._phones.get(phone.upper())
        if idx is None or not number:
            return None
        e164, t, d = self.normalizer.key(number)
        if e164:
            m = idx.exact.get(e164)
            if m is not None:
                return m
        if t:
            m = idx.tails.get(t)
            if m is not None:
                return None if m is _AMBIGUOUS else m
        m = idx.digits.get(d.lstrip("+"))
        return m

    def entry_for(self, contact_id: int, name: str, number: str) -> IndexEntry:
        e164, t, d = self.normalizer.key(number)
        return IndexEntry(contact_id, name, e164, t, d)
