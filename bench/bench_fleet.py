"""Fleet recovery: fleets of 1,000, 10,000 and 100,000 cars come back to a backend that was down
for an hour and that has a CAPACITY (issues 7 and 18).

Every car of every fleet is simulated, in simulated time, against ONE backend with a CAPACITY.
100,000 ``CloudEngine``s (each with its SQLite outbox and asyncio task) fit neither in memory nor
in minutes, so the figures come from a model of the engine (``_model_fleet``, below): the engine's
decision code for this scenario line for line (run / _step / _next_wakeup / _deliver / _sync /
_failure / _success, the outbox's release), with the daemon's real ``Backoff`` and ``Breaker``
(``daemon/backoff.py``, ``daemon/cloud/policy.py``), one object per car and a heap of next-wake
times (100,000 cars in ~15 s per policy).  The model is checked against the daemon's own code in
the same run: the 1,000-car fleet is also run with a real ``CloudEngine`` per car (SQLite outbox
in memory, circuit breaker, Retry-After handling, sync schedule, built from the daemon's default
config, on a shared ``SimClock``, talking to an in-process stand-in for the backend; no sockets)
and ``fleet_1k_engine_*`` / ``fleet_1k_model_vs_engine_*_drain`` say how close the two are.

The backend serves at most ``CAPACITY_PER_1000`` requests per second per 1,000 cars (a token
bucket, one second of burst; about ten times a fleet's normal sync load) and answers ``503`` with
``Retry-After: RETRY_AFTER_S`` beyond it, so the cars influence each other: every car of a fleet
runs in ONE simulation against that one backend.

Scenario (the thundering-herd worst case): every car learns of the outage in the same second —
a fleet-wide campaign has just asked each car to send a consent change, and one car in five to
register, when the backend goes down.  Their periodic syncs are spread over the hour as in a real
fleet.  The backend stays down for an hour and comes back at one instant.

Three policies, same engine, same fleet, same seeds:

* ``ours``: the daemon's defaults (full-jitter exponential retry, equal-jitter breaker cool-down,
  sync interval jittered +-20 %).
* ``pm20`` (the realistic baseline): the same exponential ladders with the common +-20 % jitter
  (each wait ``ceiling * U[0.8, 1.2]``), sync jitter +-20 %.
* ``nojitter``: the same ladders with no jitter anywhere.

Retry-After is honoured by the engine in every policy (with its own small extra jitter,
``RETRY_AFTER_JITTER``): that is the daemon's code path, not the policy under test.

Per fleet size N (1k, 10k, 100k) and policy P (``fleet_<N>_<P>_...``):

* ``peak_to_mean``: the backend's busiest second (all requests, 503s included) over its mean
  requests per second from its return until every outbox is empty.  Goal (ours): under 3.
* ``peak_per_1000``: that busiest second per 1,000 cars.
* ``drain_s``: seconds from the return until every outbox is empty (the last write served).
  Goal (ours): within 2x the better baseline's (``fleet_<N>_drain_vs_best_baseline``).  Floor
  ``fleet_<N>_drain_floor_s``: the requests the fleet got served (ours) over the backend's
  capacity; no policy can drain faster than the backend can answer.
* ``503s``: requests the backend turned away.
* ``fleet_outage_attempts_per_car_hour``: requests a car tried while the backend was down (ours,
  10k): no storm while it is down either.

Run alone: ``python -m bench fleet`` (about a minute).  ``DASHBRIDGE_BENCH_FLEET_ENGINE`` sets the
fleet also run on ``CloudEngine`` (default 1,000; 0 for none); the runner records it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dashbridge.daemon.clock import SimClock
from dashbridge.daemon.cloud.component import settings_from_config
from dashbridge.daemon.cloud.engine import RETRY_AFTER_JITTER, CloudEngine, EngineSettings
from dashbridge.daemon.cloud.entitlements import b64url_encode, load_anchors
from dashbridge.daemon.cloud.outbox import CloudDb
from dashbridge.daemon.cloud.policy import Backoff, Breaker
from dashbridge.daemon.cloud.protocol import Discovery, Unreachable, discovery_url
from dashbridge.daemon.cloud.transport import HttpResponse
from dashbridge.daemon.config import CloudConfig, Duration
from dashbridge.simulator.cloud import sign_jws

FLEETS = (1_000, 10_000, 100_000)
ENGINE_CARS = int(os.environ.get("DASHBRIDGE_BENCH_FLEET_ENGINE", "1000"))  # the fleet also run on CloudEngine
CAPACITY_PER_1000 = 5.0  # requests per second the backend serves per 1,000 cars
RETRY_AFTER_S = 30  # what the backend says beyond its capacity
OUTAGE_S = 3600.0
T0 = 1_800_000_000.0
BASE = "https://fleet.example.com"
JSON_HDR = {"content-type": "application/json"}
BUSY_HDR = {"content-type": "application/json", "retry-after": str(RETRY_AFTER_S)}
REGISTER_SHARE = 0.2  # cars that also asked to register during the campaign
AFTER_S = 4 * 3600.0  # how long after the return the fleet runs (far beyond any drain)
POLICIES = ("ours", "pm20", "nojitter")

# Filled in by run(): what each figure is, its floor and its sample size (see bench/__main__.py).
FIGURES: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class PlusMinus(Backoff):
    """The realistic baseline's ladder: exponential, each wait ``ceiling * U[1 - spread, 1 + spread]``."""

    spread: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.ceiling(attempt) * rng.uniform(1.0 - self.spread, 1.0 + self.spread)


