"""Helpers shared by the BlueZ-fake and pairing tests: a recording Agent1, a Profile1, a signal log."""

import asyncio
import os
from collections.abc import Callable
from typing import Any

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32, DBusUnixFd
from dbus_fast.service import ServiceInterface, dbus_method

from dashbridge.daemon.dbus.call import call, unwrap

BLUEZ = "org.bluez"
ADAPTER_PATH = "/org/bluez/hci0"
AGENT_MANAGER = "org.bluez.AgentManager1"
PROFILE_MANAGER = "org.bluez.ProfileManager1"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
PROPS = "org.freedesktop.DBus.Properties"


def dev_path(address: str) -> str:
    return f"{ADAPTER_PATH}/dev_{address.replace(':', '_')}"


class RecordingAgent(ServiceInterface):
    """An Agent1 whose answers the test decides: ``answer`` is "accept", "reject" or "hang"."""

    def __init__(self) -> None:
        super().__init__("org.bluez.Agent1")
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answer = "accept"
        self.pin = "0000"
        self.passkey = 0
        self.event = asyncio.Event()

    def _note(self, member: str, *args: Any) -> None:
        self.calls.append((member, args))
        self.event.set()

    async def _decide(self) -> None:
        if self.answer == "reject":
            raise DBusError("org.bluez.Error.Rejected", "rejected by test")
        if self.answer == "hang":
            await asyncio.Event().wait()

    @dbus_method()
    def Release(self) -> None:
        self._note("Release")

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:
        self._note("RequestPinCode", device)
        await self._decide()
        return self.pin

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:
        self._note("RequestPasskey", device)
        await self._decide()
        return self.passkey

    @dbus_method()
    def DisplayPasskey(self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16) -> None:
        self._note("DisplayPasskey", device, passkey, entered)

    @dbus_method()
    async def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:
        self._note("RequestConfirmation", device, passkey)
        await self._decide()

    @dbus_method()
    async def RequestAuthorization(self, device: DBusObjectPath) -> None:
        self._note("RequestAuthorization", device)
        await self._decide()

    @dbus_method()
    async def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:
        self._note("AuthorizeService", device, uuid)
        await self._decide()

    @dbus_method()
    def Cancel(self) -> None:
        self._note("Cancel")

    def members(self) -> list[str]:
        return [m for m, _ in self.calls]

    async def wait_for(self, member: str, timeout: float = 5.0) -> tuple[Any, ...]:
        async with asyncio.timeout(timeout):
            while True:
                for m, args in self.calls:
                    if m == member:
                        return args
                self.event.clear()
                await self.event.wait()


class RecordingProfile(ServiceInterface):
    def __init__(self, accept: bool = True) -> None:
        super().__init__("org.bluez.Profile1")
        self.accept = accept
        self.connections: list[tuple[str, int, dict[str, Any]]] = []
        self.disconnections: list[str] = []
        self.released = False

    @dbus_method()
    def NewConnection(self, device: DBusObjectPath, fd: DBusUnixFd, props: DBusDict) -> None:
        if not self.accept:
            os.close(fd)
            raise DBusError("org.bluez.Error.Rejected", "not now")
        self.connections.append((device, fd, unwrap(props)))

    @dbus_method()
    def RequestDisconnection(self, device: DBusObjectPath) -> None:
        self.disconnections.append(device)

    @dbus_method()
    def Release(self) -> None:
        self.released = True


class SignalLog:
    """Every signal from org.bluez (and the bus daemon) on a client connection."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.messages: list[Message] = []
        self._event = asyncio.Event()
        bus.add_message_handler(self._on)

    @classmethod
    async def attach(cls, bus: MessageBus) -> "SignalLog":
        log = cls(bus)
        for rule in ("type='signal',sender='org.bluez'",
                     "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'"):
            await call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
                       "s", [rule])
        return log

    def _on(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL:
            self.messages.append(msg)
            self._event.set()

    def props_changed(self, path: str) -> list[tuple[dict[str, Any], list[str]]]:
        return [(unwrap(m.body[1]), list(m.body[2])) for m in self.messages
                if m.member == "PropertiesChanged" and m.path == path]

    def of(self, member: str) -> list[Message]:
        return [m for m in self.messages if m.member == member]

    async def wait(self, pred: Callable[[Message], bool], timeout: float = 5.0) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                self._event.clear()
                await self._event.wait()

    def mark(self) -> int:
        return len(self.messages)

    def since(self, mark: int) -> list[Message]:
        return self.messages[mark:]


async def bluez_call(bus: MessageBus, path: str, iface: str, member: str, sig: str = "",
                     body: list[Any] | None = None, timeout: float = 5.0) -> list[Any]:
    return await call(bus, BLUEZ, path, iface, member, sig, body or [], timeout=timeout)


async def set_prop(bus: MessageBus, path: str, iface: str, name: str, sig: str, value: Any) -> None:
    from dbus_fast import Variant

    await bluez_call(bus, path, PROPS, "Set", "ssv", [iface, name, Variant(sig, value)])


async def get_prop(bus: MessageBus, path: str, iface: str, name: str) -> Any:
    (v,) = await bluez_call(bus, path, PROPS, "Get", "ss", [iface, name])
    return unwrap(v)
