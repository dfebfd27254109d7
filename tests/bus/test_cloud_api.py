"""org.dashbridge.Cloud1 and ``dashbridgectl cloud`` through the real dashbridged, against the fake
backend over real HTTPS with mutual TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, get_property
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.cloud import FakeCloud
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.navsvc import FakeNavigation

from ..conftest import SignalCollector
from ..unit.cloud_contract import assert_contract
from .cloud_helpers import NAME, PATH, cloud_call, ctl, daemon_config, props, wait_prop


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    c = FakeCloud(tmp_path / "cloud")
    await c.start()
    yield c
    await c.close()
    assert_contract(c)  # every request the daemon sent and every answer (docs/cloud-api.yaml)


async def test_disabled_by_default_explains_itself_and_does_nothing(
        daemon: DaemonProcess, client: MessageBus, system_bus: PrivateBus) -> None:
    p = await props(client)
    assert (p["Enabled"], p["BackendState"]) == (False, "disabled")
    assert list(p["Features"]["calls"]) == [True, "local", "local phone feature; the cloud never gates it"]
    with pytest.raises(BusError) as ei:
        await cloud_call(client, "Register")
    assert ei.value.name == "org.dashbridge.Error.NotReady" and "cloud.enabled" in ei.value.text
    health = await get_property(client, NAME, PATH, "org.dashbridge.Daemon1", "Health")
    assert tuple(health["cloud"]) == ("ok", "disabled")
    rc, out, _ = await ctl(system_bus, "cloud")
    assert rc == 0 and "cloud: disabled" in out and "calls" in out and "local" in out


async def test_register_link_consent_and_features_through_the_api(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: SignalCollector, system_bus: PrivateBus) -> None:
    daemon_factory(config=daemon_config(cloud))
    vin = next(iter(cloud.vehicles))
    await signals.wait(lambda m: m.member == "BackendStateChanged" and m.body[0] == "online", timeout=15)
    p = await wait_prop(client, "EntitlementsSource", lambda v: v == "backend")
    assert p["ApiVersion"] == 1 and p["EntitlementsVersion"] == 1
    enabled, source, reason = p["Features"]["remote_navigation"]
    assert enabled and source == "backend" and "entitled" in reason

    assert (await cloud_call(client, "Register")) == ["pending"]
    await signals.wait(lambda m: m.member == "RegistrationChanged" and m.body[0] == "registered")
    code = cloud.app_code(vin)
    assert (await cloud_call(client, "LinkAccount", "s", [code])) == ["pending"]
    await signals.wait(lambda m: m.member == "AccountLinkChanged" and m.body[0] == "linked")
    await cloud_call(client, "SetConsent", "sb", ["share_trips", True])
    p = await wait_prop(client, "OutboxDepth", lambda v: v == 0)
    assert p["Consents"] == {"share_trips": True}
    assert [len(cloud.effects_of(op, vin)) for op in ("register", "link", "consent")] == [1, 1, 1]

    with pytest.raises(BusError) as ei:
        await cloud_call(client, "LinkAccount", "s", ["no good!"])
    assert ei.value.name == "org.dashbridge.Error.InvalidArguments"

    # The backend withdraws a feature: the signal says so, with the reason.
    cloud.issue_entitlements(vin, {"remote_navigation": {"enabled": False}, "wifi_hotspot": {"enabled": True}})
    assert (await cloud_call(client, "SyncNow")) == ["started"]
    m = await signals.wait(lambda m: m.member == "FeatureChanged" and m.body[0] == "remote_navigation"
                           and m.body[1] is False)
    assert m.body[2] == "backend" and "not entitled (v2)" in m.body[3]

    rc, out, _ = await ctl(system_bus, "cloud")
    assert rc == 0
    assert "cloud: online" in out and "registration:  registered" in out and "account:       linked" in out
    assert "entitlements:  backend — version 2" in out
    lines = {ln.split()[0]: ln.split(None, 3)[1:] for ln in out.splitlines() if ln.startswith("  ")
             and len(ln.split()) > 3 and ln.split()[1] in ("on", "off")}
    assert lines["remote_navigation"][:2] == ["off", "backend"] and "not entitled (v2)" in lines["remote_navigation"][2]
    assert lines["calls"][:2] == ["on", "local"] and "the cloud never gates it" in lines["calls"][2]
    rc, out, _ = await ctl(system_bus, "--json", "cloud")
    data = json.loads(out)
    assert data["Features"]["wifi_hotspot"]["enabled"] is True and data["Registration"] == "registered"


async def test_ctl_actions(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, system_bus: PrivateBus) -> None:
    daemon_factory(config=daemon_config(cloud))
    vin = next(iter(cloud.vehicles))
    rc, out, err = await ctl(system_bus, "cloud", "register")
    assert rc == 0 and "registration: pending" in out, err
    rc, out, _ = await ctl(system_bus, "cloud", "link", cloud.app_code(vin))
    assert rc == 0 and "account: pending" in out
    rc, out, _ = await ctl(system_bus, "cloud", "consent", "share_trips", "off")
    assert rc == 0 and "share_trips: off" in out
    rc, out, _ = await ctl(system_bus, "cloud", "sync", "--wait", "10")
    assert rc == 0 and "sync: done" in out
    await wait_prop(client, "OutboxDepth", lambda v: v == 0)
    rc, out, _ = await ctl(system_bus, "cloud", "link", "x")
    assert rc == 1
    assert [len(cloud.effects_of(op, vin)) for op in ("register", "link", "consent")] == [1, 1, 1]


async def test_a_dead_backend_never_slows_the_api_or_local_features(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus) -> None:
    await cloud.set_listener("old", "blackhole")  # accepts, never answers: the worst kind
    t0 = time.monotonic()
    daemon_factory(config=daemon_config(cloud, request_timeout="3s"))
    assert time.monotonic() - t0 < 5.0
    for _ in range(5):
        t = time.monotonic()
        assert (await call(client, NAME, PATH, "org.dashbridge.Daemon1", "Ping", timeout=1.0)) == ["pong"]
        assert (await cloud_call(client, "Register")) == ["pending"]
        assert time.monotonic() - t < 0.5
        await asyncio.sleep(0.3)  # spread the probes over the time a request hangs
    p = await wait_prop(client, "BackendState", lambda v: v in ("degraded", "offline"))
    assert "no answer within 3s" in p["BackendReason"]
    assert p["Registration"] == "pending" and p["OutboxDepth"] == 1
    assert p["Features"]["messages"][0] is True


async def test_send_to_car_reaches_the_dashboard_navigation_and_is_acknowledged(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, system_bus: PrivateBus) -> None:
    nav = await FakeNavigation.start(system_bus.address)
    try:
        vin = next(iter(cloud.vehicles))
        did = cloud.send_to_car(vin, "Office", lat=48.137, lon=11.575)
        daemon_factory(config=daemon_config(cloud))
        async with asyncio.timeout(15):
            while not cloud.effects_of("ack", vin):
                cloud.request_event.clear()
                await cloud.request_event.wait()
        [ack] = cloud.effects_of("ack", vin)[:1]
        assert ack.detail == {"id": did, "result": "accepted"}
        await nav.wait_for(1)
        dest = nav.received[0].destination
        assert dest["label"] == "Office" and dest["source"] == "cloud" and abs(dest["latitude"] - 48.137) < 1e-6
        p = await props(client)
        assert list(p["SendToCar"]) == [0, ""]
    finally:
        await nav.stop()


async def test_restart_keeps_lease_registration_and_queue(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, tmp_path: Path) -> None:
    state = tmp_path / "state"
    d = daemon_factory(config=daemon_config(cloud), state_dir=state)
    await wait_prop(client, "EntitlementsSource", lambda v: v == "backend")
    await cloud.set_listener("old", "offline")
    await cloud_call(client, "Register")
    await cloud_call(client, "SetConsent", "sb", ["a", True])
    d.kill()
    d2 = daemon_factory(config=daemon_config(cloud), state_dir=state)
    p = await props(client)  # right after READY: the lease is there at once, from disk
    assert p["EntitlementsVersion"] == 1 and p["EntitlementsSource"] in ("cached", "backend")
    assert p["Features"]["remote_navigation"][0] is True
    assert p["Registration"] == "pending" and p["OutboxDepth"] == 2
    await cloud.set_listener("old", "up")
    await cloud_call(client, "SyncNow")
    await wait_prop(client, "OutboxDepth", lambda v: v == 0, timeout=15)
    assert len(cloud.effects_of("register")) == 1 and len(cloud.effects_of("consent")) == 1
    assert d2.proc is not None


async def _sync(cloud: FakeCloud, client: MessageBus) -> None:
    """SyncNow, and wait until the sync has read the destinations (its last request)."""
    n = len(cloud.requests("destinations"))
    await cloud_call(client, "SyncNow")
    async with asyncio.timeout(15):
        while len(cloud.requests("destinations")) == n:
            cloud.request_event.clear()
            await cloud.request_event.wait()


async def test_a_catch_up_of_500_destinations_in_small_pieces_reaches_navigation_once(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, system_bus: PrivateBus) -> None:
    """Issue 14: one page of 500 destinations at their longest fields (~420 KB), written in
    1,500-byte pieces with pauses: each reaches the navigation service once and is acknowledged
    exactly once ``accepted`` (the car took it) and once ``shown`` (the dashboard's navigation has
    it).  (Several pages: tests/unit/test_cloud_hostile.py's 1,200.)"""
    nav = await FakeNavigation.start(system_bus.address)
    try:
        vin = next(iter(cloud.vehicles))
        ids = {cloud.send_to_car(vin, f"Stop {i:03d} " + "l" * 191, lat=48.0 + i / 1000, lon=11.5,
                                 address=f"{i:03d} Long Road, " + "x" * 485) for i in range(500)}
        cloud.set_fault("pieces", piece=1500, op="destinations")
        daemon_factory(config=daemon_config(cloud))
        async with asyncio.timeout(150):
            while len(cloud.acks(vin, "shown")) < 500:
                cloud.request_event.clear()
                await cloud.request_event.wait()
        first = cloud.requests("destinations")[0]
        assert len(first.answer_body) > 400_000 and first.pieces > 250 and first.status == 200
        assert json.loads(first.answer_body)["next"] is None
        for result in ("accepted", "shown"):
            acked = [e.detail["id"] for e in cloud.acks(vin, result)]
            assert len(acked) == 500 and set(acked) == ids, result
        await nav.wait_for(500)
        refs = [d.destination.get("source_ref", "") for d in nav.received]
        assert len(nav.received) == 500, refs[:3]
        await cloud_call(client, "SyncNow")
        await wait_prop(client, "SendToCar", lambda v: list(v) == [0, ""])
        assert len(nav.received) == 500 and len(cloud.acks(vin)) == 1000
        assert len(cloud.requests("ack")) == 1000, "one request per (destination, state)"
    finally:
        await nav.stop()


async def test_acknowledgements_follow_the_driver_shown_accepted_declined_expired(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, system_bus: PrivateBus) -> None:
    """With cloud.confirm_destinations the dashboard offers each send-to-car destination; the
    backend hears accepted -> shown -> driver_accepted (or driver_declined, or expired), each
    exactly once, as the driver acts through org.dashbridge.Navigation1."""
    nav = await FakeNavigation.start(system_bus.address)
    try:
        vin = next(iter(cloud.vehicles))
        go = cloud.send_to_car(vin, "Office", lat=48.137, lon=11.575)
        no = cloud.send_to_car(vin, "Gym", address="1 High Street")
        late = cloud.send_to_car(vin, "Museum", lat=48.13, lon=11.58)
        cfg = daemon_config(cloud, confirm_destinations=True)
        cfg["navigation"] = {"intent_expiry": "10s"}
        daemon_factory(config=cfg)

        async def states(did: str, n: int) -> list[str]:
            async with asyncio.timeout(30):
                while len(cloud.acks(vin)) < n or not [e for e in cloud.acks(vin) if e.detail["id"] == did]:
                    cloud.request_event.clear()
                    await cloud.request_event.wait()
            return [e.detail["result"] for e in cloud.acks(vin) if e.detail["id"] == did]

        await states(late, 6)  # accepted + shown for each of the three
        (pending,) = await call(client, NAME, PATH, "org.dashbridge.Navigation1", "Pending", "", [])
        by_ref = {p["source_ref"].value: p["id"].value for p in pending}
        assert set(by_ref) == {go, no, late} and all(p["state"].value == "offered" for p in pending)
        assert await call(client, NAME, PATH, "org.dashbridge.Navigation1", "Accept", "s", [by_ref[go]]) == ["accepted"]
        await call(client, NAME, PATH, "org.dashbridge.Navigation1", "Dismiss", "s", [by_ref[no]])
        await nav.wait_for(1)
        assert nav.received[0].destination["source"] == "cloud"
        assert await states(late, 9) == ["accepted", "shown", "expired"]  # nobody acted on it
        assert await states(go, 9) == ["accepted", "shown", "driver_accepted"]
        assert await states(no, 9) == ["accepted", "shown", "driver_declined"]
        # Nothing more, nothing twice: delivery to the navigation service after driver_accepted
        # is "shown" again, already said; a sync lists none of them.
        await _sync(cloud, client)
        await wait_prop(client, "OutboxDepth", lambda v: v == 0)
        assert len(cloud.acks(vin)) == 9 and len(cloud.requests("ack")) == 9
        assert json.loads(cloud.requests("destinations")[-1].answer_body)["destinations"] == []
    finally:
        await nav.stop()


async def test_a_rejected_entitlement_document_is_reported_once_and_not_downloaded_again(
        cloud: FakeCloud, daemon_factory: Callable[..., DaemonProcess], client: MessageBus) -> None:
    vin = next(iter(cloud.vehicles))
    cloud.set_fault("bad_signature", op="entitlements")
    daemon_factory(config=daemon_config(cloud))
    await wait_prop(client, "BackendState", lambda v: v == "degraded")
    async with asyncio.timeout(15):
        while not cloud.reports(vin):
            cloud.request_event.clear()
            await cloud.request_event.wait()
    for _ in range(2):
        await _sync(cloud, client)
    [report] = cloud.reports(vin)
    assert report["reason"] == "bad_signature" and report["version"] == 2
    assert [r.status for r in cloud.requests("entitlements")] == [200, 304, 304]
    assert len(cloud.requests("entitlements_report")) == 1
    p = await props(client)
    assert p["BackendState"] == "degraded" and p["EntitlementsVersion"] == 0
