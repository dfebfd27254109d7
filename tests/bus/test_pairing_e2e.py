"""End to end, as a developer would do it: the real ``dashbridged`` process, the fake bluetoothd in
this process, and ``dashbridgectl`` as a command: open the window and pair with numeric comparison,
see the phone reconnect after a daemon restart and after a bluetoothd restart, forget it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast.aio import MessageBus

from dashbridge.simulator.bluez import FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone

from .bluez_versions import bluez_version  # every test: BlueZ 5.66 and current
from .pairing_helpers import ADA, BOB, bluez, daemon_config, fresh, is_signal, wait_ready

__all__ = ["bluez", "bluez_version"]


def _ctl_command() -> list[str]:
    exe = shutil.which("dashbridgectl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())"]


async def ctl(bus: PrivateBus, *args: str, stdin: str | None = None, timeout: float = 20.0) -> tuple[int, str, str]:
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    proc = await asyncio.create_subprocess_exec(
        *_ctl_command(), *args, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_pair_reconnect_after_daemon_and_bluetoothd_restart_then_forget(
        bluez: FakeBluez, system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess], client: MessageBus,
        signals: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    d = daemon_factory(daemon_config(), state_dir=state)
    await wait_ready(client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada's phone", passkey=314159))

    # 1. Open the window and pair with numeric comparison, answered by dashbridgectl.
    pair = asyncio.ensure_future(ctl(system_bus, "pair", "--accept"))
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"], 10)
    assert await bluez.phone_pair(ADA) == "paired"
    rc, out, err = await pair
    assert rc == 0, out + err
    assert "Ada's phone (AA:BB:CC:DD:EE:01) shows 314159? [y/N] yes" in out
    assert f"paired with {ADA}" in out
    await signals.wait(is_signal("PhoneConnected", ADA, "Ada's phone", "primary"))
    rc, out, _ = await ctl(system_bus, "--json", "phones")
    phones = json.loads(out)
    assert rc == 0 and [(p["Address"], p["State"], p["Role"]) for p in phones] == [(ADA, "connected", "primary")]

    # 2. The daemon restarts; meanwhile the phone dropped (the car was off): it is reconnected.
    assert d.stop() == 0
    await bluez.phone_disconnect(ADA)
    connects = len(bluez.calls_of("Connect", ADA))
    back = fresh(signals, is_signal("PhoneConnected", ADA, "Ada's phone", "primary"))
    d2 = daemon_factory(daemon_config(), state_dir=state)
    await signals.wait(back, 10)
    assert len(bluez.calls_of("Connect", ADA)) == connects + 1

    # 3. bluetoothd restarts: the daemon re-registers its agent and reconnects, without restarting.
    back = fresh(signals, is_signal("PhoneConnected", ADA, "Ada's phone", "primary"))
    await bluez.restart()
    await signals.wait(back, 5)
    assert bluez.default_agent is not None
    assert d2.proc is not None and d2.proc.poll() is None

    # 4. Forget it: gone from bluetoothd and from the car.
    rc, out, err = await ctl(system_bus, "forget", ADA.lower())
    assert rc == 0, err
    await signals.wait(is_signal("PhoneForgotten", ADA))
    assert bluez.device_props(ADA) is None
    rc, out, _ = await ctl(system_bus, "--json", "phones")
    assert json.loads(out) == []


async def test_interactive_pairing_and_priority_from_the_command_line(
        bluez: FakeBluez, system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess], client: MessageBus,
        signals: Any) -> None:
    daemon_factory(daemon_config())
    await wait_ready(client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada"), paired=True, connected=True)
    await signals.wait(is_signal("PhoneConnected", ADA))
    bluez.add_phone(VirtualPhone(BOB, name="Bob", passkey=42))
    # The driver says "n" at the prompt: nothing is paired.
    pair = asyncio.ensure_future(ctl(system_bus, "pair", stdin="n\n"))
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"], 10)
    assert await bluez.phone_pair(BOB) == "rejected"
    rc, out, _ = await pair
    assert rc == 1 and "Bob (AA:BB:CC:DD:EE:02) shows 000042? [y/N]" in out and "not paired: rejected" in out
    await bluez.wait_until(lambda: not bluez.adapter_props()["Discoverable"], 5)
    # ... then "y".
    pair = asyncio.ensure_future(ctl(system_bus, "pair", stdin="y\n"))
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"], 10)
    assert await bluez.phone_pair(BOB) == "paired"
    rc, out, _ = await pair
    assert rc == 0 and f"paired with {BOB}" in out
    await signals.wait(is_signal("PhoneConnected", BOB, "Bob", "secondary"))
    # Bob first: he becomes the primary phone.
    rc, out, _ = await ctl(system_bus, "priority", BOB, "0")
    assert rc == 0
    rc, out, _ = await ctl(system_bus, "phones")
    lines = out.splitlines()
    assert BOB in lines[1] and "primary" in lines[1] and ADA in lines[2] and "secondary" in lines[2]
    # Errors are one clear line and a non-zero status.
    rc, _, err = await ctl(system_bus, "connect", "not-an-address")
    assert rc == 1 and err.strip() == (
        "dashbridgectl: InvalidArguments: not a Bluetooth address (expected AA:BB:CC:DD:EE:FF)")
    rc, _, _ = await ctl(system_bus, "disconnect", ADA)
    assert rc == 0
    await signals.wait(is_signal("PhoneDisconnected", ADA, "local"))
    again = fresh(signals, is_signal("PhoneConnected", ADA))
    rc, _, _ = await ctl(system_bus, "connect", ADA)
    assert rc == 0
    await signals.wait(again)
