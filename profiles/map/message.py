"""A stored message and its id (``<phone address>/<handle>``): pure data, shared by the messages
component (``handler.py``, ``store.py``) and the ``Messages1`` API."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class StoredMessage:
    phone: str
    handle: str
    folder: str = "inbox"
    type: str = "sms"
    direction: str = "in"
    sender: str = ""
    sender_name: str = ""
    recipient: str = ""
    subject: str = ""
    body: str | None = None
    body_state: str = "none"  # none | complete | truncated | broken
    problems: tuple[str, ...] = ()
    attachments: tuple[dict[str, Any], ...] = field(default=())
    received: str = ""
    size: int = 0
    read: bool = False

    @property
    def id(self) -> str:
        return f"{self.phone}/{self.handle}"

    def with_(self, **kw: Any) -> StoredMessage:
        return replace(self, **kw)


def parse_id(message_id: str) -> tuple[str, str] | None:
    """``AA:BB:CC:DD:EE:FF/123`` -> (address, handle)."""
    phone, sep, handle = message_id.partition("/")
    if not sep or len(phone) != 17 or not handle or len(handle) > 40:
        return None
    if not all(c.isalnum() or c == "-" for c in handle):
        return None
    return phone.upper(), handle
