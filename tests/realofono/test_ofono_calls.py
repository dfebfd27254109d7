"""The daemon's call path against the real ofonod (Debian package ``ofono``), end to end:

dashboard client -> org.dashbridge.Calls1 -> dashbridged (its bluetooth + calls components) ->
org.ofono (real ofonod, on a private system bus) -> Profile1.NewConnection from the fake
bluetoothd -> AT commands on a socketpair answered by a test phone (``atphone.py``).

Nothing here is mocked but the radio: ofonod runs its real HFP plugin and AT parser.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.simulator.bluez import BluezTimings
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.phone import VirtualPhone
from tests.realofono.atphone import ACTIVE, HELD, INCOMING, WAITING, ATPhone
from tests.realofono.support import Dashboard, HfpBluez, Ofonod

A = "AA:00:00:00:00:01"
B = "BB:00:00:00:00:02"
MODEM_A = "/hfp/org/bluez/hci0/dev_AA_00_00_00_00_01"
DAEMON_CONFIG = {
    "log_level": "debug",
    "calls": {"ofono_timeout": "3s", "connect_timeout": "10s", "restart_grace": "10s"},
}


@dataclass
class Rig:
    bluez: HfpBluez
    ofono: Ofonod
    phone: ATPhone
    daemon: DaemonProcess
    dash: Dashboard
    second: ATPhone  # B, the secondary phone

    def diagnostics(self) -> str:
        return (f"--- ofonod ---\n{self.ofono.log()[-6000:]}\n--- dashbridged ---\n{self.daemon.log()[-20000:]}\n"
                f"--- AT ---\n{self.phone.received}")


@pytest.fixture
async def rig(request: pytest.FixtureRequest, system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess],
              client: MessageBus, tmp_path: Path) -> AsyncIterator[Rig]:
    bluez = await HfpBluez.start(system_bus.address, [], timings=BluezTimings.fast())
    phone = ATPhone(A)
    bluez.at_phones[A] = phone
    second = ATPhone(B, operator="OtherNet")
    bluez.at_phones[B] = second
    # Two phones paired and connected before dashbridged started (it adopts them; A is first).
    bluez.add_phone(VirtualPhone(A, name="Pixel"), paired=True, connected=True)
    bluez.add_phone(VirtualPhone(B, name="iPhone"), paired=True, connected=True)
    ofono = Ofonod(system_bus.address, tmp_path / "ofonod.log")
    dash = await Dashboard(client).subscribe()
    daemon = daemon_factory(DAEMON_CONFIG, start=False)
    rig = Rig(bluez, ofono, phone, daemon, dash, second)
    try:
        await ofono.start(bluez)
        daemon.start(wait_ready=False)
        await daemon.await_ready()
        # Service-level connection up: the daemon powered the modem, ofonod asked bluetoothd for
        # the HFP connection, the handshake ran over AT, and the dashboard hears the phone is ready.
        await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], timeout=20)
        await dash.wait("PhoneChanged", lambda b: b[0] == B and b[1]["Ready"], timeout=20)
        yield rig
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(rig.diagnostics())
    except BaseException:
        print(rig.diagnostics())
        raise
    finally:
        daemon.stop()
        await ofono.stop()
        await bluez.stop()


async def test_service_level_connection_up(rig: Rig) -> None:
    at = rig.phone.received
    for cmd in ("AT+BRSF=", "AT+CIND=?", "AT+CIND?", "AT+CMER=3,0,0,1", "AT+CHLD=?", "AT+CLIP=1", "AT+CCWA=1"):
        assert any(c.startswith(cmd) for c in at), cmd
    assert next(c for c in at if c.startswith("AT+BRSF")) == at[0]  # BRSF opens the handshake
    # Operator (AT+COPS?), signal and battery (CIND signal 4, battchg 5, scaled by 20) follow as
    # ofonod learns them after its atoms registered.
    await rig.dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Operator"] == "SimNet"
                        and b[1]["Signal"] == 80 and b[1]["Battery"] == 100)
    (phones,) = await rig.dash.api("GetPhones")
    st = next(p for p in phones if p["Address"] == A)
    assert (st["Address"], st["Name"], st["Ready"], st["Role"]) == (A, "Pixel", True, "primary")
    assert st["Registration"] == "registered"


async def test_incoming_call_answer_and_hang_up(rig: Rig) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    phone.ring("+447700900123")  # RING, +CLIP, +CIEV callsetup=1
    added = await dash.wait("CallAdded", lambda b: b[1]["Number"] == "+447700900123", after=mark)
    cid, call = added[0], added[1]
    assert (call["State"], call["Direction"], call["Phone"], call["Name"]) == \
        ("incoming", "incoming", A, "+447700900123")

    n = len(phone.received)
    await dash.api("Answer", "s", [cid])
    await phone.wait_command("ATA", after=n)
    active = await dash.state(cid, "active", after=mark)
    assert active["StartTime"] > 0
    assert phone.stat_of("+447700900123") == ACTIVE

    n = len(phone.received)
    await dash.api("Hangup", "s", [cid])
    await phone.wait_command("AT+CHUP", after=n)
    removed = await dash.wait("CallRemoved", lambda b: b[0] == cid, after=mark)
    assert removed[1] == "local"
    assert phone.calls == {}
    assert (await dash.api("GetCalls")) == [[]]


async def test_outgoing_call_and_remote_hangup(rig: Rig) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    n = len(phone.received)
    (cid,) = await dash.api("Dial", "ss", ["+44 20 7946 0958", ""])
    assert await phone.wait_command("ATD", after=n) == "ATD+442079460958;"
    added = await dash.wait("CallAdded", lambda b: b[0] == cid, after=mark)
    assert (added[1]["State"], added[1]["Direction"], added[1]["Number"]) == ("dialing", "outgoing", "+442079460958")
    phone.remote_alerting()  # +CIEV callsetup=3
    await dash.state(cid, "alerting", after=mark)
    phone.remote_answer()  # +CIEV call=1, callsetup=0
    await dash.state(cid, "active", after=mark)
    n = len(phone.received)
    await dash.api("SendTones", "ss", [cid, "1#"])
    await phone.wait(lambda: "1#" in phone.dtmf)
    phone.remote_hangup()  # +CIEV call=0
    removed = await dash.wait("CallRemoved", lambda b: b[0] == cid, after=mark)
    assert removed[1] == "remote"


async def test_bad_numbers_never_reach_ofono(rig: Rig) -> None:
    n = len(rig.phone.received)
    for bad in ("call mum", "1" * 200):
        try:
            await rig.dash.api("Dial", "ss", [bad, ""])
        except Exception as exc:
            assert "InvalidArguments" in str(exc)
        else:
            raise AssertionError(f"dialled {bad!r}")
    assert not [c for c in rig.phone.received[n:] if c.startswith("ATD")]


async def test_call_waiting_answered_and_swapped(rig: Rig) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    phone.ring("5550001")
    first = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark))[0]
    await dash.api("Answer", "s", [first])
    await dash.state(first, "active", after=mark)

    phone.ring("5550002")  # a second caller during the call: +CCWA
    second = await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550002", after=mark)
    assert second[1]["State"] == "waiting"
    assert phone.stat_of("5550002") == WAITING

    n = len(phone.received)
    await dash.api("Answer", "s", [second[0]])  # HoldAndAnswer
    assert await phone.wait_command("AT+CHLD", after=n) == "AT+CHLD=2"
    await dash.state(second[0], "active", after=mark)
    await dash.state(first, "held", after=mark)
    assert (phone.stat_of("5550001"), phone.stat_of("5550002")) == (HELD, ACTIVE)

    mark2 = dash.mark()
    await dash.api("Swap", "s", [""])
    await dash.state(first, "active", after=mark2)
    await dash.state(second[0], "held", after=mark2)
    await dash.api("HangupAll", "s", [""])
    await dash.wait("CallRemoved", lambda b: b[0] == first, after=mark2)
    await dash.wait("CallRemoved", lambda b: b[0] == second[0], after=mark2)


async def test_rejecting_a_waiting_call(rig: Rig) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    phone.ring("5550001")
    first = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark))[0]
    await dash.api("Answer", "s", [first])
    await dash.state(first, "active", after=mark)
    phone.ring("5550002")
    second = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550002", after=mark))[0]
    n = len(phone.received)
    await dash.api("Hangup", "s", [second])
    assert await phone.wait_command("AT+CHLD", after=n) == "AT+CHLD=0"  # UDUB
    await dash.wait("CallRemoved", lambda b: b[0] == second, after=mark)
    assert phone.stat_of("5550001") == ACTIVE


async def test_answer_after_the_caller_gave_up(rig: Rig) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    phone.ring("5550001")
    cid = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark))[0]
    assert phone.stat_of("5550001") == INCOMING
    phone.remote_hangup()
    await dash.wait("CallRemoved", lambda b: b[0] == cid, after=mark)
    try:
        await dash.api("Answer", "s", [cid])
    except Exception as exc:
        assert "NotFound" in str(exc)
    else:
        raise AssertionError("answered a call that is gone")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_ofonod_restart_mid_call_rebuilds_the_call(rig: Rig, how: int) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    phone.ring("5550001")
    cid = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark))[0]
    await dash.api("Answer", "s", [cid])
    started = (await dash.state(cid, "active", after=mark))["StartTime"]
    assert started > 0

    mark = dash.mark()
    # SIGTERM: ofonod removes its modems, then leaves; SIGKILL: it just vanishes.  Either way the
    # RFCOMM fd dies with it and the call goes on on the phone.
    await rig.ofono.stop(how)
    await rig.ofono.start(rig.bluez)
    await dash.wait("PhoneChanged", lambda b: b[0] == A and not b[1]["Ready"], after=mark, timeout=15)
    await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark, timeout=20)
    back = await dash.wait("CallChanged", lambda b: b[0] == cid and b[1]["State"] == "active", after=mark,
                           timeout=15)
    assert back[1]["Number"] == "5550001"
    # ofonod 1.31 re-learnt the call from AT+CLCC and says StartTime 1970-01-01T00:00:00+0000: the
    # daemon keeps the start it knew (the dashboard's call duration goes on).
    assert back[1]["StartTime"] == started
    (ofono_calls,) = await call(rig.dash.bus, "org.ofono", MODEM_A, "org.ofono.VoiceCallManager", "GetCalls")
    assert [unwrap(props)["StartTime"] for _path, props in ofono_calls] == ["1970-01-01T00:00:00+0000"]
    assert rig.phone.sessions == 2  # a second service-level connection, from the new ofonod
    (calls,) = await dash.api("GetCalls")
    assert [(c["Id"], c["State"]) for c in calls] == [(cid, "active")]
    n = len(phone.received)
    await dash.api("Hangup", "s", [cid])
    await phone.wait_command("AT+CHUP", after=n)
    await dash.wait("CallRemoved", lambda b: b[0] == cid, after=mark)


async def test_hfp_link_lost_mid_call(rig: Rig) -> None:
    dash, phone = rig.dash, rig.phone
    mark = dash.mark()
    phone.ring("5550001")
    cid = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark))[0]
    await dash.api("Answer", "s", [cid])
    await dash.state(cid, "active", after=mark)
    rig.phone.set_battery(2)  # also: indicators reach the dashboard
    await dash.wait("PhoneChanged", lambda b: b[1]["Battery"] == 40, after=mark)
    mark = dash.mark()
    rig.bluez.drop_hfp(A)  # the RFCOMM link drops; ofonod sees the socket close
    ended = await dash.state(cid, "disconnected", after=mark)
    assert ended["DisconnectReason"] == "link-lost"
    assert (await dash.wait("CallRemoved", lambda b: b[0] == cid, after=mark))[1] == "link-lost"
    # The daemon powers the modem again; the phone still has the call, which comes back.
    await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark, timeout=20)
    again = await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark)
    assert again[1]["State"] == "active" and again[0] != cid


async def test_two_phones_calls_are_told_apart(rig: Rig) -> None:
    dash = rig.dash
    mark = dash.mark()
    rig.second.ring("5550002")  # the secondary phone rings
    cb = await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550002", after=mark)
    assert (cb[1]["Phone"], cb[1]["PhoneName"]) == (B, "iPhone")
    n = len(rig.second.received)
    await dash.api("Answer", "s", [cb[0]])
    await rig.second.wait_command("ATA", after=n)
    await dash.state(cb[0], "active", after=mark)
    # Dialling without naming a phone uses the primary; the secondary's call is untouched.
    na, nb = len(rig.phone.received), len(rig.second.received)
    (ca,) = await dash.api("Dial", "ss", ["5550001", ""])
    assert await rig.phone.wait_command("ATD", after=na) == "ATD5550001;"
    assert not [c for c in rig.second.received[nb:] if c.startswith("ATD")]
    (calls,) = await dash.api("GetCalls")
    assert {c["Id"]: c["Phone"] for c in calls} == {cb[0]: B, ca: A}
    await dash.wait("PhoneChanged", lambda b: b[0] == B and b[1]["Operator"] == "OtherNet")
    await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Operator"] == "SimNet")
    (phones,) = await dash.api("GetPhones")
    assert {p["Address"]: (p["Role"], p["Operator"]) for p in phones} == {A: ("primary", "SimNet"),
                                                                          B: ("secondary", "OtherNet")}


async def test_ofonod_that_does_not_answer(rig: Rig) -> None:
    """ofonod frozen (SIGSTOP): a request fails with Timeout after calls.ofono_timeout (3 s here),
    the daemon keeps answering; once ofonod runs again everything works — including the late
    dial, which the phone then places and the dashboard sees as an outgoing call."""
    import os
    import time

    dash = rig.dash
    assert rig.ofono.proc is not None
    os.kill(rig.ofono.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        try:
            await dash.api("Dial", "ss", ["5550001", ""])
        except Exception as exc:
            assert "Timeout" in str(exc)
        else:
            raise AssertionError("dialled through a frozen ofonod")
        assert 2.5 < time.monotonic() - t0 < 6
        t0 = time.monotonic()
        assert (await dash.api("GetCalls")) == [[]]  # no wedge
        assert time.monotonic() - t0 < 1
    finally:
        os.kill(rig.ofono.proc.pid, signal.SIGCONT)
    mark = dash.mark()
    late = await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", timeout=10)
    assert late[1]["Direction"] == "outgoing"
    await dash.api("Hangup", "s", [late[0]])
    await dash.wait("CallRemoved", lambda b: b[0] == late[0], after=mark)


async def test_phone_refusing_ata_is_failed_and_the_call_keeps_ringing(rig: Rig) -> None:
    """+CME ERROR: 3 to ATA: ofonod answers org.ofono.Error.Failed and the call still rings."""
    dash, phone = rig.dash, rig.phone
    phone.refuse_answer = True
    mark = dash.mark()
    phone.ring("5550001")
    cid = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark))[0]
    n = len(phone.received)
    with pytest.raises(Exception) as err:
        await dash.api("Answer", "s", [cid])
    assert "org.dashbridge.Error.Failed" in str(err.value) and "refused" in str(err.value)
    await phone.wait_command("ATA", after=n)
    (calls,) = await dash.api("GetCalls")
    assert [(c["Id"], c["State"]) for c in calls] == [(cid, "incoming")]
    phone.refuse_answer = False
    await dash.api("Answer", "s", [cid])
    await dash.state(cid, "active", after=mark)


async def test_the_daemon_recovers_each_time_ofonod_dies(rig: Rig) -> None:
    """ofonod 1.31 aborts on non-UTF-8 text from a phone; systemd/ofono-restart.conf restarts it.
    Killed three times (SIGKILL, as the abort), restarted as systemd would: each time the daemon
    powers the modems again and calls work."""
    dash, phone = rig.dash, rig.phone
    def not_ready(b: list[Any]) -> bool:
        return bool(b[0] == A and not b[1]["Ready"])

    for round_ in range(3):
        mark = dash.mark()
        await rig.ofono.stop(signal.SIGKILL)
        await dash.wait("PhoneChanged", not_ready, after=mark, timeout=15)
        # Ready again only counts after that (a Ready sent just before the kill may arrive late).
        gone = next(i for i in range(mark, len(dash.signals))
                    if dash.signals[i][0] == "PhoneChanged" and not_ready(dash.signals[i][1]))
        await rig.ofono.start(rig.bluez)
        # A new service-level connection from the new ofonod (the daemon powered the modem again).
        await phone.wait(lambda r=round_: phone.sessions >= r + 2 and phone.slc.is_set(), timeout=20)
        await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=gone + 1, timeout=20)
    mark = dash.mark()
    phone.ring("5550002")
    cid = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550002", after=mark))[0]
    await dash.api("Answer", "s", [cid])
    await dash.state(cid, "active", after=mark)
    assert "Traceback" not in rig.daemon.log()
