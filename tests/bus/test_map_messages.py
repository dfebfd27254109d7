"""Messages over MAP through org.dashbridge.Messages1, against the fake obexd on a private session
bus: sync at connect, notifications with contact names, e-mail, read/delete/reply/send reaching
the phone, polling for phones without notifications, destinations relayed to navigation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.simulator import obex_map
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.navsvc import FakeNavigation
from dashbridge.simulator.obex import FakeObexd
from dashbridge.simulator.phone import PhoneMessage, VirtualPhone

from .map_helpers import MSG_IFACE, NAV_IFACE, PHONE, MiniDaemon, Signals, api, make_config, prop, var

Start = Callable[..., Awaitable[MiniDaemon]]
MUM = "+447700900123"
LINK_TEXT = "Dinner's here https://www.google.com/maps/place/Dishoom/@51.5136,-0.1265,17z see you at 8"


class Contacts:
    """A stand-in for the contacts component's CallerId service."""

    def __init__(self, names_by_number: dict[str, str]) -> None:
        self.names = names_by_number

    def display_name(self, phone: str, number: str) -> str | None:
        return self.names.get(number)


def _stamp(days_ago: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.localtime(time.time() - days_ago * 86400))


@pytest.fixture
def phone() -> VirtualPhone:
    return VirtualPhone(PHONE, name="Test phone")


@pytest.fixture
async def obexd(session_bus: PrivateBus, phone: VirtualPhone, tmp_path: Path) -> AsyncIterator[FakeObexd]:
    od = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path / "obexd-tmp")
    yield od
    await od.stop()


@pytest.fixture
async def navsvc(system_bus: PrivateBus) -> AsyncIterator[FakeNavigation]:
    svc = await FakeNavigation.start(system_bus.address)
    yield svc
    await svc.stop()


@pytest.fixture
async def start(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Start]:
    made: list[MiniDaemon] = []

    async def run(*, callerid: object | None = None, **messages: Any) -> MiniDaemon:
        cfg = make_config(tmp_path / "state", messages=messages)
        d = await MiniDaemon(system_bus.address, session_bus.address, tmp_path / "state", config=cfg,
                             callerid=callerid).start()
        made.append(d)
        return d

    yield run
    for d in made:
        await d.stop()


async def _connected(d: MiniDaemon, sig: Signals, want: str = "ready|polling") -> None:
    """Connect the phone and wait until its MAP is serving (a phone never heard to notify is
    "polling" until its first notification)."""
    d.connect_phone()
    await sig.wait("SyncFinished", lambda b: b[0] == PHONE)
    await _state(sig, d, want)


async def _state(sig: Signals, d: MiniDaemon, want: str) -> None:
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and "Phones" in b[1]
                   and b[1]["Phones"].get(PHONE, ["", ""])[0] in want.split("|"))


async def test_connect_fetches_the_newest_messages_of_the_last_days(
        start: Start, obexd: FakeObexd, phone: VirtualPhone, client: MessageBus) -> None:
    for i in range(55):  # 55 recent texts, 5 old ones, 2 the driver sent
        phone.messages.append(PhoneMessage(handle=100 + i, sender=f"+4477009{i:05d}", body=f"text {i}",
                                           timestamp=_stamp(6 - i * 0.1), read=i % 2 == 0))
    for i in range(5):
        phone.messages.append(PhoneMessage(handle=200 + i, sender="+15550001", body="old", timestamp=_stamp(10 + i)))
    phone.messages.append(PhoneMessage(handle=300, folder="sent", recipient=MUM, body="mine", timestamp=_stamp(0)))
    d = await start(fetch_count=50, fetch_days=7)
    sig = await Signals(client).start()
    await _connected(d, sig)
    assert sig.of("SyncFinished") == [[PHONE, 50]]
    assert sig.of("MessageReceived") == [], "the backlog is synced, not announced as new"

    listed = await api(client, MSG_IFACE, "List", "a{sv}", [{"limit": var("u", 500)}])
    assert len(listed) == 50
    assert [m["id"] for m in listed[:2]] == [f"{PHONE}/154", f"{PHONE}/153"], "newest first"
    assert {m["folder"] for m in listed} == {"inbox"} and {m["type"] for m in listed} == {"sms"}
    assert all(m["body_state"] == "complete" for m in listed)
    assert not any(m["id"].endswith(("/200", "/300")) for m in listed)
    unread = await api(client, MSG_IFACE, "List", "a{sv}", [{"unread": var("b", True), "limit": var("u", 500)}])
    assert unread and all(not m["read"] for m in unread)

    full = await api(client, MSG_IFACE, "Get", "s", [f"{PHONE}/120"])
    assert full["body"] == "text 20" and full["sender"] == "+447700900020" and full["problems"] == []

    # Reconnecting later fetches nothing twice.
    d.disconnect_phone()
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and PHONE not in b[1].get("Phones", {PHONE: 1}))
    d.connect_phone()
    await sig.wait_count("SyncFinished", lambda b: b[0] == PHONE, 2)
    assert sig.of("SyncFinished")[-1] == [PHONE, 0]


