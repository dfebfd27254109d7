"""Contacts sync under faults, against the fake obexd on real private buses: the phone's permission
prompt, a transfer failing part-way, obexd restarting or missing, a phone that goes silent, a slow
phone with a big phonebook, a 50 MB photo, lying charsets, 20,000 contacts."""

from __future__ import annotations

import base64
from pathlib import Path

from dashbridge.simulator import obex_pbap
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .pbap_helpers import PHONE, pbap_world


def _phone(**kw: object) -> VirtualPhone:
    defaults: dict[str, object] = {"generated_contacts": 120, "pbap_history": 5}
    defaults.update(kw)
    return VirtualPhone(PHONE, name="Test phone", **defaults)  # type: ignore[arg-type]


async def test_permission_pending_tells_the_driver_then_syncs_once_granted(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone(pbap_permission="pending")]) as w:
        mark = w.mark()
        w.connect()
        pending = await w.wait_state("permission-pending", after=mark)
        assert pending["Message"] == "Allow contacts access on your phone"
        # It keeps asking (with backoff) while the prompt is open, without pulling anything.
        await w.wait_state("connecting", after=w.states.index(pending) + 1)
        await w.wait_state("permission-pending", after=w.states.index(pending) + 1)
        assert w.db("SELECT COUNT(*) FROM contacts") == [(0,)]
        assert w.transfers_started == 0
        # The driver taps "Allow".
        assert w.obexd is not None
        obex_pbap.set_permission(w.obexd, PHONE, "granted")
        done = await w.wait_state("synced", after=mark, timeout=10)
        assert done["Contacts"] == 120 and done["Message"] == ""
        assert w.obex_files() == []


async def test_transfer_error_part_way_keeps_the_old_snapshot_and_retries(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone()], page_size=50) as w:
        await w.connect_synced()
        before = w.db("SELECT name FROM contacts WHERE book='pb' ORDER BY pos")
        assert len(before) == 120
        assert w.obexd is not None
        obex_pbap.change_phonebook(w.obexd, PHONE, added=30)
        w.disconnect()
        # The second page of the new pull breaks part-way, after the first page was staged.
        w.obexd.control.fail_next_transfer(PHONE, after_bytes=2000, skip=1)
        mark = w.mark()
        w.connect()
        retrying = await w.wait_state("retrying", after=mark)
        assert "transfer" in retrying["Message"]
        assert w.transfers_started == 7 + 2  # the first sync, then a good page and the broken one
        # At the moment of failure the dashboard still sees the old phonebook, whole.
        assert w.db("SELECT name FROM contacts WHERE book='pb' ORDER BY pos") == before
        assert w.db("SELECT COUNT(*) FROM contacts WHERE book LIKE '%staging'") == [(0,)]
        found = await w.api("Search", "su", [before[5][0].split()[0], 500])
        assert found
        # ... and the retry brings the new one, exactly once each.
        done = await w.wait_state("synced", after=mark, timeout=15)
        assert done["Contacts"] == 150
        assert w.db("SELECT COUNT(*) FROM contacts WHERE book='pb'") == [(150,)]
        assert w.obex_files() == []


async def test_obexd_restart_mid_sync_keeps_old_data_and_resumes_when_back(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    phone = _phone(pbap_photo_every=1, pbap_photo_bytes=2048)
    async with pbap_world(system_bus, session_bus, tmp_path, [phone], page_size=40) as w:
        await w.connect_synced()
        assert w.obexd is not None
        obex_pbap.change_phonebook(w.obexd, PHONE, renamed=3)
        w.disconnect()
        w.obexd.control.set_rate(PHONE, 100_000)  # ~3 s for the phonebook: time to pull the plug
        mark = w.mark()
        w.connect()
        await w.wait_state("syncing", after=mark, pred=lambda s: s["Done"] >= 40)
        await w.obexd.crash()
        waiting = await w.wait_state("waiting", after=mark)
        assert "obexd" in waiting["Message"]
        assert w.db("SELECT COUNT(*) FROM contacts WHERE book='pb'") == [(120,)]
        assert w.db("SELECT COUNT(*) FROM contacts WHERE book LIKE '%staging'") == [(0,)]
        w.obexd.control.set_rate(PHONE, 0)
        await w.obexd.resume()
        done = await w.wait_state("synced", after=mark, timeout=15)
        assert done["Contacts"] == 120
        renamed = w.db("SELECT COUNT(*) FROM contacts WHERE name LIKE '%(renamed%'")
        assert renamed[0][0] >= 1


async def test_obexd_missing_at_start_then_started(system_bus: PrivateBus, session_bus: PrivateBus,
                                                   tmp_path: Path) -> None:
    from .pbap_helpers import PbapWorld

    w = PbapWorld(system_bus, session_bus, tmp_path, [_phone()], {})
    try:
        await w.start(obexd=False)
        assert w.health.get("contacts") is not None and w.health.get("contacts").state == "degraded"  # type: ignore[union-attr]
        mark = w.mark()
        w.connect()
        await w.wait_state("waiting", after=mark)
        from dashbridge.simulator.obex import FakeObexd

        w.obexd = await FakeObexd.start(session_bus.address, list(w.phones.values()), tmpdir=w.obex_tmp)
        await w.wait_state("synced", after=mark, timeout=15)
        assert w.health.get("contacts").state == "ok"  # type: ignore[union-attr]
    finally:
        await w.stop()


async def test_a_phone_that_goes_silent_is_abandoned_after_the_stall_timeout_and_retried(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone()], stall_timeout=0.5) as w:
        assert w.obexd is not None
        w.obexd.control.stall_next_transfer(PHONE, after_bytes=3000)
        mark = w.mark()
        w.connect()
        retrying = await w.wait_state("retrying", after=mark, timeout=10)
        assert "no progress" in retrying["Message"]
        done = await w.wait_state("synced", after=mark, timeout=15)
        assert done["Contacts"] == 120
        assert w.obex_files() == []


