"""dashbridgectl as a developer uses it against a simulated world: every area answers in human form
and with --json, and every failure is one clear line on stderr with a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.scenario import _add_contacts
from dashbridge.simulator.world import World, WorldSpec

ALICE = "AA:BB:CC:DD:EE:01"
CTL = [sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())"]


@dataclass
class Ran:
    rc: int
    out: str
    err: str


@pytest.fixture
async def world() -> AsyncIterator[World]:
    alice = VirtualPhone(ALICE, name="Alice's Pixel", bonded=True)
    _add_contacts(alice, [{"name": "Mum", "number": "+44 7700 900123"}])
    w = World(WorldSpec(phones=[alice]))
    await w.start()
    try:
        assert w.dashboard is not None
        await w.dashboard.wait_for(lambda e: e.member == "PhoneConnected", 10.0)
        await w.dashboard.wait_for(lambda e: e.member == "SyncStateChanged"
                                   and e.named.get("state", {}).get("State") == "synced", 10.0)
        yield w
    finally:
        await w.stop()


async def ctl(w: World, *args: str, timeout: float = 20.0) -> Ran:
    env = dict(os.environ, **w.env())
    proc = await asyncio.create_subprocess_exec(
        *CTL, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


AREAS = [("status",), ("phones",), ("calls",), ("contacts",), ("contacts", "search", "mum"), ("messages",),
         ("nav",), ("cloud",)]


async def test_every_area_answers_in_human_form_and_in_json(world: World) -> None:
    for area in AREAS:
        human = await ctl(world, *area)
        assert human.rc == 0, (area, human)
        assert human.out.strip() and human.err == "", (area, human)
        with pytest.raises(ValueError):
            json.loads(human.out)  # human output is not JSON
        machine = await ctl(world, "--json", *area)
        assert machine.rc == 0, (area, machine)
        json.loads(machine.out)
    phones = json.loads((await ctl(world, "--json", "phones")).out)
    assert [(p["Address"], p["State"], p["Role"]) for p in phones] == [(ALICE, "connected", "primary")]
    found = json.loads((await ctl(world, "--json", "contacts", "search", "mum")).out)
    assert [c["Name"] for c in found] == ["Mum"]


async def test_a_call_from_the_command_line(world: World) -> None:
    ofono = world.fake("ofono")
    ofono.incoming_call(ALICE, "+447700900123")
    assert world.dashboard is not None
    await world.dashboard.wait_for(lambda e: e.member == "CallAdded", 5.0)
    calls = await ctl(world, "calls")
    assert "Mum" in calls.out and "incoming" in calls.out
    assert (await ctl(world, "answer")).rc == 0
    listed = json.loads((await ctl(world, "--json", "calls")).out)
    assert [c["State"] for c in listed["calls"]] == ["active"]
    assert (await ctl(world, "hangup", listed["calls"][0]["Id"])).rc == 0
    dialled = await ctl(world, "dial", "+44 20 7946 0958")
    assert dialled.rc == 0, dialled


async def test_monitor_follows_signals(world: World) -> None:
    env = dict(os.environ, **world.env())
    proc = await asyncio.create_subprocess_exec(
        *CTL, "--json", "monitor", "--count", "1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    # monitor says on stderr when its match rule is in place; then the signal is made
    line = await asyncio.wait_for(proc.stderr.readline(), 10)
    assert b"monitoring" in line
    world.fake("ofono").incoming_call(ALICE, "+447700900123")
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    lines = out.decode().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["member"] in ("CallAdded", "PropertiesChanged", "PhoneChanged")


async def test_failures_are_one_clear_line_and_a_non_zero_exit(world: World) -> None:
    cases = [
        (("dial", "abc"), "InvalidArguments"),
        (("hangup", "nope"), "NotFound"),
        (("forget", "zz"), "InvalidArguments"),
        (("nav", "accept", "nope"), "NotFound"),
        (("connect", "AA:BB:CC:DD:EE:99"), "NotFound"),
    ]
    for args, word in cases:
        r = await ctl(world, *args)
        assert r.rc != 0, (args, r)
        assert r.out == "", (args, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dashbridgectl: ") and word in lines[0], (args, r)
    await world.stop_daemon()
    gone = await ctl(world, "status")
    assert gone.rc != 0 and gone.err.strip() == "dashbridgectl: the dashbridge daemon is not running"
