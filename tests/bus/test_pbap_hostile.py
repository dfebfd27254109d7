"""A hostile phonebook through the running contacts component (issue 11, item 4): names come out
of the API clipped with the marker, an odd charset does not lose the contact, and an id beyond
SQLite's range is a clear NotFound, never Internal."""

from __future__ import annotations

from pathlib import Path

from dashbridge.profiles.limits import MARK, MAX_NAME
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.phone import VirtualPhone

from .pbap_helpers import PHONE, pbap_world


async def test_hostile_names_are_clipped_odd_charsets_kept_and_huge_ids_not_found(
        system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> None:
    vcf = b"".join([
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:" + b"A" * 100_000 + b"\r\nTEL;TYPE=CELL:+447700900001\r\nEND:VCARD\r\n",
        b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=punycode:Smith;John\r\nTEL:+447700900002\r\nEND:VCARD\r\n",
    ])
    path = tmp_path / "phone.vcf"
    path.write_bytes(vcf)
    phone = VirtualPhone(PHONE, name="Test phone", contacts_vcf=str(path), pbap_history=0)
    async with pbap_world(system_bus, session_bus, tmp_path, [phone]) as w:
        done = await w.connect_synced(timeout=30)
        assert done["Contacts"] == 2
        name, cid = await w.api("Lookup", "s", ["07700 900001"])
        assert name == "A" * (MAX_NAME - 1) + MARK
        assert (await w.api("GetContact", "t", [cid]))["Name"] == name
        assert w.db("SELECT MAX(LENGTH(name)) FROM contacts") == [(MAX_NAME,)]
        assert (await w.api("Lookup", "s", ["07700 900002"]))[0] == "John Smith"
        for huge in (2**63, 2**64 - 1):
            err = await w.api_error("GetContact", "t", [huge])
            assert err.name == "org.dashbridge.Error.NotFound"
            assert len(err.text) < 200
