"""A burst of 10,000 signals to a dashboard client that reads slowly must neither drop the
daemon's bus connection nor lose a signal (DESIGN.md §5; fix in daemon/dbus/writerfix.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dashbridge.daemon.dbus import writerfix
from dashbridge.simulator.burst import N, burst
from dashbridge.simulator.bus import PrivateBus


async def test_burst_of_10k_signals_keeps_connection_and_loses_nothing(system_bus: PrivateBus) -> None:
    assert writerfix.apply(), "the writer fix must be active on the dbus-fast version we ship with"
    connected, got, _ = await burst(system_bus.address, bus_pid=system_bus.pid)
    assert connected, "the daemon's bus connection was torn down by the burst"
    assert got == [f"call{i}" for i in range(N)], "signals were lost, duplicated or reordered"


CONTROL = """
import asyncio, sys, logging
logging.disable(logging.CRITICAL)
from dashbridge.simulator.burst import burst
connected, got, _ = asyncio.run(burst(sys.argv[1], bus_pid=int(sys.argv[2])))
print(connected, len(got))
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
