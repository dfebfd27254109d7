"""A phonebook screen through org.dashbridge.Contacts1 on real private buses: paged listing in
display order (List), the A-Z index (Index), favourites (ListFavourites), and contact ids that stay
the same across re-syncs of the same card (by UID, and by name+numbers for cards without one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dashbridge.profiles.pbap.store import sort_key
from dashbridge.simulator import obex_pbap
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .pbap_helpers import OTHER, PHONE, PbapWorld, pbap_world


@pytest.fixture
async def world(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[PbapWorld]:
    phones = [VirtualPhone(PHONE, name="Big phone", generated_contacts=500, pbap_history=2),
              VirtualPhone(OTHER, name="No UIDs", generated_contacts=30, pbap_history=1)]
    for c in obex_pbap.book_for(phones[1]).contacts:
        c.uid = ""  # an old phone: cards without UID
    async with pbap_world(system_bus, session_bus, tmp_path, phones, page_size=200) as w:
        yield w


async def _all_rows(world: PbapWorld, phone: str, page: int = 75) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        total, got = await world.api("List", "suu", [phone, len(rows), page])
        rows.extend(got)
        if not got:
            assert len(rows) == total
            return rows


async def _resync(world: PbapWorld, phone: str) -> None:
    mark = world.mark()
    assert await world.api("Resync", "s", [phone]) == [phone]
    await world.wait_state("synced", phone, after=mark, timeout=30.0)


async def test_500_contacts_page_in_display_order_with_index_and_favourites(world: PbapWorld) -> None:
    await world.connect_synced(timeout=30.0)
    book = obex_pbap.book_for(world.phones[PHONE])
    total, first = await world.api("List", "suu", ["", 0, 0])
    assert total == 500 and len(first) == 50  # count 0: a page of 50
    rows = await _all_rows(world, PHONE)
    assert len(rows) == 500 and len({r["Id"] for r in rows}) == 500
    assert rows[:50] == first
    names = [r["Name"] for r in rows]
    assert sorted(names, key=lambda n: (sort_key(n), n)) == names
    assert sorted(names) == sorted(c.display for c in book.contacts)
    # The first number as the phone stored it.
    by_name = {c.display: c.numbers[0][0] for c in book.contacts}
    assert all(r["Number"] in {n for c in book.contacts if c.display == r["Name"] for n, _ in c.numbers[:1]}
               for r in rows) and by_name
    # Letters: A-Z by the folded first letter ("Émile" under E, "Łukasz" under L), "#" last.
    for r in rows:
        first_char = sort_key(r["Name"])[0]
        assert r["Letter"] == (first_char.upper() if first_char.isalpha() and first_char.isascii() else "#")
    assert any(r["Name"].startswith("Émile") and r["Letter"] == "E" for r in rows)
    index = await world.api("Index", "s", [""])
    letters = [letter for letter, _ in index]
    assert letters == sorted({r["Letter"] for r in rows}, key=lambda x: (x == "#", x))
    for letter, offset in index:
        assert rows[offset]["Letter"] == letter
        assert offset == 0 or rows[offset - 1]["Letter"] != letter
    # Jumping to a letter is one List call.
    letter, offset = index[len(index) // 2]
    _, page = await world.api("List", "suu", [PHONE, offset, 3])
    assert page[0]["Letter"] == letter and page == rows[offset:offset + 3]
    # Favourites: the phone's, in its order, and marked in the listing too.
    favs = await world.api("ListFavourites", "s", [""])
    assert [f["Name"] for f in favs] == [book.contacts[i].display for i in book.favourites]
    assert len(favs) == 5 and all(f["Favourite"] for f in favs)
    assert sorted(r["Name"] for r in rows if r["Favourite"]) == sorted(f["Name"] for f in favs)
    fav = await world.api("GetContact", "t", [favs[0]["Id"]])
    assert fav["Favourite"] is True and fav["Name"] == favs[0]["Name"]
    # Past the end: the total, no rows.
    assert await world.api("List", "suu", [PHONE, 500, 10]) == [500, []]
    assert (await world.api_error("List", "suu", ["nope", 0, 10])).name.endswith("InvalidArguments")


async def test_ids_survive_a_resync_and_edits_of_other_contacts(world: PbapWorld) -> None:
    await world.connect_synced(timeout=30.0)
    before = {r["Id"]: r["Name"] for r in await _all_rows(world, PHONE)}
    fav_before = [f["Id"] for f in await world.api("ListFavourites", "s", [PHONE])]
    seen = next(iter(before))
    contact = await world.api("GetContact", "t", [seen])
    # A plain re-sync of the same cards: every id the same.
    await _resync(world, PHONE)
    after = {r["Id"]: r["Name"] for r in await _all_rows(world, PHONE)}
    assert after == before
    assert await world.api("GetContact", "t", [seen]) == contact
    assert [f["Id"] for f in await world.api("ListFavourites", "s", [PHONE])] == fav_before
    # The user edits the phone: removed contacts' ids go, renamed ones keep theirs (same UID),
    # new ones get new ids, everyone else is untouched.
    obex_pbap.change_phonebook(world.obexd, PHONE, added=4, removed=3, renamed=2)  # type: ignore[arg-type]
    await _resync(world, PHONE)
    edited = {r["Id"]: r["Name"] for r in await _all_rows(world, PHONE)}
    assert len(edited) == 501
    kept = set(before) & set(edited)
    assert len(kept) == 497 and len(set(edited) - set(before)) == 4
    renamed = [i for i in kept if edited[i] != before[i]]
    assert len(renamed) == 2 and all("(renamed" in edited[i] for i in renamed)
    for gone in set(before) - set(edited):
        assert (await world.api_error("GetContact", "t", [gone])).name.endswith("NotFound")
    # The caller-ID index points at the same ids.
    book = obex_pbap.book_for(world.phones[PHONE])
    c = book.contacts[10]
    name, cid = await world.api("Lookup", "s", [c.numbers[0][0]])
    assert edited.get(cid) == name


async def test_ids_of_cards_without_uid_follow_name_and_numbers(world: PbapWorld) -> None:
    world.register(OTHER, "No UIDs")
    await world.connect_synced(OTHER)
    before = {r["Id"]: r["Name"] for r in await _all_rows(world, OTHER)}
    assert len(before) == 30
    await _resync(world, OTHER)
    assert {r["Id"]: r["Name"] for r in await _all_rows(world, OTHER)} == before
    obex_pbap.change_phonebook(world.obexd, OTHER, renamed=1)  # type: ignore[arg-type]
    await _resync(world, OTHER)
    after = {r["Id"]: r["Name"] for r in await _all_rows(world, OTHER)}
    # Without a UID a renamed card is another card: a new id; the other 29 keep theirs.
    assert len(set(after) & set(before)) == 29
    assert next(n for i, n in after.items() if i not in before).endswith("(renamed 1)")
