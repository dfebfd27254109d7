"""A fake carmaker backend: real HTTPS with mutual TLS on 127.0.0.1, implementing
docs/cloud-protocol.md (API v1 and v2), with fault modes and a migration.

- A CA, a server certificate (IP SAN 127.0.0.1) and one client certificate per vehicle (CN =
  vehicle id) are generated with ``cryptography`` into a directory; :meth:`FakeCloud.daemon_config`
  gives the ``cloud:`` config section that points a daemon at it.
- Idempotency store keyed by (vehicle, Idempotency-Key) with a *semantic* fingerprint, so a retry
  that arrives at another address or API version after a migration is still recognised;
  :attr:`FakeCloud.effects` records every effect exactly as the backend applied it, which is
  what tests count to prove "exactly once".
- :attr:`FakeCloud.log`: every request (listener, method, path, status, key, replayed), with the
  request's headers and body and the answer's headers and body as sent, so tests can check both
  sides against the OpenAPI contract (docs/cloud-api.yaml).
- **Hostile by default**, as real servers and networks are: every answer body goes out through a
  ``StreamResponse`` in several writes with small real-time pauses between them, sometimes with
  ``Content-Length`` and sometimes chunked — drawn from a seeded RNG (``seed=``), so a test run is
  reproducible.  ``hostile=False`` sends each body in one write.
- Fault modes (tests, scenarios, the control endpoint): per listener ``offline`` (connection
  refused), ``blackhole`` (accepts, never answers), ``untrusted_tls``; per request ``slow``,
  ``status`` (500/502/503/429 with or without Retry-After), ``malformed_json``,
  ``wrong_content_type``, ``drop_response`` (acts, then drops the connection: a lost answer),
  ``pieces`` (the answer in writes cut at ``cuts`` offsets or every ``piece`` bytes),
  ``oversize`` (a valid JSON answer of ``size`` bytes, ``chunked`` or with Content-Length),
  ``deep_nesting`` (``depth`` levels of ``[``: the JSON answer, or with ``status`` an error body;
  for v2 entitlements the JWS header), ``missing_document`` (entitlements: ``404 no_document``)
  and ``unknown_vehicle`` (``404 unknown_vehicle``); and for entitlements ``bad_signature``,
  ``expired``, ``rolled_back``, ``wrong_vehicle``.
- Migration: :meth:`migrate` ``"migrating"`` starts the new system at a new address serving v1
  and v2; the old address answers 308 to it (discovery included).  ``"migrated"``: old API
  endpoints answer 410, the new system drops v1, and only the old discovery URL still redirects.
- Control: this Python API in-process, or the plain-HTTP control endpoint (:meth:`start_control`)
  — ``GET /state``, ``GET /log``, ``POST /fault``, ``POST /clear``, ``POST /listener``,
  ``POST /migrate``, ``POST /send-to-car``, ``POST /entitlements``, ``POST /enter-code``,
  ``POST /app-code``, ``POST /approve``.

Time is injectable (``now=``) so simulated-time tests sign documents in simulated time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import random
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

JSON_CT = "application/json"
JOSE_CT = "application/jose"
HOST = "127.0.0.1"
# Answers written in one piece at most this long (a hostile answer is cut smaller still).
MAX_WRITE = 64 * 1024
# Faults whose answers break the contract on purpose (the contract check skips those answers).
NONCONFORMING_FAULTS = frozenset({"malformed_json", "wrong_content_type", "oversize", "deep_nesting",
                                  "unusable_destination"})
# Acknowledgement results the fake takes (docs/cloud-protocol.md §8); "delivered" from older cars
# is taken as "accepted".
ACK_RESULTS = ("accepted", "shown", "driver_accepted", "driver_declined", "expired", "rejected", "delivered")


# --- certificates ---------------------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class CertAuthority:
    """A throw-away CA that issues server and client certificates (EC P-256, fast to make)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name}-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool, stem: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)),
                                                             x509.DNSName("localhost")]), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cert_file = self.directory / f"{stem}.pem"
        key_file = self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        return cert_file, key_file


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jws(claims: dict[str, Any], key: Ed25519PrivateKey, kid: str, *, extra_header: str | None = None) -> str:
    """``extra_header``: raw JSON text added to the header as member ``x`` (the deep-nesting fault)."""
    header = {"alg": "EdDSA", "kid": kid, "typ": "dashbridge-entitlements+jws"}
    text = json.dumps(header, separators=(",", ":"))
    if extra_header is not None:
        text = text[:-1] + ',"x":' + extra_header + "}"
    h = _b64(text.encode())
    p = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    sig = key.sign(f"{h}.{p}".encode("ascii"))
    return f"{h}.{p}.{_b64(sig)}"


