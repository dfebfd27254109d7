"""The phone side of the companion GATT service (docs/ble-companion.md) and the interface the fake
BlueZ serves any phone GATT application through.

The interface: :class:`GattApp`
-------------------------------
A phone app that serves one GATT service to the car.  The fake BlueZ (``simulator/bluez/gatt.py``)
exports its service and characteristics as ``org.bluez.GattService1``/``GattCharacteristic1``
objects (with a CCCD ``GattDescriptor1`` under every notifying characteristic) when the phone's
services are resolved, and turns the car's D-Bus calls into calls on the app:

``service_uuid``
    the primary service's 128-bit UUID, lower case.
``characteristics()``
    ``[(uuid, flags), ...]`` in handle order; flags as BlueZ spells them (``read``, ``write``,
    ``write-without-response``, ``notify``, ``indicate``).  Read when the objects are exported.
``read(link, uuid, offset, mtu)``
    the value for a ``ReadValue`` (``offset`` from its options, 0 by default).  ``link`` is the
    car's connection: an integer that changes on every (re)connection of the car to this phone, so
    the app can keep per-connection state (e.g. the selected chunk).  ``mtu`` is the link's ATT MTU
    (``VirtualPhone.att_mtu``, 517 by default; what ``GattCharacteristic1.MTU`` says).  May raise
    :class:`AttError`; may return an awaitable to stall or delay the answer.
``write(link, uuid, value)``
    a ``WriteValue`` (request or command, as the flags allow).  May raise :class:`AttError`;
    may return an awaitable, which the fake awaits before it answers the write.
``attach(notify)``
    the fake gives the app its way to notify: ``notify(uuid, value)`` sends ``value`` as a
    notification of that characteristic (``PropertiesChanged(Value)``) when a client subscribed
    (StartNotify) and the car is connected; a no-op otherwise.  Called whenever the fake exports
    the app's objects (again after a reconnection or a bluetoothd restart).

Optional members (the fake uses them when present):

``running``
    False: the app is not running, its service is not on the phone (default True).
``link_up(link)`` / ``link_down(link)``
    the car connected (new link id) / that link went.
``requires_bond``
    True: every characteristic needs an encrypted, bonded link; over a link to a phone the car is
    not bonded with, reads and writes fail with ATT 0x05 (Insufficient Authentication), which
    bluetoothd reports as ``org.bluez.Error.NotPermitted "Not paired"``.

``read``/``write`` may also raise :class:`LinkLost`: the phone drops the link under the request
(walks out of range).  The fake then answers as bluetoothd does when the ATT bearer goes under a
request: *successfully* — an empty value for ``ReadValue``, a plain reply for ``WriteValue`` — and
the device disconnects.  A request the app stalls is answered the same way when the link drops.

:class:`AttError` carries an ATT error code (Bluetooth Core Vol 3 Part F §3.4.1.1); the fake maps it
to a D-Bus error like BlueZ 5.66's ``create_gatt_dbus_error`` (src/gatt-client.c).

:class:`CompanionApp` is the built-in implementation of docs/ble-companion.md (protocol 1.0).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid as uuid_mod
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# ATT error codes (Bluetooth Core Vol 3 Part F §3.4.1.1)
ATT_INVALID_HANDLE = 0x01
ATT_READ_NOT_PERMITTED = 0x02
ATT_WRITE_NOT_PERMITTED = 0x03
ATT_INVALID_PDU = 0x04
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
ATT_REQUEST_NOT_SUPPORTED = 0x06
ATT_INVALID_OFFSET = 0x07
ATT_INSUFFICIENT_AUTHORIZATION = 0x08
ATT_ATTRIBUTE_NOT_LONG = 0x0B
ATT_INSUFFICIENT_ENCRYPTION_KEY_SIZE = 0x0C
ATT_INVALID_ATTRIBUTE_VALUE_LEN = 0x0D
ATT_UNLIKELY = 0x0E
ATT_INSUFFICIENT_ENCRYPTION = 0x0F
ATT_UNSUPPORTED_GROUP_TYPE = 0x10
ATT_INSUFFICIENT_RESOURCES = 0x11

Notify = Callable[[str, bytes], None]


class AttError(Exception):
    """An ATT error response from the phone (``code``: the ATT error code)."""

    def __init__(self, code: int, text: str = "") -> None:
        super().__init__(text or f"ATT error 0x{code:02x}")
        self.code = code


class LinkLost(Exception):
    """Raised by an app's read/write: the phone drops the link under this request."""


