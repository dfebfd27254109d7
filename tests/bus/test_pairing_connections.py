"""Connection management through the daemon against the fake bluetoothd: auto-connect by priority,
budgets, adoption, roles and max_connected, key-missing, adapter power, forget."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.errors import BusError
from dashbridge.daemon.store import DB_NAME
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone

from .bluez_versions import bluez_version  # every test: BlueZ 5.66 and current
from .pairing_helpers import (
    ADA,
    BOB,
    CY,
    bluez,
    fresh,
    is_signal,
    list_phones,
    phones_call,
    props_changed,
    start_daemon,
    state_is,
    wait_ready,
)

__all__ = ["bluez", "bluez_version"]


async def _up(factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any, **bt: Any) -> DaemonProcess:
    d = start_daemon(factory, **bt)
    await wait_ready(client, signals)
    return d


def _insert(db: sqlite3.Connection, table: str, **given: Any) -> None:
    """A row with ``given`` values and a placeholder in every other required column (the other
    components own these tables and may add columns)."""
    values = dict(given)
    for _cid, name, ctype, notnull, default, pk in db.execute(f"PRAGMA table_info({table})"):
        if name in values or not notnull or default is not None or (pk and ctype.upper() == "INTEGER"):
            continue
        values[name] = 1 if ctype.upper() in ("INTEGER", "REAL") else ("x" if ctype.upper() == "TEXT" else b"x")
    cols = ", ".join(values)
    db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))


def _paired(fake: FakeBluez, *addresses: str, connected: bool = False) -> None:
    for i, addr in enumerate(addresses):
        fake.add_phone(VirtualPhone(addr, name=f"Phone {i + 1}"), paired=True, connected=connected)


async def test_autoconnect_in_priority_order_one_at_a_time(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, BOB, CY)
    await _up(daemon_factory, client, signals)
    # Phones paired before the daemon knew them are adopted in the order found; two may connect.
    await signals.wait(is_signal("PhoneConnected", ADA, "Phone 1", "primary"))
    await signals.wait(is_signal("PhoneConnected", BOB, "Phone 2", "secondary"))
    phones = await list_phones(client)
    assert [phones[a]["State"] for a in (ADA, BOB, CY)] == ["connected", "connected", "disconnected"]
    connects = bluez.calls_of("Connect")
    assert [c.address for c in connects] == [ADA, BOB]  # the third is not even tried (max_connected 2)
    assert connects[0].ended <= connects[1].started  # one at a time


async def test_already_connected_phones_are_adopted_not_reconnected(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA, "Phone 1", "primary"))
    assert bluez.calls_of("Connect") == []
    assert bluez.calls_of("Disconnect") == []


async def test_out_of_range_phone_costs_one_budget_then_the_next_is_tried(
        system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(page_timeout=30.0))
    try:
        _paired(fake, ADA, BOB)
        await fake.set_in_range(ADA, False)
        await _up(daemon_factory, client, signals, connect_budget="700ms")
        await signals.wait(is_signal("PhoneConnected", BOB, "Phone 2", "primary"), 5)
        first = fake.calls_of("Connect", ADA)[0]
        # The page was aborted at the budget (Disconnect cancels a pending Connect in bluetoothd).
        assert first.outcome == "org.bluez.Error.Failed: br-connection-canceled"
        assert 0.6 < first.ended - first.started < 2.0
        assert (await list_phones(client))[ADA]["State"] == "disconnected"
    finally:
        await fake.stop()


async def test_phone_that_forgot_the_car_needs_repair_not_retries(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA)
    bluez.phone_forget_bond(ADA)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("RepairNeeded", ADA, "Phone 1"))
    await signals.wait(state_is(ADA, "needs_repair"))
    assert len(bluez.calls_of("Connect", ADA)) == 1
    # Next trigger (adapter off and on): it is not paged again.
    back = fresh(signals, props_changed("State", "ready"))
    await bluez.set_powered(False)
    await signals.wait(props_changed("State", "off"))
    await bluez.set_powered(True)
    await signals.wait(back)
    phones = await list_phones(client)
    assert phones[ADA]["NeedsRepair"] is True and phones[ADA]["State"] == "needs_repair"
    assert len(bluez.calls_of("Connect", ADA)) == 1
    # The driver forgets it and pairs again: everything is back to normal.
    await phones_call(client, "Forget", "s", [ADA])
    await signals.wait(is_signal("PhoneForgotten", ADA))
    assert bluez.device_props(ADA) is None


async def test_adapter_off_disconnects_and_power_on_reconnects(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    await bluez.set_powered(False)
    await signals.wait(is_signal("PhoneDisconnected", ADA))
    assert (await list_phones(client))[ADA]["State"] == "unavailable"
    again = fresh(signals, is_signal("PhoneConnected", ADA))
    await bluez.set_powered(True)
    await signals.wait(again)
    assert len(bluez.calls_of("Connect", ADA)) == 1


async def test_link_loss_is_reported_with_its_reason(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                     client: MessageBus, signals: Any, bluez_version: str) -> None:
    _paired(bluez, ADA, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    await bluez.set_in_range(ADA, False)
    # Device1.Disconnected (BlueZ >= 5.83) says why; 5.66 sends Connected=false alone and nothing the
    # daemon did explains it: "disconnected".
    await signals.wait(is_signal("PhoneDisconnected", ADA, "disconnected" if bluez_version == "5.66" else "link_loss"))


async def test_disconnect_reasons_without_the_signal(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                     client: MessageBus, signals: Any) -> None:
    """Our own Disconnect() is "local" on every release (5.66: inferred, no Disconnected signal)."""
    _paired(bluez, ADA, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    await phones_call(client, "Disconnect", "s", [ADA])
    await signals.wait(is_signal("PhoneDisconnected", ADA, "local"))


async def test_connect_disconnect_and_the_phone_limit(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                      client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, BOB, CY)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", BOB))
    # The driver connects the third phone: the lowest-priority other phone makes room.
    await phones_call(client, "Connect", "s", [CY])
    await signals.wait(is_signal("PhoneDisconnected", BOB, "too_many_phones"))
    await signals.wait(is_signal("PhoneConnected", CY, "Phone 3", "secondary"))
    phones = await list_phones(client)
    assert (phones[ADA]["Role"], phones[BOB]["Role"], phones[CY]["Role"]) == ("primary", "", "secondary")
    await phones_call(client, "Disconnect", "s", [ADA])
    await signals.wait(is_signal("PhoneDisconnected", ADA, "local"))
    # With Ada gone, Cy is the primary phone now.
    await signals.wait(lambda m: is_signal("PhoneChanged", CY)(m) and m.body[1].get("Role") is not None
                       and m.body[1]["Role"].value == "primary")
    await phones_call(client, "Disconnect", "s", [ADA])  # already disconnected: fine
    with pytest.raises(BusError) as err:
        await phones_call(client, "Connect", "s", ["AA:BB:CC:DD:EE:99"])
    assert err.value.name == "org.dashbridge.Error.NotFound"


async def test_connect_errors_say_why(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                      client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA)
    await bluez.set_in_range(ADA, False)
    await _up(daemon_factory, client, signals)
    await bluez.wait_until(lambda: len(bluez.calls_of("Connect", ADA)) == 1)
    with pytest.raises(BusError) as err:
        await phones_call(client, "Connect", "s", [ADA])
    assert err.value.name == "org.dashbridge.Error.Failed" and "out of range" in err.value.text


async def test_priority_decides_the_primary_phone(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                  client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, BOB, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", BOB, "Phone 2", "secondary"))
    await phones_call(client, "SetPriority", "su", [BOB, 0])
    await signals.wait(lambda m: is_signal("PhoneChanged", BOB)(m) and "Role" in m.body[1]
                       and m.body[1]["Role"].value == "primary")
    await signals.wait(lambda m: is_signal("PhoneChanged", ADA)(m) and "Role" in m.body[1]
                       and m.body[1]["Role"].value == "secondary")
    phones = await list_phones(client)
    assert (phones[BOB]["Priority"], phones[ADA]["Priority"]) == (0, 1)
    assert [p["Address"] for p in phones.values()] == [BOB, ADA]


async def test_second_phone_pairs_while_one_is_connected(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA, "Phone 1", "primary"))
    await phones_call(client, "OpenPairingWindow", "u", [20])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(BOB, name="Bob"))
    pairing = asyncio.ensure_future(bluez.phone_pair(BOB))
    prompt = await signals.wait(is_signal("PromptRequested"))
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    assert await pairing == "paired"
    await signals.wait(is_signal("PhoneConnected", BOB, "Bob", "secondary"))
    phones = await list_phones(client)
    assert phones[ADA]["Role"] == "primary" and phones[ADA]["State"] == "connected"
    assert phones[BOB]["Priority"] == 1
    assert not [m for m in signals.messages if is_signal("PhoneDisconnected", ADA)(m)]


async def test_first_connection_after_pairing_is_retried(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada"))
    bluez.fail_next_connects(ADA, 2)  # the first two pages time out
    await phones_call(client, "OpenPairingWindow", "u", [20])
    await signals.wait(is_signal("DeviceFound", ADA))
    await phones_call(client, "Pair", "s", [ADA])
    prompt = await signals.wait(is_signal("PromptRequested"))
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    await signals.wait(is_signal("PairingFinished", ADA, True, ""))
    await bluez.wait_until(lambda: len(bluez.calls_of("Connect", ADA)) == 3 and bool(bluez.connected_profiles(ADA)),
                           10)
    outcomes = [c.outcome for c in bluez.calls_of("Connect", ADA)]
    assert outcomes[:2] == ["org.bluez.Error.Failed: br-connection-page-timeout"] * 2 and outcomes[2] == "ok"


async def test_forget_removes_the_bond_and_everything_stored(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, BOB, connected=True)
    d = await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", BOB))
    db = sqlite3.connect(d.state_dir / DB_NAME, timeout=5)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        with db:
            for addr in (ADA, BOB):
                _insert(db, "contacts", phone=addr)
                _insert(db, "messages", phone=addr)
        await phones_call(client, "Forget", "s", [ADA])
        await signals.wait(is_signal("PhoneDisconnected", ADA, "forgotten"))
        await signals.wait(is_signal("PhoneForgotten", ADA))
        assert bluez.device_props(ADA) is None  # gone from bluetoothd
        for table in ("phones", "contacts", "messages"):
            col = "address" if table == "phones" else "phone"
            rows = [r[0] for r in db.execute(f"SELECT {col} FROM {table}")]
            assert rows == [BOB], table
        assert list(await list_phones(client)) == [BOB]
    finally:
        db.close()


async def test_forget_while_bluetoothd_is_down(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                               client: MessageBus, signals: Any) -> None:
    _paired(bluez, ADA, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    await bluez.crash()
    await signals.wait(props_changed("State", "unavailable"))
    await phones_call(client, "Forget", "s", [ADA])
    await signals.wait(is_signal("PhoneForgotten", ADA))
    assert await list_phones(client) == {}
    ready = fresh(signals, props_changed("State", "ready"))
    await bluez.revive()
    # The bond is removed as soon as bluetoothd is back, and the phone is not adopted again.
    await signals.wait(ready)
    await bluez.wait_until(lambda: bluez.device_props(ADA) is None, 5)
    assert await list_phones(client) == {}
    assert not bluez.calls_of("Connect")


async def test_autoconnect_yields_to_the_pairing_window(
        system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(page_timeout=30.0))
    try:
        _paired(fake, ADA, BOB)
        await fake.set_in_range(ADA, False)
        await fake.set_in_range(BOB, False)
        await _up(daemon_factory, client, signals, connect_budget="20s")
        await fake.wait_until(lambda: len(fake.calls_of("Connect", ADA)) == 0 and fake._devices[ADA].op is not None)
        # The driver opens the pairing window while the car is paging Ada: the page stops now.
        await phones_call(client, "OpenPairingWindow", "u", [30])
        await fake.wait_until(lambda: len(fake.calls_of("Connect", ADA)) == 1, 3)
        assert fake.calls_of("Connect", ADA)[0].outcome.endswith("br-connection-canceled")
        assert fake.calls_of("Connect", BOB) == []  # nothing else is tried meanwhile
        # Window closed: auto-connect starts again from a fresh snapshot.
        await fake.set_in_range(ADA, True)
        await phones_call(client, "ClosePairingWindow")
        await signals.wait(is_signal("PhoneConnected", ADA, "Phone 1", "primary"), 5)
    finally:
        await fake.stop()
