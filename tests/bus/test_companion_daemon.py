"""The driver's phone as a courier (docs/ble-companion.md), end to end: the real ``dashbridged``
(with the real ``bleak`` as its GATT client) against the fake BlueZ serving the phone's companion
app, on private buses; what the driver sees on the dashboard (``org.dashbridge``), what the phone
app saw, what reached the navigation service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dashbridge.simulator.companion import ACK_UUID, LEASE_UUID, CompanionApp
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import Event, World, WorldSpec

ALICE = "AA:BB:CC:DD:EE:01"
STRANGER = "AA:BB:CC:DD:EE:09"
DEADLINE_S = 20.0
FAST = {"companion": {"retry_base": "100ms", "retry_max": "500ms"}}


def _offered(ev: Event, source: str = "companion") -> bool:
    return ev.short == "Navigation1.IntentOffered" and ev.named["intent"]["source"] == source


async def _until(w: World, cond: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> None:
    """``cond`` on the phone's side (its app, its link), re-checked at every change of the fake
    BlueZ (a GATT read or write, a property)."""
    try:
        await w.fake("bluez").wait_until(cond, timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


async def _logged(w: World, text: str, timeout: float = DEADLINE_S) -> None:
    """A line in the daemon's log (another process's file: nothing to wait on but the file)."""
    end = time.monotonic() + timeout
    assert w.daemon is not None
    while text not in w.daemon.log():
        assert time.monotonic() < end, f"not logged within {timeout}s: {text}"
        await asyncio.sleep(0.02)


async def _cloud(w: World, name: str, want: Callable[[Any], bool]) -> Any:
    """A Cloud1 property once ``want`` holds: now, or at its next PropertiesChanged."""
    dash = w.dashboard
    assert dash is not None
    mark = dash.mark
    value = await dash.get(f"Cloud1.{name}")
    if want(value):
        return value
    ev = await dash.wait_for(lambda e: e.short == "Cloud1.PropertiesChanged" and name in e.named["changed"]
                             and want(e.named["changed"][name]), DEADLINE_S, mark)
    return ev.named["changed"][name]


async def _world(*phones: VirtualPhone, config: dict[str, Any] | None = None,
                 navigation: dict[str, Any] | None = None) -> World:
    w = World(WorldSpec(phones=list(phones), config={**FAST, **(config or {})},
                        navigation=navigation if navigation is not None else {"running": True}))
    await w.start()
    return w


@pytest.fixture
async def alice_world() -> AsyncIterator[World]:
    w = await _world(VirtualPhone(ALICE, name="Alice's Pixel", bonded=True, companion=CompanionApp()))
    try:
        yield w
    finally:
        await w.stop()
        assert "Traceback" not in w.daemon_log


async def test_a_destination_picked_on_the_phone_is_offered_acknowledged_and_navigated_to_once(
        alice_world: World) -> None:
    w = alice_world
    dash = w.dashboard
    assert dash is not None
    app: CompanionApp = w.companion_app(ALICE)
    mark = dash.mark
    did = w.companion_send_destination(ALICE, "Grandma's", lat=51.50135, lon=-0.14189)
    ev = await dash.wait_for(_offered, DEADLINE_S, mark)
    intent = ev.named["intent"]
    assert intent["label"] == "Grandma's" and intent["state"] == "offered"
    assert intent["source_ref"] == f"{ALICE}/{did}" and intent["phone"] == ALICE
    assert intent["latitude"] == pytest.approx(51.50135) and intent["longitude"] == pytest.approx(-0.14189)
    await _until(w, lambda: app.acked_ids == [did] and not app.destinations, "the phone saw its destination acknowledged")

    assert await dash.call("Navigation1.Accept", [intent["id"]]) == "accepted"
    nav = w.fake("navigation")
    await nav.wait_for(1, DEADLINE_S)
    assert nav.destinations[0]["label"] == "Grandma's"

    # An address-only destination is offered as a query; the car restarting changes nothing.
    mark = dash.mark
    did2 = w.companion_send_destination(ALICE, "Dentist", address="12 High Street, Bath BA1 1AA")
    ev = await dash.wait_for(_offered, DEADLINE_S, mark)
    assert ev.named["intent"]["query"] == "12 High Street, Bath BA1 1AA"
    await _until(w, lambda: app.acked_ids == [did, did2], "the second one acknowledged")
    await w.restart_daemon()
    pending = await dash.call("Navigation1.Pending")
    assert sorted(p["source_ref"] for p in pending) == [f"{ALICE}/{did2}"]
    assert len(nav.destinations) == 1 and app.acked_ids == [did, did2]


async def test_a_car_restarted_between_storing_and_acknowledging_offers_nothing_twice(alice_world: World) -> None:
    w = alice_world
    dash = w.dashboard
    assert dash is not None
    app: CompanionApp = w.companion_app(ALICE)
    app.fail(ACK_UUID, on="write")  # every acknowledgement fails: the car stored, the phone never heard
    mark = dash.mark
    did = w.companion_send_destination(ALICE, "Office", lat=51.52, lon=-0.09)
    await dash.wait_for(_offered, DEADLINE_S, mark)
    await _until(w, lambda: len(app.reads) >= 4, "the car tried again (the acknowledgement failed)")
    assert [d.id for d in app.destinations] == [did] and app.acked_ids == []

    await w.restart_daemon()
    app.clear_faults()
    await _until(w, lambda: app.acked_ids == [did], "acknowledged after the restart")
    pending = await dash.call("Navigation1.Pending")
    assert [p["source_ref"] for p in pending] == [f"{ALICE}/{did}"], "stored once, offered once"
    offers = [e for e in dash.events if _offered(e)]
    assert len({e.named["intent"]["id"] for e in offers}) == 1


async def test_a_phone_walking_away_mid_transfer_loses_nothing() -> None:
    app = CompanionApp(max_chunk=64)  # a long document in many small chunks
    w = await _world(VirtualPhone(ALICE, name="Alice's Pixel", bonded=True, companion=app))
    try:
        dash = w.dashboard
        assert dash is not None
        await dash.wait_for(lambda e: e.short == "Phones1.PhoneConnected", DEADLINE_S)
        await w.phone_disconnect(ALICE)
        ids = [w.companion_send_destination(ALICE, f"Stop {i:02d} on the long way round", lat=50 + i / 100, lon=-1.0)
               for i in range(12)]
        app.drop_link_after(5)  # gone after five chunk reads
        assert await w.phone_connect(ALICE)
        await _until(w, lambda: len(app.links) >= 1 and not w.phone_state(ALICE)["connected"], "the link dropped")
        assert app.acked_ids == [], "nothing acknowledged from a half-read document"
        assert await w.phone_connect(ALICE)
        await _until(w, lambda: app.acked_ids == ids, "everything acknowledged on the next connection")
        pending = await dash.call("Navigation1.Pending")
        assert sorted(p["source_ref"] for p in pending) == sorted(f"{ALICE}/{i}" for i in ids)
    finally:
        await w.stop()
    assert "Traceback" not in w.daemon_log


async def test_a_phone_not_paired_with_the_car_gets_nothing() -> None:
    stranger = VirtualPhone(STRANGER, name="Stranger", bonded=False, companion=CompanionApp())
    w = await _world(stranger)
    try:
        dash = w.dashboard
        assert dash is not None
        w.companion_send_destination(STRANGER, "Somewhere", lat=51.5, lon=-0.14)
        assert await w.le_connect(STRANGER)
        assert w.daemon is not None
        await _logged(w, "not paired with this car")
        app: CompanionApp = w.companion_app(STRANGER)
        assert app.reads == [] and app.acked_ids == [] and len(app.destinations) == 1
        assert await dash.call("Navigation1.Pending") == []
        assert STRANGER not in w.daemon.log(), "addresses are redacted in the log"
    finally:
        await w.stop()


async def test_a_lease_the_phone_relays_extends_features_while_the_cars_link_is_down(alice_world: World) -> None:
    w = alice_world
    dash = w.dashboard
    assert dash is not None

    v1 = await _cloud(w, "EntitlementsVersion", lambda v: v >= 1)
    await w.fake("backend").set_listener("old", "offline")
    app: CompanionApp = w.companion_app(ALICE)
    before = len(app.reads)
    w.companion_lease(ALICE)  # the app fetched a new lease from the backend; the car cannot
    await _cloud(w, "EntitlementsVersion", lambda v: v == v1 + 1)
    lease_reads = [r for r in app.reads[before:] if r.uuid == LEASE_UUID]
    assert lease_reads and len(lease_reads) == lease_reads[0].count, "each chunk of the new lease read once"
    assert await dash.get("Cloud1.EntitlementsSource") == "companion"
    features = await dash.get("Cloud1.Features")
    assert features["remote_navigation"][:2] == [True, "companion"]

    for kind, code in (("forged", "bad_signature"), ("rollback", "rollback"), ("vehicle", "wrong_vehicle"),
                       ("expired", "expired")):
        opts: dict[str, Any] = {"forged": {"forged": True, "version": v1 + 5}, "rollback": {"version": v1},
                                "vehicle": {"vehicle": "WVWZZZ00000000000", "version": v1 + 5},
                                "expired": {"expired": True, "version": v1 + 5}}[kind]
        w.companion_lease(ALICE, **opts)
        reason, _at = await _cloud(w, "LastRejection", lambda r, c=code: f"({c})" in r[0])
        assert "companion" in reason
        assert await dash.get("Cloud1.EntitlementsVersion") == v1 + 1, f"the held lease is kept ({kind})"
        assert await dash.get("Cloud1.EntitlementsSource") == "companion"
    assert w.daemon is not None and "already held" not in w.daemon.log(), "no lease read twice"


async def test_switched_off_the_car_opens_no_gatt_session() -> None:
    app = CompanionApp()
    app.add_destination("Home", lat=51.5, lon=-0.1)
    w = await _world(VirtualPhone(ALICE, name="Alice's Pixel", bonded=True, companion=app),
                     config={"companion": {"enabled": False}})
    try:
        dash = w.dashboard
        assert dash is not None
        await dash.wait_for(lambda e: e.short == "Phones1.PhoneConnected", DEADLINE_S)
        health = await dash.get("Daemon1.Health")
        assert health["companion"] == ["ok", "disabled (companion.enabled is false)"]
        assert app.reads == [] and len(app.destinations) == 1
    finally:
        await w.stop()


async def test_after_bluetoothd_restarts_the_companion_works_again(alice_world: World) -> None:
    """bleak keeps one object manager per loop and does not watch org.bluez's owner: after
    bluetoothd restarts (every object gone and back, the phone reconnected by the car) a new
    destination still arrives, once."""
    w = alice_world
    dash = w.dashboard
    assert dash is not None
    app: CompanionApp = w.companion_app(ALICE)
    mark = dash.mark
    first = w.companion_send_destination(ALICE, "Before", lat=51.1, lon=-0.1)
    await dash.wait_for(_offered, DEADLINE_S, mark)
    await _until(w, lambda: app.acked_ids == [first], "the first one acknowledged")
    mark = dash.mark
    await w.restart_bluez()
    await dash.wait_for(lambda e: e.short == "Phones1.PhoneConnected", DEADLINE_S, mark)
    second = w.companion_send_destination(ALICE, "After", lat=51.2, lon=-0.2)
    ev = await dash.wait_for(lambda e: _offered(e) and e.named["intent"]["label"] == "After", DEADLINE_S, mark)
    assert ev.named["intent"]["source_ref"] == f"{ALICE}/{second}"
    await _until(w, lambda: app.acked_ids == [first, second], "the second one acknowledged")
    offers = [e for e in dash.events if _offered(e)]
    assert sorted(e.named["intent"]["label"] for e in offers) == ["After", "Before"]
