"""Incoming call to the card on the virtual head unit, through the real browser (issue 16).

* ``hmi_card_p50_ms`` / ``hmi_card_p99_ms``: from the fake oFono (a World's ``incoming_call``)
  sending ``CallAdded`` to the incoming-call card shown, with the contact's name, on the page that
  ``dashbridge-hmi`` serves, in Debian's headless Chromium.  The path: fake oFono -> dbus-daemon
  -> dashbridged (call table, caller ID from the synced contacts) -> dbus-daemon -> the bridge
  (one D-Bus connection, a dashboard client) -> WebSocket -> the page's JavaScript, which unhides
  ``#incoming``.  The page is watched from inside: before each ring a ``MutationObserver`` is
  armed by a DevTools ``Runtime.evaluate`` whose promise resolves when the card is shown with the
  caller's name; the time is taken when that answer reaches the bench (so it includes one
  DevTools message from the browser to the bench).
* ``hmi_dbus_p50_ms`` / ``hmi_dbus_p99_ms`` (the floor): from the same ring to the daemon's
  ``org.dashbridge.Calls1.CallAdded`` at a plain dbus-fast client on the same bus, in the same
  process as the bench.  The card's figures minus these are the bridge, the WebSocket, the page
  and the browser.
* ``hmi_devtools_rtt_p50_ms``: a DevTools round trip (``Runtime.evaluate`` of ``1``) measured
  after each ring, the cost of asking the browser anything.

``DASHBRIDGE_BENCH_HMI`` sets the number of rings (default 30, after 3 warm-up rings).  Each
ring is rejected by the fake phone's caller hanging up, and the card seen gone, before the next.
Needs Debian's ``chromium`` (``make sysdeps``); without it the area fails saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call
from dashbridge.daemon.hmi.bridge import HmiServer
from dashbridge.simulator.browser import Browser, Page, executable
from dashbridge.simulator.obex_pbap import book_for
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.vcards import SimContact
from dashbridge.simulator.world import World, WorldSpec

N = int(os.environ.get("DASHBRIDGE_BENCH_HMI", "30"))
WARMUP = 3
ADDR = "AA:BB:CC:DD:16:B1"
CALLER = "+447700900456"
NAME = "Sam Smith"
FIGURES: dict[str, dict[str, object]] = {
    "hmi_card_p50_ms": {"floor": "hmi_dbus_p50_ms", "samples": N,
                        "what": "fake oFono CallAdded -> the incoming-call card, named, on the page in Chromium"},
    "hmi_card_p99_ms": {"floor": "hmi_dbus_p99_ms", "samples": N, "what": "the same, p99"},
    "hmi_dbus_p50_ms": {"samples": N, "what": "the same ring -> Calls1.CallAdded at a plain D-Bus client"},
    "hmi_dbus_p99_ms": {"samples": N, "what": "the floor, p99"},
    "hmi_devtools_rtt_p50_ms": {"samples": N, "what": "one DevTools Runtime.evaluate round trip to the page"},
}

# Resolves when the card is shown with the caller's name (checked at once and on every DOM change).
ARM = """new Promise((resolve) => {
  const shown = () => { const c = document.querySelector('#incoming');
    return c && !c.hidden && document.querySelector('#incoming-name').textContent === NAME; };
  if (shown()) { resolve(true); return; }
  const o = new MutationObserver(() => { if (shown()) { o.disconnect(); resolve(true); } });
  o.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  window.__armed = true;
})""".replace("NAME", json.dumps(NAME))


class Client:
    """A plain dashboard client: notes when dashbridged's CallAdded arrives."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.added: asyncio.Future[float] | None = None
        bus.add_message_handler(self._on)

    def _on(self, msg: Message) -> None:
        if (msg.message_type == MessageType.SIGNAL and msg.interface == names.DASHBRIDGE_CALLS_IFACE
                and msg.member == "CallAdded" and self.added is not None and not self.added.done()):
            self.added.set_result(time.monotonic())

    async def match(self) -> None:
        await call(self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{names.DASHBRIDGE_NAME}',interface='{names.DASHBRIDGE_CALLS_IFACE}'"])


def _phone() -> VirtualPhone:
    p = VirtualPhone(ADDR, name="Bench Pixel", bonded=True)
    book_for(p).contacts.append(SimContact(family="Smith", given="Sam", fn=NAME, numbers=[(CALLER, "cell")]))
    return p


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else xs[0]


async def _ready(world: World) -> None:
    dash = world.dashboard
    assert dash is not None
    await dash.wait_for(lambda e: e.short == "Contacts1.SyncStateChanged" and e.named["phone"] == ADDR
                        and e.named["state"].get("State") == "synced", 60)


async def _ring(world: World, page: Page, client: Client) -> tuple[float, float, float]:
    ofono = world.fake("ofono")
    loop = asyncio.get_running_loop()
    await page.eval("window.__armed = false")
    armed = asyncio.ensure_future(page.eval(ARM))
    await page.wait("window.__armed === true", 10, "the observer armed", interval=0.005)
    client.added = loop.create_future()
    t0 = time.monotonic()
    idx = ofono.incoming_call(ADDR, CALLER)
    async with asyncio.timeout(10):
        t_dbus = await client.added
        await armed
    t_card = time.monotonic()
    r0 = time.monotonic()
    await page.eval("1")
    rtt = time.monotonic() - r0
    ofono.remote_hangup(ADDR)
    await page.wait("document.querySelector('#incoming').hidden", 10, "the card gone", interval=0.01)
    async with asyncio.timeout(10):
        while idx in ofono.side(ADDR).calls:
            await asyncio.sleep(0.01)
    return (t_card - t0) * 1000.0, (t_dbus - t0) * 1000.0, rtt * 1000.0


async def _run(workdir: Path) -> dict[str, float]:
    if executable() is None:
        raise FileNotFoundError("no chromium executable (Debian: make sysdeps installs chromium)")
    world = World(WorldSpec(phones=[_phone()], fakes=("bluez", "ofono", "obexd")))
    await world.start()
    hmi: HmiServer | None = None
    bus: MessageBus | None = None
    try:
        assert world.system is not None
        await _ready(world)
        bus = await MessageBus(bus_address=world.system.address).connect()
        client = Client(bus)
        await client.match()
        hmi = await HmiServer(world.system.address, "127.0.0.1", 0).start()
        async with Browser.launch(workdir / "chromium") as browser:
            page = await browser.open(hmi.url)
            await page.wait("document.querySelector('#daemon-status').textContent.startsWith('dashbridge')",
                            30, "the page drew the snapshot")
            card: list[float] = []
            dbus: list[float] = []
            rtt: list[float] = []
            for i in range(WARMUP + N):
                c, d, r = await _ring(world, page, client)
                if i >= WARMUP:
                    card.append(c)
                    dbus.append(d)
                    rtt.append(r)
            assert page.errors == [], f"console errors on the page: {page.errors}"
        return {
            "hmi_card_p50_ms": statistics.median(card),
            "hmi_card_p99_ms": _p99(card),
            "hmi_dbus_p50_ms": statistics.median(dbus),
            "hmi_dbus_p99_ms": _p99(dbus),
            "hmi_devtools_rtt_p50_ms": statistics.median(rtt),
        }
    finally:
        if bus is not None:
            bus.disconnect()
        if hmi is not None:
            await hmi.close()
        await world.stop()


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-hmi-") as tmp:
        return asyncio.run(_run(Path(tmp)))


def main(argv: list[str] | None = None) -> int:
    for k, v in run().items():
        print(f"{k:<28} {v:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
