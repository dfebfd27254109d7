"""org.dashbridge.Calls1 against the fake oFono: what a dashboard sees and can do with calls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashbridge.daemon.dbus import names
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.ofono import modem_path
from tests.bus.test_calls_world import A, B, CallsWorld, calls_world


@pytest.fixture
async def world(system_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[CallsWorld]:
    async with calls_world(system_bus, tmp_path) as w:
        yield w


class FakeCallerId:
    def __init__(self, book: dict[tuple[str, str], str]) -> None:
        self.book = book

    def display_name(self, phone: str, number: str) -> str | None:
        return self.book.get((phone, number))


async def test_incoming_call_reaches_the_dashboard_with_number_and_direction(world: CallsWorld) -> None:
    await world.connect_ready(A, name="Alice's phone")
    call = await world.incoming(A, "+447700900123")
    assert call["State"] == "incoming"
    assert call["Direction"] == "incoming"
    assert call["Number"] == "+447700900123"
    # No contacts service: the number is what the dashboard shows.
    assert (call["Name"], call["NameSource"]) == ("+447700900123", "number")
    assert call["PhoneName"] == "Alice's phone"
    assert call["StartTime"] == 0
    assert [c["Id"] for c in await world.calls()] == [call["Id"]]


async def test_caller_name_comes_from_contacts_then_network(world: CallsWorld) -> None:
    world.ctx.services.callerid = FakeCallerId({(A, "+447700900123"): "Mum"})
    await world.connect_ready(A)
    c1 = await world.incoming(A, "+447700900123")
    assert (c1["Name"], c1["NameSource"]) == ("Mum", "contacts")
    world.fake.remote_hangup(A)
    await world.wait("CallRemoved", lambda b: b[0] == c1["Id"])
    c2 = await world.incoming(A, "+441234567890", name="ACME LTD")
    assert (c2["Name"], c2["NameSource"]) == ("ACME LTD", "network")


async def test_a_broken_contacts_service_does_not_break_calls(world: CallsWorld) -> None:
    class Broken:
        def display_name(self, phone: str, number: str) -> str | None:
            raise RuntimeError("phonebook corrupted")

    world.ctx.services.callerid = Broken()
    await world.connect_ready(A)
    c = await world.incoming(A, "5551234")
    assert (c["Name"], c["NameSource"]) == ("5551234", "number")


async def test_withheld_number(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "withheld")
    assert c["Number"] == "withheld"


async def test_answer_then_hang_up(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5551234")
    mark = world.mark()
    before = int(time.time())
    await world.api("Answer", "s", [c["Id"]])
    active = await world.state(c["Id"], "active", after=mark)
    assert active["StartTime"] >= before - 1
    assert world.fake.calls(A)[0].state == "active"

    mark = world.mark()
    await world.api("Hangup", "s", [c["Id"]])
    ended = await world.state(c["Id"], "disconnected", after=mark)
    assert ended["DisconnectReason"] == "local"
    removed = await world.wait("CallRemoved", lambda b: b[0] == c["Id"], after=mark)
    assert removed[1] == "local"
    assert await world.calls() == []
    assert world.fake.calls(A) == []


async def test_reject_a_ringing_call(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5551234")
    await world.api("Hangup", "s", [c["Id"]])
    assert (await world.wait("CallRemoved", lambda b: b[0] == c["Id"]))[1] == "local"


async def test_remote_hangup(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5551234")
    await world.api("Answer", "s", [c["Id"]])
    await world.state(c["Id"], "active")
    mark = world.mark()
    world.fake.remote_hangup(A)
    assert (await world.wait("CallRemoved", lambda b: b[0] == c["Id"], after=mark))[1] == "remote"


async def test_outgoing_call_dialing_alerting_active(world: CallsWorld) -> None:
    await world.connect_ready(A)
    mark = world.mark()
    (cid,) = await world.api("Dial", "ss", ["+44 (20) 7946-0958", ""])
    added = await world.wait("CallAdded", lambda b: b[0] == cid, after=mark)
    assert added[1]["Direction"] == "outgoing"
    assert added[1]["Number"] == "+442079460958"
    assert added[1]["State"] == "dialing"
    await world.state(cid, "alerting", after=mark)  # the network starts ringing the other end
    world.fake.remote_answer(A)
    await world.state(cid, "active", after=mark)
    # Exactly one CallAdded for the dialled call, though both the reply and oFono announced it.
    assert [b[0] for m, b in world.signals[mark:] if m == "CallAdded"] == [cid]
    assert world.fake.side(A).calls[1].number == "+442079460958"


async def test_dial_rejects_bad_numbers_before_ofono_sees_them(world: CallsWorld) -> None:
    await world.connect_ready(A)
    for bad in ("call mum", "12ab34", "1" * 200, "", "   ", "+", "12;34", "12\n34"):
        err = await world.api_error("Dial", "ss", [bad, ""])
        assert err.name == names.DB_ERR_INVALID_ARGS, bad
        assert err.text
    assert not [c for c in world.fake.method_calls if c[2] == "Dial"]
    # 80 digits is oFono's limit, and fine.
    (cid,) = await world.api("Dial", "ss", ["1" * 80, ""])
    assert cid


async def test_dial_needs_a_connected_phone(world: CallsWorld) -> None:
    err = await world.api_error("Dial", "ss", ["5551234", ""])
    assert err.name == names.DB_ERR_NOT_CONNECTED
    err = await world.api_error("Dial", "ss", ["5551234", "not-an-address"])
    assert err.name == names.DB_ERR_INVALID_ARGS
    await world.connect_ready(A)
    err = await world.api_error("Dial", "ss", ["5551234", B])
    assert err.name == names.DB_ERR_NOT_CONNECTED


async def test_answer_a_call_that_is_no_longer_ringing(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5551234")
    world.fake.remote_answer(A)  # answered on the handset
    await world.state(c["Id"], "active")
    err = await world.api_error("Answer", "s", [c["Id"]])
    assert err.name == names.DB_ERR_INVALID_ARGS
    assert "not ringing" in err.text
    world.fake.remote_hangup(A)
    await world.wait("CallRemoved", lambda b: b[0] == c["Id"])
    err = await world.api_error("Answer", "s", [c["Id"]])
    assert err.name == names.DB_ERR_NOT_FOUND
    err = await world.api_error("Hangup", "s", ["call999"])
    assert err.name == names.DB_ERR_NOT_FOUND


async def test_call_waiting_answer_holds_the_first_then_swap_and_resume(world: CallsWorld) -> None:
    await world.connect_ready(A)
    first = await world.incoming(A, "5550001")
    await world.api("Answer", "s", [first["Id"]])
    await world.state(first["Id"], "active")
    mark = world.mark()
    world.fake.call_waiting(A, "5550002")
    second = await world.wait("CallAdded", lambda b: b[1]["Number"] == "5550002", after=mark)
    assert second[1]["State"] == "waiting"
    sid = second[0]
    # Swapping while a call waits makes no sense: clear error, nothing sent.
    err = await world.api_error("Swap", "s", [""])
    assert err.name == names.DB_ERR_INVALID_ARGS

    mark = world.mark()
    await world.api("Answer", "s", [sid])  # HoldAndAnswer
    await world.state(first["Id"], "held", after=mark)
    await world.state(sid, "active", after=mark)
    assert (modem_path(A), names.OFONO_VOICECALL_MANAGER_IFACE, "HoldAndAnswer") in world.fake.method_calls

    mark = world.mark()
    await world.api("Swap", "s", [""])
    await world.state(first["Id"], "active", after=mark)
    await world.state(sid, "held", after=mark)

    mark = world.mark()
    await world.api("Hangup", "s", [first["Id"]])
    await world.wait("CallRemoved", lambda b: b[0] == first["Id"], after=mark)
    await world.api("Resume", "s", [sid])
    await world.state(sid, "active", after=mark)
    mark = world.mark()
    await world.api("Hold", "s", [sid])
    await world.state(sid, "held", after=mark)
    err = await world.api_error("Hold", "s", [sid])
    assert err.name == names.DB_ERR_INVALID_ARGS


async def test_waiting_call_becomes_incoming_when_the_active_call_ends(world: CallsWorld) -> None:
    await world.connect_ready(A)
    first = await world.incoming(A, "5550001")
    await world.api("Answer", "s", [first["Id"]])
    await world.state(first["Id"], "active")
    mark = world.mark()
    world.fake.call_waiting(A, "5550002")
    second = await world.wait("CallAdded", lambda b: b[1]["Number"] == "5550002", after=mark)
    world.fake.remote_hangup(A, 1)
    await world.state(second[0], "incoming", after=mark)
    await world.api("Answer", "s", [second[0]])
    await world.state(second[0], "active", after=mark)


async def test_hangup_all(world: CallsWorld) -> None:
    await world.connect_ready(A)
    first = await world.incoming(A, "5550001")
    await world.api("Answer", "s", [first["Id"]])
    await world.state(first["Id"], "active")
    (second,) = await world.api("Dial", "ss", ["5550002", A])
    await world.state(first["Id"], "held")
    (n,) = await world.api("HangupAll", "s", [""])
    assert n == 1
    await world.wait("CallRemoved", lambda b: b[0] == first["Id"])
    await world.wait("CallRemoved", lambda b: b[0] == second)
    assert await world.calls() == []


async def test_send_tones(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5550001")
    err = await world.api_error("SendTones", "ss", [c["Id"], "123"])
    assert err.name == names.DB_ERR_INVALID_ARGS  # not connected yet
    await world.api("Answer", "s", [c["Id"]])
    await world.state(c["Id"], "active")
    await world.api("SendTones", "ss", [c["Id"], "12#*a"])
    assert world.fake.side(A).phone.extra["dtmf"] == ["12#*A"]
    for bad in ("12x", "", "1" * 65):
        err = await world.api_error("SendTones", "ss", [c["Id"], bad])
        assert err.name == names.DB_ERR_INVALID_ARGS, bad


async def test_phone_status_follows_battery_signal_and_operator(world: CallsWorld) -> None:
    await world.connect_ready(A)
    (phones,) = await world.api("GetPhones")
    st = phones[0]
    assert (st["Battery"], st["Signal"], st["Operator"], st["InbandRinging"]) == (100, 80, "SimNet", True)
    assert st["Registration"] == "registered" and st["Role"] == "primary"
    mark = world.mark()
    world.fake.set_battery(A, 1)
    world.fake.set_signal(A, 0)
    world.fake.set_operator(A, "Roamer")
    world.fake.set_inband_ringing(A, False)
    await world.wait("PhoneChanged", lambda b: b[1]["Battery"] == 20, after=mark)
    await world.wait("PhoneChanged", lambda b: b[1]["Signal"] == 0 and b[1]["Registration"] == "unregistered",
                     after=mark)
    await world.wait("PhoneChanged", lambda b: b[1]["Operator"] == "Roamer", after=mark)
    await world.wait("PhoneChanged", lambda b: b[1]["InbandRinging"] is False, after=mark)


async def test_a_call_already_in_progress_is_picked_up(world: CallsWorld) -> None:
    # The phone had a call before the car connected: GetCalls at link-up finds it.
    world.fake.incoming_call(A, "5550001")
    world.fake.remote_answer(A)
    mark = world.mark()
    world.connect(A)
    added = await world.wait("CallAdded", lambda b: b[1]["Number"] == "5550001", after=mark)
    assert added[1]["State"] == "active"
    assert added[1]["StartTime"] > 0


async def test_two_phones_calls_are_told_apart(world: CallsWorld) -> None:
    await world.connect_ready(A, "primary", "Alice's phone")
    await world.connect_ready(B, "secondary", "Bob's phone")
    ca = await world.incoming(A, "5550001")
    cb = await world.incoming(B, "5550001")  # same caller on both phones
    assert ca["Id"] != cb["Id"]
    assert (ca["Phone"], ca["PhoneName"]) == (A, "Alice's phone")
    assert (cb["Phone"], cb["PhoneName"]) == (B, "Bob's phone")
    await world.api("Answer", "s", [cb["Id"]])
    await world.state(cb["Id"], "active")
    assert world.fake.calls(B)[0].state == "active"
    assert world.fake.calls(A)[0].state == "incoming"
    # Dial goes to the primary unless a phone is named; the secondary works the same.
    await world.api("Hangup", "s", [ca["Id"]])
    await world.wait("CallRemoved", lambda b: b[0] == ca["Id"])
    (d1,) = await world.api("Dial", "ss", ["5559999", ""])
    (d2,) = await world.api("Dial", "ss", ["5558888", B.lower()])
    calls = {c["Id"]: c for c in await world.calls()}
    assert (calls[d1]["Phone"], calls[d2]["Phone"]) == (A, B)
    assert [c.number for c in world.fake.calls(A)] == ["5559999"]
    (n,) = await world.api("HangupAll", "s", [B])
    assert n == 1
    await world.wait("CallRemoved", lambda b: b[0] == cb["Id"])
    await world.wait("CallRemoved", lambda b: b[0] == d2)
    assert [c["Id"] for c in await world.calls()] == [d1]


async def test_phone_disconnecting_mid_call_ends_its_calls(world: CallsWorld) -> None:
    await world.connect_ready(A)
    c = await world.incoming(A, "5550001")
    mark = world.mark()
    world.directory.set_disconnected(A)
    assert (await world.wait("CallRemoved", lambda b: b[0] == c["Id"], after=mark))[1] == "phone-disconnected"
    gone = await world.wait("PhoneChanged", lambda b: b[0] == A, after=mark)
    assert gone[1]["Connected"] is False
    assert await world.calls() == []
    (phones,) = await world.api("GetPhones")
    assert phones == []


async def test_answer_races_the_handset(world: CallsWorld) -> None:
    """The driver presses answer just as the call is picked up on the phone: oFono already knows,
    our table not yet — the dashboard gets a clear "no longer ringing", not a generic failure."""
    await world.connect_ready(A)
    c = await world.incoming(A, "5551234")
    world.fake.side(A).calls[1].state = "active"  # changed on the phone; oFono's signal still to come
    err = await world.api_error("Answer", "s", [c["Id"]])
    assert err.name == names.DB_ERR_INVALID_ARGS
    assert "no longer ringing" in err.text
