"""The daemon's Bluetooth side against the real bluetoothd (Debian ``bluez`` 5.66), end to end:

dashboard client -> org.dashbridge.Phones1 -> dashbridged (bluetooth component: agent, adapter
set-up, pairing) -> org.bluez (real bluetoothd, private system bus) -> management protocol over
the shim -> ``MgmtServer`` playing the controller and the phone's side of the radio.

Nothing is mocked above the kernel: bluetoothd runs its real adapter, device, agent and storage
code; the phone's part (connect, Secure Simple Pairing, disconnect, not answering a page) is
played by the management server.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from dashbridge.daemon.dbus.call import unwrap
from tests.bus.pairing_helpers import is_signal, list_phones, phones_call, wait_ready

from . import mgmtserver as mg
from .conftest import DAEMON_BT, Rig
from .support import adapter_props, device_props, poll

PIXEL = "AC:37:43:11:22:01"
IPHONE = "F0:99:B6:33:44:02"
REREGISTER_LIMIT_S = 1.0


async def open_window(rig: Rig, seconds: int = 60) -> None:
    await phones_call(rig.client, "OpenPairingWindow", "u", [seconds])


async def phone_pairs(rig: Rig, address: str, name: str, passkey: int, *, accept: bool | None,
                      window: bool = True) -> tuple[bool | None, Any]:
    """The phone connects and starts SSP; the dashboard answers the prompt with ``accept`` (None:
    nobody answers).  Returns (bluetoothd's reply to the controller, PairingFinished body)."""
    sig = rig.signals
    mark = len(sig.messages)
    if window:
        await open_window(rig)
    if address not in rig.mgmt.phones:
        rig.mgmt.add_phone(address, name)
    rig.mgmt.connect_phone(address)
    # bluetoothd announces the device (Connected) before the pairing starts, as a phone does it.
    await poll(lambda: _connected(rig, address), 5, f"{address} connected in bluetoothd")
    pairing = asyncio.ensure_future(rig.mgmt.ssp_pairing(address, passkey, timeout=15))
    try:
        if accept is not None:
            prompt = await sig.wait(lambda m: is_signal("PromptRequested")(m) and m.body[2] == address
                                    and any(m is x for x in sig.messages[mark:]), 10)
            pid, kind, _, shown_name, code, _ = unwrap(list(prompt.body))
            assert (kind, shown_name, code) == ("confirm_passkey", name, f"{passkey:06d}")
            await phones_call(rig.client, "AnswerPrompt", "ubs", [pid, accept, ""])
        reply = await asyncio.wait_for(asyncio.shield(pairing), 20)
        finished = await sig.wait(lambda m: is_signal("PairingFinished", address)(m)
                                  and any(m is x for x in sig.messages[mark:]), 15)
    finally:
        if not pairing.done():
            pairing.cancel()
    return reply, unwrap(list(finished.body))


async def _connected(rig: Rig, address: str) -> bool:
    try:
        return bool((await device_props(rig.client, address)).get("Connected"))
    except Exception:
        return False


async def test_agent_registered_and_adapter_set_up(rig: Rig) -> None:
    """The daemon registers its agent as bluetoothd's default agent and brings the adapter up from
    its config: each write reaches the controller as the management command it stands for."""
    mon = rig.monitor
    await mon.wait(lambda: mon.calls("RequestDefaultAgent"), 10)
    reg = mon.calls("RegisterAgent")
    assert reg and list(reg[0].msg.body) == ["/org/dashbridge/agent", rig_capability()]
    await wait_ready(rig.client, rig.signals, 10)
    ctl = rig.mgmt.ctl
    # AutoEnable=false: only the daemon's Powered=true powered the controller.
    powered = [c for c in rig.mgmt.seen("SET_POWERED") if c.params[:1] == b"\x01"]
    assert powered, [c.name for c in rig.mgmt.commands]
    assert ctl.setting(mg.S_POWERED) and ctl.setting(mg.S_BONDABLE) and ctl.setting(mg.S_CONNECTABLE)
    assert ctl.setting(mg.S_SSP)
    await rig.mgmt.wait_until(lambda: ctl.name == DAEMON_BT["alias"], 5)  # Alias -> Set Local Name
    props = await adapter_props(rig.client)
    assert (props["Alias"], props["Powered"], props["Pairable"]) == (DAEMON_BT["alias"], True, True)
    assert props["Address"] == mg.ADAPTER_ADDRESS
    # Class= from main.conf reaches the controller as Set Device Class (major 0x04 audio, minor 0x20 car).
    assert ctl.major_minor == (0x04, 0x20)
    assert ctl.io_capability is not None  # the agent's capability became Set IO Capability
    writes = rig.monitor.property_writes()
    for prop, value in (("Alias", DAEMON_BT["alias"]), ("Powered", True)):
        assert ("org.bluez.Adapter1", prop, value) in writes, writes
    # Pairable: bluetoothd 5.66 makes the controller bondable itself when the default agent is set
    # (AlwaysPairable=false: Set Bondable 1, then Set IO Capability), so the daemon finds it true and
    # does not write it (test_bluez_fake_differences.py pins this in the fake).
    names = [c.name for c in rig.mgmt.commands]
    assert names.index("SET_BONDABLE") < names.index("SET_IO_CAPABILITY")

    # The pairing window: discoverable with the window's timeout, and a scan.
    mark = rig.mgmt.mark()
    await open_window(rig, 45)
    await rig.mgmt.wait_until(lambda: ctl.setting(mg.S_DISCOVERABLE) and ctl.discovering, 5)
    disc = [c for c in rig.mgmt.seen("SET_DISCOVERABLE", mark) if c.params[:1] == b"\x01"]
    assert disc and int.from_bytes(disc[-1].params[1:3], "little") == 45  # DiscoverableTimeout
    assert (await adapter_props(rig.client))["Discoverable"] is True
    await phones_call(rig.client, "ClosePairingWindow")
    await rig.mgmt.wait_until(lambda: not ctl.setting(mg.S_DISCOVERABLE) and not ctl.discovering, 5)
    assert rig.mgmt.seen("STOP_DISCOVERY", mark)


def rig_capability() -> str:
    from dashbridge.daemon.config import BluetoothConfig

    return str(BluetoothConfig().agent_capability)


async def test_phone_initiated_pairing_accepted(rig: Rig) -> None:
    """Numeric comparison: bluetoothd asks the daemon's agent (RequestConfirmation), the dashboard
    accepts, the controller gets the User Confirmation Reply; the phone ends paired, trusted and
    listed.  bluetoothd 5.66 cannot browse SDP here (no L2CAP), so Paired/ServicesResolved never
    change — the daemon still reports success (it goes by Bonded)."""
    await wait_ready(rig.client, rig.signals, 10)
    mark = rig.monitor.mark()
    reply, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 123456, accept=True)
    assert reply is True
    assert rig.mgmt.seen("USER_CONFIRM_REPLY") and not rig.mgmt.seen("USER_CONFIRM_NEG_REPLY")
    confirm = rig.monitor.calls("RequestConfirmation", mark)
    assert confirm and confirm[0].msg.body[1] == 123456
    assert finished == [PIXEL, True, ""]
    phones = await list_phones(rig.client)
    assert PIXEL in phones and phones[PIXEL]["Name"] == "Pixel 8"
    await poll(lambda: _prop(rig, PIXEL, "Trusted"), 5, "Trusted set by the daemon")
    props = await device_props(rig.client, PIXEL)
    assert props["Bonded"] is True and props["Trusted"] is True
    # bluetoothd's own service search after the bonding (reverse discovery, 1 s later) pages the
    # phone for SDP (PSM 1), which fails: Paired/ServicesResolved never change, as on 5.66.
    await rig.mgmt.wait_until(lambda: [c for c in rig.mgmt.radio_connects if c[1] == PIXEL and c[2] == mg.PSM_SDP], 10)
    props = await device_props(rig.client, PIXEL)
    assert props.get("ServicesResolved") is False and props.get("UUIDs") == []
    # bluetoothd stored the key the controller handed it (New Link Key, store hint set)
    info = rig.bluetoothd.device_info(PIXEL)
    assert "[LinkKey]" in info and "Trusted=true" in info


