"""The car's expectations of a backend, run against any backend: ``dashbridge-sim cloud-conformance``.

A backend team points this at their server (mutual TLS with a test vehicle's certificate) and gets
a report — text and JUnit — of what a car running dashbridge will find there, checked against
``docs/cloud-protocol.md`` (and ``docs/cloud-api.yaml``).  Each case is one expectation; a case
that cannot be checked against this backend (e.g. no retired API version to expect 410 from) is
*skipped* with the reason, never passed.

It writes to the backend (a registration, a consent) as a car would: use a test vehicle.

Cases: discovery (document, versions, https endpoints, the headers every request carries, redirects
within 5 https hops), status, the certificate/vehicle check (403), error bodies, idempotency
(a write without a key, an exact replay, a key reused for other content), entitlements (ETag,
304 on If-None-Match, the JWS header and claims, the signature against the anchors given), the
destinations list, Retry-After on 429/503, 410 from a retired version, and whole bodies whatever
their framing (chunked included, under the 1 MiB limit).  It also checks the car's own verifier
against the published JWS test vectors (``docs/cloud-vectors/``), so both sides share fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

MAX_BODY = 1024 * 1024  # docs/cloud-protocol.md §1: bodies over 1 MiB are refused (both sides)
MAX_HOPS = 5
REQUEST_TIMEOUT_S = 10.0
MAX_WAIT_S = 5.0  # the longest Retry-After the kit waits out before retrying once
SPOKEN_VERSIONS = (1, 2)
REQUIRED_ENDPOINTS = ("registration", "status", "entitlements", "destinations")
JWS_TYP = "dashbridge-entitlements+jws"
VECTORS_DIR = Path(__file__).resolve().parents[1] / "docs" / "cloud-vectors"


class Failed(Exception):
    """A case's expectation was not met (the message says which)."""


