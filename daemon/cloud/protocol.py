"""The cloud protocol's data: discovery documents, API versions, endpoints, response bodies and
error classes (docs/cloud-protocol.md is the specification).

Pure and total: parsers take bytes/JSON values from the network and either return typed values
or raise :class:`BadResponse` with a reason a person can act on.  Unknown fields are ignored
everywhere (forward compatibility), as the protocol requires.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

# API versions this daemon speaks, oldest first.  The highest one both sides list is used.
SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2)
WELL_KNOWN_PATH = "/.well-known/dashbridge"
# Endpoints a version must list to be usable (the rest are optional).
REQUIRED_ENDPOINTS = ("registration", "status", "entitlements", "destinations")
ENDPOINT_NAMES = (
    "registration", "status", "account_link", "link_code", "entitlements", "destinations",
    "destination_ack", "consent", "entitlements_report",
)
DEFAULT_DISCOVERY_REFRESH_S = 86400.0
# The largest answer body the car reads (declared by Content-Length or streamed): 1 MiB.  A larger
# one is refused as "too large" (docs/cloud-protocol.md §1).
MAX_BODY_BYTES = 1 << 20
# JSON nested deeper than this (arrays and objects) is refused; the protocol's documents need 5.
MAX_JSON_DEPTH = 64
# Error codes of a 404 that come from a live endpoint (a known resource is missing), so the car does
# not take the 404 as "this endpoint moved" and rediscover (docs/cloud-protocol.md §4).
LIVE_404_CODES = frozenset({"unknown_vehicle", "unknown_destination", "no_document"})
USER_CODE_RE = re.compile(r"^[A-Z0-9]{4,16}$")
CONSENT_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
MAX_LABEL = 200
MAX_ID = 128
MAX_CURSOR = 2048
# Acknowledgement results (docs/cloud-protocol.md §8): ``accepted`` (the car took it), ``shown``
# (offered on the dashboard, or handed to its navigation), ``driver_accepted``/``driver_declined``
# (the driver's decision), ``expired`` (never shown, or not acted on before it expired),
# ``rejected`` (unusable, or not entitled).  ``delivered`` is what cars before these states sent
# (it meant ``accepted``); backends keep accepting it.
ACK_RESULTS = ("accepted", "shown", "driver_accepted", "driver_declined", "expired", "rejected")
# Why the car rejected an entitlement document (``entitlements_report``'s ``reason``).
REPORT_REASONS = ("malformed", "unsupported_algorithm", "unknown_key", "bad_signature", "wrong_vehicle",
                  "not_yet_valid", "expired", "rollback", "replay")


# --- errors -----------------------------------------------------------------------------------
class CloudError(Exception):
    """Base of every failure talking to the backend.  ``reason`` is one line for a person."""

    # Does this failure say something about the backend as a whole (counts for the breaker)?
    backend_fault = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unreachable(CloudError):
    """No HTTP answer: connection refused, DNS, deadline passed, TLS failure."""


class TlsUntrusted(Unreachable):
    """The server's certificate is not signed by our CA bundle (or names another host)."""