@dataclass
class Backend:
    """The stand-in backend: refuses connections until ``up_at``, then serves ``capacity``
    requests per second (token bucket, one second of burst) and answers 503 + Retry-After beyond."""

    clock: SimClock
    up_at: float
    capacity: float
    arrivals: list[float] = field(default_factory=list)
    down_attempts: int = 0
    busy: int = 0
    served: int = 0
    served_at: list[float] = field(default_factory=list)
    last_write: float = 0.0
    _tokens: float = 0.0
    _refilled: float | None = None

    def _admit(self, now: float) -> bool:
        burst = max(1.0, self.capacity)
        if self._refilled is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + (now - self._refilled) * self.capacity)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   timeout: float) -> HttpResponse:
        now = self.clock.now()
        if now < self.up_at:
            self.down_attempts += 1
            raise Unreachable("cannot connect ([Errno 111] Connection refused)")
        self.arrivals.append(now)
        if not self._admit(now):
            self.busy += 1
            return HttpResponse(503, BUSY_HDR, b'{"error": {"code": "overloaded"}}', url)
        self.served += 1
        self.served_at.append(now)
        rest = url.split("/vehicles/", 1)[1].partition("/")[2]
        if method in ("POST", "PUT"):
            self.last_write = max(self.last_write, now)
        if rest == "registration":
            return HttpResponse(201, JSON_HDR, b'{"registration": {"state": "registered"}}', url)
        if rest.startswith("consents/"):
            return HttpResponse(200, JSON_HDR, b'{"ok": true}', url)
        if rest == "entitlements" and headers.get("If-None-Match"):
            return HttpResponse(304, {"etag": headers["If-None-Match"]}, b"", url)
        if rest == "destinations":
            return HttpResponse(200, JSON_HDR, b'{"destinations": []}', url)
        if rest == "":
            return HttpResponse(200, JSON_HDR, b'{"registration": {"state": "registered"}}', url)
        return HttpResponse(404, JSON_HDR, b'{"error": {"code": "not_found"}}', url)

    async def close(self) -> None:
        pass


def _endpoints() -> dict[str, str]:
    p = f"{BASE}/v2/vehicles/{{vehicle_id}}"
    return {"registration": f"{p}/registration", "status": p, "entitlements": f"{p}/entitlements",
            "destinations": f"{p}/destinations", "destination_ack": f"{p}/destinations/ack",
            "consent": f"{p}/consents/{{consent}}", "account_link": f"{p}/account-link",
            "link_code": f"{p}/link-code"}


