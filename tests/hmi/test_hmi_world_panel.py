"""The simulator's world panel (``/world`` of ``dashbridge-sim up --hmi``) in real Chromium: the car's
screen in a frame, the world's buttons beside it.  Ringing the car from the panel shows the card on
the car's screen, Answer there answers on the phone, the other party hangs up from the panel; the
backend goes offline from the panel and the car's cloud page explains each feature's source."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from dashbridge.daemon.hmi.bridge import HmiServer
from dashbridge.simulator.browser import Browser, executable
from dashbridge.simulator.obex_pbap import book_for
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.vcards import from_vcf, load_call_history
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


DATA = Path(__file__).resolve().parents[1] / "data"


async def test_world_panel_adds_phones_with_data_from_files_or_generated(tmp_path: Path) -> None:
    assert executable(), "no Chromium here: install Debian's chromium (make sysdeps as root)"
    world = World(WorldSpec(fakes=("bluez", "ofono", "obexd")))
    await world.start()
    assert world.system is not None
    hmi = await HmiServer(world.system.address, port=0, extra=WorldPanel(world).install).start()
    vcf = DATA / "vcards" / "android_30.vcf"
    dump = DATA / "phone_dump"
    try:
        async with Browser.launch(tmp_path / "chromium", width=1600, height=900) as browser:
            page = await browser.open(hmi.url + "world")
            await page.wait("!!document.querySelector('#add-contacts')", DEADLINE_S, "the panel")

            async def add(name: str, address: str, contacts: str, history: str, messages: str) -> str:
                for field, value in (("name", name), ("address", address), ("contacts", contacts),
                                     ("history", history), ("messages", messages)):
                    await page.eval(f"document.querySelector('#add-{field}').value = {json.dumps(value)}")
                await page.click("#add")
                return str(await page.wait(
                    f"[...document.querySelectorAll('#log div')].map(e => e.textContent).find(t => t.includes("
                    f"{json.dumps(address)}) || t.includes('error')) || ''", DEADLINE_S, f"{name} added or refused"))

            # from files: a real phone's contacts dump, call history (ich/och/mch) and bMessages
            said = await add("Dump phone", "AA:BB:CC:DD:16:0A", str(vcf), str(dump / "history"), str(dump / "messages"))
            assert "error" not in said, said
            p = world.phone("AA:BB:CC:DD:16:0A")
            book = book_for(p)
            assert [c.fn for c in book.contacts] == [c.fn for c in from_vcf(str(vcf)).contacts]
            assert len(book.contacts) > 0
            assert sorted(c.number for c in book.calls) == sorted(c.number for c in load_call_history(str(dump / "history")))
            assert len(p.messages) == 2
            assert f"{len(book.contacts)} contacts from android_30.vcf, 4 calls from history, 2 messages" in said
            await page.wait("[...document.querySelectorAll('#phones fieldset')].some(f => f.textContent.includes('Dump phone'))",
                            DEADLINE_S, "the phone in the panel")
            await page.screenshot(SHOTS / "world-panel-add.png")
            # generated: 7 contacts, 3 calls of each kind, no messages
            said = await add("Generated phone", "AA:BB:CC:DD:16:0B", "7", "3", "")
            assert "error" not in said, said
            g = book_for(world.phone("AA:BB:CC:DD:16:0B"))
            assert (len(g.contacts), len(g.calls), len(world.phone("AA:BB:CC:DD:16:0B").messages)) == (7, 9, 0)
            # a path that is not there is refused with a reason, and no phone is added
            said = await add("Nobody", "AA:BB:CC:DD:16:0C", str(tmp_path / "missing.vcf"), "20", "")
            assert "error" in said and "no such file" in said, said
            assert "AA:BB:CC:DD:16:0C" not in world.phones
            assert page.errors == [], f"console errors: {page.errors}"
    finally:
        await hmi.close()
        await world.stop()
