"""Power loss while the outbox is busy: dashbridged is SIGKILLed at random moments, 50 times, while
the dashboard keeps queueing consents and the backend answers slowly.  Afterwards every request
the API acknowledged has reached the backend, and nothing had a second effect."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.errors import BusError
from dashbridge.simulator.cloud import FakeCloud
from dashbridge.simulator.daemonproc import DaemonProcess

from ..unit.cloud_contract import assert_contract
from .cloud_helpers import cloud_call, daemon_config, wait_prop

KILLS = 50
PER_ROUND = 2  # consents queued per life (the outbox holds at most 64 different consents)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    c = FakeCloud(tmp_path / "cloud")
    await c.start()
    yield c
    await c.close()
    assert_contract(c)  # every request the daemon sent and every answer (docs/cloud-api.yaml)


@pytest.mark.timeout(150)
async def test_sigkill_fifty_times_loses_nothing_and_duplicates_nothing(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, tmp_path: Path) -> None:
    rng = random.Random(2014)
    vin = next(iter(cloud.vehicles))
    # Slow answers (acted on, answer still in flight) make the kills land mid-request.
    cloud.set_fault("slow", delay=0.04)
    cfg = daemon_config(cloud, retry={"base_delay": "50ms", "max_delay": "1s", "breaker_threshold": 1000})
    state = tmp_path / "state"
    acked: list[str] = []  # the API returned: committed
    tried: list[str] = []
    registered = linked = False
    link_code = cloud.app_code(vin)
    t_start = time.monotonic()
    for round_no in range(KILLS):
        d = daemon_factory(config=cfg, state_dir=state)
        kill_at = time.monotonic() + rng.uniform(0.1, 0.75)
        n = 0
        try:
            if not registered:
                await cloud_call(client, "Register")
                registered = True
            if not linked and round_no >= 2:
                await cloud_call(client, "LinkAccount", "s", [link_code])
                linked = True
            while n < PER_ROUND:
                name = f"r{round_no}_{n}"
                n += 1
                tried.append(name)
                await cloud_call(client, "SetConsent", "sb", [name, n % 2 == 0])
                acked.append(name)
                await asyncio.sleep(rng.uniform(0.0, 0.05))  # the dashboard's pace, not a readiness wait
        except BusError as exc:
            raise AssertionError(f"the API refused a consent: {exc}") from exc
        # The kill lands at a random moment: while importing, sending, waiting for an answer,
        # committing what the answer said, or idle.
        left = kill_at - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
        d.kill()
    elapsed_kills = time.monotonic() - t_start

    daemon_factory(config=cfg, state_dir=state)
    cloud.clear_faults()
    await cloud_call(client, "SyncNow")
    p = await wait_prop(client, "OutboxDepth", lambda v: v == 0, timeout=30)
    assert p["Registration"] == "registered" and p["AccountLink"] == "linked"

    effects = Counter(e.detail["name"] for e in cloud.effects_of("consent", vin))
    assert len(acked) == KILLS * PER_ROUND
    lost = [name for name in acked if effects[name] == 0]
    assert lost == [], f"{len(lost)} acknowledged consents never reached the backend"
    twice = {name: c for name, c in effects.items() if c > 1}
    assert twice == {}, "a consent had a second effect"
    assert set(effects) <= set(tried)
    assert len(cloud.effects_of("register", vin)) == 1
    assert len(cloud.effects_of("link", vin)) == 1
    keys = [e.key for e in cloud.effects]
    assert len(keys) == len(set(keys))
    replays = sum(1 for r in cloud.log if r.replayed)
    print(f"{KILLS} kills in {elapsed_kills:.1f}s; {len(acked)} consents acknowledged; {replays} retries "
          "were recognised by their idempotency key")