async def _prop(rig: Rig, address: str, key: str) -> bool:
    return bool((await device_props(rig.client, address)).get(key))


async def test_phone_initiated_pairing_rejected(rig: Rig) -> None:
    await wait_ready(rig.client, rig.signals, 10)
    reply, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 654321, accept=False)
    assert reply is False
    assert rig.mgmt.seen("USER_CONFIRM_NEG_REPLY") and not rig.mgmt.seen("USER_CONFIRM_REPLY")
    assert finished == [PIXEL, False, "rejected"]
    assert PIXEL not in await list_phones(rig.client)
    assert (await device_props(rig.client, PIXEL)).get("Bonded") is False
    assert "[LinkKey]" not in rig.bluetoothd.device_info(PIXEL)


async def test_prompt_nobody_answers(rig: Rig) -> None:
    """The dashboard never answers: the daemon's prompt times out (3 s), it rejects, bluetoothd
    sends the Negative Reply long before its own agent timeout."""
    await wait_ready(rig.client, rig.signals, 10)
    reply, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 111111, accept=None)
    assert reply is False
    assert finished == [PIXEL, False, "timeout"]
    assert PIXEL not in await list_phones(rig.client)


async def test_unknown_phone_outside_the_pairing_window(rig: Rig) -> None:
    await wait_ready(rig.client, rig.signals, 10)
    sig = rig.signals
    mark = len(sig.messages)
    rig.mgmt.add_phone(IPHONE, "Stranger")
    rig.mgmt.connect_phone(IPHONE)
    await poll(lambda: _connected(rig, IPHONE), 5, "stranger connected in bluetoothd")
    reply = await rig.mgmt.ssp_pairing(IPHONE, 222222, timeout=10)
    assert reply is False  # rejected by the agent without asking anybody
    assert not [m for m in sig.messages[mark:] if is_signal("PromptRequested")(m)]
    assert IPHONE not in await list_phones(rig.client)
    assert "outside the pairing window: rejected" in rig.daemon.log()


