"""``org.dashbridge.Messages1``: SMS, MMS and e-mail of the connected phones.

Thin: validate, delegate to the messages component (port :class:`~daemon.api.ports.MessagesPort`), map
errors.
Message ids are ``<phone address>/<handle>`` and stay the same across reconnects.
"""

# No ``from __future__ import annotations`` here: dbus-fast reads these annotations at class
# creation, and a postponed ``-> None`` would be taken for a D-Bus signature.

from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusBool, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from dashbridge.profiles.limits import MAX_BODY, MAX_EMAIL, MAX_NAME, MAX_PREVIEW, MAX_SUBJECT, clip, echo

from ..dbus import names
from ..errors import InvalidInput
from .base import api_call, api_call_sync

if TYPE_CHECKING:
    from dashbridge.profiles.map.message import StoredMessage

    from .ports import MessagesPort

VarDict = Annotated[dict[str, Any], DBusSignature("a{sv}")]
VarDictList = Annotated[list[dict[str, Any]], DBusSignature("aa{sv}")]
StateMap = Annotated[dict[str, list[str]], DBusSignature("a{s(ss)}")]

MAX_LIMIT = 500
SNAPSHOT_RECENT = 20
PREVIEW_CHARS = MAX_PREVIEW
_FILTER_TYPES = {"phone": "s", "folder": "s", "type": "s", "unread": "b", "offset": "u", "limit": "u"}


def _preview(text: str | None) -> str:
    from dashbridge.profiles.map.listing import preview

    return preview(text or "", PREVIEW_CHARS)


