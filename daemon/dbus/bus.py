"""Connecting to the buses named in config, with a deadline."""

from __future__ import annotations

import asyncio

from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from . import writerfix

CONNECT_TIMEOUT_S = 5.0


async def connect(address: str | None, kind: str = "system", *, negotiate_unix_fd: bool = False,
                  timeout: float = CONNECT_TIMEOUT_S) -> MessageBus:
    """Connect to ``address`` (or the default bus of ``kind`` when None)."""
    writerfix.apply()
    if address:
        bus = MessageBus(bus_address=address, negotiate_unix_fd=negotiate_unix_fd)
    else:
        bus = MessageBus(
            bus_type=BusType.SYSTEM if kind == "system" else BusType.SESSION,
            negotiate_unix_fd=negotiate_unix_fd,
        )
    async with asyncio.timeout(timeout):
        await bus.connect()
    return bus
