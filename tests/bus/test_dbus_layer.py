"""The D-Bus layer on a real private bus: deadlines, error mapping, owner watching, mirrors."""


import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from dashbridge.daemon.dbus import errors
from dashbridge.daemon.dbus.call import call
from dashbridge.daemon.dbus.mirror import ObjectManagerMirror, OfonoPropsMirror
from dashbridge.daemon.dbus.signals import SignalRouter
from dashbridge.daemon.dbus.watch import NameWatcher
from dashbridge.simulator.bus import PrivateBus


class Thing(ServiceInterface):
    def __init__(self, name: str) -> None:
        super().__init__("org.example.Thing1")
        self._name = name

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self._name

    def rename(self, name: str) -> None:
        self._name = name
        self.emit_properties_changed({"Name": name})

    @dbus_method()
    def Fail(self) -> None:
        raise DBusError("org.bluez.Error.NotReady", "adapter off")


async def _service(address: str, name: str) -> MessageBus:
    bus = await MessageBus(bus_address=address).connect()
    await bus.request_name(name)
    return bus


async def test_call_deadline_when_the_peer_never_answers(system_bus: PrivateBus) -> None:
    svc = await _service(system_bus.address, "org.example.Hung")
    svc.add_message_handler(lambda m: True if m.message_type == MessageType.METHOD_CALL else None)  # swallow
    client = await MessageBus(bus_address=system_bus.address).connect()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(errors.CallTimeout):
        await call(client, "org.example.Hung", "/", "org.example.Thing1", "Fail", timeout=0.3)
    assert loop.time() - t0 < 2.0
    client.disconnect()
    svc.disconnect()


async def test_absent_service_and_error_mapping(system_bus: PrivateBus) -> None:
    client = await MessageBus(bus_address=system_bus.address).connect()
    with pytest.raises(errors.ServiceGone):
        await call(client, "org.bluez", "/", "org.bluez.Adapter1", "StartDiscovery")
    svc = await _service(system_bus.address, "org.example.Svc")
    svc.export("/thing", Thing("a"))
    with pytest.raises(errors.NotReady) as exc:
        await call(client, "org.example.Svc", "/thing", "org.example.Thing1", "Fail")
    assert exc.value.name == "org.bluez.Error.NotReady" and exc.value.text == "adapter off"
    client.disconnect()
    svc.disconnect()


async def test_name_watcher_sees_leave_and_return(system_bus: PrivateBus) -> None:
    client = await MessageBus(bus_address=system_bus.address).connect()
    seen: asyncio.Queue[str | None] = asyncio.Queue()
    w = NameWatcher(SignalRouter(client), "org.example.Svc", lambda o: seen.put_nowait(o))
    await w.start()
    svc = await _service(system_bus.address, "org.example.Svc")
    async with asyncio.timeout(5):
        assert await seen.get() == svc.unique_name
        svc.disconnect()
        assert await seen.get() is None
        svc2 = await _service(system_bus.address, "org.example.Svc")
        assert await seen.get() == svc2.unique_name
    await w.stop()
    svc2.disconnect()
    client.disconnect()


async def test_object_manager_mirror_follows_and_rebuilds(system_bus: PrivateBus) -> None:
    svc = await _service(system_bus.address, "org.example.Svc")
    svc.export("/", _ObjectManagerRoot())
    a = Thing("a")
    svc.export("/org/example/a", a)
    client = await MessageBus(bus_address=system_bus.address).connect()
    router = SignalRouter(client)
    mirror = ObjectManagerMirror(router, "org.example.Svc")
    events: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
    mirror.add_listener(lambda kind, path, iface, props: events.put_nowait((kind, path, props)))
    assert svc.unique_name
    await mirror.load(svc.unique_name)
    assert mirror.get("/org/example/a", "org.example.Thing1") == {"Name": "a"}
    loaded = [events.get_nowait() for _ in range(events.qsize())]
    assert ("added", "/org/example/a", {"Name": "a"}) in loaded
    async with asyncio.timeout(5):
        svc.export("/org/example/b", Thing("b"))
        assert await events.get() == ("added", "/org/example/b", {"Name": "b"})
        a.rename("A")
        assert await events.get() == ("changed", "/org/example/a", {"Name": "A"})
        svc.unexport("/org/example/b")
        assert (await events.get())[:2] == ("removed", "/org/example/b")
    mirror.reset()
    assert mirror.objects == {}
    await mirror.close()
    svc.disconnect()
    client.disconnect()