async def test_slow_phone_with_1500_contacts_and_photos_finishes_on_progress(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    # Each 500-contact page takes ~1.3 s at 2.5 MB/s, far longer than the 0.6 s stall timeout:
    # a fixed per-request timeout would fail; progress keeps the transfer alive.
    phone = _phone(generated_contacts=1500, pbap_photo_every=1, pbap_photo_bytes=4096, pbap_rate=2_500_000)
    async with pbap_world(system_bus, session_bus, tmp_path, [phone], stall_timeout=0.6, page_size=500) as w:
        mark = w.mark()
        w.connect()
        done = await w.wait_state("synced", after=mark, timeout=40)
        assert done["Contacts"] == 1500
        assert w.db("SELECT COUNT(*) FROM contact_photos") == [(1500 + 5,)]  # pb + fav copies
        progress = [s["Done"] for s in w.states[mark:] if s["State"] == "syncing" and s["Book"] == "pb"]
        assert len(progress) >= 3 and progress == sorted(progress)


async def test_a_50mb_photo_is_dropped_and_lying_charsets_are_survived(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    line = base64.b64encode(bytes(54))  # 72 characters of an all-zero 50 MB JPEG body
    folded = b"/9j/" + (b"\r\n " + line) * (50 * 1024 * 1024 // 54)
    vcf = b"".join([
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Big;Photo;;;\r\nFN:Big Photo\r\nTEL;TYPE=CELL:+447700900001\r\n"
        b"PHOTO;ENCODING=b;TYPE=JPEG:" + folded + b"\r\nEND:VCARD\r\n",
        b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=BOGUS-8:Bogus;Charset\r\nTEL:+447700900002\r\nEND:VCARD\r\n",
        b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=UTF-8:M\xfcller;J\xfcrgen\r\nTEL:+447700900003\r\nEND:VCARD\r\n",
        b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=Shift_JIS:" + "山田;太郎".encode("shift_jis")
        + b"\r\nTEL:+447700900004\r\nEND:VCARD\r\n",
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Broken\r\nTEL:+447700900099\r\n",  # no END: skipped
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:After The Break\r\nTEL:+447700900005\r\nEND:VCARD\r\n",
    ])
    path = tmp_path / "phone.vcf"
    path.write_bytes(vcf)
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone(contacts_vcf=str(path))],
                          photo_max_bytes=256 * 1024) as w:
        done = await w.connect_synced(timeout=60)
        assert done["Contacts"] == 5
        names = {r[0] for r in w.db("SELECT name FROM contacts WHERE book='pb'")}
        assert names == {"Big Photo", "Charset Bogus", "Jürgen Müller", "太郎 山田", "After The Break"}
        assert w.db("SELECT COUNT(*) FROM contact_photos") == [(0,)]
        (_, cid) = await w.api("Lookup", "s", ["07700 900001"])
        assert "Photo" not in await w.api("GetContact", "t", [cid])


async def test_20000_contacts(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone(generated_contacts=20_000, pbap_history=50)],
                          page_size=1000) as w:
        done = await w.connect_synced(timeout=60)
        assert done["Contacts"] == 20_000
        assert w.db("SELECT COUNT(DISTINCT pos) FROM contacts WHERE book='pb'") == [(20_000,)]
        book = obex_pbap.book_for(w.phones[PHONE])
        last = book.contacts[-1]
        name, _ = await w.api("Lookup", "s", [last.numbers[0][0]])
        assert name == last.display


async def test_a_phone_that_ignores_paging_is_not_pulled_twice(system_bus: PrivateBus, session_bus: PrivateBus,
                                                              tmp_path: Path) -> None:
    phone = _phone(generated_contacts=250)
    phone.extra["pbap_ignores_paging"] = True
    async with pbap_world(system_bus, session_bus, tmp_path, [phone], page_size=100, favourites=False) as w:
        done = await w.connect_synced()
        assert done["Contacts"] == 250
        assert w.db("SELECT COUNT(*) FROM contacts WHERE book='pb'") == [(250,)]
        assert w.transfers_started == 1 + 3  # one pb pull (all of it), then the call history
