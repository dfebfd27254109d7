"""MAP inside the fake obexd: ``MessageAccess1`` on a ``map`` session and ``Message1`` objects,
faithful to reference §2.6-2.8, §3.2 and §7 items 14-15 (upstream ``obexd/client/map.c``).

* ``SetFolder(s)``: ``/`` or ``""`` = root, ``..`` = up, components split on ``/``; an unknown
  folder is ``Failed``.  The virtual phone's tree is ``telecom/msg/{inbox,outbox,sent,deleted,
  draft}``; SMS, MMS and e-mail live in the same folders (one MAS instance).
* ``ListFolders(a{sv})`` -> ``aa{sv}`` of ``{"Name": s}``; ``Offset``/``MaxCount`` typed ``q``.
* ``ListFilterFields()`` -> the 16 names of §2.6.
* ``ListMessages(s folder, a{sv} filter)`` -> ``a{oa{sv}}``: newest first, filters typed exactly as
  obexd parses them (wrong type or an unknown ``Types``/``Fields`` value => ``InvalidArguments``;
  unknown keys ignored); creates ``Message1`` objects at ``<session>/message<decimal handle>``
  (InterfacesAdded) or updates existing ones.
* ``UpdateInbox()``; ``PushMessage(s sourcefile, s folder, a{sv} args) -> (o, a{sv})`` with
  ``Transparent``/``Retry`` typed ``b`` and ``Charset`` ``s`` (``utf8``|``native``): the reply is a
  queued Transfer1 that reads the file; the phone's verdict (accepted into the outbox, or
  "Precondition Failed") arrives as the transfer's final ``Status`` (``complete``/``error``).
* ``Message1``: the properties of §2.7 (strings omitted while unknown), ``Read`` read-write,
  ``Deleted`` write-only, ``Get(s targetfile, b attachment)`` -> a Transfer1 writing the bMessage.
* New-message events (MNS): ``InterfacesAdded`` of a ``Message1`` carrying only ``Folder``,
  ``Type`` and ``Status="notification"`` (any older object for the handle is dropped first); a
  deleted message's ``Folder`` becomes ``/telecom/msg/deleted`` by PropertiesChanged — only when the
  phone delivers notifications at all (``VirtualPhone.map_notifications``).

Control (Python: :func:`deliver`, :func:`move_on_phone`, :func:`set_notifications`,
:func:`set_push_accepted`, :func:`outbox`; D-Bus on ``org.dashbridge.Sim.Obex1``: ``MapDeliver``,
``MapSetNotifications``, ``MapSetPushAccepted``, ``MapOutbox``).  "MAP not offered" is a phone without ``"map"`` in
``profiles`` (CreateSession then fails like obexd without an SDP record).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from dbus_fast import Variant

from dashbridge.profiles.map import bmessage
from dashbridge.profiles.map.email_body import looks_like_mime

from .obex import (
    TRANSFER_IFACE,
    Call,
    FakeInterface,
    FakeObexd,
    ObexError,
    ObexProfile,
    Session,
    TransferSpec,
    register_control_method,
    register_profile,
)
from .phone import MAP_MAS, PhoneMessage, VirtualPhone, make_email  # make_email: re-exported

log = logging.getLogger(__name__)

MAP_IFACE = "org.bluez.obex.MessageAccess1"
MESSAGE_IFACE = "org.bluez.obex.Message1"

FOLDERS: dict[str, tuple[str, ...]] = {
    "": ("telecom",),
    "telecom": ("msg",),
    "telecom/msg": ("inbox", "outbox", "sent", "deleted", "draft"),
}
MESSAGE_FOLDERS = ("inbox", "outbox", "sent", "deleted", "draft")

FILTER_FIELDS = ["subject", "timestamp", "sender", "sender-address", "recipient", "recipient-address", "type",
                 "size", "status", "text", "attachment", "priority", "read", "sent", "protected", "replyto"]
# ListMessages filter keys as obexd parses them (case-insensitive names, exact D-Bus types).
FILTER_TYPES = {"offset": "q", "maxcount": "q", "subjectlength": "y", "fields": "as", "types": "as",
                "periodbegin": "s", "periodend": "s", "read": "b", "recipient": "s", "sender": "s",
                "priority": "b"}
TYPE_FILTER = {"sms": ("SMS_GSM", "SMS_CDMA"), "email": ("EMAIL",), "mms": ("MMS",)}
D_BUS_TYPE = {"SMS_GSM": "sms-gsm", "SMS_CDMA": "sms-cdma", "EMAIL": "email", "MMS": "mms"}
# Listing attributes the phone always sends; the others only when Fields asks (or no Fields).
MANDATORY_PROPS = {"Folder", "Subject", "Timestamp", "RecipientAddress", "Type", "Size", "Status",
                   "AttachmentSize"}
FIELD_PROPS = {"sender": "Sender", "sender-address": "SenderAddress", "recipient": "Recipient",
               "text": "Text", "priority": "Priority", "read": "Read", "sent": "Sent", "protected": "Protected",
               "replyto": "ReplyTo", "subject": "Subject", "timestamp": "Timestamp",
               "recipient-address": "RecipientAddress", "type": "Type", "size": "Size", "status": "Status",
               "attachment": "AttachmentSize"}
DEFAULT_SUBJECT_LENGTH = 256
_DELETED_FROM: dict[int, str] = {}  # id(PhoneMessage) -> folder it was deleted from (for undelete)
MAP_DATETIME = "%Y%m%dT%H%M%S"


def _now() -> str:
    return time.strftime(MAP_DATETIME)


# -------------------------------------------------------------------------------------------------
# Message content
# -------------------------------------------------------------------------------------------------


def build_bmessage(msg: PhoneMessage) -> bytes:
    """What ``Message1.Get`` writes: the phone's exact bytes if set (faults), else a bMessage."""
    if msg.bmessage is not None:
        return msg.bmessage
    is_email = msg.type == "EMAIL"
    sender = bmessage.VCard(version="2.1", name=msg.sender_name, formatted_name=msg.sender_name,
                            tels=() if is_email or not msg.sender else (msg.sender,),
                            emails=(msg.sender,) if is_email and msg.sender else ())
    recip = bmessage.VCard(version="2.1", name=msg.recipient_name, formatted_name=msg.recipient_name,
                           tels=() if is_email or not msg.recipient else (msg.recipient,),
                           emails=(msg.recipient,) if is_email and msg.recipient else ())
    bm = bmessage.BMessage(status="READ" if msg.read else "UNREAD", type=msg.type,
                           folder=f"TELECOM/MSG/{msg.folder.upper()}", originators=(sender,),
                           envelopes=((recip,),), parts=(msg.body,))
    return bmessage.serialize(bm)


