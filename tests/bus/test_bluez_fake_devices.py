"""The fake bluetoothd's devices, discovery, profiles and restarts behave like the real one
(reference §0.1, §1.4-§1.6, §7 items 5-8 and 10)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.dbus.errors import (
    AlreadyExists,
    AuthenticationError,
    BusError,
    DoesNotExist,
    Failed,
    InProgress,
    InvalidArguments,
    NotPermitted,
    NotReady,
)
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .bluez_helpers import (
    ADAPTER,
    ADAPTER_PATH,
    DEVICE,
    PROFILE_MANAGER,
    RecordingProfile,
    SignalLog,
    bluez_call,
    dev_path,
    get_prop,
    set_prop,
)
from .bluez_versions import bluez_version  # noqa: F401  (every test: BlueZ 5.66 and current)

PHONE = "AA:BB:CC:00:00:01"
HFP_HF = "0000111e-0000-1000-8000-00805f9b34fb"


@pytest.fixture
async def fake(system_bus: PrivateBus) -> AsyncIterator[FakeBluez]:
    f = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(page_timeout=0.1))
    f.add_phone(VirtualPhone(PHONE, name="Ada"), paired=True)
    yield f
    await f.stop()


async def test_connect_is_idempotent_and_disconnect_too(fake: FakeBluez, client: MessageBus) -> None:
    path = dev_path(PHONE)
    await bluez_call(client, path, DEVICE, "Disconnect")  # not connected: success (code; doc says NotConnected)
    await bluez_call(client, path, DEVICE, "Connect")
    assert await get_prop(client, path, DEVICE, "Connected") is True
    await bluez_call(client, path, DEVICE, "Connect")  # connected: success (doc says AlreadyConnected)
    assert len(fake.calls_of("Connect", PHONE)) == 2
    await bluez_call(client, path, DEVICE, "Disconnect")
    assert await get_prop(client, path, DEVICE, "Connected") is False


async def test_connect_error_vocabulary(fake: FakeBluez, client: MessageBus) -> None:
    path = dev_path(PHONE)
    await fake.set_in_range(PHONE, False)
    with pytest.raises(Failed) as err:
        await bluez_call(client, path, DEVICE, "Connect")
    assert err.value.text == "br-connection-page-timeout"
    await fake.set_in_range(PHONE, True)
    fake.phone_forget_bond(PHONE)
    with pytest.raises(Failed) as err:
        await bluez_call(client, path, DEVICE, "Connect")
    assert err.value.text == "br-connection-key-missing"
    await set_prop(client, ADAPTER_PATH, ADAPTER, "Powered", "b", False)
    with pytest.raises(NotReady):
        await bluez_call(client, path, DEVICE, "Connect")
    with pytest.raises(NotReady):
        await bluez_call(client, ADAPTER_PATH, ADAPTER, "StartDiscovery")
    with pytest.raises(Failed) as err:  # src/adapter.c property_set_discoverable
        await set_prop(client, ADAPTER_PATH, ADAPTER, "Discoverable", "b", True)
    assert err.value.text == "Not Powered"


async def test_disconnect_cancels_a_pending_connect(system_bus: PrivateBus, client: MessageBus) -> None:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(page_timeout=5.0))
    try:
        fake.add_phone(VirtualPhone(PHONE), paired=True)
        await fake.set_in_range(PHONE, False)
        pending = asyncio.ensure_future(bluez_call(client, dev_path(PHONE), DEVICE, "Connect"))
        await fake.wait_until(lambda: fake._devices[PHONE].op is not None)
        with pytest.raises(InProgress):
            await bluez_call(client, dev_path(PHONE), DEVICE, "Connect")
        await bluez_call(client, dev_path(PHONE), DEVICE, "Disconnect")
        with pytest.raises(Failed) as err:
            await pending
        assert err.value.text == "br-connection-canceled"
    finally:
        await fake.stop()


async def test_disconnect_cancels_a_pending_pair(system_bus: PrivateBus, client: MessageBus) -> None:
    from .bluez_helpers import AGENT_MANAGER, RecordingAgent

    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(agent_timeout=5.0))
    bus = await MessageBus(bus_address=system_bus.address).connect()
    try:
        agent = RecordingAgent()
        agent.answer = "hang"
        bus.export("/a", agent)
        await bluez_call(bus, "/org/bluez", AGENT_MANAGER, "RegisterAgent", "os", ["/a", "DisplayYesNo"])
        fake.add_phone(VirtualPhone(PHONE))
        await bluez_call(bus, ADAPTER_PATH, ADAPTER, "StartDiscovery")
        await fake.wait_until(lambda: fake.device_props(PHONE) is not None)
        pending = asyncio.ensure_future(bluez_call(bus, dev_path(PHONE), DEVICE, "Pair", timeout=8))
        await agent.wait_for("RequestConfirmation")
        await bluez_call(client, dev_path(PHONE), DEVICE, "Disconnect")
        with pytest.raises(AuthenticationError) as err:
            await pending
        assert err.value.name == "org.bluez.Error.AuthenticationCanceled"
        await agent.wait_for("Cancel")  # the outstanding agent request is void
    finally:
        bus.disconnect()
        await fake.stop()


async def test_property_changes_are_coalesced_and_ordered(fake: FakeBluez, client: MessageBus,
                                                         bluez_version: str) -> None:  # noqa: F811
    log = await SignalLog.attach(client)
    path = dev_path(PHONE)
    # Two changes of one interface in one loop iteration: one signal with the current values.
    fake.trust(PHONE, True)
    fake.trust(PHONE, False)
    fake.trust(PHONE, True)
    await bluez_call(client, path, DEVICE, "Connect")
    await bluez_call(client, path, DEVICE, "Disconnect")
    await log.wait(lambda m: m.member == "PropertiesChanged" and "Connected" in m.body[1]
                   and m.body[1]["Connected"].value is False)
    changes = log.props_changed(path)
    assert changes[0] == ({"Trusted": True}, [])
    # The link goes: ONE PropertiesChanged with ServicesResolved and Connected (every release).
    assert changes[-1][0] == {"ServicesResolved": False, "Connected": False}
    disconnected = log.of("Disconnected")
    if bluez_version == "5.66":
        assert not disconnected  # Device1.Disconnected exists from 5.83
    else:
        assert disconnected and disconnected[-1].body == ["org.bluez.Reason.Local",
                                                          "Connection terminated by local host"]


async def test_discovery_sessions_rssi_and_temporary_devices(system_bus: PrivateBus, client: MessageBus) -> None:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(temporary_timeout=0.3))
    other = await MessageBus(bus_address=system_bus.address).connect()
    try:
        log = await SignalLog.attach(client)
        fake.add_phone(VirtualPhone(PHONE, name="Ada", rssi=-61))
        await bluez_call(client, ADAPTER_PATH, ADAPTER, "StartDiscovery")
        with pytest.raises(InProgress):
            await bluez_call(client, ADAPTER_PATH, ADAPTER, "StartDiscovery")
        with pytest.raises(Failed) as err:
            await bluez_call(other, ADAPTER_PATH, ADAPTER, "StopDiscovery")
        assert err.value.text == "No discovery started"
        await bluez_call(other, ADAPTER_PATH, ADAPTER, "StartDiscovery")
        added = await log.wait(lambda m: m.member == "InterfacesAdded" and m.body[0] == dev_path(PHONE))
        assert unwrap(added.body[1][DEVICE])["RSSI"] == -61
        with pytest.raises(InvalidArguments):
            await bluez_call(client, ADAPTER_PATH, ADAPTER, "SetDiscoveryFilter", "a{sv}",
                             [{"Transport": Variant("s", "radio")}])
        # Discovery ends when the last session ends -- also when a client just leaves the bus.
        await bluez_call(client, ADAPTER_PATH, ADAPTER, "StopDiscovery")
        assert fake.adapter_props()["Discovering"] is True
        other.disconnect()
        await fake.wait_until(lambda: fake.adapter_props()["Discovering"] is False)
        inv = await log.wait(lambda m: m.member == "PropertiesChanged" and "RSSI" in m.body[2])
        assert inv.path == dev_path(PHONE)
        # A temporary (unpaired, untrusted, unconnected) device goes TemporaryTimeout after last seen.
        await log.wait(lambda m: m.member == "InterfacesRemoved" and m.body[0] == dev_path(PHONE), 3)
    finally:
        other.disconnect()
        await fake.stop()


async def test_profile_registration_rules_and_new_connection(fake: FakeBluez, system_bus: PrivateBus,
                                                             client: MessageBus) -> None:
    ofono = await MessageBus(bus_address=system_bus.address, negotiate_unix_fd=True).connect()
    rival = await MessageBus(bus_address=system_bus.address).connect()
    try:
        profile = RecordingProfile()
        ofono.export("/bluetooth/profile/hfp_hf", profile)
        opts = {"Version": Variant("q", 0x0107), "Features": Variant("q", 0), "Bogus": Variant("s", "ignored")}
        await bluez_call(ofono, "/org/bluez", PROFILE_MANAGER, "RegisterProfile", "osa{sv}",
                         ["/bluetooth/profile/hfp_hf", HFP_HF, opts])
        with pytest.raises(AlreadyExists):
            await bluez_call(ofono, "/org/bluez", PROFILE_MANAGER, "RegisterProfile", "osa{sv}",
                             ["/bluetooth/profile/hfp_hf", "0000111f-0000-1000-8000-00805f9b34fb", {}])
        with pytest.raises(NotPermitted) as err:
            await bluez_call(rival, "/org/bluez", PROFILE_MANAGER, "RegisterProfile", "osa{sv}",
                             ["/hfp", "hfp-hf", {}])
        assert err.value.text == "UUID already registered"
        with pytest.raises(InvalidArguments):
            await bluez_call(rival, "/org/bluez", PROFILE_MANAGER, "RegisterProfile", "osa{sv}",
                             ["/x", "0000111e", {"Channel": Variant("u", 7)}])
        with pytest.raises(DoesNotExist):
            await bluez_call(rival, "/org/bluez", PROFILE_MANAGER, "UnregisterProfile", "o", ["/bluetooth/profile/hfp_hf"])
        # The car connects the phone: the registrant gets NewConnection with a working socket.
        await bluez_call(client, dev_path(PHONE), DEVICE, "Connect")
        assert [c[0] for c in profile.connections] == [dev_path(PHONE)]
        _dev, fd, props = profile.connections[0]
        assert props == {"Version": 0x0107, "Features": 0}
        car_end = socket.socket(fileno=fd)
        phone_end = fake.profile_socket(PHONE, HFP_HF)
        assert phone_end is not None
        phone_end.sendall(b"AT+BRSF=0\r")
        car_end.settimeout(2)
        assert car_end.recv(64) == b"AT+BRSF=0\r"
        car_end.close()
        assert HFP_HF in fake.connected_profiles(PHONE)
        await bluez_call(client, dev_path(PHONE), DEVICE, "Disconnect")
        await fake.wait_until(lambda: profile.disconnections == [dev_path(PHONE)])
        # Profiles go with their owner.
        ofono.disconnect()
        await fake.wait_until(lambda: fake.profiles == [])
    finally:
        ofono.disconnect()
        rival.disconnect()


async def test_connect_profile_takes_the_remote_uuid_as_ofono_sends_it(fake: FakeBluez, system_bus: PrivateBus,
                                                                       client: MessageBus) -> None:
    """bluetoothd matches ConnectProfile's argument against the phone's (remote) service UUID:
    powering an oFono HFP modem makes ofonod ask for HFP AG 0000111f, not the local HF UUID."""
    ofono = await MessageBus(bus_address=system_bus.address, negotiate_unix_fd=True).connect()
    try:
        profile = RecordingProfile()
        ofono.export("/bluetooth/profile/hfp_hf", profile)
        await bluez_call(ofono, "/org/bluez", PROFILE_MANAGER, "RegisterProfile", "osa{sv}",
                         ["/bluetooth/profile/hfp_hf", HFP_HF, {"Version": Variant("q", 0x0107)}])
        await bluez_call(ofono, dev_path(PHONE), DEVICE, "ConnectProfile", "s",
                         ["0000111f-0000-1000-8000-00805f9b34fb"])
        await fake.wait_until(lambda: [c[0] for c in profile.connections] == [dev_path(PHONE)])
        assert HFP_HF in fake.connected_profiles(PHONE)
        socket.socket(fileno=profile.connections[0][1]).close()
    finally:
        ofono.disconnect()


async def test_restart_forgets_registrations_and_keeps_bonds(fake: FakeBluez, system_bus: PrivateBus,
                                                             client: MessageBus) -> None:
    log = await SignalLog.attach(client)
    await bluez_call(client, "/org/bluez", "org.bluez.AgentManager1", "RegisterAgent", "os", ["/a", "DisplayYesNo"])
    await bluez_call(client, dev_path(PHONE), DEVICE, "Connect")
    old_owner = fake.owner
    await fake.restart()
    await log.wait(lambda m: m.member == "NameOwnerChanged" and m.body[2] not in ("", old_owner))
    owners = [m.body[2] for m in log.of("NameOwnerChanged")]
    assert owners[0] == "" and owners[-1] not in ("", old_owner)  # dropped, then a new owner
    assert fake.agents == [] and fake.default_agent is None
    (objs,) = await bluez_call(client, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    dev = {k: v.value for k, v in objs[dev_path(PHONE)][DEVICE].items()}
    assert dev["Paired"] is True and dev["Connected"] is False
    # Nothing to unregister any more: the restart forgot the agent.
    with pytest.raises(DoesNotExist):
        await bluez_call(client, "/org/bluez", "org.bluez.AgentManager1", "UnregisterAgent", "o", ["/a"])


async def test_control_interface_drives_the_world(fake: FakeBluez, client: MessageBus) -> None:
    sim = ("org.dashbridge.Sim.Bluez", "/org/dashbridge/sim", "org.dashbridge.Sim.Bluez1")
    await call(client, *sim, "AddPhone", "ssuassb", ["AA:BB:CC:00:00:09", "Zed", 0, ["hfp"], "numeric", True])
    (phones,) = await call(client, *sim, "ListPhones")
    assert {p["Address"].value for p in phones} == {PHONE, "AA:BB:CC:00:00:09"}
    assert await call(client, *sim, "PhoneConnect", "s", ["AA:BB:CC:00:00:09"]) == [False]  # HFP only, no oFono
    await call(client, *sim, "SetPowered", "b", [False])
    assert fake.adapter_props()["Powered"] is False
    await call(client, *sim, "SetPowered", "b", [True])
    await call(client, *sim, "Restart", "b", [False])
    assert fake.owner is not None
    with pytest.raises(BusError) as err:
        await call(client, *sim, "SetInRange", "sb", ["00:00:00:00:00:00", True])
    assert err.value.name == "org.dashbridge.Sim.Error.InvalidArguments"


async def test_gatt_objects_as_bleak_expects_them(system_bus: PrivateBus, client: MessageBus) -> None:
    from dashbridge.simulator.bluez import GattCharacteristic, GattService

    battery = GattService("0000180f-0000-1000-8000-00805f9b34fb", [
        GattCharacteristic("00002a19-0000-1000-8000-00805f9b34fb", ("read", "notify"), b"\x64"),
        GattCharacteristic("00002a00-0000-1000-8000-00805f9b34fb", ("write-without-response",), b""),
    ])
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast())
    other = await MessageBus(bus_address=system_bus.address).connect()
    try:
        fake.add_phone(VirtualPhone(PHONE, gatt=[battery]), paired=True)
        log = await SignalLog.attach(client)
        await bluez_call(client, dev_path(PHONE), DEVICE, "Connect")
        (objs,) = await bluez_call(client, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        svc, level, name = (f"{dev_path(PHONE)}/service000a", f"{dev_path(PHONE)}/service000a/char000b",
                            f"{dev_path(PHONE)}/service000a/char000d")
        assert {p for p in objs if p.startswith(dev_path(PHONE) + "/")} == {svc, level, name}
        assert level[:-21] == dev_path(PHONE)  # bleak derives the device path by cutting 21 characters
        props = unwrap(objs[level]["org.bluez.GattCharacteristic1"])
        assert props["Service"] == svc and props["Flags"] == ["read", "notify"] and props["Handle"] == 0x0B
        assert "Notifying" not in unwrap(objs[name]["org.bluez.GattCharacteristic1"])  # no notify flag
        char = "org.bluez.GattCharacteristic1"
        assert await bluez_call(client, level, char, "ReadValue", "a{sv}", [{}]) == [b"\x64"]
        with pytest.raises(InvalidArguments) as err:
            await bluez_call(client, level, char, "ReadValue", "a{sv}", [{"offset": Variant("q", 5)}])
        assert err.value.text == "Invalid offset"
        with pytest.raises(NotPermitted) as err:
            await bluez_call(client, level, char, "WriteValue", "aya{sv}", [b"\x01", {"type": Variant("s", "request")}])
        assert err.value.text == "Write not permitted"
        with pytest.raises(NotPermitted) as err:
            await bluez_call(client, name, char, "ReadValue", "a{sv}", [{}])
        assert err.value.text == "Read not permitted"
        await bluez_call(client, name, char, "WriteValue", "aya{sv}", [b"car", {"type": Variant("s", "command")}])
        assert fake.gatt_writes == [(PHONE, "00002a00-0000-1000-8000-00805f9b34fb", b"car")]
        # Notifications: one PropertiesChanged(Value) each, even two in the same loop iteration.
        await bluez_call(client, level, char, "StartNotify")
        await bluez_call(other, level, char, "StartNotify")
        with pytest.raises(InProgress):
            await bluez_call(client, level, char, "StartNotify")
        mark = log.mark()
        assert fake.gatt_notify(PHONE, "00002a19-0000-1000-8000-00805f9b34fb", b"\x63")
        assert fake.gatt_notify(PHONE, "00002a19-0000-1000-8000-00805f9b34fb", b"\x62")
        await log.wait(lambda m: m.path == level and m.member == "PropertiesChanged"
                       and unwrap(m.body[1]).get("Value") == b"\x62")
        values = [unwrap(m.body[1])["Value"] for m in log.since(mark)
                  if m.path == level and "Value" in m.body[1]]
        assert values == [b"\x63", b"\x62"]
        await bluez_call(client, level, char, "StopNotify")
        with pytest.raises(Failed) as err:
            await bluez_call(client, level, char, "StopNotify")
        assert err.value.text == "No notify session started"
        # Disconnected: the objects stay (Cache = always), notifying stops, I/O fails "Not connected".
        await bluez_call(client, dev_path(PHONE), DEVICE, "Disconnect")
        assert await get_prop(client, level, char, "Notifying") is False
        with pytest.raises(Failed) as err:
            await bluez_call(client, level, char, "ReadValue", "a{sv}", [{}])
        assert err.value.text == "Not connected"
        # ... and across a bluetoothd restart.
        await fake.restart()
        (objs,) = await bluez_call(client, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        assert level in objs
    finally:
        other.disconnect()
        await fake.stop()
