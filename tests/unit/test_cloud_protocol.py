"""Parsers of the cloud protocol: discovery and versions, bodies, Retry-After; total on garbage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.daemon.cloud.protocol import (
    BadResponse,
    CloudError,
    NoCommonVersion,
    Redirects,
    parse_destinations,
    parse_discovery,
    parse_link_code,
    parse_registration,
    parse_status,
    retry_after_seconds,
)

BASE = "https://cloud.example.com/.well-known/dashbridge"
EPS = {"registration": "/v{n}/r", "status": "/v{n}/s", "entitlements": "/v{n}/e", "destinations": "/v{n}/d"}


def _doc(*versions: int, **extra: Any) -> bytes:
    apis = [{"version": v, "endpoints": {k: u.format(n=v) for k, u in EPS.items()}, "shiny": [1, 2]}
            for v in versions]
    return json.dumps({"apis": apis, "unknown_top_level": {"x": 1}, **extra}).encode()


def test_highest_common_version_wins_and_unknown_fields_are_ignored() -> None:
    d = parse_discovery(_doc(1, 2, 7), BASE, 5.0, supported=(1, 2))
    assert d.version == 2 and d.offered == (1, 2, 7)
    assert d.endpoints["registration"] == "https://cloud.example.com/v2/r"  # relative, resolved
    assert d.fetched_at == 5.0


def test_retired_versions_are_not_chosen_and_no_common_version_is_its_own_error() -> None:
    body = json.dumps({"apis": [
        {"version": 2, "status": "retired", "endpoints": {k: u.format(n=2) for k, u in EPS.items()}},
        {"version": 1, "endpoints": {k: u.format(n=1) for k, u in EPS.items()}}]}).encode()
    assert parse_discovery(body, BASE, 0.0).version == 1
    with pytest.raises(NoCommonVersion) as ei:
        parse_discovery(_doc(3, 4), BASE, 0.0)
    assert "v3, v4" in ei.value.reason and "v1, v2" in ei.value.reason


def test_endpoints_must_be_https_and_complete() -> None:
    body = json.dumps({"apis": [{"version": 1, "endpoints": {**{k: u.format(n=1) for k, u in EPS.items()},
                                                            "status": "http://plain.example.com/s"}}]}).encode()
    with pytest.raises(BadResponse, match="not https"):
        parse_discovery(body, BASE, 0.0)
    body = json.dumps({"apis": [{"version": 1, "endpoints": {"registration": "/r"}}]}).encode()
    with pytest.raises(BadResponse, match="lacks endpoints"):
        parse_discovery(body, BASE, 0.0)


def test_url_templates_escape_their_parameters() -> None:
    d = parse_discovery(_doc(1), BASE, 0.0)
    d2 = type(d)(d.url, d.version, {**d.endpoints, "consent": "https://x/v/{vehicle_id}/c/{consent}"}, d.offered)
    assert d2.url_for("consent", vehicle_id="A/B", consent="x y") == "https://x/v/A%2FB/c/x%20y"


def test_versioned_bodies() -> None:
    assert parse_registration({"state": "registered", "id": "r1", "new": 1}, 1).state == "registered"
    assert parse_registration({"registration": {"state": "pending"}}, 2).state == "pending"
    with pytest.raises(BadResponse):
        parse_registration({"state": "registered"}, 2)
    assert parse_status({"registration": "pending", "account": {"linked": True}}, 1).linked
    assert parse_status({"registration": {"state": "registered"}}, 2).registration == "registered"
    code = parse_link_code({"user_code": "K7Q4", "verification_uri": "https://e.com/link", "expires_at": 10,
                            "interval": 0.1})
    assert code.interval == 2.0  # a backend asking for a poll storm is not obeyed


def test_destinations_keep_unusable_ones_for_a_rejection_ack() -> None:
    out = parse_destinations({"destinations": [
        {"id": "a", "label": "Home", "lat": 51.5, "lon": -0.1},
        {"id": "b", "address": "10 Downing St"},
        {"id": "c", "lat": 200, "lon": 0},
        {"id": "d", "lat": 1},
        {"id": "e"},
        {"label": "no id"},
        {"id": "a", "label": "duplicate"},
        "junk",
    ]})
    assert [(d.id, bool(d.problem)) for d in out.items] == [("a", False), ("b", False), ("c", True), ("d", True),
                                                             ("e", True)]
    assert out.items[1].label == "10 Downing St"
    # Without a usable id nothing can be acknowledged: skipped and counted (the caller logs it).
    assert out.skipped == 2 and out.next is None


def test_destination_pages_take_every_item_and_the_next_cursor() -> None:
    many = {"destinations": [{"id": f"d{i}", "address": "x"} for i in range(700)], "next": "c2"}
    page = parse_destinations(many)
    assert len(page.items) == 700 and page.next == "c2", "items beyond 500 are taken, not dropped"
    assert parse_destinations({"destinations": [], "next": None}).next is None
    for bad in (5, "", "x" * 2049):
        with pytest.raises(BadResponse):
            parse_destinations({"destinations": [], "next": bad})


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after_seconds("120", 0.0) == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 30) == 30.0
    assert retry_after_seconds("soon", 0.0) is None
    assert retry_after_seconds(None, 0.0) is None


def test_redirect_memory_is_bounded_and_follows_chains() -> None:
    r = Redirects(limit=3)
    r.remember("a", "b")
    r.remember("b", "c")
    assert r.resolve("a") == "c"
    for i in range(10):
        r.remember(f"x{i}", "y")
    assert len(r.table) == 3
    r.remember("loop1", "loop2")
    r.remember("loop2", "loop1")
    r.resolve("loop1")  # terminates


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_discovery_parser_is_total(body: bytes) -> None:
    try:
        parse_discovery(body, BASE, 0.0)
    except CloudError:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["destinations", "apis", "registration", "state", "user_code", "x"]),
                       json_values))
def test_body_parsers_are_total(doc: dict[str, Any]) -> None:
    for fn in (lambda: parse_destinations(doc), lambda: parse_registration(doc, 1),
               lambda: parse_registration(doc, 2), lambda: parse_status(doc, 2), lambda: parse_link_code(doc),
               lambda: parse_discovery(json.dumps(doc).encode(), BASE, 0.0)):
        try:
            fn()
        except CloudError:
            pass
