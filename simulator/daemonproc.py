"""Run ``dashbridged`` as a child process the way systemd would: a ``NOTIFY_SOCKET`` datagram
server receives READY/STATUS/WATCHDOG/STOPPING, and readiness is waited for (never slept for).

Used by the tests, ``dashbridge-sim up``, the scenario runner, ``make demo`` and ``make bench``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class NotifyServer:
    """A fake systemd: collects sd_notify datagrams on a Unix datagram socket."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []
        # Like systemd, read datagrams as they come: a Unix datagram queue holds only
        # net.unix.max_dgram_qlen (10) messages, after which the daemon's sd_notify would fail.
        self._cond = threading.Condition(threading.RLock())
        self._closed = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="notify-pump", daemon=True)
        self._pump.start()

    def _pump_loop(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            while not self._closed.is_set():
                if sel.select(timeout=0.2):
                    self.drain()
        except (OSError, ValueError):
            pass  # socket closed under us
        finally:
            sel.close()

    def drain(self) -> None:
        with self._cond:
            got = False
            while True:
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, OSError):
                    break
                fields: dict[str, str] = {}
                for line in data.decode(errors="replace").splitlines():
                    k, _, v = line.partition("=")
                    fields[k] = v
                self.messages.append((time.monotonic(), fields))
                got = True
            if got:
                self._cond.notify_all()

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0,
                 proc: subprocess.Popen[bytes] | None = None) -> dict[str, str]:
        """Block until a datagram with ``key`` (= ``value``) arrives; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                self.drain()
                for _, fields in self.messages[seen:]:
                    if key in fields and (value is None or fields[key] == value):
                        return fields
                seen = len(self.messages)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"dashbridged exited with status {proc.returncode} before {key}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key} from dashbridged within {timeout}s")
                # woken by the pump as soon as a datagram arrives; the cap only re-checks `proc`
                self._cond.wait(timeout=min(left, 0.2))

    def seen(self, key: str) -> list[dict[str, str]]:
        self.drain()
        return [f for _, f in self.messages if key in f]

    def close(self) -> None:
        self._closed.set()
        self._pump.join(timeout=2)
        self.sock.close()


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


class DaemonProcess:
    """``dashbridged`` on the given private buses, with its own state directory."""

    def __init__(self, system_address: str, session_address: str, *, config: Mapping[str, Any] | None = None,
                 state_dir: Path | None = None, env: Mapping[str, str] | None = None,
                 watchdog_usec: int | None = None, log_path: Path | None = None,
                 exe: Sequence[str] | None = None) -> None:
        """``exe``: the command that runs dashbridged (default: the one beside this Python)."""
        self.exe = list(exe) if exe else None
        self.workdir = Path(tempfile.mkdtemp(prefix="dashbridged-"))
        self.state_dir = state_dir or (self.workdir / "state")
        self.config_path = write_config(self.workdir / "config.yaml", config or {})
        self.notify = NotifyServer(self.workdir)
        self.log_path = log_path or (self.workdir / "dashbridged.log")
        self.env = dict(os.environ)
        self.env.update({
            "DBUS_SYSTEM_BUS_ADDRESS": system_address,
            "DBUS_SESSION_BUS_ADDRESS": session_address,
            "STATE_DIRECTORY": str(self.state_dir),
            "NOTIFY_SOCKET": str(self.notify.path),
            "PYTHONUNBUFFERED": "1",
        })
        if watchdog_usec:
            self.env["WATCHDOG_USEC"] = str(watchdog_usec)
        if env:
            self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @staticmethod
    def command() -> list[str]:
        exe = shutil.which("dashbridged", path=os.path.dirname(sys.executable))
        return [exe] if exe else [sys.executable, "-m", "dashbridge.daemon"]

    def start(self, *, wait_ready: bool = True, timeout: float = 15.0) -> DaemonProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*(self.exe or self.command()), "--config", str(self.config_path)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        assert self.proc is not None
        try:
            return self.notify.wait_for("READY", "1", timeout=timeout, proc=self.proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- daemon log ---\n{self.log()}") from None

    async def await_ready(self, timeout: float = 15.0) -> dict[str, str]:
        return await asyncio.to_thread(self.wait_ready, timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> int:
        """SIGKILL (power loss / crash)."""
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait(timeout=5)
            else:
                rc = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def cleanup(self) -> None:
        self.stop()
        self.notify.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def astop(self, timeout: float = 15.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)
