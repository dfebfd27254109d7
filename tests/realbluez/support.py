"""The real-bluetoothd tier's moving parts: Debian's ``bluetoothd`` (5.66) as a child on a private
system bus, its kernel replaced by :class:`~tests.realbluez.mgmtserver.MgmtServer` through the
``libmgmtshim.so`` LD_PRELOAD shim, a bus monitor that timestamps what the daemon asks bluetoothd
(``AgentManager1``) and when ``org.bluez`` changes hands, and Phones1 helpers.

What we learned running the real bluetoothd 5.66 this way (see README.md for the whole list):

* bluetoothd needs from the kernel: Read Version, Read Commands, Read Index List, Read Info; then
  Set SSP / Powered / Connectable, Set Device Class, Set Local Name, Add/Remove UUID, Load Link
  Keys, Set Device ID, Unblock Device (answered "Unknown Command": it carries on).
* With ``[Policy] AutoEnable=false`` the adapter stays off until someone sets ``Powered`` — the
  daemon does, which is how the tier sees the daemon's adapter writes arrive as Set-* commands.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus.call import call, unwrap
from tests.realproc import RealProcess

from .mgmtserver import Changes, MgmtServer

HERE = Path(__file__).resolve().parent
SHIM = HERE / "libmgmtshim.so"
BLUETOOTHD_PATHS = ("/usr/libexec/bluetooth/bluetoothd", "/usr/lib/bluetooth/bluetoothd", "/usr/sbin/bluetoothd")
START_DEADLINE_S = 10.0
ADAPTER = "/org/bluez/hci0"
# Plugins that need hardware or services the tier has not (SAP's SIM driver, NFC's neard, the
# hostname plugin's systemd-hostnamed, which would rename the adapter) stay off; the audio, input,
# network and policy plugins load as on a head unit (their L2CAP servers fail: see shim.c).
NOPLUGIN = "sap,neard,hostname,health,midi,wiimote,sixaxis"
MAIN_CONF = """[General]
ControllerMode = bredr
Class = 0x200420
[Policy]
AutoEnable = false
"""


def bluetoothd_path() -> str:
    for p in BLUETOOTHD_PATHS:
        if os.access(p, os.X_OK):
            return p
    exe = shutil.which("bluetoothd")
    if exe is None:
        raise RuntimeError("bluetoothd is not installed: the real-bluetoothd tier needs the Debian package 'bluez' "
                           "(make sysdeps installs it)")
    return exe


def build_shim() -> Path:
    """Build ``libmgmtshim.so`` when missing or older than ``shim.c`` (``make`` does it too)."""
    src = HERE / "shim.c"
    if SHIM.exists() and SHIM.stat().st_mtime >= src.stat().st_mtime:
        return SHIM
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler: the real-bluetoothd tier builds tests/realbluez/libmgmtshim.so with cc "
                           "(Debian packages gcc and libc6-dev; make sysdeps installs them)")
    tmp = SHIM.with_name(f".{SHIM.name}.{os.getpid()}")
    out = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(src), "-ldl"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {SHIM.name} failed:\n{out.stderr}")
    tmp.replace(SHIM)  # atomic: a concurrent run never loads a half-written file
    return SHIM


async def name_owner(bus: MessageBus, name: str) -> str | None:
    reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
                                   body=[name]))
    if reply is None or reply.message_type == MessageType.ERROR:
        return None
    return str(reply.body[0])


async def poll(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Re-check ``pred`` (sync or async) until it is truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


class Bluetoothd(RealProcess):
    """The real bluetoothd, ``-n -d``, on ``bus_address``, its kernel the mgmt server at ``mgmt.path``."""

    def __init__(self, bus_address: str, workdir: Path, mgmt: MgmtServer, client: MessageBus) -> None:
        self.bus_address = bus_address
        self.mgmt = mgmt
        self.client = client
        self.state_dir = workdir / "bluetooth-state"
        self.conf_dir = workdir / "bluetooth-conf"
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.conf_dir.mkdir(exist_ok=True)
        (self.conf_dir / "main.conf").write_text(MAIN_CONF)
        super().__init__(workdir / "bluetoothd.log")
        self.starts = 0

    async def start(self, timeout: float = START_DEADLINE_S) -> str:
        """Start it and wait until it owns ``org.bluez`` and exports the adapter; returns its unique name."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - closed in stop(); a local file
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus_address, LD_PRELOAD=str(build_shim()),
                   DASHBRIDGE_MGMT_SOCKET=str(self.mgmt.path), STATE_DIRECTORY=str(self.state_dir),
                   CONFIGURATION_DIRECTORY=str(self.conf_dir))
        self.proc = await asyncio.create_subprocess_exec(
            bluetoothd_path(), "-n", "-d", f"--noplugin={NOPLUGIN}",
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        proc = self.proc

        async def up() -> str | None:
            if proc.returncode is not None:
                raise RuntimeError(f"bluetoothd exited with {proc.returncode}:\n{self.log()}")
            owner = await name_owner(self.client, "org.bluez")
            if owner is None:
                return None
            try:
                (objs,) = await call(self.client, "org.bluez", "/", "org.freedesktop.DBus.ObjectManager",
                                     "GetManagedObjects", timeout=2)
            except Exception:
                return None
            return owner if ADAPTER in objs else None

        try:
            return str(await poll(up, timeout, "bluetoothd owning org.bluez with hci0"))
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self.log()}") from None


    def seed_paired_phone(self, address: str, name: str, uuids: list[str], dev_class: int = 0x5A020C) -> None:
        """Write bluetoothd's storage for a phone bonded earlier (as bluetoothd itself writes it:
        ``<adapter>/<device>/info``), for bluetoothd to load at its next start."""
        d = self.state_dir / self.mgmt.ctl.address / address
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        (d / "info").write_text(
            f"[General]\nName={name}\nClass=0x{dev_class:06x}\nSupportedTechnologies=BR/EDR;\nTrusted=true\n"
            f"Blocked=false\nServices={';'.join(uuids)};\n\n"
            "[LinkKey]\nKey=000102030405060708090A0B0C0D0E0F\nType=5\nPINLength=0\n")

    def device_info(self, address: str) -> str:
        """bluetoothd's stored ``info`` file for a device (link key, trust, name), or ``""``."""
        path = self.state_dir / self.mgmt.ctl.address / address / "info"
        try:
            return path.read_text()
        except OSError:
            return ""