def _settings(vin: str, policy: str) -> EngineSettings:
    # The daemon's defaults; startup_delay spreads the cars' sync phases over the hour.
    s = settings_from_config(CloudConfig(enabled=True, url=BASE, vehicle_id=vin, startup_delay=Duration(3600.0)))
    if policy == "ours":
        return s
    if policy == "pm20":
        return dataclasses.replace(
            s, sync_jitter=0.2, retry=PlusMinus(s.retry.base, s.retry.cap, "none"),
            breaker_cooldown=PlusMinus(s.breaker_cooldown.base, s.breaker_cooldown.cap, "none"))
    return dataclasses.replace(
        s, sync_jitter=0.0, retry=Backoff(s.retry.base, s.retry.cap, "none"),
        breaker_cooldown=Backoff(s.breaker_cooldown.base, s.breaker_cooldown.cap, "none"))


def _seed(db: CloudDb, jws: str, now: float) -> None:
    """A car that has been syncing happily: discovery, a held document, its ETag."""
    d = Discovery(url=discovery_url(BASE), version=2, endpoints=_endpoints(), offered=(2,),
                  refresh_after=7 * 86400.0, fetched_at=now)
    with db.transaction() as conn:
        CloudDb.put(conn, "config_url", discovery_url(BASE))
        CloudDb.put(conn, "discovery", d.to_json())
        CloudDb.put(conn, "last_sync", now)
        conn.execute("INSERT INTO cloud_entitlements(slot, jws, version, etag, received_at) VALUES(1, ?, 1, ?, ?)",
                     (jws, '"v1"', now))


@dataclass
class Outcome:
    cars: int  # simulated
    peak_rps: float
    mean_rps: float
    drain_s: float
    busy: int  # 503s (simulated cars)
    served: int  # until the drain
    attempts_while_down: int
    requests: int
    capacity: float

    @property
    def peak_to_mean(self) -> float:
        return self.peak_rps / self.mean_rps

    @property
    def peak_per_1000(self) -> float:
        return self.peak_rps * 1000.0 / self.cars

    @property
    def drain_floor_s(self) -> float:
        return self.served / self.capacity