async def test_new_text_with_a_map_link_reaches_the_dashboard_and_navigation(
        start: Start, obexd: FakeObexd, navsvc: FakeNavigation, client: MessageBus) -> None:
    d = await start(callerid=Contacts({MUM: "Mum"}))
    sig = await Signals(client).start()
    await _connected(d, sig)

    msg = obex_map.deliver(obexd, PHONE, sender=MUM, sender_name="", body=LINK_TEXT)
    (received,) = await sig.wait("MessageReceived")
    assert received["id"] == f"{PHONE}/{msg.handle}"
    assert received["phone"] == PHONE and received["type"] == "sms" and received["direction"] == "in"
    assert received["sender"] == MUM and received["sender_name"] == "Mum"
    assert received["preview"] == LINK_TEXT and received["read"] is False
    assert received["received"].startswith(time.strftime("%Y-%m-%dT"))

    (intent,) = await sig.wait("IntentOffered")
    assert intent["source"] == "message" and intent["source_ref"] == received["id"]
    assert intent["label"] == "Dishoom" and intent["latitude"] == pytest.approx(51.5136)
    assert intent["phone"] == PHONE
    await api(client, NAV_IFACE, "Accept", "s", [intent["id"]])
    await sig.wait("IntentChanged", lambda b: b[0] == intent["id"] and b[1] == "delivered")
    (dest,) = navsvc.destinations
    assert dest["label"] == "Dishoom" and dest["longitude"] == pytest.approx(-0.1265)


