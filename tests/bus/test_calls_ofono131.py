"""oFono 1.31 as observed beside the real ofonod (issue 13): the fake replies before it signals,
re-learnt calls carry the 1970 StartTime, a phone may answer any command with ERROR or slowly; the
daemon keeps a call's start time and says "the phone refused" when ATA is refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import Variant

from dashbridge.daemon.dbus import names
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.ofono import RELEARNT_START_TIME, FakeOfono
from tests.bus.test_calls_fake_ofono import MP, VCM, Client, env, power
from tests.bus.test_calls_world import A, CallsWorld, calls_world

__all__ = ["env"]


@pytest.fixture
async def world(system_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[CallsWorld]:
    async with calls_world(system_bus, tmp_path) as w:
        yield w


async def test_fake_replies_to_powered_before_it_signals(env: tuple[FakeOfono, Client]) -> None:
    _fake, c = env
    start = len(c.log)
    await c.call(MP, names.OFONO_MODEM_IFACE, "SetProperty", "sv", ["Powered", Variant("b", True)])
    await c.until(lambda: any(b[0] == "Online" for _p, b in c.signals("PropertyChanged")))
    kinds = [(k, m, b[0] if b else "") for k, _p, m, b in c.log[start:]]
    assert kinds.index(("reply", "", "")) < kinds.index(("signal", "PropertyChanged", "Powered"))


async def test_fake_relearnt_calls_have_the_1970_start_time(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    fake.incoming_call(A, "5550001")
    await c.until(lambda: bool(c.signals("CallAdded")))
    path = c.signals("CallAdded")[0][1][0]
    await c.call(path, names.OFONO_VOICECALL_IFACE, "Answer")
    (calls,) = await c.call(MP, VCM, "GetCalls")
    assert calls[0][1]["StartTime"] != RELEARNT_START_TIME
    await fake.restart(graceful=False)
    await power(c)
    await c.until(lambda: len(c.signals("CallAdded")) >= 2)
    assert c.signals("CallAdded")[-1][1][1]["StartTime"] == RELEARNT_START_TIME


async def test_fake_per_command_error_and_slow_answers(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    fake.incoming_call(A, "5550001")
    await c.until(lambda: bool(c.signals("CallAdded")))
    path = c.signals("CallAdded")[0][1][0]
    fake.set_command_fault("Answer")  # ATA -> +CME ERROR: 3
    assert await c.error(path, names.OFONO_VOICECALL_IFACE, "Answer") == names.OFONO_ERR_FAILED
    (calls,) = await c.call(MP, VCM, "GetCalls")
    assert calls[0][1]["State"] == "incoming"  # still ringing
    fake.set_command_fault("Answer", "", 0.3)  # a slow phone: OK late
    t0 = time.monotonic()
    await c.call(path, names.OFONO_VOICECALL_IFACE, "Answer")
    assert time.monotonic() - t0 >= 0.25
    (calls,) = await c.call(MP, VCM, "GetCalls")
    assert calls[0][1]["State"] == "active"


async def test_refused_answer_is_failed_and_the_call_keeps_ringing(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5550001")
    world.fake.set_command_fault("Answer")
    err = await world.api_error("Answer", "s", [c["Id"]])
    assert err.name == names.DB_ERR_FAILED and "refused" in err.text
    assert [x["State"] for x in await world.calls()] == ["incoming"]
    world.fake.clear_command_faults()
    await world.api("Answer", "s", [c["Id"]])
    await world.state(c["Id"], "active")


@pytest.mark.parametrize("how", ["sigterm", "crash", "link_loss"])
async def test_the_start_time_survives_relearning(world: CallsWorld, how: str) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5550001")
    await world.api("Answer", "s", [c["Id"]])
    await world.state(c["Id"], "active")
    start = next(x for x in await world.calls() if x["Id"] == c["Id"])["StartTime"]
    assert start > 0
    mark = world.mark()
    if how == "link_loss":
        world.fake.link_loss(A)
    else:
        await world.fake.restart(graceful=how == "sigterm")
    await world.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark, timeout=10)
    await world.wait("CallChanged", lambda b: b[1]["State"] == "active", after=mark, timeout=10) \
        if how != "link_loss" else await world.wait("CallAdded", after=mark, timeout=10)
    calls = await world.calls()
    assert len(calls) == 1
    if how != "link_loss":
        assert calls[0]["StartTime"] == start  # not overwritten with 1970
    else:
        # The link went: the call ended for the daemon and came back as a new one whose start oFono
        # does not know (1970): its clock starts when it is seen again, never 1970 (56 years).
        assert calls[0]["StartTime"] >= start


async def test_fake_hangup_all_replies_after_the_hang_ups(env: tuple[FakeOfono, Client]) -> None:
    fake, c = env
    await power(c)
    fake.incoming_call(A, "1")
    fake.remote_answer(A)
    fake.call_waiting(A, "2")
    await c.call(MP, VCM, "HoldAndAnswer")
    await c.until(lambda: len(c.signals("CallAdded")) >= 2)
    mark = len(c.log)
    await c.call(MP, VCM, "HangupAll")
    kinds = [(k, m) for k, _p, m, _b in c.log[mark:]]
    removed = [i for i, km in enumerate(kinds) if km == ("signal", "CallRemoved")]
    assert len(removed) == 2 and kinds.index(("reply", "")) > removed[-1]
