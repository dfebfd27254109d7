"""Pure pieces of the bluetooth component: input cleaning, roles, error classification.

No I/O and nothing of ours above ``daemon.dbus.names`` (constants only), so every rule here is unit
tested on its own (``tests/unit/test_bluetooth_model.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..dbus import names

# BlueZ keeps remote names up to 248 bytes (HCI_MAX_NAME_LENGTH); so do we, cut at a character.
MAX_NAME_BYTES = 248

_ADDRESS_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Bidirectional overrides and isolates (category Cf) can make a name display as something else.
_BIDI = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
         "\u200e", "\u200f", "\u061c"}
# Zero-width (non-)joiners are format characters too, but emoji sequences and some scripts need them.
_JOINERS = {"\u200c", "\u200d"}

# Phone-side UUIDs we know, by the short profile names the registry and the API use (reference §1.9).
PROFILE_BY_UUID: dict[str, str] = {
    names.UUID_HFP_AG: "hfp",
    names.UUID_HSP_AG: "hsp",
    names.UUID_A2DP_SOURCE: "a2dp",
    names.UUID_AVRCP_TARGET: "avrcp",
    names.UUID_AVRCP_CONTROLLER: "avrcp",
    names.UUID_PBAP_PSE: "pbap",
    names.UUID_MAP_MAS: "map",
    names.UUID_OPP: "opp",
    names.UUID_PNP: "pnp",
    "00001115-0000-1000-8000-00805f9b34fb": "panu",
    "00001116-0000-1000-8000-00805f9b34fb": "nap",
}

# Car-side service UUIDs a paired phone may ask to connect to (AuthorizeService).
CAR_SERVICES: frozenset[str] = frozenset({
    names.UUID_HFP_HF, names.UUID_A2DP_SINK, names.UUID_AVRCP_CONTROLLER, names.UUID_AVRCP_TARGET,
    names.UUID_PBAP_PCE, names.UUID_MAP_MNS, "00001108-0000-1000-8000-00805f9b34fb",  # HSP HS
})

# Bluetooth class of device: major class "phone" (bits 8-12 == 2).
MAJOR_CLASS_PHONE = 2


def valid_address(text: str) -> bool:
    return bool(_ADDRESS_RE.match(text))


def normalize_address(text: str) -> str | None:
    """``aa:bb:..`` -> ``AA:BB:..``; None when it is not a Bluetooth address."""
    t = text.strip()
    return t.upper() if valid_address(t) else None


def clean_name(raw: object, address: str = "") -> str:
    """A device name safe to show and store: no control or bidi characters, whitespace collapsed,
    at most 248 UTF-8 bytes; falls back to a name derived from the address."""
    text = raw if isinstance(raw, str) else ""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in _BIDI or (cat == "Cf" and ch not in _JOINERS):
            continue  # invisible format characters (bidi overrides, soft hyphens...): dropped
        if cat in ("Cc", "Cs", "Co", "Cn") or cat.startswith("Z"):
            out.append(" ")  # control characters and odd spaces: one plain space
            continue
        out.append(ch)
    name = " ".join("".join(out).split())
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip()
    if not name:
        name = f"Phone {address[-5:]}" if address else "Phone"
    return name


def valid_uuids(values: object) -> frozenset[str]:
    """Lower-case 128-bit UUIDs from a BlueZ ``UUIDs`` value; anything else is dropped."""
    if not isinstance(values, (list, tuple)):
        return frozenset()
    out = set()
    for v in values:
        if isinstance(v, str) and _UUID_RE.match(v.lower()):
            out.add(v.lower())
    return frozenset(out)


def valid_uuid(text: object) -> bool:
    return isinstance(text, str) and bool(_UUID_RE.match(text.lower()))


def profiles_of(uuids: Iterable[str]) -> list[str]:
    """Short names of the profiles we know among ``uuids`` (unknown ones are ignored), sorted."""
    return sorted({PROFILE_BY_UUID[u] for u in uuids if u in PROFILE_BY_UUID})


def looks_like_phone(props: dict[str, object]) -> bool:
    """A paired device worth adopting as a phone: class major "phone" or offers HFP AG."""
    cls = props.get("Class")
    if isinstance(cls, int) and (cls >> 8) & 0x1F == MAJOR_CLASS_PHONE:
        return True
    return names.UUID_HFP_AG in valid_uuids(props.get("UUIDs"))


def assign_roles(connected_by_priority: Sequence[str], max_connected: int) -> tuple[dict[str, str], list[str]]:
    """Roles for the connected phones, best priority first: the first is ``primary`` (all
    profiles), the next up to ``max_connected`` are ``secondary`` (calls only).  Returns the
    roles and the phones beyond the limit (to be disconnected), in that order."""
    kept = list(connected_by_priority[:max_connected])
    excess = list(connected_by_priority[max_connected:])
    roles = {addr: ("primary" if i == 0 else "secondary") for i, addr in enumerate(kept)}
    return roles, excess


def format_passkey(passkey: object) -> str | None:
    """A 6-digit zero-padded passkey, or None when BlueZ sent something out of range."""
    if isinstance(passkey, bool) or not isinstance(passkey, int) or not 0 <= passkey <= 999_999:
        return None
    return f"{passkey:06d}"


def parse_pin(value: str) -> str | None:
    """A legacy PIN: 1-16 ASCII letters or digits (BlueZ accepts alphanumeric PINs)."""
    v = value.strip()
    if 1 <= len(v) <= 16 and v.isascii() and v.isalnum():
        return v
    return None


def parse_passkey(value: str) -> int | None:
    v = value.strip()
    if v.isascii() and v.isdigit() and len(v) <= 6:
        return int(v)
    return None


# --- how a BlueZ failure is reported -----------------------------------------------------------


@dataclass(frozen=True)
class ConnectFailure:
    reason: str  # out_of_range | key_missing | adapter_off | busy | no_profiles | canceled | timeout | failed
    retry: bool  # worth another attempt in a retry ladder


def classify_connect_error(error_name: str, text: str) -> ConnectFailure:
    """Map a ``Device1.Connect`` error (reference §1.5, §1.10, doc/errors.txt) onto what we do next."""
    t = text.lower()
    if "key-missing" in t:
        return ConnectFailure("key_missing", False)
    if error_name.endswith(".NotReady") or "adapter-not-powered" in t:
        return ConnectFailure("adapter_off", False)
    if error_name.endswith(".InProgress") or "busy" in t:
        return ConnectFailure("busy", True)
    if error_name == names.BLUEZ_ERR_PROFILE_UNAVAILABLE:
        return ConnectFailure("no_profiles", False)
    if "canceled" in t or "cancelled" in t:
        return ConnectFailure("canceled", False)
    if "page-timeout" in t or "timeout" in t:
        return ConnectFailure("out_of_range", True)
    if error_name.endswith(".AuthenticationFailed") or error_name.endswith(".AuthenticationRejected"):
        # A bonded device whose key the phone no longer has fails authentication.
        return ConnectFailure("key_missing", False)
    return ConnectFailure("failed", True)


def classify_pair_error(error_name: str, text: str) -> str:
    """Reason reported in ``PairingFinished`` for a failed ``Device1.Pair()`` (reference §1.5)."""
    short = error_name.rsplit(".", 1)[-1]
    return {
        "AuthenticationFailed": "rejected",
        "AuthenticationRejected": "rejected",
        "AuthenticationCanceled": "cancelled",
        "AuthenticationTimeout": "timeout",
        "ConnectionAttemptFailed": "out_of_range",
        "InProgress": "busy",
        "NotReady": "adapter_off",
    }.get(short, "failed")


DISCONNECT_REASONS = {
    "org.bluez.Reason.Timeout": "link_loss",
    "org.bluez.Reason.Local": "local",
    "org.bluez.Reason.Remote": "remote",
    "org.bluez.Reason.Authentication": "authentication",
    "org.bluez.Reason.Suspend": "suspend",
    "org.bluez.Reason.Unknown": "unknown",
}
