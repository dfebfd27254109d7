"""Pairing through the daemon (dashbridged as a process) against the fake bluetoothd: the pairing
window, prompts and their deadlines, who may call the agent, and bad input from bluetoothd."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, get_property
from dashbridge.daemon.dbus.errors import BusError, InvalidArguments, Rejected
from dashbridge.daemon.dbus.errors import NotReady as NotReadyErr
from dashbridge.simulator.bluez import FakeBluez
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone

from .bluez_helpers import ADAPTER, ADAPTER_PATH, dev_path
from .bluez_versions import bluez_version  # every test: BlueZ 5.66 and current
from .pairing_helpers import (
    ADA,
    BOB,
    IFACE,
    NAME,
    PATH,
    bluez,
    is_signal,
    list_phones,
    phones_call,
    props_changed,
    start_daemon,
    wait_ready,
)

__all__ = ["bluez", "bluez_version"]  # the fixture


async def _up(factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any, **bt: Any) -> DaemonProcess:
    d = start_daemon(factory, **bt)
    await wait_ready(client, signals)
    return d


async def _prompt(signals: Any, address: str, timeout: float = 5.0) -> list[Any]:
    m = await signals.wait(is_signal("PromptRequested") and (lambda m: m.member == "PromptRequested"
                                                                and m.body[2] == address), timeout)
    return list(m.body)


async def test_phone_pairs_with_numeric_comparison(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                   client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    assert bluez.default_agent is not None and bluez.agents[0][2] == "DisplayYesNo"
    (granted,) = await phones_call(client, "OpenPairingWindow", "u", [0])
    assert granted == 30
    await signals.wait(props_changed("PairingWindow", True))
    adapter = bluez.adapter_props()
    assert adapter["Discoverable"] and adapter["Discovering"] and adapter["Pairable"]
    bluez.add_phone(VirtualPhone(ADA, name="Ada's phone"))
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA, passkey=4711))
    prompt_id, kind, address, name, code, timeout = await _prompt(signals, ADA)
    assert (kind, address, name, code, timeout) == ("confirm_passkey", ADA, "Ada's phone", "004711", 3)
    (open_prompts,) = await phones_call(client, "ListPrompts")
    assert [p[0] for p in open_prompts] == [prompt_id]
    await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    assert await pairing == "paired"
    await signals.wait(is_signal("PairingFinished", ADA, True, ""))
    await signals.wait(is_signal("PhoneConnected", ADA, "Ada's phone", "primary"))
    phone = (await list_phones(client))[ADA]
    assert phone["State"] == "connected" and phone["Role"] == "primary" and phone["Priority"] == 0
    assert "hfp" in phone["Profiles"] and phone["LastConnected"] > 0
    # Trusted right after pairing; the window closed by itself after the pairing.
    await bluez.wait_until(lambda: (bluez.device_props(ADA) or {}).get("Trusted") is True)
    await signals.wait(props_changed("PairingWindow", False))
    assert not bluez.adapter_props()["Discoverable"] and not bluez.adapter_props()["Discovering"]
    assert await get_property(client, NAME, PATH, IFACE, "PairingWindow") is False


async def test_dashboard_says_no(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                 client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(ADA))
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt_id = (await _prompt(signals, ADA))[0]
    await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, False, ""])
    assert await pairing == "rejected"
    assert bluez.agent_log[-1].member == "RequestConfirmation" and bluez.agent_log[-1].outcome == "rejected"
    await signals.wait(is_signal("PairingFinished", ADA, False, "rejected"))
    assert ADA not in await list_phones(client)
    # A second answer to the same prompt is stale.
    with pytest.raises(BusError) as err:
        await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    assert err.value.name == "org.dashbridge.Error.NotFound"


async def test_unanswered_prompt_times_out_and_bluez_gets_a_rejection(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals, prompt_timeout="500ms")
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(ADA))
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt_id = (await _prompt(signals, ADA))[0]
    await signals.wait(is_signal("PromptCancelled", prompt_id, "timeout"), 3)
    # Our deadline is shorter than bluetoothd's: it got an answer (a rejection), not a NoReply.
    assert await pairing == "rejected"
    assert bluez.agent_log[-1].outcome == "rejected"
    await signals.wait(is_signal("PairingFinished", ADA, False, "timeout"))
    with pytest.raises(BusError) as err:
        await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    assert err.value.name == "org.dashbridge.Error.NotFound"
    with pytest.raises(BusError) as err:
        await phones_call(client, "AnswerPrompt", "ubs", [987654, True, ""])
    assert err.value.name == "org.dashbridge.Error.NotFound"


async def test_unknown_phone_outside_the_window_is_rejected_without_a_prompt(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA))
    # The phone was seen during an earlier window (bluetoothd knows it), then the window closed.
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await bluez.wait_until(lambda: bluez.device_props(ADA) is not None)
    await phones_call(client, "ClosePairingWindow")
    await signals.wait(props_changed("PairingWindow", False))
    assert await bluez.phone_pair(ADA) == "rejected"
    assert bluez.agent_log[-1].outcome == "rejected"
    assert not [m for m in signals.messages if m.member == "PromptRequested"]


async def test_agent_accepts_calls_only_from_bluetoothd(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                        client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [10])
    bluez.add_phone(VirtualPhone(ADA))
    await bluez.wait_until(lambda: bluez.device_props(ADA) is not None)
    sender, path = bluez.default_agent or ("", "")
    # An impostor on the bus calls the agent directly, with a real device path.
    for member, sig, body in (("RequestConfirmation", "ou", [dev_path(ADA), 123456]),
                              ("AuthorizeService", "os", [dev_path(ADA), "0000111e-0000-1000-8000-00805f9b34fb"]),
                              ("RequestPinCode", "o", [dev_path(ADA)])):
        with pytest.raises(Rejected):
            await call(client, sender, path, "org.bluez.Agent1", member, sig, body, timeout=3)
    assert not [m for m in signals.messages if m.member == "PromptRequested"]
    # bluetoothd itself still gets through.
    ok = asyncio.ensure_future(bluez.call_default_agent("RequestConfirmation", "ou", [dev_path(ADA), 1]))
    prompt_id = (await _prompt(signals, ADA))[0]
    await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    assert (await ok)[0] is True


async def test_bad_input_from_bluetoothd_is_rejected_and_the_agent_keeps_working(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    d = await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [20])
    junk_name = "\x1b[31mEvil\u202eName\n\t" + "\U0001f600" * 80  # 320 bytes of emoji
    bluez.add_phone(VirtualPhone(ADA, name=junk_name))
    await bluez.wait_until(lambda: bluez.device_props(ADA) is not None)
    agent = bluez.call_default_agent
    # Agent calls for devices bluetoothd does not have, and malformed arguments.
    assert await agent("RequestConfirmation", "ou", ["/org/bluez/hci0/dev_00_00_00_00_00_00", 1]) == (
        False, "org.bluez.Error.Rejected")
    assert await agent("RequestConfirmation", "ou", ["/not/a/device", 1]) == (False, "org.bluez.Error.Rejected")
    assert await agent("RequestConfirmation", "ou", [dev_path(ADA), 1_234_567]) == (False, "org.bluez.Error.Rejected")
    assert await agent("AuthorizeService", "os", [dev_path(ADA), "not-a-uuid"]) == (False, "org.bluez.Error.Rejected")
    assert await agent("DisplayPinCode", "os", [dev_path(ADA), "x" * 40]) == (False, "org.bluez.Error.Rejected")
    assert not [m for m in signals.messages if m.member == "PromptRequested"]
    # Two requests for the same phone: the newer one is live, the older is rejected and taken down.
    first = asyncio.ensure_future(agent("RequestConfirmation", "ou", [dev_path(ADA), 111111]))
    first_id = (await _prompt(signals, ADA))[0]
    second = asyncio.ensure_future(agent("RequestConfirmation", "ou", [dev_path(ADA), 222222]))
    await signals.wait(is_signal("PromptCancelled", first_id, "superseded"))
    assert await first == (False, "org.bluez.Error.Rejected")
    prompts = [m for m in signals.messages if m.member == "PromptRequested"]
    assert len(prompts) == 2 and prompts[1].body[4] == "222222"
    # The name is shown cleaned: no control or bidi characters, at most 248 bytes.
    shown = prompts[1].body[3]
    assert shown.startswith("[31mEvilName \U0001f600") and len(shown.encode()) <= 248
    assert not any(c in shown for c in "\x1b\t\n\u202e")
    await phones_call(client, "AnswerPrompt", "ubs", [prompts[1].body[0], True, ""])
    assert (await second)[0] is True
    # Still alive and answering: Ping the daemon, pair a well-behaved phone normally.
    assert (await call(client, NAME, PATH, "org.dashbridge.Daemon1", "Ping"))[0] == "pong"
    bluez.add_phone(VirtualPhone(BOB, name="Bob"))
    pairing = asyncio.ensure_future(bluez.phone_pair(BOB))
    await phones_call(client, "AnswerPrompt", "ubs", [(await _prompt(signals, BOB))[0], True, ""])
    assert await pairing == "paired"
    assert d.proc is not None and d.proc.poll() is None
    assert "Traceback" not in d.log()


async def test_legacy_phone_pairs_with_a_pin(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                             client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await bluez.wait_until(lambda: bluez.adapter_props()["Discoverable"])
    bluez.add_phone(VirtualPhone(ADA, name="Old phone", pairing="legacy_pin", pin="1234"))
    pairing = asyncio.ensure_future(bluez.phone_pair(ADA))
    prompt_id, kind, *_ = await _prompt(signals, ADA)
    assert kind == "enter_pin"
    with pytest.raises(InvalidArguments):
        await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, "12 34"])
    await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, "1234"])
    assert await pairing == "paired"
    await signals.wait(is_signal("PhoneConnected", ADA))


async def test_car_initiated_pairing_with_a_discovered_phone(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada"))
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await signals.wait(is_signal("DeviceFound", ADA, "Ada"))
    (nearby,) = await phones_call(client, "ListNearby")
    assert [n["Address"].value for n in nearby] == [ADA]
    await phones_call(client, "Pair", "s", [ADA.lower()])
    with pytest.raises(BusError) as err:
        await phones_call(client, "Pair", "s", [ADA])
    assert err.value.name == "org.dashbridge.Error.Busy"
    prompt_id, kind, *_ = await _prompt(signals, ADA)
    assert kind == "confirm_passkey"
    await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    await signals.wait(is_signal("PairingFinished", ADA, True, ""))
    await signals.wait(is_signal("PhoneConnected", ADA, "Ada", "primary"))
    # The daemon called Device1.Pair itself, then connected the phone.
    assert bluez.calls_of("Pair", ADA)[0].outcome == "ok"
    await bluez.wait_until(lambda: bool(bluez.connected_profiles(ADA)))


async def test_car_initiated_pairing_rejected_on_the_phone(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA, accepts_pairing=False))
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await signals.wait(is_signal("DeviceFound", ADA))
    await phones_call(client, "Pair", "s", [ADA])
    await phones_call(client, "AnswerPrompt", "ubs", [(await _prompt(signals, ADA))[0], True, ""])
    await signals.wait(is_signal("PairingFinished", ADA, False, "rejected"))
    assert ADA not in await list_phones(client)
    assert bluez.calls_of("Pair", ADA)[0].outcome.startswith("org.bluez.Error.AuthenticationFailed")


async def test_window_needs_bluetooth_and_validates_input(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                                          client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    with pytest.raises(InvalidArguments):
        await phones_call(client, "OpenPairingWindow", "u", [100000])
    for bad in ("", "AA:BB", "zz:zz:zz:zz:zz:zz", "A" * 300):
        with pytest.raises(InvalidArguments):
            await phones_call(client, "Connect", "s", [bad])
    with pytest.raises(BusError) as err:
        await phones_call(client, "Forget", "s", [ADA])
    assert err.value.name == "org.dashbridge.Error.NotFound"
    await bluez.set_powered(False)
    await signals.wait(props_changed("State", "off"))
    with pytest.raises(NotReadyErr):
        await phones_call(client, "OpenPairingWindow", "u", [0])


async def test_window_closes_by_itself(bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess],
                                       client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    await phones_call(client, "OpenPairingWindow", "u", [1])
    await signals.wait(props_changed("PairingWindow", True))
    await signals.wait(props_changed("PairingWindow", False), 3)
    await bluez.wait_until(lambda: not bluez.adapter_props()["Discovering"])
    assert not bluez.adapter_props()["Discoverable"]


async def test_authorize_service_for_a_stranger_outside_the_window(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA))
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await bluez.wait_until(lambda: bluez.device_props(ADA) is not None)
    await phones_call(client, "ClosePairingWindow")
    await signals.wait(props_changed("PairingWindow", False))
    ok = await bluez.call_default_agent("AuthorizeService", "os", [dev_path(ADA), "0000111e-0000-1000-8000-00805f9b34fb"])
    assert ok == (False, "org.bluez.Error.Rejected")
    assert ADAPTER_PATH and ADAPTER  # names used by other tests in this module


async def test_display_only_car_shows_the_passkey_to_type_on_the_phone(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals, agent_capability="DisplayOnly")
    assert bluez.agents[0][2] == "DisplayOnly"
    bluez.add_phone(VirtualPhone(ADA, name="Ada", passkey=90210))
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await signals.wait(is_signal("DeviceFound", ADA))
    await phones_call(client, "Pair", "s", [ADA])
    prompt_id, kind, address, _name, code, _t = await _prompt(signals, ADA)
    assert (kind, address, code) == ("display_passkey", ADA, "090210")
    with pytest.raises(InvalidArguments):  # nothing to answer
        await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    await signals.wait(is_signal("PairingFinished", ADA, True, ""))
    await signals.wait(is_signal("PromptCancelled", prompt_id, "pairing_done"))


async def test_service_request_from_a_new_phone_during_the_window_is_asked(
        bluez: FakeBluez, daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any) -> None:
    await _up(daemon_factory, client, signals)
    bluez.add_phone(VirtualPhone(ADA, name="Ada"))
    await phones_call(client, "OpenPairingWindow", "u", [10])
    await bluez.wait_until(lambda: bluez.device_props(ADA) is not None)
    hfp_hf = "0000111e-0000-1000-8000-00805f9b34fb"
    asked = asyncio.ensure_future(bluez.call_default_agent("AuthorizeService", "os", [dev_path(ADA), hfp_hf]))
    prompt_id, kind, _a, _n, code, _t = await _prompt(signals, ADA)
    assert (kind, code) == ("authorize_service", hfp_hf)
    await phones_call(client, "AnswerPrompt", "ubs", [prompt_id, True, ""])
    assert (await asked)[0] is True
    # A paired phone is authorized without asking, but only for services the car offers.
    bluez.add_phone(VirtualPhone(BOB), paired=True)
    await signals.wait(lambda m: is_signal("PhoneChanged", BOB)(m))
    assert (await bluez.call_default_agent("AuthorizeService", "os", [dev_path(BOB), hfp_hf]))[0] is True
    unknown = "12345678-1234-1234-1234-123456789abc"
    assert await bluez.call_default_agent("AuthorizeService", "os", [dev_path(BOB), unknown]) == (
        False, "org.bluez.Error.Rejected")


def test_a_stranger_cannot_pair_phones(daemon_factory: Callable[..., DaemonProcess], system_bus: Any) -> None:
    import os
    import pwd
    import shutil
    import subprocess

    if os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("busctl"):
        pytest.skip("needs root (to run a client as another user), setpriv and busctl")
    d = start_daemon(daemon_factory)
    pw = pwd.getpwnam("nobody")
    for args in (["OpenPairingWindow", "u", "0"], ["AnswerPrompt", "ubs", "1", "true", ""], ["ListPhones"],
                 ["Forget", "s", ADA]):
        res = subprocess.run(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "busctl",
             f"--address={system_bus.address}", "call", NAME, PATH, IFACE, *args],
            capture_output=True, text=True, timeout=20)
        assert res.returncode != 0 and "caller is not allowed" in res.stderr, res
    assert f"denied {IFACE}.OpenPairingWindow" in d.log()
