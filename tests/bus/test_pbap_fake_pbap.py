"""The fake obexd's PhonebookAccess1 behaves like obexd's PBAP client (reference §2.5, §7 item 12),
and its control interface org.dashbridge.Sim.Obex1 works over D-Bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap, unwrap_props
from dashbridge.daemon.dbus.errors import BusError, Failed, Forbidden, InvalidArguments, NotImplementedOnPeer
from dashbridge.profiles.pbap.vcard import parse_bytes
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.obex import FakeObexd
from dashbridge.simulator.phone import VirtualPhone

OBEX = "org.bluez.obex"
PBAP = "org.bluez.obex.PhonebookAccess1"
SIM = "org.dashbridge.Sim.Obex1"
NEW = "AA:BB:CC:00:05:11"  # PBAP 1.2, favourites
OLD = "AA:BB:CC:00:05:12"  # PBAP 1.1, no favourites


@pytest.fixture
async def obexd(session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[FakeObexd]:
    phones = [VirtualPhone(NEW, generated_contacts=30, pbap_history=4),
              VirtualPhone(OLD, generated_contacts=3, pbap_version="1.1", pbap_favourites=False)]
    od = await FakeObexd.start(session_bus.address, phones, tmpdir=tmp_path)
    yield od
    await od.stop()


@pytest.fixture
async def cli(session_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    bus = await MessageBus(bus_address=session_bus.address).connect()
    yield bus
    bus.disconnect()


async def _session(cli: MessageBus, phone: str) -> str:
    (path,) = await call(cli, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "sa{sv}",
                         [phone, {"Target": Variant("s", "PBAP")}])
    return str(path)


async def _pbap(cli: MessageBus, s: str, member: str, sig: str = "", body: list[Any] | None = None) -> Any:
    out = await call(cli, OBEX, s, PBAP, member, sig, body or [])
    return out


async def _props(cli: MessageBus, s: str) -> dict[str, Any]:
    (props,) = await call(cli, OBEX, s, "org.freedesktop.DBus.Properties", "GetAll", "s", [PBAP])
    return unwrap_props(props)


async def _pull(cli: MessageBus, s: str, filters: dict[str, Variant]) -> bytes:
    """PullAll and wait for the transfer object to go (subscribed first: the removal may arrive
    before the reply has been read)."""
    removed: set[str] = set()
    changed = asyncio.Event()

    def on(msg: Message) -> None:
        if msg.member == "InterfacesRemoved":
            removed.add(msg.body[0])
            changed.set()

    cli.add_message_handler(on)
    await call(cli, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
               [f"type='signal',sender='{OBEX}',member='InterfacesRemoved'"])
    path, props = await _pbap(cli, s, "PullAll", "sa{sv}", ["", filters])
    async with asyncio.timeout(5):
        while path not in removed:
            changed.clear()
            await changed.wait()
    cli.remove_message_handler(on)
    return await asyncio.to_thread(Path(props["Filename"].value).read_bytes)


async def test_select_first_strict_filters_and_formats(obexd: FakeObexd, cli: MessageBus) -> None:
    s = await _session(cli, NEW)
    with pytest.raises(Forbidden):
        await _pbap(cli, s, "PullAll", "sa{sv}", ["", {}])
    with pytest.raises(Forbidden):
        await _pbap(cli, s, "GetSize")
    assert "Folder" not in await _props(cli, s)
    with pytest.raises(InvalidArguments):
        await _pbap(cli, s, "Select", "ss", ["int", "nonsense"])
    with pytest.raises(InvalidArguments):
        await _pbap(cli, s, "Select", "ss", ["sim1", "fav"])  # favourites are internal only
    await _pbap(cli, s, "Select", "ss", ["INT", "PB"])
    assert (await _props(cli, s))["Folder"] == "/telecom/pb"
    for bad in ({"Offset": Variant("u", 0)}, {"MaxCount": Variant("i", 5)}, {"Format": Variant("s", "vcard40")},
                {"Fields": Variant("as", ["N", "SHOESIZE"])}, {"Order": Variant("s", "random")}):
        with pytest.raises(InvalidArguments):
            await _pbap(cli, s, "PullAll", "sa{sv}", ["", bad])
    # Unknown keys (and the documented-but-unimplemented ones) are ignored.
    data = await _pull(cli, s, {"FilterAll": Variant("b", True), "offset": Variant("q", 1),
                                "MAXCOUNT": Variant("q", 5)})
    cards, _ = parse_bytes(data)
    assert len(cards) == 5 and all(c.version == "2.1" for c in cards)  # no Format: the PSE's 2.1
    data = await _pull(cli, s, {"Format": Variant("s", "vcard30"), "Offset": Variant("q", 0),
                                "MaxCount": Variant("q", 100), "Fields": Variant("as", ["N", "TEL", "BIT40"])})
    cards, _ = parse_bytes(data)
    assert len(cards) == 31 and cards[0].fn == "Me" and all(c.version == "3.0" for c in cards)
    fields = (await _pbap(cli, s, "ListFilterFields"))[0]
    assert fields[:3] == ["VERSION", "FN", "N"] and "X-IRMC-CALL-DATETIME" in fields and fields[-1] == "BIT63"


async def test_size_counters_listing_search_and_history(obexd: FakeObexd, cli: MessageBus) -> None:
    s = await _session(cli, NEW)
    await _pbap(cli, s, "Select", "ss", ["int", "pb"])
    before = await _props(cli, s)
    assert before["PrimaryCounter"] == "0" * 32  # learnt only by GetSize (upstream read_version)
    assert await _pbap(cli, s, "GetSize") == [31]
    after = await _props(cli, s)
    assert after["PrimaryCounter"] != "0" * 32 and len(after["PrimaryCounter"]) == 32
    assert after["FixedImageSize"] is True
    listing = unwrap((await _pbap(cli, s, "List", "a{sv}", [{"MaxCount": Variant("q", 3)}]))[0])
    assert [h for h, _ in listing] == ["0.vcf", "1.vcf", "2.vcf"]
    who = listing[2][1].split(";")[0]
    found = unwrap((await _pbap(cli, s, "Search", "ssa{sv}", ["name", who, {}]))[0])
    assert ("2.vcf", listing[2][1]) in [tuple(r) for r in found]
    with pytest.raises(InvalidArguments):
        await _pbap(cli, s, "Search", "ssa{sv}", ["email", "x", {}])
    await _pbap(cli, s, "Select", "ss", ["int", "mch"])
    data = await _pull(cli, s, {"Format": Variant("s", "vcard30")})
    cards, _ = parse_bytes(data)
    assert len(cards) == 4 and {c.call_type for c in cards} == {"missed"}
    # Pull one entry by handle.
    path, props = await _pbap(cli, s, "Pull", "ssa{sv}", ["1.vcf", "", {"Format": Variant("s", "vcard30")}])
    assert str(path).startswith(s + "/transfer") and unwrap(props)["Status"] == "queued"


async def test_pbap_11_phone_without_favourites(obexd: FakeObexd, cli: MessageBus) -> None:
    s = await _session(cli, OLD)
    await _pbap(cli, s, "Select", "ss", ["int", "pb"])
    props = await _props(cli, s)
    assert "PrimaryCounter" not in props and "DatabaseIdentifier" not in props
    with pytest.raises(NotImplementedOnPeer):
        await _pbap(cli, s, "UpdateVersion")
    with pytest.raises(Failed) as ei:
        await _pbap(cli, s, "Select", "ss", ["int", "fav"])
    assert ei.value.text == "Not Found"


async def test_control_interface_over_dbus(obexd: FakeObexd, cli: MessageBus) -> None:
    await call(cli, OBEX, "/org/dashbridge/sim", SIM, "PbapSetPermission", "ss", [NEW, "pending"])
    s = await _session(cli, NEW)
    with pytest.raises(Failed) as ei:  # the phone answers the OBEX SETPATH with Forbidden
        await _pbap(cli, s, "Select", "ss", ["int", "pb"])
    assert ei.value.text == "Forbidden"
    with pytest.raises(BusError):
        await call(cli, OBEX, "/org/dashbridge/sim", SIM, "PbapSetPermission", "ss", [NEW, "maybe"])
    await call(cli, OBEX, "/org/dashbridge/sim", SIM, "PbapSetPermission", "ss", [NEW, "granted"])
    await _pbap(cli, s, "Select", "ss", ["int", "pb"])
    await _pbap(cli, s, "GetSize")
    c1 = (await _props(cli, s))["PrimaryCounter"]
    await call(cli, OBEX, "/org/dashbridge/sim", SIM, "PbapChangePhonebook", "suuu", [NEW, 4, 0, 0])
    assert await _pbap(cli, s, "GetSize") == [35]
    assert (await _props(cli, s))["PrimaryCounter"] != c1
    (sessions,) = await call(cli, OBEX, "/org/dashbridge/sim", SIM, "Sessions")
    assert [list(x) for x in sessions] == [[s, NEW, "pbap"]]
    # The control object is not part of obexd's object tree.
    (managed,) = await call(cli, OBEX, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert "/org/dashbridge/sim" not in managed
    # Restart over D-Bus: obexd's name changes hands, the session is gone.
    (owner,) = await call(cli, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                          "GetNameOwner", "s", [OBEX])
    gen = obexd.generation
    await call(cli, OBEX, "/org/dashbridge/sim", SIM, "Restart")
    await obexd.wait_generation(gen + 1)
    (new_owner,) = await call(cli, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                              "GetNameOwner", "s", [OBEX])
    assert new_owner != owner
    (managed,) = await call(cli, OBEX, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert list(managed) == ["/org/bluez/obex"]
