"""Pure helpers for MAP listings as obexd presents them (reference §2.7): Message1 properties ->
a typed :class:`Listing`, MAP datetimes -> ISO 8601, handles from object paths, type names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# Message1.Type -> our API type
API_TYPE = {"sms-gsm": "sms", "sms-cdma": "sms", "mms": "mms", "email": "email"}
# bMessage TYPE -> our API type
BMSG_API_TYPE = {"SMS_GSM": "sms", "SMS_CDMA": "sms", "MMS": "mms", "EMAIL": "email", "IM": "im"}
# MessageAccess1.SupportedTypes -> ListMessages "Types" filter values
SUPPORTED_TO_FILTER = {"SMS_GSM": "sms", "SMS_CDMA": "sms", "MMS": "mms", "EMAIL": "email"}

_PATH_RE = re.compile(r"/message(\d{1,20})$")
_DT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:([+-])(\d{2})(\d{2})|Z)?$")
MAP_DATETIME = "%Y%m%dT%H%M%S"


def handle_from_path(path: str) -> str | None:
    """``/org/bluez/obex/client/session0/message1234`` -> ``"1234"`` (obexd prints the 64-bit
    handle in decimal); None if the path is not a message object."""
    m = _PATH_RE.search(path)
    return m.group(1) if m else None


def map_datetime_to_iso(value: str) -> str:
    """``20240501T102030`` -> ``2024-05-01T10:20:30``; ``...+0100`` -> ``...+01:00``; "" if invalid."""
    m = _DT_RE.match(value.strip())
    if not m:
        return ""
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    try:
        dt = datetime(y, mo, d, h, mi, s)
    except ValueError:
        return ""
    out = dt.isoformat()
    if m.group(7):
        out += f"{m.group(7)}{m.group(8)}:{m.group(9)}"
    elif value.strip().endswith("Z"):
        out += "+00:00"
    return out


def local_iso(now: datetime | None = None) -> str:
    """The car's local time as an ISO 8601 string with its offset."""
    return (now or datetime.now(UTC).astimezone()).replace(microsecond=0).isoformat()


def period_begin(days: int, now: datetime | None = None) -> str:
    """The ``PeriodBegin`` filter value for "the last ``days`` days" (phone local time)."""
    base = now or datetime.now()
    return (base - timedelta(days=days)).strftime(MAP_DATETIME)


@dataclass(frozen=True)
class Listing:
    handle: str
    folder: str  # last component: inbox, sent, ...
    type: str  # sms | mms | email | "" (unknown)
    subject: str
    timestamp: str  # raw MAP datetime
    sender_name: str
    sender: str
    recipient: str
    size: int
    read: bool
    status: str  # complete | fractioned | notification | ...


def _s(props: dict[str, Any], key: str, limit: int = 1000) -> str:
    v = props.get(key)
    if not isinstance(v, str):
        return ""
    return "".join(ch for ch in v if ch >= " " and ch != "\x7f")[:limit]


def listing_from_props(path: str, props: dict[str, Any]) -> Listing | None:
    """A Message1 property dict (already unwrapped) -> Listing; None if the path is not a message.
    Wrongly typed values from a misbehaving service are treated as absent."""
    handle = handle_from_path(path)
    if handle is None:
        return None
    folder = _s(props, "Folder").rstrip("/").rsplit("/", 1)[-1].lower()
    size = props.get("Size")
    read = props.get("Read")
    return Listing(
        handle=handle,
        folder=folder,
        type=API_TYPE.get(_s(props, "Type").lower(), ""),
        subject=_s(props, "Subject", 500),
        timestamp=_s(props, "Timestamp", 40),
        sender_name=_s(props, "Sender", 200),
        sender=_s(props, "SenderAddress", 320),
        recipient=_s(props, "RecipientAddress", 320),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
        read=read if isinstance(read, bool) else False,
        status=_s(props, "Status", 40),
    )


def preview(text: str, limit: int = 120) -> str:
    """One line of at most ``limit`` characters for a dashboard banner."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1].rstrip() + "…"
