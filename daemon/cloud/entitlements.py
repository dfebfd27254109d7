"""Signed entitlements (JWS compact, EdDSA/Ed25519 with ``kid``) and the lease built on them.

``verify()`` checks a document from the backend against the trust anchors in config (several
keys, for rotation), the vehicle id, issue/not-after times (with a clock-skew allowance) and the
version held (lower or equal is a replay or rollback).  ``evaluate()`` turns the document held,
the time and the config's grace period and offline policy into one on/off decision per feature,
each with the source and a reason the dashboard can show the driver.

Signature checks use ``cryptography`` (imported when first needed, not at daemon start-up).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ..anchors import b64url_decode
from ..anchors import b64url_encode as b64url_encode  # re-exported: the fakes and the bench sign with it
from ..anchors import load_anchors as load_anchors  # re-exported: what verify() takes
from ..config import LOCAL_FEATURES
from .protocol import JsonTooDeep, loads_bounded

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FEATURE_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
MAX_FEATURES = 256
MAX_JWS_BYTES = 64 * 1024
JWS_TYP = "dashbridge-entitlements+jws"

# "companion": a document the driver's phone relayed (docs/ble-companion.md §6), verified like the
# backend's, that the backend has not itself confirmed yet.
Source = Literal["backend", "companion", "cached", "grace", "offline-policy"]

RejectReason = Literal[
    "malformed", "unsupported_algorithm", "unknown_key", "bad_signature", "wrong_vehicle",
    "not_yet_valid", "expired", "replay", "rollback",
]


class EntitlementRejected(Exception):
    def __init__(self, code: RejectReason, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class FeatureGrant:
    enabled: bool
    not_after: float | None = None


@dataclass(frozen=True)
class EntitlementDoc:
    jws: str
    kid: str
    vehicle_id: str
    version: int
    issued_at: float
    not_after: float
    features: Mapping[str, FeatureGrant]


def _ts(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e11:
        raise EntitlementRejected("malformed", f"{name} is not a time in epoch seconds")
    return float(value)


def _split(jws: str) -> tuple[list[str], dict[str, Any], bytes, bytes]:
    if len(jws) > MAX_JWS_BYTES:
        raise EntitlementRejected("malformed", "document too large")
    parts = jws.strip().split(".")
    if len(parts) != 3:
        raise EntitlementRejected("malformed", "not a JWS compact serialization (3 parts)")
    try:
        header = loads_bounded(b64url_decode(parts[0]))
        payload_bytes = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except JsonTooDeep as exc:
        raise EntitlementRejected("malformed", f"JWS header is not usable JSON ({exc})") from None
    except (ValueError, binascii.Error):
        raise EntitlementRejected("malformed", "a JWS part is not base64url JSON") from None
    if not isinstance(header, dict):
        raise EntitlementRejected("malformed", "JWS header is not an object")
    if header.get("alg") != "EdDSA":
        raise EntitlementRejected("unsupported_algorithm", f"alg {str(header.get('alg'))[:20]!r}, expected EdDSA")
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extensions, so we must reject
        raise EntitlementRejected("malformed", "JWS header has critical extensions we do not understand")
    return parts, header, payload_bytes, signature


def decode(jws: str, vehicle_id: str) -> EntitlementDoc:
    """Structure and claims, without the signature or time checks (see :func:`verify`)."""
    _parts, header, payload_bytes, _sig = _split(jws)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise EntitlementRejected("unknown_key", "no kid in the JWS header")
    try:
        claims = loads_bounded(payload_bytes)
    except JsonTooDeep as exc:
        raise EntitlementRejected("malformed", f"payload is not usable JSON ({exc})") from None
    except ValueError:
        raise EntitlementRejected("malformed", "payload is not JSON") from None
    if not isinstance(claims, dict):
        raise EntitlementRejected("malformed", "payload is not an object")
    if claims.get("vehicle_id") != vehicle_id:
        raise EntitlementRejected("wrong_vehicle", "document names another vehicle")
    version = claims.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise EntitlementRejected("malformed", "version is not a non-negative integer")
    issued_at = _ts(claims.get("issued_at"), "issued_at")
    not_after = _ts(claims.get("not_after"), "not_after")
    if not_after <= issued_at:
        raise EntitlementRejected("malformed", "not_after is not after issued_at")
    return EntitlementDoc(jws=jws.strip(), kid=kid, vehicle_id=vehicle_id, version=version,
                          issued_at=issued_at, not_after=not_after, features=_features(claims.get("features")))


def check_signature(jws: str, anchors: Mapping[str, Ed25519PublicKey]) -> None:
    from cryptography.exceptions import InvalidSignature

    parts, header, _payload, signature = _split(jws)
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in anchors:
        raise EntitlementRejected("unknown_key", f"signed with key {str(kid)[:40]!r}, not a trust anchor")
    try:
        anchors[kid].verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except InvalidSignature:
        raise EntitlementRejected("bad_signature", f"signature does not verify with key {kid!r}") from None


def verify(jws: str, anchors: Mapping[str, Ed25519PublicKey], vehicle_id: str, now: float, skew: float,
           held: EntitlementDoc | None) -> EntitlementDoc:
    """A verified document newer than ``held``, or :class:`EntitlementRejected`.  The signature
    is checked before any claim is believed."""
    check_signature(jws, anchors)
    doc = decode(jws, vehicle_id)
    if doc.issued_at > now + skew:
        raise EntitlementRejected("not_yet_valid", f"issued in the future ({_iso(doc.issued_at)})")
    if now - skew > doc.not_after:
        raise EntitlementRejected("expired", f"expired at {_iso(doc.not_after)}")
    if held is not None:
        if doc.version < held.version:
            raise EntitlementRejected("rollback", f"version {doc.version} is older than the held {held.version}")
        if doc.version == held.version:
            raise EntitlementRejected("replay", f"version {doc.version} is already held")
    return doc


def same_document(a: EntitlementDoc | None, jws: str) -> bool:
    return a is not None and a.jws == jws.strip()


def parse_held(jws: str, vehicle_id: str, anchors: Mapping[str, Ed25519PublicKey] | None
               ) -> EntitlementDoc | None:
    """Re-read the document kept on disk.  At start-up (``anchors`` None) only its structure is
    read, so the lease is right from the first instant without importing ``cryptography``; once
    the cloud runs, the signature is checked again (tampering, anchors rotated).  Time is not
    checked: the lease decides what an old document still means."""
    try:
        if anchors is not None:
            check_signature(jws, anchors)
        return decode(jws, vehicle_id)
    except EntitlementRejected:
        return None


def _features(raw: Any) -> dict[str, FeatureGrant]:
    if not isinstance(raw, dict):
        raise EntitlementRejected("malformed", "features is not an object")
    out: dict[str, FeatureGrant] = {}
    for name, grant in list(raw.items())[:MAX_FEATURES]:
        if not isinstance(name, str) or not FEATURE_RE.match(name):
            continue
        if isinstance(grant, bool):
            out[name] = FeatureGrant(grant)
            continue
        if not isinstance(grant, dict) or not isinstance(grant.get("enabled"), bool):
            raise EntitlementRejected("malformed", f"feature {name} has no enabled flag")
        exp = grant.get("not_after")
        out[name] = FeatureGrant(grant["enabled"], None if exp is None else _ts(exp, f"{name}.not_after"))
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- the lease ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureState:
    enabled: bool
    source: str  # backend | companion | cached | grace | offline-policy | local
    reason: str


@dataclass(frozen=True)
class Lease:
    source: Source
    features: Mapping[str, FeatureState]
    next_change: float | None  # the next instant the outcome can change by time alone
    not_after: float  # 0 when no document
    grace_until: float  # 0 when no document


def evaluate(held: EntitlementDoc | None, now: float, *, grace: float, skew: float,
             offline_policy: Mapping[str, bool], gated_local: Iterable[str], confirmed: bool,
             courier: str = "") -> Lease:
    """One decision per feature.  ``confirmed``: the backend vouched for ``held`` at the last sync;
    ``courier``: who brought ``held`` when not the backend ("companion": the driver's phone)."""
    gated = set(gated_local)
    names = set(offline_policy) | set(LOCAL_FEATURES)
    if held is not None:
        names |= set(held.features)
    changes: list[float] = []
    source: Source
    # Boundaries are half-open ([start, end)) and the next change is strictly in the future, so
    # a loop that wakes exactly at a boundary sees the new state and never spins on it.
    if held is not None and now < held.not_after + skew:
        source = "backend" if confirmed else ("companion" if courier == "companion" else "cached")
        changes.append(held.not_after + skew)
    elif held is not None and now < held.not_after + skew + grace:
        source = "grace"
        changes.append(held.not_after + skew + grace)
    else:
        source = "offline-policy"
    out: dict[str, FeatureState] = {}
    for name in sorted(names):
        if name in LOCAL_FEATURES and name not in gated:
            out[name] = FeatureState(True, "local", "local phone feature; the cloud never gates it")
            continue
        if source == "offline-policy":
            st = _offline(name, held, offline_policy)
        else:
            st = _from_document(name, held, now, skew, source, grace, changes)
        if name in LOCAL_FEATURES:  # gated by the integrator: say so, it is not the backend's doing
            st = FeatureState(st.enabled, st.source, f"gated by cloud.gated_local_features; {st.reason}")
        out[name] = st
    future = [c for c in changes if c > now]
    return Lease(
        source=source, features=out, next_change=min(future) if future else None,
        not_after=held.not_after if held is not None else 0.0,
        grace_until=held.not_after + skew + grace if held is not None else 0.0,
    )


def _from_document(name: str, held: EntitlementDoc | None, now: float, skew: float, source: str, grace: float,
                   changes: list[float]) -> FeatureState:
    assert held is not None
    grant = held.features.get(name)
    lease_note = (f"in grace until {_iso(held.not_after + skew + grace)} (lease ended {_iso(held.not_after)})"
                  if source == "grace" else f"lease valid until {_iso(held.not_after)}")
    if grant is None:
        return FeatureState(False, source, f"not in entitlement v{held.version}; {lease_note}")
    if not grant.enabled:
        return FeatureState(False, source, f"not entitled (v{held.version}); {lease_note}")
    if grant.not_after is not None and now >= grant.not_after + skew:
        return FeatureState(False, source, f"entitlement ended {_iso(grant.not_after)}")
    if grant.not_after is not None:
        changes.append(grant.not_after + skew)
    until = f" until {_iso(grant.not_after)}" if grant.not_after is not None else ""
    return FeatureState(True, source, f"entitled{until} (v{held.version}); {lease_note}")


def _offline(name: str, held: EntitlementDoc | None, policy: Mapping[str, bool]) -> FeatureState:
    why = "no entitlement document received yet" if held is None else f"lease and grace ended (v{held.version})"
    if name not in policy:
        return FeatureState(False, "offline-policy", f"{why}; offline policy does not list it")
    on = policy[name]
    return FeatureState(on, "offline-policy", f"{why}; offline policy says {'on' if on else 'off'}")