async def test_known_phone_pairs_again(rig: Rig) -> None:
    """A bonded phone that lost the car's key pairs again (outside any window): no Paired/Bonded
    change at all from bluetoothd, the daemon counts it done once the link stays up."""
    await wait_ready(rig.client, rig.signals, 10)
    _, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 123456, accept=True)
    assert finished[1] is True
    await phones_call(rig.client, "ClosePairingWindow")
    n = rig.mgmt.mark()
    reply, again = await phone_pairs(rig, PIXEL, "Pixel 8", 765432, accept=True, window=False)
    assert reply is True and rig.mgmt.seen("USER_CONFIRM_REPLY", n)
    assert again == [PIXEL, True, ""]
    assert list(await list_phones(rig.client)) == [PIXEL]


async def test_pair_from_the_car_phone_does_not_answer(rig: Rig) -> None:
    """Car-initiated Pair(): bluetoothd sends Pair Device, the phone does not answer the page (the
    controller answers Connect Failed): the daemon maps bluetoothd's error, no traceback."""
    await wait_ready(rig.client, rig.signals, 10)
    sig = rig.signals
    await open_window(rig)
    rig.mgmt.add_phone(IPHONE, "iPhone")
    # The phone is found by the scan (Device Found), then walks away.
    rig.mgmt.found(IPHONE, -60)
    await sig.wait(is_signal("DeviceFound", IPHONE), 10)
    rig.mgmt.phones[IPHONE].pair_failure = mg.CONNECT_FAILED
    mark = len(sig.messages)
    await phones_call(rig.client, "Pair", "s", [IPHONE])
    finished = await sig.wait(lambda m: is_signal("PairingFinished", IPHONE)(m)
                              and any(m is x for x in sig.messages[mark:]), 15)
    assert rig.mgmt.seen("PAIR_DEVICE")
    assert unwrap(list(finished.body))[1] is False
    assert unwrap(list(finished.body))[2] == "out_of_range"  # Connect Failed -> "Page Timeout"
    assert IPHONE not in await list_phones(rig.client)


