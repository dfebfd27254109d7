"""dashbridge-sim as a developer uses it: `up` prints the environment and stops everything on
Ctrl-C; `shell` acts as the world, answers, and prints the daemon's signals as they happen."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

SIM = [sys.executable, "-m", "dashbridge.simulator"]


def _isolated(tmp_path: Path) -> dict[str, str]:
    """A runtime directory of the test's own: its `up` is not joined by anyone else's `shell`, and
    its `shell` joins no other `up` running on this machine."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(run)}


async def _up(tmp_path: Path, *args: str) -> tuple[asyncio.subprocess.Process, dict[str, str], str]:
    proc = await asyncio.create_subprocess_exec(*SIM, "up", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=_isolated(tmp_path))
    assert proc.stdout is not None and proc.stderr is not None
    env: dict[str, str] = {}
    err = ""
    async with asyncio.timeout(30):
        while "Ctrl-C" not in err:
            line = (await proc.stderr.readline()).decode()
            assert line, f"up exited early: {err}"
            err += line
    while True:  # the exports were flushed before the stderr lines
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 0.5)).decode()
        except TimeoutError:
            break
        if not line.startswith("export "):
            break
        key, _, value = line.removeprefix("export ").strip().partition("=")
        env[key] = value.strip("'")
    return proc, env, err


async def _ctl(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from dashbridge.daemon.ctl import main; sys.exit(main())", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.timeout(90)
async def test_up_with_a_phone_then_ctrl_c_stops_everything(tmp_path: Path) -> None:
    proc, env, err = await _up(tmp_path, "--phone", "name=Alice,address=AA:BB:CC:DD:EE:01,bonded=true")
    try:
        assert env["DBUS_SYSTEM_BUS_ADDRESS"].startswith("unix:path=")
        assert "DBUS_SESSION_BUS_ADDRESS" in env
        assert "dashbridged: ready" in err and "phone Alice (AA:BB:CC:DD:EE:01)" in err
        assert "fake bluez: running" in err
        rc, out = await _ctl(env, "status")
        assert rc in (0, 3), out  # 3: a component degraded (still a clear answer)
        assert "dashbridge" in out
    finally:
        proc.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, rest
    assert b"everything stopped" in rest
    for var in ("DBUS_SYSTEM_BUS_ADDRESS", "DBUS_SESSION_BUS_ADDRESS"):
        socket = Path(env[var].removeprefix("unix:path="))
        assert not socket.parent.exists(), f"{socket.parent} is left behind"
    rc, out = await _ctl(env, "status")
    assert rc == 2 and "cannot reach the bus" in out


@pytest.mark.timeout(90)
async def test_up_no_daemon_prints_the_environment_for_your_own_daemon(tmp_path: Path) -> None:
    cfg = tmp_path / "world.yaml"
    proc, env, err = await _up(tmp_path, "--no-daemon", "--write-config", str(cfg))
    try:
        assert "dashbridged: not started" in err
        assert env["DBUS_SYSTEM_BUS_ADDRESS"] and env["DASHBRIDGE_SIM_BACKEND_URL"].startswith("https://127.0.0.1:")
        text = cfg.read_text()
        assert "cloud:" in text and "ca_file" in text  # what a hand-started daemon needs for the backend
        # ... and the world's state directory, never /var/lib/dashbridge; exported too
        written = yaml.safe_load(text)
        state = env["STATE_DIRECTORY"]
        assert state.startswith(tempfile.gettempdir()) and "dashbridge-world-" in state
        assert written["state_directory"] == state
        assert written["buses"]["transfer_dir"] == f"{state}/obex"
        assert f"its state directory: {state}" in err
        rc, out = await _ctl(env, "status")
        assert rc == 1 and out.strip() == "dashbridgectl: the dashbridge daemon is not running"
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0


SESSION = """\
add "Alice's Pixel" AA:BB:CC:DD:EE:01 passkey=123456
phones
call Phones1.OpenPairingWindow 0
pair "Alice's Pixel"
wait Phones1.PromptRequested
prompt yes
wait Phones1.PhoneConnected
phones
ring AA:BB:CC:DD:EE:01 +447700900123 Mum
wait Calls1.CallAdded
call Calls1.Answer call1
wait Calls1.CallChanged
remote "Alice's Pixel" hangup
wait Calls1.CallRemoved
backend offline
backend state
restart bluetoothd
wait Phones1.PhoneConnected
bogus
help ring
quit
"""


@pytest.mark.timeout(120)
async def test_a_scripted_shell_session(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(*SIM, "shell", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                env={**_isolated(tmp_path), "HOME": "/nonexistent"})
    out, _ = await asyncio.wait_for(proc.communicate(SESSION.encode()), 100)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "Alice's Pixel (AA:BB:CC:DD:EE:01) is in the world" in text
    # the daemon's signals, printed as they happened
    assert "⟵ Phones1.PromptRequested" in text and "code=123456" in text
    assert "⟵ Phones1.PhoneConnected" in text
    assert "pairing ended: paired" in text
    assert "connected" in text.split("pairing ended")[1]
    assert "⟵ Calls1.CallAdded" in text and "Mum" in text
    assert "got Calls1.CallRemoved" in text
    assert "backend old address: offline" in text and "old address offline" in text
    assert "bluetoothd restarted" in text
    assert text.count("got Phones1.PhoneConnected") == 2
    assert "unknown command 'bogus'" in text
    assert "ring PHONE NUMBER [NAME]" in text
    assert "everything stopped" in text
