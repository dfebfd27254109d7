"""The companion GATT protocol, car side, as data (docs/ble-companion.md): UUIDs, chunk frames,
the destinations document, acknowledgements.  Pure: no I/O, no bus, no bleak."""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeGuard

from dashbridge.profiles.limits import clip

_BASE = "-7d1c-4882-a633-a23288c78e12"
SERVICE_UUID: Final = "d4420000" + _BASE
VERSION_UUID: Final = "d4420001" + _BASE
DESTINATIONS_UUID: Final = "d4420002" + _BASE
ACK_UUID: Final = "d4420003" + _BASE
LEASE_UUID: Final = "d4420004" + _BASE

MAJOR: Final = 1  # the major version this car speaks (§2)
FORMAT: Final = 1
HEADER: Final = struct.Struct("<BHHI")  # format, index, count, crc (§3)
MAX_PAYLOAD: Final = 503
MAX_DESTINATIONS_BYTES: Final = 32_768
MAX_LEASE_BYTES: Final = 16_384
MAX_DESTINATIONS: Final = 50
MAX_ACK_BYTES: Final = 512
MAX_REASON: Final = 100
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")


class ProtocolError(Exception):
    """What the phone served does not follow docs/ble-companion.md (the message says how)."""


@dataclass(frozen=True)
class Frame:
    index: int
    count: int
    crc: int
    payload: bytes


def parse_frame(value: bytes, *, header_only: bool = False) -> Frame:
    """One chunk frame (§3), or a notification's 9-byte header (``header_only``)."""
    if len(value) < HEADER.size:
        raise ProtocolError(f"a frame of {len(value)} bytes is shorter than its header")
    fmt, index, count, crc = HEADER.unpack_from(value)
    if fmt != FORMAT:
        raise ProtocolError(f"frame format {fmt} is not {FORMAT}")
    payload = bytes(value[HEADER.size:])
    if not header_only:
        if count == 0 and payload:
            raise ProtocolError("an empty document's frame carries a payload")
        if count > 0 and not 1 <= len(payload) <= MAX_PAYLOAD:
            raise ProtocolError(f"a chunk of {len(payload)} bytes (1 to {MAX_PAYLOAD})")
    return Frame(index, count, crc, payload)


def check_size(frame: Frame, limit: int) -> None:
    """Refuse a document whose chunk count alone says it is over ``limit`` bytes (every chunk
    carries a byte at least), before reading any further chunk."""
    if frame.count > limit:
        raise ProtocolError(f"document too large ({frame.count} chunks, at most {limit} bytes)")


def select(index: int) -> bytes:
    """The write that selects chunk ``index`` (§3)."""
    return struct.pack("<H", index)


def whole(frames: list[Frame], limit: int) -> bytes:
    """The document from its chunks (in order), checked against the CRC and ``limit``."""
    doc = b"".join(f.payload for f in frames)
    if len(doc) > limit:
        raise ProtocolError(f"document too large ({len(doc)} bytes, at most {limit})")
    crc = frames[0].crc if frames else 0
    if (zlib.crc32(doc) & 0xFFFFFFFF) != crc:
        raise DocumentChanged("the document's CRC-32 does not match")
    return doc


class DocumentChanged(ProtocolError):
    """The document changed while it was read (read it again from chunk 0)."""


@dataclass(frozen=True)
class CompanionDestination:
    id: str
    label: str
    lat: float | None
    lon: float | None
    address: str
    created: str


def parse_destinations(doc: bytes) -> tuple[list[CompanionDestination], list[tuple[str, str]]]:
    """(usable destinations, [(id, reason)] to reject) from the document (§4).  A document that is
    not the right shape as a whole raises :class:`ProtocolError`."""
    if not doc:
        return [], []
    try:
        data = json.loads(doc.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("the destinations document is not UTF-8 JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("destinations"), list):
        raise ProtocolError("the destinations document has no 'destinations' array")
    good: list[CompanionDestination] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in data["destinations"][:MAX_DESTINATIONS]:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not _ID.match(raw["id"]):
            continue  # no id we could acknowledge: nothing to reject either
        did = raw["id"]
        if did in seen:
            continue
        seen.add(did)
        try:
            good.append(_destination(did, raw))
        except ValueError as exc:
            bad.append((did, clip(str(exc), MAX_REASON)))
    return good, bad


def _destination(did: str, raw: dict[str, Any]) -> CompanionDestination:
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError("label missing")
    rlat, rlon = raw.get("lat"), raw.get("lon")
    if (rlat is None) != (rlon is None):
        raise ValueError("lat and lon: both or neither")
    lat = lon = None
    if rlat is not None:
        if not _number(rlat) or not _number(rlon):
            raise ValueError("lat/lon are not numbers")
        lat, lon = float(rlat), float(rlon)
        if not -90.0 <= lat <= 90.0:
            raise ValueError("lat out of range")
        if not -180.0 <= lon <= 180.0:
            raise ValueError("lon out of range")
    address = raw.get("address", "")
    if not isinstance(address, str) or len(address) > 300:
        raise ValueError("address is not text of at most 300 characters")
    if lat is None and not address.strip():
        raise ValueError("neither coordinates nor an address")
    created = raw.get("created", "")
    if not isinstance(created, str) or not _rfc3339(created):
        raise ValueError("created is not an RFC 3339 time")
    return CompanionDestination(did, clip(label.strip(), 200), lat, lon, address.strip(), created)


def _number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rfc3339(text: str) -> bool:
    if len(text) > 40:
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def ack_writes(acked: list[str], rejected: list[tuple[str, str]]) -> list[bytes]:
    """The acknowledgement writes (§5), each at most 512 bytes of JSON."""
    items: list[tuple[str, Any]] = [("ack", i) for i in acked] + \
        [("rejected", {"id": i, "reason": r}) for i, r in rejected]
    out: list[bytes] = []
    cur: dict[str, list[Any]] = {}
    for key, item in items:
        trial = {**cur, key: [*cur.get(key, []), item]}
        if len(_dump(trial)) > MAX_ACK_BYTES and cur:
            out.append(_dump(cur))
            trial = {key: [item]}
        cur = trial
    if cur:
        out.append(_dump(cur))
    return out


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
