"""The fake obexd's MAP side behaves like obexd (reference §2.6-2.8, §7 items 14-15): strict filter
types, Message1 objects from listings, notifications carrying only Folder/Type/Status, Read
writable and Deleted write-only, typed PushMessage args, push verdicts as transfer status, and
the D-Bus control interface."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.profiles.map import bmessage
from dashbridge.simulator import obex_map
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.obex import SIM_IFACE, SIM_PATH, FakeObexd
from dashbridge.simulator.phone import PhoneMessage, VirtualPhone

OBEX = "org.bluez.obex"
MAP = "org.bluez.obex.MessageAccess1"
MSG = "org.bluez.obex.Message1"
PROPS = "org.freedesktop.DBus.Properties"
ADDR = "AA:BB:CC:00:00:09"


class Recorder:
    def __init__(self, bus: MessageBus) -> None:
        self.signals: list[tuple[str, str, list[Any]]] = []
        self.event = asyncio.Event()
        bus.add_message_handler(self._on)

    def _on(self, msg: Message) -> None:
        if msg.message_type.name == "SIGNAL" and msg.sender != "org.freedesktop.DBus":
            self.signals.append((msg.member or "", msg.path or "", unwrap(list(msg.body))))
            self.event.set()

    async def wait(self, member: str, pred: Any = lambda p, b: True, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while True:
                for m, p, b in self.signals:
                    if m == member and pred(p, b):
                        return b
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def env(session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    phone = VirtualPhone(ADDR)
    phone.messages.append(PhoneMessage(handle=5, sender="+15550005", sender_name="Five", body="five",
                                       timestamp="20240101T100000"))
    phone.messages.append(PhoneMessage(handle=6, type="EMAIL", sender="six@example.com", subject="Six",
                                       body=obex_map.make_email("six@example.com", "", "Six", "six"),
                                       timestamp="20240102T100000", read=True))
    od = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path / "obex")
    bus = await MessageBus(bus_address=session_bus.address).connect()
    rec = Recorder(bus)
    await call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
               [f"type='signal',sender='{OBEX}'"])
    (session,) = await call(bus, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "sa{sv}",
                            [ADDR, {"Target": Variant("s", "MAP")}])
    yield {"obexd": od, "bus": bus, "session": session, "phone": phone, "rec": rec, "tmp": tmp_path}
    bus.disconnect()
    await od.stop()


async def _map(env: dict[str, Any], member: str, sig: str = "", body: list[Any] | None = None) -> Any:
    return await call(env["bus"], OBEX, env["session"], MAP, member, sig, body or [])


async def test_folders_and_strict_filters(env: dict[str, Any]) -> None:
    (folders,) = await _map(env, "ListFolders", "a{sv}", [{}])
    assert unwrap(folders) == [{"Name": "telecom"}]
    await _map(env, "SetFolder", "s", ["telecom/msg"])
    (folders,) = await _map(env, "ListFolders", "a{sv}", [{"MaxCount": Variant("q", 2)}])
    assert unwrap(folders) == [{"Name": "inbox"}, {"Name": "outbox"}]
    with pytest.raises(BusError) as err:
        await _map(env, "SetFolder", "s", ["nowhere"])
    assert err.value.name == "org.bluez.obex.Error.Failed"
    for bad in ({"MaxCount": Variant("u", 5)}, {"SubjectLength": Variant("q", 10)}, {"Types": Variant("as", ["fax"])},
                {"Fields": Variant("as", ["colour"])}, {"Read": Variant("s", "yes")}):
        with pytest.raises(BusError) as err:
            await _map(env, "ListMessages", "sa{sv}", ["inbox", bad])
        assert err.value.name == "org.bluez.obex.Error.InvalidArguments", bad
    (listing,) = await _map(env, "ListMessages", "sa{sv}", ["inbox", {"Types": Variant("as", ["email"]),
                                                                      "Colour": Variant("s", "ignored")}])
    listing = unwrap(listing)
    assert list(listing) == [f"{env['session']}/message6"]
    props = listing[f"{env['session']}/message6"]
    assert props["Type"] == "email" and props["Subject"] == "Six" and props["Read"] is True
    assert props["Folder"] == "/telecom/msg/inbox" and props["Timestamp"] == "20240102T100000"
    (listing,) = await _map(env, "ListMessages", "sa{sv}", ["inbox", {"PeriodEnd": Variant("s", "20240101T235959"),
                                                                      "Fields": Variant("as", ["sender"])}])
    props = unwrap(listing)[f"{env['session']}/message5"]
    assert props["Sender"] == "Five" and "SenderAddress" not in props and "Read" not in props
    (fields,) = await _map(env, "ListFilterFields")
    assert "subject" in fields and "replyto" in fields and len(fields) == 16


async def test_message_objects_read_rw_deleted_write_only_and_get(env: dict[str, Any]) -> None:
    bus, rec = env["bus"], env["rec"]
    await _map(env, "SetFolder", "s", ["/telecom/msg"])
    await _map(env, "ListMessages", "sa{sv}", ["inbox", {}])
    path = f"{env['session']}/message5"
    await rec.wait("InterfacesAdded", lambda p, b: b[0] == path)
    await call(bus, OBEX, path, PROPS, "Set", "ssv", [MSG, "Read", Variant("b", True)])
    assert env["phone"].messages[0].read is True
    await rec.wait("PropertiesChanged", lambda p, b: p == path and b[1] == {"Read": True})
    with pytest.raises(BusError):
        await call(bus, OBEX, path, PROPS, "Set", "ssv", [MSG, "Read", Variant("s", "yes")])
    with pytest.raises(BusError):
        await call(bus, OBEX, path, PROPS, "Get", "ss", [MSG, "Deleted"])  # write-only
    with pytest.raises(BusError):
        await call(bus, OBEX, path, PROPS, "Set", "ssv", [MSG, "Subject", Variant("s", "x")])

    transfer, props = await call(bus, OBEX, path, MSG, "Get", "sb", ["", False])
    fn = unwrap(props)["Filename"]
    await rec.wait("PropertiesChanged", lambda p, b: p == transfer and b[1].get("Status") == "complete")
    m = bmessage.parse(await asyncio.to_thread(Path(fn).read_bytes))
    os.unlink(fn)
    assert m.text == "five" and m.sender is not None and m.sender.address == "+15550005"

    await call(bus, OBEX, path, PROPS, "Set", "ssv", [MSG, "Deleted", Variant("b", True)])
    assert env["phone"].messages[0].folder == "deleted"
    await rec.wait("PropertiesChanged", lambda p, b: p == path and b[1] == {"Folder": "/telecom/msg/deleted"})


async def test_notification_carries_only_folder_type_status(env: dict[str, Any]) -> None:
    # Through the control interface, as a scenario or a developer would.
    (handle,) = await call(env["bus"], OBEX, SIM_PATH, SIM_IFACE, "MapDeliver", "ssssss",
                           [ADDR, "SMS_GSM", "+15550007", "Seven", "", "hello"])
    path = f"{env['session']}/message{handle}"
    body = await env["rec"].wait("InterfacesAdded", lambda p, b: b[0] == path)
    assert body[1] == {MSG: {"Folder": "/telecom/msg/inbox", "Type": "sms-gsm", "Status": "notification"}}

    await call(env["bus"], OBEX, SIM_PATH, SIM_IFACE, "MapSetNotifications", "sb", [ADDR, False])
    obex_map.deliver(env["obexd"], ADDR, sender="+15550008", body="silent")
    await _map(env, "SetFolder", "s", ["telecom/msg"])
    (listing,) = await _map(env, "ListMessages", "sa{sv}", ["inbox", {}])
    assert f"{env['session']}/message{handle + 1}" in listing, "listing still shows it"
    assert not any(m == "InterfacesAdded" and b[1].get(MSG, {}).get("Status") == "notification"
                   and b[0].endswith(f"message{handle + 1}") for m, _p, b in env["rec"].signals)


async def test_push_message_types_and_verdicts(env: dict[str, Any]) -> None:
    bus, rec, tmp = env["bus"], env["rec"], env["tmp"]
    await _map(env, "SetFolder", "s", ["telecom/msg"])
    src = tmp / "out.bmsg"
    src.write_bytes(bmessage.serialize(bmessage.new_message("hi there", recipient="+15550009")))
    for bad in ({"Charset": Variant("s", "latin1")}, {"Transparent": Variant("s", "yes")},
                {"Retry": Variant("u", 1)}):
        with pytest.raises(BusError) as err:
            await _map(env, "PushMessage", "ssa{sv}", [str(src), "outbox", bad])
        assert err.value.name == "org.bluez.obex.Error.InvalidArguments"
    with pytest.raises(BusError):
        await _map(env, "PushMessage", "ssa{sv}", [str(tmp / "missing"), "outbox", {}])

    transfer, _ = await _map(env, "PushMessage", "ssa{sv}", [str(src), "outbox", {"Charset": Variant("s", "utf8")}])
    await rec.wait("PropertiesChanged", lambda p, b: p == transfer and b[1].get("Status") == "complete")
    assert src.exists(), "obexd never deletes a push's source file"
    (out,) = await call(bus, OBEX, SIM_PATH, SIM_IFACE, "MapOutbox", "s", [ADDR])
    assert [list(o) for o in out] == [["+15550009", "SMS_GSM", "", "hi there"]]

    await call(bus, OBEX, SIM_PATH, SIM_IFACE, "MapSetPushAccepted", "sb", [ADDR, False])
    transfer, _ = await _map(env, "PushMessage", "ssa{sv}", [str(src), "outbox", {}])
    await rec.wait("PropertiesChanged", lambda p, b: p == transfer and b[1].get("Status") == "error")
    await rec.wait("InterfacesRemoved", lambda p, b: b[0] == transfer)
    assert len(obex_map.outbox(env["obexd"], ADDR)) == 1


async def test_map_not_offered(session_bus: PrivateBus, tmp_path: Path) -> None:
    phone = VirtualPhone("AA:BB:CC:00:00:0A", profiles=("hfp", "pbap"))
    od = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path)
    bus = await MessageBus(bus_address=session_bus.address).connect()
    try:
        with pytest.raises(BusError) as err:
            await call(bus, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "sa{sv}",
                       [phone.address, {"Target": Variant("s", "map")}])
        assert err.value.name == "org.bluez.obex.Error.Failed" and "service record" in err.value.text
    finally:
        bus.disconnect()
        await od.stop()
