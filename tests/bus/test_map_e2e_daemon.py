"""End to end through the real ``dashbridged`` process and the simulator (fake BlueZ connects the
phone, fake obexd serves its contacts and messages, fake navigation service): a text with a Google
Maps link shows up with the sender's name from the phone's contacts, the driver accepts the
destination, and the navigation service — started only afterwards — receives it exactly once, also
after the daemon restarted in between.  An e-mail is listed and read; an SMS reply reaches the
phone's outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dashbridge.simulator.obex_pbap import book_for
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.vcards import SimContact
from dashbridge.simulator.world import Dashboard, Event, World, WorldSpec

ADDR = "AA:BB:CC:DD:EE:01"
SAM = "+447700900456"
LINK = "https://www.google.com/maps/place/Regent's+Park/@51.5313,-0.1570,15z/data=!3d51.5237!4d-0.1585"
DEADLINE_S = 20.0


def _is(ev: Event, short: str) -> bool:
    return ev.short == short


@pytest.fixture
async def world() -> AsyncIterator[World]:
    phone = VirtualPhone(ADDR, name="Alice's Pixel", bonded=True)
    book_for(phone).contacts.append(SimContact(family="Smith", given="Sam", fn="Sam Smith",
                                               numbers=[(SAM, "cell")]))
    w = World(WorldSpec(phones=[phone], navigation={"running": False}))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def _phone_ready(dash: Dashboard, since: int = 0) -> None:
    """Contacts synced (for the sender's name) and MAP serving."""
    await dash.wait_for(lambda e: _is(e, "Contacts1.SyncStateChanged") and e.named["phone"] == ADDR
                        and e.named["state"].get("State") == "synced", DEADLINE_S, since)
    await dash.wait_for(lambda e: _is(e, "Messages1.PropertiesChanged")
                        and e.named["changed"].get("Phones", {}).get(ADDR, [""])[0] in ("ready", "polling"),
                        DEADLINE_S, since)


async def test_text_with_maps_link_named_accepted_and_delivered_when_navigation_starts_later(
        world: World) -> None:
    dash = world.dashboard
    assert dash is not None
    await _phone_ready(dash)

    mark = dash.mark
    msg = world.deliver_message(ADDR, "SMS_GSM", SAM, f"Picnic here {LINK} at 1pm?")
    ev = await dash.wait_for(lambda e: _is(e, "Messages1.MessageReceived"), DEADLINE_S, mark)
    m = ev.named["message"]
    assert m["id"] == f"{ADDR}/{msg.handle}" and m["type"] == "sms"
    assert m["sender"] == SAM and m["sender_name"] == "Sam Smith", "named from the phone's contacts"
    assert m["preview"].startswith("Picnic here https://www.google.com/maps/place/Regent")

    ev = await dash.wait_for(lambda e: _is(e, "Navigation1.IntentOffered"), DEADLINE_S, mark)
    intent = ev.named["intent"]
    assert intent["source_ref"] == m["id"] and intent["label"] == "Regent's Park"
    assert intent["latitude"] == pytest.approx(51.5237) and intent["longitude"] == pytest.approx(-0.1585)
    assert await dash.get("Navigation1.ServiceAvailable") is False

    assert await dash.call("Navigation1.Accept", [intent["id"]]) == "accepted"
    nav = world.fake("navigation")
    assert nav.received == []

    # The car is switched off and on again before the navigation service comes up: still queued.
    await world.restart_daemon()
    pending = await dash.call("Navigation1.Pending")
    assert [(p["id"], p["state"]) for p in pending] == [(intent["id"], "accepted")]

    mark = dash.mark
    await world.navigation_start()
    await dash.wait_for(lambda e: _is(e, "Navigation1.IntentChanged") and e.named["intent_id"] == intent["id"]
                        and e.named["state"] == "delivered", DEADLINE_S, mark)
    (dest,) = nav.destinations
    assert dest["id"] == intent["id"] and dest["label"] == "Regent's Park"
    assert dest["latitude"] == pytest.approx(51.5237) and dest["longitude"] == pytest.approx(-0.1585)
    assert await dash.call("Navigation1.Pending") == []


async def test_email_listed_and_read_and_sms_reply_reaches_the_outbox(world: World) -> None:
    dash = world.dashboard
    assert dash is not None
    await _phone_ready(dash)
    mark = dash.mark
    world.deliver_message(ADDR, "EMAIL", "bob@example.com", "The keys are under the mat.",
                          subject="Keys", sender_name="Bob")
    ev = await dash.wait_for(lambda e: _is(e, "Messages1.MessageReceived"), DEADLINE_S, mark)
    email = ev.named["message"]
    assert email["type"] == "email" and email["subject"] == "Keys" and email["sender_name"] == "Bob"
    listed = await dash.call("Messages1.List", [{"type": "email"}])
    assert [x["id"] for x in listed] == [email["id"]]
    full = await dash.call("Messages1.Get", [email["id"]])
    assert full["body"] == "The keys are under the mat."
    await dash.call("Messages1.MarkRead", [email["id"], True])
    assert world.phone(ADDR).messages[-1].read is True

    world.deliver_message(ADDR, "SMS_GSM", SAM, "Where are you?")
    ev = await dash.wait_for(lambda e: _is(e, "Messages1.MessageReceived")
                             and e.named["message"]["type"] == "sms", DEADLINE_S, mark)
    await dash.call("Messages1.Reply", [ev.named["message"]["id"], "Five minutes away"])
    (out,) = world.phone_outbox(ADDR)
    assert out.recipient == SAM and out.body == "Five minutes away"


async def test_messages_and_their_destinations_do_not_need_the_cloud() -> None:
    """With the cloud switched on but unreachable (nothing listens on the port), texts still
    arrive and their destinations still reach the navigation service."""
    phone = VirtualPhone(ADDR, name="Alice's Pixel", bonded=True)
    spec = WorldSpec(phones=[phone], config={"cloud": {"enabled": True, "url": "https://127.0.0.1:9",
                                                        "vehicle_id": "car-1", "request_timeout": "1s"}})
    w = World(spec)
    await w.start()
    try:
        dash = w.dashboard
        assert dash is not None
        await dash.wait_for(lambda e: _is(e, "Messages1.PropertiesChanged")
                            and e.named["changed"].get("Phones", {}).get(ADDR, [""])[0] in ("ready", "polling"),
                            DEADLINE_S)
        mark = dash.mark
        w.deliver_message(ADDR, "SMS_GSM", SAM, "here: geo:51.5237,-0.1585")
        await dash.wait_for(lambda e: _is(e, "Messages1.MessageReceived"), DEADLINE_S, mark)
        ev = await dash.wait_for(lambda e: _is(e, "Navigation1.IntentOffered"), DEADLINE_S, mark)
        await dash.call("Navigation1.Accept", [ev.named["intent"]["id"]])
        await dash.wait_for(lambda e: _is(e, "Navigation1.IntentChanged") and e.named["state"] == "delivered",
                            DEADLINE_S, mark)
        assert [d["id"] for d in w.fake("navigation").destinations] == [ev.named["intent"]["id"]]
        state, reason = (await dash.get("Daemon1.Health"))["cloud"]
        assert state != "ok" and "connect" in reason, "the control: the cloud really was unreachable"
    finally:
        await w.stop()
