"""Bad input and faults on the MAP path: wrong LENGTH, unknown charset, garbage, a 10 MB e-mail,
malformed links and out-of-range coordinates, a session lost mid-download, an obexd restart,
obexd absent at start.  Each is reported or repaired, never a crash, hang or lost message."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.profiles.map import bmessage
from dashbridge.simulator import obex_map
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.obex import FakeObexd
from dashbridge.simulator.phone import VirtualPhone

from .map_helpers import MSG_IFACE, PHONE, MiniDaemon, Signals, api, make_config

Start = Callable[..., Awaitable[MiniDaemon]]
MUM = "+447700900123"


@pytest.fixture
def phone() -> VirtualPhone:
    return VirtualPhone(PHONE, name="Test phone")


@pytest.fixture
async def obexd(session_bus: PrivateBus, phone: VirtualPhone, tmp_path: Path) -> AsyncIterator[FakeObexd]:
    od = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path / "obexd-tmp")
    yield od
    await od.stop()


@pytest.fixture
async def start(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Start]:
    made: list[MiniDaemon] = []

    async def run(**messages: Any) -> MiniDaemon:
        cfg = make_config(tmp_path / "state", messages=messages)
        d = await MiniDaemon(system_bus.address, session_bus.address, tmp_path / "state", config=cfg).start()
        made.append(d)
        return d

    yield run
    for d in made:
        await d.stop()


async def _serving(d: MiniDaemon, sig: Signals, count: int = 1) -> None:
    await sig.wait_count("PropertiesChanged", lambda b: b[0] == MSG_IFACE and b[1].get("Phones", {}).get(
        PHONE, [""])[0] in ("ready", "polling"), count, timeout=10)


def _raw(body: bytes, *, length: int | None = None, charset: str = "UTF-8", mtype: str = "SMS_GSM") -> bytes:
    n = len(body) + 22 if length is None else length
    return (b"BEGIN:BMSG\r\nVERSION:1.0\r\nSTATUS:UNREAD\r\nTYPE:" + mtype.encode() + b"\r\nFOLDER:TELECOM/MSG/INBOX\r\n"
            b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:Mum\r\nTEL:" + MUM.encode() + b"\r\nEND:VCARD\r\n"
            b"BEGIN:BENV\r\nBEGIN:BBODY\r\nCHARSET:" + charset.encode() + b"\r\nLENGTH:" + str(n).encode() +
            b"\r\nBEGIN:MSG\r\n" + body + b"\r\nEND:MSG\r\nEND:BBODY\r\nEND:BENV\r\nEND:BMSG\r\n")


async def _deliver_and_get(obexd: FakeObexd, sig: Signals, client: MessageBus, raw: bytes, **kw: Any
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    msg = obex_map.deliver(obexd, PHONE, sender=MUM, body="(see raw)", raw_bmessage=raw, **kw)
    mid = f"{PHONE}/{msg.handle}"
    (received,) = await sig.wait("MessageReceived", lambda b: b[0]["id"] == mid, timeout=10)
    return received, await api(client, MSG_IFACE, "Get", "s", [mid])


async def test_wrong_length_unknown_charset_and_garbage_are_reported_not_fatal(
        start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone()
    await _serving(d, sig)

    m, full = await _deliver_and_get(obexd, sig, client, _raw(b"Running late, sorry", length=999))
    assert m["preview"] == "Running late, sorry" and full["body_state"] == "complete"
    assert any("LENGTH 999" in p for p in full["problems"])

    m, full = await _deliver_and_get(obexd, sig, client, _raw("Grüße".encode("latin-1"), charset="X-KLINGON"))
    assert full["body"] == "Grüße" and any("X-KLINGON" in p for p in full["problems"])

    m, full = await _deliver_and_get(obexd, sig, client, _raw("Café".encode("latin-1"), charset="ISO-8859-1"))
    assert full["body"] == "Café" and full["problems"] == []

    m, full = await _deliver_and_get(obexd, sig, client, b"\x00\xffthis is not a bMessage at all")
    assert full["body_state"] == "broken" and full["body"] == "" and full["problems"]
    assert m["sender"] == MUM, "the listing still tells who sent it"

    # Still serving normally afterwards.
    obex_map.deliver(obexd, PHONE, sender=MUM, body="all good")
    await sig.wait("MessageReceived", lambda b: b[0]["preview"] == "all good")


async def test_ten_megabyte_email_is_cut_not_choked_on(start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone()
    await _serving(d, sig)
    line = "All work and no play makes Jack a dull boy. " * 2 + "\r\n"
    big = ("From: Jack <jack@example.com>\r\nSubject: Big one\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           + line * (10 * 1024 * 1024 // len(line)))
    assert len(big) > 10_000_000
    t0 = time.monotonic()
    msg = obex_map.deliver(obexd, PHONE, type="EMAIL", sender="jack@example.com", subject="Big one", body=big)
    mid = f"{PHONE}/{msg.handle}"
    (m,) = await sig.wait("MessageReceived", lambda b: b[0]["id"] == mid, timeout=20)
    assert time.monotonic() - t0 < 10
    assert m["subject"] == "Big one" and m["body_state"] == "truncated"
    full = await api(client, MSG_IFACE, "Get", "s", [mid])
    assert full["body"].startswith("All work and no play") and len(full["body"]) <= 64 * 1024
    assert full["size"] >= 10_000_000, "the listing's size is the phone's, not what we kept"
    leftovers = list((obexd.tmpdir).glob("obex-client*"))
    assert leftovers == [], "obexd's temp files are deleted after reading"


async def test_malformed_links_and_out_of_range_coordinates_offer_nothing(
        start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone()
    await _serving(d, sig)
    bad = obex_map.deliver(obexd, PHONE, sender=MUM, body=(
        "try https://www.google.com/maps/@91.5,200.1,15z or geo:123.4,45 or "
        "https://maps.apple.com/?ll=12.3,abc or https://www.openstreetmap.org/?mlat=95&mlon=10 "
        "or https://maps.google.com/?q=51.5,-0.1zz or http://[::1/maps"))
    good = obex_map.deliver(obexd, PHONE, sender=MUM, body="ok: geo:51.5,-0.12")
    (intent,) = await sig.wait("IntentOffered", timeout=10)
    # Messages are handled in order, so by the time the good one's intent is offered, any intent
    # from the bad one would have been offered already.
    assert intent["source_ref"] == f"{PHONE}/{good.handle}"
    assert [i[0]["source_ref"] for i in sig.of("IntentOffered")] == [f"{PHONE}/{good.handle}"]
    await sig.wait("MessageReceived", lambda b: b[0]["id"] == f"{PHONE}/{bad.handle}")


async def test_session_lost_mid_download_loses_nothing(start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone()
    await _serving(d, sig)
    obexd.control.fail_next_transfer(PHONE, 40)  # the link fails 40 bytes into the next download
    msg = obex_map.deliver(obexd, PHONE, sender=MUM, body="do not lose me")
    mid = f"{PHONE}/{msg.handle}"
    (m,) = await sig.wait("MessageReceived", lambda b: b[0]["id"] == mid, timeout=15)
    assert m["preview"] == "do not lose me"
    await _serving(d, sig, count=2)  # the session was reopened
    assert [x for x in sig.of("MessageReceived") if x[0]["id"] == mid] == [[m]], "announced exactly once"
    assert len(await api(client, MSG_IFACE, "List", "a{sv}", [{}])) == 1


async def test_obexd_restart_and_late_start(start: Start, obexd: FakeObexd, client: MessageBus) -> None:
    await obexd.stop()  # obexd is not running when the phone connects
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone()
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and b[1].get("Phones", {}).get(
        PHONE, [""])[0] == "waiting")
    await obexd.resume()
    await _serving(d, sig)

    await obexd.restart()  # crash + a new obexd: every session and object is gone
    await _serving(d, sig, count=2)
    assert len(obexd.sessions) == 1
    msg = obex_map.deliver(obexd, PHONE, sender=MUM, body="after the restart")
    (m,) = await sig.wait("MessageReceived", timeout=10)
    assert m["id"] == f"{PHONE}/{msg.handle}"


async def test_serializer_output_is_what_the_phone_stores(start: Start, obexd: FakeObexd,
                                                          client: MessageBus) -> None:
    """The pushed bMessage parses back to the same text on the phone side (LENGTH exact)."""
    d = await start()
    sig = await Signals(client).start()
    d.connect_phone()
    await _serving(d, sig)
    text = "line one\r\nEND:MSG\r\nstill the message ✓"
    await api(client, MSG_IFACE, "Send", "sssss", ["", "sms", MUM, "", text])
    (out,) = obex_map.outbox(obexd, PHONE)
    assert out.body == text
    assert bmessage.parse(bmessage.serialize(bmessage.new_message(text, recipient=MUM))).text == text