@runtime_checkable
class GattApp(Protocol):
    """A phone app serving one primary GATT service (see the module docstring)."""

    service_uuid: str

    def characteristics(self) -> list[tuple[str, tuple[str, ...]]]: ...

    def read(self, link: int, uuid: str, offset: int, mtu: int) -> bytes | Awaitable[bytes]: ...

    def write(self, link: int, uuid: str, value: bytes) -> Awaitable[None] | None: ...

    def attach(self, notify: Notify) -> None: ...


# =====================================================================================================
# CompanionApp: docs/ble-companion.md, protocol 1.0
# =====================================================================================================
SERVICE_UUID = "d4420000-7d1c-4882-a633-a23288c78e12"
VERSION_UUID = "d4420001-7d1c-4882-a633-a23288c78e12"
DESTINATIONS_UUID = "d4420002-7d1c-4882-a633-a23288c78e12"
ACK_UUID = "d4420003-7d1c-4882-a633-a23288c78e12"
LEASE_UUID = "d4420004-7d1c-4882-a633-a23288c78e12"
DOCUMENTS = (DESTINATIONS_UUID, LEASE_UUID)

FRAME_FORMAT = 0x01
HEADER_SIZE = 9
MAX_PAYLOAD = 503  # 512 - 9
DEFAULT_MTU = 517
MAX_ACK = 512
MAX_LISTED = 50


def chunk_size(mtu: int) -> int:
    """``n = min(503, ATT_MTU - 1 - 9)`` (§3), at least 1."""
    return max(1, min(MAX_PAYLOAD, mtu - 1 - HEADER_SIZE))


def chunk_count(document: bytes, size: int) -> int:
    return (len(document) + size - 1) // size


def header(document: bytes, size: int, index: int = 0) -> bytes:
    """The 9-byte frame header: format, index, count, CRC-32 of the whole document (§3)."""
    return struct.pack("<BHHI", FRAME_FORMAT, index, chunk_count(document, size), zlib.crc32(document))


def frame(document: bytes, size: int, index: int) -> bytes:
    """Chunk ``index`` of ``document`` (chunk 0 when ``index`` is not below the count, §3)."""
    if index >= chunk_count(document, size):
        index = 0
    return header(document, size, index) + document[index * size:(index + 1) * size]


def parse_frame(data: bytes) -> tuple[int, int, int, int, bytes]:
    """``(format, index, count, crc, payload)`` of a frame (for tests and the shell)."""
    fmt, index, count, crc = struct.unpack_from("<BHHI", data)
    return fmt, index, count, crc, bytes(data[HEADER_SIZE:])


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Destination:
    """One destination the driver picked on the phone (§4)."""

    id: str
    label: str
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    created: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.label}
        if self.lat is not None and self.lon is not None:
            out["lat"], out["lon"] = self.lat, self.lon
        if self.address is not None:
            out["address"] = self.address
        out["created"] = self.created
        return out


@dataclass(frozen=True)
class ReadLog:
    """One read the car made: on which link, of which characteristic, which chunk was served
    (``index``; -1 for the version), how many chunks and the CRC the frame said."""

    link: int
    uuid: str
    index: int
    count: int = 0
    crc: int = 0


