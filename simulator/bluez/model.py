"""The fake bluetoothd's vocabulary: names, UUIDs, timings, errors, property tables and the plain
records of its state (agents, profiles, devices, GATT objects) and of what it did (for tests)."""

import asyncio
import re
from dataclasses import dataclass, field, replace
from typing import Any

from .. import names
from ..fakebus import FakeError
from ..phone import VirtualPhone

# --- names (the simulator's own spelling: simulator/names.py) ------------------------------------
BLUEZ = names.BLUEZ
ROOT = names.BLUEZ_ROOT
PROPS_IFACE = names.PROPERTIES
AGENT_MANAGER = names.AGENT_MANAGER
PROFILE_MANAGER = names.PROFILE_MANAGER
ADAPTER = names.ADAPTER
DEVICE = names.DEVICE
AGENT = names.AGENT
GATT_SERVICE = names.GATT_SERVICE
GATT_CHAR = names.GATT_CHAR
GATT_DESC = "org.bluez.GattDescriptor1"
CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"  # Client Characteristic Configuration
PROFILE = names.PROFILE
ERR = names.BLUEZ_ERR
CONTROL_NAME = "org.dashbridge.Sim.Bluez"
CONTROL_PATH = names.SIM_PATH
CONTROL_IFACE = "org.dashbridge.Sim.Bluez1"

BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    return f"{short:08x}{BASE_UUID_TAIL}"


# Car-side (local) profile UUID -> the phone-side (remote) UUID it connects to (reference §1.9).
LOCAL_TO_REMOTE: dict[str, str] = {
    uuid16(0x111E): uuid16(0x111F),  # HFP HF  <-> HFP AG
    uuid16(0x1108): uuid16(0x1112),  # HSP HS  <-> HSP AG
    uuid16(0x110B): uuid16(0x110A),  # A2DP sink <-> A2DP source
    uuid16(0x110E): uuid16(0x110C),  # AVRCP controller <-> AVRCP target
    uuid16(0x112E): uuid16(0x112F),  # PBAP PCE <-> PBAP PSE
    uuid16(0x1133): uuid16(0x1132),  # MAP MNS <-> MAP MAS
}
# Profiles bluetoothd serves itself (the audio plugin): connectable without an external registrant.
BUILTIN_PROFILES = (uuid16(0x110B), uuid16(0x110E))
# Built-in authorization default: true for HFP/HSP/PBAP/MAS/MNS..., false for OPP (reference §1.6).
NO_AUTHORIZATION = {uuid16(0x1105)}

_PROFILE_NAMES = {
    "hfp-hf": uuid16(0x111E), "hfp-ag": uuid16(0x111F), "hsp-hs": uuid16(0x1108), "hsp-ag": uuid16(0x1112),
    "a2dp-sink": uuid16(0x110B), "a2dp-source": uuid16(0x110A), "pbap-pce": uuid16(0x112E),
    "pbap-pse": uuid16(0x112F), "map-mns": uuid16(0x1133), "map-mas": uuid16(0x1132),
    "opp": uuid16(0x1105), "spp": uuid16(0x1101),
}
_UUID128 = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_UUID_SHORT = re.compile(r"^(0x)?([0-9a-fA-F]{4}|[0-9a-fA-F]{8})$")

# Capability strings (src/agent.c / mgmt_parse_io_capability; "" means KeyboardDisplay).
CAPABILITIES = ("DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay")

REASON_PREFIX = names.BLUEZ_REASON

# --- the BlueZ release the fake behaves like ----------------------------------------------------------
VERSION_ENV = "DASHBRIDGE_SIM_BLUEZ_VERSION"  # read when no version is given (tests run both)
CURRENT_VERSION = (5, 87)  # "current": the newest release the fake was checked against
SUPPORTED_VERSIONS = ("5.66", "current")  # what the tests run against


def parse_version(text: str | None) -> tuple[int, int]:
    """``"5.66"`` -> (5, 66); ``"current"``/""/None -> :data:`CURRENT_VERSION`."""
    t = (text or "").strip().lower()
    if t in ("", "current", "latest"):
        return CURRENT_VERSION
    major, _, minor = t.partition(".")
    try:
        v = (int(major), int(minor))
    except ValueError:
        raise ValueError(f"not a BlueZ version: {text!r} (expected e.g. 5.66 or current)") from None
    if v < (5, 66):
        raise ValueError(f"BlueZ {text} is older than the oldest the fake emulates (5.66)")
    return v


# What changed between releases (checked in bluez.git, src/adapter.c, src/device.c, src/error.c):
ADAPTER_PROPS_SINCE = {"Manufacturer": (5, 71), "Version": (5, 71), "Connectable": (5, 79)}
DEVICE_PROPS_SINCE = {"CablePairing": (5, 83), "AdvertisingFlags": (5, 83)}
DISCONNECTED_SIGNAL_SINCE = (5, 83)  # Device1.Disconnected(reason, message)
PROFILE_UNAVAILABLE_SINCE = (5, 84)  # org.bluez.Error.BREDR.ProfileUnavailable
GATT_HANDLE_SINCE = (5, 69)  # Handle on the GATT client's objects (src/gatt-client.c; the fake has it
# on services and characteristics for every release, only descriptors follow the release)


