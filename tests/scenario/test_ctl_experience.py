"""dashbridgectl as a developer uses it against a simulated world: every area answers in human form
and with --json, and every failure is one clear line on stderr with a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

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


async def test_json_after_the_sub_command_and_json_errors(world: World) -> None:
    after = await ctl(world, "contacts", "search", "mum", "--json")
    assert after.rc == 0 and [c["Name"] for c in json.loads(after.out)] == ["Mum"]
    failed = await ctl(world, "hangup", "nope", "--json")
    assert failed.rc == 1
    doc = json.loads(failed.out)  # scripts get the error as JSON on stdout too
    assert doc["error"]["code"] == "NotFound" and doc["error"]["name"] == "org.dashbridge.Error.NotFound"
    assert failed.err.startswith("dashbridgectl: NotFound")


async def test_search_says_when_it_stopped_at_the_limit_and_show_says_there_is_no_photo(
        world: World, tmp_path: Path) -> None:
    capped = await ctl(world, "contacts", "search", "mum", "--limit", "1")
    assert capped.rc == 0 and "Mum" in capped.out
    assert "the first 1 matches; --limit N" in capped.err
    uncapped = await ctl(world, "contacts", "search", "mum")
    assert uncapped.err == ""
    (cid,) = [c["Id"] for c in json.loads((await ctl(world, "--json", "contacts", "search", "mum")).out)]
    photo = tmp_path / "mum.jpg"
    shown = await ctl(world, "contacts", "show", str(cid), "--photo", str(photo))
    assert shown.rc == 1 and "Mum" in shown.out
    assert f"contact {cid} has no photo" in shown.err and not photo.exists()


async def test_monitor_stamps_lines_follows_a_daemon_restart_and_stops_with_the_bus(world: World) -> None:
    env = dict(os.environ, **world.env())
    proc = await asyncio.create_subprocess_exec(*CTL, "monitor", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert b"monitoring" in await asyncio.wait_for(proc.stderr.readline(), 10)
    await world.restart_daemon()

    async def line_with(text: str) -> str:
        async with asyncio.timeout(15):
            while True:
                raw = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
                assert raw, "monitor ended early"
                if text in raw:
                    return raw

    left = await line_with("org.dashbridge left the bus")
    import re

    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} ", left), left
    await line_with("org.dashbridge is on the bus")
    await line_with("Phones1.")  # the new daemon's signals are followed too
    proc.terminate()
    await asyncio.wait_for(proc.communicate(), 15)

    # A bus that goes away (here a private one of its own, so the world's bus stays up)
    from dashbridge.simulator.bus import PrivateBus

    bus = PrivateBus("system").start()
    try:
        lone = await asyncio.create_subprocess_exec(*CTL, "--address", bus.address, "monitor", env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert lone.stderr is not None
        assert b"monitoring" in await asyncio.wait_for(lone.stderr.readline(), 10)
    finally:
        bus.stop()
    _out, err = await asyncio.wait_for(lone.communicate(), 15)
    assert lone.returncode == 1 and b"the bus went away" in err


async def test_pair_a_phone_by_address_with_the_window_closed_and_a_pin_alone() -> None:
    nokia = VirtualPhone("00:02:EE:11:22:33", name="Nokia 6310i", pairing="legacy_pin", pin="4711",
                         profiles=("hfp", "pbap"))
    w = World(WorldSpec(phones=[nokia], config={"bluetooth": {"prompt_timeout": "10s"}}))
    await w.start()
    try:
        # The window is closed: pair opens it, waits until the car has found the phone, pairs
        # from the car, and --pin answers the PIN prompt by itself (no --accept needed).
        r = await ctl(w, "pair", "--phone", "00:02:ee:11:22:33", "--pin", "4711", timeout=40)
        assert r.rc == 0, r
        assert "paired with 00:02:EE:11:22:33" in r.out
    finally:
        await w.stop()


async def test_messages_refresh_without_a_phone_asks_the_primary(world: World) -> None:
    assert world.dashboard is not None
    await world.dashboard.wait_for(
        lambda e: e.short == "Messages1.PropertiesChanged"
        and e.named["changed"].get("Phones", {}).get(ALICE, [""])[0] in ("ready", "polling"), 15.0)
    world.deliver_message(ALICE, "SMS_GSM", "+447700900456", "are you on your way?")
    r = await ctl(world, "messages", "refresh")
    assert r.rc == 0, r
    assert "new message(s)" in r.out