class ServerError(CloudError):
    """5xx without Retry-After, or a redirect loop."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.status = status


class BadResponse(CloudError):
    """An answer we cannot use: malformed JSON, wrong content type, missing fields."""


class TooLarge(BadResponse):
    """An answer body over :data:`MAX_BODY_BYTES` (declared or as it streamed in)."""


class NoDocument(CloudError):
    """404 ``no_document``: the endpoint is there, the backend has no document for us yet."""

    backend_fault = False


class RetryLater(CloudError):
    """429 or 503 with Retry-After: the backend is alive and told us when to come back."""

    backend_fault = False

    def __init__(self, reason: str, retry_after: float, status: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status


class Refused(CloudError):
    """A 4xx that retrying will not fix (bad request, unknown code, forbidden vehicle)."""

    backend_fault = False

    def __init__(self, reason: str, status: int, code: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


class Gone(CloudError):
    """410 (or 404) even after rediscovery."""


class NoCommonVersion(CloudError):
    """The discovery document lists no API version we speak."""


# --- discovery ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Discovery:
    url: str  # where the document was finally read from (after redirects)
    version: int
    endpoints: Mapping[str, str]  # absolute URL templates
    offered: tuple[int, ...]
    refresh_after: float = DEFAULT_DISCOVERY_REFRESH_S
    fetched_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps({
            "url": self.url, "version": self.version, "endpoints": dict(self.endpoints),
            "offered": list(self.offered), "refresh_after": self.refresh_after, "fetched_at": self.fetched_at,
        }, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Discovery | None:
        """The stored form; None (and rediscovery) if it is damaged."""
        try:
            d = json.loads(text)
            return Discovery(
                url=str(d["url"]), version=int(d["version"]),
                endpoints={str(k): str(v) for k, v in dict(d["endpoints"]).items()},
                offered=tuple(int(v) for v in d.get("offered", [])),
                refresh_after=float(d.get("refresh_after", DEFAULT_DISCOVERY_REFRESH_S)),
                fetched_at=float(d.get("fetched_at", 0.0)),
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            return None

    def url_for(self, name: str, **params: str) -> str:
        try:
            template = self.endpoints[name]
        except KeyError:
            raise Gone(f"API v{self.version} has no {name} endpoint") from None
        out = template
        for k, v in params.items():
            out = out.replace("{" + k + "}", quote(v, safe=""))
        if "{" in out:
            raise BadResponse(f"endpoint {name} has a placeholder we cannot fill: {template}")
        return out


def discovery_url(base_url: str) -> str:
    return base_url.rstrip("/") + WELL_KNOWN_PATH


def parse_discovery(body: bytes, url: str, fetched_at: float,
                    supported: tuple[int, ...] = SUPPORTED_VERSIONS) -> Discovery:
    """Pick the highest API version both sides speak.  Relative endpoint URLs are resolved
    against the document's URL; only https endpoints are accepted."""
    doc = json_object(body, "discovery document")
    apis = doc.get("apis")
    if not isinstance(apis, list):
        raise BadResponse("discovery document has no 'apis' list")
    offered: dict[int, Mapping[str, Any]] = {}
    for entry in apis:
        if not isinstance(entry, dict):
            continue
        v = entry.get("version")
        if not isinstance(v, int) or isinstance(v, bool):
            continue
        if entry.get("status", "current") == "retired":
            continue
        eps = entry.get("endpoints")
        if isinstance(eps, dict):
            offered[v] = eps
    common = sorted(set(offered) & set(supported))
    if not common:
        listed = ", ".join(f"v{v}" for v in sorted(offered)) or "none"
        ours = ", ".join(f"v{v}" for v in supported)
        raise NoCommonVersion(f"backend offers API {listed}; this car speaks {ours}")
    version = common[-1]
    endpoints: dict[str, str] = {}
    for name, value in offered[version].items():
        if not isinstance(name, str) or not isinstance(value, str) or len(value) > 2048:
            continue
        absolute = urljoin(url, value)
        if urlsplit(absolute).scheme != "https":
            raise BadResponse(f"endpoint {name} is not https: {absolute}")
        endpoints[name] = absolute
    missing = [n for n in REQUIRED_ENDPOINTS if n not in endpoints]
    if missing:
        raise BadResponse(f"API v{version} lacks endpoints: {', '.join(missing)}")
    refresh = doc.get("refresh_after", DEFAULT_DISCOVERY_REFRESH_S)
    if not isinstance(refresh, (int, float)) or isinstance(refresh, bool) or not 60 <= refresh <= 30 * 86400:
        refresh = DEFAULT_DISCOVERY_REFRESH_S
    return Discovery(url=url, version=version, endpoints=endpoints, offered=tuple(sorted(offered)),
                     refresh_after=float(refresh), fetched_at=fetched_at)


# --- response bodies -----------------------------------------------------------------------------
class JsonTooDeep(ValueError):
    """JSON nested deeper than allowed."""


