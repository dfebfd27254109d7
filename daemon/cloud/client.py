"""The cloud client: discovery and API versions, remembered redirects, one typed method per
protocol operation (docs/cloud-protocol.md).

- Discovery (``<cloud.url>/.well-known/dashbridge``) picks the highest common API version; the
  result is stored and refreshed after the document's ``refresh_after``.
- 301/308 are followed and remembered (persisted) for the URL that answered them; 302/307 are
  followed once, not remembered; at most :data:`MAX_REDIRECTS` hops.
- 410 Gone (or a 404 that is not one of the protocol's own, ``protocol.LIVE_404_CODES``) from an
  endpoint, or a discovery document that no longer lists the version in use, triggers
  rediscovery, once per operation.  ``404 no_document`` is :class:`NoDocument`.
- Every request carries ``Dashbridge-Api-Version`` (discovery: the highest version this car
  speaks) and headers chosen for the version it is actually sent in (after a rediscovery too).
- Status codes become the typed errors of ``protocol``; the engine decides what they mean for
  the breaker, the backend state and the outbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ..clock import Clock
from .outbox import CloudDb
from .protocol import (
    LIVE_404_CODES,
    SUPPORTED_VERSIONS,
    BadResponse,
    CloudError,
    DestinationPage,
    Discovery,
    Gone,
    LinkCode,
    NoCommonVersion,
    NoDocument,
    Redirects,
    Refused,
    RegistrationResult,
    RetryLater,
    ServerError,
    VehicleStatus,
    check_content_type,
    discovery_url,
    error_detail,
    json_object,
    parse_destinations,
    parse_discovery,
    parse_link,
    parse_link_code,
    parse_registration,
    parse_status,
    retry_after_seconds,
)
from .transport import HttpResponse, Transport

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
JSON = ("application/json",)
JOSE = ("application/jose",)


class CloudClient:
    def __init__(self, transport: Transport, db: CloudDb, clock: Clock, *, base_url: str, vehicle_id: str,
                 timeout: float) -> None:
        self.transport = transport
        self.db = db
        self.clock = clock
        self.base_url = base_url
        self.vehicle_id = vehicle_id
        self.timeout = timeout
        self.requests = 0  # sent, for tests and the bench
        configured = discovery_url(base_url)
        if db.get("config_url") != configured:
            # A new backend address in config: forget what the old one told us.
            with db.transaction() as conn:
                for key in ("discovery", "discovery_url", "redirects"):
                    CloudDb.delete(conn, key)
                CloudDb.put(conn, "config_url", configured)
        self.configured_discovery_url = configured
        self.discovery_url: str = db.get("discovery_url") or configured
        stored = db.get("discovery")
        self.discovery: Discovery | None = Discovery.from_json(stored) if isinstance(stored, str) else None
        table = db.get("redirects", {})
        self.redirects = Redirects({str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {})

    # -- discovery ---------------------------------------------------------------------------
    async def ensure_discovery(self) -> Discovery:
        d = self.discovery
        if d is not None and self.clock.now() < d.fetched_at + d.refresh_after:
            return d
        return await self.rediscover()

    async def rediscover(self) -> Discovery:
        try:
            return await self._fetch_discovery(self.discovery_url)
        except (Gone, Refused):
            if self.discovery_url == self.configured_discovery_url:
                raise
            log.info("cloud: remembered discovery address is gone; asking the configured one")
            self._set_discovery_url(self.configured_discovery_url)
            return await self._fetch_discovery(self.configured_discovery_url)

    async def _fetch_discovery(self, url: str) -> Discovery:
        # No version is chosen yet (or it may change): name the highest one this car speaks.
        headers = {"Accept": "application/json", "Dashbridge-Api-Version": str(max(SUPPORTED_VERSIONS))}
        resp = await self._exchange("GET", url, headers, None, discovery=True)
        if resp.status in (404, 410):
            raise Gone(f"discovery document answered {resp.status}")
        self._raise_for_status(resp, "discovery")
        check_content_type(resp.headers, JSON, "discovery document")
        try:
            found = parse_discovery(resp.body, resp.url or url, self.clock.now())
        except NoCommonVersion:
            self.discovery = None
            raise
        old = self.discovery
        if old is None or (old.version, dict(old.endpoints)) != (found.version, dict(found.endpoints)):
            log.info("cloud: using API v%d (backend offers %s)", found.version,
                     ", ".join(f"v{v}" for v in found.offered))
            self.redirects.table.clear()  # endpoints changed: old redirects no longer apply
        self.discovery = found
        with self.db.transaction() as conn:
            CloudDb.put(conn, "discovery", found.to_json())
            CloudDb.put(conn, "redirects", self.redirects.table)
        return found

    def _set_discovery_url(self, url: str) -> None:
        self.discovery_url = url
        with self.db.transaction() as conn:
            CloudDb.put(conn, "discovery_url", url)

    @property
    def version(self) -> int:
        return self.discovery.version if self.discovery else 0

    # -- HTTP --------------------------------------------------------------------------------
    async def _exchange(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, *,
                        discovery: bool = False) -> HttpResponse:
        url = self.redirects.resolve(url)
        for _hop in range(MAX_REDIRECTS + 1):
            self.requests += 1
            resp = await self.transport.send(method, url, headers, body, self.timeout)
            if resp.status not in (301, 302, 307, 308):
                return HttpResponse(resp.status, resp.headers, resp.body, url)
            location = resp.headers.get("location", "")
            target = urljoin(url, location) if location else ""
            if not target or urlsplit(target).scheme != "https":
                raise ServerError(f"redirect {resp.status} to an unusable location {target[:100]!r}", resp.status)
            if resp.status in (301, 308):
                # Permanent: remember it (301 is treated like 308: the method is kept).
                if discovery:
                    self._set_discovery_url(target)
                else:
                    self.redirects.remember(url, target)
                    with self.db.transaction() as conn:
                        CloudDb.put(conn, "redirects", self.redirects.table)
                log.info("cloud: %s moved permanently to %s", _where(url), _where(target))
            url = target
        raise ServerError(f"more than {MAX_REDIRECTS} redirects")

    def _raise_for_status(self, resp: HttpResponse, what: str) -> None:
        s = resp.status
        if 200 <= s < 300 or s == 304:
            return
        code, msg = error_detail(resp.body)
        detail = f"{what}: HTTP {s}" + (f" {code}" if code else "") + (f" ({msg})" if msg else "")
        ra = retry_after_seconds(resp.headers.get("retry-after"), self.clock.now())
        if s == 429 or s == 503 or (s >= 500 and ra is not None):
            err = RetryLater(detail, ra if ra is not None else -1.0, s)
            err.backend_fault = s not in (429, 503)
            raise err
        if s >= 500 or s in (408, 425):
            raise ServerError(detail, s)
        if s == 401:
            raise ServerError(f"{detail}: the backend does not accept our client certificate", s)
        if s == 404 and code == "no_document":
            raise NoDocument(detail)
        if s == 410 or (s == 404 and code not in LIVE_404_CODES):
            raise Gone(detail)
        raise Refused(detail, s, code)

    async def call(self, endpoint: str, method: str, params: Mapping[str, str] | None = None,
                   body: Mapping[str, Any] | None = None, *, key: str | None = None,
                   etag: str | None = None, query: Mapping[str, str] | None = None,
                   accept: str | Callable[[int], str] = "application/json") -> HttpResponse:
        """One operation: resolve the endpoint, send, rediscover once on 410/404.  ``accept`` may
        depend on the API version the request goes out in (which a rediscovery can change)."""
        headers: dict[str, str] = {}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            headers["Content-Type"] = "application/json"
        if key:
            headers["Idempotency-Key"] = key
        if etag:
            headers["If-None-Match"] = etag
        rediscovered = False
        while True:
            d = await self.ensure_discovery()
            headers["Dashbridge-Api-Version"] = str(d.version)
            headers["Accept"] = accept(d.version) if callable(accept) else accept
            url = _with_query(d.url_for(endpoint, vehicle_id=self.vehicle_id, **(params or {})), query)
            resp = await self._exchange(method, url, headers, data)
            if _moved(resp) and not rediscovered:
                log.info("cloud: %s answered %d; rediscovering", _where(resp.url), resp.status)
                rediscovered = True
                forgot = self.redirects.forget(url)
                new = await self.rediscover()
                try:
                    moved = (new.version, _with_query(new.url_for(endpoint, vehicle_id=self.vehicle_id,
                                                                  **(params or {})), query)) != (d.version, url)
                except CloudError:
                    moved = True
                if forgot:
                    with self.db.transaction() as conn:
                        CloudDb.put(conn, "redirects", self.redirects.table)
                if moved or forgot:
                    continue
            self._raise_for_status(resp, endpoint)
            return resp

    # -- operations ----------------------------------------------------------------------------
    async def register(self, payload: Mapping[str, Any], key: str) -> RegistrationResult:
        resp = await self.call("registration", "POST", body=payload, key=key)
        return parse_registration(self._json(resp, "registration answer"), self.version)

    async def status(self) -> VehicleStatus:
        resp = await self.call("status", "GET")
        return parse_status(self._json(resp, "status answer"), self.version)

    async def link(self, code: str, key: str) -> bool:
        resp = await self.call("account_link", "POST", body={"code": code}, key=key)
        return parse_link(self._json(resp, "account link answer"))

    async def link_code(self, key: str) -> LinkCode:
        resp = await self.call("link_code", "POST", body={}, key=key)
        return parse_link_code(self._json(resp, "link code answer"))

    async def entitlements(self, etag: str, rejected_etag: str = "") -> tuple[str | None, str]:
        """(compact JWS, ETag), or (None, ETag) when not modified: the ETag of the 304 tells which
        of the documents named in If-None-Match (the held one, the one we rejected) is current."""
        tags = [t for t in (etag, rejected_etag) if t]
        resp = await self.call("entitlements", "GET", etag=", ".join(dict.fromkeys(tags)) or None,
                               accept=_entitlements_accept)
        if resp.status == 304:
            got = resp.headers.get("etag", "")
            return None, got if got in tags else etag
        new_etag = resp.headers.get("etag", "")
        if self.version >= 2:
            check_content_type(resp.headers, JOSE, "entitlements")
            try:
                return resp.body.decode("ascii").strip(), new_etag
            except UnicodeDecodeError:
                raise BadResponse("entitlements body is not a compact JWS") from None
        doc = self._json(resp, "entitlements answer")
        jws = doc.get("entitlements")
        if not isinstance(jws, str):
            raise BadResponse("entitlements answer has no 'entitlements' string")
        return jws, new_etag

    async def destinations(self, cursor: str | None = None) -> DestinationPage:
        """One page; ``cursor``: the previous page's ``next`` (None: the first page)."""
        resp = await self.call("destinations", "GET", query={"cursor": cursor} if cursor else None)
        return parse_destinations(self._json(resp, "destinations answer"))

    def has_endpoint(self, name: str) -> bool:
        """Does the API version in use list this (optional) endpoint?"""
        return self.discovery is not None and name in self.discovery.endpoints

    async def entitlements_report(self, report: Mapping[str, Any], key: str) -> None:
        await self.call("entitlements_report", "POST", body=report, key=key)

    async def ack(self, destination_id: str, result: str, reason: str, intent_id: str, key: str) -> None:
        entry = {"id": destination_id, "result": result, "reason": reason, "intent_id": intent_id}
        if self.version >= 2:
            await self.call("destination_ack", "POST", body={"acks": [entry]}, key=key)
        else:
            await self.call("destination_ack", "POST", {"destination_id": destination_id}, body=entry, key=key)

    async def consent(self, name: str, granted: bool, seq: int, changed_at: float, key: str) -> None:
        await self.call("consent", "PUT", {"consent": name},
                        body={"granted": granted, "seq": seq, "changed_at": changed_at}, key=key)

    def _json(self, resp: HttpResponse, what: str) -> dict[str, Any]:
        check_content_type(resp.headers, JSON, what)
        return json_object(resp.body, what)


def _entitlements_accept(version: int) -> str:
    return "application/jose" if version >= 2 else "application/json"


def _with_query(url: str, query: Mapping[str, str] | None) -> str:
    if not query:
        return url
    q = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    return url + ("&" if "?" in url else "?") + q


def _moved(resp: HttpResponse) -> bool:
    """Does this answer say the endpoint is not (or no longer) here?  410 always; 404 unless its
    error code says a live endpoint is missing a resource (an unknown vehicle, no document yet)."""
    if resp.status == 410:
        return True
    return resp.status == 404 and error_detail(resp.body)[0] not in LIVE_404_CODES


def _where(url: str) -> str:
    """Scheme, host and path only (never query strings) for logs."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"
