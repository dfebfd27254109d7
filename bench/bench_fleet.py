"""Fleet recovery: 10,000 cars come back to a backend that was down for an hour (issue 7).

Each car is the daemon's own cloud code — ``CloudEngine`` with its SQLite outbox (in memory),
circuit breaker, backoff and sync schedule, built from the daemon's default config — on a shared
simulated clock (``SimClock``), talking to an in-process stand-in for the backend (no sockets:
one process simulates the whole fleet).  The stand-in has no capacity limit, so the cars do not
influence each other: they run in batches over the same simulated timeline and their requests
are added up.

Scenario (the thundering-herd worst case): every car learns of the outage in the same second —
a fleet-wide campaign has just asked each car to send a consent change, and one car in five to
register, when the backend goes down.  Their periodic syncs are spread over the hour as in a real
fleet.  The backend stays down for an hour and comes back at one instant.

* ``fleet_recovery_peak_to_mean``: the backend's busiest second over its mean requests per
  second, from its return until every car's outbox is empty, with our policy (full-jitter
  exponential backoff for items and syncs, full-jittered breaker probes, jittered sync schedule).
  Goal: under 3.
* ``fleet_recovery_nojitter_peak_to_mean``: the same fleet with plain exponential backoff and no
  jitter anywhere (the floor it is compared with, measured in the same run).
* ``fleet_recovery_drain_s``: seconds from the backend's return until every outbox is empty
  (ours); ``fleet_recovery_nojitter_drain_s`` the same without jitter.
* ``fleet_recovery_peak_rps`` / ``fleet_recovery_nojitter_peak_rps``: the busiest second.
* ``fleet_outage_attempts_per_car_hour``: requests a car tried while the backend was down (no
  storm while it is down either).

Run alone: ``python -m bench fleet`` (about a minute).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dashbridge.daemon.clock import SimClock
from dashbridge.daemon.cloud.component import settings_from_config
from dashbridge.daemon.cloud.engine import CloudEngine, EngineSettings
from dashbridge.daemon.cloud.entitlements import b64url_encode, load_anchors
from dashbridge.daemon.cloud.outbox import CloudDb
from dashbridge.daemon.cloud.policy import Backoff
from dashbridge.daemon.cloud.protocol import Discovery, Unreachable, discovery_url
from dashbridge.daemon.cloud.transport import HttpResponse
from dashbridge.daemon.config import CloudConfig, Duration
from dashbridge.simulator.cloud import sign_jws

CARS = 10_000
BATCH = 2_000
OUTAGE_S = 3600.0
T0 = 1_800_000_000.0
BASE = "https://fleet.example.com"
JSON_HDR = {"content-type": "application/json"}
REGISTER_SHARE = 0.2  # cars that also asked to register during the campaign
AFTER_S = 2 * 3600.0  # how long after the return the fleet runs (far beyond any drain)


@dataclass
class Backend:
    """The stand-in backend: refuses connections until ``up_at``, then answers everything."""

    clock: SimClock
    up_at: float
    arrivals: list[float] = field(default_factory=list)
    down_attempts: int = 0
    last_write: float = 0.0

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   timeout: float) -> HttpResponse:
        now = self.clock.now()
        if now < self.up_at:
            self.down_attempts += 1
            raise Unreachable("cannot connect ([Errno 111] Connection refused)")
        self.arrivals.append(now)
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


def _settings(vin: str, jitter: bool) -> EngineSettings:
    # The daemon's defaults; startup_delay spreads the cars' sync phases over the hour.
    s = settings_from_config(CloudConfig(enabled=True, url=BASE, vehicle_id=vin, startup_delay=Duration(3600.0)))
    if jitter:
        return s
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


async def _batch(first: int, n: int, jitter: bool, key: Ed25519PrivateKey, anchors: Mapping[str, Ed25519PublicKey],
                 seed: int) -> tuple[Backend, list[CloudEngine]]:
    clock = SimClock(start=T0 - 1.0)
    backend = Backend(clock, up_at=T0 + OUTAGE_S)
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

    for i in range(first, first + n):
        vin = f"FLEET{i:08d}"
        claims = {"vehicle_id": vin, "version": 1, "issued_at": int(T0 - 86400), "not_after": int(T0 + 30 * 86400),
                  "features": {"remote_navigation": {"enabled": True}}}
        db = CloudDb.memory()
        _seed(db, sign_jws(claims, key, "fleet"), T0 - 600.0)
        eng = CloudEngine(_settings(vin, jitter), db, clock, random.Random(rng.getrandbits(64)))
        eng.attach(backend, anchors)
        engines.append(eng)
        tasks.append(asyncio.create_task(car(eng, T0 + rng.uniform(0.0, 1.0), rng.random() < REGISTER_SHARE)))
    await clock.run_until(backend.up_at + AFTER_S)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return backend, engines


@dataclass
class Outcome:
    peak_rps: float
    mean_rps: float
    drain_s: float
    attempts_while_down: int
    requests: int


async def _fleet(jitter: bool, cars: int, batch: int) -> Outcome:
    key = Ed25519PrivateKey.generate()
    pub = b64url_encode(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    anchors, _ = load_anchors({"fleet": pub})
    buckets: Counter[int] = Counter()
    drain = 0.0
    down = 0
    arrivals: list[float] = []
    for b, first in enumerate(range(0, cars, batch)):
        backend, engines = await _batch(first, min(batch, cars - first), jitter, key, anchors, seed=1000 + b)
        waiting = sum(e.outbox.depth() for e in engines)
        if waiting:
            raise RuntimeError(f"{waiting} items still waiting {AFTER_S:.0f}s after the return")
        if any(e.registration == "pending" for e in engines):
            raise RuntimeError("a registration did not complete")
        drain = max(drain, backend.last_write - backend.up_at)
        down += backend.down_attempts
        arrivals.extend(t - backend.up_at for t in backend.arrivals)
        for e in engines:
            e.db.conn.close()
    window = max(1.0, math.ceil(drain))
    for t in arrivals:
        if t <= drain:
            buckets[int(t)] += 1
    total = sum(buckets.values())
    return Outcome(peak_rps=float(max(buckets.values())), mean_rps=total / window, drain_s=drain,
                   attempts_while_down=down, requests=total)


def run() -> dict[str, float]:
    t = time.monotonic()
    ours = asyncio.run(_fleet(True, CARS, BATCH))
    plain = asyncio.run(_fleet(False, CARS, BATCH))
    print(f"   (simulated {2 * CARS} cars in {time.monotonic() - t:.1f}s; recovery requests: ours {ours.requests}, "
          f"no jitter {plain.requests})", flush=True)
    return {
        "fleet_recovery_peak_to_mean": ours.peak_rps / ours.mean_rps,
        "fleet_recovery_nojitter_peak_to_mean": plain.peak_rps / plain.mean_rps,
        "fleet_recovery_drain_s": ours.drain_s,
        "fleet_recovery_nojitter_drain_s": plain.drain_s,
        "fleet_recovery_peak_rps": ours.peak_rps,
        "fleet_recovery_nojitter_peak_rps": plain.peak_rps,
        "fleet_outage_attempts_per_car_hour": ours.attempts_while_down / CARS / (OUTAGE_S / 3600.0),
    }


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:>12.4g}")