def loads_bounded(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for what the network sent: ValueError (or its subclass :class:`JsonTooDeep`)
    for anything unusable, never RecursionError.  The decoder's own recursion guard stops very
    deep input (100,000 ``[``) early; the depth of what did parse is then checked without
    recursion."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except RecursionError:
        raise JsonTooDeep(f"nested deeper than {max_depth} levels") from None
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise JsonTooDeep(f"nested deeper than {max_depth} levels")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return value


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = loads_bounded(body)
    except JsonTooDeep as exc:
        raise BadResponse(f"{what} is not usable JSON ({exc})") from None
    except ValueError:  # UnicodeDecodeError included
        raise BadResponse(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadResponse(f"{what} is not a JSON object")
    return value


def check_content_type(headers: Mapping[str, str], expected: tuple[str, ...], what: str) -> None:
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in expected:
        raise BadResponse(f"{what} came as {ctype or 'no content type'}, expected {' or '.join(expected)}")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class RegistrationResult:
    state: str  # "registered" | "pending"
    registration_id: str = ""


def parse_registration(doc: Mapping[str, Any], version: int) -> RegistrationResult:
    # v2 nests the object: {"registration": {"state": ...}}; v1 is flat.
    obj = doc.get("registration") if version >= 2 else doc
    if not isinstance(obj, dict):
        raise BadResponse("registration answer has no registration object")
    state = obj.get("state")
    if state not in ("registered", "pending"):
        raise BadResponse(f"registration state {state!r} is not registered/pending")
    rid = obj.get("id", "")
    return RegistrationResult(state=str(state), registration_id=str(rid)[:MAX_ID] if isinstance(rid, str) else "")


@dataclass(frozen=True)
class VehicleStatus:
    registration: str  # unregistered | pending | registered
    linked: bool


def parse_status(doc: Mapping[str, Any], version: int) -> VehicleStatus:
    reg = doc.get("registration")
    if version >= 2 and isinstance(reg, dict):
        reg = reg.get("state")
    if reg not in ("unregistered", "pending", "registered"):
        raise BadResponse(f"status registration {reg!r} is not unregistered/pending/registered")
    account = doc.get("account")
    linked = bool(account.get("linked")) if isinstance(account, dict) else False
    return VehicleStatus(registration=str(reg), linked=linked)


@dataclass(frozen=True)
class LinkCode:
    user_code: str
    verification_uri: str
    expires_at: float
    interval: float


def parse_link_code(doc: Mapping[str, Any]) -> LinkCode:
    code = doc.get("user_code")
    uri = doc.get("verification_uri")
    exp = _num(doc.get("expires_at"))
    if not isinstance(code, str) or not 4 <= len(code) <= 32:
        raise BadResponse("link code answer has no usable user_code")
    if not isinstance(uri, str) or not uri.startswith("https://") or len(uri) > 512:
        raise BadResponse("link code answer has no https verification_uri")
    if exp is None:
        raise BadResponse("link code answer has no expires_at")
    interval = _num(doc.get("interval")) or 5.0
    return LinkCode(code, uri, exp, min(max(interval, 2.0), 300.0))


def parse_link(doc: Mapping[str, Any]) -> bool:
    state = doc.get("state")
    if state not in ("linked", "pending"):
        raise BadResponse(f"account link state {state!r} is not linked/pending")
    return bool(state == "linked")


@dataclass(frozen=True)
class CloudDestination:
    id: str
    label: str
    lat: float | None
    lon: float | None
    address: str
    expires_at: float | None
    problem: str = ""  # non-empty: unusable, acknowledge as rejected with this reason


@dataclass(frozen=True)
class DestinationPage:
    items: list[CloudDestination]
    next: str | None  # the cursor of the next page; None: this was the last one
    skipped: int = 0  # items without a usable id (cannot be acknowledged): logged and counted


def parse_destinations(doc: Mapping[str, Any]) -> DestinationPage:
    """One page of ``GET destinations``.  Every item is taken (a backend that sends more than the
    page size it should is not punished by losing them; the 1 MiB answer cap bounds the page).
    Items without a usable ``id`` cannot be acknowledged: they are skipped and counted."""
    items = doc.get("destinations")
    if not isinstance(items, list):
        raise BadResponse("destinations answer has no 'destinations' list")
    nxt = doc.get("next")
    if nxt is not None and (not isinstance(nxt, str) or not 1 <= len(nxt) <= MAX_CURSOR):
        raise BadResponse("destinations answer has an unusable 'next' cursor")
    out: list[CloudDestination] = []
    seen: set[str] = set()
    skipped = 0
    for raw in items:
        did = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or not isinstance(did, str) or not 1 <= len(did) <= MAX_ID:
            skipped += 1  # cannot even acknowledge it (the caller logs and counts it)
            continue
        if did in seen:
            continue
        seen.add(did)
        out.append(_destination(did, raw))
    return DestinationPage(out, nxt, skipped)


def _destination(did: str, raw: Mapping[str, Any]) -> CloudDestination:
    label = raw.get("label", "")
    label = label.strip()[:MAX_LABEL] if isinstance(label, str) else ""
    address = raw.get("address", "")
    address = address.strip()[:500] if isinstance(address, str) else ""
    lat, lon = _num(raw.get("lat")), _num(raw.get("lon"))
    expires = _num(raw.get("expires_at"))
    problem = ""
    if (lat is None) != (lon is None):
        problem = "only one of lat/lon given"
    elif lat is not None and lon is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        problem = "coordinates out of range"
    elif lat is None and not address:
        problem = "neither coordinates nor an address"
    if not label:
        label = address or (f"{lat:.5f}, {lon:.5f}" if lat is not None and lon is not None else "destination")
    return CloudDestination(did, label, lat, lon, address, expires, problem)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - now)


def error_detail(body: bytes) -> tuple[str, str]:
    """(code, message) from an error body ``{"error": {"code":..., "message":...}}``, best effort."""
    try:
        doc = loads_bounded(body)
    except ValueError:
        return "", ""
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return "", ""
    code, msg = err.get("code", ""), err.get("message", "")
    return (str(code)[:64] if isinstance(code, str) else "", str(msg)[:200] if isinstance(msg, str) else "")


@dataclass
class Redirects:
    """Permanent redirects remembered (old URL -> new URL), bounded, newest kept."""

    table: dict[str, str] = field(default_factory=dict)
    limit: int = 256

    def resolve(self, url: str) -> str:
        seen = 0
        while url in self.table and seen < 8:
            url = self.table[url]
            seen += 1
        return url

    def forget(self, url: str) -> bool:
        return self.table.pop(url, None) is not None

    def remember(self, old: str, new: str) -> None:
        self.table.pop(old, None)
        self.table[old] = new
        while len(self.table) > self.limit:
            self.table.pop(next(iter(self.table)))
