"""Shared pieces of the pairing tests: the fake BlueZ, a daemon configured with short timers, and
small helpers to call Phones1 and wait for its signals (never sleeping)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

NAME, PATH, IFACE = "org.dashbridge", "/org/dashbridge", "org.dashbridge.Phones1"
ADA = "AA:BB:CC:DD:EE:01"
BOB = "AA:BB:CC:DD:EE:02"
CY = "AA:BB:CC:DD:EE:03"

# Short timers so no test waits for real-world timeouts.
FAST_BT: dict[str, Any] = {
    "prompt_timeout": "3s",
    "connect_budget": "1s",
    "pair_timeout": "6s",
    "pairing_window": "30s",
    "bluez_call_timeout": "3s",
}


def daemon_config(**bt: Any) -> dict[str, Any]:
    return {"log_level": "debug", "bluetooth": {**FAST_BT, **bt}}


@pytest.fixture
async def bluez(system_bus: PrivateBus) -> AsyncIterator[FakeBluez]:
    fake = await FakeBluez.start(system_bus.address, timings=BluezTimings.fast())
    yield fake
    await fake.stop()


async def phones_call(client: MessageBus, member: str, sig: str = "", body: list[Any] | None = None,
                      timeout: float = 10.0) -> list[Any]:
    return await call(client, NAME, PATH, IFACE, member, sig, body or [], timeout=timeout)


async def list_phones(client: MessageBus) -> dict[str, dict[str, Any]]:
    (phones,) = await phones_call(client, "ListPhones")
    return {p["Address"].value: unwrap(p) for p in phones}


def is_signal(member: str, *args: Any) -> Callable[[Message], bool]:
    """A predicate: Phones1.<member> whose leading arguments equal ``args``."""

    def pred(m: Message) -> bool:
        return (m.interface == IFACE and m.member == member
                and list(unwrap(list(m.body[: len(args)]))) == list(args))

    return pred


def state_is(address: str, state: str) -> Callable[[Message], bool]:
    def pred(m: Message) -> bool:
        return (m.interface == IFACE and m.member == "PhoneChanged" and m.body[0] == address
                and "State" in m.body[1] and m.body[1]["State"].value == state)

    return pred


def start_daemon(factory: Callable[..., DaemonProcess], **bt: Any) -> DaemonProcess:
    return factory(daemon_config(**bt))


async def phones_state(client: MessageBus) -> str:
    from dashbridge.daemon.dbus.call import get_property

    return str(await get_property(client, NAME, PATH, IFACE, "State"))


def props_changed(key: str, value: Any) -> Callable[[Message], bool]:
    def pred(m: Message) -> bool:
        return (m.member == "PropertiesChanged" and m.path == PATH and m.body[0] == IFACE
                and key in m.body[1] and m.body[1][key].value == value)

    return pred


async def wait_ready(client: MessageBus, signals: Any, timeout: float = 5.0) -> None:
    """Until Phones1.State is "ready" (bluetoothd seen, adapter up)."""
    if await phones_state(client) == "ready":
        return
    await signals.wait(props_changed("State", "ready"), timeout)


def fresh(signals: Any, pred: Callable[[Message], bool]) -> Callable[[Message], bool]:
    """``pred`` limited to signals that arrive from now on."""
    mark = len(signals.messages)

    def check(m: Message) -> bool:
        return pred(m) and any(m is x for x in signals.messages[mark:])

    return check
