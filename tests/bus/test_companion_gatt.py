"""The phone side of the companion GATT service (docs/ble-companion.md) in the fake BlueZ, driven
by the real bleak (``BleakClient``, BlueZ D-Bus backend) on a private system bus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import unwrap
from dashbridge.daemon.dbus.errors import InvalidArguments
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.companion import (
    ACK_UUID,
    DESTINATIONS_UUID,
    LEASE_UUID,
    SERVICE_UUID,
    VERSION_UUID,
    CompanionApp,
    parse_frame,
)
from dashbridge.simulator.phone import VirtualPhone

from .bluez_helpers import DEVICE, bluez_call, dev_path
from .bluez_versions import bluez_version  # noqa: F401  (every test: BlueZ 5.66 and current)

bleak = pytest.importorskip("bleak")
from bleak import BleakClient  # noqa: E402
from bleak.backends.bluezdbus import manager as bleak_manager  # noqa: E402
from bleak.backends.device import BLEDevice  # noqa: E402
from bleak.exc import BleakDBusError, BleakGATTProtocolError  # noqa: E402

PHONE = "AA:BB:CC:00:0C:01"
STRANGER = "AA:BB:CC:00:0C:02"
CCCD = "00002902-0000-1000-8000-00805f9b34fb"
OM = "org.freedesktop.DBus.ObjectManager"


@pytest.fixture
async def bleak_on_private_bus(system_bus: PrivateBus, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """bleak always uses the SYSTEM bus: point it at the private one; a fresh BlueZManager per test
    (bleak keeps one per event loop), closed at the end."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", system_bus.address)
    saved = dict(bleak_manager._global_instances)
    bleak_manager._global_instances.clear()
    yield
    for m in bleak_manager._global_instances.values():
        bus = m._bus
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), 2.0)
        if m._bus_watcher_task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(m._bus_watcher_task, 2.0)
    bleak_manager._global_instances.clear()
    bleak_manager._global_instances.update(saved)


@pytest.fixture
async def fake(system_bus: PrivateBus, bleak_on_private_bus: None) -> AsyncIterator[FakeBluez]:
    f = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast())
    yield f
    await f.stop()


def ble_device(address: str) -> BLEDevice:
    return BLEDevice(address, "Ada", {"path": dev_path(address), "props": {}})


async def connected_client(fake: FakeBluez, app: CompanionApp, *, paired: bool = True,
                           address: str = PHONE, gone: asyncio.Event | None = None) -> BleakClient:
    """A bleak client connected to the phone's app; ``gone`` is set when bleak hears it disconnect."""
    fake.add_phone(VirtualPhone(address, name="Ada", companion=app), paired=paired)
    assert await fake.le_connect(address)
    client = BleakClient(ble_device(address), timeout=10.0,
                         disconnected_callback=None if gone is None else (lambda _c: gone.set()))
    await client.connect()
    return client


async def read_document(client: BleakClient, uuid: str) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """The car's read (§3): chunk 0, then select-write + read for every further chunk."""
    first = bytes(await client.read_gatt_char(uuid))
    fmt, index, count, crc, payload = parse_frame(first)
    frames = [(fmt, index, count, crc)]
    doc = payload
    for i in range(1, count):
        await client.write_gatt_char(uuid, struct.pack("<H", i), response=True)
        f = parse_frame(bytes(await client.read_gatt_char(uuid)))
        frames.append(f[:4])
        doc += f[4]
    return doc, frames


async def test_version_and_service_layout(fake: FakeBluez, client: MessageBus) -> None:
    app = CompanionApp()
    car = await connected_client(fake, app)
    try:
        assert await car.read_gatt_char(VERSION_UUID) == b"\x01\x00"
        svc = car.services.get_service(SERVICE_UUID)
        assert svc is not None
        chars = {c.uuid: c for c in svc.characteristics}
        assert set(chars) == {VERSION_UUID, DESTINATIONS_UUID, ACK_UUID, LEASE_UUID}
        assert chars[DESTINATIONS_UUID].properties == ["read", "write", "notify"]
        assert [d.uuid for d in chars[DESTINATIONS_UUID].descriptors] == [CCCD]  # the CCCD, as bluetoothd
        assert chars[VERSION_UUID].descriptors == []
        (objs,) = await bluez_call(client, "/", OM, "GetManagedObjects")
        cccd = unwrap(objs[chars[DESTINATIONS_UUID].descriptors[0].obj[0]]["org.bluez.GattDescriptor1"])
        assert cccd["Characteristic"] == chars[DESTINATIONS_UUID].obj[0]
        assert ("Handle" in cccd) == fake.at_least(5, 69)  # src/gatt-client.c: Handle from 5.69
        props = unwrap(objs[chars[LEASE_UUID].obj[0]]["org.bluez.GattCharacteristic1"])
        assert props["NotifyAcquired"] is False and "WriteAcquired" not in props
        assert "NotifyAcquired" not in unwrap(objs[chars[ACK_UUID].obj[0]]["org.bluez.GattCharacteristic1"])
        assert SERVICE_UUID in fake.device_props(PHONE)["UUIDs"]  # type: ignore[index]
    finally:
        await car.disconnect()


