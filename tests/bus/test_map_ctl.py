"""``dashbridgectl messages`` and ``dashbridgectl nav`` against the real API on a private bus."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.simulator import obex_map
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.navsvc import FakeNavigation
from dashbridge.simulator.obex import FakeObexd
from dashbridge.simulator.phone import VirtualPhone

from .map_helpers import MSG_IFACE, PHONE, MiniDaemon, Signals

MUM = "+447700900123"


async def ctl(bus: PrivateBus, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())", "--address", bus.address,
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def world(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path
                ) -> AsyncIterator[dict[str, Any]]:
    phone = VirtualPhone(PHONE)
    od = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path / "obex")
    nav = await FakeNavigation.start(system_bus.address)
    d = await MiniDaemon(system_bus.address, session_bus.address, tmp_path / "state").start()
    yield {"obexd": od, "daemon": d, "nav": nav, "phone": phone}
    await d.stop()
    await nav.stop()
    await od.stop()


async def test_ctl_lists_shows_replies_and_accepts(world: dict[str, Any], system_bus: PrivateBus,
                                                   client: MessageBus) -> None:
    d: MiniDaemon = world["daemon"]
    sig = await Signals(client).start()
    d.connect_phone()
    await sig.wait("PropertiesChanged", lambda b: b[0] == MSG_IFACE and b[1].get("Phones", {}).get(
        PHONE, [""])[0] in ("ready", "polling"))
    msg = obex_map.deliver(world["obexd"], PHONE, sender=MUM, sender_name="Mum", body="at geo:51.5,-0.12 now")
    mid = f"{PHONE}/{msg.handle}"
    (intent,) = await sig.wait("IntentOffered")

    rc, out, _ = await ctl(system_bus, "messages", "list")
    assert rc == 0 and mid in out and "Mum: at geo:51.5,-0.12 now" in out
    rc, out, _ = await ctl(system_bus, "--json", "messages", "show", mid)
    assert rc == 0 and json.loads(out)["body"] == "at geo:51.5,-0.12 now"
    rc, out, _ = await ctl(system_bus, "messages", "reply", mid, "coming")
    assert rc == 0 and out.startswith("sent: ")
    assert [m.body for m in obex_map.outbox(world["obexd"], PHONE)] == ["coming"]

    rc, out, _ = await ctl(system_bus, "nav", "pending")
    assert rc == 0 and intent["id"] in out and "(51.50000, -0.12000)" in out
    rc, out, _ = await ctl(system_bus, "nav", "accept", intent["id"])
    assert rc == 0 and f"{intent['id']}: " in out
    await world["nav"].wait_for(1)

    rc, _, err = await ctl(system_bus, "messages", "show", f"{PHONE}/999999")
    assert rc == 1 and "NotFound" in err