def parse_uuid(text: str) -> str | None:
    """bt_string2uuid: 128-bit, 16/32-bit hex or a known profile name -> lower-case 128-bit."""
    t = text.strip()
    if _UUID128.match(t):
        return t.lower()
    m = _UUID_SHORT.match(t)
    if m:
        return f"{int(m.group(2), 16):08x}{BASE_UUID_TAIL}"
    return _PROFILE_NAMES.get(t.lower())


def parse_capability(text: str) -> str | None:
    if text == "":
        return "KeyboardDisplay"
    for cap in CAPABILITIES:
        if text.startswith(cap):
            return cap
    return None


@dataclass(frozen=True)
class BluezTimings:
    agent_timeout: float = 60.0  # src/agent.c REQUEST_TIMEOUT, then Cancel()
    page_timeout: float = 5.12  # controller default page timeout (0x2000 slots)
    connect_delay: float = 0.05  # ACL set-up for an in-range phone
    sdp_delay: float = 0.05  # service discovery after pairing / first connect
    profile_delay: float = 0.02  # phone connects its profiles after pairing / ACL
    disconnect_grace: float = 0.02  # ACL drop after profiles went (bluetoothd: up to 2 s)
    inquiry_delay: float = 0.05  # first inquiry result after StartDiscovery
    restart_gap: float = 0.1  # bluetoothd down during a simulated restart
    adapter_delay: float = 0.01  # mgmt reports the adapter after the name is owned
    temporary_timeout: float = 30.0  # TemporaryTimeout in main.conf
    profile_timeout: float = 25.0  # waiting for Profile1.NewConnection's reply
    phone_response_delay: float = 0.0  # the phone user taps "Pair"

    @classmethod
    def fast(cls, **over: float) -> "BluezTimings":
        """Short timers for tests (a test never waits 60 s for an agent)."""
        base = cls(agent_timeout=2.0, page_timeout=0.2, connect_delay=0.01, sdp_delay=0.01,
                   profile_delay=0.01, disconnect_grace=0.005, inquiry_delay=0.01, restart_gap=0.05,
                   adapter_delay=0.0, temporary_timeout=5.0, profile_timeout=2.0)
        return replace(base, **over)


class BluezError(FakeError):
    """An error reply: ``BluezError("NotReady", "Resource Not Ready")`` is ``org.bluez.Error.NotReady``."""

    prefix = ERR


# --- property tables ---------------------------------------------------------------------------------
SIGS: dict[str, dict[str, str]] = {
    AGENT_MANAGER: {},
    PROFILE_MANAGER: {},
    ADAPTER: {
        "Address": "s", "AddressType": "s", "Name": "s", "Alias": "s", "Class": "u", "Connectable": "b",
        "Powered": "b", "PowerState": "s", "Discoverable": "b", "DiscoverableTimeout": "u", "Pairable": "b",
        "PairableTimeout": "u", "Discovering": "b", "UUIDs": "as", "Modalias": "s", "Roles": "as",
        "Manufacturer": "q", "Version": "y",
    },
    DEVICE: {
        "Address": "s", "AddressType": "s", "Name": "s", "Alias": "s", "Class": "u", "Icon": "s",
        "Paired": "b", "Bonded": "b", "Trusted": "b", "Blocked": "b", "LegacyPairing": "b", "CablePairing": "b",
        "RSSI": "n", "Connected": "b", "UUIDs": "as", "Modalias": "s", "Adapter": "o", "ServicesResolved": "b",
        "WakeAllowed": "b", "AdvertisingFlags": "ay",
    },
    GATT_SERVICE: {"UUID": "s", "Primary": "b", "Device": "o", "Includes": "ao", "Handle": "q"},
    GATT_CHAR: {"UUID": "s", "Service": "o", "Value": "ay", "Notifying": "b", "Flags": "as", "Handle": "q",
                "MTU": "q", "WriteAcquired": "b", "NotifyAcquired": "b"},
    GATT_DESC: {"UUID": "s", "Characteristic": "o", "Value": "ay", "Handle": "q"},  # Handle: 5.69+
}
WRITABLE: dict[str, set[str]] = {
    ADAPTER: {"Alias", "Powered", "Discoverable", "DiscoverableTimeout", "Pairable", "PairableTimeout",
              "Connectable"},
    DEVICE: {"Alias", "Trusted", "Blocked", "WakeAllowed"},
}
METHODS: dict[str, dict[str, tuple[str, str]]] = {
    AGENT_MANAGER: {"RegisterAgent": ("os", ""), "UnregisterAgent": ("o", ""), "RequestDefaultAgent": ("o", "")},
    PROFILE_MANAGER: {"RegisterProfile": ("osa{sv}", ""), "UnregisterProfile": ("o", "")},
    ADAPTER: {"StartDiscovery": ("", ""), "StopDiscovery": ("", ""), "SetDiscoveryFilter": ("a{sv}", ""),
              "GetDiscoveryFilters": ("", "as"), "RemoveDevice": ("o", "")},
    DEVICE: {"Connect": ("", ""), "Disconnect": ("", ""), "ConnectProfile": ("s", ""),
             "DisconnectProfile": ("s", ""), "Pair": ("", ""), "CancelPairing": ("", "")},
    GATT_SERVICE: {},
    GATT_CHAR: {"ReadValue": ("a{sv}", "ay"), "WriteValue": ("aya{sv}", ""), "StartNotify": ("", ""),
                "StopNotify": ("", "")},
    GATT_DESC: {"ReadValue": ("a{sv}", "ay"), "WriteValue": ("aya{sv}", "")},
}
SIGNALS: dict[str, dict[str, str]] = {DEVICE: {"Disconnected": "ss"}}