@dataclass
class _Fault:
    uuid: str | None  # None: every characteristic
    remaining: int | None  # None: every time
    kind: str  # "stall" | "att"
    seconds: float | None = None  # stall: answer after this; None: never
    code: int = 0  # att
    on: str = "read"  # read | write | both

    def matches(self, uuid: str, op: str) -> bool:
        return (self.uuid is None or self.uuid == uuid) and self.on in (op, "both") \
            and (self.remaining is None or self.remaining > 0)

    def take(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


class CompanionApp:
    """The carmaker's companion app on a virtual phone (docs/ble-companion.md, protocol 1.0).

    State: :attr:`destinations` (pending, oldest first), :attr:`lease` (the JWS text, or b"").
    What the car did: :attr:`reads`, :attr:`selects` ((link, uuid, index)), :attr:`acked_ids`,
    :attr:`rejected` ((id, reason)), :attr:`ack_writes` (the raw JSON), :attr:`notifications`.
    Fault knobs: :meth:`stall`, :meth:`fail`, :meth:`change_mid_read`, :meth:`drop_link_after`.
    ``version``: what the version characteristic says (``(1, 0)``); ``serve``: which characteristics
    the service has (a phone may serve destinations only, or the lease only: §2)."""

    service_uuid = SERVICE_UUID
    requires_bond = True  # §1: every characteristic requires an encrypted, bonded link

    def __init__(self, *, version: tuple[int, int] = (1, 0), lease: str | bytes = b"",
                 serve: tuple[str, ...] = ("version", "destinations", "ack", "lease"),
                 running: bool = True, max_chunk: int | None = None) -> None:
        self.version = version
        self.lease = lease.encode("ascii") if isinstance(lease, str) else bytes(lease)
        self.serve = serve
        self.running = running  # the app is installed and running (its service is on the phone)
        self.max_chunk = max_chunk  # cut chunks smaller than the MTU allows (tests)
        # §4: the document lists at most 50, oldest first (None: all of them, to test the car's limits)
        self.max_listed: int | None = MAX_LISTED
        self.destinations: list[Destination] = []
        self.reads: list[ReadLog] = []
        self.selects: list[tuple[int, str, int]] = []
        self.acked_ids: list[str] = []
        self.rejected: list[tuple[str, str]] = []
        self.ack_writes: list[bytes] = []
        self.notifications: list[tuple[str, bytes]] = []
        self.links: list[int] = []  # every link the car opened, in order
        self._selected: dict[tuple[int, str], int] = {}
        self._notify: Notify | None = None
        self._seq = 0
        self._faults: list[_Fault] = []
        self._mid_read: list[tuple[str, int, Callable[[], None]]] = []  # (uuid, after n chunk reads, change)
        self._chunk_reads = 0
        self._drop_after: int | None = None
        self._mtu = DEFAULT_MTU

    # -- GattApp ----------------------------------------------------------------------------------
    def characteristics(self) -> list[tuple[str, tuple[str, ...]]]:
        table = {"version": (VERSION_UUID, ("read",)),
                 "destinations": (DESTINATIONS_UUID, ("read", "write", "notify")),
                 "ack": (ACK_UUID, ("write",)),
                 "lease": (LEASE_UUID, ("read", "write", "notify"))}
        return [table[k] for k in ("version", "destinations", "ack", "lease") if k in self.serve]

    def attach(self, notify: Notify) -> None:
        self._notify = notify

    def link_up(self, link: int) -> None:
        self.links.append(link)

    def link_down(self, link: int) -> None:
        for key in [k for k in self._selected if k[0] == link]:
            del self._selected[key]

    def read(self, link: int, uuid: str, offset: int, mtu: int) -> bytes | Awaitable[bytes]:
        uuid = uuid.lower()
        self._mtu = mtu
        fault = self._fault(uuid, "read")
        if uuid in DOCUMENTS:
            self._chunk_reads += 1
            if self._drop_after is not None and self._chunk_reads > self._drop_after:
                self._drop_after = None
                raise LinkLost()
        value = self._value(link, uuid)
        if fault is not None and fault.kind == "stall":
            return self._stalled(fault.seconds, value[offset:])
        if offset > len(value):
            raise AttError(ATT_INVALID_OFFSET)
        return value[offset:]

    def write(self, link: int, uuid: str, value: bytes) -> None:
        uuid = uuid.lower()
        self._fault(uuid, "write")
        if uuid in DOCUMENTS:
            if len(value) != 2:
                raise AttError(ATT_INVALID_ATTRIBUTE_VALUE_LEN)
            index = int.from_bytes(value, "little")
            self._selected[(link, uuid)] = index
            self.selects.append((link, uuid, index))
        elif uuid == ACK_UUID:
            self._ack(bytes(value))
        else:
            raise AttError(ATT_WRITE_NOT_PERMITTED)

    # -- the phone's user / the app's backend -------------------------------------------------------
    def add_destination(self, label: str, *, lat: float | None = None, lon: float | None = None,
                        address: str | None = None, id: str | None = None,
                        created: str | None = None) -> Destination:
        """The driver picks a destination ("send to car"): pending until the car acknowledges it."""
        if (lat is None) != (lon is None):
            raise ValueError("lat and lon go together")
        if lat is None and not address:
            raise ValueError("a destination needs coordinates or an address")
        if id is None:
            self._seq += 1
            id = f"{uuid_mod.uuid4()}"
        d = Destination(id, label, lat, lon, address, created or utc_now())
        self.destinations.append(d)
        self.notify_document(DESTINATIONS_UUID)
        return d

    def set_lease(self, lease: str | bytes) -> None:
        """The app fetched a (new) lease document for this car (b"" / "": it has none)."""
        self.lease = lease.encode("ascii") if isinstance(lease, str) else bytes(lease)
        self.notify_document(LEASE_UUID)

    def document(self, uuid: str) -> bytes:
        """The current destinations (§4) or lease (§6) document."""
        if uuid.lower() == LEASE_UUID:
            return self.lease
        listed = self.destinations[:self.max_listed] if self.max_listed is not None else self.destinations
        return json.dumps({"destinations": [d.to_json() for d in listed]},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def notify_document(self, uuid: str) -> None:
        """Notify the 9-byte header of the document's chunk 0 (§3)."""
        value = header(self.document(uuid), self._size())
        self.notifications.append((uuid, value))
        if self._notify is not None and self.running:
            self._notify(uuid, value)

    @property
    def pending_ids(self) -> list[str]:
        return [d.id for d in self.destinations]

    def status(self) -> dict[str, Any]:
        lease = self.lease
        return {"running": self.running, "version": f"{self.version[0]}.{self.version[1]}",
                "pending": [d.to_json() for d in self.destinations], "acked": list(self.acked_ids),
                "rejected": [list(r) for r in self.rejected], "lease_bytes": len(lease),
                "lease_crc": f"{zlib.crc32(lease):08x}", "reads": len(self.reads), "links": list(self.links)}

    # -- fault knobs --------------------------------------------------------------------------------
    def stall(self, uuid: str | None = None, *, seconds: float | None = None, count: int | None = 1) -> None:
        """The next ``count`` reads (of ``uuid``, or any) answer after ``seconds`` (None: never)."""
        self._faults.append(_Fault(uuid.lower() if uuid else None, count, "stall", seconds=seconds))

    def fail(self, uuid: str | None, code: int = ATT_UNLIKELY, *, count: int | None = None,
             on: str = "both") -> None:
        """Reads/writes (``on``) of ``uuid`` (None: any) answer with ATT error ``code``."""
        self._faults.append(_Fault(uuid.lower() if uuid else None, count, "att", code=code, on=on))

    def change_mid_read(self, uuid: str = DESTINATIONS_UUID, *, after: int = 1,
                        change: Callable[[], None] | None = None) -> None:
        """After the ``after``-th chunk read of ``uuid`` (from now), the document changes (by
        default: a new destination, or a lease with a different last byte)."""
        u = uuid.lower()
        self._mid_read.append((u, self._reads_of(u) + after, change or self._default_change(u)))

    def drop_link_after(self, chunk_reads: int) -> None:
        """The phone walks away: after ``chunk_reads`` more document reads the next one drops the link."""
        self._drop_after = self._chunk_reads + chunk_reads

    def clear_faults(self) -> None:
        self._faults.clear()
        self._mid_read.clear()
        self._drop_after = None

    # -- internals ----------------------------------------------------------------------------------
    def _size(self) -> int:
        size = chunk_size(self._mtu)
        return min(size, self.max_chunk) if self.max_chunk else size

    def _fault(self, uuid: str, op: str) -> _Fault | None:
        for f in self._faults:
            if f.matches(uuid, op):
                f.take()
                if f.kind == "att":
                    raise AttError(f.code)
                return f
        return None

    def _reads_of(self, uuid: str) -> int:
        return sum(1 for r in self.reads if r.uuid == uuid)

    def _value(self, link: int, uuid: str) -> bytes:
        if uuid == VERSION_UUID:
            self.reads.append(ReadLog(link, uuid, -1))
            return bytes(self.version)
        if uuid not in DOCUMENTS:
            raise AttError(ATT_READ_NOT_PERMITTED)
        doc = self.document(uuid)
        size = self._size()
        data = frame(doc, size, self._selected.get((link, uuid), 0))
        _fmt, index, count, crc, _payload = parse_frame(data)
        self.reads.append(ReadLog(link, uuid, index, count, crc))
        n = self._reads_of(uuid)
        for item in [m for m in self._mid_read if m[0] == uuid and m[1] <= n]:
            self._mid_read.remove(item)
            item[2]()
        return data

    def _default_change(self, uuid: str) -> Callable[[], None]:
        def change() -> None:
            if uuid.lower() == LEASE_UUID:
                self.set_lease(self.lease[:-1] + (b"A" if self.lease[-1:] != b"A" else b"B"))
            else:
                self.add_destination("Changed under the car", lat=48.8584, lon=2.2945)
        return change

    async def _stalled(self, seconds: float | None, value: bytes) -> bytes:
        if seconds is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(seconds)
        return value

    def _ack(self, value: bytes) -> None:
        self.ack_writes.append(value)
        if len(value) > MAX_ACK:
            raise AttError(ATT_INVALID_ATTRIBUTE_VALUE_LEN)
        try:
            doc = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise AttError(ATT_UNLIKELY) from None
        if not isinstance(doc, dict):
            raise AttError(ATT_UNLIKELY)
        ids: list[str] = []
        for item in doc.get("ack") or []:
            if isinstance(item, str):
                ids.append(item)
                self.acked_ids.append(item)
        for item in doc.get("rejected") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ids.append(item["id"])
                self.rejected.append((item["id"], str(item.get("reason", ""))))
        self.destinations = [d for d in self.destinations if d.id not in set(ids)]
        self.notify_document(DESTINATIONS_UUID)  # §5: remove, then notify the new header
