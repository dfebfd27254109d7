"""A burst of signals the way the daemon's hot path sends them, for the burst test and benchmark.

``Calls1.CallChanged``-shaped signals (``sa{sv}``) are built and sent with a raw ``bus.send`` as
``daemon/api/calls.py`` does — not through ``@dbus_signal``, which is too slow to ever fill the
socket.  The receiving dashboard can be paused (not reading at all) and the bus daemon held
(SIGSTOP) while the burst is sent — a busy bus on a loaded head unit — so the sender's socket
certainly fills.  Whether dbus-fast's writer survives that is what ``daemon/dbus/writerfix.py``
is about; this module does not apply the fix: the caller decides.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

N = 10_000
_DRAIN_S = 30.0
_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


def call_changed(i: int) -> Message:
    props = {"Id": Variant("s", f"call{i}"), "Phone": Variant("s", "AA:BB:CC:DD:EE:01"),
             "PhoneName": Variant("s", "Alice's Pixel"), "Number": Variant("s", "+447700900123"),
             "Name": Variant("s", "Mum"), "NameSource": Variant("s", "contacts"), "State": Variant("s", "active"),
             "Direction": Variant("s", "incoming"), "StartTime": Variant("x", 1_700_000_000 + i),
             "Multiparty": Variant("b", False), "Emergency": Variant("b", False),
             "DisconnectReason": Variant("s", "")}
    return Message.new_signal("/org/dashbridge", "org.dashbridge.Calls1", "CallChanged", "sa{sv}",
                              [f"call{i}", props])


async def burst(bus_address: str, *, n: int = N, bus_pid: int | None = None,
                paused_reader: bool = True) -> tuple[bool, list[str], float]:
    """Send ``n`` signals in one go; returns (sender still connected, call ids received in order,
    seconds from the first send until the client had them all)."""
    sender = await MessageBus(bus_address=bus_address).connect()
    client = await MessageBus(bus_address=bus_address).connect()
    got: list[str] = []
    all_in = asyncio.Event()

    def on(msg: Message) -> None:
        if msg.member == "CallChanged":
            got.append(msg.body[0])
            if len(got) == n:
                all_in.set()

    client.add_message_handler(on)
    reply = await asyncio.wait_for(client.call(Message(
        destination=_DBUS[0], path=_DBUS[1], interface=_DBUS[2], member="AddMatch", signature="s",
        body=[f"type='signal',sender='{sender.unique_name}',member='CallChanged'"])), 5.0)
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
    loop = asyncio.get_running_loop()
    fd, writer = client._fd, sender._writer
    assert fd is not None and writer is not None
    if paused_reader:
        loop.remove_reader(fd)  # the slow dashboard: not reading at all during the burst
    t0 = time.monotonic()
    if bus_pid is not None:
        os.kill(bus_pid, signal.SIGSTOP)
    try:
        for i in range(n):
            try:
                sender.send(call_changed(i))
            except OSError:  # dbus-fast without the fix: the connection was torn down mid-burst
                break
    finally:
        if bus_pid is not None:
            os.kill(bus_pid, signal.SIGCONT)
    # Let the sender's writer drain what the socket would not take at once.
    async with asyncio.timeout(_DRAIN_S):
        while sender.connected and (writer.messages or writer.buf is not None):
            await asyncio.sleep(0)
    connected = sender.connected
    if paused_reader:
        from dbus_fast.aio.message_reader import build_message_reader

        reader = build_message_reader(client._sock, client._process_message, client._finalize, False)
        loop.add_reader(fd, reader)  # the client catches up
    if connected:
        async with asyncio.timeout(_DRAIN_S):
            await all_in.wait()
    elapsed = time.monotonic() - t0
    client.disconnect()
    sender.disconnect()
    return connected, got, elapsed
