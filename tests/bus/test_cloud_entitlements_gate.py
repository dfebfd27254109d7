"""Entitlements gate what they name, in the car, through the public interfaces (dashbridgectl):
a gated local feature (calls) is refused with NotEntitled once the lease and grace have ended and
the offline policy says off, and comes back with a fresh document; send-to-car is not offered
while remote_navigation is off, and each destination is acknowledged "not_entitled" instead."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import World, WorldSpec

ALICE = "AA:BB:CC:DD:EE:01"
CTL = [sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())"]
DAY = 86400.0


@dataclass
class Ran:
    rc: int
    out: str
    err: str


async def ctl(w: World, *args: str) -> Ran:
    proc = await asyncio.create_subprocess_exec(*CTL, *args, env=dict(os.environ, **w.env()),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def _feature(w: World, name: str, enabled: bool, timeout: float = 20.0) -> None:
    assert w.dashboard is not None
    async with asyncio.timeout(timeout):
        while True:
            mark = w.dashboard.mark
            feats = await w.dashboard.get("Cloud1.Features")
            if name in feats and bool(feats[name][0]) is enabled:
                return
            await w.dashboard.wait_for(lambda e: e.member == "FeatureChanged" and e.args[0] == name, timeout,
                                       since=mark)


async def _dial_and_hang_up(w: World) -> Ran:
    r = await ctl(w, "dial", "+44 20 7946 0958")
    if r.rc == 0:
        calls = json.loads((await ctl(w, "--json", "calls")).out)["calls"]
        for c in calls:
            assert (await ctl(w, "hangup", c["Id"])).rc == 0  # ending a call is never refused
    return r


async def test_a_gated_feature_turns_off_after_grace_and_back_with_a_fresh_document() -> None:
    spec = WorldSpec(
        phones=[VirtualPhone(ALICE, name="Alice's Pixel", bonded=True)],
        config={"cloud": {"gated_local_features": ["calls"], "grace": "1d",
                          "offline_policy": {"calls": False, "remote_navigation": False}}},
        backend={"lease": 2 * DAY, "features": {"calls": {"enabled": True}, "remote_navigation": {"enabled": True}}},
    )
    w = World(spec)
    await w.start()
    try:
        assert w.dashboard is not None
        backend = w.fake("backend")
        vin = w.vehicle_id
        await _feature(w, "calls", True)
        await w.dashboard.wait_for(lambda e: e.short == "Calls1.PhoneChanged" and e.named["status"].get("Ready"),
                                   20.0)
        assert (await _dial_and_hang_up(w)).rc == 0

        # The backend goes away for longer than the lease and the grace period.
        await backend.set_listener("old", "offline")
        await w.advance(2 * DAY + 1 * DAY + 3600)
        await _feature(w, "calls", False)
        refused = await _dial_and_hang_up(w)
        assert refused.rc == 1
        assert refused.err.startswith("dashbridgectl: NotEntitled: calls is switched off"), refused.err
        assert "offline policy" in refused.err
        shown = await ctl(w, "cloud")
        assert "calls" in shown.out and "gated by cloud.gated_local_features" in shown.out

        # While it is away, the driver sends a destination from the app; the backend comes back
        # with a fresh document that still withholds send-to-car but grants calls again.
        backend.issue_entitlements(vin, {"calls": {"enabled": True}, "remote_navigation": {"enabled": False}})
        did = backend.send_to_car(vin, "Pat's office", lat=51.5135, lon=-0.0890)
        await backend.set_listener("old", "up")
        assert (await ctl(w, "cloud", "sync")).rc == 0
        await _feature(w, "calls", True)
        assert (await _dial_and_hang_up(w)).rc == 0

        async with asyncio.timeout(30):
            while not backend.effects_of("ack", vin):
                backend.request_event.clear()
                try:  # the next request the car sends
                    await asyncio.wait_for(backend.request_event.wait(), 5)
                except TimeoutError:
                    await w.advance(60)  # nothing due yet: the outbox's backoff runs on the cloud clock
        (ack,) = backend.effects_of("ack", vin)
        assert ack.detail == {"id": did, "result": "rejected"}
        bodies = [json.loads(r.request_body) for r in backend.requests("ack") if r.request_body]
        reasons = [b.get("reason") or b["acks"][0]["reason"] for b in bodies]
        assert reasons and all(r.startswith("not_entitled: remote_navigation is off") for r in reasons), reasons
        assert list(w.fake("navigation").destinations) == []  # never offered to the driver
    finally:
        await w.stop()