class Messages1(ServiceInterface):
    def __init__(self, comp: "MessagesPort") -> None:
        super().__init__(names.DASHBRIDGE_MESSAGES_IFACE)
        self._comp = comp
        comp.received_listeners.append(lambda m: self.MessageReceived(self._summary(m)))
        comp.changed_listeners.append(lambda m: self.MessageChanged(m.id, self._summary(m)))
        comp.removed_listeners.append(lambda mid: self.MessageRemoved(mid))
        comp.synced_listeners.append(lambda phone, n: self.SyncFinished(phone, n))
        comp.state_listeners.append(lambda: self.emit_properties_changed({"Phones": self._states()}))

    # -- shapes ------------------------------------------------------------------------------------
    def _summary(self, m: "StoredMessage") -> dict[str, Variant]:
        return {
            "id": Variant("s", m.id),
            "phone": Variant("s", m.phone),
            "type": Variant("s", m.type),
            "folder": Variant("s", m.folder),
            "direction": Variant("s", m.direction),
            "sender": Variant("s", clip(m.sender, MAX_EMAIL)),
            "sender_name": Variant("s", clip(self._comp.display_name(m), MAX_NAME) if m.direction == "in" else ""),
            "recipient": Variant("s", clip(m.recipient, MAX_EMAIL)),
            "subject": Variant("s", clip(m.subject, MAX_SUBJECT)),
            "preview": Variant("s", _preview(m.body)),
            "received": Variant("s", m.received),
            "read": Variant("b", m.read),
            "size": Variant("t", max(0, m.size)),
            "body_state": Variant("s", m.body_state),
        }

    def _full(self, m: "StoredMessage") -> dict[str, Variant]:
        d = self._summary(m)
        d["body"] = Variant("s", clip(m.body or "", MAX_BODY))
        d["problems"] = Variant("as", list(m.problems))
        d["attachments"] = Variant("aa{sv}", [
            {"name": Variant("s", str(a.get("name", ""))), "type": Variant("s", str(a.get("type", ""))),
             "size": Variant("t", max(0, int(a.get("size", 0) or 0)))} for a in m.attachments])
        return d

    def _states(self) -> dict[str, list[str]]:
        return {addr: [st, detail] for addr, (st, detail) in sorted(self._comp.states.items())}

    def snapshot_extra(self) -> dict[str, Variant]:
        """For ``Daemon1.GetSnapshot``: ``Unread`` (phone -> unread stored messages, counted up to
        MAX_LIMIT) and ``Recent`` (the newest SNAPSHOT_RECENT messages, as List gives them)."""
        unread: dict[str, int] = {}
        for m in self._comp.list(phone="", folder="", type="", unread_only=True, offset=0, limit=MAX_LIMIT):
            unread[m.phone] = unread.get(m.phone, 0) + 1
        recent = self._comp.list(phone="", folder="", type="", unread_only=False, offset=0, limit=SNAPSHOT_RECENT)
        return {"Unread": Variant("a{su}", unread), "Recent": Variant("aa{sv}", [self._summary(m) for m in recent])}

    # -- methods -----------------------------------------------------------------------------------
    @dbus_method()
    @api_call_sync
    def List(self, filter: VarDict) -> VarDictList:
        kw: dict[str, Any] = {}
        for key, var in filter.items():
            want = _FILTER_TYPES.get(key)
            if want is None:
                raise InvalidInput(f"unknown filter key {echo(key)} (known: {', '.join(sorted(_FILTER_TYPES))})")
            if not isinstance(var, Variant) or var.signature != want:
                raise InvalidInput(f"filter {echo(key)} must be of type {want}")
            kw[key] = var.value
        folder = str(kw.get("folder", "")).lower()
        if folder and not (folder.replace("-", "").replace("_", "").replace(".", "").isalnum() and len(folder) <= 40):
            raise InvalidInput("folder must be a folder name such as inbox, outbox, sent, deleted or draft")
        mtype = kw.get("type", "")
        if mtype not in ("", "sms", "mms", "email"):
            raise InvalidInput("type must be sms, mms or email")
        limit = int(kw.get("limit", 50)) or 50
        if limit > MAX_LIMIT:
            raise InvalidInput(f"limit must be at most {MAX_LIMIT}")
        phone = str(kw.get("phone", "")).upper()
        return [self._summary(m) for m in self._comp.list(
            phone=phone, folder=folder, type=mtype, unread_only=bool(kw.get("unread", False)),
            offset=int(kw.get("offset", 0)), limit=limit)]

    @dbus_method()
    @api_call
    async def Get(self, message_id: DBusStr) -> VarDict:
        return self._full(await self._comp.get(message_id))

    @dbus_method()
    @api_call
    async def MarkRead(self, message_id: DBusStr, read: DBusBool) -> None:
        await self._comp.mark_read(message_id, bool(read))

    @dbus_method()
    @api_call
    async def Delete(self, message_id: DBusStr) -> None:
        await self._comp.delete(message_id)

    @dbus_method()
    @api_call
    async def Reply(self, message_id: DBusStr, text: DBusStr) -> DBusStr:
        return (await self._comp.reply(message_id, text)).id

    @dbus_method()
    @api_call
    async def Send(self, phone: DBusStr, type: DBusStr, recipient: DBusStr,
                   subject: DBusStr, text: DBusStr) -> DBusStr:
        return (await self._comp.send(phone, type, recipient, subject, text)).id

    @dbus_method()
    @api_call
    async def Refresh(self, phone: DBusStr) -> DBusUInt32:
        return await self._comp.refresh(phone)

    # -- signals -----------------------------------------------------------------------------------
    @dbus_signal()
    def MessageReceived(self, message: VarDict) -> VarDict:
        return message

    @dbus_signal()
    def MessageChanged(self, message_id: DBusStr, message: VarDict
                       ) -> Annotated[tuple[str, dict[str, Any]], DBusSignature("sa{sv}")]:
        return message_id, message

    @dbus_signal()
    def MessageRemoved(self, message_id: DBusStr) -> DBusStr:
        return message_id

    @dbus_signal()
    def SyncFinished(self, phone: DBusStr, new_messages: DBusUInt32
                     ) -> Annotated[tuple[str, int], DBusSignature("su")]:
        return phone, new_messages

    # -- properties --------------------------------------------------------------------------------
    @dbus_property(access=PropertyAccess.READ)
    def Phones(self) -> StateMap:
        return self._states()
