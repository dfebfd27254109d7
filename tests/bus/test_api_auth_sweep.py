"""Every method call addressed to the daemon is gated, whatever its interface header.

The sweep is generated from the documented introspection XML (daemon/api/xml/): every method of
every interface, with and without the interface header, every property through
``Properties.Get/GetAll/Set``, ``ObjectManager.GetManagedObjects`` (served by dbus-fast itself) and
the pairing agent's methods — sent by a real client process running as another Unix user
(``setpriv``) on a real dbus-daemon.  A method added to the XML later is swept too."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

pytestmark = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv"),
    reason="needs root (to run a client as another user) and setpriv",
)

ROOT = Path(__file__).parents[2]
XML_DIR = ROOT / "daemon" / "api" / "xml"
PROBE = Path(__file__).with_name("caller_probe.py")
API_PATH = "/org/dashbridge"
AGENT_PATH = "/org/dashbridge/agent"
DENIED = "org.dashbridge.Error.AccessDenied"
PROPS = "org.freedesktop.DBus.Properties"

# org.bluez.Agent1 as BlueZ calls it (doc/org.bluez.Agent.rst): bluetoothd's to call, nobody else's.
AGENT1 = {"Release": "", "RequestPinCode": "o", "DisplayPinCode": "os", "RequestPasskey": "o",
          "DisplayPasskey": "ouq", "RequestConfirmation": "ou", "RequestAuthorization": "o",
          "AuthorizeService": "os", "Cancel": ""}


def _calls() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted(XML_DIR.glob("org.dashbridge.*.xml")):
        for iface in ET.parse(f).getroot().findall("interface"):
            name = iface.get("name", "")
            for m in iface.findall("method"):
                sig = "".join(a.get("type", "") for a in m.findall("arg") if a.get("direction", "in") == "in")
                for header in (name, None):
                    out.append({"path": API_PATH, "interface": header, "member": m.get("name"), "signature": sig})
            out.append({"path": API_PATH, "interface": PROPS, "member": "GetAll", "signature": "s", "body": [name]})
            for p in iface.findall("property"):
                pname = p.get("name")
                out.append({"path": API_PATH, "interface": PROPS, "member": "Get", "signature": "ss",
                            "body": [name, pname]})
                out.append({"path": API_PATH, "interface": None, "member": "Get", "signature": "ss",
                            "body": [name, pname]})
                out.append({"path": API_PATH, "interface": PROPS, "member": "Set", "signature": "ssv",
                            "body": [name, pname, None]})
    for path in ("/", API_PATH):
        out.append({"path": path, "interface": "org.freedesktop.DBus.ObjectManager", "member": "GetManagedObjects",
                    "signature": ""})
        out.append({"path": path, "interface": None, "member": "GetManagedObjects", "signature": ""})
        out.append({"path": path, "interface": PROPS, "member": "GetAll", "signature": "s", "body": [""]})
    for member, sig in AGENT1.items():
        for header in ("org.bluez.Agent1", None):
            out.append({"path": AGENT_PATH, "interface": header, "member": member, "signature": sig,
                        "agent": True})
    return out


def _agent_call(c: dict[str, Any]) -> bool:
    return bool(c.get("agent"))


def _run_as(user: str, address: str, calls: list[dict[str, Any]]) -> list[str]:
    pw = pwd.getpwnam(user)
    wire = []
    for c in calls:
        c = {k: v for k, v in c.items() if k != "agent"}
        wire.append(c)
    res = subprocess.run(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
         sys.executable, "-c", PROBE.read_text(), address],
        input=json.dumps(wire), capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    results: list[str] = json.loads(res.stdout)
    assert len(results) == len(calls)
    return results


OPEN = [
    {"path": API_PATH, "interface": "org.freedesktop.DBus.Introspectable", "member": "Introspect", "signature": ""},
    {"path": API_PATH, "interface": "org.freedesktop.DBus.Peer", "member": "Ping", "signature": ""},
]


def test_the_sweep_covers_every_documented_method() -> None:
    calls = _calls()
    members = {(c["interface"], c["member"]) for c in calls}
    assert ("org.dashbridge.Phones1", "AnswerPrompt") in members
    assert ("org.dashbridge.Cloud1", "SetConsent") in members
    assert (None, "AnswerPrompt") in members  # the same without the interface header
    assert len(calls) > 150


def test_a_denied_caller_gets_nothing_with_or_without_an_interface_header(
        daemon_factory: Callable[..., DaemonProcess], system_bus: PrivateBus) -> None:
    d = daemon_factory({"api": {"allowed_groups": ["dashbridge-test-none"], "allowed_users": []}})
    calls = _calls()
    results = _run_as("nobody", system_bus.address, calls + OPEN)
    leaked = [(c["path"], c["interface"], c["member"], r) for c, r in zip(calls, results, strict=False) if r != DENIED]
    assert leaked == [], f"{len(leaked)} calls were not denied: {leaked[:10]}"
    assert results[len(calls):] == ["ok", "ok"], "Introspect and Peer.Ping stay open"
    log = d.log()
    assert f"denied {calls[0]['interface']}.{calls[0]['member']}" in log
    # the denial log is rate limited: hundreds of denied calls, ten lines a minute
    assert 1 <= log.count("WARNING dashbridge.daemon.api.auth: denied ") <= 10, log.count("denied ")


def test_an_allowed_dashboard_user_reaches_every_method_but_not_the_agent(
        daemon_factory: Callable[..., DaemonProcess], system_bus: PrivateBus) -> None:
    daemon_factory({"api": {"allowed_groups": [], "allowed_users": ["daemon"]}})
    calls = _calls()
    results = _run_as("daemon", system_bus.address, calls)
    for c, r in zip(calls, results, strict=True):
        if _agent_call(c):
            assert r == DENIED, f"the pairing agent answered a dashboard process: {c} -> {r}"
        else:
            assert r not in (DENIED, "timeout"), f"{c} -> {r}"
    # the daemon is still serving, and a call without the interface header reached Daemon1.Ping
    ping = [{"path": API_PATH, "interface": None, "member": "Ping", "signature": ""}]
    assert _run_as("daemon", system_bus.address, ping) == ["ok"]
