"""Helpers for the cloud tests that run the real dashbridged against the fake backend."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap_props
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.cloud import FakeCloud

CLOUD = "org.dashbridge.Cloud1"
NAME, PATH = "org.dashbridge", "/org/dashbridge"


def daemon_config(cloud: FakeCloud, **cloud_overrides: Any) -> dict[str, Any]:
    c = cloud.daemon_config(startup_delay="0s", request_timeout="2s")
    c.update(cloud_overrides)
    return {"cloud": c}


async def props(client: MessageBus) -> dict[str, Any]:
    (raw,) = await call(client, NAME, PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", [CLOUD])
    return unwrap_props(raw)


async def cloud_call(client: MessageBus, member: str, signature: str = "", body: list[Any] | None = None
                     ) -> list[Any]:
    return await call(client, NAME, PATH, CLOUD, member, signature, body or [])


async def wait_prop(client: MessageBus, name: str, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until property ``name`` satisfies ``pred``, driven by PropertiesChanged (no polling)."""
    changed = asyncio.Event()

    def on(msg: Any) -> None:
        if msg.member == "PropertiesChanged" and msg.body and msg.body[0] == CLOUD:
            changed.set()

    client.add_message_handler(on)
    try:
        await call(client, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
                   "s", [f"type='signal',sender='{NAME}',member='PropertiesChanged',arg0='{CLOUD}'"])
        async with asyncio.timeout(timeout):
            while True:
                changed.clear()  # before reading: a change during GetAll is not lost
                p = await props(client)
                if pred(p[name]):
                    return p
                await changed.wait()
    finally:
        client.remove_message_handler(on)


async def ctl(bus: PrivateBus, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())", "--address", bus.address,
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