# --- backend data ---------------------------------------------------------------------------------
@dataclass
class Effect:
    op: str  # register | link | link_code | consent | ack | entitlements_report
    vehicle: str
    key: str
    detail: dict[str, Any]
    at: float


@dataclass
class Logged:
    at: float
    listener: str
    method: str
    path: str
    status: int
    key: str = ""
    query: str = ""  # the raw query string (paging cursors)
    replayed: bool = False
    version: int = 0
    op: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: bytes = b""
    answer_headers: dict[str, str] = field(default_factory=dict)
    answer_body: bytes = b""
    fault: str = ""  # the fault that shaped the answer, if any
    pieces: int = 0  # writes the answer body went out in
    delivered: bool = True  # False: the client hung up before the whole answer was written

    def summary(self) -> dict[str, Any]:
        """JSON-friendly (the control endpoint's /log): bodies as lengths."""
        d = {k: v for k, v in asdict(self).items() if k not in ("request_body", "answer_body")}
        d["request_bytes"], d["answer_bytes"] = len(self.request_body), len(self.answer_body)
        return d


@dataclass
class Fault:
    mode: str
    status: int = 0
    retry_after: str | None = None
    delay: float = 0.0
    count: int | None = None  # None: until cleared
    op: str | None = None  # only for this operation (register, entitlements, ...)
    listener: str | None = None  # only on this listener (old, new)
    cuts: list[int] | None = None  # pieces: write boundaries (byte offsets)
    piece: int = 0  # pieces: or one write every this many bytes
    size: int = 2 << 20  # oversize: body length
    chunked: bool = True  # oversize: no Content-Length (else declared)
    depth: int = 100_000  # deep_nesting


@dataclass
class Answer:
    """What the fake sends: written by :meth:`FakeCloud._write` (in pieces, when hostile)."""

    status: int
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    fault: str = ""
    cuts: list[int] | None = None  # write boundaries; None: the fake's RNG decides
    declare_length: bool | None = None  # None: the RNG decides


def encode_json(doc: Any) -> bytes:
    """How the fake serialises every JSON answer (tests use it to size one exactly)."""
    return json.dumps(doc).encode()


@dataclass
class Vehicle:
    id: str
    registration: Literal["unregistered", "pending", "registered"] = "unregistered"
    linked: bool = False
    account: str = ""
    ent_version: int = 0
    ent_features: dict[str, Any] = field(default_factory=dict)
    ent_issued_at: float = 0.0
    ent_not_after: float = 0.0
    ent_jws: str = ""
    ent_history: list[str] = field(default_factory=list)
    # id -> dest (+ "acked": the first result, "states": every result acknowledged, in order)
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)  # rejected entitlement documents
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_codes: set[str] = field(default_factory=set)  # codes the app shows for LinkAccount(code)
    device_codes: dict[str, float] = field(default_factory=dict)  # user_code -> expires_at


_ROUTE = re.compile(r"^/v(?P<v>\d+)/vehicles/(?P<vid>[^/]+)(?P<rest>/.*)?$")


class _Listener:
    """One address: an aiohttp site (normal / untrusted TLS) or a black hole, or nothing."""

    def __init__(self, cloud: FakeCloud, name: str) -> None:
        self.cloud = cloud
        self.name = name
        self.port = 0
        self.mode: Literal["up", "offline", "blackhole", "untrusted_tls"] = "offline"
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._hole: asyncio.Server | None = None
        self._hole_conns: list[asyncio.StreamWriter] = []

    @property
    def base(self) -> str:
        return f"https://{HOST}:{self.port}"

    async def set_mode(self, mode: Literal["up", "offline", "blackhole", "untrusted_tls"]) -> None:
        await self._stop_serving()
        self.mode = mode
        if mode == "offline":
            return
        if mode == "blackhole":
            self._hole = await asyncio.start_server(self._swallow, HOST, self.port, reuse_address=True)
            self.port = self._hole.sockets[0].getsockname()[1]
            return
        if self._runner is None:
            app = web.Application(client_max_size=1 << 20)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
        ctx = self.cloud.server_ssl if mode == "up" else self.cloud.untrusted_ssl
        self._site = web.TCPSite(self._runner, HOST, self.port, ssl_context=ctx, reuse_address=True)
        await self._site.start()
        server = self._site._server
        if self.port == 0 and isinstance(server, asyncio.Server) and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._hole_conns.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    async def _stop_serving(self) -> None:
        # Tear the whole server down (open keep-alive connections too): an outage is an outage.
        self._site = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._hole is not None:
            self._hole.close()
            for w in self._hole_conns:
                w.close()
            self._hole_conns.clear()
            with contextlib.suppress(Exception):
                await self._hole.wait_closed()
            self._hole = None

    async def close(self) -> None:
        await self._stop_serving()
        self.mode = "offline"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        return await self.cloud._handle(self, request)