async def test_version_is_configurable(fake: FakeBluez) -> None:
    car = await connected_client(fake, CompanionApp(version=(2, 3)))
    try:
        assert await car.read_gatt_char(VERSION_UUID) == b"\x02\x03"
    finally:
        await car.disconnect()


async def test_multi_chunk_lease_with_select_writes(fake: FakeBluez) -> None:
    lease = ("eyJhbGciOiJFZERTQSJ9." + "x" * 1200 + ".sig").encode()
    app = CompanionApp(lease=lease)
    car = await connected_client(fake, app)
    try:
        doc, frames = await read_document(car, LEASE_UUID)
        assert doc == lease
        assert [f[1] for f in frames] == [0, 1, 2]  # 503 + 503 + 206 bytes with an MTU of 517
        assert {f[2] for f in frames} == {3} and {f[3] for f in frames} == {zlib.crc32(lease)}
        assert {f[0] for f in frames} == {1}
        assert [s[2] for s in app.selects] == [1, 2]
        # The selection is per connection: a new link starts at chunk 0.
        await car.write_gatt_char(LEASE_UUID, b"\x02\x00", response=True)
        await car.disconnect()
        assert await fake.le_connect(PHONE)
        car = BleakClient(ble_device(PHONE), timeout=10.0)
        await car.connect()
        assert parse_frame(bytes(await car.read_gatt_char(LEASE_UUID)))[1] == 0
        assert len(set(app.links)) == 2
    finally:
        await car.disconnect()


async def test_empty_lease_is_count_zero(fake: FakeBluez) -> None:
    car = await connected_client(fake, CompanionApp())
    try:
        assert bytes(await car.read_gatt_char(LEASE_UUID)) == b"\x01\x00\x00\x00\x00\x00\x00\x00\x00"
    finally:
        await car.disconnect()


async def test_out_of_range_select_returns_chunk_zero(fake: FakeBluez) -> None:
    app = CompanionApp()
    app.add_destination("Grandma's", lat=51.50135, lon=-0.14189, id="g1")
    car = await connected_client(fake, app)
    try:
        await car.write_gatt_char(DESTINATIONS_UUID, struct.pack("<H", 7), response=True)
        _fmt, index, count, _crc, payload = parse_frame(bytes(await car.read_gatt_char(DESTINATIONS_UUID)))
        assert (index, count) == (0, 1)
        assert json.loads(payload)["destinations"][0]["id"] == "g1"
    finally:
        await car.disconnect()


async def test_bad_select_length_is_the_mapped_att_error(fake: FakeBluez, client: MessageBus) -> None:
    car = await connected_client(fake, CompanionApp())
    try:
        # ATT 0x0D (Invalid Attribute Value Length), as src/gatt-client.c create_gatt_dbus_error maps
        # it (InvalidArguments "Invalid Length"): bleak turns it back into the ATT code.
        with pytest.raises(BleakGATTProtocolError) as err:
            await car.write_gatt_char(DESTINATIONS_UUID, b"\x01", response=True)
        assert err.value.code == 0x0D
        with pytest.raises(BleakGATTProtocolError) as err:
            await car.write_gatt_char(LEASE_UUID, b"\x01\x00\x00", response=True)
        assert err.value.code == 0x0D
        (objs,) = await bluez_call(client, "/", OM, "GetManagedObjects")
        path = next(p for p, o in objs.items() if unwrap(o.get("org.bluez.GattCharacteristic1", {})).get("UUID")
                    == DESTINATIONS_UUID)
        with pytest.raises(InvalidArguments) as raw:
            await bluez_call(client, path, "org.bluez.GattCharacteristic1", "WriteValue", "aya{sv}",
                             [b"\x01", {"type": Variant("s", "request")}])
        assert raw.value.text == "Invalid Length"
    finally:
        await car.disconnect()


