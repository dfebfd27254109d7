"""``dashbridge-sim demo --hmi``: the headline story plays while a real browser watches the car's
screen — the pairing prompt, the incoming call from Mum, the in-call screen and the destination
offer each appear on the page, and the story still plays as told."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dashbridge.simulator import demohmi
from dashbridge.simulator.browser import Browser, executable

pytestmark = pytest.mark.timeout(120)

# Records, from before the page's own scripts run, every overlay/offer that became visible.
WATCH = """
window.__seen = new Set();
document.addEventListener('DOMContentLoaded', () => {
  const look = () => {
    for (const id of ['prompt', 'incoming', 'incall']) {
      const e = document.getElementById(id);
      if (e && !e.hidden) window.__seen.add(id);
    }
    if (document.querySelector('#offers .offer')) window.__seen.add('offer');
    const n = document.getElementById('incoming-name');
    if (n && n.textContent) window.__seen.add('caller:' + n.textContent);
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                       characterData: true});
});
"""


async def test_demo_hmi_plays_the_story_on_the_page(tmp_path: Path) -> None:
    assert executable(), "no Chromium here: install Debian's chromium (make sysdeps as root)"
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    play = asyncio.ensure_future(demohmi.play(port=0, pace=0.3, wait_for_page=30, on_url=url.set_result))
    try:
        async with asyncio.timeout(30):
            where = await url
        async with Browser.launch(tmp_path / "chromium") as browser:
            page = await browser.open(where, init_script=WATCH)
            async with asyncio.timeout(90):
                rc = await play
            seen = set(await page.eval("[...window.__seen]"))
            assert page.errors == [], f"console errors: {page.errors}"
    finally:
        if not play.done():
            play.cancel()
    assert rc == 0, "the story played as told"
    assert {"prompt", "incoming", "incall", "offer"} <= seen, seen
    assert any(s.startswith("caller:") for s in seen), seen