def _size(msg: PhoneMessage) -> int:
    return len(msg.body.encode("utf-8"))


# -------------------------------------------------------------------------------------------------
# Message1
# -------------------------------------------------------------------------------------------------


class MessageObject(FakeInterface):
    """``org.bluez.obex.Message1`` for one handle on one session."""

    def __init__(self, access: MessageAccess, msg: PhoneMessage, *, notification: bool = False) -> None:
        super().__init__(MESSAGE_IFACE)
        self.access = access
        self.msg = msg
        self.notification = notification
        self.listed: set[str] | None = None  # props the last listing carried (None: notification only)
        self.subject_length = DEFAULT_SUBJECT_LENGTH
        self.method("Get", "sb", "oa{sv}", self._get)

    @property
    def path(self) -> str:
        return f"{self.access.session.path}/message{self.msg.handle}"

    def properties(self) -> dict[str, Variant]:
        m = self.msg
        if self.listed is None:
            # A NewMessage event: obexd fills only what the event carried (reference §2.8).
            return {"Folder": Variant("s", "/telecom/msg/" + m.folder), "Type": Variant("s", D_BUS_TYPE[m.type]),
                    "Status": Variant("s", "notification")}
        subject = m.subject or (m.body if m.type != "EMAIL" else "")
        props: dict[str, Variant] = {
            "Folder": Variant("s", "/telecom/msg/" + m.folder),
            "Subject": Variant("s", subject[:self.subject_length]),
            "Timestamp": Variant("s", m.timestamp),
            "Sender": Variant("s", m.sender_name),
            "SenderAddress": Variant("s", m.sender),
            "Recipient": Variant("s", m.recipient_name),
            "RecipientAddress": Variant("s", m.recipient),
            "Type": Variant("s", D_BUS_TYPE[m.type]),
            "Size": Variant("t", _size(m)),
            "Text": Variant("b", True),
            "Status": Variant("s", "complete"),
            "AttachmentSize": Variant("t", 0),
            "Priority": Variant("b", m.priority),
            "Read": Variant("b", m.read),
            "Sent": Variant("b", m.sent),
            "Protected": Variant("b", m.protected),
        }
        out = {}
        for k, v in props.items():
            if k not in self.listed:
                continue
            if v.signature == "s" and not v.value:
                continue  # string props are omitted until known
            out[k] = v
        return out

    def property_signatures(self) -> dict[str, str]:
        return {"Folder": "s", "Subject": "s", "Timestamp": "s", "Sender": "s", "SenderAddress": "s",
                "ReplyTo": "s", "Recipient": "s", "RecipientAddress": "s", "Type": "s", "Size": "t", "Text": "b",
                "Status": "s", "AttachmentSize": "t", "Priority": "b", "Read": "b", "Sent": "b",
                "Protected": "b", "Deleted": "b"}

    def set_property(self, call: Call, name: str, value: Variant) -> None:
        if name not in ("Read", "Deleted"):
            raise ObexError("org.freedesktop.DBus.Error.PropertyReadOnly", f"Property '{name}' is not writable")
        if value.signature != "b":
            raise ObexError.invalid_args("Invalid arguments in method call")
        if self.msg not in self.access.phone.messages:
            raise ObexError.failed("Not Found")  # the phone no longer has it
        if name == "Read":
            self.msg.read = bool(value.value)
            self.changed("Read")
            return
        # Deleted: SetMessageStatus(deleted); the phone moves it and (with MNS) says MessageDeleted.
        if value.value:
            if self.msg.folder != "deleted":
                _DELETED_FROM[id(self.msg)] = self.msg.folder
                self.msg.folder = "deleted"
        elif self.msg.folder == "deleted":
            self.msg.folder = _DELETED_FROM.pop(id(self.msg), "inbox")
        if self.access.phone.map_notifications:
            self.changed("Folder")

    def _get(self, call: Call, targetfile: str, attachment: bool) -> list[Any]:
        session = self.access.session
        if call.sender != session.owner:
            raise ObexError.not_authorized()
        gone = self.msg not in self.access.phone.messages
        content = b"" if gone else build_bmessage(self.msg)
        path, props = session.queue_transfer(TransferSpec(
            name="", type="x-bt/message", content=content, targetfile=targetfile,
            fail_after=0 if gone else None))
        return [path, props]