async def test_connect_a_phone_bluetoothd_cannot_reach(rig: Rig) -> None:
    """Connect to a paired phone: bluetoothd 5.66 must browse SDP first, which fails at once with
    no L2CAP: ``Failed br-connection-sdp-search``; the daemon maps it and stays up."""
    await wait_ready(rig.client, rig.signals, 10)
    _, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 123456, accept=True)
    assert finished[1] is True
    await phones_call(rig.client, "ClosePairingWindow")
    rig.mgmt.disconnect_phone(PIXEL, mg.DISCONN_TIMEOUT)
    await poll(lambda: _not_connected(rig, PIXEL), 5, "link down in bluetoothd")
    # The first connection after pairing may still be retrying (the same error): a dashboard gets
    # Busy meanwhile and asks again.
    async def connect_error() -> str | None:
        try:
            await phones_call(rig.client, "Connect", "s", [PIXEL], timeout=15)
        except Exception as exc:
            return None if "Error.Busy" in str(exc) else str(exc)
        raise AssertionError("Connect succeeded to a phone bluetoothd cannot reach")

    err = await poll(connect_error, 15, "Connect answered", interval=0.2)
    assert "org.dashbridge.Error.Failed" in err and "the phone did not list its services" in err
    await poll(lambda: _phone_state(rig, PIXEL, "disconnected"), 10, "phone settled as disconnected")

    # Auto-connect meets the same error when the daemon starts: it tries, maps, gives up, stays up.
    rig.daemon.stop()
    mark = rig.monitor.mark()
    rig.daemon.start(wait_ready=False)
    await rig.daemon.await_ready()
    await rig.monitor.wait(lambda: rig.monitor.calls("Connect", mark), 10)
    await poll(lambda: "auto-connect: XX:XX:XX:XX:22:01 not connected (sdp_failed)" in rig.daemon.log(), 10,
               "auto-connect giving up on the phone")
    await poll(lambda: _phone_state(rig, PIXEL, "disconnected"), 10, "phone settled as disconnected")


async def _phone_state(rig: Rig, address: str, state: str) -> bool:
    return (await list_phones(rig.client))[address]["State"] == state


async def _not_connected(rig: Rig, address: str) -> bool:
    return not await _connected(rig, address)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_bluetoothd_restart_agent_reregistered(rig: Rig, sig: int) -> None:
    """bluetoothd dies (crash or stop) and comes back: the daemon registers its agent again within
    a second of ``org.bluez`` reappearing, sets the adapter up again, and the paired phone is still
    listed; a pairing works with the new bluetoothd."""
    await wait_ready(rig.client, rig.signals, 10)
    _, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 123456, accept=True)
    assert finished[1] is True
    await phones_call(rig.client, "ClosePairingWindow")
    await rig.bluetoothd.stop(sig)
    await poll(lambda: _phones_state(rig, "unavailable"), 10, "daemon noticing bluetoothd gone")
    mon = rig.monitor
    mark = mon.mark()
    powered_before = rig.mgmt.mark()
    await rig.bluetoothd.start()
    appeared = await mon.wait(lambda: mon.owner_appeared(mark), 10)
    req = await mon.wait(lambda: mon.calls("RequestDefaultAgent", mark), 10)
    took = req[0].t - appeared.t
    print(f"agent re-registered {took * 1000:.0f} ms after org.bluez reappeared ({signal.Signals(sig).name})")
    assert 0 <= took < REREGISTER_LIMIT_S
    assert mon.calls("RegisterAgent", mark)[0].t <= req[0].t
    await poll(lambda: _phones_state(rig, "ready"), 10, "daemon ready again")
    if sig == signal.SIGTERM:  # bluetoothd powered the controller off on its way out
        assert [c for c in rig.mgmt.seen("SET_POWERED", powered_before) if c.params[:1] == b"\x01"]
    assert rig.mgmt.ctl.setting(mg.S_POWERED)
    assert PIXEL in await list_phones(rig.client)
    # The new bluetoothd loaded the stored key, and the new agent answers pairings.
    assert PIXEL in rig.mgmt.ctl.link_keys
    reply, again = await phone_pairs(rig, IPHONE, "iPhone", 343434, accept=True)
    assert reply is True and again[1] is True


async def _phones_state(rig: Rig, state: str) -> bool:
    from dashbridge.daemon.dbus.call import get_property

    try:
        return str(await get_property(rig.client, "org.dashbridge", "/org/dashbridge", "org.dashbridge.Phones1",
                                      "State")) == state
    except Exception:
        return False


async def test_link_loss_reported(rig: Rig) -> None:
    """A paired phone's link drops (supervision timeout): bluetoothd 5.66 has no Disconnected
    signal, the daemon reports the disconnection."""
    await wait_ready(rig.client, rig.signals, 10)
    _, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 123456, accept=True)
    assert finished[1] is True
    sig = rig.signals
    await sig.wait(is_signal("PhoneConnected", PIXEL), 10)
    mark = len(sig.messages)
    rig.mgmt.disconnect_phone(PIXEL, mg.DISCONN_TIMEOUT)
    gone = await sig.wait(lambda m: is_signal("PhoneDisconnected", PIXEL)(m)
                          and any(m is x for x in sig.messages[mark:]), 10)
    assert unwrap(list(gone.body))[1] in ("disconnected", "link_loss")


