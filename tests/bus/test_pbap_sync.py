"""The contacts component against the fake obexd on real private buses, seen through
org.dashbridge.Contacts1: first sync, incremental sync by PBAP counters, caller ID, call history,
per-phone data, and what a dashboard sees on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashbridge.simulator import obex_pbap
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .pbap_helpers import OTHER, PHONE, PbapWorld, pbap_world


def _phone(address: str = PHONE, **kw: object) -> VirtualPhone:
    defaults: dict[str, object] = {"generated_contacts": 250, "pbap_photo_every": 10, "pbap_history": 20}
    defaults.update(kw)
    return VirtualPhone(address, name="Test phone", **defaults)  # type: ignore[arg-type]


@pytest.fixture
async def world(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[PbapWorld]:
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone(), _phone(OTHER, generated_contacts=5)],
                          page_size=100) as w:
        yield w


async def test_first_sync_pulls_pages_skips_owner_card_and_serves_the_dashboard(world: PbapWorld) -> None:
    mark = world.mark()
    world.connect()
    await world.wait_state("connecting", after=mark)
    syncing = await world.wait_state("syncing", after=mark)
    assert syncing["Book"] == "pb"
    done = await world.wait_state("synced", after=mark)
    assert done["Contacts"] == 250 and done["CallHistory"] == 60 and done["LastSynced"] > 0
    assert done["Message"] == ""
    # pb: 251 entries (owner card + 250) in pages of 100 = 3 pulls; fav 1; ich/och/mch 3.
    assert world.transfers_started == 7
    book = obex_pbap.book_for(world.phones[PHONE])
    # The owner's own card ("Me") is not a contact.
    assert book.owner.fn == "Me"
    assert world.db("SELECT COUNT(*) FROM contacts WHERE name='Me'") == [(0,)]
    target = book.contacts[42]
    found = await world.api("Search", "su", [target.given.lower(), 500])
    assert any(c["Name"] == target.display for c in found)
    # Caller ID: the number in another format than the phone stored it.
    number = target.numbers[0][0]
    digits = "".join(ch for ch in number if ch.isdigit() or ch == "+")
    name, cid = await world.api("Lookup", "s", [digits])
    assert name == target.display
    contact = await world.api("GetContact", "t", [cid])
    assert contact["Name"] == target.display and contact["Phone"] == PHONE
    assert [n for n, _ in contact["Numbers"]] == [n for n, _ in target.numbers]
    # Photos arrive (every 10th generated contact has one) and round-trip byte for byte.
    with_photo = book.contacts[0]
    assert with_photo.photo is not None
    (_, pid) = await world.api("Lookup", "s", [with_photo.numbers[0][0]])
    pc = await world.api("GetContact", "t", [pid])
    assert pc["Photo"] == with_photo.photo and pc["PhotoType"] == "image/jpeg"
    # Call history: newest first, kinds as the phone said.
    hist = await world.api("GetCallHistory", "su", ["", 10])
    assert len(hist) == 10
    assert [h["Time"] for h in hist] == sorted((h["Time"] for h in hist), reverse=True)
    assert {h["Kind"] for h in await world.api("GetCallHistory", "su", [PHONE, 100])} == {
        "received", "dialed", "missed"}
    # Tidy: temp files deleted, session removed.
    assert world.obex_files() == []
    assert world.obexd is not None and world.obexd.sessions == {}


async def test_unchanged_counters_mean_no_pull_and_a_change_is_pulled(world: PbapWorld) -> None:
    await world.connect_synced()
    first = world.transfers_started
    world.disconnect()
    await world.connect_synced()
    # PBAP 1.2 counters unchanged: only the call history (3 folders) is pulled again.
    assert world.transfers_started - first == 3
    assert world.db("SELECT COUNT(*) FROM contacts WHERE phone=? AND book='pb'", (PHONE,)) == [(250,)]
    # The user adds contacts on the phone: the counters move, the phonebook is pulled again.
    assert world.obexd is not None
    obex_pbap.change_phonebook(world.obexd, PHONE, added=7, removed=2)
    world.disconnect()
    synced = await world.connect_synced()
    assert synced["Contacts"] == 255
    assert world.db("SELECT COUNT(*) FROM contacts WHERE phone=? AND book='pb'", (PHONE,)) == [(255,)]
    # No duplicate anywhere: one row per contact, numbers belong to live contacts only.
    assert world.db("SELECT COUNT(*) FROM contact_numbers WHERE contact_id NOT IN (SELECT id FROM contacts)") == \
        [(0,)]
    # Resync pulls everything even with unchanged counters.
    before = world.transfers_started
    mark = world.mark()
    assert await world.api("Resync", "s", [PHONE]) == [PHONE]
    await world.wait_state("synced", after=mark)
    assert world.transfers_started - before == 3 + 1 + 3


async def test_only_the_primary_phone_is_synced_and_phones_without_pbap_are_unsupported(world: PbapWorld) -> None:
    mark = world.mark()
    world.connect(OTHER, role="secondary")
    world.connect(PHONE, uuids=frozenset({"0000111f-0000-1000-8000-00805f9b34fb"}))
    st = await world.wait_state("unsupported", PHONE, after=mark)
    assert "PBAP" in st["Message"]
    states = {s["Phone"]: s["State"] for s in await world.api("GetSyncStates")}
    assert states.get(OTHER, "idle") == "idle"
    assert world.transfers_started == 0
    err = await world.api_error("Resync", "s", [OTHER])
    assert err.name == "org.dashbridge.Error.NotConnected"


async def test_data_is_per_phone_and_wiped_when_the_phone_is_forgotten(world: PbapWorld) -> None:
    await world.connect_synced()
    book = obex_pbap.book_for(world.phones[PHONE])
    number = book.contacts[3].numbers[0][0]
    assert world.sync is not None
    assert world.sync.display_name(PHONE, number) == book.contacts[3].display
    assert world.sync.display_name(OTHER, number) is None  # another phone's book
    world.disconnect()
    # Data kept across a disconnect by default (the phone comes back tomorrow).
    assert world.sync.display_name(PHONE, number) == book.contacts[3].display
    # The bluetooth component forgets the phone: its row goes, and everything hangs off it.
    assert world.ctx is not None
    with world.ctx.store.transaction() as db:
        db.execute("DELETE FROM phones WHERE address=?", (PHONE,))
    world.directory.forgotten(PHONE)
    assert world.sync.display_name(PHONE, number) is None
    for table in ("contacts", "call_history", "pbap_sync"):
        assert world.db(f"SELECT COUNT(*) FROM {table} WHERE phone=?", (PHONE,)) == [(0,)]
    assert world.db("SELECT COUNT(*) FROM contact_numbers") == [(0,)]
    assert world.db("SELECT COUNT(*) FROM contact_photos") == [(0,)]
    err = await world.api_error("Lookup", "s", [number])
    assert err.name == "org.dashbridge.Error.NotFound"


async def test_wipe_on_disconnect(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    async with pbap_world(system_bus, session_bus, tmp_path, [_phone(generated_contacts=20)],
                          wipe_on_disconnect=True) as w:
        await w.connect_synced()
        assert w.db("SELECT COUNT(*) FROM contacts WHERE book='pb'") == [(20,)]
        mark = w.mark()
        w.disconnect()
        st = await w.wait_state("idle", after=mark)
        assert st["Contacts"] == 0
        assert w.db("SELECT COUNT(*) FROM contacts") == [(0,)]
        assert w.db("SELECT COUNT(*) FROM call_history") == [(0,)]


async def test_caller_id_works_at_start_with_contacts_already_stored(world: PbapWorld) -> None:
    await world.connect_synced()
    book = obex_pbap.book_for(world.phones[PHONE])
    target = book.contacts[10]
    await world.stop_daemon()
    await world.start_daemon()  # a daemon restart: no phone connected yet, nothing pulled
    assert world.sync is not None
    assert world.sync.display_name(PHONE, target.numbers[0][0]) == target.display
    # The incoming call's number as the network sends it (E.164) finds the stored national form.
    national = next(n for n in (c.numbers[0][0] for c in book.contacts) if n.startswith("07"))
    who = next(c for c in book.contacts if c.numbers[0][0] == national)
    e164 = "+44" + "".join(ch for ch in national if ch.isdigit())[1:]
    assert world.sync.display_name(PHONE, e164) == who.display
    name, _ = await world.api("Lookup", "s", [e164])
    assert name == who.display
    assert world.transfers_started == 7  # only the first sync pulled anything


async def test_bad_arguments_are_clear_errors(world: PbapWorld) -> None:
    assert (await world.api_error("Search", "su", ["x" * 300, 5])).name == "org.dashbridge.Error.InvalidArguments"
    assert (await world.api_error("Search", "su", ["  ", 5])).name == "org.dashbridge.Error.InvalidArguments"
    assert (await world.api_error("Lookup", "s", [""])).name == "org.dashbridge.Error.InvalidArguments"
    assert (await world.api_error("GetContact", "t", [999999])).name == "org.dashbridge.Error.NotFound"
    assert (await world.api_error("GetCallHistory", "su", ["nonsense", 5])).name == \
        "org.dashbridge.Error.InvalidArguments"
    assert (await world.api_error("GetCallHistory", "su", ["", 5])).name == "org.dashbridge.Error.NotConnected"
    assert (await world.api_error("Resync", "s", [""])).name == "org.dashbridge.Error.NotConnected"