class Skipped(Exception):
    """A case cannot be checked against this backend (the message says why)."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    chunked: bool
    hops: list[tuple[int, str]] = field(default_factory=list)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise Failed(f"{self.url}: answer is not JSON ({exc.__class__.__name__})") from None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Case:
    name: str
    outcome: str  # passed | failed | skipped
    detail: str
    seconds: float


class Client:
    """HTTPS with the car's client certificate; bodies read whole with the 1 MiB cap; redirects
    followed as the car follows them (§3) and recorded."""

    def __init__(self, ca: str | None, cert: str, key: str, *, api_version: int = 1) -> None:
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)
        self.api_version = api_version
        self.seen: list[Answer] = []
        self._session: Any = None

    async def __aenter__(self) -> Client:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ctx), timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def request(self, method: str, url: str, *, body: Any = None, key: str | None = None,
                      headers: dict[str, str] | None = None) -> Answer:
        hdrs = {"Dashbridge-Api-Version": str(self.api_version), "User-Agent": "dashbridge-conformance/1",
                "Accept": "application/json"}
        hdrs.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if key:
            hdrs["Idempotency-Key"] = key
        hops: list[tuple[int, str]] = []
        retried = False
        for _ in range(MAX_HOPS + 2):
            if urlsplit(url).scheme != "https":
                raise Failed(f"{method} {url}: not an https URL")
            async with self._session.request(method, url, data=data, headers=hdrs, allow_redirects=False) as r:
                declared = r.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
                    raise Failed(f"{method} {url}: answer of {declared} bytes is over the 1 MiB limit")
                buf = bytearray()
                async for chunk in r.content.iter_any():
                    buf += chunk
                    if len(buf) > MAX_BODY:
                        raise Failed(f"{method} {url}: answer is over the 1 MiB limit")
                ans = Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, bytes(buf), url,
                             r.headers.get("Transfer-Encoding", "").lower() == "chunked", hops)
            self.seen.append(ans)
            wait = _retry_after(ans)
            if wait is not None and wait <= MAX_WAIT_S and not retried:
                # as the car does: wait what the backend asked (the kit waits only short times)
                retried = True
                await asyncio.sleep(wait)
                continue
            if ans.status in (301, 302, 307, 308):
                loc = ans.headers.get("location")
                if not loc:
                    raise Failed(f"{method} {url}: {ans.status} without Location")
                hops.append((ans.status, url))
                url = urljoin(url, loc)
                continue
            return ans
        raise Failed(f"{method}: more than {MAX_HOPS} redirects")


def _retry_after(ans: Answer) -> float | None:
    """Seconds a 429/503 asks the car to wait (None: not such an answer, or no usable header)."""
    if ans.status not in (429, 503):
        return None
    ra = ans.headers.get("retry-after", "").strip()
    if ra.isdigit():
        return float(ra)
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _expect_error_body(ans: Answer) -> str:
    try:
        doc = json.loads(ans.body)
        code, message = doc["error"]["code"], doc["error"]["message"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise Failed(f"{ans.status} from {ans.url}: error body is not "
                     '{"error": {"code": ..., "message": ...}}') from None
    if not isinstance(code, str) or not isinstance(message, str):
        raise Failed(f"{ans.status} from {ans.url}: error code and message must be strings")
    return code


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Kit:
    def __init__(self, url: str, *, ca: str | None, cert: str, key: str, vehicle: str,
                 anchors: dict[str, str] | None = None, other_vehicle: str = "CONFORMANCE-OTHER-VIN",
                 vectors: Path = VECTORS_DIR) -> None:
        self.base = url.rstrip("/")
        self.ca, self.cert, self.key = ca, cert, key
        self.vehicle = vehicle
        self.anchors = anchors or {}
        self.other_vehicle = other_vehicle
        self.vectors = vectors
        self.discovery: dict[str, Any] = {}
        self.discovery_url = ""
        self.version = 0
        self.endpoints: dict[str, str] = {}
        self.retired: list[dict[str, Any]] = []
        self.cases: list[Case] = []
        self.client: Client | None = None

    # -- helpers ----------------------------------------------------------------------------------
    def url(self, name: str, vehicle: str | None = None, **params: str) -> str:
        tmpl = self.endpoints.get(name)
        if tmpl is None:
            raise Skipped(f"discovery names no {name!r} endpoint for API v{self.version}")
        return self._fill(tmpl, vehicle or self.vehicle, **params)

    def _fill(self, tmpl: str, vehicle: str, **params: str) -> str:
        out = tmpl.replace("{vehicle_id}", quote(vehicle, safe=""))
        for k, v in params.items():
            out = out.replace("{" + k + "}", quote(v, safe=""))
        return urljoin(self.discovery_url, out)

    async def _case(self, name: str, fn: Callable[[], Awaitable[str]]) -> None:
        t0 = time.monotonic()
        try:
            detail = await fn()
            outcome = "passed"
        except Skipped as exc:
            outcome, detail = "skipped", str(exc)
        except Failed as exc:
            outcome, detail = "failed", str(exc)
        except Exception as exc:  # a backend that cannot be reached, TLS refused ...
            outcome, detail = "failed", f"{exc.__class__.__name__}: {exc}"
        self.cases.append(Case(name, outcome, detail, time.monotonic() - t0))

    # -- the run ----------------------------------------------------------------------------------
    async def run(self) -> list[Case]:
        async with Client(self.ca, self.cert, self.key) as client:
            self.client = client
            await self._case("discovery", self.check_discovery)
            if not self.version:
                return self.cases
            client.api_version = self.version
            for name, fn in (
                ("status", self.check_status),
                ("vehicle must match the certificate", self.check_other_vehicle),
                ("write without an idempotency key", self.check_no_key),
                ("idempotent replay", self.check_replay),
                ("idempotency key reused for other content", self.check_key_reuse),
                ("entitlements and ETag", self.check_entitlements),
                ("destinations", self.check_destinations),
                ("410 from a retired version", self.check_retired),
                ("redirects", self.check_redirects),
                ("Retry-After on 429/503", self.check_retry_after),
                ("bodies read whole", self.check_bodies),
            ):
                await self._case(name, fn)
        await self._case("JWS test vectors", self.check_vectors)
        return self.cases

    async def check_discovery(self) -> str:
        assert self.client is not None
        ans = await self.client.request("GET", f"{self.base}/.well-known/dashbridge")
        if ans.status != 200:
            raise Failed(f"discovery answered {ans.status}")
        if ans.content_type != "application/json":
            raise Failed(f"discovery content type {ans.content_type!r}, expected application/json")
        doc = ans.json()
        apis = doc.get("apis") if isinstance(doc, dict) else None
        if not isinstance(apis, list) or not apis:
            raise Failed("discovery has no 'apis' list")
        self.discovery, self.discovery_url = doc, ans.url
        usable: dict[int, dict[str, str]] = {}
        for api in apis:
            if not isinstance(api, dict) or isinstance(api.get("version"), bool) \
                    or not isinstance(api.get("version"), int):
                raise Failed("an 'apis' entry has no integer version")
            status = api.get("status")
            if status not in ("current", "deprecated", "retired"):
                raise Failed(f"API v{api['version']}: status {status!r} is not current/deprecated/retired")
            eps = api.get("endpoints")
            if not isinstance(eps, dict) or not all(isinstance(v, str) for v in eps.values()):
                raise Failed(f"API v{api['version']}: endpoints is not a map of URL templates")
            if status == "retired":
                self.retired.append(api)
                continue
            missing = [e for e in REQUIRED_ENDPOINTS if e not in eps]
            if missing:
                raise Failed(f"API v{api['version']}: required endpoints missing: {', '.join(missing)}")
            for name, tmpl in eps.items():
                if urlsplit(urljoin(ans.url, tmpl)).scheme != "https":
                    raise Failed(f"API v{api['version']}: endpoint {name} is not https")
            usable[api["version"]] = eps
        common = sorted(set(usable) & set(SPOKEN_VERSIONS))
        if not common:
            raise Failed(f"backend offers API v{sorted(usable)}; a car speaks v{list(SPOKEN_VERSIONS)}")
        self.version = common[-1]
        self.endpoints = usable[self.version]
        refresh = doc.get("refresh_after", 86400)
        if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not 60 <= refresh <= 30 * 86400:
            raise Failed("refresh_after must be 60 s to 30 days")
        return f"API v{self.version} of {sorted(usable)}; {len(self.endpoints)} endpoints, all https"

    async def check_status(self) -> str:
        assert self.client is not None
        ans = await self.client.request("GET", self.url("status"))
        if ans.status != 200:
            raise Failed(f"status answered {ans.status}")
        doc = ans.json()
        reg = doc.get("registration") if isinstance(doc, dict) else None
        state = reg.get("state") if self.version >= 2 and isinstance(reg, dict) else reg
        if state not in ("unregistered", "pending", "registered"):
            raise Failed(f"registration state {state!r} is not unregistered/pending/registered")
        return f"registration {state}"

    async def check_other_vehicle(self) -> str:
        assert self.client is not None
        ans = await self.client.request("GET", self.url("status", vehicle=self.other_vehicle))
        if ans.status != 403:
            raise Failed(f"a URL naming another vehicle than the certificate answered {ans.status}, expected 403")
        return f"403 {_expect_error_body(ans)}"

    async def check_no_key(self) -> str:
        assert self.client is not None
        ans = await self.client.request("POST", self.url("registration"), body=self._registration())
        if ans.status != 400:
            raise Failed(f"a write without Idempotency-Key answered {ans.status}, expected 400")
        code = _expect_error_body(ans)
        if code != "idempotency_key_required":
            raise Failed(f"error code {code!r}, expected idempotency_key_required")
        return "400 idempotency_key_required"

    def _registration(self) -> dict[str, Any]:
        return {"vehicle_id": self.vehicle, "software": "conformance", "requested_at": time.time()}

    async def check_replay(self) -> str:
        assert self.client is not None
        key = secrets.token_hex(16)
        body = self._registration()
        first = await self.client.request("POST", self.url("registration"), body=body, key=key)
        if first.status not in (200, 201):
            raise Failed(f"registration answered {first.status}")
        again = await self.client.request("POST", self.url("registration"), body=body, key=key)
        if again.status != first.status:
            raise Failed(f"the replay answered {again.status}, the original {first.status}")
        if again.headers.get("idempotent-replayed", "").lower() != "true":
            raise Failed("the replay lacks 'Idempotent-Replayed: true'")
        if again.json() != first.json():
            raise Failed("the replay's result differs from the original's")
        return f"{first.status}, replayed with the same result"

    async def check_key_reuse(self) -> str:
        assert self.client is not None
        if "consent" not in self.endpoints:
            raise Skipped("no consent endpoint to reuse a key on")
        key = secrets.token_hex(16)
        url = self.url("consent", consent="conformance_check")
        seq = int(time.time() * 1000)
        first = await self.client.request("PUT", url, body={"granted": True, "seq": seq}, key=key)
        if first.status >= 400:
            raise Failed(f"consent answered {first.status}")
        other = await self.client.request("PUT", url, body={"granted": False, "seq": seq + 1}, key=key)
        if other.status != 422:
            raise Failed(f"the same key with other content answered {other.status}, expected 422")
        code = _expect_error_body(other)
        if code != "idempotency_key_reused":
            raise Failed(f"error code {code!r}, expected idempotency_key_reused")
        return "422 idempotency_key_reused"

    async def check_entitlements(self) -> str:
        assert self.client is not None
        accept = "application/jose" if self.version >= 2 else "application/json"
        ans = await self.client.request("GET", self.url("entitlements"), headers={"Accept": accept})
        if ans.status in (204, 404):
            raise Skipped(f"no entitlement document for this vehicle yet ({ans.status})")
        if ans.status != 200:
            raise Failed(f"entitlements answered {ans.status}")
        etag = ans.headers.get("etag")
        if not etag or not (etag.startswith('"') or etag.startswith('W/"')):
            raise Failed("entitlements answer has no (quoted) ETag")
        if self.version >= 2:
            if ans.content_type != "application/jose":
                raise Failed(f"v2 entitlements content type {ans.content_type!r}, expected application/jose")
            jws = ans.body.decode("ascii", "replace").strip()
        else:
            doc = ans.json()
            found = doc.get("entitlements") if isinstance(doc, dict) else None
            if not isinstance(found, str):
                raise Failed("v1 entitlements answer has no 'entitlements' string")
            jws = found
        detail = self._check_jws(jws)
        again = await self.client.request("GET", self.url("entitlements"),
                                          headers={"Accept": accept, "If-None-Match": etag})
        if again.status != 304:
            raise Failed(f"If-None-Match with the current ETag answered {again.status}, expected 304")
        return f"{detail}; 304 on If-None-Match"

    def _check_jws(self, jws: str) -> str:
        parts = jws.split(".")
        if len(parts) != 3:
            raise Failed("the document is not a JWS compact serialization")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
        except (ValueError, RecursionError):
            raise Failed("a JWS part is not base64url JSON") from None
        if not isinstance(header, dict) or header.get("alg") != "EdDSA":
            raise Failed("JWS alg must be EdDSA")
        if header.get("typ") != JWS_TYP:
            raise Failed(f"JWS typ must be {JWS_TYP}")
        if "crit" in header:
            raise Failed("JWS header must not carry crit (the car rejects it)")
        if not isinstance(claims, dict) or claims.get("vehicle_id") != self.vehicle:
            raise Failed("the document does not name this vehicle")
        for k in ("version", "issued_at", "not_after"):
            if isinstance(claims.get(k), bool) or not isinstance(claims.get(k), (int, float)):
                raise Failed(f"claim {k} is missing or not a number")
        if not self.anchors:
            return f"JWS v{claims['version']} (signature not checked: no --anchors given)"
        from dashbridge.daemon.cloud.entitlements import EntitlementRejected, load_anchors, verify

        keys, problems = load_anchors(self.anchors)
        if problems:
            raise Failed(f"--anchors: {'; '.join(problems)}")
        try:
            verify(jws, keys, self.vehicle, time.time(), 300.0, None)
        except EntitlementRejected as exc:
            raise Failed(f"the car would reject this document: {exc}") from None
        return f"JWS v{claims['version']} verifies with kid {header.get('kid')!r}"

    async def check_destinations(self) -> str:
        """One page after another, following ``next`` (as the car does, at most 10 pages): each
        an object with a list of at most 500, every item with a usable id, ``next`` a non-empty
        string or null (or absent: no paging), and no id listed on two pages."""
        assert self.client is not None
        seen: set[str] = set()
        cursor: str | None = None
        pages = 0
        while True:
            url = self.url("destinations")
            if cursor is not None:
                url += ("&" if "?" in url else "?") + "cursor=" + quote(cursor, safe="")
            ans = await self.client.request("GET", url)
            pages += 1
            if ans.status != 200:
                raise Failed(f"destinations (page {pages}) answered {ans.status}")
            doc = ans.json()
            items = doc.get("destinations") if isinstance(doc, dict) else None
            if not isinstance(items, list):
                raise Failed(f"no 'destinations' list (page {pages})")
            if len(items) > 500:
                raise Failed(f"{len(items)} destinations in one answer (at most 500; page the rest with 'next')")
            for d in items:
                ident = d.get("id") if isinstance(d, dict) else None
                if not isinstance(ident, str) or not 1 <= len(ident) <= 128:
                    raise Failed("a destination without a usable id (1-128 characters): the car cannot "
                                 "acknowledge it, so never list one")
                if ident in seen:
                    raise Failed(f"destination {ident!r} listed on two pages of one listing")
                seen.add(ident)
            nxt = doc.get("next")
            if nxt is None:
                break
            if not isinstance(nxt, str) or not 1 <= len(nxt) <= 2048:
                raise Failed(f"'next' is not a cursor (1-2048 characters) or null (page {pages})")
            if not items:
                raise Failed(f"an empty page with a 'next' cursor (page {pages})")
            if pages >= 10:
                return f"{len(seen)} waiting in the first 10 pages (the car reads the rest at its next sync)"
            cursor = nxt
        return f"{len(seen)} waiting in {pages} page(s)"

    async def check_retired(self) -> str:
        assert self.client is not None
        if not self.retired:
            raise Skipped("discovery lists no retired API version")
        api = self.retired[0]
        tmpl = api["endpoints"].get("status")
        if not tmpl:
            raise Skipped(f"retired API v{api['version']} names no status endpoint")
        ans = await self.client.request("GET", self._fill(tmpl, self.vehicle))
        if ans.status not in (404, 410):
            raise Failed(f"retired API v{api['version']} answered {ans.status}, expected 410")
        return f"v{api['version']}: {ans.status}"

    async def check_redirects(self) -> str:
        assert self.client is not None
        hops = [(s, a.url) for a in self.client.seen for s, _u in a.hops]
        if not hops:
            raise Skipped("no redirect was answered during the run")
        return f"{len(hops)} redirects followed within {MAX_HOPS} https hops"

    async def check_retry_after(self) -> str:
        assert self.client is not None
        busy = [a for a in self.client.seen if a.status in (429, 503)]
        if not busy:
            raise Skipped("no 429 or 503 was answered during the run")
        for a in busy:
            if _retry_after(a) is None:
                raise Failed(f"{a.status} from {a.url} without a usable Retry-After")
        return f"{len(busy)} answers with Retry-After, honoured"

    async def check_bodies(self) -> str:
        assert self.client is not None
        seen = self.client.seen
        chunked = sum(1 for a in seen if a.chunked)
        largest = max((len(a.body) for a in seen), default=0)
        return f"{len(seen)} answers read whole ({chunked} chunked), largest {largest} bytes"

    async def check_vectors(self) -> str:
        index = self.vectors / "vectors.json"
        if not index.exists():
            raise Skipped(f"no test vectors at {self.vectors}")
        return check_vectors(index)


# -- JWS test vectors ---------------------------------------------------------------------------------

# A signing key that is public by design (like RFC 8037's example key): derived from a fixed seed so
# that anyone can reproduce the vectors byte for byte.  Never a fleet key.
VECTOR_SEED = hashlib.sha256(b"dashbridge entitlement test vectors, public test key").digest()
ROGUE_SEED = hashlib.sha256(b"dashbridge entitlement test vectors, a key nobody trusts").digest()
VECTOR_KID = "test-vectors-1"
VECTOR_VEHICLE = "WDB0000000DASH001"
VECTOR_NOW = 1_717_600_000  # the time every vector is checked at


def _sign(header: dict[str, Any], claims: dict[str, Any], seed: bytes = VECTOR_SEED) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(seed)
    h = _b64url(json.dumps(header, separators=(",", ":")).encode())
    p = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{_b64url(key.sign(f'{h}.{p}'.encode()))}"


def make_vectors() -> dict[str, Any]:
    """The published vectors: each a JWS, what the car must say of it, and why."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = Ed25519PrivateKey.from_private_bytes(VECTOR_SEED).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    hdr = {"alg": "EdDSA", "kid": VECTOR_KID, "typ": JWS_TYP}
    good = {"vehicle_id": VECTOR_VEHICLE, "version": 7, "issued_at": VECTOR_NOW - 3600,
            "not_after": VECTOR_NOW + 30 * 86400,
            "features": {"remote_navigation": {"enabled": True}, "wifi_hotspot": {"enabled": False}}}
    valid = _sign(hdr, good)
    h, p, _s = valid.split(".")
    vectors: list[dict[str, Any]] = [
        {"name": "valid", "jws": valid, "expect": "accepted", "held_version": 0},
        {"name": "bad_signature", "jws": f"{h}.{p}.{_b64url(b'x' * 64)}", "expect": "bad_signature"},
        {"name": "signed_by_another_key", "jws": _sign(hdr, good, ROGUE_SEED), "expect": "bad_signature"},
        {"name": "unknown_kid", "jws": _sign({**hdr, "kid": "nobody"}, good), "expect": "unknown_key"},
        {"name": "alg_none", "jws": f"{_b64url(json.dumps({'alg': 'none', 'kid': VECTOR_KID}).encode())}.{p}.",
         "expect": "unsupported_algorithm"},
        {"name": "alg_hs256", "jws": _sign({**hdr, "alg": "HS256"}, good), "expect": "unsupported_algorithm"},
        {"name": "crit_header", "jws": _sign({**hdr, "crit": ["exp"]}, good), "expect": "malformed"},
        {"name": "wrong_vehicle", "jws": _sign(hdr, {**good, "vehicle_id": "SOMEONE-ELSES-CAR"}),
         "expect": "wrong_vehicle"},
        {"name": "expired", "jws": _sign(hdr, {**good, "issued_at": VECTOR_NOW - 7200,
                                               "not_after": VECTOR_NOW - 3600}), "expect": "expired"},
        {"name": "issued_in_the_future", "jws": _sign(hdr, {**good, "issued_at": VECTOR_NOW + 86400,
                                                            "not_after": VECTOR_NOW + 2 * 86400}),
         "expect": "not_yet_valid"},
        {"name": "rollback", "jws": _sign(hdr, {**good, "version": 6}), "expect": "rollback", "held_version": 7},
        {"name": "replay", "jws": valid, "expect": "replay", "held_version": 7},
        {"name": "not_three_parts", "jws": f"{h}.{p}", "expect": "malformed"},
        {"name": "version_not_an_integer", "jws": _sign(hdr, {**good, "version": "7"}), "expect": "malformed"},
    ]
    return {
        "about": "dashbridge entitlement JWS test vectors (docs/cloud-protocol.md §7). The signing key is "
                 "public by design (derived from a published seed); never use it for a fleet.",
        "alg": "EdDSA (Ed25519, RFC 8037)",
        "trust_anchors": {VECTOR_KID: _b64url(pub)},
        "vehicle_id": VECTOR_VEHICLE,
        "now": VECTOR_NOW,
        "clock_skew": 300,
        "private_key_seed_hex": VECTOR_SEED.hex(),
        "vectors": vectors,
    }


