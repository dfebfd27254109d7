"""The virtual head unit in a real browser: headless Chromium (Debian's ``chromium``) on the page
that ``dashbridge-hmi`` serves, against a World (the real daemon, fake BlueZ/oFono/obexd, the
navigation service and the backend).  Every click is a real mouse event through the DevTools
protocol; every test checks the page logged no console error.  Screenshots go to
``build/hmi-screenshots/`` (test artifacts; docs/hmi.png is one of them).

If no Chromium is installed these tests fail with that reason (``make sysdeps`` installs it as
root); they are never skipped silently.  The bridge's protocol without a browser:
test_hmi_bridge.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashbridge.daemon.hmi.bridge import HmiServer
from dashbridge.simulator.browser import Browser, Page, executable
from dashbridge.simulator.obex_pbap import book_for
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.vcards import SimContact
from dashbridge.simulator.world import Dashboard, Event, World, WorldSpec

ADDR = "AA:BB:CC:DD:16:01"
SAM = "+447700900456"
LINK = "https://www.google.com/maps/place/Regent's+Park/@51.5313,-0.1570,15z/data=!3d51.5237!4d-0.1585"
DEADLINE_S = 20.0
SHOTS = Path(__file__).parents[2] / "build" / "hmi-screenshots"

pytestmark = pytest.mark.timeout(120)


def _png(size: int = 96) -> bytes:
    """A small PNG (a teal disc on orange): the contact's photo the card shows."""
    rows = b""
    for y in range(size):
        rows += b"\x00" + b"".join(bytes((0, 128, 128)) if (x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2
                                   else bytes((240, 140, 40)) for x in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _phone(bonded: bool) -> VirtualPhone:
    p = VirtualPhone(ADDR, name="Alice's Pixel", bonded=bonded, passkey=271828)
    book_for(p).contacts.append(SimContact(family="Smith", given="Sam", fn="Sam Smith", numbers=[(SAM, "cell")],
                                           photo=_png()))
    return p


@pytest.fixture
def browser_exe() -> str:
    exe = executable()
    assert exe, "no Chromium here: install Debian's chromium (make sysdeps as root) — these tests need a real browser"
    return exe


class Rig:
    def __init__(self, world: World, hmi: HmiServer, page: Page) -> None:
        self.world = world
        self.hmi = hmi
        self.page = page

    @property
    def dash(self) -> Dashboard:
        assert self.world.dashboard is not None
        return self.world.dashboard

    async def shot(self, name: str) -> Path:
        return await self.page.screenshot(SHOTS / f"{name}.png")


@contextlib.asynccontextmanager
async def _rig(tmp_path: Path, spec: WorldSpec) -> AsyncIterator[Rig]:
    world = World(spec)
    await world.start()
    hmi: HmiServer | None = None
    try:
        assert world.system is not None
        hmi = await HmiServer(world.system.address, "127.0.0.1", 0).start()
        async with Browser.launch(tmp_path / "chromium") as browser:
            page = await browser.open(hmi.url)
            await page.wait("document.querySelector('#daemon-status').textContent.startsWith('dashbridge')",
                            DEADLINE_S, "the page drew the snapshot")
            yield Rig(world, hmi, page)
            assert page.errors == [], f"console errors on the page: {page.errors}"
    finally:
        if hmi is not None:
            await hmi.close()
        await world.stop()


def _is(ev: Event, short: str) -> bool:
    return ev.short == short


async def _phone_ready(dash: Dashboard) -> None:
    """Connected, contacts synced (callers and senders named) and MAP serving."""
    await dash.wait_for(lambda e: _is(e, "Contacts1.SyncStateChanged") and e.named["phone"] == ADDR
                        and e.named["state"].get("State") == "synced", DEADLINE_S)
    await dash.wait_for(lambda e: _is(e, "Messages1.PropertiesChanged")
                        and e.named["changed"].get("Phones", {}).get(ADDR, [""])[0] in ("ready", "polling"),
                        DEADLINE_S)


async def test_pairing_by_numeric_comparison_clicking_yes(browser_exe: str, tmp_path: Path) -> None:
    async with _rig(tmp_path, WorldSpec(phones=[_phone(bonded=False)], fakes=("bluez", "ofono", "obexd"))) as rig:
        page = rig.page
        assert await page.eval("document.querySelectorAll('#phones-list .phone').length") == 0
        await page.click("#pair-button")
        await page.wait("document.querySelector('#pair-button').textContent === 'Stop pairing'", DEADLINE_S,
                        "the pairing window opened")
        pairing = asyncio.ensure_future(rig.world.phone_pair(ADDR))
        await page.wait("!document.querySelector('#prompt').hidden", DEADLINE_S, "the pairing prompt")
        assert await page.text("#prompt-code") == "271828"
        assert "Alice's Pixel" in await page.text("#prompt-title")
        await rig.shot("pairing-prompt")
        await page.click("#prompt-yes")
        async with asyncio.timeout(DEADLINE_S):
            assert await pairing == "paired"
        await page.wait("[...document.querySelectorAll('#phones-list .phone')].some("
                        "e => e.dataset.address === 'AA:BB:CC:DD:16:01' && e.textContent.includes(\"Alice's Pixel\"))",
                        DEADLINE_S, "the phone in the list")
        assert await page.eval("document.querySelector('#prompt').hidden")
        await page.wait("document.querySelector('#phones-list .phone').textContent.includes('connected')",
                        DEADLINE_S, "the phone connected")
        await rig.shot("phones")


async def test_incoming_call_card_named_from_contacts_answer_and_hang_up(browser_exe: str, tmp_path: Path) -> None:
    async with _rig(tmp_path, WorldSpec(phones=[_phone(bonded=True)], fakes=("bluez", "ofono", "obexd"))) as rig:
        page = rig.page
        await _phone_ready(rig.dash)
        ofono = rig.world.fake("ofono")
        # Time from the phone ringing to the card on the page, through the real browser.
        latencies: list[float] = []
        rings = 20
        for i in range(rings):
            t0 = time.monotonic()
            idx = ofono.incoming_call(ADDR, SAM)
            await page.wait("!document.querySelector('#incoming').hidden", DEADLINE_S, "the incoming-call card",
                            interval=0.002)
            latencies.append(time.monotonic() - t0)
            assert await page.text("#incoming-name") == "Sam Smith"
            assert await page.text("#incoming-number") == SAM
            assert "Alice's Pixel" in await page.text("#incoming-phone")
            if i < rings - 1:
                mark = rig.dash.mark
                await page.click("#reject")
                await page.wait("document.querySelector('#incoming').hidden", DEADLINE_S, "the card gone")
                # the phone ended it (the daemon says so once oFono has): the next ring is a new call
                await rig.dash.wait_for(lambda e: e.member == "CallRemoved", DEADLINE_S, since=mark)
                assert idx not in ofono.side(ADDR).calls
        lat = sorted(latencies)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        print(f"\nincoming call in the fake phone -> card on the page: p50 {statistics.median(lat) * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms ({len(lat)} calls)")
        assert p99 < 2.0
        await page.wait("(document.querySelector('#incoming-photo img') || {}).naturalWidth === 96", DEADLINE_S,
                        "the contact's photo on the card")
        await rig.shot("incoming-call")
        mark = rig.dash.mark
        await page.click("#answer")
        await rig.dash.wait_for(lambda e: e.member == "CallChanged" and e.named["properties"].get("State") == "active",
                                DEADLINE_S, since=mark)
        assert ofono.side(ADDR).calls[idx].state == "active"  # the fake phone saw the answer
        calls = await rig.dash.call("Calls1.GetCalls")
        assert [c["State"] for c in calls] == ["active"]
        await page.wait("!document.querySelector('#incall').hidden && "
                        "/^\\d+:\\d\\d/.test(document.querySelector('#incall-duration').textContent)",
                        DEADLINE_S, "the in-call screen with its duration")
        assert await page.text("#incall-name") == "Sam Smith"
        await rig.shot("in-call")
        await page.click("#hangup")
        await page.wait("document.querySelector('#incall').hidden", DEADLINE_S, "the in-call screen gone")
        assert await rig.dash.call("Calls1.GetCalls") == []
        # Contacts A-Z: tap a letter, tap the contact, it dials on the phone.
        await page.click("[data-tab=contacts]")
        await page.click("#az button")
        await page.wait("document.querySelector('#contacts-list').textContent.includes('Sam Smith')", DEADLINE_S,
                        "the contact listed")
        await rig.shot("contacts")
        await page.click("#contacts-list .contact")
        await page.wait("!document.querySelector('#incall').hidden", DEADLINE_S, "the outgoing call")
        assert ofono.side(ADDR).last_dialed == SAM
        await page.click("#hangup")
        await page.wait("document.querySelector('#incall').hidden", DEADLINE_S, "the call ended")
        # the dialer: digits by tapping, no keyboard
        await page.click("[data-tab=dialer]")
        for key in "0123":
            await page.click(f"#dial-pad button[data-key='{key}']")
        await page.click("#dial-del")
        assert await page.text("#dial-number") == "012"


async def test_text_with_maps_link_offers_a_destination_accept_reaches_navigation_once(
        browser_exe: str, tmp_path: Path) -> None:
    async with _rig(tmp_path, WorldSpec(phones=[_phone(bonded=True)])) as rig:
        page = rig.page
        await _phone_ready(rig.dash)
        rig.world.deliver_message(ADDR, "SMS_GSM", SAM, f"Picnic here {LINK} at 1pm?")
        await page.click("[data-tab=messages]")
        await page.wait("!!document.querySelector('#messages-list .message')", DEADLINE_S, "the message listed")
        assert "Sam Smith" in await page.text("#messages-list .message")
        await page.click("#messages-list .message")
        await page.wait("document.querySelector('#message-body').textContent.includes('at 1pm?')", DEADLINE_S,
                        "the whole text")
        await rig.shot("message")
        await page.click("#quick-replies .quick-reply")
        async with asyncio.timeout(DEADLINE_S):
            while not rig.world.phone_outbox(ADDR):
                await asyncio.sleep(0.05)
        (sent,) = rig.world.phone_outbox(ADDR)
        assert (sent.recipient, sent.body.strip()) == (SAM, "On my way")
        await page.click("#message-close")
        await page.click("[data-tab=nav]")
        await page.wait("!!document.querySelector('#offers .offer[data-state=offered]')", DEADLINE_S, "the offer")
        assert "Regent's Park" in await page.text("#offers .offer")
        await rig.shot("navigation-offer")
        await page.click("#offers .offer .accept")
        nav = rig.world.fake("navigation")
        async with asyncio.timeout(DEADLINE_S):
            await nav.wait_for(1)
        await page.wait("!document.querySelector('#offers .offer')", DEADLINE_S, "the offer gone once delivered")
        await asyncio.sleep(0.5)
        assert len(nav.received) == 1


async def test_a_destination_from_the_phones_companion_app_is_offered_with_its_source(
        browser_exe: str, tmp_path: Path) -> None:
    from dashbridge.simulator.companion import CompanionApp

    phone = _phone(bonded=True)
    phone.companion = CompanionApp()
    async with _rig(tmp_path, WorldSpec(phones=[phone])) as rig:
        page = rig.page
        await _phone_ready(rig.dash)
        rig.world.companion_send_destination(ADDR, "Grandma's", lat=51.50135, lon=-0.14189)
        await page.click("[data-tab=nav]")
        await page.wait("!!document.querySelector('#offers .offer[data-state=offered]')", DEADLINE_S, "the offer")
        text = await page.text("#offers .offer")
        assert "Grandma's" in text and "from your phone's app" in text
        await rig.shot("navigation-offer-companion")
        await page.click("#offers .offer .accept")
        nav = rig.world.fake("navigation")
        async with asyncio.timeout(DEADLINE_S):
            await nav.wait_for(1)
        assert nav.destinations[0]["label"] == "Grandma's"


async def test_cloud_page_explains_every_feature_also_with_the_backend_offline(
        browser_exe: str, tmp_path: Path) -> None:
    async with _rig(tmp_path, WorldSpec(fakes=("bluez", "ofono", "obexd", "backend"))) as rig:
        page = rig.page
        await page.click("[data-tab=cloud]")
        await page.wait("document.querySelectorAll('#features .feature').length >= 4", DEADLINE_S, "features")
        await rig.world.fake("backend").set_listener("old", "offline")
        await rig.dash.call("Cloud1.SyncNow")
        await page.wait("!document.querySelector('#cloud-backend').textContent.includes('Backend: online')",
                        DEADLINE_S, "the backend not online")
        feats = await page.eval("[...document.querySelectorAll('#features .feature')].map(e => "
                                "[e.dataset.name, e.dataset.source, e.querySelector('.reason').textContent])")
        expected = await rig.dash.get("Cloud1.Features")
        assert {name for name, _, _ in feats} == set(expected)
        for name, source, reason in feats:
            assert source == expected[name][1] and reason == f"{source}: {expected[name][2]}", name
            assert expected[name][2], f"{name} has a reason"
        await rig.shot("cloud")
        await page.click("[data-tab=health]")
        await page.wait("document.querySelectorAll('#health .component').length >= 3", DEADLINE_S, "health")
        await rig.shot("system")
        await page.click("#theme")
        await page.click("[data-tab=cloud]")
        assert await page.eval("getComputedStyle(document.body).backgroundColor") != "rgb(244, 245, 247)"
        await rig.shot("cloud-dark")
        # The daemon restarts: the page says so, then redraws from the new daemon's snapshot (no reload).
        await page.eval("window.__marker = 1")
        await rig.world.restart_daemon()
        await page.wait("document.querySelector('#banner').hidden && "
                        "document.querySelectorAll('#features .feature').length >= 4", DEADLINE_S, "redrawn")
        assert await page.eval("window.__marker") == 1, "no reload"


async def test_the_page_reconnects_to_a_new_bridge_and_redraws_without_a_reload(
        browser_exe: str, tmp_path: Path) -> None:
    world = World(WorldSpec(phones=[_phone(bonded=True)], fakes=("bluez", "ofono", "obexd")))
    await world.start()
    assert world.system is not None
    hmi = await HmiServer(world.system.address, "127.0.0.1", 0).start()
    try:
        async with Browser.launch(tmp_path / "chromium") as browser:
            page = await browser.open(hmi.url)
            await page.wait("!!document.querySelector('#phones-list .phone')", DEADLINE_S, "the phone listed")
            await page.eval("window.__marker = 1")
            port = hmi.port
            await hmi.close()
            await page.wait("!document.querySelector('#banner').hidden", DEADLINE_S, "the page says it reconnects")
            # meanwhile the phone is forgotten through the API: the new bridge's snapshot shows it
            assert world.dashboard is not None
            await world.dashboard.call("Phones1.Forget", [ADDR])
            hmi = await HmiServer(world.system.address, "127.0.0.1", port).start()
            await page.wait("document.querySelector('#banner').hidden && "
                            "!document.querySelector('#phones-list .phone')", DEADLINE_S, "redrawn from the API")
            assert await page.eval("window.__marker") == 1, "no reload"
            unexpected = [e for e in page.errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e]
            assert unexpected == [], unexpected
    finally:
        await hmi.close()
        await world.stop()


async def test_contacts_search_by_tapped_letters_and_the_favourites_strip(browser_exe: str, tmp_path: Path) -> None:
    phone = _phone(bonded=True)
    book = book_for(phone)
    book.contacts.append(SimContact(family="Jones", given="Alice", fn="Alice Jones", numbers=[("+447700900111", "cell")]))
    book.contacts.append(SimContact(family="Brown", given="Bob", fn="Bob Brown", numbers=[("+447700900222", "cell")]))
    book.contacts.append(SimContact(family="Smart", given="Ann", fn="Ann Smart", numbers=[("+447700900333", "cell")]))
    book.favourites = [i for i, c in enumerate(book.contacts) if c.fn == "Alice Jones"]
    async with _rig(tmp_path, WorldSpec(phones=[phone], fakes=("bluez", "ofono", "obexd"))) as rig:
        page = rig.page
        await _phone_ready(rig.dash)
        favs = await rig.dash.call("Contacts1.ListFavourites", [""])
        assert [f["Name"] for f in favs] == ["Alice Jones"]
        await page.click("[data-tab=contacts]")
        names = "[...document.querySelectorAll('#contacts-list .contact .title')].map(e => e.textContent).join('|')"
        await page.wait(f"{names} === 'Alice Jones|Ann Smart|Bob Brown|Sam Smith'", DEADLINE_S, "all contacts A-Z")
        await page.wait("[...document.querySelectorAll('#favourites .favourite')].map(e => e.textContent).join('|')"
                        " === 'Alice Jones+447700900111'", DEADLINE_S, "the favourites strip")
        # search by tapping letters: "SM" finds Sam Smith and Ann Smart, "SMI" only Sam
        await page.click("#search-toggle")
        assert await page.eval("document.querySelector('#az').hidden")
        for key in "SM":
            await page.click(f"#search-keys button[data-key='{key}']")
        await page.wait(f"{names} === 'Ann Smart|Sam Smith'", DEADLINE_S, "the search for 'sm'")
        assert await page.text("#search-text") == "sm"
        await page.click("#search-keys button[data-key='I']")
        await page.wait(f"{names} === 'Sam Smith'", DEADLINE_S, "the search for 'smi'")
        await rig.shot("contacts-search")
        await page.click("#search-keys button[data-key='Q']")
        await page.wait("document.querySelector('#contacts-list').textContent.includes('No contact matches')",
                        DEADLINE_S, "no match said so")
        await page.click("#search-del")
        await page.wait(f"{names} === 'Sam Smith'", DEADLINE_S, "back to 'smi'")
        await page.click("#search-clear")
        await page.wait(f"{names} === 'Alice Jones|Ann Smart|Bob Brown|Sam Smith'", DEADLINE_S, "cleared: all again")
        await page.click("#search-toggle")
        assert await page.eval("document.querySelector('#search-pad').hidden")
        # a favourite dials with one tap
        await page.click("#favourites .favourite")
        await page.wait("!document.querySelector('#incall').hidden", DEADLINE_S, "the outgoing call")
        assert rig.world.fake("ofono").side(ADDR).last_dialed == "+447700900111"
        await page.click("#hangup")
        await page.wait("document.querySelector('#incall').hidden", DEADLINE_S, "the call ended")
