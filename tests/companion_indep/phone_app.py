"""An independent phone side of the dashbridge companion GATT service (protocol 1.0).

Written from ``docs/ble-companion.md`` ALONE, as a phone-app team would: the only other thing
read was the interface through which the simulator's fake BlueZ serves a phone's GATT service to
the car (the module docstring of ``simulator/companion.py`` and its ``GattApp``, ``AttError``,
``LinkLost`` and ATT error constants).  Neither the simulator's built-in ``CompanionApp`` nor the
car side (``daemon/companion/``) was read; nothing of theirs is imported or copied.  Constants
(UUIDs, sizes, limits) are re-typed here from the document on purpose.

What it serves (the sections are those of docs/ble-companion.md):

* §1 the service and its four characteristics; §2 the version ``01 00``;
* §3 chunk frames (``format``, ``index``, ``count``, ``crc``, ``payload``) of both documents, the
  chunk selected per link by 2-byte writes (a write of another length: ATT 0x0D), chunk 0 when
  nothing is selected on the link or the selected index is not below the current ``count``, the
  chunk size ``min(503, ATT_MTU - 1 - 9)`` of the link the read came over; a notification of the
  9-byte header of chunk 0 whenever a document changes;
* §4 the pending destinations document (oldest first, at most 50, under 32,768 bytes);
* §5 acknowledgements: every listed id (``ack`` and ``rejected``) is removed before the write is
  answered, unknown ids ignored, then the new header is notified;
* §6 the lease document: a JWS given to the app, served unchanged, or the empty document.

Choices the document leaves open (findings: the docstring of test_interop.py):

* The notified header's ``count`` depends on the chunk size, which §3 derives from a link's MTU,
  while a notification goes to every subscribed client: this app counts chunks for the MTU of
  the most recent link (``DEFAULT_MTU`` before any).
* Nothing pending is served as the empty document (``count`` 0) by default (``empty_list=True``:
  ``{"destinations": []}``); §4 allows both.
* A read with an ``offset`` (a long read of a frame longer than the MTU) is served from the same
  frame; an offset past its end is ATT 0x07 (*Invalid Offset*).  The document does not mention it.
* An acknowledgement that is longer than 512 bytes is ATT 0x0D; one that is not a JSON object is
  ATT 0x0E (*Unlikely Error*): §5 only says what the car sends, not how the phone answers
  malformed writes.
* The encrypted, bonded link §1 requires cannot be expressed through the fake's interface (it
  passes no link security to the app; characteristic flags as a GATT client sees them carry no
  permissions), so it is not enforced here.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid as uuid_mod
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dashbridge.simulator.companion import (
    ATT_INVALID_ATTRIBUTE_VALUE_LEN,
    ATT_INVALID_HANDLE,
    ATT_INVALID_OFFSET,
    ATT_READ_NOT_PERMITTED,
    ATT_UNLIKELY,
    ATT_WRITE_NOT_PERMITTED,
    AttError,
)

# §1 -- re-typed from the document's table
SERVICE = "d4420000-7d1c-4882-a633-a23288c78e12"
VERSION = "d4420001-7d1c-4882-a633-a23288c78e12"
DESTINATIONS = "d4420002-7d1c-4882-a633-a23288c78e12"
ACK = "d4420003-7d1c-4882-a633-a23288c78e12"
LEASE = "d4420004-7d1c-4882-a633-a23288c78e12"

# §3
FORMAT = 0x01
HEADER_LEN = 9
MAX_CHUNK = 503
DEFAULT_MTU = 23  # the minimum ATT MTU (§1); used for a notified header before any link was seen
# §3 limits the car applies; the phone keeps under them
MAX_DESTINATIONS_DOC = 32_768
MAX_LEASE_DOC = 16_384
# §4
MAX_LISTED = 50
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# §5
MAX_ACK_WRITE = 512

_HEADER = struct.Struct("<BHHI")


def chunk_len(mtu: int) -> int:
    """§3: ``n = min(503, ATT_MTU - 1 - 9)`` (at least 1)."""
    return max(1, min(MAX_CHUNK, mtu - 1 - HEADER_LEN))


def chunks(document: bytes, n: int) -> list[bytes]:
    """The document cut into payloads of ``n`` bytes (none for the empty document)."""
    return [document[i:i + n] for i in range(0, len(document), n)]


def crc32(document: bytes) -> int:
    return zlib.crc32(document) & 0xFFFFFFFF


def make_frame(document: bytes, n: int, index: int) -> bytes:
    """Chunk ``index`` of ``document`` cut in ``n``-byte chunks, as a §3 frame."""
    parts = chunks(document, n)
    if not parts:
        return _HEADER.pack(FORMAT, 0, 0, 0)
    return _HEADER.pack(FORMAT, index, len(parts), crc32(document)) + parts[index]


def make_header(document: bytes, n: int) -> bytes:
    """The 9-byte header of chunk 0 (what a notification carries, §3)."""
    return make_frame(document, n, 0)[:HEADER_LEN]


def split_frame(value: bytes) -> tuple[int, int, int, int, bytes]:
    """``(format, index, count, crc, payload)`` of a frame (for tests and the report)."""
    if len(value) < HEADER_LEN:
        raise ValueError(f"a frame is at least {HEADER_LEN} bytes, got {len(value)}")
    fmt, index, count, crc = _HEADER.unpack_from(value)
    return fmt, index, count, crc, bytes(value[HEADER_LEN:])


def rfc3339_utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class PickedDestination:
    """One destination the driver picked in the app (§4)."""

    id: str
    label: str
    created: str
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # raw fields (to serve malformed ones on purpose)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.label}
        if self.lat is not None and self.lon is not None:
            out["lat"] = self.lat
            out["lon"] = self.lon
        if self.address is not None:
            out["address"] = self.address
        out["created"] = self.created
        out.update(self.extra)
        return out


class IndependentCompanionApp:
    """The companion app on the driver's phone: a ``GattApp`` for the simulator's fake BlueZ."""

    service_uuid = SERVICE

    def __init__(self, *, version: tuple[int, int] = (1, 0), clock: Callable[[], float] = time.time,
                 empty_list: bool = False, fixed_chunk: int | None = None) -> None:
        if fixed_chunk is not None and not 1 <= fixed_chunk <= MAX_CHUNK:
            raise ValueError(f"a chunk is 1-{MAX_CHUNK} bytes")
        self.version = version
        # None: cut chunks to the link's MTU (§3 SHOULD); a number: always that size (the car
        # must then use long reads when a frame is longer than the MTU allows, §3)
        self.fixed_chunk = fixed_chunk
        self.clock = clock
        self.empty_list = empty_list
        self._notify: Callable[[str, bytes], None] | None = None
        self._pending: list[PickedDestination] = []
        self._ever: set[str] = set()  # every id this install used (never reused, §4)
        self._acked: list[str] = []
        self._rejected: dict[str, str] = {}
        self._lease = b""
        self._selected: dict[tuple[int, str], int] = {}  # (link, characteristic) -> selected index
        self._mtu: dict[int, int] = {}  # link -> the ATT MTU its reads came with
        self._last_mtu = DEFAULT_MTU
        self.links_up: list[int] = []
        self.reads: list[tuple[int, str, int, int]] = []  # (link, uuid, index served, count served)
        self.notified: list[tuple[str, bytes]] = []
        self.ack_writes: list[bytes] = []

    # -- GattApp (simulator/companion.py's interface) ------------------------------------------

    def characteristics(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(VERSION, ("read",)),
                (DESTINATIONS, ("read", "write", "notify")),
                (ACK, ("write",)),
                (LEASE, ("read", "write", "notify"))]

    def attach(self, notify: Callable[[str, bytes], None]) -> None:
        self._notify = notify

    def link_up(self, link: int) -> None:
        self.links_up.append(link)
        self._forget(link)  # a new connection starts at chunk 0 (§3)

    def link_down(self, link: int) -> None:
        self._forget(link)
        self._mtu.pop(link, None)

    def read(self, link: int, uuid: str, offset: int = 0, mtu: int = DEFAULT_MTU) -> bytes:
        uuid = uuid.lower()
        if uuid == VERSION:
            value = bytes(self.version)
        elif uuid in (DESTINATIONS, LEASE):
            self._mtu[link] = mtu
            self._last_mtu = mtu
            document = self.document(uuid)
            n = self._chunk_len(mtu)
            count = len(chunks(document, n))
            index = self._selected.get((link, uuid), 0)
            if index >= count:  # §3: not below the current count -> chunk 0
                index = 0
            value = make_frame(document, n, index)
            if offset == 0:
                self.reads.append((link, uuid, index, count))
        elif uuid == ACK:
            raise AttError(ATT_READ_NOT_PERMITTED, "the acknowledgement is write-only")
        else:
            raise AttError(ATT_INVALID_HANDLE, f"no characteristic {uuid}")
        if offset > len(value):
            raise AttError(ATT_INVALID_OFFSET, f"offset {offset} past {len(value)} bytes")
        return value[offset:]

    def write(self, link: int, uuid: str, value: bytes) -> None:
        uuid = uuid.lower()
        value = bytes(value)
        if uuid in (DESTINATIONS, LEASE):
            if len(value) != 2:
                raise AttError(ATT_INVALID_ATTRIBUTE_VALUE_LEN, f"a chunk selection is 2 bytes, got {len(value)}")
            self._selected[(link, uuid)] = struct.unpack("<H", value)[0]
        elif uuid == ACK:
            self._acknowledge(value)
        elif uuid == VERSION:
            raise AttError(ATT_WRITE_NOT_PERMITTED, "the version is read-only")
        else:
            raise AttError(ATT_INVALID_HANDLE, f"no characteristic {uuid}")

    # -- what the driver (and a test) does in the app --------------------------------------------

    def add_destination(self, label: str, *, lat: float | None = None, lon: float | None = None,
                        address: str | None = None, id: str | None = None,
                        extra: dict[str, Any] | None = None) -> str:
        """The driver picks a destination ("send to car"); returns its id.  ``extra``: raw JSON
        fields added as they are (a test serving malformed fields on purpose)."""
        if id is None:
            id = str(uuid_mod.uuid4())
        if extra is None:
            if not _ID.fullmatch(id):
                raise ValueError(f"id {id!r}: 1-64 characters from A-Z a-z 0-9 . _ : -")
            if not 1 <= len(label) <= 200:
                raise ValueError("label: 1-200 characters")
            if (lat is None) != (lon is None):
                raise ValueError("lat and lon: both or neither")
            if lat is not None and not -90 <= lat <= 90:
                raise ValueError("lat out of [-90, 90]")
            if lon is not None and not -180 <= lon <= 180:
                raise ValueError("lon out of [-180, 180]")
            if address is not None and not 1 <= len(address) <= 300:
                raise ValueError("address: 1-300 characters")
            if lat is None and address is None:
                raise ValueError("a destination has coordinates, an address, or both")
        if id in self._ever:
            raise ValueError(f"id {id!r} was already used (ids are never reused)")
        self._ever.add(id)
        self._pending.append(PickedDestination(id=id, label=label, created=rfc3339_utc(self.clock()),
                                               lat=lat, lon=lon, address=address, extra=dict(extra or {})))
        self._changed(DESTINATIONS)
        return id

    def set_lease(self, lease: str | bytes) -> None:
        """The lease fetched from the backend for this car (a JWS), or ``""``: no lease."""
        data = lease.encode("ascii") if isinstance(lease, str) else bytes(lease)
        if len(data) > MAX_LEASE_DOC:
            raise ValueError(f"a lease document is at most {MAX_LEASE_DOC} bytes")
        if data != self._lease:
            self._lease = data
            self._changed(LEASE)

    def pending_ids(self) -> list[str]:
        return [d.id for d in self._pending]

    def acknowledged_ids(self) -> list[str]:
        return list(self._acked)

    def rejected_ids(self) -> dict[str, str]:
        """``{id: reason}`` of the ids the car rejected."""
        return dict(self._rejected)

    # -- documents ---------------------------------------------------------------------------

    def document(self, uuid: str) -> bytes:
        if uuid == LEASE:
            return self._lease
        listed: list[dict[str, Any]] = []
        body = b""
        for d in self._pending[:MAX_LISTED]:  # oldest first, at most 50
            trial = _encode({"destinations": [*listed, d.as_json()]})
            if len(trial) > MAX_DESTINATIONS_DOC:
                break  # the rest waits until the car acknowledged these
            listed.append(d.as_json())
            body = trial
        if not listed:
            return _encode({"destinations": []}) if self.empty_list else b""
        return body

    def header(self, uuid: str, mtu: int | None = None) -> bytes:
        return make_header(self.document(uuid), self._chunk_len(mtu or self._last_mtu))

    def _chunk_len(self, mtu: int) -> int:
        return self.fixed_chunk if self.fixed_chunk is not None else chunk_len(mtu)

    # -- internals -----------------------------------------------------------------------------

    def _forget(self, link: int) -> None:
        for key in [k for k in self._selected if k[0] == link]:
            del self._selected[key]

    def _changed(self, uuid: str) -> None:
        value = self.header(uuid)
        self.notified.append((uuid, value))
        if self._notify is not None:
            self._notify(uuid, value)

    def _acknowledge(self, value: bytes) -> None:
        if len(value) > MAX_ACK_WRITE:
            raise AttError(ATT_INVALID_ATTRIBUTE_VALUE_LEN, f"an acknowledgement is at most {MAX_ACK_WRITE} bytes")
        try:
            body = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise AttError(ATT_UNLIKELY, "the acknowledgement is not UTF-8 JSON") from None
        if not isinstance(body, dict):
            raise AttError(ATT_UNLIKELY, "the acknowledgement is not a JSON object")
        self.ack_writes.append(value)
        acked = [i for i in body.get("ack") or [] if isinstance(i, str)]
        rejected: dict[str, str] = {}
        for r in body.get("rejected") or []:
            if isinstance(r, dict) and isinstance(r.get("id"), str):
                rejected[r["id"]] = str(r.get("reason", ""))
        known = set(self.pending_ids())
        for i in acked:
            if i in known and i not in self._acked:
                self._acked.append(i)
        for i, reason in rejected.items():
            if i in known:
                self._rejected[i] = reason
        gone = set(acked) | set(rejected)
        self._pending = [d for d in self._pending if d.id not in gone]
        # Removed before the write is answered (this method returns); then the new header (§5).
        self._changed(DESTINATIONS)


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
