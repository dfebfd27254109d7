"""bluetoothd restarts and crashes, adapter set-up: the daemon survives without restarting itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast import Message
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import get_property
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone

from .bluez_versions import bluez_version  # every test: BlueZ 5.66 and current
from .pairing_helpers import (
    ADA,
    BOB,
    NAME,
    PATH,
    bluez,
    fresh,
    is_signal,
    list_phones,
    phones_call,
    props_changed,
    start_daemon,
    wait_ready,
)

__all__ = ["bluez", "bluez_version"]


async def _up(factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any, **bt: Any) -> DaemonProcess:
    d = start_daemon(factory, **bt)
    await wait_ready(client, signals)
    return d


async def _watch_bluez_owner(client: MessageBus) -> list[tuple[float, str]]:
    """(loop time, new owner) for every org.bluez owner change, seen by this client."""
    from dashbridge.daemon.dbus.call import call

    seen: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()

    def on(m: Message) -> None:
        if m.member == "NameOwnerChanged" and m.body and m.body[0] == "org.bluez":
            seen.append((loop.time(), m.body[2]))

    client.add_message_handler(on)
    await call(client, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
               ["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'"])
    return seen


async def test_bluetoothd_restart_reconnects_within_a_second(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    bluez.add_phone(VirtualPhone(ADA, name="Ada"), paired=True, connected=True)
    d = await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    owners = await _watch_bluez_owner(client)
    old_agent = bluez.default_agent
    back_again = fresh(signals, is_signal("PhoneConnected", ADA))
    await bluez.restart()
    await signals.wait(is_signal("PhoneDisconnected", ADA, "bluetooth_gone"))
    back = await signals.wait(back_again, 5)
    t_connected = asyncio.get_running_loop().time()
    t_owner = next(t for t, owner in owners if owner)
    assert back.body[2] == "primary"
    assert t_connected - t_owner < 1.0, f"reconnected {t_connected - t_owner:.3f}s after bluetoothd came back"
    # The agent is registered again, with the new bluetoothd, as the default agent.
    assert bluez.default_agent is not None and bluez.default_agent[1] == (old_agent or ("", ""))[1]
    assert len(bluez.calls_of("Connect", ADA)) == 1
    assert d.proc is not None and d.proc.poll() is None


async def test_bluetoothd_restart_mid_pairing(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                              client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [30])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(ADA, name="Ada"))
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt = await signals.wait(is_signal("PromptRequested"))
    await bluez.restart()
    assert await pairing == "canceled"
    await signals.wait(is_signal("PromptCancelled", prompt.body[0], "bluetooth_gone"))
    await signals.wait(is_signal("PairingFinished", ADA, False, "bluetooth_restarted"))
    # bluetoothd is back: the window is re-applied and pairing works again with the new agent registration.
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"] and bluez.default_agent is not None, 3)
    assert await get_property(client, NAME, PATH, "org.dashbridge.Phones1", "PairingWindow") is True
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt = await signals.wait(lambda m: is_signal("PromptRequested")(m) and m.body[0] != prompt.body[0])
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    assert await pairing == "paired"
    await signals.wait(is_signal("PhoneConnected", ADA, "Ada", "primary"))


async def test_stale_answer_after_restart_is_refused(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                     client: MessageBus, signals: Any) -> None:
    from dashbridge.daemon.dbus.errors import BusError

    await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [30])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(ADA))
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt = await signals.wait(is_signal("PromptRequested"))
    await bluez.restart()
    await pairing
    try:
        await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
        raise AssertionError("a prompt of the old bluetoothd was answered")
    except BusError as exc:
        assert exc.name == "org.dashbridge.Error.NotFound"


async def test_clean_bluetoothd_shutdown_and_a_long_absence(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    bluez.add_phone(VirtualPhone(ADA), paired=True, connected=True)
    d = await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    await bluez.crash()
    await signals.wait(props_changed("State", "unavailable"))
    await signals.wait(is_signal("PhoneDisconnected", ADA, "bluetooth_gone"))
    health = await get_property(client, NAME, PATH, "org.dashbridge.Daemon1", "Health")
    assert tuple(health["bluetooth"]) == ("degraded", "bluetoothd not running")
    assert (await list_phones(client))[ADA]["State"] == "unavailable"
    reconnected = fresh(signals, is_signal("PhoneConnected", ADA))
    await bluez.revive()
    await signals.wait(reconnected, 5)
    # A clean shutdown sends Release to the agent; the daemon registers again when it is back.
    gone = fresh(signals, props_changed("State", "unavailable"))
    await bluez.go_down_cleanly()
    await signals.wait(gone)
    assert "bluetoothd released the pairing agent" in d.log()
    ready = fresh(signals, props_changed("State", "ready"))
    await bluez.revive()
    await signals.wait(ready)
    assert bluez.default_agent is not None
    assert d.proc is not None and d.proc.poll() is None
    health = await get_property(client, NAME, PATH, "org.dashbridge.Daemon1", "Health")
    assert health["bluetooth"][0] == "ok"


async def test_adapter_brought_up_from_config_when_it_appears_late(
        system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast(adapter_delay=0.5),
                                 adapter_name="BlueZ 5.87", powered=False)
    try:
        fake.add_phone(VirtualPhone(BOB, name="Bob"), paired=True)
        await fake.restart()  # the adapter shows up 0.5 s after the name (mgmt index added)
        start_daemon(daemon_factory, alias="Family Car")
        await signals.wait(props_changed("State", "ready"), 5)
        adapter = fake.adapter_props()
        assert adapter["Alias"] == "Family Car" and adapter["Powered"] and adapter["Pairable"]
        await signals.wait(is_signal("PhoneConnected", BOB, "Bob", "primary"))
    finally:
        await fake.stop()
