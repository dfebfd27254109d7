"""A fake dashboard navigation service: owns the configured bus name and answers the configured
method (``navigation.service``: bus name, object path, interface, method; signature ``a{sv}``),
recording every destination it receives.

Modes (``mode``): ``"ok"`` answers at once, ``"error"`` answers with
``org.dashboard.Navigation.Error.Unavailable``, ``"hang"`` never answers (the call is recorded
and left pending).  "Absent" is simply not started (or :meth:`stop`-ped).

Control: the Python API (``received``, ``wait_for(n)``, ``set_mode``), and on the fake's own
connection ``org.dashbridge.Sim.Navigation1`` at ``/org/dashbridge/sim``: ``SetMode(s)``,
``Received() -> aa{sv}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType, RequestNameReply, Variant
from dbus_fast.aio import MessageBus

DEFAULT_NAME = "org.dashboard.Navigation"
DEFAULT_PATH = "/org/dashboard/Navigation"
DEFAULT_IFACE = "org.dashboard.Navigation1"
DEFAULT_METHOD = "NavigateTo"
ERROR_NAME = "org.dashboard.Navigation.Error.Unavailable"
SIM_PATH = "/org/dashbridge/sim"
SIM_IFACE = "org.dashbridge.Sim.Navigation1"
MODES = ("ok", "error", "hang")


@dataclass
class Received:
    destination: dict[str, Any]  # unwrapped a{sv}
    sender: str
    answered: bool


@dataclass
class FakeNavigation:
    bus_address: str
    bus_name: str = DEFAULT_NAME
    path: str = DEFAULT_PATH
    interface: str = DEFAULT_IFACE
    method: str = DEFAULT_METHOD
    mode: str = "ok"
    received: list[Received] = field(default_factory=list)
    bus: MessageBus | None = None
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    _pending: list[Message] = field(default_factory=list)

    @classmethod
    async def start(cls, bus_address: str, **kw: Any) -> FakeNavigation:
        self = cls(bus_address, **kw)
        await self.up()
        return self

    @classmethod
    def from_config(cls, bus_address: str, service: Any, **kw: Any) -> FakeNavigation:
        """From a ``NavigationServiceConfig`` (or anything with the same attributes)."""
        return cls(bus_address, bus_name=service.bus_name, path=service.path, interface=service.interface,
                   method=service.method, **kw)

    async def up(self) -> None:
        bus = await MessageBus(bus_address=self.bus_address).connect()
        bus.add_message_handler(self._on_message)
        self.bus = bus
        async with asyncio.timeout(5.0):
            reply = await bus.request_name(self.bus_name)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            bus.disconnect()
            raise RuntimeError(f"cannot own {self.bus_name}: {reply}")

    async def stop(self) -> None:
        bus, self.bus = self.bus, None
        self._pending.clear()
        if bus is not None:
            bus.disconnect()
            try:
                async with asyncio.timeout(2.0):
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            except (TimeoutError, Exception):
                pass

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode

    @property
    def destinations(self) -> list[dict[str, Any]]:
        return [r.destination for r in self.received]

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """Until at least ``count`` calls were received (answered or not)."""
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.path == SIM_PATH and msg.interface == SIM_IFACE:
            return self._control(msg)
        if msg.path != self.path or msg.interface != self.interface or msg.member != self.method:
            return None  # dbus-fast answers UnknownMethod/UnknownObject
        if msg.signature != "a{sv}":
            return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs",
                                     f"{self.method} takes a{{sv}}, got {msg.signature or 'nothing'}")
        dest = {k: v.value if isinstance(v, Variant) else v for k, v in msg.body[0].items()}
        answer = self.mode
        self.received.append(Received(dest, msg.sender or "", answered=answer != "hang"))
        asyncio.get_running_loop().create_task(self._notify())
        if answer == "ok":
            return Message.new_method_return(msg)
        if answer == "error":
            return Message.new_error(msg, ERROR_NAME, "route guidance is not available")
        self._pending.append(msg)  # never answered
        return True

    def _control(self, msg: Message) -> Message:
        if msg.member == "SetMode" and msg.signature == "s":
            if msg.body[0] not in MODES:
                return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", f"modes: {MODES}")
            self.mode = msg.body[0]
            return Message.new_method_return(msg)
        if msg.member == "Received" and msg.signature == "":
            out = []
            for r in self.received:
                d = {k: Variant(_sig(v), v) for k, v in r.destination.items()}
                out.append(d)
            return Message.new_method_return(msg, "aa{sv}", [out])
        return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"no {msg.member}")


def _sig(v: Any) -> str:
    if isinstance(v, bool):
        return "b"
    if isinstance(v, int):
        return "x"
    if isinstance(v, float):
        return "d"
    return "s"
