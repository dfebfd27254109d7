"""A burst of 10,000 signals to a dashboard client that reads slowly must neither drop the
daemon's bus connection nor lose a signal (DESIGN.md §5; fix in daemon/dbus/writerfix.py)."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_signal

from daemon.dbus import writerfix
from daemon.dbus.bus import connect
from daemon.dbus.call import call
from simulator.bus import PrivateBus

N = 10_000


class Burst(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.dashbridge.Test.Burst1")

    @dbus_signal()
    def Tick(self, n: int) -> DBusUInt32:
        return n


async def _burst(bus_address: str) -> tuple[bool, int]:
    """Emit N signals in one go to a client whose reader is paused; returns (connected, received)."""
    daemon_bus = await connect(bus_address)
    iface = Burst()
    daemon_bus.export("/org/dashbridge", iface)
    client = await MessageBus(bus_address=bus_address).connect()
    got: list[int] = []
    all_in = asyncio.Event()

    def on(msg: Message) -> None:
        if msg.member == "Tick":
            got.append(msg.body[0])
            if len(got) == N:
                all_in.set()

    client.add_message_handler(on)
    await call(client, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
               [f"type='signal',sender='{daemon_bus.unique_name}',member='Tick'"])
    loop = asyncio.get_running_loop()
    loop.remove_reader(client._fd)  # the slow dashboard: not reading at all during the burst
    for i in range(N):
        iface.Tick(i)
    # Let the daemon's writer drain what the socket would not take at once.
    async with asyncio.timeout(30):
        while daemon_bus._writer.messages or daemon_bus._writer.buf is not None:
            if not daemon_bus.connected:
                break
            await asyncio.sleep(0)
    connected = daemon_bus.connected
    from dbus_fast.aio.message_reader import build_message_reader

    reader = build_message_reader(client._sock, client._process_message, client._finalize, False)
    loop.add_reader(client._fd, reader)  # the client catches up
    if connected:
        async with asyncio.timeout(30):
            await all_in.wait()
    client.disconnect()
    daemon_bus.disconnect()
    return connected, len(got)


async def test_burst_of_10k_signals_keeps_connection_and_loses_nothing(system_bus: PrivateBus) -> None:
    assert writerfix.apply(), "the writer fix must be active on the dbus-fast version we ship with"
    connected, received = await _burst(system_bus.address)
    assert connected, "the daemon's bus connection was torn down by the burst"
    assert received == N


def test_fix_is_version_checked() -> None:
    # The fix only replaces a writer whose shape we checked; an unknown major version is left alone.
    assert writerfix.needs_fix() == writerfix.dbus_fast_version().startswith("5.")


@pytest.mark.parametrize("exc", [BlockingIOError, InterruptedError])
def test_would_block_keeps_the_message_and_waits_for_writable(exc: type[OSError]) -> None:
    """Unit level: a send that raises would-block leaves the buffer in place and registers the
    writer instead of finalizing the bus."""
    writerfix.apply()
    from collections import deque

    from dbus_fast.aio import message_bus as mb

    events: list[str] = []

    class Sock:
        def send(self, _buf: object) -> int:
            raise exc()

    class Loop:
        def add_writer(self, fd: int, cb: object) -> None:
            events.append("add_writer")

        def remove_writer(self, fd: int) -> None:
            events.append("remove_writer")

    class Bus:
        _user_disconnect = False

        def _finalize(self, e: Exception) -> None:
            events.append("finalize")

    w = mb._MessageWriter.__new__(mb._MessageWriter)
    w.messages = deque([(bytearray(b"x" * 10), None, None)])
    w.negotiate_unix_fd = False
    w.bus, w.sock, w.loop, w.fd = Bus(), Sock(), Loop(), 3
    w.buf, w.offset, w.unix_fds, w.fut = None, 0, None, None
    w.write_callback()
    assert "finalize" not in events
    assert events == ["add_writer"]
    assert w.buf is not None and bytes(w.buf) == b"x" * 10 and w.offset == 0
