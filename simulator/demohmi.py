"""``dashbridge-sim demo --hmi``: the headline story, played so it can be watched in the browser.

The story's world gets the virtual head unit and the world panel (``/world``) as soon as it is up;
the demo prints the URL, waits for a page to open it (``--hmi-wait`` seconds, 0: do not wait),
and pauses ``--pace`` seconds before each narrated line so a person can follow the car's screen.
The steps are the story's own (the scenario answers the prompt, the call, the offer through the
API, like the driver would): the page shows each as it happens.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dashbridge.daemon.hmi.bridge import HmiServer

from .demo import STORY, Timeline
from .scenario import Run, Scenario, ScenarioError, ScenarioResult, Step, format_result, load_file
from .worldpanel import WorldPanel


class WatchedRun(Run):
    """A scenario run whose world is served to the browser, paced for a person."""

    def __init__(self, sc: Scenario, narrator: Timeline, *, host: str = "127.0.0.1", port: int = 0,
                 pace: float = 2.0, wait_for_page: float = 120.0,
                 on_url: Callable[[str], None] | None = None) -> None:
        super().__init__(sc, narrator)
        self.host, self.port = host, port
        self.pace = pace
        self.wait_for_page = wait_for_page
        self.on_url = on_url
        self.hmi: HmiServer | None = None
        self.tl = narrator

    async def execute(self) -> ScenarioResult:
        try:
            return await super().execute()
        finally:
            if self.hmi is not None:
                await self.hmi.close()

    async def _step(self, step: Step, result: ScenarioResult) -> None:
        if self.hmi is None and self.world is not None and self.world.system is not None:
            self.hmi = HmiServer(self.world.system.address, self.host, self.port,
                                 extra=WorldPanel(self.world).install)
            await self.hmi.start()
            self.tl.say(f"the car's screen: {self.hmi.url}  (beside the world panel: {self.hmi.url}world)")
            if self.on_url is not None:
                self.on_url(self.hmi.url)
            if self.wait_for_page > 0:
                self.tl.say(f"waiting up to {self.wait_for_page:g}s for a browser to open it ...")
                deadline = time.monotonic() + self.wait_for_page
                while not self.hmi.bridge.clients and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            self.tl.t0 = time.monotonic()
        if step.say and self.pace > 0:
            await asyncio.sleep(self.pace)
        await super()._step(step, result)


async def play(*, host: str = "127.0.0.1", port: int = 8765, pace: float = 2.0, wait_for_page: float = 120.0,
               story: Path = STORY, on_url: Callable[[str], None] | None = None) -> int:
    tl = Timeline()
    try:
        sc = load_file(story)
    except ScenarioError as exc:
        print(f"dashbridge-sim demo: {exc}", file=sys.stderr)
        return 2
    print(sc.name, flush=True)
    run = WatchedRun(sc, tl, host=host, port=port, pace=pace, wait_for_page=wait_for_page, on_url=on_url)
    result = await run.execute()
    if result.ok:
        tl.say(f"the story played as told ({len(result.steps)} steps); everything stopped")
        return 0
    print(format_result(result), file=sys.stderr)
    tl.say("the story did NOT play as told (see above)")
    return 1
