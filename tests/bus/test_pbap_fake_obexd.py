"""The fake obexd core behaves like obexd (reference §2, §7 items 11 and 13), seen from a client on
a real private session bus: sessions, ownership, typed arguments, the transfer life cycle, temp
files and restarts.  A tiny test profile stands in for PBAP/MAP so the core is tested alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap_props
from dashbridge.daemon.dbus.errors import BusError, Failed, InvalidArguments, NotPermitted, ServiceGone
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.obex import (
    FakeInterface,
    FakeObexd,
    ObexProfile,
    Session,
    TransferSpec,
    register_profile,
)
from dashbridge.simulator.phone import VirtualPhone

PHONE = "AA:BB:CC:DD:EE:01"
TEST_UUID = "0000ffff-0000-1000-8000-00805f9b34fb"
OBEX = "org.bluez.obex"


class EchoProfile(FakeInterface):
    """GET returns the bytes asked for; lets the test drive rate and failure."""

    def __init__(self, session: Session) -> None:
        super().__init__("org.dashbridge.Test.Echo1")
        self.session = session
        self.method("Get", "say", "oa{sv}", self._get)

    def _get(self, call: Any, targetfile: str, data: bytes) -> list[Any]:
        path, props = self.session.queue_transfer(TransferSpec("echo", "x-test/echo", bytes(data),
                                                               targetfile=targetfile))
        return [path, props]


register_profile(ObexProfile(names=("echo",), uuid=TEST_UUID, phone_profile="echo", factory=EchoProfile,
                             default_channel=7))


@pytest.fixture
async def obexd(session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[FakeObexd]:
    phone = VirtualPhone(PHONE, profiles=("hfp", "echo"))
    od = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path, progress_interval=0.05)
    yield od
    await od.stop()


@pytest.fixture
async def cli(session_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    bus = await MessageBus(bus_address=session_bus.address).connect()
    yield bus
    bus.disconnect()


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def _read(p: Path) -> bytes:
    return p.read_bytes()


def _exists(p: Path) -> bool:
    return p.exists()


class Recorder:
    def __init__(self, bus: MessageBus) -> None:
        self.msgs: list[Message] = []
        self.event = asyncio.Event()
        bus.add_message_handler(self._on)

    def _on(self, msg: Message) -> None:
        if msg.message_type.name == "SIGNAL" and msg.sender != "org.freedesktop.DBus":
            self.msgs.append(msg)
            self.event.set()

    async def wait(self, pred: Any, timeout: float = 5.0) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                self.event.clear()
                await self.event.wait()


async def _listen(bus: MessageBus) -> Recorder:
    rec = Recorder(bus)
    await call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
               [f"type='signal',sender='{OBEX}'"])
    return rec


async def _session(bus: MessageBus, target: str = "echo", **extra: Variant) -> str:
    (path,) = await call(bus, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "sa{sv}",
                         [PHONE, {"Target": Variant("s", target), **extra}])
    return str(path)


async def test_session_announced_with_profile_interface_and_typed_args(obexd: FakeObexd, cli: MessageBus) -> None:
    rec = await _listen(cli)
    path = await _session(cli, "ECHO", Channel=Variant("y", 9))
    assert path == "/org/bluez/obex/client/session0"
    added = await rec.wait(lambda m: m.member == "InterfacesAdded" and m.body[0] == path)
    assert added.path == "/"
    assert set(added.body[1]) == {"org.bluez.obex.Session1", "org.dashbridge.Test.Echo1"}
    props = unwrap_props(added.body[1]["org.bluez.obex.Session1"])
    assert props["Target"] == TEST_UUID and props["Destination"] == PHONE and props["Channel"] == 9
    # Channel typed as a uint32 is silently ignored (upstream parse_device_dict) -> a new session
    # with the SDP channel; both Channel and PSM -> InvalidArguments; no Target -> InvalidArguments.
    other = await _session(cli, "echo", Channel=Variant("u", 9))
    assert other == "/org/bluez/obex/client/session1"
    (ch,) = await call(cli, OBEX, other, "org.freedesktop.DBus.Properties", "Get", "ss",
                       ["org.bluez.obex.Session1", "Channel"])
    assert ch.value == 7
    with pytest.raises(InvalidArguments):
        await _session(cli, "echo", Channel=Variant("y", 1), PSM=Variant("q", 0x1001))
    with pytest.raises(InvalidArguments):
        await call(cli, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "sa{sv}", [PHONE, {}])
    with pytest.raises(Failed):
        await _session(cli, "nosuchprofile")
    # Same arguments from the same owner reuse the session.
    assert await _session(cli, "echo", Channel=Variant("y", 9)) == path


async def test_session_dies_with_owner_and_remove_is_owner_only(obexd: FakeObexd, cli: MessageBus,
                                                                session_bus: PrivateBus) -> None:
    rec = await _listen(cli)
    other = await MessageBus(bus_address=session_bus.address).connect()
    path = await _session(other)
    with pytest.raises(NotPermitted):  # NotAuthorized
        await call(cli, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "RemoveSession", "o", [path])
    other.disconnect()
    await rec.wait(lambda m: m.member == "InterfacesRemoved" and m.body[0] == path)
    with pytest.raises(InvalidArguments):
        await call(cli, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "RemoveSession", "o", [path])


async def test_transfer_lifecycle_temp_file_and_removal(obexd: FakeObexd, cli: MessageBus, tmp_path: Path) -> None:
    rec = await _listen(cli)
    s = await _session(cli)
    payload = os.urandom(50_000)
    obexd.control.set_rate(PHONE, 100_000)  # ~0.5 s: progress is reported on the way
    tpath, props = await call(cli, OBEX, s, "org.dashbridge.Test.Echo1", "Get", "say", ["", payload])
    props = unwrap_props(props)
    assert props["Status"] == "queued" and "Size" in props
    fname = Path(props["Filename"])
    assert fname.parent == tmp_path and fname.name.startswith("obex-client") and len(fname.name) == 17
    assert _mode(fname) == 0o600
    done = await rec.wait(lambda m: m.member == "PropertiesChanged" and m.path == tpath
                          and m.body[1].get("Status", Variant("s", "")).value in ("complete", "error"))
    assert done.body[1]["Status"].value == "complete"
    removed = await rec.wait(lambda m: m.member == "InterfacesRemoved" and m.body[0] == tpath)
    assert rec.msgs.index(removed) > rec.msgs.index(done)
    progress = [m.body[1]["Transferred"].value for m in rec.msgs
                if m.member == "PropertiesChanged" and m.path == tpath and "Transferred" in m.body[1]]
    assert progress and progress[-1] == len(payload) and progress == sorted(progress)
    assert _read(fname) == payload  # left for the client to delete
    with pytest.raises(ServiceGone):  # the object is gone
        await call(cli, OBEX, tpath, "org.freedesktop.DBus.Properties", "GetAll", "s", ["org.bluez.obex.Transfer1"])


async def test_fast_transfer_may_skip_active(obexd: FakeObexd, cli: MessageBus) -> None:
    rec = await _listen(cli)
    s = await _session(cli)
    tpath, _ = await call(cli, OBEX, s, "org.dashbridge.Test.Echo1", "Get", "say", ["", b"x" * 10])
    await rec.wait(lambda m: m.member == "InterfacesRemoved" and m.body[0] == tpath)
    statuses = [m.body[1]["Status"].value for m in rec.msgs
                if m.member == "PropertiesChanged" and m.path == tpath and "Status" in m.body[1]]
    assert statuses == ["complete"]  # coalesced: queued -> complete, no "active" seen


async def test_transfer_error_part_way_removes_file(obexd: FakeObexd, cli: MessageBus) -> None:
    rec = await _listen(cli)
    s = await _session(cli)
    obexd.control.fail_next_transfer(PHONE, after_bytes=1000)
    tpath, props = await call(cli, OBEX, s, "org.dashbridge.Test.Echo1", "Get", "say", ["", b"y" * 5000])
    done = await rec.wait(lambda m: m.member == "PropertiesChanged" and m.path == tpath
                          and "Status" in m.body[1] and m.body[1]["Status"].value in ("complete", "error"))
    assert done.body[1]["Status"].value == "error"
    await rec.wait(lambda m: m.member == "InterfacesRemoved" and m.body[0] == tpath)
    assert not _exists(Path(props["Filename"].value))


async def test_restart_drops_everything_and_comes_back(obexd: FakeObexd, cli: MessageBus) -> None:
    await _session(cli)
    (before,) = await call(cli, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                           "GetNameOwner", "s", [OBEX])
    await obexd.restart()
    (after,) = await call(cli, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                          "GetNameOwner", "s", [OBEX])
    assert after != before
    (managed,) = await call(cli, OBEX, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert list(managed) == ["/org/bluez/obex"]
    assert await _session(cli) == "/org/bluez/obex/client/session0"  # a new process: counter restarts


async def test_unknown_phone_and_wrong_signature(obexd: FakeObexd, cli: MessageBus) -> None:
    with pytest.raises(Failed):
        await call(cli, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "sa{sv}",
                   ["00:11:22:33:44:55", {"Target": Variant("s", "echo")}])
    with pytest.raises(BusError) as ei:
        await call(cli, OBEX, "/org/bluez/obex", "org.bluez.obex.Client1", "CreateSession", "s", [PHONE])
    assert ei.value.name == "org.freedesktop.DBus.Error.UnknownMethod"
