"""End to end through the real ``dashbridged`` process: a paired phone (fake BlueZ) connects, its
phonebook syncs over the fake obexd, the dashboard searches it (D-Bus and ``dashbridgectl``), and
an incoming call (fake oFono) carries the contact's name — also after a daemon restart, before the
phone could sync again."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from typing import Any

from dashbridge.simulator import obex_pbap
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import Event, World, WorldSpec

ADA = "AA:BB:CC:DD:05:01"
CONFIG = {"contacts": {"retry_delays": ["200ms"], "permission_retry_delays": ["200ms"], "page_size": 200}}


def _synced(ev: Event) -> bool:
    return ev.member == "SyncStateChanged" and ev.args[0] == ADA and ev.args[1]["State"] == "synced"


async def _ctl(world: World, *args: str) -> tuple[int, Any]:
    assert world.system is not None
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=world.system.address)
    exe = shutil.which("dashbridgectl", path=os.path.dirname(sys.executable))
    assert exe is not None, "dashbridgectl is not installed in this environment"
    proc = await asyncio.create_subprocess_exec(exe, "--json", "contacts", *args,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else err.decode()


async def test_phonebook_syncs_and_an_incoming_call_shows_the_name_also_after_a_restart() -> None:
    phone = VirtualPhone(ADA, name="Ada's phone", bonded=True, generated_contacts=600, pbap_photo_every=10)
    spec = WorldSpec(phones=[phone], config=CONFIG, fakes=("bluez", "ofono", "obexd"))
    async with World(spec) as w:
        dash = w.dashboard
        assert dash is not None
        ev = await dash.wait_for(_synced, timeout=30)
        assert ev.args[1]["Contacts"] == 600
        book = obex_pbap.book_for(phone)
        mum = book.contacts[123]
        number = mum.numbers[0][0]
        found = await dash.call("Contacts1.Search", [mum.given, 500])
        assert any(c["Name"] == mum.display for c in found)
        # The command line, through the public API only.
        rc, rows = await _ctl(w, "search", mum.family)
        assert rc == 0 and any(r["Name"] == mum.display for r in rows)
        rc, hit = await _ctl(w, "lookup", number)
        assert rc == 0 and hit["name"] == mum.display
        rc, states = await _ctl(w, "status")
        assert rc == 0 and states[0]["State"] == "synced"

        # The phone rings: the calls component names the caller from the contacts.
        since = len(dash.events)
        w.fake("ofono").incoming_call(ADA, _e164(number))
        added = await dash.wait_for(lambda e: e.member == "CallAdded", timeout=10, since=since)
        props = added.args[1]
        assert (props["Name"], props["NameSource"]) == (mum.display, "contacts")

        # A daemon restart while the phone keeps its "allow contacts?" prompt open: nothing can be
        # pulled, yet the stored contacts name the caller at once.
        phone.pbap_permission = "pending"
        w.fake("ofono").remote_hangup(ADA)
        await w.restart_daemon()
        since = len(dash.events)
        await dash.wait_for(lambda e: e.member == "SyncStateChanged" and e.args[1]["State"] == "permission-pending",
                            timeout=20, since=since)
        w.fake("ofono").incoming_call(ADA, number)
        added = await dash.wait_for(lambda e: e.member == "CallAdded", timeout=10, since=since)
        assert (added.args[1]["Name"], added.args[1]["NameSource"]) == (mum.display, "contacts")


def _e164(national_or_intl: str) -> str:
    digits = "".join(ch for ch in national_or_intl if ch.isdigit() or ch == "+")
    if digits.startswith("0"):
        return "+44" + digits[1:]
    return digits