def verdict(v: dict[str, Any], doc: dict[str, Any]) -> str:
    """What the car's verifier says of one vector: ``accepted`` or the rejection code."""
    from dashbridge.daemon.cloud.entitlements import EntitlementDoc, EntitlementRejected, load_anchors, verify

    keys, _problems = load_anchors(doc["trust_anchors"])
    held = None
    if v.get("held_version"):
        held = EntitlementDoc(jws="", kid=VECTOR_KID, vehicle_id=doc["vehicle_id"], version=int(v["held_version"]),
                              issued_at=0.0, not_after=1.0, features={})
    try:
        verify(v["jws"], keys, doc["vehicle_id"], float(doc["now"]), float(doc["clock_skew"]), held)
    except EntitlementRejected as exc:
        return exc.code
    return "accepted"


def check_vectors(index: Path) -> str:
    doc = json.loads(index.read_text())
    wrong = [f"{v['name']}: car says {verdict(v, doc)}, vector expects {v['expect']}" for v in doc["vectors"]
             if verdict(v, doc) != v["expect"]]
    if wrong:
        raise Failed("; ".join(wrong))
    return f"{len(doc['vectors'])} vectors, the car's verifier agrees with each"


def write_vectors(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "vectors.json"
    out.write_text(json.dumps(make_vectors(), indent=2) + "\n")
    return out


# -- reports -------------------------------------------------------------------------------------------

def text_report(cases: list[Case], url: str) -> str:
    lines = [f"cloud conformance of {url}"]
    for c in cases:
        lines.append(f"  {c.outcome.upper():7} {c.name} — {c.detail} ({c.seconds * 1000:.0f} ms)")
    passed = sum(c.outcome == "passed" for c in cases)
    failed = sum(c.outcome == "failed" for c in cases)
    skipped = sum(c.outcome == "skipped" for c in cases)
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return "\n".join(lines)


def junit(cases: list[Case], url: str) -> str:
    suite = ET.Element("testsuite", name="dashbridge cloud conformance", tests=str(len(cases)),
                       failures=str(sum(c.outcome == "failed" for c in cases)),
                       skipped=str(sum(c.outcome == "skipped" for c in cases)),
                       time=f"{sum(c.seconds for c in cases):.3f}")
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="backend", value=url)
    for c in cases:
        tc = ET.SubElement(suite, "testcase", classname="cloud", name=c.name, time=f"{c.seconds:.3f}")
        if c.outcome == "failed":
            ET.SubElement(tc, "failure", message=c.detail)
        elif c.outcome == "skipped":
            ET.SubElement(tc, "skipped", message=c.detail)
        else:
            ET.SubElement(tc, "system-out").text = c.detail
    return ET.tostring(suite, encoding="unicode")


