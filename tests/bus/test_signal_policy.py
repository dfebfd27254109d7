"""Signals with personal data reach only the dashboard group — under the shipped D-Bus policy.

The system bus here is system-bus-like (dbus-daemon's own system.conf default policy) and
includes the shipped ``systemd/org.dashbridge.conf``, its dashboard group set to ``daemon`` (the
file says: change the group there and in ``api.allowed_groups``).  Two clients run as other Unix
users (``setpriv``): a dashboard process (user ``daemon``) and an eavesdropper (``nobody``), each
asking for every signal it can get.  A phone pairs (the passkey prompt), rings (the caller's
number and name), texts (sender and preview) and the driver asks for an account link code."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dashbridge.daemon.dbus.call import call
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import World, WorldSpec

pytestmark = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv"),
    reason="needs root (to run clients as other users) and setpriv",
)

ROOT = Path(__file__).parents[2]
LISTENER = Path(__file__).with_name("signal_listener.py")
PHONE = "AA:BB:CC:DD:EE:01"
PASSKEY = 482915
CALLER = "+447700900123"
TEXT = "meet me at 221B Baker Street"


class Listener:
    def __init__(self, user: str, address: str) -> None:
        pw = pwd.getpwnam(user)
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
             sys.executable, "-c", LISTENER.read_text(), address],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 15)
        assert line.strip() == "ready", line

    async def finish(self) -> list[list[str]]:
        out, err = await asyncio.wait_for(asyncio.to_thread(self.proc.communicate, ""), 15)
        assert self.proc.returncode == 0, err
        seen: list[list[str]] = json.loads(out.strip().splitlines()[-1])
        return seen

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _policy(tmp: Path) -> Path:
    shipped = (ROOT / "systemd" / "org.dashbridge.conf").read_text()
    assert 'group="dashboard"' in shipped
    f = tmp / "org.dashbridge.conf"
    f.write_text(shipped.replace('group="dashboard"', 'group="daemon"'))
    f.chmod(0o644)
    return f


async def test_personal_signals_reach_the_dashboard_group_and_nobody_else(tmp_path: Path) -> None:
    spec = WorldSpec(phones=[VirtualPhone(PHONE, name="Alice's Pixel", passkey=PASSKEY)],
                     config={"api": {"allowed_groups": ["daemon"]}}, system_policy=(_policy(tmp_path),))
    w = World(spec)
    await w.start()
    listeners: list[Listener] = []
    try:
        dash = w.dashboard
        assert dash is not None and dash.bus is not None and w.system is not None
        dashboard, spy = Listener("daemon", w.system.address), Listener("nobody", w.system.address)
        listeners = [dashboard, spy]
        for li in listeners:
            await li.ready()

        mark = dash.mark
        await dash.call("Phones1.OpenPairingWindow", [0])
        pairing = asyncio.ensure_future(w.phone_pair(PHONE))
        ev = await dash.wait_for(lambda e: e.member == "PromptRequested", 10.0, since=mark)
        await dash.call("Phones1.AnswerPrompt", [ev.named["prompt"], True, ""])
        assert await asyncio.wait_for(pairing, 10.0) == "paired"
        await dash.wait_for(lambda e: e.member == "PhoneConnected", 10.0, since=mark)
        await dash.wait_for(lambda e: e.short == "Calls1.PhoneChanged" and e.named["status"].get("Ready"), 15.0,
                            since=mark)
        await dash.wait_for(lambda e: e.short == "Messages1.PropertiesChanged"
                            and e.named["changed"].get("Phones", {}).get(PHONE, [""])[0] in ("ready", "polling"),
                            15.0, since=mark)
        w.fake("ofono").incoming_call(PHONE, CALLER, "")
        await dash.wait_for(lambda e: e.member == "CallAdded", 10.0, since=mark)
        w.deliver_message(PHONE, "SMS_GSM", CALLER, TEXT, sender_name="Mum")
        await dash.wait_for(lambda e: e.member == "MessageReceived", 15.0, since=mark)
        await dash.call("Cloud1.Register")
        await dash.wait_for(lambda e: e.member == "RegistrationChanged" and e.args[0] == "registered", 15.0,
                            since=mark)
        assert await dash.call("Cloud1.LinkAccount", [""]) == "requesting-code"
        shown = await dash.wait_for(lambda e: e.member == "PropertiesChanged" and "LinkCode" in e.named["invalidated"],
                                    15.0, since=mark)
        assert "LinkCode" not in shown.named["changed"]
        code, uri, _ = await dash.get("Cloud1.LinkCode")
        assert code and uri  # an allowed caller reads it

        (owner,) = await call(dash.bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                              "GetNameOwner", "s", ["org.dashbridge"])
        seen_by_dashboard, seen_by_spy = await dashboard.finish(), await spy.finish()
    finally:
        for li in listeners:
            li.kill()
        await w.stop()

    daemon_names = {"org.dashbridge", owner}
    members = {m for s, _, m, _ in seen_by_dashboard if s in daemon_names}
    assert {"PromptRequested", "CallAdded", "MessageReceived", "PropertiesChanged"} <= members, members
    assert any(str(PASSKEY) in body for _, _, m, body in seen_by_dashboard if m == "PromptRequested")
    # the link code is never broadcast, not even to the dashboard group
    assert not any(code in body for _, _, _, body in seen_by_dashboard)
    # the eavesdropper saw nothing the daemon sent: no passkey, caller, message or link code
    leaked = [s for s in seen_by_spy if s[0] in daemon_names]
    assert leaked == [], leaked[:5]
    # the control: the eavesdropper does receive broadcast signals — from the foreign daemons (the
    # fake oFono's CallAdded carries the number, as the real ofonod's does: that is oFono's policy)
    assert any(s[0] not in daemon_names for s in seen_by_spy)
    secrets: list[Any] = [str(PASSKEY), "Baker Street", code]
    assert not [s for s in seen_by_spy if any(x in s[3] for x in secrets)]
