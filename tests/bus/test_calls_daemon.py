"""Calls through the real dashbridged process, with the simulator's fake bluetoothd and fake oFono:
the developer story — receive, answer, hold, take a waiting call, swap and hang up, all with
``dashbridgectl`` — plus two phones and the relay of the incoming-call signal."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.ofono import FakeOfono
from dashbridge.simulator.phone import VirtualPhone
from tests.realofono.support import Dashboard

A = "AA:00:00:00:00:01"
B = "BB:00:00:00:00:02"


@dataclass
class Sim:
    bus: PrivateBus
    bluez: FakeBluez
    ofono: FakeOfono
    daemon: DaemonProcess
    dash: Dashboard

    async def ctl(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        exe = shutil.which("dashbridgectl", path=os.path.dirname(sys.executable))
        assert exe, "dashbridgectl is not installed in the venv"
        proc = await asyncio.create_subprocess_exec(
            exe, "--address", self.bus.address, "--timeout", "10", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        rc = proc.returncode or 0
        if ok:
            assert rc == 0, f"dashbridgectl {' '.join(args)}: rc {rc}: {err.decode()}"
        return rc, out.decode(), err.decode()

    async def ctl_json(self, *args: str) -> Any:
        _rc, out, _err = await self.ctl("--json", *args)
        return json.loads(out)


@pytest.fixture
async def sim(system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess],
              client: MessageBus) -> AsyncIterator[Sim]:
    phones = [VirtualPhone(A, name="Alice's phone"), VirtualPhone(B, name="Bob's phone")]
    for p in phones:
        p.hfp_alert_after = None  # the test decides when the other end rings
    bluez = await FakeBluez.start(system_bus.address, [], timings=BluezTimings.fast())
    bluez.add_phone(phones[0], paired=True, connected=True)
    ofono = await FakeOfono.start(system_bus.address, phones)
    dash = await Dashboard(client).subscribe()
    daemon = daemon_factory({"calls": {"ofono_timeout": "2s"}}, start=False)
    daemon.start(wait_ready=False)
    try:
        await daemon.await_ready()
        await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], timeout=15)
        yield Sim(system_bus, bluez, ofono, daemon, dash)
    except BaseException:
        print(daemon.log())
        raise
    finally:
        daemon.stop()
        await ofono.stop()
        await bluez.stop()


async def test_developer_story_with_dashbridgectl(sim: Sim) -> None:
    _rc, out, _ = await sim.ctl("calls")
    assert "Alice's phone" in out and "ready" in out and "no calls" in out

    # A call comes in: the dashboard hears it; the developer sees and answers it.
    sim.ofono.incoming_call(A, "+447700900123", "")
    first = (await sim.dash.wait("CallAdded", lambda b: b[1]["Number"] == "+447700900123"))[0]
    _rc, out, _ = await sim.ctl("calls")
    assert first in out and "incoming" in out and "+447700900123" in out
    await sim.ctl("answer")  # the only ringing call
    assert sim.ofono.calls(A)[0].state == "active"

    await sim.ctl("hold", first)
    assert sim.ofono.calls(A)[0].state == "held"
    await sim.ctl("resume")
    assert sim.ofono.calls(A)[0].state == "active"

    # A second caller waits; answering it holds the first; then swap back and forth.
    sim.ofono.call_waiting(A, "5550002")
    second = (await sim.dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550002"))[0]
    await sim.ctl("answer", second)
    assert [c.state for c in sim.ofono.calls(A)] == ["held", "active"]
    await sim.ctl("swap")
    assert [c.state for c in sim.ofono.calls(A)] == ["active", "held"]
    data = await sim.ctl_json("calls")
    assert {c["Id"]: c["State"] for c in data["calls"]} == {first: "active", second: "held"}

    await sim.ctl("tones", first, "12#")
    assert sim.ofono.side(A).phone.extra["dtmf"] == ["12#"]

    # Hang up one, then everything.
    await sim.ctl("hangup", first)
    await sim.dash.wait("CallRemoved", lambda b: b[0] == first)
    await sim.ctl("hangup", "--all")
    await sim.dash.wait("CallRemoved", lambda b: b[0] == second)
    assert sim.ofono.calls(A) == []

    # Dial out; the other party answers, then hangs up.
    data = await sim.ctl_json("dial", "+44 20 7946 0958")
    cid = data["call"]
    sim.ofono.remote_alerting(A)
    sim.ofono.remote_answer(A)
    await sim.dash.state(cid, "active")
    sim.ofono.remote_hangup(A)
    assert (await sim.dash.wait("CallRemoved", lambda b: b[0] == cid))[1] == "remote"


async def test_dashbridgectl_errors_are_one_clear_line(sim: Sim) -> None:
    rc, out, err = await sim.ctl("dial", "call mum", ok=False)
    assert rc != 0 and out == ""
    assert err.startswith("dashbridgectl: InvalidArguments: ") and err.count("\n") == 1
    rc, _out, err = await sim.ctl("answer", ok=False)
    assert rc != 0 and "no ringing call" in err
    rc, _out, err = await sim.ctl("hangup", "call999", ok=False)
    assert rc != 0 and "NotFound" in err
    assert sim.ofono.calls(A) == []


async def test_two_phones_through_the_daemon(sim: Sim) -> None:
    # Bob's phone connects too (as the secondary): its calls are told apart.
    sim.bluez.add_phone(sim.ofono.side(B).phone, paired=True, connected=True)
    await sim.dash.wait("PhoneChanged", lambda b: b[0] == B and b[1]["Ready"] and b[1]["Role"] == "secondary",
                        timeout=15)
    sim.ofono.incoming_call(B, "5550009")
    cb = await sim.dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550009")
    assert cb[1]["Phone"] == B and cb[1]["PhoneName"] == "Bob's phone"
    await sim.ctl("answer", cb[0])
    assert sim.ofono.calls(B)[0].state == "active"
    data = await sim.ctl_json("dial", "5551234")  # on the primary
    assert [c.number for c in sim.ofono.calls(A)] == ["5551234"]
    calls = {c["Id"]: c["Phone"] for c in (await sim.ctl_json("calls"))["calls"]}
    assert calls == {cb[0]: B, data["call"]: A}


async def test_calls_do_not_depend_on_the_cloud(system_bus: PrivateBus, daemon_factory: Callable[..., DaemonProcess],
                                                client: MessageBus) -> None:
    """Cloud switched on but unreachable (nothing listens on the port): calls work all the same."""
    phone = VirtualPhone(A, name="Alice's phone")
    bluez = await FakeBluez.start(system_bus.address, [], timings=BluezTimings.fast())
    bluez.add_phone(phone, paired=True, connected=True)
    ofono = await FakeOfono.start(system_bus.address, [phone])
    dash = await Dashboard(client).subscribe()
    daemon = daemon_factory({"cloud": {"enabled": True, "url": "https://127.0.0.1:9", "vehicle_id": "WDB0000000000001",
                                       "request_timeout": "1s"}}, start=False)
    daemon.start(wait_ready=False)
    try:
        await daemon.await_ready()
        await dash.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], timeout=15)
        ofono.incoming_call(A, "5550001")
        cid = (await dash.wait("CallAdded", lambda b: b[1]["Number"] == "5550001"))[0]
        await dash.api("Answer", "s", [cid])
        await dash.state(cid, "active")
        await dash.api("Hangup", "s", [cid])
        await dash.wait("CallRemoved", lambda b: b[0] == cid)
    except BaseException:
        print(daemon.log())
        raise
    finally:
        daemon.stop()
        await ofono.stop()
        await bluez.stop()
