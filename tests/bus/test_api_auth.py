"""Only allowed callers may use org.dashbridge: others get org.dashbridge.Error.AccessDenied.

The client runs as another Unix user (nobody) through busctl, as a dashboard process would."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable

import pytest

from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

pytestmark = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv") or not shutil.which("busctl"),
    reason="needs root (to run a client as another user), setpriv and busctl",
)


def _ping_as(user: str, address: str) -> subprocess.CompletedProcess[str]:
    pw = pwd.getpwnam(user)
    return subprocess.run(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "busctl",
         f"--address={address}", "call", "org.dashbridge", "/org/dashbridge", "org.dashbridge.Daemon1", "Ping"],
        capture_output=True, text=True, timeout=20,
    )


def _get_as(user: str, address: str) -> subprocess.CompletedProcess[str]:
    pw = pwd.getpwnam(user)
    return subprocess.run(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "busctl",
         f"--address={address}", "get-property", "org.dashbridge", "/org/dashbridge", "org.dashbridge.Daemon1",
         "Health"],
        capture_output=True, text=True, timeout=20,
    )


def test_stranger_is_denied_and_logged(daemon_factory: Callable[..., DaemonProcess], system_bus: PrivateBus) -> None:
    d = daemon_factory({"api": {"allowed_groups": ["dashboard-test-none"], "allowed_users": []}})
    res = _ping_as("nobody", system_bus.address)
    assert res.returncode != 0
    assert "caller is not allowed" in res.stderr
    res = _get_as("nobody", system_bus.address)
    assert res.returncode != 0 and "caller is not allowed" in res.stderr
    assert "denied org.dashbridge.Daemon1.Ping" in d.log()


def test_allowed_user_and_group(daemon_factory: Callable[..., DaemonProcess], system_bus: PrivateBus) -> None:
    daemon_factory({"api": {"allowed_groups": ["nogroup"]}})
    res = _ping_as("nobody", system_bus.address)
    assert res.returncode == 0, res.stderr
    assert '"pong"' in res.stdout


def test_root_is_always_allowed(daemon_factory: Callable[..., DaemonProcess], system_bus: PrivateBus) -> None:
    daemon_factory({"api": {"allowed_groups": [], "allowed_users": []}})
    res = _ping_as("root", system_bus.address)
    assert res.returncode == 0, res.stderr