async def _fleet(policy: str, cars: int, seed: int = 1000) -> Outcome:
    key = Ed25519PrivateKey.generate()
    pub = b64url_encode(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    anchors, _ = load_anchors({"fleet": pub})
    clock = SimClock(start=T0 - 1.0)
    backend = Backend(clock, up_at=T0 + OUTAGE_S, capacity=CAPACITY_PER_1000 * cars / 1000.0)
    rng = random.Random(seed)
    engines: list[CloudEngine] = []
    tasks: list[asyncio.Task[None]] = []

    async def car(eng: CloudEngine, at: float, register: bool) -> None:
        await clock.sleep_until(at)
        # The campaign: the driver's consent (and for some a registration) while the backend is down.
        eng.set_consent("fleet_campaign", True)
        if register:
            eng.register()
        await eng.run()

    claims = {"version": 1, "issued_at": int(T0 - 86400), "not_after": int(T0 + 30 * 86400),
              "features": {"remote_navigation": {"enabled": True}}}
    for i in range(cars):
        vin = f"FLEET{i:08d}"
        db = CloudDb.memory()
        _seed(db, sign_jws({"vehicle_id": vin, **claims}, key, "fleet"), T0 - 600.0)
        eng = CloudEngine(_settings(vin, policy), db, clock, random.Random(rng.getrandbits(64)))
        eng.attach(backend, anchors)
        engines.append(eng)
        tasks.append(asyncio.create_task(car(eng, T0 + rng.uniform(0.0, 1.0), rng.random() < REGISTER_SHARE)))
    await clock.run_until(backend.up_at + AFTER_S)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    waiting = sum(e.outbox.depth() for e in engines)
    if waiting:
        raise RuntimeError(f"{policy}, {cars} cars: {waiting} items still waiting {AFTER_S:.0f}s after the return")
    if any(e.registration == "pending" for e in engines):
        raise RuntimeError(f"{policy}, {cars} cars: a registration did not complete")
    for e in engines:
        e.db.conn.close()
    return _outcome(cars, backend.up_at, backend.last_write, backend.arrivals, backend.served_at, backend.busy,
                    backend.down_attempts, backend.capacity)


def _outcome(cars: int, up_at: float, last_write: float, arrivals: list[float], served_at: list[float], busy: int,
             down_attempts: int, capacity: float) -> Outcome:
    """Per-second buckets of the arrivals from the return until the drain (the last write served)."""
    drain = last_write - up_at
    buckets: Counter[int] = Counter()
    for t in arrivals:
        if t - up_at <= drain:
            buckets[int(t - up_at)] += 1
    total = sum(buckets.values())
    return Outcome(cars=cars, peak_rps=float(max(buckets.values())),
                   mean_rps=total / max(1.0, math.ceil(drain)), drain_s=drain, busy=busy,
                   served=sum(1 for t in served_at if t - up_at <= drain),
                   attempts_while_down=down_attempts, requests=total, capacity=capacity)


# -------------------------------------------------------------------------------------------------
# The fleet model: the engine's retry paths, one small object per car, one event heap
# -------------------------------------------------------------------------------------------------
# 100,000 CloudEngines (each with its SQLite outbox and asyncio task) do not fit in memory or in
# minutes, so every fleet size is ALSO run on this model, and 100,000 cars only on it.  It is the
# engine's decision code for this scenario, line for line (``CloudEngine.run`` / ``_step`` /
# ``_next_wakeup`` / ``_deliver`` / ``_sync`` / ``_failure`` / ``_success`` and the outbox's
# ``release``), with the daemon's real ``Backoff`` and ``Breaker`` objects (daemon/backoff.py,
# daemon/cloud/policy.py) and the engine's ``RETRY_AFTER_JITTER``; what it leaves out issues no
# request here (lease re-evaluation, hand-off, link polling, the SQLite bookkeeping).  One rng for
# the fleet (a Random per car is 2.5 KB: 250 MB at 100,000 cars).  The model is checked against
# the engine in the same run: ``fleet_1k_model_vs_engine_*`` compare the two at 1,000 cars.


class _Unreachable(Exception):
    pass


class _Busy(Exception):
    pass


class _Item:
    __slots__ = ("attempts", "id", "next_at")

    def __init__(self, id_: int, next_at: float) -> None:
        self.id = id_
        self.next_at = next_at
        self.attempts = 0


class _Car:
    __slots__ = ("breaker", "items", "last_sync", "next_sync", "not_before", "sync_failed", "sync_failures")

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker
        self.items: list[_Item] = []
        self.not_before = 0.0
        self.next_sync = 0.0
        self.last_sync = 0.0
        self.sync_failures = 0
        self.sync_failed = False


class _ModelBackend:
    """The same backend as :class:`Backend` (token bucket, 503 + Retry-After) for the model."""

    def __init__(self, up_at: float, capacity: float) -> None:
        self.up_at = up_at
        self.capacity = capacity
        self.burst = max(1.0, capacity)
        self.tokens = self.burst
        self.refilled: float | None = None
        self.arrivals: list[float] = []
        self.served_at: list[float] = []
        self.down_attempts = 0
        self.busy = 0
        self.last_write = 0.0

    def request(self, now: float, write: bool) -> None:
        if now < self.up_at:
            self.down_attempts += 1
            raise _Unreachable
        self.arrivals.append(now)
        if self.refilled is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.capacity)
        self.refilled = now
        if self.tokens < 1.0:
            self.busy += 1
            raise _Busy
        self.tokens -= 1.0
        self.served_at.append(now)
        if write and now > self.last_write:
            self.last_write = now