# -------------------------------------------------------------------------------------------------
# PushMessage's transfer (a PUT: reads the client's file; obexd never deletes a PUT's file)
# -------------------------------------------------------------------------------------------------


class PushTransfer(FakeInterface):
    def __init__(self, access: MessageAccess, path: str, sourcefile: str, size: int, folder: str) -> None:
        super().__init__(TRANSFER_IFACE)
        self.access = access
        self.path = path
        self.sourcefile = sourcefile
        self.size = size
        self.folder = folder
        self.status = "queued"
        self.transferred = 0
        self.started = False
        self.method("Cancel", "", "", self._cancel)
        self.cancelled = False

    def properties(self) -> dict[str, Variant]:
        props = {"Status": Variant("s", self.status), "Session": Variant("o", self.access.session.path),
                 "Size": Variant("t", self.size), "Filename": Variant("s", self.sourcefile)}
        if self.folder:
            props["Name"] = Variant("s", self.folder)
        if self.started:
            props["Transferred"] = Variant("t", self.transferred)
        return props

    def property_signatures(self) -> dict[str, str]:
        return {"Status": "s", "Session": "o", "Size": "t", "Name": "s", "Filename": "s", "Transferred": "t"}

    def _cancel(self, call: Call) -> None:
        if call.sender != self.access.session.owner:
            raise ObexError.not_authorized()
        if self.status in ("complete", "error"):
            raise ObexError.failed("Transfer finished")
        self.cancelled = True

    async def run(self) -> None:
        await asyncio.sleep(0)  # the reply goes out first; the PUT starts on the next iteration
        ok = False
        try:
            self.status, self.started = "active", True
            self.changed("Status", "Transferred")
            data = await asyncio.to_thread(_read_file, self.sourcefile)
            self.transferred = len(data)
            ok = not self.cancelled and self.access.accept_push(data, self.folder)
        except OSError as exc:
            log.info("fake obexd: cannot read push source: %s", exc)
        finally:
            self.status = "complete" if ok else "error"
            self.changed("Status", "Transferred")
            tree = self.access.session.obexd.tree
            if tree is not None:
                tree.remove(self.path)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(bmessage.MAX_BYTES + 1)


# -------------------------------------------------------------------------------------------------
# MessageAccess1
# -------------------------------------------------------------------------------------------------


