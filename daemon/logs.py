"""Logging set-up and redaction.

Rule: phone numbers, names, message bodies and keys never appear at INFO or above.  Use
``redact()`` for anything personal that must be mentioned at INFO; put details at DEBUG.
"""

from __future__ import annotations

import hashlib
import logging
import sys


def redact(value: str | None) -> str:
    """A short stable token for a personal value: the same number gives the same token."""
    if not value:
        return "<empty>"
    return "#" + hashlib.blake2s(value.encode(), digest_size=4).hexdigest()


def redact_address(address: str | None) -> str:
    """Bluetooth addresses: keep the last two octets (enough to tell phones apart in a log)."""
    if not address:
        return "<none>"
    return "XX:XX:XX:XX:" + address[-5:]


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # journald adds timestamps; keep lines short.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("dbus_fast").setLevel(logging.WARNING)