async def test_sender_name_falls_back_to_the_phones_name_then_the_number(
        start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()  # no contacts synced
    sig = await Signals(client).start()
    await _connected(d, sig)
    obex_map.deliver(obexd, PHONE, sender="+15551234", sender_name="Ann Other", body="hi")
    obex_map.deliver(obexd, PHONE, sender="+15559999", body="who's this")
    await sig.wait_count("MessageReceived", lambda b: True, 2)
    named = {m[0]["sender"]: m[0]["sender_name"] for m in sig.of("MessageReceived")}
    assert named == {"+15551234": "Ann Other", "+15559999": "+15559999"}


async def test_email_is_listed_and_read_html_only_and_attachments(
        start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    raw = ("From: Bob Builder <bob@example.com>\r\nTo: driver@example.com\r\nSubject: Site visit\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           "--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           "<html><head><style>p{}</style></head><body><p>Meet at <a href=\"geo:51.5033,-0.1196\">the Eye</a>"
           "</p><p>Bring boots &amp; hat</p></body></html>\r\n"
           "--B\r\nContent-Type: application/pdf; name=plan.pdf\r\nContent-Disposition: attachment; "
           "filename=plan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--B--\r\n")
    obex_map.deliver(obexd, PHONE, type="EMAIL", sender="bob@example.com", sender_name="Bob Builder",
                     subject="Site visit", body=raw)
    (m,) = await sig.wait("MessageReceived")
    assert m["type"] == "email" and m["subject"] == "Site visit" and m["sender"] == "bob@example.com"
    assert m["sender_name"] == "Bob Builder"
    listed = await api(client, MSG_IFACE, "List", "a{sv}", [{"type": var("s", "email")}])
    assert [x["id"] for x in listed] == [m["id"]]
    full = await api(client, MSG_IFACE, "Get", "s", [m["id"]])
    assert full["body"] == "Meet at the Eye\n\nBring boots & hat"
    assert full["attachments"] == [{"name": "plan.pdf", "type": "application/pdf", "size": 9}]
    (intent,) = await sig.wait("IntentOffered")  # the destination hidden in the HTML anchor
    assert intent["latitude"] == pytest.approx(51.5033) and intent["source_ref"] == m["id"]


async def test_mark_read_and_delete_reach_the_phone(start: Start, obexd: FakeObexd, phone: VirtualPhone,
                                                    client: MessageBus) -> None:
    phone.messages.append(PhoneMessage(handle=7, sender=MUM, body="old news", timestamp=_stamp(1)))
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    mid = f"{PHONE}/7"
    await api(client, MSG_IFACE, "MarkRead", "sb", [mid, True])
    assert phone.messages[0].read is True
    changed = await sig.wait("MessageChanged")
    assert changed[0] == mid and changed[1]["read"] is True
    await api(client, MSG_IFACE, "Delete", "s", [mid])
    assert phone.messages[0].folder == "deleted"
    await sig.wait("MessageRemoved", lambda b: b == [mid])
    assert await api(client, MSG_IFACE, "List", "a{sv}", [{}]) == []
    with pytest.raises(BusError) as err:
        await api(client, MSG_IFACE, "Get", "s", [mid])
    assert err.value.name == "org.dashbridge.Error.NotFound"


async def test_reply_reaches_the_phones_outbox_and_fails_clearly_otherwise(
        start: Start, obexd: FakeObexd, phone: VirtualPhone, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    obex_map.deliver(obexd, PHONE, sender=MUM, body="Are you coming?")
    (m,) = await sig.wait("MessageReceived")

    sent_id = await api(client, MSG_IFACE, "Reply", "ss", [m["id"], "On my way, 10 min 🚗"])
    (out,) = obex_map.outbox(obexd, PHONE)
    assert out.recipient == MUM and out.body == "On my way, 10 min 🚗" and out.type == "SMS_GSM"
    sent = await api(client, MSG_IFACE, "Get", "s", [sent_id])
    assert sent["direction"] == "out" and sent["folder"] == "outbox" and sent["recipient"] == MUM

    obex_map.set_push_accepted(obexd, PHONE, False)  # the phone refuses (Precondition Failed)
    with pytest.raises(BusError) as err:
        await api(client, MSG_IFACE, "Reply", "ss", [m["id"], "again"])
    assert err.value.name == "org.dashbridge.Error.Failed" and "not accept" in err.value.text
    assert len(obex_map.outbox(obexd, PHONE)) == 1
    assert len(await api(client, MSG_IFACE, "List", "a{sv}", [{"folder": var("s", "outbox")}])) == 1

    obex_map.set_push_accepted(obexd, PHONE, True)
    d.disconnect_phone()
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and PHONE not in b[1].get("Phones", {PHONE: 1}))
    with pytest.raises(BusError) as err:
        await api(client, MSG_IFACE, "Send", "sssss", [PHONE, "sms", MUM, "", "hello?"])
    assert err.value.name == "org.dashbridge.Error.NotConnected"
    with pytest.raises(BusError) as err:
        await api(client, MSG_IFACE, "MarkRead", "sb", [m["id"], True])
    assert err.value.name == "org.dashbridge.Error.NotConnected"
    assert len(obex_map.outbox(obexd, PHONE)) == 1, "nothing was queued while disconnected"
    assert phone.messages[0].read is False


async def test_send_email_and_sms_validation(start: Start, obexd: FakeObexd, phone: VirtualPhone,
                                             client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    await api(client, MSG_IFACE, "Send", "sssss", ["", "email", "bob@example.com", "Late", "20 minutes late"])
    (out,) = obex_map.outbox(obexd, PHONE)
    assert out.type == "EMAIL" and out.recipient == "bob@example.com" and out.subject == "Late"
    assert "20 minutes late" in out.body
    for args in (["", "sms", "not a number", "", "x"], ["", "fax", MUM, "", "x"], ["", "sms", MUM, "", ""],
                 ["", "email", "no-at-sign", "", "x"], ["", "sms", MUM, "", "x" * 5000]):
        with pytest.raises(BusError) as err:
            await api(client, MSG_IFACE, "Send", "sssss", args)
        assert err.value.name == "org.dashbridge.Error.InvalidArguments", args
    assert len(obex_map.outbox(obexd, PHONE)) == 1


async def test_email_send_fails_clearly_when_the_phone_offers_no_email(
        start: Start, obexd: FakeObexd, phone: VirtualPhone, client: MessageBus) -> None:
    phone.map_types = ("SMS_GSM",)
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    with pytest.raises(BusError) as err:
        await api(client, MSG_IFACE, "Send", "sssss", ["", "email", "bob@example.com", "s", "t"])
    assert err.value.name == "org.dashbridge.Error.Failed" and "e-mail" in err.value.text
    await api(client, MSG_IFACE, "Send", "sssss", ["", "sms", MUM, "", "ok"])
    assert [m.type for m in obex_map.outbox(obexd, PHONE)] == ["SMS_GSM"]


async def test_phone_without_notifications_is_polled_while_connected(
        start: Start, obexd: FakeObexd, phone: VirtualPhone, client: MessageBus) -> None:
    phone.map_notifications = False
    d = await start(poll_interval=0.2)
    sig = await Signals(client).start()
    await _connected(d, sig, want="polling")
    msg = obex_map.deliver(obexd, PHONE, sender=MUM, body="polled in")
    (m,) = await sig.wait("MessageReceived", timeout=5)
    assert m["id"] == f"{PHONE}/{msg.handle}" and m["preview"] == "polled in"
    # Refresh does the same at once, and finds nothing new now.
    assert await api(client, MSG_IFACE, "Refresh", "s", [PHONE]) == 0


async def test_notifying_phone_switches_from_polling_to_ready(
        start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start(poll_interval=3600)
    sig = await Signals(client).start()
    await _connected(d, sig, want="polling")  # never heard a notification from it yet
    obex_map.deliver(obexd, PHONE, sender=MUM, body="first")
    await sig.wait("MessageReceived")
    await _state(sig, d, "ready")
    # Known to notify: next time it connects it is not polled at all.
    d.disconnect_phone()
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and PHONE not in b[1].get("Phones", {PHONE: 1}))
    d.connect_phone()
    await sig.wait_count("SyncFinished", lambda b: b[0] == PHONE, 2)
    assert (await prop(client, MSG_IFACE, "Phones"))[PHONE][0] == "ready"


async def test_phone_without_map_and_secondary_phone_are_left_alone(
        start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone(uuids=frozenset({names.UUID_HFP_AG}))
    await _state(sig, d, "unavailable")
    d.connect_phone("AA:BB:CC:00:00:02", role="secondary")
    assert obexd.sessions == {}
    phones = await prop(client, MSG_IFACE, "Phones")
    assert {k: list(v) for k, v in phones.items()} == {PHONE: ["unavailable", "the phone does not offer MAP"]}


async def test_forgetting_the_phone_deletes_its_messages(start: Start, obexd: FakeObexd, phone: VirtualPhone,
                                                         client: MessageBus) -> None:
    phone.messages.append(PhoneMessage(handle=1, sender=MUM, body="private", timestamp=_stamp(0.5)))
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    assert len(await api(client, MSG_IFACE, "List", "a{sv}", [{}])) == 1
    d.phones.forgotten(PHONE)
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and PHONE not in b[1].get("Phones", {PHONE: 1}))
    assert await api(client, MSG_IFACE, "List", "a{sv}", [{}]) == []


async def test_list_rejects_bad_filters(start: Start, client: MessageBus, obexd: FakeObexd) -> None:
    await start()
    for bad in ({"folder": var("s", "../x")}, {"limit": var("s", "10")}, {"colour": var("s", "red")},
                {"limit": var("u", 100000)}, {"type": var("s", "fax")}):
        with pytest.raises(BusError) as err:
            await api(client, MSG_IFACE, "List", "a{sv}", [bad])
        assert err.value.name == "org.dashbridge.Error.InvalidArguments", bad
    for bad_id in ("nope", "AA:BB/1", f"{PHONE}/../../x"):
        with pytest.raises(BusError) as err:
            await api(client, MSG_IFACE, "Get", "s", [bad_id])
        assert err.value.name == "org.dashbridge.Error.InvalidArguments", bad_id


async def test_email_folders_beside_the_inbox_are_synced_and_followed(
        start: Start, obexd: FakeObexd, phone: VirtualPhone, client: MessageBus) -> None:
    """Some phones keep e-mail in their own folder under telecom/msg: it is synced at connect and
    its notifications are followed like the inbox's."""
    old = obex_map.make_email("carol@example.com", "Carol", "Agenda", "Points for Monday")
    phone.messages.append(PhoneMessage(handle=50, folder="email", type="EMAIL", sender="carol@example.com",
                                       sender_name="Carol", subject="Agenda", body=old, timestamp=_stamp(1)))
    phone.messages.append(PhoneMessage(handle=51, sender=MUM, body="sms in the inbox", timestamp=_stamp(1)))
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    assert sig.of("SyncFinished") == [[PHONE, 2]]
    listed = await api(client, MSG_IFACE, "List", "a{sv}", [{"folder": var("s", "email")}])
    assert [(m["id"], m["subject"], m["type"]) for m in listed] == [(f"{PHONE}/50", "Agenda", "email")]
    assert (await api(client, MSG_IFACE, "Get", "s", [f"{PHONE}/50"]))["body"] == "Points for Monday"

    msg = obex_map.deliver(obexd, PHONE, type="EMAIL", sender="dan@example.com", subject="Lunch?", body="12:30?",
                           folder="email")
    (m,) = await sig.wait("MessageReceived")
    assert m["id"] == f"{PHONE}/{msg.handle}" and m["folder"] == "email" and m["subject"] == "Lunch?"


async def test_message_deleted_on_the_phone_follows_in_the_car(
        start: Start, obexd: FakeObexd, phone: VirtualPhone, client: MessageBus) -> None:
    phone.messages.append(PhoneMessage(handle=9, sender=MUM, body="delete me on the phone", timestamp=_stamp(0.1)))
    d = await start()
    sig = await Signals(client).start()
    await _connected(d, sig)
    obex_map.move_on_phone(obexd, PHONE, 9, "deleted")
    changed = await sig.wait("MessageChanged", lambda b: b[0] == f"{PHONE}/9")
    assert changed[1]["folder"] == "deleted"
    assert [m["folder"] for m in await api(client, MSG_IFACE, "List", "a{sv}", [{}])] == ["deleted"]