def _model_fleet(policy: str, cars: int, seed: int = 1000) -> Outcome:
    s = _settings("FLEET00000000", policy)
    retry, cooldown = s.retry, s.breaker_cooldown
    j = min(max(s.sync_jitter, 0.0), 0.9)
    interval, max_ra = s.sync_interval, s.max_retry_after
    rng = random.Random(seed)
    backend = _ModelBackend(T0 + OUTAGE_S, CAPACITY_PER_1000 * cars / 1000.0)
    request = backend.request
    fleet: list[_Car] = []
    heap: list[tuple[float, int]] = []
    pending = 0
    for i in range(cars):
        car = _Car(Breaker(s.breaker_threshold, cooldown, rng))
        start = T0 + rng.uniform(0.0, 1.0)
        car.items.append(_Item(1, start))  # the campaign's consent
        if rng.random() < REGISTER_SHARE:
            car.items.append(_Item(2, start))  # and a registration
        pending += len(car.items)
        car.next_sync = start + rng.uniform(0.0, s.startup_delay)  # run(): the first sync
        fleet.append(car)
        heap.append((start, i))
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop

    def release(car: _Car, now: float) -> None:
        for it in car.items:
            if it.next_at > now:
                it.next_at = now

    def failure(car: _Car, busy: bool, now: float) -> bool:  # CloudEngine._failure
        if busy:  # RetryLater (503: not a backend fault, the breaker is left as it is)
            wait = min(float(RETRY_AFTER_S), max_ra)
            car.not_before = now + wait + rng.uniform(0.0, wait * RETRY_AFTER_JITTER + 1.0)
            release(car, now)
            return True
        br = car.breaker
        opened = br.failure(now)
        if br.is_open:
            if opened and br.opens == 1:
                release(car, now)
            return True
        return False

    def success(car: _Car, now: float) -> None:  # CloudEngine._success
        if car.breaker.success():
            release(car, now)
            if car.sync_failed:
                car.next_sync = min(car.next_sync, now)

    end = backend.up_at + AFTER_S
    while heap and pending:
        now, i = pop(heap)
        if now > end:
            break
        car = fleet[i]
        while True:  # CloudEngine.run: one request per turn while something is due
            gate = car.not_before
            if car.breaker.is_open and car.breaker.open_until > gate:
                gate = car.breaker.open_until
            if now < gate:
                break
            head = min(car.items, key=lambda it: (it.next_at, it.id)) if car.items else None
            if head is not None and head.next_at <= now:  # _deliver
                try:
                    request(now, True)
                except (_Unreachable, _Busy) as exc:
                    gated = failure(car, isinstance(exc, _Busy), now)
                    head.next_at = now if gated else now + retry.delay(head.attempts + 1, rng)
                    head.attempts += 1
                else:
                    car.items.remove(head)
                    pending -= 1
                    success(car, now)
                continue
            if now >= car.next_sync:  # _sync: entitlements (304), then destinations
                try:
                    request(now, False)
                    request(now, False)
                except (_Unreachable, _Busy) as exc:
                    car.sync_failures += 1
                    car.sync_failed = True
                    car.next_sync = now + min(retry.delay(car.sync_failures, rng), interval)
                    failure(car, isinstance(exc, _Busy), now)
                else:
                    car.sync_failures = 0
                    car.sync_failed = False
                    car.last_sync = now
                    car.next_sync = now + interval * rng.uniform(1.0 - j, 1.0 + j)
                    success(car, now)
                continue
            break
        # _next_wakeup
        nxt = car.next_sync
        for it in car.items:
            if it.next_at < nxt:
                nxt = it.next_at
        gate = car.not_before
        if car.breaker.is_open and car.breaker.open_until > gate:
            gate = car.breaker.open_until
        push(heap, (nxt if nxt > gate else gate, i))
    if pending:
        raise RuntimeError(f"model {policy}, {cars} cars: {pending} items still waiting {AFTER_S:.0f}s after"
                           " the return")
    return _outcome(cars, backend.up_at, backend.last_write, backend.arrivals, backend.served_at, backend.busy,
                    backend.down_attempts, backend.capacity)


