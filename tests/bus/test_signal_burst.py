"""A burst of 10,000 signals to a dashboard client that reads slowly must neither drop the
daemon's bus connection nor lose a signal (DESIGN.md §5; fix in daemon/dbus/writerfix.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_signal

from dashbridge.daemon.dbus import writerfix
from dashbridge.daemon.dbus.call import call
from dashbridge.simulator.bus import PrivateBus

N = 10_000


class Burst(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.dashbridge.Test.Burst1")

    @dbus_signal()
    def Tick(self, n: int) -> DBusUInt32:
        return n


def _call_changed(i: int) -> Message:
    """A signal shaped like the daemon's hot path: Calls1.CallChanged (sa{sv}), built and sent with
    a raw ``bus.send`` as daemon/api/calls.py does — not through ``@dbus_signal``, which is too slow
    to ever fill the socket (a test through it passed without the fix)."""
    props = {"Id": Variant("s", f"call{i}"), "Phone": Variant("s", "AA:BB:CC:DD:EE:01"),
             "PhoneName": Variant("s", "Alice's Pixel"), "Number": Variant("s", "+447700900123"),
             "Name": Variant("s", "Mum"), "NameSource": Variant("s", "contacts"), "State": Variant("s", "active"),
             "Direction": Variant("s", "incoming"), "StartTime": Variant("x", 1_700_000_000 + i),
             "Multiparty": Variant("b", False), "Emergency": Variant("b", False),
             "DisconnectReason": Variant("s", "")}
    return Message.new_signal("/org/dashbridge", "org.dashbridge.Calls1", "CallChanged", "sa{sv}", [f"call{i}", props])


async def _burst(bus_address: str, bus_pid: int | None = None) -> tuple[bool, int]:
    """Send N signals in one go to a client whose reader is paused; returns (connected, received).
    With ``bus_pid``, the bus daemon is also held (SIGSTOP) while the burst is sent — a busy bus
    on a loaded 2-core head unit — so the daemon's socket certainly fills: whether dbus-daemon
    happens to keep up must not decide the outcome.  Whether the writer fix is active is the
    caller's business (``writerfix.apply()``)."""
    daemon_bus = await MessageBus(bus_address=bus_address).connect()
    client = await MessageBus(bus_address=bus_address).connect()
    got: list[str] = []
    all_in = asyncio.Event()

    def on(msg: Message) -> None:
        if msg.member == "CallChanged":
            got.append(msg.body[0])
            if len(got) == N:
                all_in.set()

    client.add_message_handler(on)
    await call(client, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
               [f"type='signal',sender='{daemon_bus.unique_name}',member='CallChanged'"])
    loop = asyncio.get_running_loop()
    loop.remove_reader(client._fd)  # the slow dashboard: not reading at all during the burst
    if bus_pid is not None:
        os.kill(bus_pid, signal.SIGSTOP)
    try:
        for i in range(N):
            try:
                daemon_bus.send(_call_changed(i))
            except OSError:  # dbus-fast without the fix: the connection was torn down mid-burst
                break
    finally:
        if bus_pid is not None:
            os.kill(bus_pid, signal.SIGCONT)
    # Let the daemon's writer drain what the socket would not take at once (each turn of the loop
    # lets it write when the socket is writable again).
    async with asyncio.timeout(30):
        while daemon_bus.connected and (daemon_bus._writer.messages or daemon_bus._writer.buf is not None):
            await asyncio.sleep(0)
    connected = daemon_bus.connected
    from dbus_fast.aio.message_reader import build_message_reader

    reader = build_message_reader(client._sock, client._process_message, client._finalize, False)
    loop.add_reader(client._fd, reader)  # the client catches up
    if connected:
        async with asyncio.timeout(30):
            await all_in.wait()
        assert got == [f"call{i}" for i in range(N)], "signals arrived out of order or duplicated"
    client.disconnect()
    daemon_bus.disconnect()
    return connected, len(got)


async def test_burst_of_10k_signals_keeps_connection_and_loses_nothing(system_bus: PrivateBus) -> None:
    assert writerfix.apply(), "the writer fix must be active on the dbus-fast version we ship with"
    connected, received = await _burst(system_bus.address, system_bus.pid)
    assert connected, "the daemon's bus connection was torn down by the burst"
    assert received == N


CONTROL = """
import asyncio, sys, logging
logging.disable(logging.CRITICAL)
from tests.bus.test_signal_burst import _burst
connected, received = asyncio.run(_burst(sys.argv[1], int(sys.argv[2])))
print(connected, received)
"""


def test_control_without_the_fix_the_burst_drops_the_connection(system_bus: PrivateBus) -> None:
    """The same burst in a process where the fix is not applied: dbus-fast tears the connection
    down — so the test above can fail, and the fix is what keeps it green."""
    res = subprocess.run([sys.executable, "-c", CONTROL, system_bus.address, str(system_bus.pid)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[2])
    assert res.returncode == 0, res.stderr[-2000:]
    connected, _received = res.stdout.split()
    assert connected == "False", "without the fix the burst should have dropped the connection"


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