async def _prompt(rig: Rig, address: str, mark: int) -> list[Any]:
    sig = rig.signals
    m = await sig.wait(lambda m: is_signal("PromptRequested")(m) and m.body[2] == address
                       and any(m is x for x in sig.messages[mark:]), 10)
    return list(unwrap(list(m.body)))


async def test_phone_gives_up_while_the_prompt_is_shown(rig: Rig) -> None:
    """The phone aborts the pairing (Authentication Failed) while the dashboard shows the code:
    bluetoothd calls Agent1.Cancel, the daemon takes the prompt down; answering it is NotFound."""
    await wait_ready(rig.client, rig.signals, 10)
    sig, mon = rig.signals, rig.monitor
    mark, mmark = len(sig.messages), mon.mark()
    await open_window(rig)
    rig.mgmt.add_phone(PIXEL, "Pixel 8")
    rig.mgmt.connect_phone(PIXEL)
    await poll(lambda: _connected(rig, PIXEL), 5, "phone connected in bluetoothd")
    pairing = asyncio.ensure_future(rig.mgmt.ssp_pairing(PIXEL, 424242, timeout=15))
    pid = (await _prompt(rig, PIXEL, mark))[0]
    rig.mgmt.abort_pairing(PIXEL)
    assert await asyncio.wait_for(pairing, 5) is None
    await mon.wait(lambda: mon.calls("Cancel", mmark), 5)
    await sig.wait(lambda m: is_signal("PromptCancelled", pid, "cancelled")(m), 5)
    finished = await sig.wait(lambda m: is_signal("PairingFinished", PIXEL)(m)
                              and any(m is x for x in sig.messages[mark:]), 10)
    assert unwrap(list(finished.body))[1] is False
    with pytest.raises(Exception, match="NotFound"):
        await phones_call(rig.client, "AnswerPrompt", "ubs", [pid, True, ""])
    assert not rig.mgmt.seen("USER_CONFIRM_REPLY")
    assert PIXEL not in await list_phones(rig.client)


async def test_bluetoothd_crashes_while_the_prompt_is_shown(rig: Rig) -> None:
    await wait_ready(rig.client, rig.signals, 10)
    sig = rig.signals
    mark = len(sig.messages)
    await open_window(rig)
    rig.mgmt.add_phone(PIXEL, "Pixel 8")
    rig.mgmt.connect_phone(PIXEL)
    await poll(lambda: _connected(rig, PIXEL), 5, "phone connected in bluetoothd")
    pairing = asyncio.ensure_future(rig.mgmt.ssp_pairing(PIXEL, 515151, timeout=15))
    pid = (await _prompt(rig, PIXEL, mark))[0]
    await rig.bluetoothd.stop(signal.SIGKILL)
    await sig.wait(lambda m: is_signal("PromptCancelled", pid, "bluetooth_gone")(m), 5)
    finished = await sig.wait(lambda m: is_signal("PairingFinished", PIXEL)(m)
                              and any(m is x for x in sig.messages[mark:]), 5)
    assert unwrap(list(finished.body))[1:] == [False, "bluetooth_restarted"]
    assert await asyncio.wait_for(pairing, 5) is None  # nobody answered the controller
    await rig.bluetoothd.start()
    await poll(lambda: _phones_state(rig, "ready"), 10, "daemon ready again")


async def test_forget_removes_the_bond_from_bluetoothd(rig: Rig) -> None:
    """Forget: bluetoothd's RemoveDevice, which reaches the controller as Unpair Device (with
    disconnect) and deletes bluetoothd's storage for the phone."""
    await wait_ready(rig.client, rig.signals, 10)
    _, finished = await phone_pairs(rig, PIXEL, "Pixel 8", 123456, accept=True)
    assert finished[1] is True
    assert "[LinkKey]" in rig.bluetoothd.device_info(PIXEL)
    mark = rig.mgmt.mark()
    await phones_call(rig.client, "Forget", "s", [PIXEL])
    await rig.signals.wait(is_signal("PhoneForgotten", PIXEL), 5)
    unpair = await rig.mgmt.wait_until(lambda: rig.mgmt.seen("UNPAIR_DEVICE", mark), 5)
    assert mg.addr_str(unpair[0].params) == PIXEL and unpair[0].params[7] == 1
    await poll(lambda: rig.bluetoothd.device_info(PIXEL) == "", 5, "bluetoothd deleting the phone's storage")
    assert PIXEL not in await list_phones(rig.client)
