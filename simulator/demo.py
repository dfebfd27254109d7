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


def driver_view(ev: Event) -> str | None:
    """What the driver would see on the dashboard for a signal; None for plumbing."""
    a = ev.named
    key = ev.short
    if key == "Phones1.PromptRequested":
        if a.get("kind") == "confirm_passkey":
            return f"“Pair with {a.get('name')}? Does the phone show {a.get('code')}?”  [Yes] [No]"
        if a.get("kind") == "enter_pin":
            return f"“Enter the PIN for {a.get('name')}”"
        return f"“{a.get('name')}: {a.get('kind')} {a.get('code', '')}”"
    if key == "Phones1.PromptCancelled":
        return f"(pairing prompt taken down: {a.get('reason')})"
    if key == "Phones1.PairingFinished":
        return "“Phone paired”" if a.get("success") else f"“Pairing failed ({a.get('reason')})”"
    if key == "Phones1.PhoneConnected":
        return f"“{a.get('name')} connected” ({a.get('role')} phone)"
    if key == "Phones1.PhoneDisconnected":
        return f"“Phone disconnected” ({a.get('reason')})"
    if key == "Contacts1.SyncStateChanged":
        st = a.get("state", {})
        if st.get("State") == "synced":
            return f"contacts: {st.get('Contacts')} contacts and {st.get('CallHistory')} calls synced"
        if st.get("State") == "permission-pending":
            return f"contacts: “{st.get('Message') or 'Allow contacts access on your phone'}”"
        return None
    if key == "Calls1.CallAdded":
        p = a.get("properties", {})
        who = p.get("Name") or p.get("Number")
        number = f" ({p.get('Number')})" if p.get("Number") and p.get("Number") != who else ""
        if p.get("State") in ("incoming", "waiting"):
            return f"“Incoming call: {who}{number}”  [Answer] [Decline]"
        return f"“Calling {who}{number} …”"
    if key == "Calls1.CallChanged":
        p = a.get("properties", {})
        if p.get("State") == "active":
            return f"“On a call with {p.get('Name') or p.get('Number')}”"
        return None
    if key == "Calls1.CallRemoved":
        return f"“Call ended” ({a.get('reason')})"
    if key == "Messages1.MessageReceived":
        m = a.get("message", {})
        who = m.get("sender_name") or m.get("sender")
        kind = "e-mail" if m.get("type") == "email" else "text"
        subject = f" “{m.get('subject')}”" if m.get("subject") else ""
        return f"New {kind} from {who}{subject}: “{_short(m.get('preview', ''), 70)}”"
    if key == "Navigation1.IntentOffered":
        i = a.get("intent", {})
        return f"“Navigate to {i.get('label') or i.get('query')}?”  [Go] [Dismiss]"
    if key == "Navigation1.IntentChanged":
        if a.get("state") == "delivered":
            return "navigation: route started"
        if a.get("state") == "accepted":
            return "navigation: destination sent to the navigation system"
        return None
    if key in ("Cloud1.RegistrationChanged", "Cloud1.BackendStateChanged"):
        args = list(a.values())
        state = args[0] if args else ""
        reason = f" — {_short(args[1], 80)}" if len(args) > 1 and args[1] else ""
        if key == "Cloud1.RegistrationChanged":
            text = {"pending": "“Registration pending — it completes when the carmaker's service is back”",
                    "registered": "“Car registered”"}.get(str(state), f"registration: {state}")
            return f"{text}{reason if state != 'pending' else ''}"
        return f"connected services: backend {state}{reason}"
    return None


class Timeline(Narrator):
    def __init__(self, out: Any = None) -> None:
        self.t0 = time.monotonic()
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] {text}", file=self.out, flush=True)

    def step(self, run: Run, step: Step) -> None:
        if step.say:
            self.say(f"▸ {step.say}")

    def event(self, run: Run, ev: Event) -> None:
        text = driver_view(ev)
        if text:
            self.say(f"      dashboard: {text}")

    def done(self, run: Run, step: Step, result: StepResult) -> None:
        pass


async def play(story: Path = STORY) -> int:
    tl = Timeline()
    try:
        sc = load_file(story)
    except ScenarioError as exc:
        print(f"dashbridge-sim demo: {exc}", file=sys.stderr)
        return 2
    print(sc.name, flush=True)
    for line in sc.description.strip().splitlines():
        print(f"  {line}", flush=True)
    print(flush=True)
    tl.t0 = time.monotonic()
    result = await run_scenario(sc, tl)
    if result.ok:
        tl.say(f"the story played as told ({len(result.steps)} steps); the daemon, the fakes and both "
               "buses stopped, nothing left running")
        return 0
    print(format_result(result), file=sys.stderr)
    left = "; ".join(result.leftovers) if result.leftovers else "nothing left running"
    tl.say(f"the story did NOT play as told (see above); {left}")
    return 1


def main(args: argparse.Namespace | None = None) -> int:
    return asyncio.run(play())
