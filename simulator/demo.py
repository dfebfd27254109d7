"""``dashbridge-sim demo`` (``make demo``): the headline story, told as a timeline of what the
driver would see.

The story is a scenario file, ``simulator/scenarios/headline_story.yaml`` (so ``make test`` runs
it too); the demo plays it with a narrator that prints each ``say:`` line and translates the
daemon's signals into what the dashboard would show.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from .scenario import Narrator, Run, ScenarioError, Step, StepResult, format_result, load_file, run_scenario
from .world import Event

STORY = Path(__file__).parent / "scenarios" / "headline_story.yaml"


def _short(v: Any, n: int = 60) -> str:
    s = str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def describe(ev: Event) -> str | None:
    """What the dashboard would show for a signal (None: nothing the driver sees)."""
    a = ev.named
    if ev.member == "PropertiesChanged":
        if ev.interface == "org.dashbridge.Daemon1":
            return None
        changed = ", ".join(f"{k}={_short(v, 40)}" for k, v in a.get("changed", {}).items())
        return f"{ev.interface.removeprefix('org.dashbridge.')}: {changed}" if changed else None
    return f"{ev.short}: " + ", ".join(f"{k}={_short(v, 40)}" for k, v in a.items())


class Timeline(Narrator):
    def __init__(self, out: Any = None) -> None:
        self.t0 = time.monotonic()
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", file=self.out, flush=True)

    def step(self, run: Run, step: Step) -> None:
        if step.say:
            self.say(step.say)

    def event(self, run: Run, ev: Event) -> None:
        text = describe(ev)
        if text:
            self.say(f"    dashboard ⟵ {text}")

    def done(self, run: Run, step: Step, result: StepResult) -> None:
        pass


async def play(story: Path = STORY) -> int:
    tl = Timeline()
    try:
        sc = load_file(story)
    except ScenarioError as exc:
        print(f"dashbridge-sim demo: {exc}", file=sys.stderr)
        return 2
    tl.say(f"{sc.name}")
    for line in sc.description.strip().splitlines():
        tl.say(f"  {line}")
    result = await run_scenario(sc, tl)
    if result.ok:
        tl.say(f"the story played as told ({len(result.steps)} steps); everything stopped, nothing left running")
        return 0
    print(format_result(result), file=sys.stderr)
    tl.say("the story did NOT play as told (see above); everything stopped, nothing left running")
    return 1


def main(args: argparse.Namespace | None = None) -> int:
    return asyncio.run(play())
