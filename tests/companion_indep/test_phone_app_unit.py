"""Unit tests of the independent phone app (tests/companion_indep/phone_app.py) against
docs/ble-companion.md, without any bus: the app's GattApp methods are called as the fake BlueZ
would call them.  Expected values are computed here from the document (zlib's CRC-32, the §3
layout written out with struct), not taken from the app."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from dashbridge.simulator.companion import AttError, GattApp

from .phone_app import ACK, DESTINATIONS, LEASE, SERVICE, VERSION, IndependentCompanionApp

T0 = 1_796_459_400.0  # 2026-12-05T08:30:00Z


def app_at(**kw: object) -> IndependentCompanionApp:
    return IndependentCompanionApp(clock=lambda: T0, **kw)  # type: ignore[arg-type]


def frame_fields(value: bytes) -> tuple[int, int, int, int, bytes]:
    fmt, index, count, crc = struct.unpack("<BHHI", value[:9])
    return fmt, index, count, crc, value[9:]


def read_document(app: IndependentCompanionApp, uuid: str, link: int = 1, mtu: int = 517) -> bytes:
    """The car's read as §3 describes it."""
    fmt, index, count, crc, payload = frame_fields(app.read(link, uuid, 0, mtu))
    assert (fmt, index) == (1, 0)
    parts = [payload]
    for i in range(1, count):
        app.write(link, uuid, struct.pack("<H", i))
        f2, i2, c2, crc2, p2 = frame_fields(app.read(link, uuid, 0, mtu))
        assert (f2, i2, c2, crc2) == (1, i, count, crc)
        parts.append(p2)
    doc = b"".join(parts)
    assert zlib.crc32(doc) == crc
    return doc


class Notes:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def __call__(self, uuid: str, value: bytes) -> None:
        self.got.append((uuid, bytes(value)))


def test_service_characteristics_and_version() -> None:
    app = app_at()
    assert isinstance(app, GattApp)
    assert app.service_uuid == SERVICE == "d4420000-7d1c-4882-a633-a23288c78e12"
    chars = dict(app.characteristics())
    assert list(chars) == [VERSION, DESTINATIONS, ACK, LEASE]
    assert set(chars[VERSION]) == {"read"}
    assert set(chars[DESTINATIONS]) == set(chars[LEASE]) == {"read", "write", "notify"}
    assert set(chars[ACK]) == {"write"}, "writes are requests, never commands (§1)"
    assert app.read(1, VERSION, 0, 517) == b"\x01\x00"
    with pytest.raises(AttError):
        app.read(1, ACK, 0, 517)


def test_empty_documents_are_count_zero_crc_zero_no_payload() -> None:
    app = app_at()
    for uuid in (DESTINATIONS, LEASE):
        assert app.read(1, uuid, 0, 517) == b"\x01" + b"\x00" * 8
    listed = app_at(empty_list=True)
    assert json.loads(read_document(listed, DESTINATIONS)) == {"destinations": []}


def test_destinations_document_fields_oldest_first() -> None:
    app = app_at()
    a = app.add_destination("Grandma's", lat=51.50135, lon=-0.14189)
    b = app.add_destination("Dentist", address="12 High Street, Bath BA1 1AA", id="b2")
    assert b == "b2" and app.pending_ids() == [a, "b2"]
    doc = json.loads(read_document(app, DESTINATIONS).decode("utf-8"))
    assert doc == {"destinations": [
        {"id": a, "label": "Grandma's", "lat": 51.50135, "lon": -0.14189, "created": "2026-12-05T08:30:00Z"},
        {"id": "b2", "label": "Dentist", "address": "12 High Street, Bath BA1 1AA",
         "created": "2026-12-05T08:30:00Z"}]}
    assert 1 <= len(a) <= 64


