"""``org.dashbridge.Contacts1`` at ``/org/dashbridge``: the phones' contacts, call history, caller ID
and the state of each phone's PBAP sync.

Thin: validate, delegate to the contacts component (port :class:`~daemon.api.ports.ContactsPort`), map
errors.
Documented in ``daemon/api/xml/org.dashbridge.Contacts1.xml`` and ``docs/api/Contacts1.md``.
"""

# No "from __future__ import annotations": dbus-fast reads these annotations at run time.
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import Message, Variant
from dbus_fast.annotations import DBusSignature, DBusStr, DBusUInt32, DBusUInt64
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from dashbridge.profiles.limits import (
    MAX_ADDRESS,
    MAX_ADDRESSES_PER_CONTACT,
    MAX_EMAIL,
    MAX_EMAILS_PER_CONTACT,
    MAX_NAME,
    MAX_NUMBER,
    MAX_NUMBERS_PER_CONTACT,
    clip,
)

from ..dbus import names
from ..errors import InvalidInput, NotFound
from .base import api_call

if TYPE_CHECKING:
    from .ports import ContactsPort, SyncStatusView

Props = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
PropsList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
NameAndId = Annotated[tuple[str, int], DBusSignature("st")]
StateSignal = Annotated[tuple[str, dict[str, Variant]], DBusSignature("sa{sv}")]
Strings = Annotated[list[str], DBusSignature("as")]
TotalAndRows = Annotated[tuple[int, list[dict[str, Variant]]], DBusSignature("uaa{sv}")]
LetterOffsets = Annotated[list[tuple[str, int]], DBusSignature("a(su)")]

_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_MAX_TEXT = 256
_MAX_NUMBER = 64


def _phone_arg(phone: str) -> str:
    if phone and not _ADDRESS.fullmatch(phone):
        raise InvalidInput("phone must be a Bluetooth address like AA:BB:CC:DD:EE:FF, or empty")
    return phone.upper()


def status_props(st: "SyncStatusView") -> dict[str, Variant]:
    return {
        "Phone": Variant("s", st.phone),
        "State": Variant("s", st.state),
        "Book": Variant("s", st.book),
        "Done": Variant("u", max(0, st.done)),
        "Total": Variant("u", max(0, st.total)),
        "Message": Variant("s", st.message),
        "LastSynced": Variant("x", int(st.last_synced)),
        "Contacts": Variant("u", max(0, st.contacts)),
        "CallHistory": Variant("u", max(0, st.history)),
    }


def _row(r: Mapping[str, Any]) -> dict[str, Variant]:
    return {"Id": Variant("t", r["id"]), "Name": Variant("s", clip(r["name"], MAX_NAME)),
            "Letter": Variant("s", r["letter"]), "Number": Variant("s", clip(r["number"], MAX_NUMBER)),
            "Favourite": Variant("b", r["favourite"]), "Phone": Variant("s", r["phone"])}


class Contacts1(ServiceInterface):
    def __init__(self, sync: "ContactsPort") -> None:
        super().__init__(names.DASHBRIDGE_CONTACTS_IFACE)
        self._s = sync
        sync.add_listener(self._on_status)

    def _on_status(self, st: "SyncStatusView") -> None:
        msg = Message.new_signal(names.DASHBRIDGE_PATH, names.DASHBRIDGE_CONTACTS_IFACE, "SyncStateChanged",
                                 "sa{sv}", [st.phone, status_props(st)])
        for bus in ServiceInterface._get_buses(self):
            bus.send(msg)

    @dbus_signal()
    def SyncStateChanged(self) -> StateSignal:  # pragma: no cover - shape only; sent by _on_status
        raise NotImplementedError

    @dbus_method()
    @api_call
    async def Search(self, text: DBusStr, limit: DBusUInt32) -> PropsList:
        if len(text) > _MAX_TEXT:
            raise InvalidInput("search text is too long")
        return [{"Id": Variant("t", cid), "Name": Variant("s", clip(name, MAX_NAME)), "Phone": Variant("s", phone),
                 "Number": Variant("s", clip(number, MAX_NUMBER))}
                for cid, name, phone, number in self._s.search(text, int(limit))]

    @dbus_method()
    @api_call
    async def Lookup(self, number: DBusStr) -> NameAndId:
        if not number.strip() or len(number) > _MAX_NUMBER:
            raise InvalidInput("number must be a phone number")
        found = self._s.lookup(number)
        if found is None:
            raise NotFound("no contact has this number")
        return (clip(found[1].name, MAX_NAME), found[1].contact_id)

    @dbus_method()
    @api_call
    async def GetContact(self, id: DBusUInt64) -> Props:
        c = self._s.contact(int(id))
        out: dict[str, Variant] = {
            "Id": Variant("t", c["id"]),
            "Name": Variant("s", clip(c["name"], MAX_NAME)),
            "Phone": Variant("s", c["phone"]),
            "Favourite": Variant("b", c["book"] == "fav"),
            "Numbers": Variant("a(ss)", [[clip(n, MAX_NUMBER), clip(k, MAX_NAME)]
                                          for n, k in c.get("numbers", [])[:MAX_NUMBERS_PER_CONTACT]]),
            "Emails": Variant("a(ss)", [[clip(e, MAX_EMAIL), clip(k, MAX_NAME)]
                                         for e, k in c.get("emails", [])[:MAX_EMAILS_PER_CONTACT]]),
            "Addresses": Variant("a(ss)", [[clip(a, MAX_ADDRESS), clip(k, MAX_NAME)]
                                            for a, k in c.get("addresses", [])[:MAX_ADDRESSES_PER_CONTACT]]),
            "Organization": Variant("s", clip(c.get("org", ""), MAX_NAME)),
            "Title": Variant("s", clip(c.get("title", ""), MAX_NAME)),
            "Nickname": Variant("s", clip(c.get("nickname", ""), MAX_NAME)),
            "Birthday": Variant("s", c.get("bday", "")),
        }
        if "photo" in c:
            out["Photo"] = Variant("ay", c["photo"])
            out["PhotoType"] = Variant("s", c.get("photo_mime", ""))
        return out

    @dbus_method()
    @api_call
    async def GetCallHistory(self, phone: DBusStr, limit: DBusUInt32) -> PropsList:
        rows = self._s.history(_phone_arg(phone), int(limit))
        return [{"Kind": Variant("s", r["kind"]), "Name": Variant("s", clip(r["name"], MAX_NAME)),
                 "Number": Variant("s", clip(r["number"], MAX_NUMBER)), "Time": Variant("s", r["at"]),
                 "ContactId": Variant("t", r["contact_id"]), "Phone": Variant("s", r["phone"])} for r in rows]

    @dbus_method()
    @api_call
    async def List(self, phone: DBusStr, offset: DBusUInt32, count: DBusUInt32) -> TotalAndRows:
        total, rows = self._s.list_contacts(_phone_arg(phone), int(offset), int(count))
        return (total, [_row(r) for r in rows])

    @dbus_method()
    @api_call
    async def ListFavourites(self, phone: DBusStr) -> PropsList:
        return [_row(r) for r in self._s.favourites(_phone_arg(phone))]

    @dbus_method()
    @api_call
    async def Index(self, phone: DBusStr) -> LetterOffsets:
        return [(letter, offset) for letter, offset in self._s.letter_index(_phone_arg(phone))]

    @dbus_method()
    @api_call
    async def GetSyncStates(self) -> PropsList:
        return [status_props(st) for st in self._s.statuses()]

    @dbus_method()
    @api_call
    async def Resync(self, phone: DBusStr) -> Strings:
        return self._s.resync(_phone_arg(phone))