async def test_att_error_knob_and_unknown_code(fake: FakeBluez) -> None:
    app = CompanionApp()
    app.fail(LEASE_UUID, 0x80, count=1, on="read")
    car = await connected_client(fake, app)
    try:
        with pytest.raises(BleakGATTProtocolError) as err:  # "Operation failed with ATT error: 0x80"
            await car.read_gatt_char(LEASE_UUID)
        assert err.value.code == 0x80
        assert parse_frame(bytes(await car.read_gatt_char(LEASE_UUID)))[2] == 0  # once only
    finally:
        await car.disconnect()


async def test_destinations_ack_and_notification(fake: FakeBluez) -> None:
    app = CompanionApp()
    app.add_destination("Grandma's", lat=51.50135, lon=-0.14189, id="g1")
    app.add_destination("Dentist", address="12 High Street, Bath BA1 1AA", id="b2")
    car = await connected_client(fake, app)
    headers: list[bytes] = []
    got = asyncio.Event()

    def on_notify(_char: Any, data: bytearray) -> None:
        if len(data) == 9:  # a read also updates Value (bluetoothd); notifications are headers
            headers.append(bytes(data))
            got.set()
    try:
        doc, _ = await read_document(car, DESTINATIONS_UUID)
        listed = json.loads(doc)["destinations"]
        assert [d["id"] for d in listed] == ["g1", "b2"]
        assert listed[1]["address"].startswith("12 High") and "lat" not in listed[1]
        await car.start_notify(DESTINATIONS_UUID, on_notify)
        await car.write_gatt_char(ACK_UUID, json.dumps(
            {"ack": ["g1"], "rejected": [{"id": "b2", "reason": "test"}]}).encode(), response=True)
        assert app.pending_ids == [] and app.acked_ids == ["g1"] and app.rejected == [("b2", "test")]
        await asyncio.wait_for(got.wait(), 5)
        empty = app.document(DESTINATIONS_UUID)
        assert headers[-1] == struct.pack("<BHHI", 1, 0, 1, zlib.crc32(empty))
        # A new destination notifies too.
        got.clear()
        app.add_destination("Station", lat=52.0, lon=0.1, id="s3")
        await asyncio.wait_for(got.wait(), 5)
        assert parse_frame(headers[-1])[3] == zlib.crc32(app.document(DESTINATIONS_UUID))
    finally:
        await car.disconnect()


async def test_no_notification_without_subscription_or_link(fake: FakeBluez) -> None:
    app = CompanionApp()
    car = await connected_client(fake, app)
    await car.disconnect()
    app.add_destination("Nowhere", lat=1.0, lon=2.0)  # nobody connected: no signal, no error
    assert not fake.gatt_notify(PHONE, DESTINATIONS_UUID, b"\x01" * 9)


async def test_link_loss_and_stall(fake: FakeBluez) -> None:
    app = CompanionApp(lease=b"L" * 1100)
    app.drop_link_after(1)
    gone = asyncio.Event()
    car = await connected_client(fake, app, gone=gone)
    assert parse_frame(bytes(await car.read_gatt_char(LEASE_UUID)))[1:3] == (0, 3)
    await car.write_gatt_char(LEASE_UUID, b"\x01\x00", response=True)
    # The link goes under the read: bluetoothd answers it successfully with an empty value.
    assert await car.read_gatt_char(LEASE_UUID) == bytearray()
    await fake.wait_until(lambda: not fake.device_props(PHONE)["Connected"])  # type: ignore[index]
    await asyncio.wait_for(gone.wait(), 5)  # bleak hears Connected=false
    await car.disconnect()
    assert await fake.le_connect(PHONE)
    car = BleakClient(ble_device(PHONE), timeout=10.0)
    await car.connect()
    try:
        app.stall(LEASE_UUID, seconds=None)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(car.read_gatt_char(LEASE_UUID), 0.5)
        app.stall(LEASE_UUID, seconds=0.05)
        assert parse_frame(bytes(await car.read_gatt_char(LEASE_UUID)))[2] == 3
        # A read stalled by the phone is answered (empty) when the link drops under it.
        app.stall(LEASE_UUID, seconds=None)
        pending = asyncio.ensure_future(car.read_gatt_char(LEASE_UUID))
        await asyncio.sleep(0.1)  # the behaviour: a stalled read stays unanswered meanwhile
        assert not pending.done()
        await fake.set_in_range(PHONE, False)
        assert await asyncio.wait_for(pending, 5) == bytearray()
    finally:
        await car.disconnect()


async def test_document_changes_mid_read(fake: FakeBluez) -> None:
    app = CompanionApp(lease=b"L" * 1100)
    app.change_mid_read(LEASE_UUID, after=1)
    car = await connected_client(fake, app)
    try:
        _doc, frames = await read_document(car, LEASE_UUID)
        assert frames[0][3] != frames[1][3]  # the car sees another CRC and must start again
    finally:
        await car.disconnect()


