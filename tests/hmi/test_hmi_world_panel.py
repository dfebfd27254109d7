"""The simulator's world panel (``/world`` of ``dashbridge-sim up --hmi``) in real Chromium: the car's
screen in a frame, the world's buttons beside it.  Ringing the car from the panel shows the card on
the car's screen, Answer there answers on the phone, the other party hangs up from the panel; the
backend goes offline from the panel and the car's cloud page explains each feature's source."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from dashbridge.daemon.hmi.bridge import HmiServer
from dashbridge.simulator.browser import Browser, executable
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import World, WorldSpec
from dashbridge.simulator.worldpanel import WorldPanel

from .test_hmi_browser import SHOTS

ADDR = "AA:BB:CC:DD:16:02"
DEADLINE_S = 20.0
IN_CAR = "document.querySelector('#hmi').contentDocument"

pytestmark = pytest.mark.timeout(120)


async def test_world_panel_rings_the_car_and_takes_the_backend_offline(tmp_path: Path) -> None:
    assert executable(), "no Chromium here: install Debian's chromium (make sysdeps as root)"
    world = World(WorldSpec(phones=[VirtualPhone(ADDR, name="Ada's phone", bonded=True)]))
    await world.start()
    assert world.system is not None
    hmi = await HmiServer(world.system.address, port=0, extra=WorldPanel(world).install).start()
    try:
        assert world.dashboard is not None
        await world.dashboard.wait_for(lambda e: e.member == "PhoneConnected", DEADLINE_S)
        async with Browser.launch(tmp_path / "chromium", width=1600, height=900) as browser:
            page = await browser.open(hmi.url + "world")
            await page.wait(f"{IN_CAR}.querySelector('#daemon-status').textContent.startsWith('dashbridge')",
                            DEADLINE_S, "the car's screen drawn")
            await page.wait("!!document.querySelector('#phones fieldset')", DEADLINE_S, "the panel's phones")
            # ring from the panel; answer on the car's screen; the other party hangs up from the panel
            await page.click("#ring")
            await page.wait(f"!{IN_CAR}.querySelector('#incoming').hidden", DEADLINE_S, "the card in the car")
            await page.click("#answer", frame="#hmi")
            ofono = world.fake("ofono")
            async with asyncio.timeout(DEADLINE_S):
                while not ofono.side(ADDR).with_state("active"):
                    await asyncio.sleep(0.05)
            await page.wait(f"!{IN_CAR}.querySelector('#incall').hidden", DEADLINE_S, "in call")
            await page.screenshot(SHOTS / "world-panel.png")
            await page.click("[data-remote=hangup]")
            await page.wait(f"{IN_CAR}.querySelector('#incall').hidden", DEADLINE_S, "the call ended")
            # the backend goes away; time passes; the car explains every feature
            await page.click("[data-tab=cloud]", frame="#hmi")
            await page.click("[data-backend=offline]")
            await page.wait("document.querySelector('#log').textContent.includes(\"the backend's address: offline\")",
                            DEADLINE_S, "the panel took the backend offline")
            await page.click("[data-advance='86400']")
            await page.wait(f"!{IN_CAR}.querySelector('#cloud-backend').textContent.includes('Backend: online')",
                            DEADLINE_S, "the car sees the backend gone")
            expected = await world.dashboard.get("Cloud1.Features")
            shown = await page.eval(f"[...{IN_CAR}.querySelectorAll('#features .feature')].map(e => "
                                    "[e.dataset.name, e.dataset.source])")
            assert sorted(shown) == sorted([name, v[1]] for name, v in expected.items())
            assert page.errors == [], f"console errors: {page.errors}"
        # the panel refuses what it does not know, with a reason
        async with aiohttp.ClientSession() as s, s.post(
                hmi.url + "world/act", json={"action": "ring", "phone": "nobody", "number": "1"}) as r:
            body = await r.json()
        assert body["ok"] is False and "no phone" in body["error"]
    finally:
        await hmi.close()
        await world.stop()
