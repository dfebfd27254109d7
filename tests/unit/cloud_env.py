"""Shared set-up for the cloud tests: the fake backend over real HTTPS on 127.0.0.1 and the
daemon's cloud engine on a simulated clock, on a real SQLite file."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from dashbridge.daemon.clock import SimClock
from dashbridge.daemon.cloud.engine import CloudEngine, EngineSettings
from dashbridge.daemon.cloud.entitlements import load_anchors
from dashbridge.daemon.cloud.https import AiohttpTransport, make_ssl_context
from dashbridge.daemon.cloud.outbox import CloudDb
from dashbridge.daemon.cloud.policy import Backoff
from dashbridge.daemon.services import Destination
from dashbridge.daemon.store import DB_NAME, Store
from dashbridge.simulator.cloud import FakeCloud

T0 = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0


class FakeNav:
    """A NavigationSink: records hand-offs; can fail the first ``fail`` of them."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.accepted: list[tuple[Destination, str, str]] = []

    async def offer(self, destination: Destination, *, source: str, source_ref: str,
                    phone: str | None = None) -> str:
        raise AssertionError("the cloud hands off with accept_external, not offer")

    async def accept_external(self, destination: Destination, *, source: str, source_ref: str) -> str:
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("navigation store busy")
        self.accepted.append((destination, source, source_ref))
        return f"intent-{len(self.accepted)}"


class Env:
    def __init__(self, tmp_path: Path, **cloud_kw: Any) -> None:
        self.tmp = tmp_path
        self.clock = SimClock(start=T0, expect_sleepers=1)
        self.cloud = FakeCloud(tmp_path / "cloud", now=self.clock.now, **cloud_kw)
        self.vin = next(iter(self.cloud.vehicles))
        self.nav: FakeNav | None = None
        self.engine: CloudEngine | None = None
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._task: asyncio.Task[None] | None = None
        self._transport: AiohttpTransport | None = None
        self._store: Store | None = None

    def settings(self, **kw: Any) -> EngineSettings:
        base: dict[str, Any] = {
            "vehicle_id": self.vin, "base_url": self.cloud.url, "request_timeout": 1.0, "startup_delay": 0.0,
            "sync_interval": HOUR, "retry": Backoff(1.0, HOUR), "breaker_threshold": 5,
            "breaker_cooldown": Backoff(60.0, 600.0), "grace": 30 * DAY, "clock_skew": 300.0,
        }
        base.update(kw)
        return EngineSettings(**base)

    async def start(self, seed: int = 1, **kw: Any) -> CloudEngine:
        cfg = self.cloud.daemon_config()
        self._store = Store(self.tmp / "state" / DB_NAME)
        eng = CloudEngine(self.settings(**kw), CloudDb(self._store.conn), self.clock, random.Random(seed),
                          navigation=lambda: self.nav)
        eng.subscribe(self._record)
        tls = cfg["tls"]
        self._transport = AiohttpTransport(make_ssl_context(tls["ca_file"], tls["cert_file"], tls["key_file"]),
                                           "dashbridge-test")
        anchors, problems = load_anchors(cfg["trust_anchors"])
        assert not problems
        eng.attach(self._transport, anchors)
        self.engine = eng
        self._task = asyncio.create_task(eng.run())
        await self.clock.settle()
        return eng

    async def stop(self) -> None:
        """Stop the engine as a crash would: cancel mid-whatever, keep only the database file."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self.engine = None

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)

    async def settle(self) -> None:
        await self.clock.settle()

    def _record(self, ev: Any) -> None:
        """Typed engine events, kept as (kind, fields) for the assertions."""
        from dataclasses import astuple

        kind = {"CloudFeatureChanged": "feature", "CloudBackendChanged": "backend",
                "CloudRegistrationChanged": "registration", "CloudLinkChanged": "link",
                "CloudDocumentRejected": "rejected", "CloudSyncFinished": "sync"}.get(type(ev).__name__)
        if kind == "feature":
            from dashbridge.daemon.cloud.entitlements import FeatureState

            self.events.append((kind, (ev.name, FeatureState(ev.enabled, ev.source, ev.reason))))
        elif kind is not None:
            self.events.append((kind, astuple(ev)))

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        return [a for k, a in self.events if k == kind]
