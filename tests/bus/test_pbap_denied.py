"""The phone refuses contacts access for good: the state becomes ``denied`` with why and what to do,
the car stops asking, and a Resync (or a reconnect) asks again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dashbridge.simulator import obex_pbap
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .pbap_helpers import PHONE, pbap_world


async def test_refused_access_becomes_denied_and_is_retried_only_on_resync_or_reconnect(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    phone = VirtualPhone(PHONE, name="Test phone", generated_contacts=20, pbap_permission="denied")
    async with pbap_world(system_bus, session_bus, tmp_path, [phone], permission_timeout=1.0) as w:
        mark = w.mark()
        w.connect()
        await w.wait_state("permission-pending", after=mark)
        denied = await w.wait_state("denied", after=mark, timeout=10)
        assert "refused contacts access" in denied["Message"] and "re-sync" in denied["Message"]
        # Not retried by itself: no further states while it stays denied.  (Absence is watched over
        # a window five times the longest permission retry delay of this world, 0.3 s: a car that
        # still asked would have asked again within it.)
        quiet = w.mark()
        await asyncio.sleep(1.5)
        assert w.states[quiet:] == []
        states = await w.api("GetSyncStates")
        assert [s["State"] for s in states] == ["denied"]
        # The driver allowed it on the phone and taps "re-sync".
        assert w.obexd is not None
        obex_pbap.set_permission(w.obexd, PHONE, "granted")
        await w.api("Resync", "s", [PHONE])
        done = await w.wait_state("synced", after=quiet, timeout=10)
        assert done["Contacts"] == 20
        # Refused again later: a reconnect asks again too.
        obex_pbap.set_permission(w.obexd, PHONE, "denied")
        again = w.mark()
        await w.api("Resync", "s", [PHONE])
        await w.wait_state("denied", after=again, timeout=10)
        obex_pbap.set_permission(w.obexd, PHONE, "granted")
        gone = w.mark()
        w.disconnect()
        await w.wait_state("idle", after=gone, timeout=10)  # the car saw the phone go
        back = w.mark()
        w.connect()
        await w.wait_state("synced", after=back, timeout=10)
