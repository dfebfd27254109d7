"""A third phone paired while two are connected: it is paired, not connected, and the dashboard is
told why (PairingFinished's reason, PhoneChanged / ListPhones key Reason); Connect still works."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast.aio import MessageBus

from dashbridge.simulator.bluez import FakeBluez
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone

from .bluez_versions import bluez_version  # every test: BlueZ 5.66 and current
from .pairing_helpers import ADA, BOB, CY, bluez, is_signal, list_phones, phones_call, start_daemon, wait_ready

__all__ = ["bluez", "bluez_version"]


async def test_a_third_phone_is_paired_not_connected_and_the_dashboard_is_told_why(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    bluez.add_phone(VirtualPhone(ADA, name="Ada"), paired=True, connected=True)
    bluez.add_phone(VirtualPhone(BOB, name="Bob"), paired=True, connected=True)
    start_daemon(daemon_factory)
    await wait_ready(client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA, "Ada", "primary"))
    await signals.wait(is_signal("PhoneConnected", BOB, "Bob", "secondary"))
    await phones_call(client, "OpenPairingWindow", "u", [20])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(CY, name="Cy"))
    pairing = asyncio.ensure_future(bluez.phone_pair(CY))
    prompt = await signals.wait(is_signal("PromptRequested"))
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    assert await pairing == "paired"
    finished = await signals.wait(is_signal("PairingFinished", CY))
    why = "not connected: two phones are already connected (primary Ada, secondary Bob)"
    assert finished.body[1:] == [True, f"paired; {why}"]
    changed = await signals.wait(lambda m: is_signal("PhoneChanged", CY)(m) and "Reason" in m.body[1])
    assert changed.body[1]["Reason"].value == why
    phones = await list_phones(client)
    assert phones[CY]["State"] != "connected" and phones[CY]["Reason"] == why
    assert phones[ADA]["State"] == phones[BOB]["State"] == "connected"
    # The driver asks for it: it connects (the lowest-priority other phone makes room), the note goes.
    await phones_call(client, "Connect", "s", [CY])
    await signals.wait(is_signal("PhoneConnected", CY))
    phones = await list_phones(client)
    assert phones[CY]["Reason"] == ""
