"""Every size limit on text a phone (or a D-Bus caller) hands us, in ONE place.

A hostile or broken phone can send a 100,000-character name, a 10 MB subject or a contact with
thousands of numbers.  The daemon keeps and hands out at most these many characters / items;
longer text is cut by :func:`clip`, which marks the cut with a trailing ``"…"`` (the result,
marker included, is never longer than the limit).  Documented for API users in the "Limits"
sections of ``docs/api/Contacts1.md``, ``Calls1.md`` and ``Messages1.md``.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

from typing import Final

MARK: Final = "…"  # marks text that was cut

# --- names and numbers (contacts, call history, callers, message senders) ----------------------
MAX_NAME: Final = 200  # a contact's / caller's / sender's display name, nickname, organisation, title
MAX_NUMBER: Final = 64  # one phone number
MAX_EMAIL: Final = 320  # one e-mail address (RFC 5321 limit)
MAX_ADDRESS: Final = 512  # one formatted postal address
MAX_NUMBERS_PER_CONTACT: Final = 32  # numbers kept per contact
MAX_EMAILS_PER_CONTACT: Final = 16
MAX_ADDRESSES_PER_CONTACT: Final = 8
MAX_TYPES: Final = 8  # type labels (home, cell, ...) kept per number / e-mail / address
MAX_PHOTO_BYTES: Final = 256 * 1024  # decoded photo bytes kept per contact (config may lower it)

# --- messages ------------------------------------------------------------------------------------
MAX_SUBJECT: Final = 500
MAX_PREVIEW: Final = 120
MAX_BODY: Final = 64 * 1024  # characters of a message body kept and handed out

# --- what one phone may cost while its phonebook is pulled -------------------------------------
# (bytes of parsed cards kept, photos included; the file is streamed, never held whole)
MAX_PAGE_BYTES: Final = 64 * 1024 * 1024  # of one PBAP page (one PullAll)
MAX_PHONE_BYTES: Final = 128 * 1024 * 1024  # of all the pages of one phone's sync

# --- errors ------------------------------------------------------------------------------------
MAX_ERROR: Final = 512  # an error message sent to a D-Bus caller (arguments quoted in it: MAX_ECHO)
MAX_ECHO: Final = 64  # characters of a caller's argument quoted back in an error message


def clip(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its head ending with ``"…"``
    (``limit`` characters in all)."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[:limit - 1] + MARK


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """A caller's argument as quoted in an error message: ``repr``, clipped."""
    if isinstance(value, str) and len(value) > limit * 4:
        value = value[:limit * 4]  # repr of a 10 MB string is not built just to be cut
    return clip(repr(value), limit)
