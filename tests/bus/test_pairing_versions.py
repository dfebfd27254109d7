"""The daemon on BlueZ 5.66 and current (issue 13): a pairing succeeds from what the agent saw and
the bond (not from one property), a known phone pairs again, connect errors are understood by name
and by reason string, and what cannot succeed is not retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.errors import BusError
from dashbridge.simulator.bluez import FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone

from .bluez_versions import bluez_version
from .pairing_helpers import ADA, BOB, bluez, is_signal, list_phones, phones_call, start_daemon, wait_ready
from .test_pairing_e2e import ctl

__all__ = ["bluez", "bluez_version"]


async def _up(factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    start_daemon(factory)
    await wait_ready(client, signals)


async def test_phone_whose_sdp_fails_after_bonding_is_paired(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada"))
    bluez.set_sdp_fails(ADA)
    await phones_call(client, "OpenPairingWindow", "u", [20])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt = await signals.wait(is_signal("PromptRequested"))
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    assert await pairing == "paired"
    await signals.wait(is_signal("PairingFinished", ADA, True))
    assert ADA in await list_phones(client)
    await bluez.wait_until(lambda: bool((bluez.device_props(ADA) or {}).get("Trusted")))


async def test_car_initiated_pairing_whose_sdp_fails_is_paired(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada"))
    bluez.set_sdp_fails(ADA)
    await phones_call(client, "OpenPairingWindow", "u", [20])
    await signals.wait(is_signal("DeviceFound", ADA))
    await phones_call(client, "Pair", "s", [ADA])
    prompt = await signals.wait(is_signal("PromptRequested"))
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    await signals.wait(is_signal("PairingFinished", ADA, True))
    assert bluez.calls_of("Pair", ADA)[0].outcome == "org.bluez.Error.Failed: br-connection-sdp-search"
    assert ADA in await list_phones(client)


@pytest.mark.parametrize("phone_accepts", [True, False])
async def test_a_known_phone_pairs_again(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any,
        phone_accepts: bool) -> None:
    bluez.add_phone(VirtualPhone(ADA, name="Ada"), paired=True, connected=True)
    await _up(daemon_factory, client, signals)
    await signals.wait(is_signal("PhoneConnected", ADA))
    # The user removed the car on the phone and pairs again: bluetoothd sends no Paired/Bonded change.
    bluez.phone_forget_bond(ADA)
    await signals.wait(is_signal("PhoneDisconnected", ADA))
    bluez.set_phone_accepts_pairing(ADA, phone_accepts)
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt = await signals.wait(is_signal("PromptRequested"))
    await phones_call(client, "AnswerPrompt", "ubs", [prompt.body[0], True, ""])
    assert await pairing == ("paired" if phone_accepts else "phone_rejected")
    await signals.wait(is_signal("PairingFinished", ADA, phone_accepts), 8)
    assert ADA in await list_phones(client)


async def test_connect_errors_are_explained_and_not_retried(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    bluez.add_phone(VirtualPhone(ADA, name="Ada", auto_reconnect=False), paired=True)
    bluez.add_phone(VirtualPhone(BOB, name="Bob", profiles=("opp",), auto_reconnect=False), paired=True)
    await bluez.set_in_range(ADA, False)
    await _up(daemon_factory, client, signals)
    await bluez.wait_until(lambda: len(bluez.calls_of("Connect", BOB)) >= 1, 10)
    with pytest.raises(BusError) as err:
        await phones_call(client, "Connect", "s", [ADA])
    assert err.value.text == "the phone is out of range (page timeout)"
    before = len(bluez.calls_of("Connect", BOB))
    with pytest.raises(BusError) as err:
        await phones_call(client, "Connect", "s", [BOB])
    # 5.66: NotAvailable "br-connection-profile-unavailable"; 5.84+: BREDR.ProfileUnavailable.
    assert err.value.text == "the phone offers no profile the car can connect (profile unavailable)"
    assert len(bluez.calls_of("Connect", BOB)) == before + 1  # once: it cannot succeed


async def test_dashbridgectl_connect_says_why(
        bluez: FakeBluez, system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess], client: MessageBus,
        signals: Any) -> None:
    bluez.add_phone(VirtualPhone(ADA, name="Ada", auto_reconnect=False), paired=True)
    await bluez.set_in_range(ADA, False)
    await _up(daemon_factory, client, signals)
    await bluez.wait_until(lambda: len(bluez.calls_of("Connect", ADA)) >= 1, 10)  # auto-connect tried
    rc, out, err = await ctl(system_bus, "connect", ADA)
    assert rc != 0 and "the phone is out of range (page timeout)" in out + err
