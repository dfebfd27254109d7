"""HFP call and modem models, oFono property parsing and number validation.

Pure: no I/O, imports nothing of ours.  Every parser is total: whatever a phone or oFono sends,
it returns a value (dropping what it cannot understand) or raises :class:`InvalidNumber` /
:class:`InvalidTones` for caller input, never anything else.

oFono facts used here (reference §4.5-4.7, checked against oFono's ``src/voicecall.c``):
* ``VoiceCall.State`` is one of active, held, dialing, alerting, incoming, waiting, disconnected.
* ``LineIdentification`` is the number, ``"withheld"`` when the caller hid it, ``""`` when the
  network did not provide one.
* ``StartTime`` is ``%Y-%m-%dT%H:%M:%S%z`` in oFono's local time, present once active/held.
* Dial numbers must match ``[+][0-9*#]{1,80}`` (``valid_long_phone_number_format``); tones are
  ``0-9 * # A-D`` (and ``p`` pause), upper-cased by oFono.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

CallState = Literal["incoming", "waiting", "dialing", "alerting", "active", "held", "disconnected"]
Direction = Literal["incoming", "outgoing", "unknown"]

CALL_STATES: frozenset[str] = frozenset(
    ("incoming", "waiting", "dialing", "alerting", "active", "held", "disconnected")
)
RINGING_STATES: frozenset[str] = frozenset(("incoming", "waiting"))
OUTGOING_STATES: frozenset[str] = frozenset(("dialing", "alerting"))
LIVE_STATES: frozenset[str] = CALL_STATES - {"disconnected"}

# oFono's OFONO_MAX_PHONE_NUMBER_LENGTH (include/types.h) is 80 digits.
MAX_NUMBER_DIGITS = 80
# A DTMF string longer than this is a mistake (oFono queues each tone for ~0.3 s).
MAX_TONES = 64

# Visual separators people type or paste: removed before the number is checked.
_SEPARATORS = re.compile("[ \u00a0\\-.()/]")
_NUMBER = re.compile(r"\+?[0-9*#]+")
_TONES = re.compile(r"[0-9*#A-Dp]+")


class InvalidNumber(ValueError):
    """A dial string oFono would refuse (or that is not a phone number at all)."""


class InvalidTones(ValueError):
    """A DTMF string with characters outside 0-9 * # A-D p."""


def normalize_dial_number(number: str) -> str:
    """The string to hand to ``VoiceCallManager.Dial``, or :class:`InvalidNumber`.

    Spaces, dashes, dots, slashes and parentheses are removed (``+44 (20) 7946-0958`` ->
    ``+442079460958``); anything else that is not a digit, ``*``, ``#`` or a leading ``+`` is
    rejected, as are empty numbers and numbers of more than 80 digits.
    """
    if not isinstance(number, str):
        raise InvalidNumber("the number must be a string")
    cleaned = _SEPARATORS.sub("", number)
    if not cleaned:
        raise InvalidNumber("the number is empty")
    if not _NUMBER.fullmatch(cleaned):
        raise InvalidNumber("a phone number may only contain digits, * and #, with an optional leading +")
    digits = len(cleaned) - cleaned.startswith("+")
    if digits > MAX_NUMBER_DIGITS:
        raise InvalidNumber(f"the number has {digits} digits; at most {MAX_NUMBER_DIGITS} are allowed")
    return cleaned


def normalize_tones(tones: str) -> str:
    """DTMF tones for ``VoiceCallManager.SendTones`` (upper-cased like oFono does)."""
    if not isinstance(tones, str):
        raise InvalidTones("tones must be a string")
    t = tones.replace(" ", "").upper().replace("P", "p")
    if not t:
        raise InvalidTones("no tones given")
    if len(t) > MAX_TONES:
        raise InvalidTones(f"at most {MAX_TONES} tones at a time")
    if not _TONES.fullmatch(t):
        raise InvalidTones("tones may only be 0-9, *, #, A-D and p (pause)")
    return t


def parse_start_time(value: Any) -> float | None:
    """oFono's ``StartTime`` (``2024-05-01T12:34:56+0200``) as a Unix time, or None."""
    if not isinstance(value, str) or not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            dt = datetime.strptime(value, fmt)
        except ValueError:
            continue
        try:
            return dt.timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _str(props: dict[str, Any], key: str, default: str = "") -> str:
    v = props.get(key, default)
    return v if isinstance(v, str) else default


