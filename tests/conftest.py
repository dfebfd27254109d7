"""Test harness: a private dbus-daemon per test (never the machine's buses), the daemon as a
child process with a fake NOTIFY_SOCKET, and a client connection."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus import writerfix
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

writerfix.apply()

# Make sure no test ever talks to the machine's own buses by accident.
for _var in ("DBUS_SYSTEM_BUS_ADDRESS", "DBUS_SESSION_BUS_ADDRESS"):
    os.environ[_var] = "unix:path=/nonexistent/dashbridge-tests-must-use-private-buses"


@pytest.fixture
def system_bus() -> Iterator[PrivateBus]:
    bus = PrivateBus("system").start()
    yield bus
    bus.stop()


@pytest.fixture
def session_bus() -> Iterator[PrivateBus]:
    bus = PrivateBus("session").start()
    yield bus
    bus.stop()


@pytest.fixture
async def client(system_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    """A dashboard-side connection to the private system bus."""
    bus = await MessageBus(bus_address=system_bus.address).connect()
    yield bus
    bus.disconnect()


@pytest.fixture
def daemon_factory(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path
                   ) -> Iterator[Callable[..., DaemonProcess]]:
    """``daemon_factory(config={...}, state_dir=..., start=True)`` -> a running DaemonProcess."""
    made: list[DaemonProcess] = []

    def make(config: dict[str, Any] | None = None, *, state_dir: Path | None = None, start: bool = True,
             **kw: Any) -> DaemonProcess:
        d = DaemonProcess(system_bus.address, session_bus.address, config=config,
                          state_dir=state_dir or tmp_path / "state", **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.cleanup()


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    return daemon_factory()


class SignalCollector:
    """Collects signals matching a rule; ``await wait(pred, timeout)`` instead of sleeping."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.messages: list[Message] = []
        self._cond = asyncio.Condition()
        bus.add_message_handler(self._on)

    def _on(self, msg: Message) -> None:
        if msg.message_type.name == "SIGNAL":
            self.messages.append(msg)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait(self, pred: Callable[[Message], bool], timeout: float = 5.0) -> Message:
        async with asyncio.timeout(timeout):
            async with self._cond:
                while True:
                    for m in self.messages:
                        if pred(m):
                            return m
                    await self._cond.wait()


@pytest.fixture
async def signals(client: MessageBus) -> SignalCollector:
    from dashbridge.daemon.dbus.call import call

    await call(client, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
               "s", ["type='signal',sender='org.dashbridge'"])
    return SignalCollector(client)