async def test_gatt_objects_after_disconnect(fake: FakeBluez, client: MessageBus) -> None:
    car = await connected_client(fake, CompanionApp(), paired=False)
    prefix = dev_path(PHONE) + "/service"
    (objs,) = await bluez_call(client, "/", OM, "GetManagedObjects")
    assert any(p.startswith(prefix) for p in objs)
    await car.disconnect()
    # Cache = always (bluetoothd's default): the tree stays, notifying ends, I/O fails.
    (objs,) = await bluez_call(client, "/", OM, "GetManagedObjects")
    assert any(p.startswith(prefix) for p in objs)
    # [GATT] Cache = yes: an unpaired device's tree goes with the link (gatt_db_clear).
    fake.gatt_cache = "yes"
    assert await fake.le_connect(PHONE)
    await bluez_call(client, dev_path(PHONE), DEVICE, "Disconnect")
    (objs,) = await bluez_call(client, "/", OM, "GetManagedObjects")
    assert not any(p.startswith(prefix) for p in objs)


async def test_unbonded_phone_is_an_le_device_with_the_service(fake: FakeBluez, client: MessageBus) -> None:
    app = CompanionApp()
    fake.add_phone(VirtualPhone(STRANGER, name="Stranger", companion=app, discoverable=False))
    assert fake.device_props(STRANGER) is None
    assert fake.le_advertise(STRANGER)
    props = fake.device_props(STRANGER)
    assert props is not None
    assert props["UUIDs"] == [SERVICE_UUID] and props["Paired"] is False and props["Bonded"] is False
    assert await fake.le_connect(STRANGER)
    (objs,) = await bluez_call(client, "/", OM, "GetManagedObjects")
    services = [unwrap(o["org.bluez.GattService1"])["UUID"] for p, o in objs.items()
                if p.startswith(dev_path(STRANGER)) and "org.bluez.GattService1" in o]
    assert services == [SERVICE_UUID]
    dev = unwrap(objs[dev_path(STRANGER)][DEVICE])
    assert dev["Connected"] and dev["ServicesResolved"] and not dev["Bonded"]
    # A car that read anyway would meet the app's encryption requirement (ATT 0x05, "Not paired").
    car = BleakClient(ble_device(STRANGER), timeout=10.0)
    await car.connect()
    try:
        with pytest.raises(BleakDBusError) as err:
            await car.read_gatt_char(VERSION_UUID)
        assert (err.value.dbus_error, err.value.dbus_error_details) == ("org.bluez.Error.NotPermitted", "Not paired")
        assert app.reads == []
    finally:
        await car.disconnect()


async def test_at_most_fifty_listed_oldest_first(fake: FakeBluez) -> None:
    app = CompanionApp()
    for i in range(60):
        app.add_destination(f"Place {i}", lat=1.0, lon=float(i), id=f"p{i}")
    car = await connected_client(fake, app)
    try:
        doc, frames = await read_document(car, DESTINATIONS_UUID)
        assert zlib.crc32(doc) == frames[0][3] and len(frames) > 1
        assert [d["id"] for d in json.loads(doc)["destinations"]] == [f"p{i}" for i in range(50)]
    finally:
        await car.disconnect()


async def test_a_scanning_car_sees_the_app_advertising(fake: FakeBluez, client: MessageBus) -> None:
    fake.add_phone(VirtualPhone(STRANGER, name="Stranger", companion=CompanionApp(), discoverable=False))
    fake.add_phone(VirtualPhone(PHONE, name="Quiet", discoverable=False))  # no app: not advertising
    await bluez_call(client, "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery")
    await fake.wait_until(lambda: fake.device_props(STRANGER) is not None)
    props = fake.device_props(STRANGER)
    assert props is not None and SERVICE_UUID in props["UUIDs"] and "RSSI" in props and not props["Paired"]
    assert fake.device_props(PHONE) is None


async def test_bleak_connects_a_bonded_phone_itself(fake: FakeBluez) -> None:
    app = CompanionApp()
    fake.add_phone(VirtualPhone(PHONE, name="Ada", companion=app), paired=True)
    car = BleakClient(ble_device(PHONE), timeout=10.0)
    await car.connect()  # Device1.Connect, then ServicesResolved
    try:
        assert fake.calls_of("Connect", PHONE)
        assert await car.read_gatt_char(VERSION_UUID) == b"\x01\x00"
        assert app.links and app.reads[-1].link == app.links[-1]
    finally:
        await car.disconnect()
