"""Signed entitlements: what is accepted, what is rejected (and why), and the lease they make."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from dashbridge.daemon.cloud.entitlements import (
    EntitlementRejected,
    b64url_encode,
    evaluate,
    load_anchors,
    parse_held,
    verify,
)
from dashbridge.simulator.cloud import sign_jws

VIN = "WDB0000000DASH001"
NOW = 1_800_000_000.0
DAY = 86400.0
K1, K2, ROGUE = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def _pub(k: Ed25519PrivateKey) -> str:
    return b64url_encode(k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


ANCHORS, _ = load_anchors({"k1": _pub(K1), "k2": _pub(K2)})


def doc(version: int = 3, *, vehicle: str = VIN, issued: float = NOW - 60, lease: float = 10 * DAY,
        features: dict[str, Any] | None = None, key: Ed25519PrivateKey = K1, kid: str = "k1") -> str:
    claims = {"vehicle_id": vehicle, "version": version, "issued_at": issued, "not_after": issued + lease,
              "features": features if features is not None else {"remote_navigation": {"enabled": True},
                                                                 "wifi_hotspot": {"enabled": False}},
              "a_future_field": {"ignored": True}}
    return sign_jws(claims, key, kid)


def test_a_good_document_verifies_with_either_rotation_key() -> None:
    d = verify(doc(), ANCHORS, VIN, NOW, 300, None)
    assert d.version == 3 and d.features["remote_navigation"].enabled
    d2 = verify(doc(4, key=K2, kid="k2"), ANCHORS, VIN, NOW, 300, d)
    assert d2.version == 4 and d2.kid == "k2"


@pytest.mark.parametrize(("jws", "code"), [
    (doc(key=ROGUE, kid="k1"), "bad_signature"),
    (doc(key=ROGUE, kid="rogue"), "unknown_key"),
    (doc(vehicle="SOMEONE-ELSE"), "wrong_vehicle"),
    (doc(issued=NOW - 20 * DAY, lease=10 * DAY), "expired"),
    (doc(issued=NOW + 3600), "not_yet_valid"),
    ("not.a.jws", "malformed"),
    ("abc", "malformed"),
])
def test_bad_documents_are_rejected_with_a_reason(jws: str, code: str) -> None:
    with pytest.raises(EntitlementRejected) as ei:
        verify(jws, ANCHORS, VIN, NOW, 300, None)
    assert ei.value.code == code


def test_tampered_payload_fails_the_signature() -> None:
    h, _p, s = doc().split(".")
    forged = b64url_encode(json.dumps({"vehicle_id": VIN, "version": 99, "issued_at": NOW, "not_after": NOW + DAY,
                                       "features": {"remote_navigation": True}}).encode())
    with pytest.raises(EntitlementRejected) as ei:
        verify(f"{h}.{forged}.{s}", ANCHORS, VIN, NOW, 300, None)
    assert ei.value.code == "bad_signature"


def test_alg_none_and_crit_headers_are_refused() -> None:
    none_header = b64url_encode(b'{"alg":"none","kid":"k1"}')
    _h, p, _s = doc().split(".")
    with pytest.raises(EntitlementRejected) as ei:
        verify(f"{none_header}.{p}.", ANCHORS, VIN, NOW, 300, None)
    assert ei.value.code == "unsupported_algorithm"
    crit = b64url_encode(b'{"alg":"EdDSA","kid":"k1","crit":["exp"],"exp":1}')
    sig = b64url_encode(K1.sign(f"{crit}.{p}".encode()))
    with pytest.raises(EntitlementRejected, match="critical extensions"):
        verify(f"{crit}.{p}.{sig}", ANCHORS, VIN, NOW, 300, None)


def test_replay_and_rollback_are_rejected_against_the_held_version() -> None:
    held = verify(doc(5), ANCHORS, VIN, NOW, 300, None)
    with pytest.raises(EntitlementRejected) as ei:
        verify(doc(5, features={"x": True}), ANCHORS, VIN, NOW, 300, held)
    assert ei.value.code == "replay"
    with pytest.raises(EntitlementRejected) as ei:
        verify(doc(4), ANCHORS, VIN, NOW, 300, held)
    assert ei.value.code == "rollback"


def test_clock_skew_is_tolerated_both_ways() -> None:
    verify(doc(issued=NOW + 200), ANCHORS, VIN, NOW, 300, None)  # backend clock a little ahead
    verify(doc(issued=NOW - DAY - 200, lease=DAY), ANCHORS, VIN, NOW, 300, None)  # just expired, within skew


def test_held_document_rereads_without_keys_and_fails_when_anchors_rotate_away() -> None:
    jws = doc()
    assert parse_held(jws, VIN, None) is not None  # start-up: structure only, no crypto import
    assert parse_held(jws, VIN, ANCHORS) is not None
    only_k2, _ = load_anchors({"k2": _pub(K2)})
    assert parse_held(jws, VIN, only_k2) is None


def test_bad_anchor_config_is_reported_not_fatal() -> None:
    keys, problems = load_anchors({"good": _pub(K1), "short": "AAAA", "junk": "!!!"})
    assert set(keys) == {"good"}
    assert len(problems) == 2 and all("cloud.trust_anchors." in p for p in problems)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_verify_is_total_on_garbage(text: str) -> None:
    try:
        verify(text, ANCHORS, VIN, NOW, 300, None)
    except EntitlementRejected:
        pass


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                                                      st.dictionaries(st.text(max_size=8), st.booleans()))))
def test_verify_is_total_on_signed_but_odd_claims(claims: dict[str, Any]) -> None:
    try:
        verify(sign_jws(claims, K1, "k1"), ANCHORS, VIN, NOW, 300, None)
    except EntitlementRejected:
        pass


# --- the lease ---------------------------------------------------------------------------------
def _lease(held_doc: str | None, now: float, **kw: Any) -> Any:
    held = verify(held_doc, ANCHORS, VIN, NOW, 300, None) if held_doc else None
    args: dict[str, Any] = {"grace": 30 * DAY, "skew": 300.0, "offline_policy": {"remote_navigation": False,
                                                                                  "wifi_hotspot": True},
                            "gated_local": (), "confirmed": True}
    args.update(kw)
    return evaluate(held, now, **args)


def test_sources_move_from_backend_through_grace_to_offline_policy() -> None:
    d = doc(issued=NOW, lease=10 * DAY)
    on = _lease(d, NOW + DAY)
    assert on.source == "backend" and on.features["remote_navigation"].enabled
    assert not on.features["wifi_hotspot"].enabled  # the document says no, the policy is irrelevant
    assert on.next_change == NOW + 10 * DAY + 300
    assert _lease(d, NOW + DAY, confirmed=False).source == "cached"
    grace = _lease(d, NOW + 20 * DAY)
    assert grace.source == "grace" and grace.features["remote_navigation"].enabled
    assert "grace until" in grace.features["remote_navigation"].reason
    off = _lease(d, NOW + 41 * DAY)
    assert off.source == "offline-policy"
    assert not off.features["remote_navigation"].enabled and off.features["wifi_hotspot"].enabled
    assert "offline policy says on" in off.features["wifi_hotspot"].reason


def test_no_document_ever_means_offline_policy_and_unlisted_features_are_off() -> None:
    lease = _lease(None, NOW, offline_policy={"wifi_hotspot": True})
    assert lease.source == "offline-policy" and lease.features["wifi_hotspot"].enabled
    assert "no entitlement document received yet" in lease.features["wifi_hotspot"].reason


def test_a_feature_with_its_own_expiry_ends_then_without_grace() -> None:
    d = doc(issued=NOW, lease=10 * DAY, features={"trial": {"enabled": True, "not_after": NOW + DAY}})
    assert _lease(d, NOW + 3600).features["trial"].enabled
    assert _lease(d, NOW + 3600).next_change == NOW + DAY + 300
    ended = _lease(d, NOW + 2 * DAY).features["trial"]
    assert not ended.enabled and "entitlement ended" in ended.reason


def test_local_phone_features_are_never_gated_unless_config_says_so() -> None:
    off = _lease(None, NOW, offline_policy={})
    for name in ("calls", "contacts", "messages", "message_navigation"):
        assert off.features[name].enabled and off.features[name].source == "local"
    gated = _lease(None, NOW, offline_policy={}, gated_local=("messages",))
    assert not gated.features["messages"].enabled and gated.features["messages"].source == "offline-policy"
    assert gated.features["messages"].reason.startswith("gated by cloud.gated_local_features")
    assert gated.features["calls"].enabled
