"""The navigation relay: destinations offered to the driver, and the durable queue that delivers
accepted ones to the dashboard's navigation service exactly once.

Flow::

    messages (intents found in texts/e-mail) --offer()----------> offered --Accept--> accepted
    cloud (send-to-car, already chosen) -------accept_external()-------------------> accepted
    accepted --(navigation service on the bus, answers NavigateTo)--> delivered
    offered/accepted --(intent_expiry passed)--> expired;  offered/accepted --Dismiss--> dismissed

* Durable: every state lives in SQLite (``nav_intents``) before anything is announced, so a crash
  or restart loses nothing; accepted intents waiting at start-up are delivered when the service
  is there.
* The service (bus name, path, interface, method from ``navigation.service``) is watched with a
  :class:`~daemon.dbus.watch.NameWatcher`; when it appears, every waiting intent is due at once.
* One delivery at a time, by one task, in acceptance order; an intent becomes ``delivered`` only
  after the service answered.  An error or no answer within ``delivery_timeout`` keeps it
  accepted and schedules a retry (``retry_base`` doubling up to ``retry_max``, equal jitter: a
  uniform wait in ``[c/2, c]`` — :mod:`daemon.backoff`).
  The payload carries the intent's ``id``: a service that answered too late to be seen still
  receives the same id again and can drop the duplicate.
* Idle means (almost) no wake-ups: the loop sleeps on the injected :class:`~daemon.clock.Clock`
  until the next retry or expiry is due, or a kick (the real clock checks the wall clock at least
  every 15 minutes, so a corrected RTC is noticed).

The call: ``<method>(a{sv} destination) -> ()`` with keys ``id`` s, ``kind`` s (coordinates |
query | link), ``label`` s, ``latitude`` d / ``longitude`` d (coordinates only), ``query`` s,
``url`` s, ``source`` s, ``confidence`` d (docs/api/Navigation1.md).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import Variant

from .backoff import Backoff
from .clock import Clock, RealClock, Wake
from .context import AppContext
from .dbus.call import call
from .dbus.errors import BusError, CallTimeout
from .dbus.watch import NameWatcher
from .errors import InvalidInput, NotFound, OperationFailed
from .logs import redact
from .services import Destination

log = logging.getLogger(__name__)

STATES = ("offered", "accepted", "delivered", "dismissed", "expired")
LIVE_STATES = ("offered", "accepted")
MAX_LABEL = 200
MAX_QUERY = 500
MAX_URL = 2048
# Delivered/dismissed/expired intents are kept this long for the dashboard's history, then pruned.
KEEP_FINISHED_S = 7 * 86400.0
_LINK_RE = re.compile(r"^https?://\S+$", re.I)


@dataclass(frozen=True)
class NavIntent:
    id: str
    source: str
    source_ref: str
    phone: str | None
    kind: str
    label: str
    lat: float | None
    lon: float | None
    query: str
    url: str
    confidence: float
    state: str
    created_at: float
    expires_at: float
    accepted_at: float | None
    delivered_at: float | None
    attempts: int
    last_error: str

    def to_dbus(self) -> dict[str, Variant]:
        d: dict[str, Variant] = {
            "id": Variant("s", self.id),
            "kind": Variant("s", self.kind),
            "label": Variant("s", self.label),
            "query": Variant("s", self.query),
            "url": Variant("s", self.url),
            "confidence": Variant("d", self.confidence),
            "source": Variant("s", self.source),
            "source_ref": Variant("s", self.source_ref),
            "phone": Variant("s", self.phone or ""),
            "state": Variant("s", self.state),
            "created": Variant("t", int(self.created_at)),
            "expires": Variant("t", int(self.expires_at)),
            "attempts": Variant("u", self.attempts),
        }
        if self.lat is not None and self.lon is not None:
            d["latitude"] = Variant("d", self.lat)
            d["longitude"] = Variant("d", self.lon)
        return d

    def payload(self) -> dict[str, Variant]:
        """What the navigation service receives."""
        d: dict[str, Variant] = {
            "id": Variant("s", self.id),
            "kind": Variant("s", self.kind),
            "label": Variant("s", self.label),
            "query": Variant("s", self.query),
            "url": Variant("s", self.url),
            "source": Variant("s", self.source),
            "confidence": Variant("d", self.confidence),
        }
        if self.lat is not None and self.lon is not None:
            d["latitude"] = Variant("d", self.lat)
            d["longitude"] = Variant("d", self.lon)
        return d


_COLUMNS = ("id, source, source_ref, phone, kind, label, lat, lon, query, url, confidence, state, created_at, "
            "expires_at, accepted_at, delivered_at, attempts, last_error")


def _row(r: tuple[Any, ...]) -> NavIntent:
    return NavIntent(*r)


def _clean(text: str, limit: int) -> str:
    return "".join(ch for ch in " ".join(text.split()) if ch >= " " and ch != "\x7f")[:limit]


def normalise(dest: Destination) -> tuple[str, str, float | None, float | None, str, str, float]:
    """Validate a destination from anyone (messages, cloud): (kind, label, lat, lon, query, url,
    confidence).  Raises InvalidInput for anything a navigation service could not use."""
    lat, lon = dest.lat, dest.lon
    query = _clean(dest.query or "", MAX_URL)
    label = _clean(dest.label or "", MAX_LABEL)
    url = ""
    if (lat is None) != (lon is None):
        raise InvalidInput("a destination needs both latitude and longitude, or neither")
    if lat is not None and lon is not None:
        if not (isinstance(lat, (int, float)) and isinstance(lon, (int, float))) or lat != lat or lon != lon \
                or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise InvalidInput("coordinates out of range")
        kind = "coordinates"
        lat, lon = float(lat), float(lon)
    elif _LINK_RE.match(query):
        # A link the driver's navigation may resolve (we never fetch it ourselves).
        kind, url, query = "link", query, ""
    elif query:
        kind = "query"
        query = query[:MAX_QUERY]
    else:
        raise InvalidInput("a destination needs coordinates, an address or a link")
    conf = float(dest.confidence)
    if not 0.0 <= conf <= 1.0 or conf != conf:
        raise InvalidInput("confidence must be between 0 and 1")
    return kind, label or query or url or "Destination", lat, lon, query, url, conf


class NavigationRelay:
    """Component ``navigation`` and the ``NavigationSink`` service (``ctx.services.navigation``)."""

    name = "navigation"

    def __init__(self, ctx: AppContext, *, clock: Clock | None = None,
                 rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.navigation
        self.store = ctx.store
        self.clock: Clock = clock or RealClock()
        self._rng = rng or random.Random()
        self._retry = Backoff(self.cfg.retry_base, self.cfg.retry_max, "equal")
        self._kick = Wake()
        self.service_owner: str | None = None
        self.offered_listeners: list[Callable[[NavIntent], None]] = []
        self.changed_listeners: list[Callable[[NavIntent, str], None]] = []
        self.service_listeners: list[Callable[[bool], None]] = []

    # -- component ---------------------------------------------------------------------------------
    async def run(self) -> None:
        svc = self.cfg.service
        watcher = NameWatcher(self.ctx.system, svc.bus_name, self._owner_changed)
        self.ctx.health.set(self.name, "ok", "navigation service not on the bus")  # until the watcher says
        await watcher.start()
        try:
            while True:
                self._kick.take()  # before the pass: a kick during it makes the next pass run at once
                delay = self._pump_expiry()
                if self.service_owner is not None:
                    delay = min(delay, await self._deliver_due())
                if delay > 0:
                    await self.clock.sleep(min(delay, 86400.0), self._kick)
        finally:
            await watcher.stop()
            self.service_owner = None

    async def _owner_changed(self, owner: str | None) -> None:
        self.service_owner = owner
        if owner is not None:
            # The service (re)appeared: everything waiting is due now.
            with self.store.transaction() as db:
                db.execute("UPDATE nav_intents SET next_attempt_at = 0 WHERE state = 'accepted'")
            log.info("navigation service %s is on the bus", self.cfg.service.bus_name)
        else:
            log.info("navigation service %s is not on the bus; accepted destinations wait",
                     self.cfg.service.bus_name)
        for cb in list(self.service_listeners):
            cb(owner is not None)
        # Not an error of ours (the dashboard's service may start later): ok, with a reason.
        self.ctx.health.set(self.name, "ok", "" if owner else "navigation service not on the bus")
        self._kick.set()

    # -- NavigationSink ---------------------------------------------------------------------------------
    async def offer(self, destination: Destination, *, source: str, source_ref: str,
                    phone: str | None = None) -> str:
        return self._insert(destination, source=source, source_ref=source_ref, phone=phone, state="offered")

    async def accept_external(self, destination: Destination, *, source: str, source_ref: str) -> str:
        return self._insert(destination, source=source, source_ref=source_ref, phone=None, state="accepted")

    def _insert(self, destination: Destination, *, source: str, source_ref: str, phone: str | None,
                state: str) -> str:
        kind, label, lat, lon, query, url, conf = normalise(destination)
        source = _clean(source, 40) or "unknown"
        source_ref = _clean(source_ref, 200)
        key_src = "|".join([state if state == "accepted" else "offer", source, source_ref, kind,
                            f"{lat:.6f}" if lat is not None else "", f"{lon:.6f}" if lon is not None else "",
                            query.lower(), url])
        dedup = hashlib.sha256(key_src.encode()).hexdigest()
        now = self.clock.now()
        existing = self.store.execute("SELECT id FROM nav_intents WHERE dedup_key = ?", (dedup,)).fetchone()
        if existing:
            return str(existing[0])  # the same destination from the same source: one intent
        intent_id = uuid.uuid4().hex[:16]
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO nav_intents (id, dedup_key, source, source_ref, phone, kind, label, lat, lon, query, url,"
                " confidence, state, created_at, expires_at, accepted_at, next_attempt_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (intent_id, dedup, source, source_ref, phone, kind, label, lat, lon, query, url, conf, state, now,
                 now + self.cfg.intent_expiry, now if state == "accepted" else None, 0.0))
        intent = self.get(intent_id)
        log.info("navigation intent %s %s from %s (%s, confidence %.2f)", intent_id, state, source, kind, conf)
        if state == "offered":
            for cb in list(self.offered_listeners):
                cb(intent)
            self._feedback(intent, "shown")
        else:
            self._announce(intent, "")
        self._kick.set()
        return intent_id

    # -- driver decisions ---------------------------------------------------------------------------------
    def get(self, intent_id: str) -> NavIntent:
        r = self.store.execute(f"SELECT {_COLUMNS} FROM nav_intents WHERE id = ?", (intent_id,)).fetchone()
        if r is None:
            raise NotFound(f"no navigation intent {intent_id!r}")
        return _row(r)

    def pending(self) -> list[NavIntent]:
        """Offered and accepted-not-yet-delivered intents, oldest first."""
        self._pump_expiry()
        rows = self.store.execute(
            f"SELECT {_COLUMNS} FROM nav_intents WHERE state IN ('offered', 'accepted') ORDER BY created_at, id"
        ).fetchall()
        return [_row(r) for r in rows]

    def pending_count(self) -> int:
        """len(pending()) without reading the rows (signals carry it on every change)."""
        return int(self.store.execute(
            "SELECT COUNT(*) FROM nav_intents WHERE state IN ('offered', 'accepted')").fetchone()[0])

    def accept(self, intent_id: str) -> NavIntent:
        intent = self._expire_one(self.get(intent_id))
        if intent.state in ("accepted", "delivered"):
            return intent  # a second tap changes nothing
        if intent.state != "offered":
            raise OperationFailed(f"intent {intent_id} was {intent.state}")
        with self.store.transaction() as db:
            db.execute("UPDATE nav_intents SET state = 'accepted', accepted_at = ?, next_attempt_at = 0 "
                       "WHERE id = ? AND state = 'offered'", (self.clock.now(), intent_id))
        intent = self.get(intent_id)
        self._announce(intent, "")
        self._feedback(intent, "driver_accepted")
        self._kick.set()
        return intent

    def dismiss(self, intent_id: str) -> NavIntent:
        intent = self._expire_one(self.get(intent_id))
        if intent.state == "dismissed":
            return intent
        if intent.state not in LIVE_STATES:
            raise OperationFailed(f"intent {intent_id} was {intent.state}")
        with self.store.transaction() as db:
            db.execute("UPDATE nav_intents SET state = 'dismissed' WHERE id = ? AND state IN ('offered','accepted')",
                       (intent_id,))
        intent = self.get(intent_id)
        self._announce(intent, "")
        self._feedback(intent, "driver_declined")
        return intent

    def drop_phone(self, phone: str) -> None:
        """A forgotten phone: its message-derived intents go (the database cascade does it too)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM nav_intents WHERE phone = ?", (phone,))

    def _announce(self, intent: NavIntent, reason: str) -> None:
        for cb in list(self.changed_listeners):
            cb(intent, reason)

    def _feedback(self, intent: NavIntent, event: str) -> None:
        """Tell the source what became of its destination (send-to-car: the cloud acknowledges
        each state to the backend).  After the change is committed; never fails the relay."""
        sink = self.ctx.services.cloud_destinations if intent.source == "cloud" else None
        if sink is None:
            return
        try:
            sink.destination_event(intent.source_ref, intent.id, event)
        except Exception:
            log.exception("navigation intent %s: the cloud could not record %s", intent.id, event)

    # -- expiry ---------------------------------------------------------------------------------------
    def _expire_one(self, intent: NavIntent) -> NavIntent:
        if intent.state in LIVE_STATES and intent.expires_at <= self.clock.now():
            self._pump_expiry()
            return self.get(intent.id)
        return intent

    def _pump_expiry(self) -> float:
        """Expire what is due; returns seconds until the next expiry (inf if none)."""
        now = self.clock.now()
        due = self.store.execute(
            f"SELECT {_COLUMNS} FROM nav_intents WHERE state IN ('offered','accepted') AND expires_at <= ?",
            (now,)).fetchall()
        if due:
            with self.store.transaction() as db:
                db.executemany("UPDATE nav_intents SET state = 'expired' WHERE id = ? AND state IN "
                               "('offered','accepted')", [(r[0],) for r in due])
            for r in due:
                intent = self.get(r[0])
                log.info("navigation intent %s expired (was %s)", intent.id, r[11])
                self._announce(intent, "expired")
                self._feedback(intent, "expired")
        with self.store.transaction() as db:
            db.execute("DELETE FROM nav_intents WHERE state IN ('delivered','dismissed','expired') AND "
                       "created_at < ?", (now - KEEP_FINISHED_S,))
        nxt = self.store.execute("SELECT MIN(expires_at) FROM nav_intents WHERE state IN ('offered','accepted')"
                                 ).fetchone()[0]
        return float("inf") if nxt is None else max(0.0, float(nxt) - now)

    # -- delivery -------------------------------------------------------------------------------------
    async def _deliver_due(self) -> float:
        """Deliver every accepted intent that is due, in order; returns seconds until the next."""
        svc = self.cfg.service
        while self.service_owner is not None:
            now = self.clock.now()
            r = self.store.execute(
                f"SELECT {_COLUMNS} FROM nav_intents WHERE state = 'accepted' AND expires_at > ? "
                f"ORDER BY accepted_at, id LIMIT 1", (now,)).fetchone()
            if r is None:
                return float("inf")
            intent = _row(r)
            nxt = self.store.execute("SELECT next_attempt_at FROM nav_intents WHERE id = ?",
                                     (intent.id,)).fetchone()[0]
            if nxt > now:
                return float(nxt) - now  # the head of the queue waits; order is kept
            try:
                await call(self.ctx.system_bus, svc.bus_name, svc.path, svc.interface, svc.method, "a{sv}",
                           [intent.payload()], timeout=self.cfg.delivery_timeout)
            except BusError as exc:
                self._failed(intent, exc)
                continue
            with self.store.transaction() as db:
                db.execute("UPDATE nav_intents SET state = 'delivered', delivered_at = ?, attempts = attempts + 1,"
                           " last_error = '' WHERE id = ? AND state = 'accepted'", (self.clock.now(), intent.id))
            delivered = self.get(intent.id)
            log.info("navigation intent %s delivered to %s", intent.id, svc.bus_name)
            if delivered.state == "delivered":
                self._announce(delivered, "")
                self._feedback(delivered, "shown")  # the dashboard's navigation has it
        return float("inf")

    def _failed(self, intent: NavIntent, exc: BusError) -> None:
        attempts = intent.attempts + 1
        delay = self._retry.delay(attempts, self._rng)
        why = "no answer" if isinstance(exc, CallTimeout) else (exc.name.rsplit(".", 1)[-1] or "error")
        with self.store.transaction() as db:
            db.execute("UPDATE nav_intents SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                       (attempts, why[:200], self.clock.now() + delay, intent.id))
        log.warning("navigation intent %s: delivery attempt %d failed (%s); retry in %.1fs",
                    intent.id, attempts, why, delay)
        self._announce(self.get(intent.id), why)


def describe(intent: NavIntent) -> str:
    """A one-line, log-safe description (no label or address at INFO)."""
    return f"{intent.id} {intent.kind} {intent.state} {redact(intent.label)}"