@pytest.mark.parametrize("kw", [
    {"label": "x", "lat": 1.0},  # lat without lon
    {"label": "x", "lat": 91.0, "lon": 0.0},
    {"label": "x", "lat": 0.0, "lon": -180.5},
    {"label": "", "lat": 0.0, "lon": 0.0},
    {"label": "x"},  # neither coordinates nor address
    {"label": "x", "address": "a", "id": "bad id"},
    {"label": "x", "address": "a", "id": "x" * 65},
])
def test_bad_destinations_are_refused_in_the_app(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        app_at().add_destination(**kw)  # type: ignore[arg-type]


def test_ids_are_never_reused() -> None:
    app = app_at()
    app.add_destination("A", address="a", id="same")
    app.write(1, ACK, json.dumps({"ack": ["same"]}).encode())
    with pytest.raises(ValueError, match="never reused"):
        app.add_destination("B", address="b", id="same")


def test_chunking_follows_the_mtu_and_the_crc_covers_the_whole_document() -> None:
    app = app_at()
    for i in range(12):
        app.add_destination(f"Place number {i} with a longish label", lat=50 + i / 100, lon=-1.0,
                            address=f"{i} Long Road, Somewhere Quite Far Away", id=f"d{i}")
    doc = app.document(DESTINATIONS)
    assert len(doc) > 1100
    for mtu, n in ((23, 13), (100, 90), (247, 237), (517, 503), (1024, 503)):
        fmt, index, count, crc, payload = frame_fields(app.read(7, DESTINATIONS, 0, mtu))
        assert (fmt, index, len(payload)) == (1, 0, n), mtu
        assert count == -(-len(doc) // n) and crc == zlib.crc32(doc)
        assert len(app.read(7, DESTINATIONS, 0, mtu)) <= mtu - 1, "a frame fits one ATT read"
        assert read_document(app, DESTINATIONS, link=mtu, mtu=mtu) == doc
    # the last chunk carries the rest
    count = -(-len(doc) // 90)
    app.write(3, DESTINATIONS, struct.pack("<H", count - 1))
    *_, last = frame_fields(app.read(3, DESTINATIONS, 0, 100))
    assert last == doc[(count - 1) * 90:] and 1 <= len(last) <= 90


def test_selection_is_per_link_and_starts_at_zero_on_a_new_link() -> None:
    app = app_at()
    app.set_lease("h." + "p" * 600 + ".s")
    app.write(1, LEASE, b"\x01\x00")
    assert frame_fields(app.read(1, LEASE, 0, 517))[1] == 1
    assert frame_fields(app.read(2, LEASE, 0, 517))[1] == 0, "another car's link has selected nothing"
    assert frame_fields(app.read(1, DESTINATIONS, 0, 517))[1] == 0, "per characteristic too"
    app.link_down(1)
    app.link_up(3)
    assert frame_fields(app.read(3, LEASE, 0, 517))[1] == 0
    app.link_up(1)  # even a reused link id starts again
    assert frame_fields(app.read(1, LEASE, 0, 517))[1] == 0


def test_index_out_of_range_answers_chunk_zero_of_the_current_document() -> None:
    app = app_at()
    app.set_lease("a" * 1200)
    app.write(1, LEASE, struct.pack("<H", 2))
    assert frame_fields(app.read(1, LEASE, 0, 517))[1:3] == (2, 3)
    app.set_lease("b" * 700)  # now 2 chunks: index 2 is out of range
    fmt, index, count, crc, payload = frame_fields(app.read(1, LEASE, 0, 517))
    assert (fmt, index, count, crc) == (1, 0, 2, zlib.crc32(b"b" * 700)) and payload == b"b" * 503
    app.write(1, LEASE, b"\xff\xff")
    assert frame_fields(app.read(1, LEASE, 0, 517))[1] == 0
    app.set_lease("")
    app.write(1, LEASE, b"\x00\x00")
    assert app.read(1, LEASE, 0, 517) == b"\x01" + b"\x00" * 8


@pytest.mark.parametrize("uuid", [DESTINATIONS, LEASE])
@pytest.mark.parametrize("value", [b"", b"\x01", b"\x01\x00\x00", b"\x00" * 8])
def test_a_selection_that_is_not_two_bytes_is_invalid_attribute_value_length(uuid: str, value: bytes) -> None:
    app = app_at()
    with pytest.raises(AttError) as exc:
        app.write(1, uuid, value)
    assert exc.value.code == 0x0D


def test_a_change_notifies_the_nine_byte_header_of_chunk_zero() -> None:
    app = app_at()
    notes = Notes()
    app.attach(notes)
    app.read(1, LEASE, 0, 517)  # a link with MTU 517 was seen
    jws = "eyJhbGciOiJFZERTQSJ9." + "x" * 900 + ".sig"
    app.set_lease(jws)
    assert notes.got == [(LEASE, struct.pack("<BHHI", 1, 0, 2, zlib.crc32(jws.encode())))]
    app.set_lease(jws)  # unchanged: nothing to say
    assert len(notes.got) == 1
    d = app.add_destination("Home", lat=1.0, lon=2.0, id="h1")
    uuid, value = notes.got[-1]
    doc = app.document(DESTINATIONS)
    assert uuid == DESTINATIONS and len(value) == 9 and len(value) <= 20, "fits the minimum MTU"
    assert value == struct.pack("<BHHI", 1, 0, 1, zlib.crc32(doc))
    assert d == "h1"
    app.set_lease(b"")
    assert notes.got[-1] == (LEASE, b"\x01" + b"\x00" * 8)


def test_acks_and_rejections_remove_ids_before_the_answer_then_notify() -> None:
    app = app_at()
    notes = Notes()
    app.attach(notes)
    for i in ("a1", "a2", "a3", "a4"):
        app.add_destination(i.upper(), address=f"street {i}", id=i)
    app.read(1, DESTINATIONS, 0, 517)  # the car's link (MTU 517): one chunk
    seen: list[list[str]] = []
    orig = notes.__call__

    def on_notify(uuid: str, value: bytes) -> None:
        seen.append(app.pending_ids())  # already removed when the header goes out
        orig(uuid, value)

    app.attach(on_notify)
    ack = {"ack": ["a1", "zz-unknown"], "rejected": [{"id": "a3", "reason": "lat out of range"}]}
    assert app.write(1, ACK, json.dumps(ack).encode()) is None
    assert app.pending_ids() == ["a2", "a4"]
    assert seen == [["a2", "a4"]]
    assert notes.got[-1] == (DESTINATIONS, struct.pack("<BHHI", 1, 0, 1, zlib.crc32(app.document(DESTINATIONS))))
    assert app.acknowledged_ids() == ["a1"] and app.rejected_ids() == {"a3": "lat out of range"}
    # The same write again (a repeated ack) changes nothing; either key may be missing.
    app.write(2, ACK, json.dumps(ack).encode())
    app.write(2, ACK, b'{"rejected": []}')
    assert app.pending_ids() == ["a2", "a4"] and app.acknowledged_ids() == ["a1"]
    app.write(2, ACK, b'{"ack": ["a2", "a4"]}')
    assert app.pending_ids() == [] and app.acknowledged_ids() == ["a1", "a2", "a4"]
    assert notes.got[-1] == (DESTINATIONS, b"\x01" + b"\x00" * 8), "nothing pending: the empty document"
    assert json.loads(read_document(app, DESTINATIONS, link=9) or b'{"destinations": []}') == {"destinations": []}


def test_unacknowledged_ids_stay_listed_across_links() -> None:
    app = app_at()
    app.add_destination("A", address="a", id="keep")
    read_document(app, DESTINATIONS, link=1)
    app.link_down(1)  # the link went before any ack
    app.link_up(2)
    assert json.loads(read_document(app, DESTINATIONS, link=2))["destinations"][0]["id"] == "keep"


def test_malformed_acks_are_att_errors() -> None:
    app = app_at()
    app.add_destination("A", address="a", id="a")
    for value in (b"not json", b"[1, 2]", b"\xff\xfe", json.dumps({"ack": ["a" * 600]}).encode()):
        with pytest.raises(AttError):
            app.write(1, ACK, value)
    assert app.pending_ids() == ["a"]


def test_at_most_fifty_listed_and_under_the_size_limit() -> None:
    app = app_at()
    ids = [app.add_destination(f"Place {i}", address="A" * 280, id=f"p{i:03d}") for i in range(120)]
    doc = app.document(DESTINATIONS)
    listed = [d["id"] for d in json.loads(doc)["destinations"]]
    assert listed == ids[:len(listed)] and 0 < len(listed) <= 50, "the oldest first"
    assert len(doc) <= 32_768
    assert read_document(app, DESTINATIONS, mtu=517) == doc


def test_long_read_offsets() -> None:
    app = app_at()
    app.set_lease("z" * 300)
    whole = app.read(1, LEASE, 0, 517)
    assert app.read(1, LEASE, 100, 517) == whole[100:]
    with pytest.raises(AttError) as exc:
        app.read(1, LEASE, len(whole) + 1, 517)
    assert exc.value.code == 0x07
