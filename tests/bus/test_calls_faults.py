"""Calls when things go wrong: a hung oFono, oFono restarting mid-call, the HFP link dropping
mid-call, oFono absent at start, and garbage from the bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import Variant

from dashbridge.daemon.config import Duration
from dashbridge.daemon.dbus import names
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.ofono import modem_path
from tests.bus.test_calls_world import A, B, CallsWorld, calls_world


@pytest.fixture
async def world(system_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[CallsWorld]:
    async with calls_world(system_bus, tmp_path) as w:
        yield w


async def active_call(world: CallsWorld, address: str = A, number: str = "5550001") -> str:
    c = await world.incoming(address, number)
    await world.api("Answer", "s", [c["Id"]])
    await world.state(c["Id"], "active")
    return str(c["Id"])


async def test_an_ofono_that_does_not_answer_gives_a_timeout_and_no_wedge(world: CallsWorld) -> None:
    await world.connect_ready(A)
    cid = await active_call(world)
    world.fake.set_unresponsive(True)
    t0 = time.monotonic()
    err = await world.api_error("Dial", "ss", ["5559999", ""])
    took = time.monotonic() - t0
    assert err.name == names.DB_ERR_TIMEOUT
    assert took < 1.0 + 1.0  # calls.ofono_timeout is 1 s in this world
    # Meanwhile the daemon answers and events still flow.
    hung = asyncio.ensure_future(world.api_error("Hangup", "s", [cid]))
    calls = await asyncio.wait_for(world.calls(), 0.5)
    assert [c["Id"] for c in calls] == [cid]
    mark = world.mark()
    world.fake.set_battery(A, 2)
    await world.wait("PhoneChanged", lambda b: b[1]["Battery"] == 40, after=mark)
    assert (await hung).name == names.DB_ERR_TIMEOUT
    # oFono recovers: everything works again.
    world.fake.set_unresponsive(False)
    await world.api("Hangup", "s", [cid])
    await world.wait("CallRemoved", lambda b: b[0] == cid)


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "crash"])
async def test_ofono_restart_mid_call_keeps_the_call_and_tells_the_dashboard(world: CallsWorld, graceful: bool
                                                                             ) -> None:
    await world.connect_ready(A)
    cid = await active_call(world)
    start = next(c for c in await world.calls() if c["Id"] == cid)["StartTime"]
    mark = world.mark()
    await world.fake.restart(graceful=graceful)  # SIGTERM: ModemRemoved first, then the name goes
    # The dashboard is told the phone's link went down and came back...
    await world.wait("PhoneChanged", lambda b: b[0] == A and not b[1]["Ready"], after=mark)
    await world.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark)
    # ...and that the call, rebuilt from the new oFono, is still the same call.
    back = await world.wait("CallChanged", lambda b: b[0] == cid and b[1]["State"] == "active", after=mark)
    assert back[1]["StartTime"] == start
    calls = await world.calls()
    assert [(c["Id"], c["State"], c["Number"]) for c in calls] == [(cid, "active", "5550001")]
    assert not [b for m, b in world.signals[mark:] if m in ("CallRemoved", "CallAdded")]
    # And it can be controlled through the new oFono.
    await world.api("Hangup", "s", [cid])
    assert (await world.wait("CallRemoved", lambda b: b[0] == cid))[1] == "local"


async def test_ofono_restart_call_that_ended_meanwhile_is_ended(world: CallsWorld) -> None:
    await world.connect_ready(A)
    keep = await active_call(world, A, "5550001")
    world.fake.call_waiting(A, "5550002")
    gone = (await world.wait("CallAdded", lambda b: b[1]["Number"] == "5550002"))[0]
    await world.fake.stop()
    mark = world.mark()
    # While oFono is away the caller of the waiting call gives up; then ofonod comes back.
    world.fake.side(A).calls.pop(2)
    await world.fake._come_up()
    await world.wait("CallChanged", lambda b: b[0] == keep and b[1]["State"] == "active", after=mark)
    removed = await world.wait("CallRemoved", lambda b: b[0] == gone, after=mark, timeout=6)
    assert removed[1] == "ofono-lost"
    assert [c["Id"] for c in await world.calls()] == [keep]


async def test_ofono_gone_for_good_ends_calls_after_the_grace(system_bus: PrivateBus, tmp_path: Path) -> None:
    async with calls_world(system_bus, tmp_path, restart_grace=Duration(0.3)) as world:
        await world.connect_ready(A)
        cid = await active_call(world)
        mark = world.mark()
        await world.fake.stop()
        # During the grace the call is still listed, and commands say oFono is restarting.
        assert [c["Id"] for c in await world.calls()] == [cid]
        err = await world.api_error("Hangup", "s", [cid])
        assert err.name == names.DB_ERR_NOT_READY
        err = await world.api_error("Dial", "ss", ["5551234", ""])
        assert err.name == names.DB_ERR_NOT_READY
        removed = await world.wait("CallRemoved", lambda b: b[0] == cid, after=mark)
        assert removed[1] == "ofono-lost"
        assert world.health.get("calls") is not None
        assert world.health.get("calls").state == "degraded"  # type: ignore[union-attr]


async def test_hfp_link_lost_mid_call_ends_the_call_with_a_reason_then_recovers(world: CallsWorld) -> None:
    await world.connect_ready(A)
    cid = await active_call(world)
    mark = world.mark()
    world.fake.link_loss(A)
    ended = await world.wait("CallChanged", lambda b: b[0] == cid and b[1]["State"] == "disconnected", after=mark)
    assert ended[1]["DisconnectReason"] == "link-lost"
    assert (await world.wait("CallRemoved", lambda b: b[0] == cid, after=mark))[1] == "link-lost"
    await world.wait("PhoneChanged", lambda b: b[0] == A and not b[1]["Ready"], after=mark)
    # The daemon reconnects the link; the call still running on the handset comes back, as a
    # new call (the dashboard was told the old one ended).
    await world.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark)
    again = await world.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark)
    assert again[0] != cid and again[1]["State"] == "active"


async def test_phone_out_of_range_link_is_retried_not_hammered(world: CallsWorld) -> None:
    world.fake.side(A).phone.in_range = False
    world.connect(A)
    m = world.fake.modem(A)
    assert m is not None
    power = (m.path, names.OFONO_MODEM_IFACE, "SetProperty")

    def attempts() -> list[float]:
        return [t for c, t in zip(world.fake.method_calls, world.fake.call_times, strict=True) if c == power]

    # First attempt at once, the next one along the retry ladder (1 s, then 2 s...).
    await world.fake.wait_until(lambda: len(attempts()) >= 2, timeout=5)
    first, second = attempts()[:2]
    assert second - first >= 0.9
    world.fake.side(A).phone.in_range = True
    mark = world.mark()
    await world.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark, timeout=5)
    assert len(attempts()) <= 3  # no burst of retries once it is back


async def test_ofono_absent_at_start_then_appears(system_bus: PrivateBus, tmp_path: Path) -> None:
    async with calls_world(system_bus, tmp_path) as world:
        await world.fake.stop()
        world.connect(A)
        err = await world.api_error("Dial", "ss", ["5551234", ""])
        assert err.name == names.DB_ERR_NOT_READY
        mark = world.mark()
        await world.fake._come_up()
        await world.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark)
        (cid,) = await world.api("Dial", "ss", ["5551234", ""])
        assert cid


async def test_garbage_from_the_ofono_name_is_dropped(world: CallsWorld) -> None:
    await world.connect_ready(A)
    fake = world.fake
    mp = modem_path(A)
    vcm = names.OFONO_VOICECALL_MANAGER_IFACE
    # Wrong signatures, wrong variant types, unknown paths and states.
    fake._signal(mp, vcm, "CallAdded", "s", ["not a call"])
    fake._signal(mp, vcm, "CallAdded", "oa{sv}", [mp + "/voicecall07", {"State": Variant("i", 3)}])
    fake._signal(mp, vcm, "CallAdded", "oa{sv}", [mp + "/voicecall08", {"State": Variant("s", "exploded")}])
    fake._signal(mp, vcm, "CallRemoved", "s", ["x"])
    fake._signal(mp, names.OFONO_MODEM_IFACE, "PropertyChanged", "s", ["Powered"])
    fake._signal(mp, names.OFONO_MODEM_IFACE, "PropertyChanged", "sv", ["Interfaces", Variant("s", "nope")])
    fake._signal(mp, names.OFONO_HANDSFREE_IFACE, "PropertyChanged", "sv", ["BatteryChargeLevel", Variant("s", "9")])
    fake._signal(mp + "/voicecall09", names.OFONO_VOICECALL_IFACE, "PropertyChanged", "sv",
                 ["State", Variant("s", "active")])
    fake._signal("/", names.OFONO_MANAGER_IFACE, "ModemAdded", "oa{sv}", ["/hfp/x", {"Type": Variant("i", 1)}])
    fake._signal("/", names.OFONO_MANAGER_IFACE, "ModemRemoved", "o", ["/not/a/modem"])
    # A call made up by a stranger who is not org.ofono is ignored too.
    from dbus_fast import Message
    world.client.send(Message.new_signal(mp, vcm, "CallAdded", "oa{sv}",
                                         [mp + "/voicecall05", {"State": Variant("s", "incoming"),
                                                                "LineIdentification": Variant("s", "666")}]))
    # The daemon is still fine: a real call comes through, and nothing else was added.
    c = await world.incoming(A, "5550001")
    calls = await world.calls()
    assert [x["Id"] for x in calls] == [c["Id"]]
    (phones,) = await world.api("GetPhones")
    assert phones[0]["Ready"] is True and phones[0]["Battery"] == 100


async def test_two_phones_link_loss_on_one_leaves_the_other(world: CallsWorld) -> None:
    await world.connect_ready(A)
    await world.connect_ready(B, "secondary")
    ca = await active_call(world, A, "5550001")
    cb = await active_call(world, B, "5550002")
    mark = world.mark()
    world.fake.link_loss(B)
    assert (await world.wait("CallRemoved", lambda b: b[0] == cb, after=mark))[1] == "link-lost"
    assert [c["Id"] for c in await world.calls() if c["Phone"] == A] == [ca]


async def test_modem_removed_while_ofono_stays_ends_calls_after_a_short_wait(world: CallsWorld) -> None:
    await world.connect_ready(A)
    cid = await active_call(world)
    mark = world.mark()
    t0 = time.monotonic()
    world.fake.remove_phone(A)  # e.g. the HFP UUID disappeared: ModemRemoved, oFono stays
    await world.wait("PhoneChanged", lambda b: b[0] == A and not b[1]["Ready"], after=mark)
    assert (await world.wait("CallRemoved", lambda b: b[0] == cid, after=mark))[1] == "link-lost"
    assert time.monotonic() - t0 >= 1.5


async def test_component_restart_rebuilds_from_ofono_and_the_directory(world: CallsWorld) -> None:
    """The supervisor restarts the calls component: what changed meanwhile is caught up."""
    await world.connect_ready(A)
    await world.connect_ready(B, "secondary")
    ca = await active_call(world, A, "5550001")
    cb = await active_call(world, B, "5550002")
    await world.stop()
    world.directory.set_disconnected(B)  # while the component was down
    world.fake.remote_hangup(A)  # A's call ends while nobody listens
    world.fake.incoming_call(A, "5550003")
    mark = world.mark()
    world.start()
    assert (await world.wait("CallRemoved", lambda b: b[0] == cb, after=mark))[1] == "phone-disconnected"
    new = await world.wait("CallAdded", lambda b: b[1]["Number"] == "5550003", after=mark)
    assert (await world.wait("CallRemoved", lambda b: b[0] == ca, after=mark, timeout=6))[1] == "stale"
    assert [c["Id"] for c in await world.calls()] == [new[0]]