@dataclass
class GattCharacteristic:
    """A characteristic a phone serves over LE (plain data: put it in ``VirtualPhone.gatt``)."""

    uuid: str
    flags: tuple[str, ...] = ("read",)  # read, write, write-without-response, notify, indicate, ...
    value: bytes = b""


@dataclass
class GattService:
    uuid: str
    characteristics: list[GattCharacteristic] = field(default_factory=list)
    primary: bool = True


@dataclass
class GattObj:
    dev: "Device"
    char: GattCharacteristic | None  # None for a service or descriptor object
    sessions: set[str] = field(default_factory=set)  # StartNotify clients
    app: Any = None  # the simulator.companion.GattApp serving it (None: static data in ``char.value``)
    desc_uuid: str = ""  # a descriptor object: its UUID (the CCCD)
    parent: str = ""  # a descriptor object: its characteristic's path


def att_error(code: int) -> BluezError:
    """An ATT error response as bluetoothd answers the D-Bus call: create_gatt_dbus_error in
    src/gatt-client.c (the same from 5.66 to current)."""
    if code == 0x02:
        return BluezError("NotPermitted", "Read not permitted")
    if code == 0x03:
        return BluezError("NotPermitted", "Write not permitted")
    if code in (0x05, 0x0F, 0x0C):  # authentication, encryption, encryption key size
        return BluezError("NotPermitted", "Not paired")
    if code == 0x07:
        return BluezError("InvalidArguments", "Invalid offset")
    if code == 0x0D:
        return BluezError("InvalidArguments", "Invalid Length")
    if code == 0x08:
        return BluezError("NotAuthorized", "Operation Not Authorized")
    if code == 0x06:
        return BluezError("NotSupported", "Operation is not supported")
    if code == 0:
        return BluezError("Failed", "Operation failed")
    return BluezError("Failed", f"Operation failed with ATT error: 0x{code:02x}")


@dataclass
class Agent:
    sender: str
    path: str
    capability: str
    busy: bool = False


@dataclass
class Profile:
    sender: str
    path: str
    uuid: str
    options: dict[str, Any]

    @property
    def require_authorization(self) -> bool:
        v = self.options.get("RequireAuthorization")
        return bool(v) if v is not None else self.uuid not in NO_AUTHORIZATION


@dataclass
class Device:
    phone: VirtualPhone
    path: str
    paired: bool = False  # the car's side of the bond
    services_known: bool = False
    profiles: set[str] = field(default_factory=set)  # connected car-side profile UUIDs
    op: asyncio.Task[Any] | None = None
    op_kind: str = ""
    abort: str = ""  # why op was cancelled: canceled | restart | removed
    temp_timer: asyncio.TimerHandle | None = None
    pairing_initiator: str = ""
    state: dict[str, Any] = field(default_factory=dict)  # Device1 properties (None = absent)
    gatt_paths: list[str] = field(default_factory=list)  # its GATT objects, parents first
    link: int = 0  # the current connection's id (a new one on every Connected=true), for GATT apps
    link_gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when that link drops


@dataclass(frozen=True)
class DeviceCall:
    """One Device1 method call the fake served, for tests (e.g. "one phone at a time")."""

    member: str
    address: str
    sender: str
    started: float  # loop time
    ended: float
    outcome: str  # "ok" or the error name + message


@dataclass(frozen=True)
class AgentRequest:
    """One request the fake made to an agent, for tests: what was asked and how it ended."""

    sender: str
    member: str
    device: str
    args: tuple[Any, ...]
    outcome: str  # accepted | rejected | timeout | gone | busy | canceled


PhoneOutcome = str  # paired | rejected | phone_rejected | timeout | no_agent | not_found | busy | canceled | failed