async def run(url: str, *, ca: str | None, cert: str, key: str, vehicle: str,
              anchors: dict[str, str] | None = None, vectors: Path = VECTORS_DIR) -> list[Case]:
    return await Kit(url, ca=ca, cert=cert, key=key, vehicle=vehicle, anchors=anchors, vectors=vectors).run()


def main(argv: list[str]) -> int:
    """``dashbridge-sim cloud-conformance URL --cert F --key F [--ca F] [--vehicle VIN] [--anchors F]
    [--junit F]``; exit status 0 when nothing failed.  ``--write-vectors DIR`` writes the vectors."""
    import argparse

    ap = argparse.ArgumentParser(prog="dashbridge-sim cloud-conformance",
                                 description="Run a car's expectations against a dashbridge backend.")
    ap.add_argument("url", nargs="?", help="the backend's base URL (cloud.url)")
    ap.add_argument("--ca", help="CA bundle that signed the backend's certificate (default: system store)")
    ap.add_argument("--cert", help="a test vehicle's client certificate (CN = its vehicle id)")
    ap.add_argument("--key", help="its private key")
    ap.add_argument("--vehicle", help="the vehicle id (default: the certificate's CN)")
    ap.add_argument("--anchors", help="a JSON file of trust anchors {kid: base64url key} to verify signatures")
    ap.add_argument("--junit", help="write a JUnit XML report here")
    ap.add_argument("--write-vectors", metavar="DIR", help="write the JWS test vectors to DIR and exit")
    args = ap.parse_args(argv)
    if args.write_vectors:
        print(write_vectors(Path(args.write_vectors)))
        return 0
    if not (args.url and args.cert and args.key):
        ap.error("URL, --cert and --key are required")
    vehicle = args.vehicle or _cn_of(args.cert)
    anchors = json.loads(Path(args.anchors).read_text()) if args.anchors else None
    cases = asyncio.run(run(args.url, ca=args.ca, cert=args.cert, key=args.key, vehicle=vehicle, anchors=anchors))
    print(text_report(cases, args.url))
    if args.junit:
        Path(args.junit).write_text(junit(cases, args.url))
    return 1 if any(c.outcome == "failed" for c in cases) else 0


def _cn_of(cert: str) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    cns = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise SystemExit("the certificate has no CN: give --vehicle")
    return str(cns[0].value)
