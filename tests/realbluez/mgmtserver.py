"""A user-space stand-in for the kernel's Bluetooth management interface (BlueZ doc/mgmt-api.txt).

The real ``bluetoothd`` reaches it through ``libmgmtshim.so`` (``shim.c``): its HCI control-channel
socket becomes an AF_UNIX SOCK_SEQPACKET connection to :class:`MgmtServer`.  One controller, index
0, BR/EDR only.  The server keeps the controller's state (settings bits, class, name, UUIDs, the
link keys bluetoothd loaded), records every command it got (``commands``), and lets a test play
the radio side: a phone connects (Device Connected), starts Secure Simple Pairing (User
Confirmation Request, then New Link Key or Authentication Failed according to bluetoothd's reply),
drops the link (Device Disconnected), or does not answer bluetoothd's Pair Device (Connect
Failed / page timeout).

Packets: a 6-byte header (opcode, controller index, parameter length; little endian) then the
parameters.  Replies are Command Complete (0x0001: opcode, status, return parameters) or Command
Status (0x0002: opcode, status).  Like the kernel, events caused by bluetoothd's own command (New
Settings after Set Powered...) are not sent back to it: it learns the new state from the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INDEX_NONE = 0xFFFF
QUERY = b"DBSHIM-CONNECT"  # the shim's question about a connect() (see shim.c), not a mgmt packet
PSM_SDP = 1
ADAPTER_ADDRESS = "00:1A:7D:DA:71:10"
BDADDR_BREDR = 0x00

# Statuses (mgmt-api.txt "Error Codes")
SUCCESS = 0x00
UNKNOWN_COMMAND = 0x01
NOT_CONNECTED = 0x02
FAILED = 0x03
CONNECT_FAILED = 0x04
AUTH_FAILED = 0x05
NOT_PAIRED = 0x06
TIMEOUT_STATUS = 0x08
BUSY = 0x0A
REJECTED = 0x0B
INVALID_PARAMS = 0x0D
NOT_POWERED = 0x0F
CANCELLED = 0x10
INVALID_INDEX = 0x11

# Disconnect reasons (Device Disconnected)
DISCONN_UNKNOWN, DISCONN_TIMEOUT, DISCONN_LOCAL, DISCONN_REMOTE, DISCONN_AUTH = 0, 1, 2, 3, 4

# Settings bits
S_POWERED, S_CONNECTABLE, S_FAST_CONN, S_DISCOVERABLE, S_BONDABLE = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4
S_LINK_SEC, S_SSP, S_BREDR = 1 << 5, 1 << 6, 1 << 7
SUPPORTED_SETTINGS = S_POWERED | S_CONNECTABLE | S_FAST_CONN | S_DISCOVERABLE | S_BONDABLE | S_LINK_SEC | S_SSP \
    | S_BREDR

# Commands
OP = {
    "READ_VERSION": 0x0001, "READ_COMMANDS": 0x0002, "READ_INDEX_LIST": 0x0003, "READ_INFO": 0x0004,
    "SET_POWERED": 0x0005, "SET_DISCOVERABLE": 0x0006, "SET_CONNECTABLE": 0x0007, "SET_FAST_CONNECTABLE": 0x0008,
    "SET_BONDABLE": 0x0009, "SET_LINK_SECURITY": 0x000A, "SET_SSP": 0x000B, "SET_HS": 0x000C, "SET_LE": 0x000D,
    "SET_DEV_CLASS": 0x000E, "SET_LOCAL_NAME": 0x000F, "ADD_UUID": 0x0010, "REMOVE_UUID": 0x0011,
    "LOAD_LINK_KEYS": 0x0012, "LOAD_LONG_TERM_KEYS": 0x0013, "DISCONNECT": 0x0014, "GET_CONNECTIONS": 0x0015,
    "PIN_CODE_REPLY": 0x0016, "PIN_CODE_NEG_REPLY": 0x0017, "SET_IO_CAPABILITY": 0x0018, "PAIR_DEVICE": 0x0019,
    "CANCEL_PAIR_DEVICE": 0x001A, "UNPAIR_DEVICE": 0x001B, "USER_CONFIRM_REPLY": 0x001C,
    "USER_CONFIRM_NEG_REPLY": 0x001D, "USER_PASSKEY_REPLY": 0x001E, "USER_PASSKEY_NEG_REPLY": 0x001F,
    "START_DISCOVERY": 0x0023, "STOP_DISCOVERY": 0x0024, "CONFIRM_NAME": 0x0025, "BLOCK_DEVICE": 0x0026,
    "UNBLOCK_DEVICE": 0x0027, "SET_DEVICE_ID": 0x0028, "SET_BREDR": 0x002A, "SET_SECURE_CONN": 0x002D,
    "SET_PRIVACY": 0x002F, "LOAD_IRKS": 0x0030, "ADD_DEVICE": 0x0033, "REMOVE_DEVICE": 0x0034,
    "LOAD_CONN_PARAM": 0x0035, "READ_EXT_INDEX_LIST": 0x003C, "READ_EXT_INFO": 0x0042,
    "READ_EXP_FEATURES_INFO": 0x0049, "READ_DEF_SYSTEM_CONFIG": 0x004B, "SET_DEF_SYSTEM_CONFIG": 0x004C,
}
OP_NAME = {v: k for k, v in OP.items()}

# Events
EV_CMD_COMPLETE, EV_CMD_STATUS, EV_INDEX_ADDED, EV_NEW_SETTINGS = 0x0001, 0x0002, 0x0004, 0x0006
EV_CLASS_CHANGED, EV_NAME_CHANGED, EV_NEW_LINK_KEY = 0x0007, 0x0008, 0x0009
EV_DEVICE_CONNECTED, EV_DEVICE_DISCONNECTED, EV_CONNECT_FAILED = 0x000B, 0x000C, 0x000D
EV_USER_CONFIRM_REQUEST, EV_AUTH_FAILED, EV_DEVICE_FOUND, EV_DISCOVERING = 0x000F, 0x0011, 0x0012, 0x0013

# What READ_COMMANDS announces.  No Add Device: bluetoothd then keeps the controller connectable
# itself (no kernel-side connection control), which is all a BR/EDR-only car needs.  The reply
# must stay under bluetoothd's 512-byte read buffer (src/shared/mgmt.c).
ANNOUNCED = [OP[n] for n in (
    "READ_VERSION", "READ_COMMANDS", "READ_INDEX_LIST", "READ_INFO", "SET_POWERED", "SET_DISCOVERABLE",
    "SET_CONNECTABLE", "SET_FAST_CONNECTABLE", "SET_BONDABLE", "SET_LINK_SECURITY", "SET_SSP", "SET_DEV_CLASS",
    "SET_LOCAL_NAME", "ADD_UUID", "REMOVE_UUID", "LOAD_LINK_KEYS", "DISCONNECT", "GET_CONNECTIONS",
    "SET_IO_CAPABILITY", "PAIR_DEVICE", "CANCEL_PAIR_DEVICE", "UNPAIR_DEVICE", "USER_CONFIRM_REPLY",
    "USER_CONFIRM_NEG_REPLY", "START_DISCOVERY", "STOP_DISCOVERY", "SET_DEVICE_ID", "SET_BREDR",
)]
ANNOUNCED_EVENTS = [EV_CMD_COMPLETE, EV_CMD_STATUS, EV_INDEX_ADDED, EV_NEW_SETTINGS, EV_CLASS_CHANGED,
                    EV_NAME_CHANGED, EV_NEW_LINK_KEY, EV_DEVICE_CONNECTED, EV_DEVICE_DISCONNECTED,
                    EV_CONNECT_FAILED, EV_USER_CONFIRM_REQUEST, EV_AUTH_FAILED, EV_DEVICE_FOUND, EV_DISCOVERING]

# The bits bluetoothd's service UUIDs add to the class of device (major service classes).
_SERVICE_HINT_SHIFT = 16


def addr_bytes(address: str) -> bytes:
    return bytes(int(x, 16) for x in reversed(address.split(":")))


def addr_str(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in reversed(raw[:6]))


def eir(name: str, dev_class: int) -> bytes:
    """Extended inquiry response data: complete local name (0x09) and class of device (0x0D)."""
    nb = name.encode()
    cls = dev_class.to_bytes(3, "little")
    return bytes([len(nb) + 1, 0x09]) + nb + bytes([4, 0x0D]) + cls


@dataclass
class Command:
    opcode: int
    index: int
    params: bytes

    @property
    def name(self) -> str:
        return OP_NAME.get(self.opcode, f"0x{self.opcode:04x}")


@dataclass
class Phone:
    address: str
    name: str = "Pixel"
    dev_class: int = 0x5A020C  # smartphone, with telephony/audio/object-transfer/networking service bits
    connected: bool = False
    # What the phone does when bluetoothd pages it (Pair Device): None = it answers.
    pair_failure: int | None = None  # an mgmt status for Pair Device, e.g. CONNECT_FAILED
    # How bluetoothd's L2CAP/RFCOMM connect() to it fails (the shim cannot carry data): EHOSTDOWN is
    # the kernel's page timeout; ECONNREFUSED a phone refusing the channel.
    connect_errno: int = errno.EHOSTDOWN


@dataclass
class Controller:
    address: str = ADAPTER_ADDRESS
    name: str = ""
    short_name: str = ""
    dev_class: int = 0
    major_minor: tuple[int, int] = (0, 0)
    settings: int = S_BREDR
    discoverable_timeout: int = 0
    io_capability: int | None = None
    uuids: list[tuple[bytes, int]] = field(default_factory=list)
    link_keys: dict[str, bytes] = field(default_factory=dict)  # what bluetoothd loaded (Load Link Keys)
    discovering: bool = False
    device_id: tuple[int, int, int, int] | None = None

    def setting(self, bit: int) -> bool:
        return bool(self.settings & bit)


class Changes:
    """Wakes whoever waits for a condition each time something changed (no polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def bump(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, pred: Callable[[], Any], timeout: float) -> Any:
        """``pred()`` once it is true (its value), checked now and after each change."""
        async with asyncio.timeout(timeout):
            while True:
                got = pred()
                if got:
                    return got
                await self._event.wait()


class MgmtServer:
    """Listen on ``path``; ``bluetoothd`` (through the shim) connects once per run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ctl = Controller()
        self.phones: dict[str, Phone] = {}
        self.commands: list[Command] = []
        self.replies: dict[str, int] = {}  # phone address -> bluetoothd's last answer: 1 accept, 0 reject, -1 none
        # bluetoothd's outgoing L2CAP/RFCOMM connections, as the shim reported them: (protocol, address,
        # PSM or channel, the errno it got)
        self.radio_connects: list[tuple[str, str, int, int]] = []
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._mgmt_clients: set[socket.socket] = set()  # those that sent a mgmt command (not shim queries)
        self._changes = Changes()
        self._pending_confirm: dict[str, asyncio.Future[bool]] = {}
        self.unknown: list[int] = []

    # -- life cycle ---------------------------------------------------------------------------------
    async def start(self) -> MgmtServer:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(str(self.path))
        s.listen(8)
        s.setblocking(False)
        self._listener = s
        asyncio.get_running_loop().add_reader(s.fileno(), self._accept)
        return self

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for c in self._clients:
            with contextlib.suppress(Exception):
                loop.remove_reader(c.fileno())
            c.close()
        self._clients.clear()
        self._mgmt_clients.clear()
        if self._listener is not None:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._clients.append(conn)
        asyncio.get_running_loop().add_reader(conn.fileno(), self._readable, conn)
        self._bump()

    def _readable(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # bluetoothd exited (or was killed): its socket closed
            asyncio.get_running_loop().remove_reader(conn.fileno())
            if conn in self._clients:
                self._clients.remove(conn)
            self._mgmt_clients.discard(conn)
            conn.close()
            self._client_gone()
            self._bump()
            return
        if data.startswith(QUERY):
            self._answer_connect_query(conn, data[len(QUERY):])
            return
        if len(data) < 6:
            return
        opcode, index, plen = struct.unpack_from("<HHH", data)
        cmd = Command(opcode, index, data[6:6 + plen])
        self._mgmt_clients.add(conn)
        self.commands.append(cmd)
        try:
            self._handle(conn, cmd)
        except Exception:
            log.exception("mgmt server: %s failed", cmd.name)
            self._status(conn, cmd, FAILED)
        self._bump()

    def _answer_connect_query(self, conn: socket.socket, q: bytes) -> None:
        """The shim asks how bluetoothd's connect() to a phone fails: reply with the errno and hang up."""
        proto = {0: "l2cap", 3: "rfcomm"}.get(q[0], str(q[0]))
        addr = addr_str(q[1:7])
        (psm,) = struct.unpack_from("<H", q, 7)
        ph = self.phones.get(addr)
        err = ph.connect_errno if ph is not None else errno.EHOSTDOWN
        self.radio_connects.append((proto, addr, psm, err))
        with contextlib.suppress(OSError):
            conn.send(struct.pack("<i", err))
        asyncio.get_running_loop().remove_reader(conn.fileno())
        if conn in self._clients:
            self._clients.remove(conn)
        conn.close()
        self._bump()

    def _client_gone(self) -> None:
        # The kernel powers a controller down when the last management user goes?  No: the kernel
        # keeps the controller as it was; but every ACL link bluetoothd had stays up only in the
        # kernel.  Keep the links and settings as they were, as the kernel does.
        pending, self._pending_confirm = self._pending_confirm, {}
        for fut in pending.values():
            if not fut.done():
                fut.cancel()  # ssp_pairing() returns None: nobody answered

    def _bump(self) -> None:
        self._changes.bump()

    async def wait_until(self, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
        return await self._changes.until(pred, timeout)

    def seen(self, name: str, after: int = 0) -> list[Command]:
        return [c for c in self.commands[after:] if c.name == name]

    def mark(self) -> int:
        return len(self.commands)

    # -- sending ------------------------------------------------------------------------------------
    def _send(self, conn: socket.socket | None, event: int, index: int, params: bytes) -> None:
        pkt = struct.pack("<HHH", event, index, len(params)) + params
        for c in [conn] if conn is not None else [c for c in self._clients if c in self._mgmt_clients]:
            try:
                c.send(pkt)
            except OSError as exc:
                log.warning("mgmt server: send failed: %s", exc)

    def _complete(self, conn: socket.socket, cmd: Command, rp: bytes = b"", status: int = SUCCESS) -> None:
        self._send(conn, EV_CMD_COMPLETE, cmd.index, struct.pack("<HB", cmd.opcode, status) + rp)

    def _status(self, conn: socket.socket, cmd: Command, status: int) -> None:
        self._send(conn, EV_CMD_STATUS, cmd.index, struct.pack("<HB", cmd.opcode, status))

    def event(self, event: int, params: bytes, index: int = 0) -> None:
        """Send an event to every connected bluetoothd."""
        self._send(None, event, index, params)

    # -- commands -----------------------------------------------------------------------------------
    def _settings_rp(self) -> bytes:
        return struct.pack("<I", self.ctl.settings)

    def _class_bytes(self) -> bytes:
        return self.ctl.dev_class.to_bytes(3, "little")

    def _recompute_class(self) -> None:
        major, minor = self.ctl.major_minor
        hints = 0
        for _, hint in self.ctl.uuids:
            hints |= hint
        self.ctl.dev_class = (hints << _SERVICE_HINT_SHIFT) | ((major & 0x1F) << 8) | (minor & 0xFC)

    def _handle(self, conn: socket.socket, cmd: Command) -> None:
        ctl, p, name = self.ctl, cmd.params, cmd.name
        if cmd.index not in (0, INDEX_NONE):
            self._status(conn, cmd, INVALID_INDEX)
            return
        if name == "READ_VERSION":
            self._complete(conn, cmd, struct.pack("<BH", 1, 22))
        elif name == "READ_COMMANDS":
            rp = struct.pack("<HH", len(ANNOUNCED), len(ANNOUNCED_EVENTS))
            rp += b"".join(struct.pack("<H", o) for o in ANNOUNCED + ANNOUNCED_EVENTS)
            self._complete(conn, cmd, rp)
        elif name == "READ_INDEX_LIST":
            self._complete(conn, cmd, struct.pack("<HH", 1, 0))
        elif name == "READ_INFO":
            rp = addr_bytes(ctl.address) + struct.pack("<BHII", 0x09, 0x05F1, SUPPORTED_SETTINGS, ctl.settings)
            rp += self._class_bytes() + ctl.name.encode()[:248].ljust(249, b"\0")
            rp += ctl.short_name.encode()[:10].ljust(11, b"\0")
            self._complete(conn, cmd, rp)
        elif name in ("SET_POWERED", "SET_CONNECTABLE", "SET_FAST_CONNECTABLE", "SET_BONDABLE", "SET_LINK_SECURITY",
                      "SET_SSP", "SET_BREDR"):
            bit = {"SET_POWERED": S_POWERED, "SET_CONNECTABLE": S_CONNECTABLE, "SET_FAST_CONNECTABLE": S_FAST_CONN,
                   "SET_BONDABLE": S_BONDABLE, "SET_LINK_SECURITY": S_LINK_SEC, "SET_SSP": S_SSP,
                   "SET_BREDR": S_BREDR}[name]
            if len(p) < 1 or p[0] > 1:
                self._status(conn, cmd, INVALID_PARAMS)
                return
            if name == "SET_FAST_CONNECTABLE" and not ctl.setting(S_POWERED):
                self._status(conn, cmd, NOT_POWERED)  # as the kernel: fast connectable needs power
                return
            ctl.settings = (ctl.settings | bit) if p[0] else (ctl.settings & ~bit)
            if name == "SET_POWERED" and not p[0]:
                ctl.settings &= ~S_DISCOVERABLE
                for ph in self.phones.values():
                    ph.connected = False
            if name == "SET_CONNECTABLE" and not p[0]:
                ctl.settings &= ~S_DISCOVERABLE
            self._complete(conn, cmd, self._settings_rp())
        elif name in ("SET_HS", "SET_LE", "SET_SECURE_CONN"):
            if len(p) >= 1 and p[0] == 0:
                self._complete(conn, cmd, self._settings_rp())
            else:
                self._status(conn, cmd, 0x0C)  # Not Supported: a BR/EDR-only controller
        elif name == "SET_DISCOVERABLE":
            val, timeout = struct.unpack_from("<BH", p)
            if val and not ctl.setting(S_POWERED):
                self._status(conn, cmd, NOT_POWERED)
                return
            if val and not ctl.setting(S_CONNECTABLE):
                self._status(conn, cmd, REJECTED)
                return
            ctl.discoverable_timeout = timeout
            ctl.settings = (ctl.settings | S_DISCOVERABLE) if val else (ctl.settings & ~S_DISCOVERABLE)
            self._complete(conn, cmd, self._settings_rp())
        elif name == "SET_DEV_CLASS":
            ctl.major_minor = (p[0], p[1])
            self._recompute_class()
            self._complete(conn, cmd, self._class_bytes())
        elif name == "SET_LOCAL_NAME":
            ctl.name = p[:249].split(b"\0", 1)[0].decode(errors="replace")
            ctl.short_name = p[249:260].split(b"\0", 1)[0].decode(errors="replace")
            self._complete(conn, cmd, p[:260])
        elif name == "ADD_UUID":
            ctl.uuids = [u for u in ctl.uuids if u[0] != p[:16]] + [(p[:16], p[16])]
            self._recompute_class()
            self._complete(conn, cmd, self._class_bytes())
        elif name == "REMOVE_UUID":
            if p[:16] == bytes(16):
                ctl.uuids = []
            else:
                ctl.uuids = [u for u in ctl.uuids if u[0] != p[:16]]
            self._recompute_class()
            self._complete(conn, cmd, self._class_bytes())
        elif name == "LOAD_LINK_KEYS":
            (count,) = struct.unpack_from("<H", p, 1)
            ctl.link_keys = {}
            for i in range(count):
                off = 3 + 25 * i
                ctl.link_keys[addr_str(p[off:off + 6])] = p[off + 8:off + 24]
            self._complete(conn, cmd)
        elif name in ("LOAD_LONG_TERM_KEYS", "LOAD_IRKS", "LOAD_CONN_PARAM"):
            self._complete(conn, cmd)
        elif name == "SET_IO_CAPABILITY":
            ctl.io_capability = p[0]
            self._complete(conn, cmd)
        elif name == "SET_DEVICE_ID":
            ctl.device_id = struct.unpack_from("<HHHH", p)
            self._complete(conn, cmd)
        elif name == "GET_CONNECTIONS":
            conns = [ph for ph in self.phones.values() if ph.connected]
            rp = struct.pack("<H", len(conns)) + b"".join(addr_bytes(ph.address) + bytes([BDADDR_BREDR])
                                                          for ph in conns)
            self._complete(conn, cmd, rp)
        elif name == "DISCONNECT":
            addr = addr_str(p)
            ph = self.phones.get(addr)
            if ph is None or not ph.connected:
                self._complete(conn, cmd, p[:7], NOT_CONNECTED)
                return
            ph.connected = False
            self._complete(conn, cmd, p[:7])  # bluetoothd handles its own disconnection from the reply
        elif name in ("USER_CONFIRM_REPLY", "USER_CONFIRM_NEG_REPLY"):
            addr = addr_str(p)
            fut = self._pending_confirm.pop(addr, None)
            if fut is None:
                self._complete(conn, cmd, p[:7], NOT_CONNECTED)
                return
            self._complete(conn, cmd, p[:7])
            if not fut.done():
                fut.set_result(name == "USER_CONFIRM_REPLY")
        elif name == "PAIR_DEVICE":
            self._pair_device(conn, cmd)
        elif name == "CANCEL_PAIR_DEVICE":
            self._complete(conn, cmd, p[:7])
        elif name == "UNPAIR_DEVICE":
            addr = addr_str(p)
            ctl.link_keys.pop(addr, None)
            ph = self.phones.get(addr)
            if p[7] and ph is not None:
                ph.connected = False
            self._complete(conn, cmd, p[:7])
        elif name == "START_DISCOVERY":
            if not ctl.setting(S_POWERED):
                self._complete(conn, cmd, p[:1], NOT_POWERED)
                return
            ctl.discovering = True
            self._complete(conn, cmd, p[:1])
            self.event(EV_DISCOVERING, bytes([p[0], 1]))
        elif name == "STOP_DISCOVERY":
            if not ctl.discovering:
                self._complete(conn, cmd, p[:1], REJECTED)
                return
            ctl.discovering = False
            self._complete(conn, cmd, p[:1])
            self.event(EV_DISCOVERING, bytes([p[0], 0]))
        else:
            self.unknown.append(cmd.opcode)
            self._status(conn, cmd, UNKNOWN_COMMAND)

    def _pair_device(self, conn: socket.socket, cmd: Command) -> None:
        addr = addr_str(cmd.params)
        ph = self.phones.get(addr)
        if ph is None or ph.pair_failure is not None or not self.ctl.setting(S_POWERED):
            status = NOT_POWERED if not self.ctl.setting(S_POWERED) else (
                ph.pair_failure if ph is not None and ph.pair_failure is not None else CONNECT_FAILED)
            # The kernel reports a failed page as Connect Failed (HCI status) and answers the command.
            self.event(EV_CONNECT_FAILED, cmd.params[:7] + bytes([CONNECT_FAILED]))  # a page timeout, mapped
            self._complete(conn, cmd, cmd.params[:7], status)
            return
        # Pairing initiated by the car is not modelled beyond the page: it is refused.
        self._complete(conn, cmd, cmd.params[:7], AUTH_FAILED)

    # -- the radio side: what a phone does ----------------------------------------------------------
    def add_phone(self, address: str, name: str = "Pixel") -> Phone:
        ph = Phone(address, name)
        self.phones[address] = ph
        return ph

    def connect_phone(self, address: str) -> None:
        """The phone opens an ACL link to the car (it pages us): Device Connected."""
        ph = self.phones[address]
        ph.connected = True
        data = eir(ph.name, ph.dev_class)
        self.event(EV_DEVICE_CONNECTED, addr_bytes(address) + bytes([BDADDR_BREDR])
                   + struct.pack("<IH", 0, len(data)) + data)

    def found(self, address: str, rssi: int = -60) -> None:
        """The scan hears the phone: Device Found with its name and class (as from an inquiry)."""
        ph = self.phones[address]
        data = eir(ph.name, ph.dev_class)
        self.event(EV_DEVICE_FOUND, addr_bytes(address) + bytes([BDADDR_BREDR])
                   + struct.pack("<bIH", rssi, 0, len(data)) + data)

    def disconnect_phone(self, address: str, reason: int = DISCONN_REMOTE) -> None:
        ph = self.phones[address]
        ph.connected = False
        self.event(EV_DEVICE_DISCONNECTED, addr_bytes(address) + bytes([BDADDR_BREDR, reason]))

    def abort_pairing(self, address: str) -> None:
        """The phone gives up while bluetoothd waits for the agent: Authentication Failed."""
        fut = self._pending_confirm.pop(address, None)
        if fut is not None and not fut.done():
            fut.cancel()
        self.event(EV_AUTH_FAILED, addr_bytes(address) + bytes([BDADDR_BREDR, AUTH_FAILED]))

    async def ssp_pairing(self, address: str, passkey: int, *, timeout: float = 30.0,
                          store_hint: bool = True) -> bool | None:
        """The phone starts Secure Simple Pairing with numeric comparison: User Confirmation Request;
        then, on bluetoothd's User Confirmation Reply, New Link Key (the pairing succeeded), on the
        Negative Reply, Authentication Failed.  Returns True/False for bluetoothd's answer, None if it
        did not answer within ``timeout`` (then the phone gives up: Authentication Failed, timeout)."""
        raw = addr_bytes(address) + bytes([BDADDR_BREDR])
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending_confirm[address] = fut
        self.event(EV_USER_CONFIRM_REQUEST, raw + struct.pack("<BI", 0, passkey))
        try:
            accepted: bool | None = await asyncio.wait_for(fut, timeout)
        except asyncio.CancelledError:
            if address in self._pending_confirm:
                raise  # the task itself was cancelled
            return None  # abort_pairing() (the phone gave up and said so) or bluetoothd went away
        except TimeoutError:
            accepted = None
            self._pending_confirm.pop(address, None)
        self.replies[address] = {True: 1, False: 0, None: -1}[accepted]
        if accepted:
            key = bytes(range(16))
            # Link key type 0x05: authenticated combination key from P-192 (SSP numeric comparison).
            self.event(EV_NEW_LINK_KEY, bytes([1 if store_hint else 0]) + raw + bytes([0x05]) + key + bytes([0]))
        else:
            status = AUTH_FAILED if accepted is False else TIMEOUT_STATUS  # mgmt statuses, as the kernel maps them
            self.event(EV_AUTH_FAILED, raw + bytes([status]))
        return accepted
