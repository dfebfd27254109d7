"""A lease the driver's phone relays (docs/ble-companion.md §6) goes through the same checks as
the backend's: the engine against the fake backend over real HTTPS, on simulated time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashbridge.daemon.cloud.engine import CloudEngine
from tests.unit.cloud_env import DAY, Env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path, lease=10 * DAY)
    await e.cloud.start()
    yield e
    await e.stop()
    await e.cloud.close()


def _relayed(env: Env, version: int, *, vid: str | None = None, rogue: bool = False, age: float = 0.0) -> str:
    """A document as the companion app would carry it (signed by the backend unless ``rogue``),
    issued ``age`` seconds ago with a 10-day lease."""
    v = env.cloud.vehicles[env.vin]
    issued = env.clock.now() - age
    key = env.cloud.rogue_key if rogue else None
    return env.cloud._sign(v, version, issued + 10 * DAY, vid or env.vin, env.cloud.active_kid, key=key,
                           issued_at=issued)


async def _offline_engine(env: Env) -> CloudEngine:
    eng = await env.start(grace=1 * DAY, offline_policy={"remote_navigation": False})
    assert eng.held is not None and eng.held.version == 1
    await env.cloud.set_listener("old", "offline")  # the car's own link is down from now on
    return eng


async def test_a_relayed_newer_lease_extends_features_while_the_car_is_offline(env: Env) -> None:
    eng = await _offline_engine(env)
    await env.advance(10 * DAY + 2 * DAY)  # the backend's v1 and its grace are over
    assert not eng.features["remote_navigation"].enabled
    outcome, detail = eng.take_relayed(_relayed(env, 2), "companion")
    assert (outcome, detail) == ("accepted", "version 2")
    assert eng.held is not None and eng.held.version == 2
    assert eng.lease.source == "companion"
    st = eng.features["remote_navigation"]
    assert st.enabled and st.source == "companion"
    # The same document again is nothing new; a restart keeps who brought it.
    assert eng.take_relayed(_relayed(env, 2), "companion")[0] == "held"
    await env.stop()
    eng = await env.start(grace=1 * DAY, offline_policy={"remote_navigation": False})
    assert eng.held is not None and eng.held.version == 2 and eng.courier == "companion"


@pytest.mark.parametrize("kind", ["forged", "rollback", "other-vehicle", "expired"])
async def test_a_bad_relayed_lease_is_rejected_and_the_held_one_kept(env: Env, kind: str) -> None:
    eng = await _offline_engine(env)
    assert eng.take_relayed(_relayed(env, 3), "companion")[0] == "accepted"
    doc = {"forged": lambda: _relayed(env, 9, rogue=True),
           "rollback": lambda: _relayed(env, 2),
           "other-vehicle": lambda: _relayed(env, 9, vid="WVWZZZ00000000000"),
           "expired": lambda: _relayed(env, 9, age=11 * DAY)}[kind]()
    outcome, reason = eng.take_relayed(doc, "companion")
    assert outcome == "rejected", reason
    code = {"forged": "bad_signature", "rollback": "rollback", "other-vehicle": "wrong_vehicle", "expired": "expired"}
    assert f"({code[kind]})" in reason and "from the companion" in reason
    assert eng.held is not None and eng.held.version == 3
    assert eng.features["remote_navigation"].source == "companion"
    assert eng.last_rejection[0] == reason
    assert env.kinds("rejected")[-1] == (reason,)


async def test_the_backend_confirming_the_relayed_lease_makes_it_the_backends(env: Env) -> None:
    eng = await env.start()
    await env.cloud.set_listener("old", "offline")
    v2 = env.cloud.issue_entitlements(env.vin)  # the app fetched it; the car could not
    jws = env.cloud.vehicles[env.vin].ent_jws
    assert eng.take_relayed(jws, "companion") == ("accepted", f"version {v2}")
    assert eng.lease.source == "companion"
    await env.cloud.set_listener("old", "up")
    eng.sync_now()
    await env.advance(2.0)
    assert eng.held is not None and eng.held.version == v2
    assert (eng.lease.source, eng.courier, eng.backend_state, eng.confirmed) == ("backend", "", "online", True), [r.op for r in env.cloud.log]
