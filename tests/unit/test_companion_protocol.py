"""The car's reading of docs/ble-companion.md, as data: frames, documents, acknowledgements."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from dashbridge.daemon.companion.protocol import (
    MAX_ACK_BYTES,
    DocumentChanged,
    ProtocolError,
    ack_writes,
    check_size,
    parse_destinations,
    parse_frame,
    whole,
)


def frames_of(doc: bytes, size: int = 503) -> list[bytes]:
    crc = zlib.crc32(doc)
    chunks = [doc[i:i + size] for i in range(0, len(doc), size)]
    return [struct.pack("<BHHI", 1, i, len(chunks), crc) + c for i, c in enumerate(chunks)]


def test_a_document_is_the_chunks_in_order_checked_by_crc() -> None:
    doc = bytes(range(256)) * 9  # 2,304 bytes: five chunks
    frames = [parse_frame(f) for f in frames_of(doc)]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4] and {f.count for f in frames} == {5}
    assert whole(frames, 32768) == doc
    with pytest.raises(DocumentChanged):
        whole([*frames[:1], parse_frame(frames_of(doc[::-1])[1]), *frames[2:]], 32768)
    with pytest.raises(ProtocolError, match="too large"):
        whole(frames, 2000)


def test_bad_frames_are_refused() -> None:
    empty = parse_frame(struct.pack("<BHHI", 1, 0, 0, 0))
    assert (empty.count, empty.payload) == (0, b"")
    for bad in (b"\x01\x00", struct.pack("<BHHI", 2, 0, 1, 0) + b"x", struct.pack("<BHHI", 1, 0, 0, 0) + b"x",
                struct.pack("<BHHI", 1, 0, 1, 0), struct.pack("<BHHI", 1, 0, 1, 0) + b"x" * 504):
        with pytest.raises(ProtocolError):
            parse_frame(bad)
    with pytest.raises(ProtocolError, match="too large"):
        check_size(parse_frame(struct.pack("<BHHI", 1, 0, 60000, 0) + b"x"), 32768)


def test_destinations_good_ones_taken_bad_ones_rejected_with_a_reason() -> None:
    doc = json.dumps({"destinations": [
        {"id": "a", "label": "Home", "lat": 51.5, "lon": -0.1, "created": "2026-12-05T08:30:00Z", "extra": 1},
        {"id": "b", "label": "Dentist", "address": "12 High St", "created": "2026-12-05T08:41:12Z"},
        {"id": "c", "label": "Nowhere", "lat": 91, "lon": 0, "created": "2026-12-05T08:41:12Z"},
        {"id": "d", "label": "x", "created": "2026-12-05T08:41:12Z"},
        {"id": "e", "label": "y" * 500, "lat": 1, "lon": 2, "created": "yesterday"},
        {"id": "bad id with spaces", "label": "z", "lat": 1, "lon": 2},
        {"id": "a", "label": "dup", "lat": 1, "lon": 2, "created": "2026-12-05T08:41:12Z"},
    ]}).encode()
    good, bad = parse_destinations(doc)
    assert [(d.id, d.label, d.lat, d.address) for d in good] == [("a", "Home", 51.5, ""), ("b", "Dentist", None, "12 High St")]
    assert dict(bad) == {"c": "lat out of range", "d": "neither coordinates nor an address",
                         "e": "created is not an RFC 3339 time"}
    assert parse_destinations(b"") == ([], [])
    for broken in (b"\xff", b"[]", b'{"destinations": 3}', b"[" * 100000):
        with pytest.raises(ProtocolError):
            parse_destinations(broken)


def test_acknowledgements_fit_512_bytes_each_and_lose_no_id() -> None:
    ids = [f"{i:064d}" for i in range(20)]
    writes = ack_writes(ids, [("r1", "lat out of range")])
    assert len(writes) > 1 and all(len(w) <= MAX_ACK_BYTES for w in writes)
    got = [json.loads(w) for w in writes]
    assert [i for g in got for i in g.get("ack", [])] == ids
    assert [r for g in got for r in g.get("rejected", [])] == [{"id": "r1", "reason": "lat out of range"}]
    assert ack_writes([], []) == []