class _ObjectManagerRoot(ServiceInterface):
    """dbus-fast answers GetManagedObjects for the root when something is exported there."""

    def __init__(self) -> None:
        super().__init__("org.example.Root1")


class Modem(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.ofono.Modem")
        self.props: dict[str, Variant] = {"Powered": Variant("b", False)}

    @dbus_method()
    def GetProperties(self) -> Annotated[dict[str, Variant], DBusSignature("a{sv}")]:
        return self.props

    @dbus_signal()
    def PropertyChanged(self, name: str, value: Variant) -> Annotated[list[Any], DBusSignature("sv")]:
        return [name, value]


async def test_ofono_style_mirror(system_bus: PrivateBus) -> None:
    svc = await _service(system_bus.address, "org.ofono")
    modem = Modem()
    svc.export("/hfp/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF", modem)
    client = await MessageBus(bus_address=system_bus.address).connect()
    changes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    m = OfonoPropsMirror(SignalRouter(client), "org.ofono", "/hfp/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF",
                         "org.ofono.Modem", lambda k, v: changes.put_nowait((k, v)))
    assert await m.start() == {"Powered": False}
    modem.props["Powered"] = Variant("b", True)
    modem.PropertyChanged("Powered", Variant("b", True))
    async with asyncio.timeout(5):
        assert await changes.get() == ("Powered", True)
    assert m.props["Powered"] is True
    # a malformed signal is dropped with a log line, not a crash
    bad = Message.new_signal("/hfp/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF", "org.ofono.Modem", "PropertyChanged",
                             "s", ["Powered"])
    await svc.send(bad)
    modem.PropertyChanged("Online", Variant("b", True))
    async with asyncio.timeout(5):
        assert await changes.get() == ("Online", True)
    await m.close()
    svc.disconnect()
    client.disconnect()


async def test_name_watcher_never_applies_a_stale_owner_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving that bit: GetNameOwner answers "A", and before the awaiting coroutine
    resumes, a NameOwnerChanged(A -> B) read in the same batch is handled.  The watcher must end
    on B (and a change older than the answer must not be replayed over it)."""
    from dashbridge.daemon.dbus import watch as watch_mod

    handlers: list[Callable[[Message], None]] = []

    class Router:
        bus = None

        async def subscribe(self, cb: Callable[[Message], None], **_kw: Any) -> None:
            handlers.append(cb)

    def owner_changed(old: str, new: str) -> Message:
        return Message.new_signal("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged", "sss",
                                  ["org.example.Svc", old, new])

    async def answer_then_signal(*_a: Any, **_kw: Any) -> list[Any]:
        handlers[0](owner_changed("", ":1.7"))  # older than the answer: already in it
        handlers[0](owner_changed(":1.7", ":1.9"))  # newer: read with the reply, handled first
        return [":1.7"]

    monkeypatch.setattr(watch_mod, "call", answer_then_signal)
    seen: asyncio.Queue[str | None] = asyncio.Queue()
    w = NameWatcher(Router(), "org.example.Svc", lambda o: seen.put_nowait(o))  # type: ignore[arg-type]
    await w.start()
    async with asyncio.timeout(5):
        got = [await seen.get() for _ in range(3)]
    assert got == [":1.7", None, ":1.9"]  # A, then the restart A -> B reported as vanish + appear
    assert w.owner == ":1.9"
    assert seen.empty()
    w._sub = None
    await w.stop()