@dataclass
class Seen:
    t: float  # time.monotonic() when the monitor received it
    msg: Message


class BusMonitor:
    """A D-Bus monitor connection (``BecomeMonitor``): timestamps ``org.bluez`` owner changes and
    the calls to bluetoothd's ``AgentManager1``, ``Adapter1``, ``Device1`` and property writes, and to the
    daemon's ``Agent1``."""

    def __init__(self, bus_address: str) -> None:
        self.bus_address = bus_address
        self.bus: MessageBus | None = None
        self.seen: list[Seen] = []
        self._changes = Changes()

    async def start(self) -> BusMonitor:
        self.bus = await MessageBus(bus_address=self.bus_address).connect()
        rules = ["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'",
                 "type='method_call',interface='org.bluez.AgentManager1'",
                 "type='method_call',interface='org.bluez.Agent1'",
                 "type='method_call',interface='org.bluez.Device1'",
                 "type='method_call',interface='org.bluez.Adapter1'",
                 "type='method_call',destination='org.bluez',interface='org.freedesktop.DBus.Properties',"
                 "member='Set'"]
        reply = await self.bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                            interface="org.freedesktop.DBus.Monitoring", member="BecomeMonitor",
                                            signature="asu", body=[rules, 0]))
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
        self.bus.add_message_handler(self._on)
        return self

    def _on(self, msg: Message) -> bool:
        if msg.message_type in (MessageType.SIGNAL, MessageType.METHOD_CALL):
            self.seen.append(Seen(time.monotonic(), msg))
            self._changes.bump()
        return True  # a monitor never answers anything

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None

    def mark(self) -> int:
        return len(self.seen)

    def owner_appeared(self, after: int = 0) -> Seen | None:
        for s in self.seen[after:]:
            m = s.msg
            if m.member == "NameOwnerChanged" and m.body[0] == "org.bluez" and m.body[2]:
                return s
        return None

    def property_writes(self, after: int = 0) -> list[tuple[str, str, Any]]:
        """``Properties.Set`` calls to bluetoothd: (interface, property, value)."""
        return [(s.msg.body[0], s.msg.body[1], s.msg.body[2].value) for s in self.calls("Set", after)
                if s.msg.interface == "org.freedesktop.DBus.Properties"]

    def calls(self, member: str, after: int = 0) -> list[Seen]:
        return [s for s in self.seen[after:] if s.msg.message_type == MessageType.METHOD_CALL
                and s.msg.member == member]

    async def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        return await self._changes.until(pred, timeout)


async def device_props(client: MessageBus, address: str) -> dict[str, Any]:
    path = f"{ADAPTER}/dev_{address.replace(':', '_')}"
    (props,) = await call(client, "org.bluez", path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                          ["org.bluez.Device1"], timeout=5)
    return dict(unwrap(props))


async def adapter_props(client: MessageBus) -> dict[str, Any]:
    (props,) = await call(client, "org.bluez", ADAPTER, "org.freedesktop.DBus.Properties", "GetAll", "s",
                          ["org.bluez.Adapter1"], timeout=5)
    return dict(unwrap(props))