class MessageAccess(FakeInterface):
    """One per MAP session; keeps the session's current folder and its Message1 objects."""

    def __init__(self, session: Session) -> None:
        super().__init__(MAP_IFACE)
        self.session = session
        self.phone: VirtualPhone = session.phone
        self.cwd: list[str] = []
        self.objects: dict[int, MessageObject] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.method("SetFolder", "s", "", self._set_folder)
        self.method("ListFolders", "a{sv}", "aa{sv}", self._list_folders)
        self.method("ListFilterFields", "", "as", lambda call: [list(FILTER_FIELDS)])
        self.method("ListMessages", "sa{sv}", "a{oa{sv}}", self._list_messages)
        self.method("UpdateInbox", "", "", self._update_inbox)
        self.method("PushMessage", "ssa{sv}", "oa{sv}", self._push)

    def properties(self) -> dict[str, Variant]:
        return {"SupportedTypes": Variant("as", list(self.phone.map_types))}

    # -- folders ---------------------------------------------------------------------------------
    def _children(self, here: str) -> tuple[str, ...]:
        """Sub-folders; under telecom/msg also any folder the phone keeps messages in (e-mail
        accounts often add their own, e.g. "email")."""
        kids = FOLDERS.get(here, ())
        if here == "telecom/msg":
            extra = sorted({m.folder for m in self.phone.messages} - set(kids))
            kids = kids + tuple(extra)
        return kids

    def _resolve(self, name: str) -> list[str]:
        parts = [] if name.startswith("/") else list(self.cwd)
        for comp in name.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if parts:
                    parts.pop()
                continue
            here = "/".join(parts)
            if comp.lower() not in self._children(here):
                raise ObexError.failed("Not Found")
            parts.append(comp.lower())
        return parts

    def _check_owner(self, call: Call) -> None:
        if call.sender != self.session.owner:
            raise ObexError.not_authorized()

    async def _set_folder(self, call: Call, name: str) -> list[Any]:
        self._check_owner(call)
        await asyncio.sleep(0)  # an OBEX SETPATH round trip
        self.cwd = [] if name == "" else self._resolve(name)
        return []

    def _list_folders(self, call: Call, filters: dict[str, Variant]) -> list[Any]:
        self._check_owner(call)
        offset, maxcount = 0, 1024
        for k, v in filters.items():
            if k.lower() == "offset":
                offset = _typed(v, "q")
            elif k.lower() == "maxcount":
                maxcount = _typed(v, "q")
        kids = self._children("/".join(self.cwd))
        return [[{"Name": Variant("s", n)} for n in kids[offset:offset + maxcount]]]

    # -- listing ---------------------------------------------------------------------------------
    async def _list_messages(self, call: Call, folder: str, filters: dict[str, Variant]) -> list[Any]:
        self._check_owner(call)
        f = _parse_filter(filters)
        parts = self._resolve(folder) if folder else list(self.cwd)
        await asyncio.sleep(0)
        if len(parts) != 3 or parts[:2] != ["telecom", "msg"]:
            return [{}]  # a folder without messages
        name = parts[2]
        msgs = [m for m in self.phone.messages if m.folder == name and _matches(m, f)]
        msgs.sort(key=lambda m: (m.timestamp, m.handle), reverse=True)
        msgs = msgs[f["offset"]:f["offset"] + f["maxcount"]]
        listed = _listed_props(f["fields"])
        out: dict[str, dict[str, Variant]] = {}
        tree = self.session.obexd.tree
        for m in msgs:
            obj = self.objects.get(m.handle)
            if obj is None or obj.msg is not m:
                if obj is not None:
                    tree.remove(obj.path)
                obj = MessageObject(self, m)
                obj.listed = listed
                obj.subject_length = f["subjectlength"]
                self.objects[m.handle] = obj
                tree.add(obj.path, obj)
            else:
                before = obj.properties()
                obj.listed = listed if obj.listed is None else obj.listed | listed
                obj.subject_length = f["subjectlength"]
                after = obj.properties()
                diff = [k for k in after if before.get(k) is None or before[k].value != after[k].value]
                if diff:
                    obj.changed(*diff)
            out[obj.path] = obj.properties()
        return [out]

    async def _update_inbox(self, call: Call) -> list[Any]:
        self._check_owner(call)
        await asyncio.sleep(0)
        return []

    # -- push --------------------------------------------------------------------------------------
    def _push(self, call: Call, sourcefile: str, folder: str, args: dict[str, Variant]) -> list[Any]:
        self._check_owner(call)
        for k, v in args.items():
            key = k.lower()
            if key in ("transparent", "retry") and v.signature != "b":
                raise ObexError.invalid_args("Invalid arguments in method call")
            if key == "charset" and (v.signature != "s" or str(v.value).lower() not in ("utf8", "native")):
                raise ObexError.invalid_args("Invalid arguments in method call")
        try:
            size = os.stat(sourcefile).st_size
        except OSError as exc:
            raise ObexError.failed(f"Unable to open file: {exc.strerror}") from None
        obexd = self.session.obexd
        path = f"{self.session.path}/transfer{obexd._next_transfer()}"
        t = PushTransfer(self, path, sourcefile, size, folder)
        obexd.tree.add(path, t)
        task = asyncio.get_running_loop().create_task(t.run(), name=f"obex-push:{path}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return [path, t.properties()]

    def accept_push(self, data: bytes, folder: str) -> bool:
        """The phone's side of the PUT: False is an OBEX error response (transfer ``error``)."""
        if not self.phone.map_push_accepted:
            return False  # "Precondition Failed"
        try:
            parts = self._resolve(folder) if folder else list(self.cwd)
        except ObexError:
            return False
        if parts not in (["telecom", "msg", "outbox"], ["telecom", "msg", "draft"]):
            return False
        try:
            bm = bmessage.parse(data)
        except bmessage.BMessageError:
            return False
        rcpt = bm.recipients[0] if bm.recipients else None
        if rcpt is None or not rcpt.address or bm.type not in D_BUS_TYPE:
            return False
        msg = PhoneMessage(handle=next_handle(self.phone), folder=parts[2], type=bm.type, recipient=rcpt.address,
                           recipient_name=rcpt.display_name, body=bm.text, timestamp=_now(), read=True)
        if bm.type == "EMAIL" and looks_like_mime(bm.text):
            from dashbridge.profiles.map.email_body import parse_email

            msg.subject = parse_email(bm.text).subject
        self.phone.messages.append(msg)
        return True

    # -- events ------------------------------------------------------------------------------------
    def notify_new(self, msg: PhoneMessage) -> None:
        """MNS NewMessage: drop any object for the handle, announce a notification object."""
        tree = self.session.obexd.tree
        old = self.objects.pop(msg.handle, None)
        if old is not None:
            tree.remove(old.path)
        obj = MessageObject(self, msg, notification=True)
        self.objects[msg.handle] = obj
        tree.add(obj.path, obj)


def _typed(v: Variant, sig: str) -> Any:
    if v.signature != sig:
        raise ObexError.invalid_args("Invalid arguments in method call")
    return v.value


def _parse_filter(filters: dict[str, Variant]) -> dict[str, Any]:
    f: dict[str, Any] = {"offset": 0, "maxcount": 1024, "subjectlength": DEFAULT_SUBJECT_LENGTH, "fields": None,
                         "types": None, "periodbegin": "", "periodend": "", "read": None, "recipient": "",
                         "sender": "", "priority": None}
    for k, v in filters.items():
        key = k.lower()
        if key not in FILTER_TYPES:
            continue  # unknown keys are ignored
        f[key] = _typed(v, FILTER_TYPES[key])
    if f["types"] is not None:
        types: set[str] = set()
        for t in f["types"]:
            if t.lower() not in TYPE_FILTER:
                raise ObexError.invalid_args("Invalid arguments in method call")
            types.update(TYPE_FILTER[t.lower()])
        f["types"] = types
    if f["fields"] is not None:
        for name in f["fields"]:
            if name.lower() not in FILTER_FIELDS:
                raise ObexError.invalid_args("Invalid arguments in method call")
        f["fields"] = [n.lower() for n in f["fields"]]
    return f


def _listed_props(fields: list[str] | None) -> set[str]:
    if fields is None:
        return set(FIELD_PROPS.values()) | {"Folder"}
    return MANDATORY_PROPS | {FIELD_PROPS[n] for n in fields if n in FIELD_PROPS}


def _matches(m: PhoneMessage, f: dict[str, Any]) -> bool:
    if f["types"] is not None and m.type not in f["types"]:
        return False
    ts = m.timestamp[:15]
    if f["periodbegin"] and ts < f["periodbegin"][:15]:
        return False
    if f["periodend"] and ts > f["periodend"][:15]:
        return False
    if f["read"] is not None and m.read != f["read"]:
        return False
    if f["priority"] is not None and m.priority != f["priority"]:
        return False
    if f["sender"] and f["sender"].lower() not in (m.sender + " " + m.sender_name).lower():
        return False
    return not (f["recipient"] and f["recipient"].lower() not in (m.recipient + " " + m.recipient_name).lower())


def next_handle(phone: VirtualPhone) -> int:
    """Deterministic handles: one more than the phone's highest."""
    return max((m.handle for m in phone.messages), default=0) + 1


# -------------------------------------------------------------------------------------------------
# Control
# -------------------------------------------------------------------------------------------------


def _map_sessions(obexd: FakeObexd, address: str) -> list[MessageAccess]:
    out = []
    for s in obexd.sessions.values():
        if s.phone.address == address.upper() and not s.closed and isinstance(s.profile_iface, MessageAccess):
            out.append(s.profile_iface)
    return out


def _phone(obexd: FakeObexd, address: str) -> VirtualPhone:
    phone = obexd.phones.get(address.upper())
    if phone is None:
        raise ObexError.invalid_args(f"no such phone {address}")
    return phone


def deliver(obexd: FakeObexd, address: str, *, type: str = "SMS_GSM", sender: str, sender_name: str = "",
            subject: str = "", body: str, html: bool = False, timestamp: str | None = None,
            recipient: str = "", folder: str = "inbox", raw_bmessage: bytes | None = None) -> PhoneMessage:
    """A new message reaches the phone: stored in ``folder`` and, when the phone delivers MAP
    notifications, announced to every MAP session for it.  For ``EMAIL`` the body text is wrapped
    in an RFC 5322 message (``html=True``: an HTML-only mail) unless it already is one."""
    phone = _phone(obexd, address)
    mtype = type.upper()
    if mtype not in D_BUS_TYPE:
        raise ObexError.invalid_args(f"unknown message type {type}")
    if mtype == "EMAIL" and not looks_like_mime(body):
        body = make_email(sender, sender_name, subject, body, html=html)
    msg = PhoneMessage(handle=next_handle(phone), folder=folder, type=mtype, sender=sender, sender_name=sender_name,
                       recipient=recipient, subject=subject, body=body,
                       timestamp=timestamp or _now(), bmessage=raw_bmessage)
    phone.messages.append(msg)
    if phone.map_notifications:
        for access in _map_sessions(obexd, phone.address):
            access.notify_new(msg)
    return msg


def move_on_phone(obexd: FakeObexd, address: str, handle: int, folder: str = "deleted") -> None:
    """The user deletes (or files) a message on the phone itself: MessageDeleted/MessageShift
    events reach every session that has an object for it (only if the phone notifies)."""
    phone = _phone(obexd, address)
    msg = next((m for m in phone.messages if m.handle == handle), None)
    if msg is None:
        raise ObexError.invalid_args(f"no message {handle}")
    msg.folder = folder
    if phone.map_notifications:
        for access in _map_sessions(obexd, phone.address):
            obj = access.objects.get(handle)
            if obj is not None and obj.msg is msg:
                obj.changed("Folder")


def set_notifications(obexd: FakeObexd, address: str, on: bool) -> None:
    _phone(obexd, address).map_notifications = bool(on)


def set_push_accepted(obexd: FakeObexd, address: str, accepted: bool) -> None:
    _phone(obexd, address).map_push_accepted = bool(accepted)


def outbox(obexd: FakeObexd, address: str) -> list[PhoneMessage]:
    """Messages the car pushed (the phone's outbox and drafts)."""
    return [m for m in _phone(obexd, address).messages if m.folder in ("outbox", "draft")]


def _ctl_deliver(obexd: FakeObexd, call: Call, address: str, mtype: str, sender: str, sender_name: str,
                 subject: str, body: str) -> list[Any]:
    return [deliver(obexd, address, type=mtype, sender=sender, sender_name=sender_name, subject=subject,
                    body=body).handle]


def _ctl_outbox(obexd: FakeObexd, call: Call, address: str) -> list[Any]:
    return [[[m.recipient, m.type, m.subject, m.body] for m in outbox(obexd, address)]]


register_control_method("MapDeliver", "ssssss", "t", _ctl_deliver)
register_control_method("MapSetNotifications", "sb", "",
                        lambda obexd, call, a, on: set_notifications(obexd, a, on))
register_control_method("MapSetPushAccepted", "sb", "",
                        lambda obexd, call, a, ok: set_push_accepted(obexd, a, ok))
register_control_method("MapOutbox", "s", "a(ssss)", _ctl_outbox)
register_profile(ObexProfile(names=("map",), uuid=MAP_MAS, phone_profile="map", factory=MessageAccess,
                             default_channel=16))