def _bool(props: dict[str, Any], key: str, default: bool = False) -> bool:
    v = props.get(key, default)
    return v if isinstance(v, bool) else default


def _int(props: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    v = props.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return min(max(v, lo), hi)


def _strs(props: dict[str, Any], key: str) -> tuple[str, ...]:
    v = props.get(key)
    if not isinstance(v, (list, tuple)):
        return ()
    return tuple(x for x in v if isinstance(x, str))


def parse_state(value: Any) -> CallState | None:
    return value if isinstance(value, str) and value in CALL_STATES else None  # type: ignore[return-value]


def direction_for(state: str) -> Direction:
    """The direction a call's *first seen* state implies (oFono does not export direction)."""
    if state in RINGING_STATES:
        return "incoming"
    if state in OUTGOING_STATES:
        return "outgoing"
    return "unknown"


@dataclass(frozen=True)
class CallProps:
    """What oFono told us about one ``VoiceCall`` (only the keys we understood)."""

    state: CallState | None = None
    line_id: str | None = None
    name: str | None = None
    start_time: float | None = None
    multiparty: bool | None = None
    emergency: bool | None = None
    remote_held: bool | None = None


def parse_call_props(props: Any) -> CallProps:
    """Total parser for a ``VoiceCall`` property dict (unwrapped).  Wrong types are dropped."""
    if not isinstance(props, dict):
        return CallProps()
    return CallProps(
        state=parse_state(props.get("State")),
        line_id=props["LineIdentification"][:256] if isinstance(props.get("LineIdentification"), str) else None,
        name=props["Name"][:256] if isinstance(props.get("Name"), str) else None,
        start_time=parse_start_time(props.get("StartTime")),
        multiparty=props["Multiparty"] if isinstance(props.get("Multiparty"), bool) else None,
        emergency=props["Emergency"] if isinstance(props.get("Emergency"), bool) else None,
        remote_held=props["RemoteHeld"] if isinstance(props.get("RemoteHeld"), bool) else None,
    )


@dataclass(frozen=True)
class Call:
    """One call on one phone, as the dashboard sees it."""

    id: str  # ours, stable for the life of the call (also across an oFono restart)
    phone: str  # Bluetooth address of the phone carrying the call
    path: str  # oFono object path (may change after an oFono restart)
    state: CallState
    direction: Direction
    number: str = ""  # "" unknown, "withheld" hidden by the caller
    network_name: str = ""  # CNAP name from the network (often empty on HFP)
    start_time: float | None = None  # Unix time the call became active
    multiparty: bool = False
    emergency: bool = False
    remote_held: bool = False
    disconnect_reason: str = ""  # local | remote | network | link-lost | ofono-lost | phone-disconnected

    @classmethod
    def first_seen(cls, id: str, phone: str, path: str, p: CallProps) -> Call:
        """A call as oFono first announced it (``p.state`` must be known)."""
        state = p.state or "incoming"
        return cls(id, phone, path, state, direction_for(state), p.line_id or "", p.name or "", p.start_time,
                   bool(p.multiparty), bool(p.emergency), bool(p.remote_held))

    def with_props(self, p: CallProps) -> Call:
        """A copy with every known field of ``p`` applied."""
        changes: dict[str, Any] = {}
        if p.state is not None:
            changes["state"] = p.state
        if p.line_id is not None:
            changes["number"] = p.line_id
        if p.name is not None:
            changes["network_name"] = p.name
        if p.start_time is not None:
            changes["start_time"] = p.start_time
        if p.multiparty is not None:
            changes["multiparty"] = p.multiparty
        if p.emergency is not None:
            changes["emergency"] = p.emergency
        if p.remote_held is not None:
            changes["remote_held"] = p.remote_held
        return replace(self, **changes) if changes else self

    def apply(self, name: str, value: Any) -> Call:
        """One ``PropertyChanged(name, value)`` applied."""
        return self.with_props(parse_call_props({name: value}))

    @property
    def ringing(self) -> bool:
        return self.state in RINGING_STATES

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class ModemProps:
    """``org.ofono.Modem`` properties we use."""

    powered: bool = False
    online: bool = False
    serial: str = ""
    name: str = ""
    type: str = ""
    interfaces: frozenset[str] = field(default_factory=frozenset)
    path_address: str = ""  # from the object path /hfp/org/bluez/hciN/dev_XX_XX_XX_XX_XX_XX

    @property
    def address(self) -> str:
        """The phone's Bluetooth address, upper-case, or "".

        REF≠REAL: the reference says HFP modems carry ``Serial`` = address; real oFono 1.31 only
        has ``Serial`` once the modem is powered (it comes from the devinfo atom), so an unpowered
        modem is recognised by its object path (``"hfp" + <BlueZ device path>``)."""
        s = self.serial.strip().upper()
        return s if _ADDRESS.fullmatch(s) else self.path_address


_ADDRESS = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")


def address_from_modem_path(path: Any) -> str:
    """``/hfp/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`` -> ``AA:BB:CC:DD:EE:FF`` (else "")."""
    if not isinstance(path, str):
        return ""
    last = path.rsplit("/", 1)[-1]
    if not last.startswith("dev_"):
        return ""
    addr = last[4:].replace("_", ":").upper()
    return addr if _ADDRESS.fullmatch(addr) else ""


def parse_modem_props(props: Any, path: str = "") -> ModemProps:
    if not isinstance(props, dict):
        return ModemProps(path_address=address_from_modem_path(path))
    return ModemProps(
        powered=_bool(props, "Powered"),
        online=_bool(props, "Online"),
        serial=_str(props, "Serial"),
        name=_str(props, "Name")[:256],
        type=_str(props, "Type"),
        interfaces=frozenset(_strs(props, "Interfaces")),
        path_address=address_from_modem_path(path),
    )


def apply_modem_change(m: ModemProps, name: str, value: Any) -> ModemProps:
    if name == "Powered" and isinstance(value, bool):
        return replace(m, powered=value)
    if name == "Online" and isinstance(value, bool):
        return replace(m, online=value)
    if name == "Interfaces" and isinstance(value, (list, tuple)):
        return replace(m, interfaces=frozenset(x for x in value if isinstance(x, str)))
    if name == "Name" and isinstance(value, str):
        return replace(m, name=value[:256])
    if name == "Serial" and isinstance(value, str):
        return replace(m, serial=value)
    return m


@dataclass(frozen=True)
class PhoneStatus:
    """Per-phone telephony status shown on the dashboard."""

    address: str
    name: str = ""
    ready: bool = False  # the hands-free link is up (VoiceCallManager present)
    operator: str = ""
    registration: str = ""  # registered | roaming | unregistered | searching | denied | unknown | ""
    signal: int = -1  # 0-100, -1 unknown
    battery: int = -1  # 0-100, -1 unknown (HFP reports 0-5; we scale by 20)
    inband_ringing: bool = False
    features: tuple[str, ...] = ()

    def with_netreg(self, props: dict[str, Any]) -> PhoneStatus:
        changes: dict[str, Any] = {}
        if isinstance(props.get("Name"), str):
            changes["operator"] = props["Name"][:64]
        if isinstance(props.get("Status"), str):
            changes["registration"] = props["Status"][:32]
        s = _int(props, "Strength", 0, 100)
        if s is not None:
            changes["signal"] = s
        return replace(self, **changes) if changes else self

    def with_handsfree(self, props: dict[str, Any]) -> PhoneStatus:
        changes: dict[str, Any] = {}
        b = _int(props, "BatteryChargeLevel", 0, 5)
        if b is not None:
            changes["battery"] = b * 20
        if isinstance(props.get("InbandRinging"), bool):
            changes["inband_ringing"] = props["InbandRinging"]
        if "Features" in props:
            changes["features"] = _strs(props, "Features")
        return replace(self, **changes) if changes else self


def display_name(contact: str | None, network_name: str, number: str) -> tuple[str, str]:
    """(name to show, where it came from): the phone's contact, else the network's CNAP name,
    else the number itself.  Sources: ``contacts``, ``network``, ``number``, ``""`` (nothing)."""
    if contact:
        return contact, "contacts"
    if network_name and network_name != "withheld":
        return network_name, "network"
    if number:
        return number, "number"
    return "", ""
