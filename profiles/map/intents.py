"""Navigation destinations found in message text: a pure, total extractor.

Recognised, in order of confidence:

* ``geo:`` URIs (RFC 5870: ``geo:lat,lon[,alt][;crs=wgs84][;u=..]``, plus Android's
  ``geo:0,0?q=lat,lon(label)`` / ``geo:0,0?q=address`` extension);
* Google Maps links: ``!3dLAT!4dLON`` place markers, ``/@lat,lon,zoom``, ``q``/``query``/
  ``destination``/``daddr``/``ll`` parameters (coordinates or text), ``/maps/place/NAME``,
  ``/maps/search/TEXT``, ``/maps/dir/../DEST``;
* Apple Maps links: ``ll`` (with ``q`` as the label), ``daddr``, ``q``, ``address``, and the
  newer ``coordinate``/``name``/``destination`` parameters;
* OpenStreetMap links: ``mlat``/``mlon`` markers, ``#map=zoom/lat/lon`` views, ``/search?query=``;
* Waze links (``ll``, ``q``);
* short links that need the internet to resolve (``maps.app.goo.gl``, ``goo.gl/maps``,
  ``maps.apple``, ``osm.org/go``): offered as links, never fetched;
* UK-style postcodes and street addresses in plain text, as low-confidence text destinations.

Malformed or out-of-range coordinates make a link yield nothing (never a wrong destination).
``0,0`` is treated as "no coordinates": in geo URIs it is the placeholder for a query, and nobody
drives to the Gulf of Guinea.  Bounded: at most ``MAX_SCAN`` characters are scanned and
``MAX_INTENTS`` returned; at most ``MAX_CANDIDATES`` matches of each kind are considered, and
overlaps are found by bisection, so the work is linear in the text (see :func:`extract`).
Pure: standard library only, no I/O.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

MAX_SCAN = 64 * 1024
MAX_INTENTS = 8
# Links parsed, and addresses / postcodes considered, per call (each pass): bounds the work a
# hostile message can cost (64 KB of the same postcode is thousands of matches).
MAX_CANDIDATES = 256
MAX_URL = 2048
MAX_LABEL = 120

Kind = Literal["coordinates", "query", "link"]

# Confidence ladder (0..1): what the dashboard uses to sort and to decide how loudly to offer.
CONF_MARKER = 1.0  # an explicit pin: geo:, !3d!4d, mlat/mlon, ll, daddr coordinates
CONF_VIEW = 0.8  # a map view's centre: Google /@lat,lon, OSM #map=
CONF_QUERY = 0.7  # a place search a map link carries (q=, /place/NAME without coordinates)
CONF_ADDRESS_POSTCODE = 0.5  # a street address with a postcode in plain text
CONF_LINK = 0.4  # a short link we must not resolve
CONF_ADDRESS = 0.35  # a street address without a postcode
CONF_POSTCODE = 0.3  # a lone postcode


@dataclass(frozen=True)
class Intent:
    kind: Kind
    label: str
    lat: float | None = None
    lon: float | None = None
    query: str = ""
    url: str = ""
    confidence: float = 1.0
    origin: str = ""  # geo | google | apple | osm | waze | shortlink | address | postcode
    start: int = 0  # offset in the scanned text (for ordering / highlighting)

    def key(self) -> tuple[object, ...]:
        """Two intents with the same key are the same destination."""
        if self.lat is not None and self.lon is not None:
            return ("c", round(self.lat, 5), round(self.lon, 5))
        if self.kind == "link":
            return ("l", self.url)
        return ("q", " ".join(self.query.lower().split()))


# --- coordinates -----------------------------------------------------------------------------------

_NUM = r"[+-]?\d{1,3}(?:\.\d{1,15})?"
_PAIR_RE = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*$")


def valid_coordinates(lat: float, lon: float) -> bool:
    return (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
            and not (lat == 0.0 and lon == 0.0))


def parse_pair(text: str) -> tuple[float, float] | None:
    """``"51.5,-0.12"`` -> (51.5, -0.12); None for anything else or out of range."""
    m = _PAIR_RE.match(text)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    return (lat, lon) if valid_coordinates(lat, lon) else None


def _label(text: str) -> str:
    text = " ".join(text.split())
    text = "".join(ch for ch in text if ch >= " " and ch != "\x7f")
    return text[:MAX_LABEL]


# --- URLs ----------------------------------------------------------------------------------------

_URL_RE = re.compile(r"(?i)\b(?:https?://|www\.|geo:)[^\s<>\"`{}|\\^]+")
_TRAIL = ".,;:!?'\"»”’…"

_GOOGLE_HOST = re.compile(r"^(?:www\.|maps\.)?google\.(?:[a-z]{2,3}|co\.[a-z]{2}|com\.[a-z]{2})$")
_APPLE_HOSTS = {"maps.apple.com", "www.maps.apple.com"}
_OSM_HOSTS = {"openstreetmap.org", "www.openstreetmap.org", "osm.org", "www.osm.org"}
_WAZE_HOSTS = {"waze.com", "www.waze.com", "ul.waze.com"}
_SHORT_HOSTS = {"maps.app.goo.gl", "goo.gl", "g.co", "maps.apple", "osm.org", "waze.to", "bit.ly", "tinyurl.com"}

_GOOGLE_MARKER = re.compile(rf"!3d({_NUM})!4d({_NUM})")
_GOOGLE_AT = re.compile(rf"/@({_NUM}),({_NUM})(?:,|/|$)")
_OSM_MAP = re.compile(rf"(?:^|&)map=\d{{1,2}}(?:\.\d+)?/({_NUM})/({_NUM})(?:&|$)")


def _trim_url(url: str) -> str:
    url = url[:MAX_URL]
    while url and url[-1] in _TRAIL:
        url = url[:-1]
    # A closing bracket belongs to the URL only if it opened one (Wikipedia-style links).
    for close, open_ in ((")", "("), ("]", "["), ("}", "{")):
        while url.endswith(close) and url.count(close) > url.count(open_):
            url = url[:-1]
            while url and url[-1] in _TRAIL:
                url = url[:-1]
    return url


def _first(params: dict[str, list[str]], *names: str) -> str:
    for n in names:
        for k, v in params.items():
            if k.lower() == n and v and v[0].strip():
                return v[0].strip()
    return ""


def _from_value(value: str, label: str, origin: str, url: str, start: int, conf_coords: float) -> Intent | None:
    """A parameter that is either ``lat,lon`` or free text."""
    if not value:
        return None
    pair = parse_pair(value)
    if pair:
        return Intent("coordinates", _label(label) or "Shared location", pair[0], pair[1], url=url,
                      confidence=conf_coords, origin=origin, start=start)
    if _looks_numeric(value):
        return None  # coordinates that are malformed or out of range: ignore, never guess
    q = _label(value)
    return Intent("query", _label(label) or q, query=q, url=url, confidence=CONF_QUERY, origin=origin,
                  start=start) if q else None


def _looks_numeric(value: str) -> bool:
    """Meant as coordinates (only numbers and separators, or a "lat,lon" start)?"""
    if re.fullmatch(r"[\s\d.,+\-@:/]*", value) and any(c.isdigit() for c in value):
        return True
    return bool(_COORD_START.match(value))


_COORD_START = re.compile(r"^\s*[+-]?\d{1,3}\.\d+\s*,\s*[+-]?\d")


def _google(u: str, path: str, params: dict[str, list[str]], start: int) -> Intent | None:
    segs = [unquote_plus(s) for s in path.split("/") if s]
    if not segs or segs[0].lower() != "maps":
        if not path.strip("/") and params:  # maps.google.com/?q=...
            segs = ["maps"]
        else:
            return None
    name = ""
    if len(segs) >= 3 and segs[1].lower() == "place":
        name = segs[2]
    m = _GOOGLE_MARKER.search(path)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if valid_coordinates(lat, lon):
            return Intent("coordinates", _label(name) or "Shared location", lat, lon, url=u,
                          confidence=CONF_MARKER, origin="google", start=start)
        return None
    for key in ("destination", "daddr", "q", "query", "ll", "center"):
        v = _first(params, key)
        if v:
            return _from_value(v, name or ("" if parse_pair(v) else v), "google", u, start, CONF_MARKER)
    if len(segs) >= 3 and segs[1].lower() == "dir":
        dest = [s for s in segs[2:] if not s.startswith("@") and not s.startswith("data=")]
        if dest:
            return _from_value(dest[-1], "", "google", u, start, CONF_MARKER)
    at = _GOOGLE_AT.search(path)
    if at:
        lat, lon = float(at.group(1)), float(at.group(2))
        if not valid_coordinates(lat, lon):
            return None
        return Intent("coordinates", _label(name) or "Shared location", lat, lon, url=u,
                      confidence=CONF_VIEW, origin="google", start=start)
    if name:
        return _from_value(name, name, "google", u, start, CONF_MARKER)
    if len(segs) >= 3 and segs[1].lower() == "search":
        return _from_value(segs[2], "", "google", u, start, CONF_MARKER)
    return None


def _apple(u: str, path: str, params: dict[str, list[str]], start: int) -> Intent | None:
    label = _first(params, "q", "name")
    for key in ("daddr", "destination"):
        v = _first(params, key)
        if v:
            return _from_value(v, "", "apple", u, start, CONF_MARKER)
    for key in ("ll", "coordinate", "sll"):
        v = _first(params, key)
        if v:
            pair = parse_pair(v)
            if pair is None:
                return None  # a malformed pin: ignore the link rather than guess from its label
            return Intent("coordinates", _label(label) or "Shared location", pair[0], pair[1], url=u,
                          confidence=CONF_MARKER, origin="apple", start=start)
    v = _first(params, "address", "q")
    return _from_value(v, "", "apple", u, start, CONF_MARKER) if v else None


def _osm(u: str, path: str, query: str, fragment: str, params: dict[str, list[str]], start: int
         ) -> Intent | None:
    mlat, mlon = _first(params, "mlat"), _first(params, "mlon")
    if mlat or mlon:
        pair = parse_pair(f"{mlat},{mlon}")
        if pair is None:
            return None
        return Intent("coordinates", "Shared location", pair[0], pair[1], url=u, confidence=CONF_MARKER,
                      origin="osm", start=start)
    for src in (fragment, query):
        m = _OSM_MAP.search(src)
        if m:
            lat, lon = float(m.group(1)), float(m.group(2))
            if not valid_coordinates(lat, lon):
                return None
            return Intent("coordinates", "Shared location", lat, lon, url=u, confidence=CONF_VIEW, origin="osm",
                          start=start)
    if path.rstrip("/").lower() == "/search":
        v = _first(params, "query")
        return _from_value(v, "", "osm", u, start, CONF_MARKER) if v else None
    return None


def _waze(u: str, params: dict[str, list[str]], start: int) -> Intent | None:
    v = _first(params, "ll")
    if v:
        pair = parse_pair(v)
        if pair is None:
            return None
        return Intent("coordinates", "Shared location", pair[0], pair[1], url=u, confidence=CONF_MARKER,
                      origin="waze", start=start)
    v = _first(params, "q")
    return _from_value(v, "", "waze", u, start, CONF_MARKER) if v else None


_GEO_RE = re.compile(rf"^geo:({_NUM}),({_NUM})(?:,[+-]?\d+(?:\.\d+)?)?((?:;[^?#]*)?)(?:\?(.*))?$", re.I)
_GEO_Q_RE = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*(?:\((.*)\))?\s*$")


def _geo(u: str, start: int) -> Intent | None:
    m = _GEO_RE.match(u)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    params = m.group(3) or ""
    for p in params.split(";"):
        k, _, v = p.partition("=")
        if k.strip().lower() == "crs" and v.strip().lower() != "wgs84":
            return None  # another reference system: coordinates would be wrong
    q = ""
    if m.group(4):
        qs = parse_qs(m.group(4), keep_blank_values=False)
        q = _first(qs, "q")
    if q:
        qm = _GEO_Q_RE.match(q)
        if qm:
            qlat, qlon = float(qm.group(1)), float(qm.group(2))
            if not valid_coordinates(qlat, qlon):
                return None
            return Intent("coordinates", _label(qm.group(3) or "") or "Shared location", qlat, qlon, url=u,
                          confidence=CONF_MARKER, origin="geo", start=start)
        if lat == 0.0 and lon == 0.0:
            return _from_value(q, "", "geo", u, start, CONF_MARKER)
    if not valid_coordinates(lat, lon):
        return None
    return Intent("coordinates", _label(q) or "Shared location", lat, lon, url=u, confidence=CONF_MARKER,
                  origin="geo", start=start)


def intent_from_url(url: str, start: int = 0) -> Intent | None:
    """The destination one link points at, or None (not a map link, or malformed)."""
    u = _trim_url(url)
    if u.lower().startswith("geo:"):
        return _geo(unquote(u), start)
    full = u if "://" in u else "https://" + u
    try:
        parts = urlsplit(full)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    params = parse_qs(parts.query, keep_blank_values=False, max_num_fields=64) if parts.query else {}
    path = parts.path
    if _GOOGLE_HOST.match(host):
        if host.startswith("maps.") or path.lower().startswith("/maps"):
            return _google(u, path, params, start)
        return None
    if host in _APPLE_HOSTS:
        return _apple(u, path, params, start)
    if host in _OSM_HOSTS and not (host.endswith("osm.org") and path.startswith("/go/")):
        return _osm(u, path, parts.query, parts.fragment, params, start)
    if host in _WAZE_HOSTS:
        return _waze(u, params, start)
    if host in _SHORT_HOSTS and _is_map_shortlink(host, path):
        return Intent("link", f"Map link ({host})", url=u, confidence=CONF_LINK, origin="shortlink", start=start)
    return None


def _is_map_shortlink(host: str, path: str) -> bool:
    if host in ("maps.app.goo.gl", "maps.apple", "waze.to"):
        return len(path.strip("/")) > 0
    if host == "goo.gl":
        return path.startswith("/maps/")
    if host == "g.co":
        return path.startswith("/kgs/")
    if host == "osm.org":
        return path.startswith("/go/")
    return False  # bit.ly etc. could be anything: not offered as a destination


# --- plain text: UK postcodes and street addresses ----------------------------------------------

# Postcode: outward code (area letters + district) and inward code (digit + two letters, never
# C, I, K, M, O, V).  Case-insensitive: people type "sw1a 1aa".
_POSTCODE = (r"(?:GIR\s?0AA|[A-PR-UWYZ](?:\d[A-HJKPSTUW\d]?|[A-HK-Y]\d[ABEHMNPRV-Y\d]?)"
             r"\s?\d[ABD-HJLNP-UW-Z]{2})")
_POSTCODE_RE = re.compile(rf"(?<![A-Za-z0-9]){_POSTCODE}(?![A-Za-z0-9])", re.I)
_INWARD_HINT = re.compile(r"\d[A-Za-z]{2}(?![A-Za-z0-9])")
_STREET_TYPES = (
    "Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Cl|Way|Place|Pl|Square|Sq|Crescent|Cres|"
    "Terrace|Tce|Gardens|Gdns|Court|Ct|Park|Hill|Row|Mews|Grove|Gr|Walk|Parade|Boulevard|Blvd|"
    "Green|Rise|View|Wharf|Quay|Yard|Highway|Embankment|Circus|Broadway|Vale"
)
_WORD = r"[A-Z][A-Za-z'’\-]*\.?(?![A-Za-z0-9])"
_ADDRESS_RE = re.compile(
    rf"(?<![\w/])(\d{{1,4}}[A-Za-z]?(?:[-–]\d{{1,4}}[A-Za-z]?)?),?\s+"
    rf"((?:{_WORD}\s+){{1,3}}(?:{_STREET_TYPES})\b\.?)"
    rf"((?:,\s*(?!{_POSTCODE}(?![A-Za-z0-9])){_WORD}(?:\s+(?!{_POSTCODE}(?![A-Za-z0-9])){_WORD}){{0,2}}){{0,2}})"
    rf"(,?\s+{_POSTCODE}(?![A-Za-z0-9]))?"
)


def _overlaps(starts: list[int], ends: list[int], a: int, b: int) -> bool:
    """Does ``[a, b)`` overlap one of the disjoint, sorted intervals ``zip(starts, ends)``?"""
    j = bisect_right(ends, a)  # the first interval ending after a
    return j < len(starts) and starts[j] < b


def _text_intents(text: str, taken: list[tuple[int, int]]) -> list[Intent]:
    """Addresses and postcodes outside the ``taken`` spans (the links: disjoint, in order).

    Linear: each candidate is checked against the taken spans by bisection (never by rescanning
    earlier matches), and each pass stops after ``MAX_CANDIDATES`` candidates."""
    out: list[Intent] = []
    starts = [s for s, _ in taken]
    ends = [e for _, e in taken]
    addresses: list[tuple[int, int]] = []
    for m in _ADDRESS_RE.finditer(text):
        if _overlaps(starts, ends, m.start(), m.end()):
            continue
        q = _label(m.group(0).strip(" ,."))
        conf = CONF_ADDRESS_POSTCODE if m.group(4) else CONF_ADDRESS
        out.append(Intent("query", q, query=q, confidence=conf, origin="address", start=m.start()))
        addresses.append((m.start(), m.end()))
        if len(addresses) >= MAX_CANDIDATES:
            break
    if addresses:  # links and addresses never overlap each other: one sorted list of spans
        merged = sorted(taken + addresses)
        starts = [s for s, _ in merged]
        ends = [e for _, e in merged]
    # Postcodes: the full pattern is costly to try at every position, so it runs only just before
    # each inward code ("1AA": a digit and two letters ending a word).  Measured on the bench
    # corpus: the plain-text scan went from 44 to 22 us per message.
    seen_end = -1  # end of the last postcode taken: a later one starting before it overlaps it
    n = 0
    for hint in _INWARD_HINT.finditer(text):
        pc = _POSTCODE_RE.search(text, max(0, hint.start() - 9), hint.end())
        if pc is None or pc.start() < seen_end or _overlaps(starts, ends, pc.start(), pc.end()):
            continue
        seen_end = pc.end()
        q = _label(pc.group(0).upper())
        out.append(Intent("query", q, query=q, confidence=CONF_POSTCODE, origin="postcode", start=pc.start()))
        n += 1
        if n >= MAX_CANDIDATES:
            break
    return out


def extract(text: str, *, limit: int = MAX_INTENTS) -> list[Intent]:
    """Every destination in ``text``, in order of appearance, duplicates removed (the first
    occurrence wins, keeping the higher confidence).

    Bounded work per call, whatever the text: ``MAX_SCAN`` characters scanned, at most
    ``MAX_CANDIDATES`` links parsed and as many addresses and postcodes considered, each checked
    against the links in O(log n); about 10 ms for 64 KB of postcodes (``make bench``, hostile)."""
    text = text[:MAX_SCAN]
    found: list[Intent] = []
    taken: list[tuple[int, int]] = []
    for m in _URL_RE.finditer(text):
        taken.append((m.start(), m.end()))
        if len(taken) > MAX_CANDIDATES:
            continue  # still a link (no postcode inside it), but not parsed
        intent = intent_from_url(m.group(0), m.start())
        if intent is not None:
            found.append(intent)
    found.extend(_text_intents(text, taken))
    found.sort(key=lambda i: i.start)
    best: dict[tuple[object, ...], Intent] = {}
    order: list[tuple[object, ...]] = []
    for i in found:
        k = i.key()
        if k not in best:
            best[k] = i
            order.append(k)
        elif i.confidence > best[k].confidence:
            best[k] = i
    return [best[k] for k in order][:limit]
