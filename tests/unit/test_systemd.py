"""The systemd unit verifies without a single warning and is hardened (exposure <= 2.0); the
D-Bus policy is well-formed, lets the daemon own org.dashbridge and only the dashboard group call it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "systemd" / "dashbridge.service"
POLICY = ROOT / "systemd" / "org.dashbridge.conf"

needs_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit as installed: ExecStart pointing at this checkout's dashbridged."""
    exe = Path(sys.executable).with_name("dashbridged")
    assert exe.exists()
    unit = tmp_path / "dashbridge.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/dashbridged", str(exe)))
    return unit


@needs_analyze
def test_unit_verifies_with_no_warnings(tmp_path: Path) -> None:
    res = subprocess.run(["systemd-analyze", "verify", str(_unit_for_this_machine(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "" and res.stderr.strip() == "", res.stdout + res.stderr


@needs_analyze
def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          str(_unit_for_this_machine(tmp_path))], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.0


def test_unit_is_a_notify_service_with_watchdog_and_state() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "StateDirectory=dashbridge",
                 "RuntimeDirectory=dashbridge", "ConfigurationDirectory=dashbridge", "User=dashbridge",
                 "RestartPreventExitStatus=78"):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    stop = int(re.search(r"^TimeoutStopSec=(\d+)s", text, re.M).group(1))  # type: ignore[union-attr]
    from dashbridge.daemon.config import Config

    assert Config().stop_timeout < stop, "the daemon must stop before systemd gives up on it"


def test_unit_keeps_restarting_through_a_long_fault_and_has_resource_ceilings() -> None:
    text = UNIT.read_text()
    unit_section = text.split("[Service]")[0]
    # the default start limit (5 starts in 10 s) would give up for good after a burst of failures
    assert re.search(r"^StartLimitIntervalSec=0$", unit_section, re.M)
    restart_sec = int(re.search(r"^RestartSec=(\d+)s$", text, re.M).group(1))  # type: ignore[union-attr]
    assert restart_sec >= 2
    for key in ("MemoryMax", "MemoryHigh", "TasksMax"):
        assert re.search(rf"^{key}=\d+[MG]?$", text, re.M), key


def test_dbus_policy() -> None:
    root = ET.parse(POLICY).getroot()
    assert root.tag == "busconfig"
    policies = {(p.get("user"), p.get("group"), p.get("context")): p for p in root.findall("policy")}
    daemon_user = policies[("dashbridge", None, None)]
    assert any(a.get("own") == "org.dashbridge" for a in daemon_user.findall("allow"))
    for dest in ("org.bluez", "org.ofono"):
        assert any(a.get("send_destination") == dest for a in daemon_user.findall("allow"))
    dashboard = policies[(None, "dashboard", None)]
    assert any(a.get("send_destination") == "org.dashbridge" for a in dashboard.findall("allow"))
    default = policies[(None, None, "default")]
    assert any(d.get("send_destination") == "org.dashbridge" for d in default.findall("deny"))
    assert any(d.get("own") == "org.dashbridge" for d in default.findall("deny"))
    # signals carry personal data: only the dashboard group (and root) may receive them
    assert any(d.get("receive_sender") == "org.dashbridge" for d in default.findall("deny"))
    assert any(a.get("receive_sender") == "org.dashbridge" for a in dashboard.findall("allow"))


@pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon not installed")
def test_dbus_daemon_accepts_the_policy(tmp_path: Path) -> None:
    conf = tmp_path / "bus.conf"
    conf.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={tmp_path}/s</listen>
<policy context="default"><allow user="*"/></policy>
<include>{POLICY}</include></busconfig>""")
    proc = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--print-address=1", "--nofork", "--nosyslog"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("unix:"), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.communicate(timeout=5)
