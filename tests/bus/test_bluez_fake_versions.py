"""The fake bluetoothd behaves like the BlueZ release it emulates (issue 13): property tables,
Properties.Set errors, the pairing property order, re-pairing, connect error names, Disconnected."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, get_property
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .bluez_helpers import ADAPTER, ADAPTER_PATH, DEVICE, RecordingAgent, SignalLog, bluez_call, dev_path, set_prop
from .bluez_versions import bluez_version  # noqa: F401  (every test: BlueZ 5.66 and current)

PHONE = "AA:BB:CC:00:00:07"
OTHER = "AA:BB:CC:00:00:08"


@pytest.fixture
async def fake(system_bus: PrivateBus) -> AsyncIterator[FakeBluez]:
    f = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(page_timeout=0.05))
    yield f
    await f.stop()


async def _agent(system_bus: PrivateBus) -> tuple[MessageBus, RecordingAgent]:
    bus = await MessageBus(bus_address=system_bus.address).connect()
    agent = RecordingAgent()
    bus.export("/test/agent", agent)
    await bluez_call(bus, "/org/bluez", "org.bluez.AgentManager1", "RegisterAgent", "os",
                     ["/test/agent", "DisplayYesNo"])
    return bus, agent


async def _error(coro: object) -> BusError:
    with pytest.raises(BusError) as err:
        await coro  # type: ignore[misc]
    return err.value


def test_version_parsing() -> None:
    from dashbridge.simulator.bluez.model import CURRENT_VERSION, parse_version

    assert parse_version("5.66") == (5, 66)
    assert parse_version("current") == parse_version(None) == CURRENT_VERSION
    with pytest.raises(ValueError):
        parse_version("5.50")
    with pytest.raises(ValueError):
        parse_version("five")


async def test_property_tables_by_release(fake: FakeBluez, client: MessageBus, bluez_version: str) -> None:  # noqa: F811
    fake.add_phone(VirtualPhone(PHONE), paired=True)
    (objs,) = await call(client, "org.bluez", "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    adapter = set(objs[ADAPTER_PATH][ADAPTER])
    await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
    (objs,) = await call(client, "org.bluez", "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    device = set(objs[dev_path(PHONE)][DEVICE])
    assert "PowerState" in adapter and "Bonded" in device  # both in 5.66 already
    if bluez_version == "5.66":
        assert not {"Connectable", "Manufacturer", "Version"} & adapter
        assert not {"CablePairing", "AdvertisingFlags"} & device
    else:
        assert {"Connectable", "Manufacturer", "Version"} <= adapter
        assert "CablePairing" in device


async def test_properties_set_errors_are_gdbus_ones(fake: FakeBluez, client: MessageBus, bluez_version: str) -> None:  # noqa: F811
    err = await _error(set_prop(client, ADAPTER_PATH, ADAPTER, "Powered", "s", "yes"))
    assert err.name == "org.freedesktop.DBus.Error.InvalidSignature"
    err = await _error(set_prop(client, ADAPTER_PATH, ADAPTER, "NoSuchThing", "b", True))
    assert err.name == "org.freedesktop.DBus.Error.UnknownProperty"
    err = await _error(set_prop(client, ADAPTER_PATH, ADAPTER, "Address", "s", "00:00:00:00:00:00"))
    assert err.name == "org.freedesktop.DBus.Error.PropertyReadOnly"
    if bluez_version == "5.66":  # Connectable arrived in 5.79
        err = await _error(set_prop(client, ADAPTER_PATH, ADAPTER, "Connectable", "b", False))
        assert err.name == "org.freedesktop.DBus.Error.UnknownProperty"
    else:
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Connectable", "b", False)
    await set_prop(client, ADAPTER_PATH, ADAPTER, "Powered", "b", False)
    err = await _error(set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True))
    assert (err.name, err.text) == ("org.bluez.Error.Failed", "Not Powered")


async def test_sdp_failing_after_bonding(fake: FakeBluez, system_bus: PrivateBus, client: MessageBus,
                                         bluez_version: str) -> None:  # noqa: F811
    bus, agent = await _agent(system_bus)
    try:
        log = await SignalLog.attach(client)
        fake.add_phone(VirtualPhone(PHONE))
        fake.set_sdp_fails(PHONE)
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
        assert await fake.phone_pair(PHONE) == "paired"
        await fake.wait_until(lambda: bool((fake.device_props(PHONE) or {}).get("Bonded")))
        await log.wait(lambda m: m.member == "PropertiesChanged" and "Bonded" in m.body[1])
        props = fake.device_props(PHONE) or {}
        # 5.66: Bonded signalled, Paired true when read but never signalled (it waits for SDP);
        # current: Paired and Bonded signalled; never resolved.
        assert props["Paired"] is True and props["Bonded"] is True
        signalled = {k for c, _ in log.props_changed(dev_path(PHONE)) for k in c}
        assert ("Paired" in signalled) is (bluez_version != "5.66")
        assert not props.get("ServicesResolved") and not props.get("UUIDs")
        # The agent was asked after Connected=true.
        changes = log.props_changed(dev_path(PHONE))
        assert changes[0][0] == {"Connected": True} and agent.calls[0][0] == "RequestConfirmation"
        # The car's Connect() cannot resolve the services either.
        err = await _error(bluez_call(client, dev_path(PHONE), DEVICE, "Connect"))
        assert (err.name, err.text) == ("org.bluez.Error.Failed", "br-connection-sdp-search")
    finally:
        bus.disconnect()


async def test_a_bonded_phone_pairing_again_changes_nothing(fake: FakeBluez, system_bus: PrivateBus,
                                                            client: MessageBus) -> None:
    bus, agent = await _agent(system_bus)
    try:
        fake.add_phone(VirtualPhone(PHONE), paired=True)
        await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
        log = await SignalLog.attach(client)
        fake.phone_forget_bond(PHONE)
        assert await fake.phone_pair(PHONE) == "paired"
        assert agent.calls and agent.calls[0][0] == "RequestConfirmation"
        changed = {k for c, _ in log.props_changed(dev_path(PHONE)) for k in c}
        assert not {"Paired", "Bonded", "UUIDs"} & changed
    finally:
        bus.disconnect()


async def test_connect_errors_by_release(fake: FakeBluez, client: MessageBus, bluez_version: str) -> None:  # noqa: F811
    # A phone offering no profile the car connects (only OPP): nothing to connect.
    fake.add_phone(VirtualPhone(PHONE, profiles=("opp",)), paired=True)
    await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
    err = await _error(bluez_call(client, dev_path(PHONE), DEVICE, "Connect"))
    if bluez_version == "5.66":
        assert (err.name, err.text) == ("org.bluez.Error.NotAvailable", "br-connection-profile-unavailable")
    else:
        assert err.name == "org.bluez.Error.BREDR.ProfileUnavailable"
    fake.add_phone(VirtualPhone(OTHER), paired=True)
    await fake.wait_until(lambda: fake.device_props(OTHER) is not None)
    await fake.set_in_range(OTHER, False)
    err = await _error(bluez_call(client, dev_path(OTHER), DEVICE, "Connect"))
    assert (err.name, err.text) == ("org.bluez.Error.Failed", "br-connection-page-timeout")


async def test_disconnect_is_one_change_and_signal_from_5_83(fake: FakeBluez, client: MessageBus,
                                                             bluez_version: str) -> None:  # noqa: F811
    fake.add_phone(VirtualPhone(PHONE), paired=True)
    await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
    await bluez_call(client, dev_path(PHONE), DEVICE, "Connect")
    log = await SignalLog.attach(client)
    await fake.phone_disconnect(PHONE)
    msg = await log.wait(lambda m: m.member == "PropertiesChanged" and "Connected" in m.body[1])
    assert set(msg.body[1]) == {"Connected", "ServicesResolved"}
    assert bool(log.of("Disconnected")) is (bluez_version != "5.66")
    assert await get_property(client, "org.bluez", dev_path(PHONE), DEVICE, "Connected") is False


async def test_a_clean_stop_powers_off_releases_removes_then_leaves(fake: FakeBluez, system_bus: PrivateBus) -> None:
    bus, agent = await _agent(system_bus)
    try:
        fake.add_phone(VirtualPhone(PHONE), paired=True, connected=True)
        await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
        order: list[str] = []

        def note(msg: Message) -> None:
            if msg.member == "PropertiesChanged" and msg.path == ADAPTER_PATH and "Powered" in msg.body[1]:
                order.append("powered-off")
            elif msg.member == "PropertiesChanged" and msg.path == dev_path(PHONE) and "Connected" in msg.body[1]:
                order.append("disconnected")
            elif msg.member == "Release":
                order.append("release")
            elif msg.member == "InterfacesRemoved":
                order.append("removed " + ("adapter" if msg.body[0] == ADAPTER_PATH else "device"))
            elif msg.member == "NameOwnerChanged" and msg.body[0] == "org.bluez" and not msg.body[2]:
                order.append("left")

        log = await SignalLog.attach(bus)  # the agent's connection: Release and the signals in one order
        bus.add_message_handler(note)
        await fake.go_down_cleanly()
        await log.wait(lambda m: m.member == "NameOwnerChanged" and not m.body[2])
        assert order == ["disconnected", "powered-off", "release", "removed device", "removed adapter", "left"]
        assert "Release" in agent.members()
        await fake.revive()
        await fake.wait_until(lambda: fake.adapter_props()["Powered"] is True)  # AutoEnable
    finally:
        bus.disconnect()