def run() -> dict[str, float]:
    out: dict[str, float] = {}
    FIGURES.clear()
    t_all = time.monotonic()
    for fleet in FLEETS:
        got: dict[str, Outcome] = {}
        for policy in POLICIES:
            t = time.monotonic()
            got[policy] = o = _model_fleet(policy, fleet)
            print(f"   ({fleet} cars, {policy}: {time.monotonic() - t:.1f}s wall; {o.requests}"
                  f" requests, {o.busy} 503s, peak {o.peak_rps:g}/s, drain {o.drain_s:.0f}s)", flush=True)
        n = f"{fleet // 1000}k"
        floor = f"fleet_{n}_drain_floor_s"
        best = min(("pm20", "nojitter"), key=lambda p: got[p].drain_s)
        out[floor] = got["ours"].drain_floor_s
        FIGURES[floor] = {"samples": fleet, "what": f"{fleet} cars: requests served until the drain (ours) / capacity"}
        for policy, o in got.items():
            p = f"fleet_{n}_{policy}"
            what = f"{fleet} cars, {policy} (every car simulated, the engine's retry model)"
            out[f"{p}_peak_to_mean"] = o.peak_to_mean
            out[f"{p}_peak_per_1000"] = o.peak_per_1000
            out[f"{p}_drain_s"] = o.drain_s
            out[f"{p}_503s"] = float(o.busy)
            FIGURES[f"{p}_peak_to_mean"] = {"samples": fleet, "what": f"busiest second / mean rps, {what}"}
            FIGURES[f"{p}_peak_per_1000"] = {"samples": fleet, "what": f"busiest second per 1,000 cars, {what}"}
            FIGURES[f"{p}_drain_s"] = {"samples": fleet, "floor": floor,
                                       "what": f"return -> every outbox empty, {what}"}
            FIGURES[f"{p}_503s"] = {"samples": fleet, "what": f"requests answered 503, {what}"}
        out[f"fleet_{n}_drain_vs_best_baseline"] = got["ours"].drain_s / got[best].drain_s
        FIGURES[f"fleet_{n}_drain_vs_best_baseline"] = {
            "samples": fleet, "what": f"our drain / the better baseline's ({best}); goal <= 2"}
        if fleet == 10_000:
            out["fleet_outage_attempts_per_car_hour"] = got["ours"].attempts_while_down / fleet / (OUTAGE_S / 3600.0)
            FIGURES["fleet_outage_attempts_per_car_hour"] = {
                "samples": fleet, "what": "requests a car tried while the backend was down (ours)"}
        if fleet == ENGINE_CARS:
            # The model against the daemon's own CloudEngine (SQLite outbox, asyncio, SimClock), same fleet.
            for policy in POLICIES:
                t = time.monotonic()
                e = asyncio.run(_fleet(policy, fleet))
                m = got[policy]
                print(f"   ({fleet} cars, {policy}, CloudEngine: {time.monotonic() - t:.1f}s wall; {e.requests}"
                      f" requests, {e.busy} 503s, peak {e.peak_rps:g}/s, drain {e.drain_s:.0f}s)", flush=True)
                q = f"fleet_{n}_engine_{policy}"
                out[f"{q}_peak_to_mean"] = e.peak_to_mean
                out[f"{q}_drain_s"] = e.drain_s
                out[f"{q}_503s"] = float(e.busy)
                out[f"fleet_{n}_model_vs_engine_{policy}_drain"] = m.drain_s / e.drain_s
                what = f"{fleet} cars, {policy}, the daemon's CloudEngine per car"
                FIGURES[f"{q}_peak_to_mean"] = {"samples": fleet, "what": f"busiest second / mean rps, {what}"}
                FIGURES[f"{q}_drain_s"] = {"samples": fleet, "what": f"return -> every outbox empty, {what}"}
                FIGURES[f"{q}_503s"] = {"samples": fleet, "what": f"requests answered 503, {what}"}
                FIGURES[f"fleet_{n}_model_vs_engine_{policy}_drain"] = {
                    "samples": fleet, "what": f"model drain / CloudEngine drain, {fleet} cars, {policy} (~1)"}
    print(f"   (fleet total {time.monotonic() - t_all:.1f}s wall; capacity {CAPACITY_PER_1000:g} rps per 1,000 cars,"
          f" Retry-After {RETRY_AFTER_S}s, the engine's Retry-After jitter {RETRY_AFTER_JITTER:g})", flush=True)
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:>12.4g}")
