"""The cloud engine: one loop that delivers the outbox, syncs on a jittered schedule, keeps the
entitlement lease and hands send-to-car destinations to navigation.

Everything here is local-first: the driver's commands (register, link, consent) only write the
outbox and return; network work happens in :meth:`CloudEngine.run`, one request at a time,
behind the circuit breaker and Retry-After, each with a deadline.  No method the D-Bus API calls
ever waits on the network.

Time and randomness are injected (:mod:`daemon.clock`, ``random.Random``), so the same code
runs in the daemon, in simulated-time tests and 10,000 times over in the fleet bench.

Backend state:
- ``unknown``  — not contacted since start;
- ``online``   — the last request got a usable answer;
- ``degraded`` — reachable but failing (5xx, bad answers, invalid entitlements, Retry-After,
  no common API version) while the breaker is still closed;
- ``offline``  — the breaker is open (repeated failures); requests wait for the half-open probe.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from ..backoff import Backoff
from ..clock import Clock, Wake
from ..errors import InvalidInput
from ..events import (
    CloudBackendChanged,
    CloudDocumentRejected,
    CloudEvent,
    CloudFeatureChanged,
    CloudLinkChanged,
    CloudListener,
    CloudRegistrationChanged,
    CloudStateChanged,
    CloudSyncFinished,
)
from ..logs import redact
from .client import CloudClient
from .entitlements import (
    EntitlementDoc,
    EntitlementRejected,
    FeatureState,
    Lease,
    evaluate,
    parse_held,
    same_document,
    verify,
)
from .outbox import CloudDb, Outbox, OutboxFull, OutboxItem
from .policy import Breaker
from .protocol import (
    CONSENT_RE,
    USER_CODE_RE,
    CloudDestination,
    CloudError,
    NoDocument,
    Refused,
    RetryLater,
    loads_bounded,
)
from .transport import Transport

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..services import NavigationSink

log = logging.getLogger(__name__)

# The entitlement that send-to-car needs, and the reason code its refusal is acknowledged with
# (docs/cloud-protocol.md §8: result "rejected", reason "not_entitled: ...").
REMOTE_NAVIGATION = "remote_navigation"
NOT_ENTITLED = "not_entitled"
# A hand-off to the navigation service that takes longer than this is a failure (retried).
HANDOFF_TIMEOUT_S = 5.0
# Destinations handed to navigation per loop turn (the rest follow on the next turn).
HANDOFF_BATCH = 20
# Pages of destinations read per sync (following ``next``); what is left comes with the next sync,
# which is then due at once (after the acknowledgements of these went out).
MAX_DESTINATION_PAGES = 10
# What the navigation relay tells us (services.DestinationFeedback) -> the acknowledgement result.
RELAY_EVENTS = ("shown", "driver_accepted", "driver_declined", "expired")
# Destinations remembered after acknowledgement (to recognise a re-offer), then pruned.
DESTINATION_MEMORY_S = 30 * 86400.0
# Outbox items age out over hours and days; their ages are checked this often.
EXPIRE_CHECK_S = 300.0
# Retry-After is honoured with a little extra jitter so cars told the same instant spread out:
# up to this fraction of the wait, plus up to one second.
RETRY_AFTER_JITTER = 0.1

BackendState = Literal["disabled", "unknown", "online", "degraded", "offline"]
Registration = Literal["unregistered", "pending", "registered"]
LinkState = Literal["unlinked", "requesting-code", "code-shown", "pending", "linked"]


@dataclass(frozen=True)
class EngineSettings:
    vehicle_id: str
    base_url: str
    request_timeout: float = 10.0
    sync_interval: float = 3600.0
    sync_jitter: float = 0.2  # each sync interval is interval * U[1 - j, 1 + j]
    startup_delay: float = 30.0  # first sync after U[0, startup_delay]
    retry: Backoff = field(default_factory=lambda: Backoff(1.0, 3600.0))
    breaker_threshold: int = 5
    breaker_cooldown: Backoff = field(default_factory=lambda: Backoff(60.0, 600.0, "equal"))
    max_retry_after: float = 6 * 3600.0
    clock_skew: float = 300.0
    grace: float = 30 * 86400.0
    offline_policy: Mapping[str, bool] = field(default_factory=dict)
    gated_local: tuple[str, ...] = ()
    software_version: str = ""
    # Send-to-car destinations are offered on the dashboard for the driver to accept or decline
    # (True), or queued straight to its navigation service (False: the driver chose them in the app).
    confirm_destinations: bool = False


@dataclass(frozen=True)
class LinkInfo:
    state: LinkState = "unlinked"
    reason: str = ""
    code: str = ""
    uri: str = ""
    expires_at: float = 0.0
    interval: float = 5.0

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "code": self.code, "uri": self.uri,
                "expires_at": self.expires_at, "interval": self.interval}

    @staticmethod
    def from_json(d: Any) -> LinkInfo:
        if not isinstance(d, dict) or d.get("state") not in ("unlinked", "requesting-code", "code-shown",
                                                               "pending", "linked"):
            return LinkInfo()
        try:
            return LinkInfo(d["state"], str(d.get("reason", "")), str(d.get("code", "")), str(d.get("uri", "")),
                            float(d.get("expires_at", 0.0)), float(d.get("interval", 5.0)))
        except (TypeError, ValueError):
            return LinkInfo()


Listener = CloudListener


def _num(value: Any) -> float:
    """A number from our own stored state; 0 if it is damaged (never a crash at start-up)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class CloudEngine:
    def __init__(self, settings: EngineSettings, db: CloudDb, clock: Clock, rng: random.Random, *,
                 navigation: Callable[[], NavigationSink | None] = lambda: None) -> None:
        self.s = settings
        self.db = db
        self.clock = clock
        self.rng = rng
        self.navigation = navigation
        self.outbox = Outbox(db, on_drop=self._on_drop)
        self.client: CloudClient | None = None
        self.anchors: Mapping[str, Ed25519PublicKey] | None = None
        self.breaker = Breaker(settings.breaker_threshold, settings.breaker_cooldown, rng)
        self._wake = Wake()
        self._listeners: list[Listener] = []
        self.running = False
        # -- observable state
        self.backend_state: BackendState = "unknown"
        self.backend_reason = "not contacted since start"
        reg = db.get("registration", {})
        self.registration: Registration = reg.get("state", "unregistered") if isinstance(reg, dict) else "unregistered"
        if self.registration not in ("unregistered", "pending", "registered"):
            self.registration = "unregistered"
        self.registration_reason = str(reg.get("reason", "")) if isinstance(reg, dict) else ""
        self.link = LinkInfo.from_json(db.get("link"))
        consents = db.get("consents", {})
        self.consents: dict[str, bool] = {str(k): bool(v) for k, v in consents.items()} \
            if isinstance(consents, dict) else {}
        self.last_sync = _num(db.get("last_sync"))
        rej = db.get("last_rejection", {})
        self.last_rejection: tuple[str, float] = (str(rej.get("reason", "")), _num(rej.get("at"))) \
            if isinstance(rej, dict) else ("", 0.0)
        # The ETag of the last document we rejected (sent in If-None-Match: unchanged, it is a 304).
        self.rejected_etag = str(db.get("rejected_etag", "") or "")
        self.destinations_skipped = int(_num(db.get("destinations_skipped")))
        self.held: EntitlementDoc | None = None
        self.etag = ""
        self.confirmed = False
        self.courier = ""  # who brought ``held`` when the backend has not confirmed it: "companion"
        self._load_held(anchors=None)
        self.next_sync = 0.0
        self._sync_requested = False
        self._syncing = False
        self._resync = False
        self._entitlement_trouble = False
        self._sync_failures = 0
        self._sync_failed = False
        self._not_before = 0.0  # Retry-After
        self._manual = False  # SyncNow: one request may bypass an open breaker
        self._status_due = False
        self._link_poll_at: float | None = None
        self._handoff_failures = 0
        self._handoff_retry_at = 0.0
        self._handoff_check = True  # destinations may be waiting for navigation (checked at start)
        self._expire_at = 0.0  # next outbox age check
        self._lease_key: tuple[Any, ...] = ()
        self.handoff_note = ""
        self.lease: Lease = self._evaluate(self.clock.now())
        self._features: dict[str, FeatureState] = dict(self.lease.features)

    # -- listeners -----------------------------------------------------------------------------
    def subscribe(self, cb: Listener) -> None:
        self._listeners.append(cb)

    def _emit(self, event: CloudEvent) -> None:
        for cb in list(self._listeners):
            try:
                cb(event)
            except Exception:
                log.exception("cloud listener failed")

    # -- commands (no network; return at once) --------------------------------------------------
    def register(self) -> str:
        if self.registration == "registered":
            return "registered"
        if self.registration == "pending" and not self.outbox.has("register"):
            # Delivered; the backend is reviewing it.  Asking again sends nothing: look sooner.
            self._status_due = True
            self.next_sync = min(self.next_sync, self.clock.now()) if self.running else self.next_sync
            self._wake.set()
            return "pending"
        now = self.clock.now()
        payload = {"vehicle_id": self.s.vehicle_id, "software": self.s.software_version, "requested_at": now}

        def mark(conn: sqlite3.Connection) -> None:
            CloudDb.put(conn, "registration", {"state": "pending", "reason": "waiting to reach the backend"})

        _item, created = self.outbox.enqueue("register", payload, now, extra=mark)
        if created:
            log.info("cloud: registration queued")
        if self.registration != "pending" or created:
            self._set_registration("pending", "waiting to reach the backend", persist=False)
        self._changed()
        self._wake.set()
        return "pending"

    def link_account(self, code: str) -> str:
        code = "".join(code.split()).replace("-", "").upper()
        now = self.clock.now()
        if code:
            if not USER_CODE_RE.match(code):
                raise InvalidInput("an account link code is 4 to 16 letters or digits")
            info = LinkInfo("pending", "waiting to reach the backend")
            kind, payload = "link", {"code": code}
        else:
            if self.link.state == "code-shown" and self.link.expires_at > now:
                return "code-shown"
            info = LinkInfo("requesting-code", "waiting to reach the backend for a code")
            kind, payload = "link_code", {}

        def mark(conn: sqlite3.Connection) -> None:
            CloudDb.put(conn, "link", info.to_json())

        try:
            self.outbox.enqueue(kind, payload, now, extra=mark)
        except OutboxFull as exc:
            raise InvalidInput(str(exc)) from None
        self._set_link(info, persist=False)
        self._changed()
        self._wake.set()
        return info.state

    def set_consent(self, name: str, granted: bool) -> None:
        if not CONSENT_RE.match(name):
            raise InvalidInput("a consent name is 1 to 64 of a-z 0-9 _ . -")
        now = self.clock.now()
        seq = int(_num(self.db.get("consent_seq"))) + 1
        consents = dict(self.consents)
        consents[name] = granted

        def mark(conn: sqlite3.Connection) -> None:
            CloudDb.put(conn, "consent_seq", seq)
            CloudDb.put(conn, "consents", consents)

        try:
            self.outbox.enqueue("consent", {"name": name, "granted": granted, "seq": seq, "changed_at": now},
                                now, coalesce_key=name, extra=mark)
        except OutboxFull as exc:
            raise InvalidInput(f"too many different consents waiting ({exc})") from None
        self.consents = consents
        self._changed()
        self._wake.set()

    def sync_now(self) -> str:
        now = self.clock.now()
        if not self.running:
            self._sync_requested = True
            return "started"
        if now < self._not_before:
            return f"deferred: the backend asked us to wait until {iso(self._not_before)}"
        self.next_sync = now
        self._manual = True
        if self._syncing:
            self._resync = True  # asked during a sync: another one follows it (not lost)
        self._wake.set()
        return "started"

    # -- loop ------------------------------------------------------------------------------------
    def attach(self, transport: Transport, anchors: Mapping[str, Ed25519PublicKey]) -> None:
        """Give the engine its network and keys (done when the cloud starts, off the start-up path)."""
        self.client = CloudClient(transport, self.db, self.clock, base_url=self.s.base_url,
                                  vehicle_id=self.s.vehicle_id, timeout=self.s.request_timeout)
        self.anchors = anchors
        self._load_held(anchors)
        self._reevaluate(self.clock.now())

    async def run(self) -> None:
        assert self.client is not None, "attach() first"
        now = self.clock.now()
        self.outbox.clamp(now + self.s.retry.cap)
        self.next_sync = now if self._sync_requested else now + self.rng.uniform(0.0, self.s.startup_delay)
        if self.link.state == "code-shown":
            self._link_poll_at = now
        if self.registration == "pending" and not self.outbox.has("register"):
            self._status_due = True
        self.running = True
        self._changed()
        try:
            while True:
                self._wake.take()
                now = self.clock.now()
                self._reevaluate(now)
                self._housekeeping(now)
                await self._handoff(now)
                # One look at the outbox per turn: the item due first (the lease of SQLite reads
                # matters when 10,000 of these run in the fleet bench, and on a slow head unit).
                head = self.outbox.head(self._blocked())
                if await self._step(self.clock.now(), head):
                    continue
                now = self.clock.now()
                await self.clock.sleep_until(self._next_wakeup(now, head), self._wake)
        finally:
            self.running = False

    def _blocked(self) -> tuple[str, ...]:
        # Linking needs the vehicle registered first: hold link items while a registration waits.
        return ("link", "link_code") if self.outbox.has("register") else ()

    def gate(self) -> float:
        g = self._not_before
        if not self._manual:
            g = max(g, self.breaker.allowed_at())
        return g

    async def _step(self, now: float, head: OutboxItem | None) -> bool:
        if now < self.gate():
            return False
        if head is not None and head.next_attempt_at <= now:
            await self._deliver(head)
            return True
        if now >= self.next_sync:
            await self._sync()
            return True
        if self._link_poll_at is not None and now >= self._link_poll_at:
            await self._poll_link()
            return True
        return False

    def _next_wakeup(self, now: float, head: OutboxItem | None) -> float:
        net = [t for t in (head.next_attempt_at if head else None, self.next_sync, self._link_poll_at)
               if t is not None]
        cands: list[float] = []
        if net:
            cands.append(max(min(net), self.gate()))
        if self.lease.next_change is not None:
            cands.append(self.lease.next_change)
        if self.link.state == "code-shown":
            cands.append(self.link.expires_at)
        if self._handoff_retry_at > now:
            cands.append(self._handoff_retry_at)
        return min(cands) if cands else now + 86400.0

    # -- outcomes ----------------------------------------------------------------------------------
    def _success(self, *, trouble: bool = False) -> None:
        """The backend answered usefully.  ``trouble``: but what it said was wrong (the backend
        state, already set to degraded with the reason, stays)."""
        recovered = self.breaker.success()
        now = self.clock.now()
        if recovered:
            log.info("cloud: backend reachable again; catching up")
            self.outbox.release(now)
            if self._sync_failed:
                self.next_sync = min(self.next_sync, now)
        if not trouble and not self._entitlement_trouble:
            # (An outbox item delivered while the last sync's document was rejected leaves the
            # backend degraded with that reason, until a sync brings a usable document.)
            assert self.client is not None
            self._set_backend("online", f"API v{self.client.version}")

    def _failure(self, exc: CloudError) -> bool:
        """Account for a failed request.  Returns True when what waits now waits for the backend
        (breaker open, or Retry-After) rather than for its own retry ladder."""
        now = self.clock.now()
        if isinstance(exc, RetryLater):
            wait = exc.retry_after if exc.retry_after >= 0 else self.s.retry.delay(1 + self.breaker.failures, self.rng)
            wait = min(wait, self.s.max_retry_after)
            self._not_before = now + wait + self.rng.uniform(0.0, wait * RETRY_AFTER_JITTER + 1.0)
            if exc.backend_fault:
                self.breaker.failure(now)
            state: BackendState = "offline" if self.breaker.is_open else "degraded"
            self._set_backend(state, f"{exc.reason}; next try after {iso(self._not_before)}")
            self.outbox.release(now)  # what waits now waits for Retry-After, not its own ladder
            return True
        if isinstance(exc, Refused) or not exc.backend_fault:
            # The backend answered: it is reachable.  The caller deals with the refusal.
            self.breaker.success()
            self._set_backend("degraded", exc.reason)
            return False
        opened = self.breaker.failure(now)
        if self.breaker.is_open:
            if opened and self.breaker.opens == 1:
                self.outbox.release(now)  # from now on the breaker's schedule decides
            self._set_backend("offline", f"{exc.reason}; next try after {iso(self.breaker.open_until)}")
            return True
        self._set_backend("degraded", exc.reason)
        return False

    # -- outbox delivery ------------------------------------------------------------------------------
    async def _deliver(self, item: OutboxItem) -> None:
        assert self.client is not None
        client = self.client
        self._manual = False
        try:
            result: Any
            if item.kind == "register":
                result = await client.register(item.payload, item.key)
            elif item.kind == "link":
                result = await client.link(str(item.payload.get("code", "")), item.key)
            elif item.kind == "link_code":
                result = await client.link_code(item.key)
            elif item.kind == "consent":
                p = item.payload
                await client.consent(str(p.get("name")), bool(p.get("granted")), int(p.get("seq", 0)),
                                     float(p.get("changed_at", 0.0)), item.key)
                result = None
            elif item.kind == "destination_ack":
                p = item.payload
                await client.ack(str(p.get("id")), str(p.get("result", "accepted")),
                                 str(p.get("reason", "")), str(p.get("intent_id", "")), item.key)
                result = None
            elif item.kind == "entitlements_report":
                await client.ensure_discovery()
                if not client.has_endpoint("entitlements_report"):
                    # The backend does not take reports (any more): nothing to send.
                    log.info("cloud: the backend has no entitlements_report endpoint; report not sent")
                else:
                    await client.entitlements_report(item.payload, item.key)
                result = None
            else:  # an item from a newer release, after a downgrade: keep it, do not send it
                self.outbox.refuse(item, f"unknown kind {item.kind}")
                return
        except Refused as exc:
            log.warning("cloud: backend refused a %s item: %s", item.kind, exc.reason)
            refusal = exc
            self.outbox.refuse(item, exc.reason, extra=lambda conn: self._refused_effect(conn, item, refusal))
            self._success()  # the backend is fine: it answered; the refusal is the item's own story
            self._after_refusal(item, exc)
        except CloudError as exc:
            now = self.clock.now()
            gated = self._failure(exc)
            # Its own ladder while the backend is up; when the backend is away (breaker open,
            # Retry-After) the item is due as soon as the backend's gate opens.
            nxt = now if gated else now + self.s.retry.delay(item.attempts + 1, self.rng)
            self.outbox.retry(item, exc.reason, nxt)
            n = item.attempts + 1
            # The first tries, then every power of two: an outage of weeks is a few dozen lines.
            log.log(logging.INFO if n <= 3 or n & (n - 1) == 0 else logging.DEBUG,
                    "cloud: %s item not delivered (%s); attempt %d", item.kind, exc.reason, n)
        else:
            self.outbox.complete(item, extra=lambda conn: self._delivered_effect(conn, item, result))
            self._success()
            self._after_delivery(item, result)
        self._changed()

    def _delivered_effect(self, conn: sqlite3.Connection, item: OutboxItem, result: Any) -> None:
        now = self.clock.now()
        if item.kind == "register":
            state = "registered" if result.state == "registered" else "pending"
            reason = "" if state == "registered" else "the backend is reviewing the registration"
            CloudDb.put(conn, "registration", {"state": state, "reason": reason})
        elif item.kind == "link":
            info = LinkInfo("linked") if result else LinkInfo("pending", "the backend is linking the account")
            CloudDb.put(conn, "link", info.to_json())
        elif item.kind == "link_code":
            info = LinkInfo("code-shown", "enter the code in the app", result.user_code, result.verification_uri,
                            result.expires_at, result.interval)
            CloudDb.put(conn, "link", info.to_json())
        elif item.kind == "destination_ack":
            conn.execute("UPDATE cloud_destinations SET state='acked', updated_at=? WHERE id=?",
                         (now, str(item.payload.get("id"))))

    def _after_delivery(self, item: OutboxItem, result: Any) -> None:
        now = self.clock.now()
        if item.kind == "register":
            log.info("cloud: registration delivered (%s)", result.state)
            if result.state == "registered":
                self._set_registration("registered", "", persist=False)
            else:
                self._set_registration("pending", "the backend is reviewing the registration", persist=False)
                self._status_due = True
        elif item.kind == "link":
            self.link = LinkInfo.from_json(self.db.get("link"))
            self._emit(CloudLinkChanged(self.link.state, self.link.reason))
            if not result:
                self._status_due = True
        elif item.kind == "link_code":
            self.link = LinkInfo.from_json(self.db.get("link"))
            self._link_poll_at = now + self.link.interval
            self._emit(CloudLinkChanged(self.link.state, self.link.reason))

    def _refused_effect(self, conn: sqlite3.Connection, item: OutboxItem, exc: Refused) -> None:
        now = self.clock.now()
        if item.kind == "register":
            CloudDb.put(conn, "registration", {"state": "unregistered", "reason": f"refused: {exc.reason}"})
        elif item.kind in ("link", "link_code"):
            CloudDb.put(conn, "link", LinkInfo("unlinked", f"refused: {exc.reason}").to_json())
        elif item.kind == "destination_ack":
            conn.execute("UPDATE cloud_destinations SET state='acked', updated_at=? WHERE id=?",
                         (now, str(item.payload.get("id"))))

    def _after_refusal(self, item: OutboxItem, exc: Refused) -> None:
        if item.kind == "register":
            self._set_registration("unregistered", f"refused: {exc.reason}", persist=False)
        elif item.kind in ("link", "link_code"):
            self._set_link(LinkInfo("unlinked", f"refused: {exc.reason}"), persist=False)
        elif item.kind == "consent":
            log.warning("cloud: consent change %s refused", item.payload.get("name"))

    def _on_drop(self, item: OutboxItem, why: str) -> None:
        if item.kind == "link_code" and self.link.state == "requesting-code":
            self._set_link(LinkInfo("unlinked", f"code request dropped ({why}); ask again"), persist=True)
        elif item.kind == "link" and self.link.state == "pending":
            self._set_link(LinkInfo("unlinked", f"link request dropped ({why}); enter a new code"), persist=True)

    # -- sync ---------------------------------------------------------------------------------
    async def _sync(self) -> None:
        self._syncing, self._resync = True, False
        try:
            await self._sync_once()
        finally:
            self._syncing = False
        if self._resync:
            self.next_sync = min(self.next_sync, self.clock.now())
            self._manual = True

    async def _sync_once(self) -> None:
        assert self.client is not None
        client = self.client
        self._manual = False
        now = self.clock.now()
        fetched = False
        try:
            try:
                jws, etag = await client.entitlements(self.etag, self.rejected_etag)
            except NoDocument:
                # The backend has issued no document for this car yet (404 no_document): nothing
                # to take, nothing wrong with the backend.  What we hold (if anything) is not
                # vouched for, so the lease runs on as cached, then grace.
                self._entitlement_trouble = False
                self.confirmed = False
                if self.held is not None:
                    log.warning("cloud: the backend has no entitlement document for us; keeping version %d",
                                self.held.version)
            else:
                self._take_entitlements(jws, etag)
            fetched = True
            more = await self._fetch_destinations()
            if self._status_due or self.link.state == "pending":
                await self._poll_status()
        except CloudError as exc:
            self._sync_failures += 1
            self._sync_failed = True
            if not fetched:
                self.confirmed = False
            wait = min(self.s.retry.delay(self._sync_failures, self.rng), self.s.sync_interval)
            self.next_sync = now + wait
            n = self._sync_failures
            log.log(logging.INFO if n <= 3 or n & (n - 1) == 0 else logging.DEBUG,
                    "cloud: sync failed (%s); %d in a row", exc.reason, n)
            self._failure(exc)
            self._emit(CloudSyncFinished(False, exc.reason))
        else:
            self._sync_failures = 0
            self._sync_failed = False
            self.last_sync = self.clock.now()
            j = min(max(self.s.sync_jitter, 0.0), 0.9)
            self.next_sync = self.last_sync + self.s.sync_interval * self.rng.uniform(1.0 - j, 1.0 + j)
            if more:
                # Pages were left: the next sync is due now (the outbox, these acknowledgements
                # included, goes first, so the backend lists what is left).
                self.next_sync = self.last_sync
            with self.db.transaction() as conn:
                CloudDb.put(conn, "last_sync", self.last_sync)
            self._success(trouble=self._entitlement_trouble)
            self._emit(CloudSyncFinished(not self._entitlement_trouble,
                                         self.backend_reason if self._entitlement_trouble else ""))
        self._reevaluate(self.clock.now())
        self._changed()

    async def _fetch_destinations(self) -> bool:
        """Read the destinations, following ``next`` for at most :data:`MAX_DESTINATION_PAGES`
        pages; each page is stored as it comes.  True when pages were left for the next sync."""
        assert self.client is not None
        cursor: str | None = None
        seen: set[str] = set()
        for _page in range(MAX_DESTINATION_PAGES):
            page = await self.client.destinations(cursor)
            self._store_destinations(page.items)
            if page.skipped:
                self.destinations_skipped += page.skipped
                log.warning("cloud: %d send-to-car item(s) without a usable id skipped (they cannot be "
                            "acknowledged; %d so far)", page.skipped, self.destinations_skipped)
                with self.db.transaction() as conn:
                    CloudDb.put(conn, "destinations_skipped", self.destinations_skipped)
            if page.next is None:
                return False
            if page.next in seen or not page.items:
                log.warning("cloud: the destinations cursor does not advance; stopping this sync's paging")
                return False
            seen.add(page.next)
            cursor = page.next
        return True

    def _take_entitlements(self, jws: str | None, etag: str) -> None:
        now = self.clock.now()
        self._entitlement_trouble = False
        if jws is None and self.rejected_etag and etag == self.rejected_etag and etag != self.etag:
            # 304 for the document we rejected (and reported): still the bad one.  Cheap, and
            # nothing new to say; what we hold stays unconfirmed.
            self._entitlement_trouble = True
            self.confirmed = False
            self._set_backend("degraded", self.last_rejection[0] or "the backend still serves a rejected document")
            return
        if jws is None or same_document(self.held, jws):
            if self.held is not None:
                self.confirmed = True
                self._clear_courier()
                if etag and etag != self.etag:
                    self.etag = etag
                    with self.db.transaction() as conn:
                        conn.execute("UPDATE cloud_entitlements SET etag=? WHERE slot=1", (etag,))
            return
        assert self.anchors is not None
        try:
            doc = verify(jws, self.anchors, self.s.vehicle_id, now, self.s.clock_skew, self.held)
        except EntitlementRejected as exc:
            self._entitlement_trouble = True
            self.confirmed = False
            reason = f"entitlement document rejected ({exc.code}): {exc.detail}"
            self._note_rejection(reason, now, partial(self._report_rejection, jws=jws, etag=etag, exc=exc, now=now))
            self._set_backend("degraded", reason)
            self._emit(CloudDocumentRejected(reason))
            return
        with self.db.transaction() as conn:
            self._store_held(conn, doc, etag, now)
            if self.rejected_etag:
                CloudDb.delete(conn, "rejected_etag")
            CloudDb.delete(conn, "held_via")
        log.info("cloud: entitlements v%d accepted (until %s)", doc.version, iso(doc.not_after))
        self.held, self.etag, self.confirmed = doc, etag, True
        self.courier = ""
        self.rejected_etag = ""

    def _note_rejection(self, reason: str, now: float,
                        also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """A document was rejected and what we hold stays: logged and kept as LastRejection (with
        ``also`` in the same transaction)."""
        log.warning("cloud: %s; keeping version %s", reason, self.held.version if self.held else "none")
        self.last_rejection = (reason, now)
        with self.db.transaction() as conn:
            CloudDb.put(conn, "last_rejection", {"reason": reason, "at": now})
            if also is not None:
                also(conn)

    @staticmethod
    def _store_held(conn: sqlite3.Connection, doc: EntitlementDoc, etag: str, now: float) -> None:
        conn.execute("INSERT INTO cloud_entitlements(slot, jws, version, etag, received_at) VALUES(1, ?, ?, ?, ?) "
                     "ON CONFLICT(slot) DO UPDATE SET jws=excluded.jws, version=excluded.version, "
                     "etag=excluded.etag, received_at=excluded.received_at", (doc.jws, doc.version, etag, now))

    def _clear_courier(self) -> None:
        if self.courier:
            self.courier = ""
            with self.db.transaction() as conn:
                CloudDb.delete(conn, "held_via")

    def take_relayed(self, jws: str, courier: str) -> tuple[str, str]:
        """A lease a courier brought (the driver's phone: docs/ble-companion.md §6), verified exactly
        as the backend's answer (signature, vehicle, version strictly newer, expiry).  Returns
        (outcome, detail): ``accepted`` (now held, source ``courier`` until the backend confirms it),
        ``held`` (this version is already held: nothing to do), ``rejected`` (the held lease is kept;
        the reason is in LastRejection), or ``later`` (the trust anchors are not loaded yet)."""
        if self.anchors is None:
            return "later", "the trust anchors are not loaded yet"
        if same_document(self.held, jws):
            return "held", f"version {self.held.version if self.held else '?'} is already held"
        now = self.clock.now()
        try:
            doc = verify(jws, self.anchors, self.s.vehicle_id, now, self.s.clock_skew, self.held)
        except EntitlementRejected as exc:
            if exc.code == "replay":  # the same version, other bytes: nothing newer on offer
                return "held", exc.detail
            reason = f"entitlement document from the {courier} rejected ({exc.code}): {exc.detail}"
            self._note_rejection(reason, now)
            self._emit(CloudDocumentRejected(reason))
            self._changed()
            return "rejected", reason
        with self.db.transaction() as conn:
            # No ETag: the next sync fetches the backend's document whole and, when it is this
            # one, confirms it (the source turns from the courier to "backend").
            self._store_held(conn, doc, "", now)
            CloudDb.put(conn, "held_via", courier)
        log.info("cloud: entitlements v%d accepted from the %s (until %s)", doc.version, courier, iso(doc.not_after))
        self.held, self.etag, self.confirmed, self.courier = doc, "", False, courier
        self._reevaluate(now)
        self._wake.set()  # the loop re-reads when the lease next changes
        return "accepted", f"version {doc.version}"

    def _report_rejection(self, conn: sqlite3.Connection, jws: str, etag: str, exc: EntitlementRejected,
                          now: float) -> None:
        """Queue one report of a rejected document (docs/cloud-protocol.md §7) and remember its
        ETag, so that the unchanged document costs a 304 from now on.  A document rejected as
        issued in the future may become valid (our clock may be behind): it is fetched again."""
        if etag and exc.code != "not_yet_valid":
            self.rejected_etag = etag
            CloudDb.put(conn, "rejected_etag", etag)
        assert self.client is not None
        if not self.client.has_endpoint("entitlements_report"):
            return  # optional endpoint: a backend without it gets no reports
        version, kid = _peek_jws(jws)
        ident = etag or hashlib.sha256(jws.encode("utf-8", "replace")).hexdigest()
        report = {"version": version, "kid": kid, "reason": exc.code, "detail": exc.detail[:200], "etag": etag}
        key = _derived_key("entitlements_report", self.s.vehicle_id, ident, exc.code)
        _item, created = self.outbox.insert(conn, "entitlements_report", report, now, coalesce_key=ident[:256],
                                            key=key)
        if created:
            log.info("cloud: reporting the rejected entitlement document (%s) to the backend", exc.code)

    async def _poll_status(self) -> None:
        assert self.client is not None
        st = await self.client.status()
        self._status_due = False
        if self.outbox.has("register"):
            pass  # our own request is still on its way; it decides
        elif st.registration == "registered" and self.registration != "registered":
            self._set_registration("registered", "", persist=True)
        elif st.registration == "pending" and self.registration != "pending":
            self._set_registration("pending", "the backend is reviewing the registration", persist=True)
        elif st.registration == "pending":
            self._status_due = True
        elif st.registration == "unregistered" and self.registration == "registered":
            self._set_registration("unregistered", "the backend no longer knows this vehicle", persist=True)
        elif st.registration == "unregistered" and self.registration == "pending":
            # We delivered it, the backend lost it (a migration that dropped records): ask again.
            # The backend has no record, so a new request cannot be a second effect.
            log.warning("cloud: the backend lost our delivered registration; registering again")
            self.registration = "unregistered"
            self.register()
        if st.linked and self.link.state != "linked":
            self._set_link(LinkInfo("linked"), persist=True)
            self._link_poll_at = None
        elif not st.linked and self.link.state == "linked":
            self._set_link(LinkInfo("unlinked", "the account was unlinked in the app"), persist=True)

    async def _poll_link(self) -> None:
        now = self.clock.now()
        if self.link.state != "code-shown" or now >= self.link.expires_at:
            self._link_poll_at = None
            return
        try:
            await self._poll_status()
        except CloudError as exc:
            self._failure(exc)
        else:
            self._success()
        if self.link.state == "code-shown":
            self._link_poll_at = self.clock.now() + self.link.interval
        self._changed()

    # -- destinations ----------------------------------------------------------------------------
    def _queue_ack(self, conn: sqlite3.Connection, did: str, result: str, now: float, *, reason: str = "",
                   intent_id: str = "", again: bool = False) -> bool:
        """Queue the acknowledgement of one state of one destination, once: the states sent are
        remembered with the destination, and the idempotency key is derived from (destination,
        state), so whoever queues it (the hand-off, the relay's feedback, a restart) it is one
        request.  ``again``: the backend listed an acknowledged destination again (it lost the
        acknowledgement): a new request (a new key) for the same state."""
        row = conn.execute("SELECT payload FROM cloud_destinations WHERE id=?", (did,)).fetchone()
        if row is not None:
            p = _loads(row[0])
            sent = [str(r) for r in p.get("_acks", [])] if isinstance(p.get("_acks"), list) else []
            if result in sent and not again:
                return False
            if result not in sent:
                p["_acks"] = [*sent, result]
                conn.execute("UPDATE cloud_destinations SET payload=? WHERE id=?", (_dumps(p), did))
        key = None if again else _derived_key("destination_ack", self.s.vehicle_id, did, result)
        _item, created = self.outbox.insert(conn, "destination_ack", {"id": did, "result": result,
                                                                     "reason": reason[:200], "intent_id": intent_id},
                                            now, coalesce_key=f"{did}|{result}", key=key)
        return created

    def destination_event(self, source_ref: str, intent_id: str, event: str) -> None:
        """services.DestinationFeedback: the navigation relay says what became of a send-to-car
        destination; it is acknowledged to the backend (once per state)."""
        if event not in RELAY_EVENTS:
            log.warning("cloud: unknown navigation event %r ignored", event)
            return
        now = self.clock.now()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT state FROM cloud_destinations WHERE id=?", (source_ref,)).fetchone()
            if row is not None and row[0] == "new":
                # The relay reports before our hand-off call returned (it offered the destination
                # on the dashboard at once): the car has it, so "accepted" comes first.
                conn.execute("UPDATE cloud_destinations SET state='handed_off', intent_id=?, updated_at=? "
                             "WHERE id=?", (intent_id, now, source_ref))
                self._queue_ack(conn, source_ref, "accepted", now, intent_id=intent_id)
            reason = "expired before the driver saw it or acted on it" if event == "expired" else ""
            self._queue_ack(conn, source_ref, event, now, reason=reason, intent_id=intent_id)
        self._changed()
        self._wake.set()

    def _store_destinations(self, dests: list[CloudDestination]) -> None:
        now = self.clock.now()
        new = 0
        with self.db.transaction() as conn:
            for d in dests:
                row = conn.execute("SELECT state, intent_id, payload FROM cloud_destinations WHERE id=?",
                                   (d.id,)).fetchone()
                if row is None:
                    payload = {"label": d.label, "lat": d.lat, "lon": d.lon, "address": d.address,
                               "expires_at": d.expires_at}
                    expired = not d.problem and d.expires_at is not None and d.expires_at < now
                    problem = d.problem or ("expired before it reached the car" if expired else "")
                    state = "rejected" if problem else "new"
                    conn.execute("INSERT INTO cloud_destinations(id, payload, state, received_at, updated_at) "
                                 "VALUES(?, ?, ?, ?, ?)", (d.id, _dumps(payload), state, now, now))
                    if problem:
                        log.warning("cloud: send-to-car destination %s unusable: %s", redact(d.id), problem)
                        self._queue_ack(conn, d.id, "expired" if expired else "rejected", now, reason=problem)
                    else:
                        new += 1
                elif row[0] == "acked":
                    # Listed again although acknowledged: the backend lost the acknowledgement.
                    # Send the first one again (idempotent there); at most one is queued.
                    sent = _loads(row[2]).get("_acks")
                    first = str(sent[0]) if isinstance(sent, list) and sent else "accepted"
                    self._queue_ack(conn, d.id, first, now, intent_id=str(row[1]), again=True)
            conn.execute("DELETE FROM cloud_destinations WHERE state='acked' AND updated_at<?",
                         (now - DESTINATION_MEMORY_S,))
        if new:
            log.info("cloud: %d send-to-car destination(s) received", new)
            self._handoff_retry_at = 0.0
            self._handoff_check = True

    async def _handoff(self, now: float) -> None:
        if not self._handoff_check or now < self._handoff_retry_at:
            return
        rows = self.db.conn.execute("SELECT id, payload FROM cloud_destinations WHERE state='new' "
                                    "ORDER BY received_at, id LIMIT ?", (HANDOFF_BATCH,)).fetchall()
        if not rows:
            self.handoff_note = ""
            self._handoff_check = False
            return
        if not self.feature_enabled(REMOTE_NAVIGATION):
            # Not offered while the car is not entitled to send-to-car (with or without a navigation
            # service); acknowledged — never dropped, never left for the backend to list forever —
            # with a documented reason.
            st = self._features.get(REMOTE_NAVIGATION)
            why = f"{NOT_ENTITLED}: {REMOTE_NAVIGATION} is off ({st.reason if st else 'not in the entitlements'})"
            for did, _payload in rows:
                self._close_destination(did, "rejected", why, now)
            log.info("cloud: %d send-to-car destination(s) not offered: %s is off", len(rows), REMOTE_NAVIGATION)
            self._changed()
            return
        nav = self.navigation()
        if nav is None:
            if not self.handoff_note:
                log.warning("cloud: %d send-to-car destination(s) waiting: no navigation service", len(rows))
            self.handoff_note = "waiting for a navigation service"
            self._handoff_retry_at = now + self.s.sync_interval
            return
        from ..services import Destination

        for did, payload_text in rows:
            p = _loads(payload_text)
            exp = p.get("expires_at")
            if isinstance(exp, (int, float)) and exp < now:
                self._close_destination(did, "expired", "expired before it could be offered", now)
                continue
            dest = Destination(label=str(p.get("label", "")), lat=p.get("lat"), lon=p.get("lon"),
                               query=str(p.get("address", "")))
            try:
                async with asyncio.timeout(HANDOFF_TIMEOUT_S):
                    if self.s.confirm_destinations:
                        intent_id = await nav.offer(dest, source="cloud", source_ref=did)
                    else:
                        intent_id = await nav.accept_external(dest, source="cloud", source_ref=did)
            except Exception as exc:
                self._handoff_failures += 1
                self._handoff_retry_at = self.clock.now() + self.s.retry.delay(self._handoff_failures, self.rng)
                self.handoff_note = f"navigation did not take a destination ({type(exc).__name__}: {exc})"[:200]
                log.warning("cloud: %s; retry after %s", self.handoff_note, iso(self._handoff_retry_at))
                return
            self._handoff_failures = 0
            self.handoff_note = ""
            at = self.clock.now()
            with self.db.transaction() as conn:
                conn.execute("UPDATE cloud_destinations SET state='handed_off', intent_id=?, updated_at=? "
                             "WHERE id=? AND state='new'", (str(intent_id), at, did))
                self._queue_ack(conn, did, "accepted", at, intent_id=str(intent_id))
            log.info("cloud: send-to-car destination handed to navigation")
        self._changed()

    def _close_destination(self, did: str, result: str, reason: str, now: float) -> None:
        """A destination that will not be offered: marked so, and its acknowledgement queued."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE cloud_destinations SET state='rejected', updated_at=? WHERE id=?", (now, did))
            self._queue_ack(conn, did, result, now, reason=reason)

    def pending_destinations(self) -> int:
        return int(self.db.conn.execute("SELECT COUNT(*) FROM cloud_destinations WHERE state='new'").fetchone()[0])

    # -- lease -----------------------------------------------------------------------------------
    def _load_held(self, anchors: Mapping[str, Ed25519PublicKey] | None) -> None:
        row = self.db.conn.execute("SELECT jws, etag FROM cloud_entitlements WHERE slot=1").fetchone()
        if row is None:
            self.held, self.etag = None, ""
            return
        doc = parse_held(str(row[0]), self.s.vehicle_id, anchors)
        if doc is None:
            log.warning("cloud: the stored entitlement document no longer verifies (anchors rotated?); ignoring it")
            self.held, self.etag = None, ""
            return
        self.held, self.etag = doc, str(row[1])
        self.courier = str(self.db.get("held_via", "") or "")

    def _evaluate(self, now: float) -> Lease:
        return evaluate(self.held, now, grace=self.s.grace, skew=self.s.clock_skew,
                        offline_policy=self.s.offline_policy, gated_local=self.s.gated_local,
                        confirmed=self.confirmed and self.backend_state != "offline", courier=self.courier)

    def _reevaluate(self, now: float) -> None:
        # The outcome only changes with the document, the confirmation, or at lease.next_change.
        key = (self.held.jws if self.held else None, self.confirmed and self.backend_state != "offline", self.courier)
        nxt = self.lease.next_change
        if key == self._lease_key and (nxt is None or now < nxt):
            return
        self._lease_key = key
        lease = self._evaluate(now)
        old_source = self.lease.source
        self.lease = lease
        changed = False
        for name, st in lease.features.items():
            if self._features.get(name) != st:
                prev = self._features.get(name)
                self._features[name] = st
                changed = True
                if prev is None or prev.enabled != st.enabled or prev.source != st.source:
                    log.info("cloud: feature %s %s (%s)", name, "on" if st.enabled else "off", st.source)
                self._emit(CloudFeatureChanged(name, st.enabled, st.source, st.reason))
        for name in [n for n in self._features if n not in lease.features]:
            del self._features[name]
            changed = True
            self._emit(CloudFeatureChanged(name, False, "offline-policy", "no longer known"))
        if changed or old_source != lease.source:
            self._changed()

    @property
    def features(self) -> dict[str, FeatureState]:
        return dict(self._features)

    def feature(self, name: str) -> FeatureState | None:
        """One feature's state, without copying them all (components ask on every command)."""
        return self._features.get(name)

    def feature_enabled(self, name: str) -> bool:
        st = self._features.get(name)
        return bool(st and st.enabled)

    # -- housekeeping ------------------------------------------------------------------------------
    def _housekeeping(self, now: float) -> None:
        if self.link.state == "code-shown" and now >= self.link.expires_at:
            self._set_link(LinkInfo("unlinked", "the code expired before it was entered; ask for a new one"),
                           persist=True)
            self._link_poll_at = None
        if now >= self._expire_at:
            # Ages are days/hours: checking every few minutes is plenty (and cheap per wake-up).
            self._expire_at = now + EXPIRE_CHECK_S
            if self.outbox.expire(now):
                self._changed()

    # -- state setters ---------------------------------------------------------------------------
    def _set_backend(self, state: BackendState, reason: str) -> None:
        if (state, reason) == (self.backend_state, self.backend_reason):
            return
        if state != self.backend_state:
            log.info("cloud: backend %s (%s)", state, reason)
        self.backend_state, self.backend_reason = state, reason
        self._emit(CloudBackendChanged(state, reason))
        self._reevaluate(self.clock.now())
        self._changed()

    def _set_registration(self, state: Registration, reason: str, *, persist: bool) -> None:
        if persist:
            with self.db.transaction() as conn:
                CloudDb.put(conn, "registration", {"state": state, "reason": reason})
        if (state, reason) == (self.registration, self.registration_reason):
            return
        self.registration, self.registration_reason = state, reason
        self._emit(CloudRegistrationChanged(state, reason))
        self._changed()

    def _set_link(self, info: LinkInfo, *, persist: bool) -> None:
        if persist:
            with self.db.transaction() as conn:
                CloudDb.put(conn, "link", info.to_json())
        if info == self.link:
            return
        self.link = info
        self._emit(CloudLinkChanged(info.state, info.reason))
        self._changed()

    def _changed(self) -> None:
        self._emit(CloudStateChanged())


def _derived_key(*parts: str) -> str:
    """An idempotency key that names a fact (the same fact, the same key, whoever queues it)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()[:32]


def _peek_jws(jws: str) -> tuple[int | None, str]:
    """(version, kid) of a document we rejected, read without trusting it (for the report)."""
    parts = jws.strip().split(".")
    out: list[Any] = []
    for part in parts[:2]:
        try:
            value = loads_bounded(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except (ValueError, TypeError):
            value = None
        out.append(value if isinstance(value, dict) else {})
    while len(out) < 2:
        out.append({})
    kid, version = out[0].get("kid"), out[1].get("version")
    return (version if isinstance(version, int) and not isinstance(version, bool) and version >= 0 else None,
            kid[:128] if isinstance(kid, str) else "")


def _dumps(v: Any) -> str:
    import json

    return json.dumps(v, sort_keys=True)


def _loads(text: str) -> dict[str, Any]:
    import json

    try:
        v = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return v if isinstance(v, dict) else {}
