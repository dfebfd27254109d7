"""Destinations from message text: the written corpus (tests/data/messages/intents.json) and
properties: every URL form with valid coordinates round-trips, anything out of range yields
nothing, and arbitrary text never raises and stays bounded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.profiles.map.intents import MAX_INTENTS, extract, intent_from_url, parse_pair

CASES = json.loads((Path(__file__).parents[1] / "data" / "messages" / "intents.json").read_text())


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_corpus(name: str, text: str, expected: list[dict[str, Any]]) -> None:
    got = extract(text)
    assert len(got) == len(expected), [(i.kind, i.label, i.lat, i.lon, i.query, i.url) for i in got]
    for g, want in zip(got, expected, strict=True):
        assert g.kind == want["kind"]
        for key in ("lat", "lon"):
            if key in want:
                assert getattr(g, key) == pytest.approx(want[key])
        for key in ("label", "query", "url", "origin", "confidence"):
            if key in want:
                assert getattr(g, key) == want[key], key
        if g.kind == "coordinates":
            assert g.query == "" and g.lat is not None and g.lon is not None
        if g.kind == "link":
            assert g.lat is None and g.query == ""


lat_st = st.floats(min_value=-89.999999, max_value=89.999999, allow_nan=False).map(lambda x: round(x, 6))
lon_st = st.floats(min_value=-179.999999, max_value=179.999999, allow_nan=False).map(lambda x: round(x, 6))
TEMPLATES = [
    "geo:{lat},{lon}",
    "https://www.google.com/maps/@{lat},{lon},15z",
    "https://maps.google.com/?q={lat},{lon}",
    "https://www.google.com/maps/place/X/data=!3d{lat}!4d{lon}",
    "https://maps.apple.com/?ll={lat},{lon}&q=Pin",
    "https://maps.apple.com/?daddr={lat},{lon}",
    "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}",
    "https://www.openstreetmap.org/#map=14/{lat}/{lon}",
    "https://ul.waze.com/ul?ll={lat},{lon}",
]


@settings(max_examples=300, deadline=None)
@given(lat=lat_st, lon=lon_st, template=st.sampled_from(TEMPLATES),
       before=st.text(max_size=40), after=st.text(max_size=40))
def test_valid_coordinates_in_every_link_form_are_found(lat: float, lon: float, template: str, before: str,
                                                        after: str) -> None:
    if lat == 0 and lon == 0:
        return
    url = template.format(lat=f"{lat:.6f}", lon=f"{lon:.6f}")
    got = [i for i in extract(f"{before} {url} {after}") if i.kind == "coordinates" and i.url.startswith(url[:12])]
    assert got, url
    assert got[0].lat == pytest.approx(lat, abs=1e-6) and got[0].lon == pytest.approx(lon, abs=1e-6)


bad_lat = st.one_of(st.floats(min_value=90.01, max_value=999), st.floats(min_value=-999, max_value=-90.01))
bad_lon = st.one_of(st.floats(min_value=180.01, max_value=999), st.floats(min_value=-999, max_value=-180.01))


@settings(max_examples=200, deadline=None)
@given(lat=bad_lat, lon=lon_st, swap=st.booleans(), template=st.sampled_from(TEMPLATES), data=st.data())
def test_out_of_range_coordinates_give_nothing(lat: float, lon: float, swap: bool, template: str,
                                               data: st.DataObject) -> None:
    if swap:
        lat, lon = data.draw(lat_st), data.draw(bad_lon)
    url = template.format(lat=f"{lat:.4f}", lon=f"{lon:.4f}")
    assert intent_from_url(url) is None, url
    assert all(i.kind != "coordinates" for i in extract(url))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_is_handled(text: str) -> None:
    got = extract(text)
    assert len(got) <= MAX_INTENTS
    for i in got:
        assert i.kind in ("coordinates", "query", "link")
        assert 0.0 < i.confidence <= 1.0
        if i.lat is not None:
            assert -90 <= i.lat <= 90 and i.lon is not None and -180 <= i.lon <= 180


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["https://", "www.", "geo:", "maps.google.com/", "?q=", "@", ",", "1", ".5",
                                 "-", "/", "#map=", "!3d", "!4d", " ", "Street", "12 ", "SW1A 1AA", "(", ")"]),
                max_size=60))
def test_link_shaped_noise_is_handled(parts: list[str]) -> None:
    for i in extract("".join(parts)):
        if i.lat is not None:
            assert parse_pair(f"{i.lat},{i.lon}") is not None


def test_scan_is_bounded_on_pathological_input() -> None:
    worst = ["1 " + "Aa " * 20000, "https://" + "a" * 100000, "geo:" + "1" * 100000, "9 " * 50000,
             "1, " + "A, " * 30000, ("https://maps.google.com/?q=1,1 " * 5000)]
    for text in worst:
        t0 = time.perf_counter()
        got = extract(text)
        assert time.perf_counter() - t0 < 0.5
        assert len(got) <= MAX_INTENTS