class FakeCloud:
    def __init__(self, directory: Path, vehicles: tuple[str, ...] = ("WDB0000000DASH001",), *,
                 now: Callable[[], float] = time.time, lease: float = 30 * 86400.0,
                 features: dict[str, Any] | None = None, auto_approve: bool = True,
                 hostile: bool = True, seed: int = 0, page_size: int = 500, paging: bool = True,
                 reports: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.now = now
        self.lease = lease
        self.auto_approve = auto_approve
        self.hostile = hostile
        self.rng = random.Random(seed)
        # Destinations per answer; paging=False: a backend from before paging (no ``next``, the
        # first page_size only); reports=False: discovery lists no entitlements_report endpoint.
        self.page_size = page_size
        self.paging = paging
        self.reports_endpoint = reports
        self.ca = CertAuthority(self.directory, "sim-cloud")
        self.rogue_ca = CertAuthority(self.directory, "rogue")
        srv_cert, srv_key = self.ca.issue(HOST, server=True, stem="server")
        bad_cert, bad_key = self.rogue_ca.issue(HOST, server=True, stem="server-untrusted")
        self.server_ssl = self._server_context(srv_cert, srv_key)
        self.untrusted_ssl = self._server_context(bad_cert, bad_key)
        self.client_certs: dict[str, tuple[Path, Path]] = {
            vid: self.ca.issue(vid, server=False, stem=f"client-{vid}") for vid in vehicles}
        # Entitlement signing keys: two trusted (rotation) and one rogue.
        self.signing_keys = {"sim-1": Ed25519PrivateKey.generate(), "sim-2": Ed25519PrivateKey.generate()}
        self.active_kid = "sim-1"
        self.rogue_key = Ed25519PrivateKey.generate()
        self.vehicles = {vid: Vehicle(vid) for vid in vehicles}
        for vid in vehicles:
            self.issue_entitlements(vid, features if features is not None else
                                    {"remote_navigation": {"enabled": True}, "wifi_hotspot": {"enabled": True}})
        self.idempotency: dict[tuple[str, str], tuple[str, dict[str, Any], int]] = {}
        self.effects: list[Effect] = []
        self.log: list[Logged] = []
        self.faults: list[Fault] = []
        self.old = _Listener(self, "old")
        self.new = _Listener(self, "new")
        self.phase: Literal["original", "migrating", "migrated"] = "original"
        self._dest_seq = 0
        self._unusable: set[str] = set()  # destinations sent outside the contract on purpose
        self._code_seq = 0
        self._control: web.AppRunner | None = None
        self.control_port = 0
        self.request_event = asyncio.Event()

    def _server_context(self, cert: Path, key: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca.ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> FakeCloud:
        await self.old.set_mode("up")
        return self

    async def close(self) -> None:
        await self.old.close()
        await self.new.close()
        if self._control is not None:
            await self._control.cleanup()
            self._control = None

    async def __aenter__(self) -> FakeCloud:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The base URL a car is configured with (the old address; migration keeps it as the entry)."""
        return self.old.base

    def trust_anchors(self) -> dict[str, str]:
        out = {}
        for kid, key in self.signing_keys.items():
            out[kid] = _b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        return out

    def daemon_config(self, vehicle: str | None = None, **overrides: Any) -> dict[str, Any]:
        vid = vehicle or next(iter(self.vehicles))
        cert, key = self.client_certs[vid]
        cfg: dict[str, Any] = {
            "enabled": True, "url": self.url, "vehicle_id": vid,
            "tls": {"ca_file": str(self.ca.ca_file), "cert_file": str(cert), "key_file": str(key)},
            "trust_anchors": self.trust_anchors(),
        }
        cfg.update(overrides)
        return cfg

    # -- control: backend data ----------------------------------------------------------------------
    def issue_entitlements(self, vid: str, features: dict[str, Any] | None = None, *, lease: float | None = None,
                           kid: str | None = None) -> int:
        v = self.vehicles[vid]
        if features is not None:
            v.ent_features = dict(features)
        v.ent_version += 1
        v.ent_issued_at = self.now()
        v.ent_not_after = v.ent_issued_at + (lease if lease is not None else self.lease)
        v.ent_jws = self._sign(v, v.ent_version, v.ent_not_after, vid, kid or self.active_kid)
        v.ent_history.append(v.ent_jws)
        return v.ent_version

    def _sign(self, v: Vehicle, version: int, not_after: float, vid: str, kid: str,
              key: Ed25519PrivateKey | None = None, issued_at: float | None = None,
              extra_header: str | None = None) -> str:
        issued = v.ent_issued_at if issued_at is None else issued_at
        claims = {"vehicle_id": vid, "version": version, "issued_at": int(issued),
                  "not_after": int(not_after), "features": v.ent_features, "note": "unknown fields are ignored"}
        return sign_jws(claims, key or self.signing_keys[kid], kid, extra_header=extra_header)

    def send_to_car(self, vid: str, label: str, *, lat: float | None = None, lon: float | None = None,
                    address: str = "", expires_at: float | None = None, raw: dict[str, Any] | None = None) -> str:
        self._dest_seq += 1
        did = f"dest-{self._dest_seq}"
        d: dict[str, Any] = {"id": did, "label": label, "created_at": int(self.now())}
        if lat is not None:
            d["lat"], d["lon"] = lat, lon
        if address:
            d["address"] = address
        if expires_at is not None:
            d["expires_at"] = int(expires_at)
        if raw is not None:
            d = {"id": did, **raw}
        out_of_range = (lat is not None and not -90 <= lat <= 90) or (lon is not None and not -180 <= lon <= 180)
        if raw is not None or out_of_range:
            self._unusable.add(did)
        d["acked"] = None
        d["states"] = []
        self.vehicles[vid].destinations[did] = d
        return did

    def acks(self, vid: str | None = None, result: str | None = None) -> list[Effect]:
        """Acknowledgement effects, optionally of one result (each (destination, result) once)."""
        return [e for e in self.effects_of("ack", vid) if result is None or e.detail["result"] == result]

    def reports(self, vid: str | None = None) -> list[dict[str, Any]]:
        """Reports of rejected entitlement documents, as the backend recorded them."""
        return [r for v in self.vehicles.values() if vid is None or v.id == vid for r in v.reports]

    def app_code(self, vid: str) -> str:
        """A code the phone app shows, for the driver to type into the dashboard."""
        self._code_seq += 1
        code = f"APP{self._code_seq:04d}"
        self.vehicles[vid].app_codes.add(code)
        return code

    def enter_code(self, user_code: str) -> bool:
        """The driver types the code the dashboard shows into the app."""
        for v in self.vehicles.values():
            exp = v.device_codes.get(user_code)
            if exp is not None and exp > self.now():
                v.linked = True
                v.account = "driver@example.com"
                del v.device_codes[user_code]
                return True
        return False

    def approve(self, vid: str) -> None:
        v = self.vehicles[vid]
        if v.registration == "pending":
            v.registration = "registered"

    def set_fault(self, mode: str, **kw: Any) -> Fault:
        f = Fault(mode, **kw)
        self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        self.faults.clear()

    async def set_listener(self, name: Literal["old", "new"],
                           mode: Literal["up", "offline", "blackhole", "untrusted_tls"]) -> None:
        await (self.old if name == "old" else self.new).set_mode(mode)

    async def migrate(self, phase: Literal["migrating", "migrated"], *, start_new: bool = True) -> None:
        """``migrating``: new address serves v1+v2, old answers 308; ``migrated``: old API 410,
        v1 retired everywhere; the old discovery URL keeps redirecting to the new one."""
        self.phase = phase
        if start_new and self.new.mode == "offline":
            await self.new.set_mode("up")

    def effects_of(self, op: str, vid: str | None = None) -> list[Effect]:
        return [e for e in self.effects if e.op == op and (vid is None or e.vehicle == vid)]

    def requests(self, op: str | None = None, listener: str | None = None) -> list[Logged]:
        return [r for r in self.log if (op is None or r.op == op) and (listener is None or r.listener == listener)]

    # -- HTTP ----------------------------------------------------------------------------------------
    def _versions(self, listener: str) -> tuple[int, ...]:
        if listener == "old":
            return (1,) if self.phase == "original" else ()
        return (1, 2) if self.phase == "migrating" else (2,)

    def _discovery(self, listener: _Listener) -> dict[str, Any]:
        base = listener.base
        apis = []
        for v in self._versions(listener.name):
            p = f"{base}/v{v}/vehicles/{{vehicle_id}}"
            eps = {"registration": f"{p}/registration", "status": p, "account_link": f"{p}/account-link",
                   "link_code": f"{p}/link-code", "entitlements": f"{p}/entitlements",
                   "destinations": f"{p}/destinations", "consent": f"{p}/consents/{{consent}}",
                   "future_thing": f"{p}/future"}
            if self.reports_endpoint:
                eps["entitlements_report"] = f"{p}/entitlements/report"
            eps["destination_ack"] = (f"{p}/destinations/{{destination_id}}/ack" if v == 1
                                      else f"{p}/destinations/ack")
            status = "deprecated" if (v == 1 and self.phase == "migrating") else "current"
            apis.append({"version": v, "status": status, "endpoints": eps, "x-unknown": True})
        return {"service": "dashbridge-sim-cloud", "apis": apis, "refresh_after": 86400, "motd": "ignored"}

    def _take_fault(self, listener: str, op: str, modes: tuple[str, ...]) -> Fault | None:
        for f in self.faults:
            if f.mode not in modes or (f.op is not None and f.op != op):
                continue
            if f.listener is not None and f.listener != listener:
                continue
            if f.count is not None:
                if f.count <= 0:
                    continue
                f.count -= 1
            return f
        return None

    async def _handle(self, listener: _Listener, request: web.Request) -> web.StreamResponse:
        entry = Logged(self.now(), listener.name, request.method, request.path, 0,
                       key=request.headers.get("Idempotency-Key", ""), query=request.query_string,
                       request_headers={k: v for k, v in request.headers.items()})
        self.log.append(entry)
        self.request_event.set()
        try:
            if request.can_read_body:
                entry.request_body = await request.read()
            answer = await self._dispatch(listener, request, entry)
        except _Drop:
            entry.status = -1
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError() from None
        entry.status = answer.status
        entry.fault = answer.fault
        entry.answer_body = answer.body
        return await self._write(request, entry, answer)

    async def _write(self, request: web.Request, entry: Logged, a: Answer) -> web.StreamResponse:
        """Send ``a`` as a real server might: in several writes with pauses (hostile), with or
        without Content-Length.  A client that hangs up half-way (it refused the size) is fine."""
        resp = web.StreamResponse(status=a.status, headers=a.headers)
        if a.content_type:
            resp.content_type = a.content_type
        body = a.body
        if not body:
            resp.content_length = 0
            entry.answer_headers = dict(resp.headers)
            try:
                await resp.prepare(request)
                await resp.write_eof()
            except (ConnectionError, RuntimeError):
                entry.delivered = False
            return resp
        declare = a.declare_length if a.declare_length is not None else (
            not self.hostile or self.rng.random() < 0.5)
        if declare:
            resp.content_length = len(body)
        else:
            resp.enable_chunked_encoding()
        cuts = a.cuts if a.cuts is not None else self._cuts(len(body))
        bounds = [*sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
        pieces, start = [], 0
        for end in bounds:
            while end - start > MAX_WRITE:
                pieces.append(body[start:start + MAX_WRITE])
                start += MAX_WRITE
            pieces.append(body[start:end])
            start = end
        entry.pieces = len(pieces)
        try:
            await resp.prepare(request)
            entry.answer_headers = dict(resp.headers)
            for i, piece in enumerate(pieces):
                await resp.write(piece)
                if i + 1 < len(pieces) and (self.hostile or a.cuts is not None):
                    await asyncio.sleep(self.rng.uniform(0.001, 0.004))
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            entry.delivered = False  # the client hung up (it refused the size, or its deadline passed)
        return resp

    def _cuts(self, n: int) -> list[int]:
        if not self.hostile or n < 2:
            return []
        return self.rng.sample(range(1, n), min(n - 1, self.rng.randint(1, 5)))

    async def _dispatch(self, listener: _Listener, request: web.Request, entry: Logged) -> Answer:
        path = request.path
        if path == "/.well-known/dashbridge":
            entry.op = "discovery"
        else:
            m = _ROUTE.match(path)
            entry.op = _op_of(request.method, m.group("rest") if m else None) if m else "unknown"
        f = self._take_fault(listener.name, entry.op, ("slow",))
        if f is not None:
            await asyncio.sleep(f.delay)
        answer = await self._answer(listener, request, entry)
        f = self._take_fault(listener.name, entry.op, ("pieces",))
        if f is not None and answer.body:
            n = len(answer.body)
            answer.cuts = list(f.cuts) if f.cuts is not None else list(range(f.piece, n, f.piece)) if f.piece else []
        return answer

    async def _answer(self, listener: _Listener, request: web.Request, entry: Logged) -> Answer:
        path = request.path
        f = self._take_fault(listener.name, entry.op, ("status",))
        if f is not None:
            headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
            return _error(f.status, _code_for(f.status), "fault injected by the simulator", headers)
        f = self._take_fault(listener.name, entry.op, ("wrong_content_type",))
        if f is not None:
            return Answer(200, b"<html><body>Sign in to the hotel Wi-Fi</body></html>", "text/html",
                          fault=f.mode)
        f = self._take_fault(listener.name, entry.op, ("malformed_json",))
        if f is not None:
            return Answer(200, b'{"apis": [ {"version": 1,', JSON_CT, fault=f.mode)
        f = self._take_fault(listener.name, entry.op, ("oversize",))
        if f is not None:
            # Valid JSON of exactly f.size bytes: only the size is wrong with it.
            head, tail = b'{"destinations": [], "padding": "', b'"}'
            padded = head + b"x" * max(0, f.size - len(head) - len(tail)) + tail
            return Answer(200, padded, JSON_CT, fault=f.mode, declare_length=not f.chunked)
        f = self._take_fault(listener.name, entry.op, ("deep_nesting",))
        if f is not None:
            nested = b"[" * f.depth + b"]" * f.depth
            if f.status >= 400:
                return Answer(f.status, b'{"error": {"code": "internal_error", "message": ' + nested + b"}}",
                              JSON_CT, fault=f.mode)
            m = _ROUTE.match(path)
            if entry.op == "entitlements" and m is not None and int(m.group("v")) >= 2:
                v = self.vehicles.get(m.group("vid"))
                jws = self._sign(v, v.ent_version + 1, v.ent_not_after, v.id, self.active_kid,
                                 extra_header=nested.decode()) if v is not None else ""
                return Answer(200, jws.encode(), JOSE_CT, fault=f.mode)
            return Answer(200, b'{"apis": ' + nested + b', "destinations": ' + nested + b"}", JSON_CT,
                          fault=f.mode)

        if path == "/.well-known/dashbridge":
            if listener.name == "old" and self.phase != "original":
                return Answer(308, headers={"Location": f"{self.new.base}/.well-known/dashbridge"})
            return _json(self._discovery(listener))
        m = _ROUTE.match(path)
        if m is None:
            return _error(404, "not_found", "no such endpoint")
        version, vid, rest = int(m.group("v")), m.group("vid"), m.group("rest") or ""
        entry.version = version
        if version not in self._versions(listener.name):
            if listener.name == "old" and self.phase == "migrating":
                target = f"{self.new.base}{path}"
                return Answer(308, headers={"Location": target})
            return _error(410, "gone", f"API v{version} is not served here any more")
        peer = _peer_cn(request)
        if peer != vid:
            return _error(403, "forbidden", "client certificate does not name this vehicle")
        v = self.vehicles.get(vid)
        f = self._take_fault(listener.name, entry.op, ("unknown_vehicle",))
        if v is None or f is not None:
            return _error(404, "unknown_vehicle", "unknown vehicle")
        body: dict[str, Any] = {}
        if request.method in ("POST", "PUT"):
            try:
                raw = json.loads(entry.request_body)
            except (ValueError, RecursionError):
                return _error(400, "bad_json", "body is not JSON")
            if not isinstance(raw, dict):
                return _error(400, "bad_json", "body is not an object")
            body = raw
        op = entry.op
        if request.method == "GET":
            if op == "status":
                return self._status(v, version)
            if op == "entitlements":
                return self._entitlements(v, version, request, listener.name)
            if op == "destinations":
                return self._destinations(v, request.query.get("cursor"))
            return _error(404, "not_found", "no such endpoint")
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            return _error(400, "idempotency_key_required", "writes need an Idempotency-Key")
        semantic = self._semantic(op, version, rest, body)
        if semantic is None:
            return _error(400, "bad_request", "unreadable request")
        stored = self.idempotency.get((vid, key))
        if stored is not None:
            fingerprint, result, status = stored
            if fingerprint != json.dumps(semantic, sort_keys=True):
                return _error(422, "idempotency_key_reused", "this key was used for another request")
            entry.replayed = True
            return _json(self._render(op, version, result), status=status, headers={"Idempotent-Replayed": "true"})
        result, status = self._apply(v, op, semantic, key)
        if status < 400:
            self.idempotency[(vid, key)] = (json.dumps(semantic, sort_keys=True), result, status)
        if self._take_fault(listener.name, op, ("drop_response",)) is not None:
            raise _Drop()
        if status >= 400:
            return _error(status, result.get("code", "bad_request"), result.get("message", ""))
        return _json(self._render(op, version, result), status=status)

    def _destinations(self, v: Vehicle, cursor: str | None) -> Answer:
        """One page of the destinations not yet acknowledged.  The cursor names the last id of
        the previous page (acknowledgements in between do not shift pages); one the fake does
        not know starts from the beginning, as the protocol allows."""
        pending = [d for d in v.destinations.values() if d["acked"] is None]
        if cursor and self.paging:
            order = list(v.destinations)
            after = _unb64(cursor)
            if after in v.destinations:
                pos = order.index(after)
                pending = [d for d in pending if order.index(d["id"]) > pos]
        page = pending[:self.page_size]
        doc: dict[str, Any] = {"destinations": [{k: val for k, val in d.items() if k not in ("acked", "states")}
                                                for d in page], "x-page": "unknown fields are ignored"}
        if self.paging:
            doc["next"] = _b64(page[-1]["id"].encode()) if len(pending) > len(page) else None
        answer = _json(doc)
        if any(d["id"] in self._unusable for d in page):
            answer.fault = "unusable_destination"
        return answer

    def _status(self, v: Vehicle, version: int) -> Answer:
        reg: Any = v.registration if version == 1 else {"state": v.registration}
        return _json({"registration": reg, "account": {"linked": v.linked}, "extra": {"a": 1}})

    def _entitlements(self, v: Vehicle, version: int, request: web.Request, listener: str) -> Answer:
        if not v.ent_jws or self._take_fault(listener, "entitlements", ("missing_document",)) is not None:
            return _error(404, "no_document", "no entitlement document has been issued for this vehicle yet")
        jws = v.ent_jws
        f = self._take_fault(listener, "entitlements", ("bad_signature", "expired", "rolled_back", "wrong_vehicle"))
        if f is not None:
            if f.mode == "bad_signature":
                jws = self._sign(v, v.ent_version + 1, v.ent_not_after, v.id, self.active_kid, key=self.rogue_key)
            elif f.mode == "expired":
                jws = self._sign(v, v.ent_version + 1, self.now() - 3600, v.id, self.active_kid,
                                 issued_at=self.now() - 7200)
            elif f.mode == "rolled_back":
                jws = v.ent_history[-2] if len(v.ent_history) >= 2 else self._sign(
                    v, max(0, v.ent_version - 1), v.ent_not_after, v.id, self.active_kid)
            else:
                jws = self._sign(v, v.ent_version + 1, v.ent_not_after, "SOMEONE-ELSES-CAR", self.active_kid)
        etag = '"' + _b64(jws.encode()[-12:]) + '"'
        if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
            return Answer(304, headers={"ETag": etag})
        if version >= 2:
            return Answer(200, jws.encode(), JOSE_CT, headers={"ETag": etag})
        return _json({"entitlements": jws, "format": "jws-compact"}, headers={"ETag": etag})

    @staticmethod
    def _semantic(op: str, version: int, rest: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """What the request means, whatever version or address it came to (for idempotency)."""
        if op == "register":
            return {"op": op}
        if op == "link":
            return {"op": op, "code": body.get("code")}
        if op == "link_code":
            return {"op": op}
        if op == "consent":
            name = rest.rsplit("/", 1)[-1]
            return {"op": op, "name": name, "granted": body.get("granted"), "seq": body.get("seq")}
        if op == "ack":
            if version == 1:
                m = re.match(r"^/destinations/([^/]+)/ack$", rest)
                entry = dict(body)
                entry["id"] = m.group(1) if m else body.get("id")
            else:
                acks = body.get("acks")
                if not isinstance(acks, list) or len(acks) != 1 or not isinstance(acks[0], dict):
                    return None  # the fake takes one per request, as the daemon sends them
                entry = acks[0]
            result = entry.get("result")
            return {"op": op, "id": entry.get("id"), "result": "accepted" if result == "delivered" else result}
        if op == "entitlements_report":
            if not isinstance(body.get("reason"), str) or not isinstance(body.get("etag"), str):
                return None
            return {"op": op, "etag": body.get("etag"), "reason": body.get("reason"), "version": body.get("version"),
                    "kid": body.get("kid"), "detail": body.get("detail")}
        return None

    def _apply(self, v: Vehicle, op: str, sem: dict[str, Any], key: str) -> tuple[dict[str, Any], int]:
        now = self.now()
        if op == "register":
            if v.registration == "unregistered":
                v.registration = "registered" if self.auto_approve else "pending"
                self.effects.append(Effect("register", v.id, key, {}, now))
                return {"state": v.registration, "id": f"reg-{v.id}"}, 201
            return {"state": v.registration, "id": f"reg-{v.id}"}, 200
        if op == "link":
            code = sem.get("code")
            if code not in v.app_codes:
                return {"code": "invalid_code", "message": "unknown or expired code"}, 422
            v.app_codes.discard(str(code))
            v.linked = True
            v.account = "driver@example.com"
            self.effects.append(Effect("link", v.id, key, {"code": code}, now))
            return {"state": "linked"}, 200
        if op == "link_code":
            self._code_seq += 1
            code = f"K{self._code_seq:03d}Q"
            v.device_codes[code] = now + 600
            self.effects.append(Effect("link_code", v.id, key, {"code": code}, now))
            return {"user_code": code, "verification_uri": "https://example.com/link",
                    "expires_at": int(now + 600), "interval": 5}, 200
        if op == "consent":
            name = str(sem["name"])
            cur = v.consents.get(name)
            if cur is None or int(sem.get("seq") or 0) > int(cur["seq"]):
                v.consents[name] = {"granted": bool(sem.get("granted")), "seq": int(sem.get("seq") or 0)}
            self.effects.append(Effect("consent", v.id, key, {"name": name, "granted": sem.get("granted"),
                                                              "seq": sem.get("seq")}, now))
            return {"name": name, "granted": v.consents[name]["granted"]}, 200
        if op == "ack":
            did = str(sem.get("id"))
            d = v.destinations.get(did)
            if d is None:
                return {"code": "unknown_destination", "message": "no such destination"}, 404
            result = sem.get("result")
            if result not in ACK_RESULTS:
                return {"code": "bad_request", "message": f"unknown result {str(result)[:40]!r}"}, 400
            # Any acknowledgement means the car has it: it is not listed again.  Each state is
            # recorded once, whatever order retries bring them in.
            if d["acked"] is None:
                d["acked"] = result
            if result not in d["states"]:
                d["states"].append(result)
                self.effects.append(Effect("ack", v.id, key, {"id": did, "result": result}, now))
            return {"id": did, "acked": True}, 200
        if op == "entitlements_report":
            report = {k: sem[k] for k in ("version", "kid", "reason", "detail", "etag")}
            report["at"] = now
            v.reports.append(report)
            self.effects.append(Effect("entitlements_report", v.id, key, dict(report), now))
            return {"recorded": True}, 200
        return {"code": "bad_request", "message": "unknown operation"}, 400

    @staticmethod
    def _render(op: str, version: int, result: dict[str, Any]) -> dict[str, Any]:
        if op == "register" and version >= 2:
            return {"registration": result}
        if op == "ack" and version >= 2:
            return {"acks": [result]}
        return result

    # -- control endpoint ----------------------------------------------------------------------------
    async def start_control(self) -> str:
        """A plain-HTTP control API on 127.0.0.1; returns its base URL."""
        app = web.Application()
        app.router.add_get("/state", self._c_state)
        app.router.add_get("/log", self._c_log)
        app.router.add_post("/{action}", self._c_post)
        self._control = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._control.setup()
        site = web.TCPSite(self._control, HOST, 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.control_port = server.sockets[0].getsockname()[1]
        return f"http://{HOST}:{self.control_port}"

    async def _c_state(self, request: web.Request) -> web.Response:
        return web.json_response({
            "url": self.url, "new_url": self.new.base if self.new.port else "", "phase": self.phase,
            "listeners": {"old": self.old.mode, "new": self.new.mode},
            "vehicles": {vid: {"registration": v.registration, "linked": v.linked,
                               "entitlements_version": v.ent_version, "consents": v.consents,
                               "destinations": list(v.destinations.values())} for vid, v in self.vehicles.items()},
            "effects": [asdict(e) for e in self.effects], "faults": [asdict(f) for f in self.faults],
        })

    async def _c_log(self, request: web.Request) -> web.Response:
        return web.json_response([e.summary() for e in self.log])

    async def _c_post(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        try:
            body = await request.json() if request.can_read_body else {}
            vid = body.get("vehicle") or next(iter(self.vehicles))
            out: Any = {"ok": True}
            if action == "fault":
                body.pop("vehicle", None)
                out = asdict(self.set_fault(**body))
            elif action == "clear":
                self.clear_faults()
            elif action == "listener":
                await self.set_listener(body["name"], body["mode"])
            elif action == "migrate":
                await self.migrate(body["phase"])
            elif action == "send-to-car":
                out = {"id": self.send_to_car(vid, body.get("label", ""), lat=body.get("lat"), lon=body.get("lon"),
                                              address=body.get("address", ""))}
            elif action == "entitlements":
                out = {"version": self.issue_entitlements(vid, body.get("features"), lease=body.get("lease"))}
            elif action == "enter-code":
                out = {"linked": self.enter_code(body["code"])}
            elif action == "app-code":
                out = {"code": self.app_code(vid)}
            elif action == "approve":
                self.approve(vid)
            else:
                return web.json_response({"error": f"unknown action {action}"}, status=404)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad control request: {exc}"}, status=400)
        return web.json_response(out)


class _Drop(Exception):
    pass


def _op_of(method: str, rest: str | None) -> str:
    rest = rest or ""
    if rest == "":
        return "status"
    if rest == "/registration":
        return "register"
    if rest == "/account-link":
        return "link"
    if rest == "/link-code":
        return "link_code"
    if rest == "/entitlements":
        return "entitlements"
    if rest == "/entitlements/report":
        return "entitlements_report"
    if rest == "/destinations":
        return "destinations"
    if rest.startswith("/destinations/") and rest.endswith("/ack"):
        return "ack"
    if rest.startswith("/consents/"):
        return "consent"
    return "unknown"


def _unb64(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def _peer_cn(request: web.Request) -> str:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return str(v)
    return ""


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, encode_json(doc), JSON_CT, headers=dict(headers or {}))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return _json({"error": {"code": code, "message": message}}, status, headers)


def _code_for(status: int) -> str:
    """The catalogue's code for an injected status (docs/cloud-api.yaml, ErrorCode)."""
    return {429: "rate_limited", 503: "unavailable", 408: "timeout"}.get(
        status, "internal_error" if status >= 500 else "bad_request")


async def _main() -> None:  # pragma: no cover - developer convenience
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="dashbridge-cloud-"))
    cloud = FakeCloud(d)
    await cloud.start()
    control = await cloud.start_control()
    print(json.dumps({"url": cloud.url, "control": control, "config": {"cloud": cloud.daemon_config()}}, indent=2))
    await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
