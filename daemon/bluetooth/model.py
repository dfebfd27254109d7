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
    reason: str  # see CONNECT_REASONS; timeout (our budget) | failed (anything else)
    retry: bool  # worth another attempt in a retry ladder
    detail: str = ""  # the BlueZ reason string, short ("page timeout"), for the caller's message

    @property
    def message(self) -> str:
        """What ``dashbridgectl connect`` (Phones1.Connect's error) says."""
        text = CONNECT_MESSAGES.get(self.reason, "the connection failed")
        return f"{text} ({self.detail})" if self.detail else text


# What each failure means to the driver.
CONNECT_MESSAGES: dict[str, str] = {
    "out_of_range": "the phone is out of range",
    "key_missing": "the phone has forgotten the car: forget it here and pair again",
    "adapter_off": "the Bluetooth adapter is switched off",
    "busy": "bluetoothd is busy with this phone",
    "no_profiles": "the phone offers no profile the car can connect",
    "sdp_failed": "the phone did not list its services",
    "refused": "the phone refused the connection",
    "not_supported": "the phone does not support this connection",
    "too_many": "the adapter has too many connections",
    "aborted": "the phone dropped the connection",
    "canceled": "the connection was cancelled",
    "already_connected": "the phone is already connected",
    "failed": "the connection failed",
}

# The reason strings BlueZ puts in an error's message (src/error.h, identical in 5.66 and current
# except where noted), after the "br-connection-"/"le-connection-" prefix, by their first word(s):
# (our reason, worth retrying).  5.66 to 5.83 send them with org.bluez.Error.Failed (profile
# unavailable: org.bluez.Error.NotAvailable from Connect() when no service is left to connect, Failed
# when connecting the next profile failed); 5.84 turned ENOPROTOOPT into the error *name*
# org.bluez.Error.BREDR.ProfileUnavailable ("No more profiles to connect to") and dropped the string.
_REASON_STRINGS: tuple[tuple[str, str, bool], ...] = (
    ("already-connected", "already_connected", False),
    ("page-timeout", "out_of_range", True),
    ("profile-unavailable", "no_profiles", False),  # br- only, 5.66-5.83
    ("sdp-search", "sdp_failed", True),
    ("gatt-browsing", "sdp_failed", True),  # le-: the LE counterpart of the service search
    ("create-socket", "failed", True),
    ("invalid-arguments", "failed", False),
    ("adapter-not-powered", "adapter_off", False),
    ("not-supported", "not_supported", False),
    ("not-suuported", "not_supported", False),  # the spelling of some releases' error.h
    ("bad-socket", "failed", True),
    ("memory-allocation", "failed", True),
    ("busy", "busy", True),
    ("concurrent-connection-limit", "too_many", False),
    ("timeout", "out_of_range", True),  # ETIMEDOUT: the link could not be set up in time
    ("refused", "refused", False),
    ("aborted-by-remote", "aborted", True),
    ("abort-by-remote", "aborted", True),  # le-
    ("aborted-by-local", "canceled", False),
    ("abort-by-local", "canceled", False),  # le-
    ("lmp-protocol-error", "failed", True),
    ("link-layer-protocol-error", "failed", True),  # le-
    ("canceled", "canceled", False),
    ("key-missing", "key_missing", False),
    ("unknown", "failed", True),
)


def bluez_reason_string(text: str) -> tuple[str, str] | None:
    """``("br", "page-timeout")`` for a BlueZ connection reason string anywhere in ``text``."""
    m = re.search(r"\b(br|le)-connection-([a-z-]+)", text.lower())
    return (m.group(1), m.group(2)) if m else None


def classify_connect_error(error_name: str, text: str) -> ConnectFailure:
    """Map a ``Device1.Connect``/``ConnectProfile`` error onto what we do next — by the error *name*
    (which changed between versions, see ``_REASON_STRINGS``) and by the reason *string* in its
    message, so 5.66's ``Failed: br-connection-profile-unavailable`` and 5.84's
    ``BREDR.ProfileUnavailable`` mean the same.  The one place BlueZ connect errors are interpreted."""
    short = error_name.rsplit(".", 1)[-1]
    found = bluez_reason_string(text)
    if found is not None:
        _, stem = found
        for key, reason, retry in _REASON_STRINGS:
            if stem.startswith(key):
                return ConnectFailure(reason, retry, key.replace("-", " "))
    if error_name == names.BLUEZ_ERR_PROFILE_UNAVAILABLE or short == "ProfileUnavailable":
        return ConnectFailure("no_profiles", False, "profile unavailable")  # 5.84+
    if short == "NotAvailable":
        return ConnectFailure("no_profiles", False, "profile unavailable")  # 5.66-5.83 without a string
    if short == "NotReady":
        return ConnectFailure("adapter_off", False)
    if short == "InProgress":
        return ConnectFailure("busy", True)
    if short == "AlreadyConnected":
        return ConnectFailure("already_connected", False)
    t = text.lower()
    if "canceled" in t or "cancelled" in t:
        return ConnectFailure("canceled", False)
    if "page timeout" in t or "timeout" in t or "timed out" in t:
        return ConnectFailure("out_of_range", True, "page timeout")
    if short in ("AuthenticationFailed", "AuthenticationRejected"):
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


# Device1.Disconnected(reason, message) exists from BlueZ 5.83 (src/device.c); before it the daemon
# infers the reason (manager.py ``_disconnect_reason``).
DISCONNECT_REASONS = {
    "org.bluez.Reason.Timeout": "link_loss",
    "org.bluez.Reason.Local": "local",
    "org.bluez.Reason.Remote": "remote",
    "org.bluez.Reason.Authentication": "authentication",
    "org.bluez.Reason.Suspend": "suspend",
    "org.bluez.Reason.Unknown": "unknown",
}
