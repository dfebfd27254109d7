"""A fake ``org.bluez`` (bluetoothd) on a private system bus, faithful enough that the daemon cannot
tell it from the real one (reference ../shared/reference/bluez-obex-ofono-api.md §1, §7 items 1-10).

What it reproduces (and python-dbusmock's bluez5 template does not, reference §9.1):

* ObjectManager at ``/``; ``AgentManager1`` + ``ProfileManager1`` at ``/org/bluez``; one adapter
  ``/org/bluez/hciN``; devices ``dev_XX_XX_..``.  Property changes, interface additions and removals
  are batched and flushed once per loop iteration like gdbus (§0.1): several changes to one
  interface arrive as ONE ``PropertiesChanged`` with the current values; changes to a not-yet
  announced interface are folded into its ``InterfacesAdded``; pending changes are flushed before
  ``InterfacesRemoved``; add+remove in one iteration emits nothing.
* Agents keyed by D-Bus *connection* (one each, ``AlreadyExists`` otherwise), capability
  prefix-matching, a stack of default agents with promotion when the default leaves, one
  outstanding request per agent, ``agent_timeout`` (60 s like ``REQUEST_TIMEOUT``) then
  ``Cancel()``, any error reply = rejection, ``Release`` only on a clean simulated shutdown.
* Remote-initiated pairing asks the *default* agent; a local ``Pair()`` asks the caller's agent
  (else the default one), auto-accepts just-works, and replies only after service discovery;
  ``Paired``/``Bonded``/``UUIDs``/``ServicesResolved`` change together after SDP.
* ``AuthorizeService(dev, uuid)`` for every incoming profile connection from an untrusted device;
  no default agent means rejected.
* ``Connect()`` on a connected device succeeds, ``Disconnect()`` on a disconnected one succeeds and
  cancels a pending ``Connect`` (``br-connection-canceled``) or ``Pair`` (``AuthenticationCanceled``);
  ``Failed br-connection-page-timeout`` out of range, ``br-connection-key-missing`` when the phone
  forgot the bond, ``NotReady`` with the adapter off.
* ``RegisterProfile`` rules (``AlreadyExists`` same sender+path, ``NotPermitted`` "UUID already
  registered") and ``Profile1.NewConnection(device, fd, props)`` with one end of a socketpair when
  a phone connects that profile (the other end is kept for the fake phone side:
  :meth:`FakeBluez.profile_socket`).
* Discovery sessions per client connection; ``RSSI`` invalidated when discovery stops; temporary
  devices removed ``temporary_timeout`` after they were last seen.
* A simulated bluetoothd restart: the connection (and so the name) is dropped, every object,
  agent, profile and discovery session is forgotten, then a new connection owns ``org.bluez``
  again and re-announces the objects (paired devices stay paired).

Control: the Python API of :class:`FakeBluez` (used in-process by tests and the scenario runner),
and ``org.dashbridge.Sim.Bluez1`` at ``/org/dashbridge/sim`` owned as ``org.dashbridge.Sim.Bluez``
on a separate connection that survives simulated restarts.

Timings are :class:`BluezTimings`; the defaults are bluetoothd's (60 s agent timeout, 5.12 s page
timeout, 30 s temporary devices) and :meth:`BluezTimings.fast` is for tests.
"""

import asyncio
import contextlib
import itertools
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from .phone import VirtualPhone

log = logging.getLogger(__name__)

# --- names (kept here: the simulator does not import the daemon) ----------------------------------
BLUEZ = "org.bluez"
ROOT = "/org/bluez"
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
INTROSPECT_IFACE = "org.freedesktop.DBus.Introspectable"
PEER_IFACE = "org.freedesktop.DBus.Peer"
AGENT_MANAGER = "org.bluez.AgentManager1"
PROFILE_MANAGER = "org.bluez.ProfileManager1"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
AGENT = "org.bluez.Agent1"
GATT_SERVICE = "org.bluez.GattService1"
GATT_CHAR = "org.bluez.GattCharacteristic1"
PROFILE = "org.bluez.Profile1"
ERR = "org.bluez.Error."
CONTROL_NAME = "org.dashbridge.Sim.Bluez"
CONTROL_PATH = "/org/dashbridge/sim"
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
_NO_AUTHORIZATION = {uuid16(0x1105)}

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

REASON_PREFIX = "org.bluez.Reason."


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


class BluezError(Exception):
    def __init__(self, short: str, text: str = "") -> None:
        self.name = short if "." in short else ERR + short
        self.text = text
        super().__init__(f"{self.name}: {text}")


# --- property tables ---------------------------------------------------------------------------------
_SIGS: dict[str, dict[str, str]] = {
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
                "MTU": "q"},
}
_WRITABLE: dict[str, set[str]] = {
    ADAPTER: {"Alias", "Powered", "Discoverable", "DiscoverableTimeout", "Pairable", "PairableTimeout",
              "Connectable"},
    DEVICE: {"Alias", "Trusted", "Blocked", "WakeAllowed"},
}
_METHODS: dict[str, dict[str, tuple[str, str]]] = {
    AGENT_MANAGER: {"RegisterAgent": ("os", ""), "UnregisterAgent": ("o", ""), "RequestDefaultAgent": ("o", "")},
    PROFILE_MANAGER: {"RegisterProfile": ("osa{sv}", ""), "UnregisterProfile": ("o", "")},
    ADAPTER: {"StartDiscovery": ("", ""), "StopDiscovery": ("", ""), "SetDiscoveryFilter": ("a{sv}", ""),
              "GetDiscoveryFilters": ("", "as"), "RemoveDevice": ("o", "")},
    DEVICE: {"Connect": ("", ""), "Disconnect": ("", ""), "ConnectProfile": ("s", ""),
             "DisconnectProfile": ("s", ""), "Pair": ("", ""), "CancelPairing": ("", "")},
    OM_IFACE: {"GetManagedObjects": ("", "a{oa{sa{sv}}}")},
    GATT_SERVICE: {},
    GATT_CHAR: {"ReadValue": ("a{sv}", "ay"), "WriteValue": ("aya{sv}", ""), "StartNotify": ("", ""),
                "StopNotify": ("", "")},
}
_SIGNALS: dict[str, dict[str, str]] = {DEVICE: {"Disconnected": "ss"}}


def _variant(sig: str, value: Any) -> Variant:
    return Variant(sig, value)


class _Obj:
    def __init__(self, path: str) -> None:
        self.path = path
        self.props: dict[str, dict[str, Any]] = {}

    def iface_props(self, iface: str) -> dict[str, Variant]:
        sigs = _SIGS.get(iface, {})
        return {k: _variant(sigs[k], v) for k, v in self.props.get(iface, {}).items() if v is not None}


class _Flusher:
    """gdbus-style batching: interface additions/removals and property changes are emitted from an
    idle callback once per loop iteration (reference §0.1)."""

    def __init__(self, fake: "FakeBluez") -> None:
        self.fake = fake
        self.order: list[tuple[str, str, str]] = []  # (kind, path, iface), kind: add | chg | rm
        self.adding: set[tuple[str, str]] = set()
        self.changed: dict[tuple[str, str], set[str]] = {}
        self.scheduled = False

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def added(self, path: str, iface: str) -> None:
        self.adding.add((path, iface))
        self.order.append(("add", path, iface))
        self._schedule()

    def changed_prop(self, path: str, iface: str, name: str) -> None:
        key = (path, iface)
        if key in self.adding:
            return  # folded into InterfacesAdded (current values are read at flush time)
        if key not in self.changed:
            self.changed[key] = set()
            self.order.append(("chg", path, iface))
        self.changed[key].add(name)
        self._schedule()

    def removed(self, path: str, iface: str) -> None:
        key = (path, iface)
        if key in self.adding:
            self.adding.discard(key)  # added and removed within one iteration: no signal at all
            self.changed.pop(key, None)
            return
        names = self.changed.pop(key, None)
        if names:
            self._emit_changed(path, iface, names)  # pending changes go out before the removal
        self.order.append(("rm", path, iface))
        self._schedule()

    def flush(self) -> None:
        self.scheduled = False
        order, self.order = self.order, []
        adding, self.adding = self.adding, set()
        changed, self.changed = self.changed, {}
        done_add: set[str] = set()
        i = 0
        while i < len(order):
            kind, path, iface = order[i]
            if kind == "add" and (path, iface) in adding and path not in done_add:
                ifaces = [f for (k, p, f) in order if k == "add" and p == path and (p, f) in adding]
                done_add.add(path)
                obj = self.fake._objects.get(path)
                if obj is not None:
                    body = {f: obj.iface_props(f) for f in ifaces if f in obj.props}
                    if body:
                        self.fake._send_signal("/", OM_IFACE, "InterfacesAdded", "oa{sa{sv}}", [path, body])
            elif kind == "chg" and (path, iface) in changed:
                self._emit_changed(path, iface, changed.pop((path, iface)))
            elif kind == "rm":
                ifaces = [iface]
                while i + 1 < len(order) and order[i + 1][0] == "rm" and order[i + 1][1] == path:
                    i += 1
                    ifaces.append(order[i][2])
                self.fake._send_signal("/", OM_IFACE, "InterfacesRemoved", "oas", [path, ifaces])
            i += 1

    def _emit_changed(self, path: str, iface: str, names: set[str]) -> None:
        obj = self.fake._objects.get(path)
        if obj is None or iface not in obj.props:
            return
        sigs = _SIGS[iface]
        props = obj.props[iface]
        changed = {n: _variant(sigs[n], props[n]) for n in sorted(names) if props.get(n) is not None}
        invalidated = sorted(n for n in names if props.get(n) is None)
        if changed or invalidated:
            self.fake._send_signal(path, PROPS_IFACE, "PropertiesChanged", "sa{sv}as", [iface, changed, invalidated])

    def reset(self) -> None:
        self.order, self.adding, self.changed, self.scheduled = [], set(), {}, False


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
class _GattObj:
    dev: "_Device"
    char: GattCharacteristic | None  # None for a service object
    sessions: set[str] = field(default_factory=set)  # StartNotify clients


@dataclass
class _Agent:
    sender: str
    path: str
    capability: str
    busy: bool = False


@dataclass
class _Profile:
    sender: str
    path: str
    uuid: str
    options: dict[str, Any]

    @property
    def require_authorization(self) -> bool:
        v = self.options.get("RequireAuthorization")
        return bool(v) if v is not None else self.uuid not in _NO_AUTHORIZATION


@dataclass
class _Device:
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


class FakeBluez:
    """A bluetoothd on a private bus.  ``await FakeBluez.start(address, phones)``."""

    def __init__(self, bus_address: str, *, timings: BluezTimings | None = None, adapter: str = "hci0",
                 adapter_address: str = "00:1A:7D:DA:71:13", adapter_name: str = "dashbridge-sim",
                 adapter_class: int = 0x200420, powered: bool = True, control: bool = True) -> None:
        self.address = bus_address
        self.t = timings or BluezTimings()
        self.adapter_path = f"{ROOT}/{adapter}"
        self.adapter_address = adapter_address.upper()
        self._adapter_name = adapter_name
        self._adapter_class = adapter_class
        self._control_wanted = control
        self._bus: MessageBus | None = None
        self._control_bus: MessageBus | None = None
        self._objects: dict[str, _Obj] = {}
        self._flusher = _Flusher(self)
        self._devices: dict[str, _Device] = {}  # by address
        self._agents: dict[str, _Agent] = {}  # by sender
        self._default_stack: list[str] = []  # senders; [0] is the default agent
        self._profiles: list[_Profile] = []
        self._discovery: set[str] = set()
        self._discovery_filters: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._profile_socks: dict[tuple[str, str], socket.socket] = {}
        self._profile_listeners: list[Callable[[str, str, bool], None]] = []
        self._tick = asyncio.Event()
        self._passkeys = itertools.count(1)
        self._generation = 0
        self._discoverable_timer: asyncio.TimerHandle | None = None
        self._pairable_timer: asyncio.TimerHandle | None = None
        self._inquiry: asyncio.Task[None] | None = None
        self.agent_log: list[AgentRequest] = []
        self._gatt: dict[str, _GattObj] = {}
        self.gatt_writes: list[tuple[str, str, bytes]] = []  # (address, characteristic UUID, value)
        self.device_calls: list[DeviceCall] = []
        self._connect_faults: dict[str, list[tuple[str, str]]] = {}
        self.running = False
        self._adapter_state: dict[str, Any] = {
            "Address": self.adapter_address, "AddressType": "public", "Name": adapter_name, "Alias": adapter_name,
            "Class": adapter_class, "Connectable": True, "Powered": powered, "PowerState": "on" if powered else "off",
            "Discoverable": False, "DiscoverableTimeout": 180, "Pairable": True, "PairableTimeout": 0,
            "Discovering": False, "UUIDs": sorted({*BUILTIN_PROFILES, uuid16(0x111E), uuid16(0x1200)}),
            "Modalias": "usb:v1D6Bp0246d0550", "Roles": ["central", "peripheral"], "Manufacturer": 2, "Version": 9,
        }

    # ================================================================================================
    # life cycle
    # ================================================================================================
    @classmethod
    async def start(cls, bus_address: str, phones: Iterable[VirtualPhone] = (), **kw: Any) -> "FakeBluez":
        fake = cls(bus_address, **kw)
        for p in phones:
            fake.add_phone(p, paired=p.bonded, trusted=p.bonded)
        await fake._come_up()
        if fake._control_wanted:
            fake._control_bus = await MessageBus(bus_address=bus_address).connect()
            fake._control_bus.export(CONTROL_PATH, BluezControl(fake))
            await fake._control_bus.request_name(CONTROL_NAME)
        return fake

    async def stop(self) -> None:
        await self._go_down(clean=True)
        if self._control_bus is not None:
            self._control_bus.disconnect()
            self._control_bus = None
        for s in self._profile_socks.values():
            s.close()
        self._profile_socks.clear()

    async def restart(self, *, gap: float | None = None, clean: bool = False) -> None:
        """Simulated bluetoothd restart (crash by default: no ``Release`` to agents)."""
        await self._go_down(clean=clean)
        await asyncio.sleep(self.t.restart_gap if gap is None else gap)  # the simulated downtime
        await self._come_up()

    async def crash(self) -> None:
        """bluetoothd gone and not coming back (until :meth:`revive`)."""
        await self._go_down(clean=False)

    async def go_down_cleanly(self) -> None:
        """``systemctl stop bluetooth``: agents and profiles get ``Release`` first."""
        await self._go_down(clean=True)

    async def revive(self) -> None:
        await self._come_up()

    @property
    def owner(self) -> str | None:
        """The unique bus name bluetoothd currently has (None while down)."""
        return self._bus.unique_name if self._bus is not None and self.running else None

    async def _come_up(self) -> None:
        bus = await MessageBus(bus_address=self.address, negotiate_unix_fd=True).connect()
        self._bus = bus
        self._generation += 1
        bus.add_message_handler(self._on_message)
        await asyncio.wait_for(bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
            member="AddMatch", signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"])), 5.0)
        root = _Obj(ROOT)
        root.props = {AGENT_MANAGER: {}, PROFILE_MANAGER: {}}
        self._objects = {ROOT: root}
        self.running = True
        # bluetoothd owns the name with /org/bluez in place; adapters follow when mgmt reports them.
        await bus.request_name(BLUEZ)
        self._bump()
        gen = self._generation
        if self.t.adapter_delay > 0:
            await asyncio.sleep(self.t.adapter_delay)
        else:
            await asyncio.sleep(0)
        if gen != self._generation or not self.running:
            return
        self._announce_adapter()

    def _announce_adapter(self) -> None:
        obj = _Obj(self.adapter_path)
        obj.props[ADAPTER] = self._adapter_state
        self._objects[self.adapter_path] = obj
        self._flusher.added(self.adapter_path, ADAPTER)
        for dev in self._devices.values():
            if dev.paired:
                self._export_device(dev)
                if dev.services_known:
                    self._export_gatt(dev)  # [GATT] Cache = always: the tree is back with the device
        self._bump()

    async def _go_down(self, *, clean: bool) -> None:
        if not self.running:
            return
        bus = self._bus
        if clean and bus is not None:
            for agent in list(self._agents.values()):
                self._send_noreply(agent.sender, agent.path, AGENT, "Release")
            for prof in self._profiles:
                self._send_noreply(prof.sender, prof.path, PROFILE, "Release")
        self.running = False
        self._generation += 1
        for task in list(self._tasks):
            task.cancel()
        for dev in self._devices.values():
            if dev.op is not None:
                dev.abort = "restart"
                dev.op.cancel()
            if dev.temp_timer:
                dev.temp_timer.cancel()
                dev.temp_timer = None
            if self._device_state(dev).get("Connected"):
                self._notify_profiles(dev, set(dev.profiles), connected=False)
            dev.profiles.clear()
        # Every connection drops with bluetoothd; temporary (unpaired) devices are forgotten by it
        # (the phones themselves stay in the world).
        for dev in self._devices.values():
            st = self._device_state(dev)
            st.update({"Connected": False, "ServicesResolved": False, "RSSI": None})
            if not dev.paired:
                dev.state = {}
                dev.services_known = False
        for t in (self._discoverable_timer, self._pairable_timer):
            if t:
                t.cancel()
        if self._inquiry:
            self._inquiry.cancel()
        self._adapter_state.update({"Discovering": False, "Discoverable": False})
        self._agents.clear()
        self._default_stack.clear()
        self._profiles.clear()
        self._gatt.clear()
        for dev in self._devices.values():
            dev.gatt_paths = []
        self._discovery.clear()
        self._discovery_filters.clear()
        self._flusher.reset()
        self._objects = {}
        if bus is not None:
            if clean:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bus.release_name(BLUEZ), 1.0)
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), 2.0)  # type: ignore[no-untyped-call]
        self._bus = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        self._bump()

    # ================================================================================================
    # world: the Python control API
    # ================================================================================================
    def add_phone(self, phone: VirtualPhone, *, paired: bool = False, trusted: bool | None = None,
                  connected: bool = False) -> str:
        """Put a phone in the world.  ``paired=True``: both sides already bonded (the device object
        exists with Paired/Bonded/UUIDs); ``connected=True``: it is also connected (as if it had been
        before anyone looked: no agent or profile calls are made)."""
        addr = phone.address.upper()
        if addr in self._devices:
            raise ValueError(f"phone {addr} already added")
        path = f"{self.adapter_path}/dev_{addr.replace(':', '_')}"
        dev = _Device(phone, path)
        self._devices[addr] = dev
        if paired or connected:
            phone.bonded = True
            dev.paired = True
            dev.services_known = True
            st = self._new_device_state(dev)
            st.update({"Paired": True, "Bonded": True, "UUIDs": list(phone.uuids),
                       "Trusted": bool(trusted if trusted is not None else True)})
            if connected:
                st.update({"Connected": True, "ServicesResolved": True})
                dev.profiles = set(self._connectable_local_profiles(dev, builtin_only=True))
            if self.running and self.adapter_path in self._objects:
                self._export_device(dev)
        elif self.running and self._adapter_state["Discovering"] and phone.in_range and phone.discoverable:
            self._seen(dev)
        self._bump()
        return path

    def remove_phone(self, address: str) -> None:
        dev = self._dev(address)
        if dev.op:
            dev.abort = "removed"
            dev.op.cancel()
        self._unexport_device(dev)
        del self._devices[dev.phone.address]
        self._bump()

    def phone(self, address: str) -> VirtualPhone:
        return self._dev(address).phone

    async def set_in_range(self, address: str, in_range: bool) -> None:
        dev = self._dev(address)
        dev.phone.in_range = in_range
        if not in_range:
            if dev.op is not None:
                dev.abort = "canceled"
                dev.op.cancel()
            if self._exported(dev) and self._device_state(dev).get("Connected"):
                await self._drop_link(dev, "Timeout", "Connection timed out")
        else:
            if self._adapter_state["Discovering"] and dev.phone.discoverable and self.running:
                self._seen(dev)
            if dev.phone.auto_reconnect and dev.phone.bonded and dev.paired and self.running:
                self._spawn(self._remote_connect(dev))
        self._bump()

    def set_phone_accepts_pairing(self, address: str, accept: bool) -> None:
        self._dev(address).phone.accepts_pairing = accept

    def phone_forget_bond(self, address: str) -> None:
        """The user removed the car on the phone: the car's key no longer works (key-missing)."""
        dev = self._dev(address)
        dev.phone.bonded = False
        if self._exported(dev) and self._device_state(dev).get("Connected"):
            self._spawn(self._drop_link(dev, "Remote", "Connection terminated by remote user"))

    async def phone_pair(self, address: str, *, passkey: int | None = None) -> PhoneOutcome:
        """The phone starts pairing with the car (the car must be discoverable or already known).
        Returns when pairing ended: ``paired`` or why not."""
        dev = self._dev(address)
        if passkey is not None:
            dev.phone.passkey = passkey
        if not self.running or self.adapter_path not in self._objects:
            return "not_found"
        if dev.op is not None:
            return "busy"
        task = asyncio.get_running_loop().create_task(self._remote_pair(dev))
        dev.op, dev.op_kind = task, "pair"
        self._tasks.add(task)
        await asyncio.wait({task})
        self._tasks.discard(task)
        if dev.op is task:
            dev.op = None
        if task.cancelled():
            return "canceled"
        return task.result()

    async def phone_connect(self, address: str) -> bool:
        """The phone connects by itself (e.g. it came back in range).  True when a profile connected."""
        return await self._remote_connect(self._dev(address))

    async def phone_disconnect(self, address: str) -> None:
        dev = self._dev(address)
        if self._exported(dev) and self._device_state(dev).get("Connected"):
            await self._drop_link(dev, "Remote", "Connection terminated by remote user")

    async def set_powered(self, on: bool) -> None:
        """Someone switches the adapter (bluetoothctl power, rfkill): the daemon has to cope."""
        await self._set_powered(on)

    def profile_socket(self, address: str, uuid: str) -> socket.socket | None:
        """The phone's end of the socketpair handed to ``Profile1.NewConnection`` for this profile."""
        return self._profile_socks.get((address.upper(), uuid.lower()))

    def add_profile_listener(self, cb: Callable[[str, str, bool], None]) -> None:
        """``cb(address, local_uuid, connected)`` whenever a car-side profile connects/disconnects."""
        self._profile_listeners.append(cb)

    # -- inspection --------------------------------------------------------------------------------
    def adapter_props(self) -> dict[str, Any]:
        return {k: v for k, v in self._adapter_state.items() if v is not None}

    def device_props(self, address: str) -> dict[str, Any] | None:
        dev = self._devices.get(address.upper())
        if dev is None or not self._exported(dev):
            return None
        return {k: v for k, v in self._device_state(dev).items() if v is not None}

    def connected_profiles(self, address: str) -> set[str]:
        return set(self._dev(address).profiles)

    @property
    def agents(self) -> list[tuple[str, str, str]]:
        return [(a.sender, a.path, a.capability) for a in self._agents.values()]

    @property
    def default_agent(self) -> tuple[str, str] | None:
        if not self._default_stack:
            return None
        a = self._agents[self._default_stack[0]]
        return (a.sender, a.path)

    @property
    def profiles(self) -> list[tuple[str, str, str]]:
        return [(p.sender, p.path, p.uuid) for p in self._profiles]

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for a condition on the fake's state (re-checked at every state change)."""
        async with asyncio.timeout(timeout):
            while not pred():
                ev = self._tick
                await ev.wait()

    def _bump(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    # ================================================================================================
    # bus plumbing
    # ================================================================================================
    def _send_signal(self, path: str, iface: str, member: str, sig: str, body: list[Any]) -> None:
        if self._bus is None or not self.running:
            return
        self._bus.send(Message.new_signal(path, iface, member, sig, body))

    def _send_noreply(self, dest: str, path: str, iface: str, member: str, sig: str = "",
                      body: list[Any] | None = None) -> None:
        if self._bus is None:
            return
        self._bus.send(Message(destination=dest, path=path, interface=iface, member=member, signature=sig,
                               body=body or [], flags=MessageFlag.NO_REPLY_EXPECTED))

    async def _call(self, dest: str, path: str, iface: str, member: str, sig: str, body: list[Any],
                    timeout: float, unix_fds: list[int] | None = None) -> Message | None:
        """None: no reply within ``timeout`` (or the peer/our connection went away)."""
        bus = self._bus
        if bus is None:
            return None
        msg = Message(destination=dest, path=path, interface=iface, member=member, signature=sig, body=body,
                      unix_fds=unix_fds or [])
        try:
            async with asyncio.timeout(timeout):
                return await bus.call(msg)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            raise
        except Exception:  # our connection died under the call (simulated restart)
            return None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake bluez task failed", exc_info=task.exception())

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus":
                name, _old, new = msg.body
                if not new and name.startswith(":"):
                    self._client_gone(name)
            return None
        if msg.message_type != MessageType.METHOD_CALL or not self.running:
            return None
        path = msg.path or "/"
        iface = msg.interface
        member = msg.member or ""
        if iface == INTROSPECT_IFACE and member == "Introspect":
            return Message.new_method_return(msg, "s", [self._introspect(path)])
        if iface == PEER_IFACE:
            return None
        obj = self._objects.get(path)
        if path == "/" and (iface in (None, OM_IFACE)) and member == "GetManagedObjects":
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [self._managed_objects()])
        if obj is None:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownObject",
                                     f"Method \"{member}\" with signature \"{msg.signature}\" on interface "
                                     f"\"{iface}\" doesn't exist")
        try:
            if iface == PROPS_IFACE:
                return self._properties(msg, obj)
            if iface is None:
                iface = next((i for i in obj.props if member in _METHODS.get(i, {})), None)
            if iface is None or iface not in obj.props or member not in _METHODS.get(iface, {}):
                return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod",
                                         f"Method \"{member}\" with signature \"{msg.signature}\" on interface "
                                         f"\"{iface}\" doesn't exist")
            in_sig, _out = _METHODS[iface][member]
            if msg.signature != in_sig:
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
            handler = getattr(self, f"_m_{iface.rsplit('.', 1)[-1]}_{member}")
            result = handler(msg, obj)
        except BluezError as exc:
            if iface == DEVICE:
                self._log_call(msg, asyncio.get_running_loop().time(), f"{exc.name}: {exc.text}")
            return Message.new_error(msg, exc.name, exc.text)
        if isinstance(result, Message):
            if iface == DEVICE:
                self._log_call(msg, asyncio.get_running_loop().time(), "ok")
            return result
        self._spawn(self._reply_later(msg, result, log_call=iface == DEVICE))
        return True

    async def _reply_later(self, msg: Message, coro: Awaitable[tuple[str, list[Any]] | None], *,
                           log_call: bool = False) -> None:
        gen = self._generation
        started = asyncio.get_running_loop().time()
        try:
            res = await coro
        except BluezError as exc:
            reply = Message.new_error(msg, exc.name, exc.text)
            outcome = f"{exc.name}: {exc.text}"
        else:
            sig, body = res or ("", [])
            reply = Message.new_method_return(msg, sig, body)
            outcome = "ok"
        if log_call:
            self._log_call(msg, started, outcome)
        if self._bus is not None and gen == self._generation and self.running:
            self._bus.send(reply)

    def _log_call(self, msg: Message, started: float, outcome: str) -> None:
        dev = self._dev_by_path(msg.path or "")
        self.device_calls.append(DeviceCall(msg.member or "", dev.phone.address if dev else "", msg.sender or "",
                                            started, asyncio.get_running_loop().time(), outcome))
        self._bump()

    def _managed_objects(self) -> dict[str, dict[str, dict[str, Variant]]]:
        return {p: {i: o.iface_props(i) for i in o.props} for p, o in sorted(self._objects.items())}

    def _introspect(self, path: str) -> str:
        head = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
                ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n<node>\n')
        parts = [head, f'<interface name="{INTROSPECT_IFACE}"><method name="Introspect">'
                       '<arg name="xml" type="s" direction="out"/></method></interface>\n']
        obj = self._objects.get(path)
        if path == "/":
            parts.append(f'<interface name="{OM_IFACE}"><method name="GetManagedObjects">'
                         '<arg name="objects" type="a{oa{sa{sv}}}" direction="out"/></method>'
                         '<signal name="InterfacesAdded"><arg type="o"/><arg type="a{sa{sv}}"/></signal>'
                         '<signal name="InterfacesRemoved"><arg type="o"/><arg type="as"/></signal>'
                         '</interface>\n')
        if obj is not None:
            parts.append(f'<interface name="{PROPS_IFACE}"><method name="Get"><arg type="s" direction="in"/>'
                         '<arg type="s" direction="in"/><arg type="v" direction="out"/></method>'
                         '<method name="Set"><arg type="s" direction="in"/><arg type="s" direction="in"/>'
                         '<arg type="v" direction="in"/></method><method name="GetAll"><arg type="s" '
                         'direction="in"/><arg type="a{sv}" direction="out"/></method>'
                         '<signal name="PropertiesChanged"><arg type="s"/><arg type="a{sv}"/><arg type="as"/>'
                         '</signal></interface>\n')
            for iface in obj.props:
                parts.append(f'<interface name="{iface}">')
                for m, (i, o) in _METHODS.get(iface, {}).items():
                    args = "".join(f'<arg type="{s}" direction="in"/>' for s in _split_sig(i))
                    args += "".join(f'<arg type="{s}" direction="out"/>' for s in _split_sig(o))
                    parts.append(f'<method name="{m}">{args}</method>')
                for s_name, s_sig in _SIGNALS.get(iface, {}).items():
                    parts.append(f'<signal name="{s_name}">'
                                 + "".join(f'<arg type="{s}"/>' for s in _split_sig(s_sig)) + "</signal>")
                for p, s in _SIGS.get(iface, {}).items():
                    acc = "readwrite" if p in _WRITABLE.get(iface, set()) else "read"
                    parts.append(f'<property name="{p}" type="{s}" access="{acc}"/>')
                parts.append("</interface>\n")
        prefix = path.rstrip("/") + "/"
        children = sorted({p[len(prefix):].split("/")[0] for p in self._objects if p.startswith(prefix)})
        parts.extend(f'<node name="{c}"/>' for c in children)
        parts.append("</node>\n")
        return "".join(parts)

    def _properties(self, msg: Message, obj: _Obj) -> Message | bool:
        member = msg.member
        if member == "GetAll" and msg.signature == "s":
            (iface,) = msg.body
            if iface not in obj.props:
                raise BluezError("org.freedesktop.DBus.Error.InvalidArgs", f"No such interface '{iface}'")
            return Message.new_method_return(msg, "a{sv}", [obj.iface_props(iface)])
        if member == "Get" and msg.signature == "ss":
            iface, name = msg.body
            if iface not in obj.props:
                raise BluezError("org.freedesktop.DBus.Error.InvalidArgs", f"No such interface '{iface}'")
            value = obj.props[iface].get(name)
            if value is None:
                raise BluezError("org.freedesktop.DBus.Error.InvalidArgs", f"No such property '{name}'")
            return Message.new_method_return(msg, "v", [_variant(_SIGS[iface][name], value)])
        if member == "Set" and msg.signature == "ssv":
            iface, name, value = msg.body
            if iface not in obj.props:
                raise BluezError("org.freedesktop.DBus.Error.InvalidArgs", f"No such interface '{iface}'")
            sig = _SIGS[iface].get(name)
            if sig is None:
                raise BluezError("org.freedesktop.DBus.Error.InvalidArgs", f"No such property '{name}'")
            if name not in _WRITABLE.get(iface, set()):
                raise BluezError("org.freedesktop.DBus.Error.PropertyReadOnly", f"Property '{name}' is not writable")
            if value.signature != sig:
                raise BluezError("org.freedesktop.DBus.Error.InvalidArgs",
                                 f"Invalid argument type: '{value.signature}'")
            result = None
            if iface == ADAPTER:
                result = self._set_adapter_prop(name, value.value)
            else:
                self._set_device_prop(obj, name, value.value)
            if result is None:
                return Message.new_method_return(msg)
            self._spawn(self._reply_later(msg, result))
            return True
        raise BluezError("org.freedesktop.DBus.Error.UnknownMethod", f"Unknown method {member}")

    # -- state helpers ------------------------------------------------------------------------------
    def _dev(self, address: str) -> _Device:
        dev = self._devices.get(address.upper())
        if dev is None:
            raise KeyError(f"no phone {address} in the simulated world")
        return dev

    def _dev_by_path(self, path: str) -> _Device | None:
        for d in self._devices.values():
            if d.path == path:
                return d
        return None

    def _device_state(self, dev: _Device) -> dict[str, Any]:
        if not dev.state:
            self._new_device_state(dev)
        return dev.state

    def _new_device_state(self, dev: _Device) -> dict[str, Any]:
        p = dev.phone
        # The remote name arrives as a NUL-terminated HCI string: bluetoothd stops at the first NUL.
        name = p.name.split("\x00", 1)[0]
        st: dict[str, Any] = {
            "Address": p.address, "AddressType": "public", "Name": name or None,
            "Alias": name or p.address.replace(":", "-"), "Class": p.device_class, "Icon": "phone",
            "Paired": False, "Bonded": False, "Trusted": False, "Blocked": False,
            "LegacyPairing": p.pairing == "legacy_pin", "CablePairing": False, "RSSI": None, "Connected": False,
            "UUIDs": None, "Modalias": None, "Adapter": self.adapter_path, "ServicesResolved": False,
            "WakeAllowed": False, "AdvertisingFlags": b"",
        }
        dev.state = st
        return st

    def _exported(self, dev: _Device) -> bool:
        return self.running and dev.path in self._objects

    def _export_device(self, dev: _Device) -> None:
        if dev.path in self._objects or self.adapter_path not in self._objects:
            return
        obj = _Obj(dev.path)
        obj.props[DEVICE] = self._device_state(dev)
        self._objects[dev.path] = obj
        self._flusher.added(dev.path, DEVICE)

    def _unexport_device(self, dev: _Device) -> None:
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        self._unexport_gatt(dev)
        if dev.path in self._objects:
            self._flusher.removed(dev.path, DEVICE)
            del self._objects[dev.path]

    def _set(self, dev: _Device, **props: Any) -> None:
        st = self._device_state(dev)
        for k, v in props.items():
            if st.get(k) != v:
                st[k] = v
                if self._exported(dev):
                    self._flusher.changed_prop(dev.path, DEVICE, k)
        self._bump()

    def _set_adapter(self, **props: Any) -> None:
        for k, v in props.items():
            if self._adapter_state.get(k) != v:
                self._adapter_state[k] = v
                if self.running and self.adapter_path in self._objects:
                    self._flusher.changed_prop(self.adapter_path, ADAPTER, k)
        self._bump()

    def _is_temporary(self, dev: _Device) -> bool:
        st = self._device_state(dev)
        return not dev.paired and not st.get("Trusted") and not st.get("Connected")

    def _seen(self, dev: _Device) -> None:
        """An inquiry result: create/refresh a (temporary) device with RSSI."""
        if dev.phone.address not in self._devices:
            return
        self._export_device(dev)
        self._set(dev, RSSI=dev.phone.rssi)
        self._arm_temporary(dev)

    def _arm_temporary(self, dev: _Device) -> None:
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        if self._is_temporary(dev):
            dev.temp_timer = asyncio.get_running_loop().call_later(self.t.temporary_timeout, self._expire, dev)

    def _expire(self, dev: _Device) -> None:
        dev.temp_timer = None
        if self._is_temporary(dev) and dev.op is None and self._exported(dev):
            self._unexport_device(dev)
            self._bump()

    def _client_gone(self, sender: str) -> None:
        """A client left the bus: its agent, profiles and discovery session go with it."""
        if sender in self._agents:
            del self._agents[sender]
            if sender in self._default_stack:
                self._default_stack.remove(sender)
        self._profiles = [p for p in self._profiles if p.sender != sender]
        for path, g in self._gatt.items():
            if sender in g.sessions:
                g.sessions.discard(sender)
                if not g.sessions:
                    self._set_obj(path, GATT_CHAR, Notifying=False)
        if sender in self._discovery:
            self._discovery.discard(sender)
            self._discovery_filters.pop(sender, None)
            if not self._discovery:
                self._stop_discovering()
        self._bump()

    def _default(self) -> _Agent | None:
        return self._agents[self._default_stack[0]] if self._default_stack else None

    # ================================================================================================
    # AgentManager1 / ProfileManager1
    # ================================================================================================
    def _m_AgentManager1_RegisterAgent(self, msg: Message, obj: _Obj) -> Message:
        path, capability = msg.body
        cap = parse_capability(capability)
        if cap is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        sender = msg.sender or ""
        if sender in self._agents:
            raise BluezError("AlreadyExists", "Already Exists")
        self._agents[sender] = _Agent(sender, path, cap)
        self._default_stack.append(sender)  # the first one is default; later ones queue behind
        self._bump()
        return Message.new_method_return(msg)

    def _m_AgentManager1_UnregisterAgent(self, msg: Message, obj: _Obj) -> Message:
        (path,) = msg.body
        sender = msg.sender or ""
        agent = self._agents.get(sender)
        if agent is None or agent.path != path:
            raise BluezError("DoesNotExist", "Does Not Exist")
        del self._agents[sender]
        self._default_stack.remove(sender)
        self._bump()
        return Message.new_method_return(msg)

    def _m_AgentManager1_RequestDefaultAgent(self, msg: Message, obj: _Obj) -> Message:
        (path,) = msg.body
        sender = msg.sender or ""
        agent = self._agents.get(sender)
        if agent is None or agent.path != path:
            raise BluezError("DoesNotExist", "Does Not Exist")
        self._default_stack.remove(sender)
        self._default_stack.insert(0, sender)
        self._bump()
        return Message.new_method_return(msg)

    _OPTION_SIGS: ClassVar[dict[str, str]] = {"Name": "s", "Service": "s", "Role": "s", "Channel": "q", "PSM": "q",
                    "RequireAuthentication": "b", "RequireAuthorization": "b", "AutoConnect": "b",
                    "ServiceRecord": "s", "Version": "q", "Features": "q"}

    def _m_ProfileManager1_RegisterProfile(self, msg: Message, obj: _Obj) -> Message:
        path, uuid_text, options = msg.body
        uuid = parse_uuid(uuid_text)
        if uuid is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        opts: dict[str, Any] = {}
        for k, v in options.items():
            want = self._OPTION_SIGS.get(k)
            if want is None:
                continue  # unknown keys are ignored
            if v.signature != want:
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
            opts[k] = v.value
        if opts.get("Role") not in (None, "client", "server"):
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        sender = msg.sender or ""
        if any(p.sender == sender and p.path == path for p in self._profiles):
            raise BluezError("AlreadyExists", "Already Exists")
        if any(p.uuid == uuid for p in self._profiles):
            raise BluezError("NotPermitted", "UUID already registered")
        self._profiles.append(_Profile(sender, path, uuid, opts))
        self._bump()
        return Message.new_method_return(msg)

    def _m_ProfileManager1_UnregisterProfile(self, msg: Message, obj: _Obj) -> Message:
        (path,) = msg.body
        sender = msg.sender or ""
        for p in self._profiles:
            if p.sender == sender and p.path == path:
                self._profiles.remove(p)
                self._bump()
                return Message.new_method_return(msg)
        raise BluezError("DoesNotExist", "Does Not Exist")

    # ================================================================================================
    # Adapter1
    # ================================================================================================
    def _m_Adapter1_StartDiscovery(self, msg: Message, obj: _Obj) -> Message:
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        sender = msg.sender or ""
        if sender in self._discovery:
            raise BluezError("InProgress", "Operation already in progress")
        self._discovery.add(sender)
        if len(self._discovery) == 1:
            self._set_adapter(Discovering=True)
            self._inquiry = self._spawn(self._inquire())
        return Message.new_method_return(msg)

    def _m_Adapter1_StopDiscovery(self, msg: Message, obj: _Obj) -> Message:
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        sender = msg.sender or ""
        if sender not in self._discovery:
            raise BluezError("Failed", "No discovery started")
        self._discovery.discard(sender)
        self._discovery_filters.pop(sender, None)
        if not self._discovery:
            self._stop_discovering()
        return Message.new_method_return(msg)

    def _m_Adapter1_SetDiscoveryFilter(self, msg: Message, obj: _Obj) -> Message:
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        (flt,) = msg.body
        want = {"UUIDs": "as", "RSSI": "n", "Pathloss": "q", "Transport": "s", "DuplicateData": "b",
                "Discoverable": "b", "Pattern": "s", "AutoConnect": "b"}
        for k, v in flt.items():
            if k not in want or v.signature != want[k]:
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if "Transport" in flt and flt["Transport"].value not in ("auto", "bredr", "le"):
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        sender = msg.sender or ""
        if flt:
            self._discovery_filters[sender] = {k: v.value for k, v in flt.items()}
        else:
            self._discovery_filters.pop(sender, None)
        return Message.new_method_return(msg)

    def _m_Adapter1_GetDiscoveryFilters(self, msg: Message, obj: _Obj) -> Message:
        return Message.new_method_return(msg, "as", [["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData",
                                                      "Discoverable", "Pattern", "AutoConnect"]])

    def _m_Adapter1_RemoveDevice(self, msg: Message, obj: _Obj) -> Message | Awaitable[Any]:
        (path,) = msg.body
        dev = self._dev_by_path(path)
        if dev is None or not self._exported(dev):
            raise BluezError("DoesNotExist", "Does Not Exist")

        async def remove() -> None:
            assert dev is not None
            if dev.op is not None:
                dev.abort = "removed"
                dev.op.cancel()
            if self._device_state(dev).get("Connected"):
                await self._drop_link(dev, "Local", "Connection terminated by local host")
            dev.paired = False
            dev.services_known = False
            self._unexport_device(dev)
            dev.state = {}
            self._bump()

        return remove()

    async def _inquire(self) -> None:
        await asyncio.sleep(self.t.inquiry_delay)
        for dev in list(self._devices.values()):
            if dev.phone.in_range and dev.phone.discoverable and self._adapter_state["Discovering"]:
                self._seen(dev)

    def _stop_discovering(self) -> None:
        if self._inquiry:
            self._inquiry.cancel()
            self._inquiry = None
        self._set_adapter(Discovering=False)
        for dev in self._devices.values():
            if self._exported(dev) and self._device_state(dev).get("RSSI") is not None:
                self._set(dev, RSSI=None)  # goes to `invalidated`
                self._arm_temporary(dev)

    def _set_adapter_prop(self, name: str, value: Any) -> Awaitable[Any] | None:
        if name == "Powered":
            async def power() -> None:
                await self._set_powered(bool(value))
            return power()
        if name == "Alias":
            self._set_adapter(Alias=value or self._adapter_state["Name"])
        elif name == "Discoverable":
            if not self._adapter_state["Powered"]:
                raise BluezError("NotReady", "Resource Not Ready")
            self._set_adapter(Discoverable=bool(value))
            self._arm_timer("Discoverable", "DiscoverableTimeout")
        elif name == "DiscoverableTimeout":
            self._set_adapter(DiscoverableTimeout=int(value))
            self._arm_timer("Discoverable", "DiscoverableTimeout")
        elif name == "Pairable":
            self._set_adapter(Pairable=bool(value))
            self._arm_timer("Pairable", "PairableTimeout")
        elif name == "PairableTimeout":
            self._set_adapter(PairableTimeout=int(value))
            self._arm_timer("Pairable", "PairableTimeout")
        elif name == "Connectable":
            if not value:
                self._set_adapter(Connectable=False, Discoverable=False)
            else:
                self._set_adapter(Connectable=True)
        return None

    def _arm_timer(self, prop: str, timeout_prop: str) -> None:
        attr = "_discoverable_timer" if prop == "Discoverable" else "_pairable_timer"
        old: asyncio.TimerHandle | None = getattr(self, attr)
        if old:
            old.cancel()
        setattr(self, attr, None)
        secs = int(self._adapter_state[timeout_prop])
        if self._adapter_state[prop] and secs > 0:
            setattr(self, attr, asyncio.get_running_loop().call_later(
                secs, lambda: self._set_adapter(**{prop: False})))

    async def _set_powered(self, on: bool) -> None:
        if on == self._adapter_state["Powered"]:
            return
        if not on:
            self._set_adapter(PowerState="on-disabling")
            for dev in list(self._devices.values()):
                if dev.op is not None:
                    dev.abort = "canceled"
                    dev.op.cancel()
            drops = [self._drop_link(d, "Local", "Connection terminated by local host")
                     for d in self._devices.values() if self._exported(d) and self._device_state(d).get("Connected")]
            if drops:
                await asyncio.gather(*drops)
            if self._discovery:
                self._discovery.clear()
                self._stop_discovering()
            self._set_adapter(Powered=False, PowerState="off", Discoverable=False, Discovering=False)
        else:
            self._set_adapter(Powered=True, PowerState="on")
            for dev in self._devices.values():
                if dev.phone.auto_reconnect and dev.phone.in_range and dev.paired and dev.phone.bonded:
                    self._spawn(self._remote_connect(dev))

    # ================================================================================================
    # Device1
    # ================================================================================================
    def _set_device_prop(self, obj: _Obj, name: str, value: Any) -> None:
        dev = self._dev_by_path(obj.path)
        assert dev is not None
        if name == "Alias":
            self._set(dev, Alias=value or dev.phone.name or dev.phone.address.replace(":", "-"))
        elif name == "Blocked":
            self._set(dev, Blocked=bool(value))
            if value and self._device_state(dev).get("Connected"):
                self._spawn(self._drop_link(dev, "Local", "Connection terminated by local host"))
        else:
            self._set(dev, **{name: bool(value)})
        self._arm_temporary(dev)

    def _device_for(self, obj: _Obj) -> _Device:
        dev = self._dev_by_path(obj.path)
        if dev is None:
            raise BluezError("org.freedesktop.DBus.Error.UnknownObject", "device gone")
        return dev

    def _m_Device1_Connect(self, msg: Message, obj: _Obj) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "br-connection-adapter-not-powered")
        if dev.op is not None:
            raise BluezError("InProgress", "br-connection-busy")
        st = self._device_state(dev)
        if st.get("Connected") and dev.profiles and set(self._connectable_local_profiles(dev)) <= dev.profiles:
            return Message.new_method_return(msg)  # already connected: success (code; doc says AlreadyConnected)
        return self._run_op(dev, "connect", self._do_connect(dev))

    def _m_Device1_Disconnect(self, msg: Message, obj: _Obj) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        if dev.op is not None:
            dev.abort = "canceled"
            dev.op.cancel()
        if not self._device_state(dev).get("Connected"):
            return Message.new_method_return(msg)

        async def disconnect() -> None:
            await self._drop_link(dev, "Local", "Connection terminated by local host")
        return disconnect()

    def _m_Device1_ConnectProfile(self, msg: Message, obj: _Obj) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        (text,) = msg.body
        uuid = parse_uuid(text)
        if uuid is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        # bluetoothd matches the argument against each service's *remote* UUID
        # (find_connectable_service in src/device.c): oFono asks for HFP AG 0000111f, the phone's
        # side.  A local UUID is accepted too, as the simulator's own callers use it.
        for local in self._connectable_local_profiles(dev):
            if LOCAL_TO_REMOTE.get(local) == uuid:
                uuid = local
                break
        if uuid in dev.profiles:
            return Message.new_method_return(msg)
        if uuid not in self._connectable_local_profiles(dev):
            raise BluezError("BREDR.ProfileUnavailable", "Exhausted the list of BR/EDR profiles to connect to")
        if dev.op is not None:
            raise BluezError("InProgress", "br-connection-busy")
        return self._run_op(dev, "connect", self._do_connect(dev, only=uuid))

    def _m_Device1_DisconnectProfile(self, msg: Message, obj: _Obj) -> Message:
        dev = self._device_for(obj)
        (text,) = msg.body
        uuid = parse_uuid(text)
        if uuid is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if uuid in dev.profiles:
            dev.profiles.discard(uuid)
            self._notify_profiles(dev, {uuid}, connected=False)
        return Message.new_method_return(msg)

    def _m_Device1_Pair(self, msg: Message, obj: _Obj) -> Message | Awaitable[Any]:
        dev = self._device_for(obj)
        if not self._adapter_state["Powered"]:
            raise BluezError("NotReady", "Resource Not Ready")
        if dev.op is not None:
            raise BluezError("InProgress", "In Progress")
        if dev.paired:
            raise BluezError("AlreadyExists", "Already Exists")
        agent = self._agents.get(msg.sender or "") or self._default()
        return self._run_op(dev, "pair", self._local_pair(dev, agent))

    def _m_Device1_CancelPairing(self, msg: Message, obj: _Obj) -> Message:
        dev = self._device_for(obj)
        if dev.op is None or dev.op_kind != "pair":
            raise BluezError("DoesNotExist", "Does Not Exist")
        dev.abort = "canceled"
        dev.op.cancel()
        return Message.new_method_return(msg)

    def _run_op(self, dev: _Device, kind: str, coro: Awaitable[None]) -> Awaitable[None]:
        """Start a device operation now (so a second call in the same iteration sees it busy)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        dev.op, dev.op_kind, dev.abort = task, kind, ""
        self._bump()
        return self._await_op(dev, kind, task)

    async def _await_op(self, dev: _Device, kind: str, task: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait({task})
        finally:
            if dev.op is task:
                dev.op = None
                dev.op_kind = ""
            self._bump()
        if task.cancelled():
            if kind == "pair":
                raise BluezError("AuthenticationCanceled", "Authentication Canceled")
            raise BluezError("Failed", "br-connection-canceled")
        task.result()

    # -- GATT (what bleak uses; reference §1.7, §6.2, §7 item 9) --------------------------------------
    def _export_gatt(self, dev: _Device) -> None:
        """Service/characteristic objects (paths with 4 lower-case hex digits of the handle)."""
        if not dev.phone.gatt or dev.gatt_paths or not self._exported(dev):
            return
        handle = 0x000A
        for svc in dev.phone.gatt:
            spath = f"{dev.path}/service{handle:04x}"
            sobj = _Obj(spath)
            sobj.props[GATT_SERVICE] = {"UUID": svc.uuid.lower(), "Primary": svc.primary, "Device": dev.path,
                                        "Includes": [], "Handle": handle}
            self._objects[spath] = sobj
            self._gatt[spath] = _GattObj(dev, None)
            dev.gatt_paths.append(spath)
            self._flusher.added(spath, GATT_SERVICE)
            handle += 1
            for ch in svc.characteristics:
                cpath = f"{spath}/char{handle:04x}"
                cobj = _Obj(cpath)
                notifies = bool({"notify", "indicate"} & set(ch.flags))
                cobj.props[GATT_CHAR] = {"UUID": ch.uuid.lower(), "Service": spath, "Value": b"",
                                         "Notifying": False if notifies else None, "Flags": list(ch.flags),
                                         "Handle": handle, "MTU": 517}
                self._objects[cpath] = cobj
                self._gatt[cpath] = _GattObj(dev, ch)
                dev.gatt_paths.append(cpath)
                self._flusher.added(cpath, GATT_CHAR)
                handle += 2  # declaration + value
            handle += 1

    def _unexport_gatt(self, dev: _Device) -> None:
        for path in reversed(dev.gatt_paths):
            obj = self._objects.pop(path, None)
            self._gatt.pop(path, None)
            if obj is not None:
                for iface in obj.props:
                    self._flusher.removed(path, iface)
        dev.gatt_paths = []

    def _set_obj(self, path: str, iface: str, **props: Any) -> None:
        obj = self._objects.get(path)
        if obj is None:
            return
        for k, v in props.items():
            if obj.props[iface].get(k) != v:
                obj.props[iface][k] = v
                self._flusher.changed_prop(path, iface, k)
        self._bump()

    def _gatt_char(self, obj: _Obj) -> tuple[_GattObj, GattCharacteristic]:
        g = self._gatt.get(obj.path)
        if g is None or g.char is None:
            raise BluezError("org.freedesktop.DBus.Error.UnknownObject", "no such characteristic")
        if not self._device_state(g.dev).get("Connected"):
            raise BluezError("Failed", "Not connected")
        return g, g.char

    def _m_GattCharacteristic1_ReadValue(self, msg: Message, obj: _Obj) -> Message:
        _g, ch = self._gatt_char(obj)
        (opts,) = msg.body
        if "read" not in ch.flags:
            raise BluezError("NotPermitted", "Read not permitted")
        offset = 0
        if "offset" in opts:
            if opts["offset"].signature != "q":
                raise BluezError("InvalidArguments", "Invalid arguments in method call")
            offset = opts["offset"].value
        if offset > len(ch.value):
            raise BluezError("InvalidArguments", "Invalid offset")
        self._set_obj(obj.path, GATT_CHAR, Value=bytes(ch.value))  # the cached Value follows a read
        return Message.new_method_return(msg, "ay", [bytes(ch.value[offset:])])

    def _m_GattCharacteristic1_WriteValue(self, msg: Message, obj: _Obj) -> Message:
        g, ch = self._gatt_char(obj)
        value, opts = msg.body
        kind = opts["type"].value if "type" in opts and opts["type"].signature == "s" else ""
        allowed = {"command": {"write-without-response"}, "request": {"write"}, "reliable": {"reliable-write"},
                   "": {"write", "write-without-response"}}.get(kind)
        if allowed is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        if not allowed & set(ch.flags):
            raise BluezError("NotPermitted", "Write not permitted")
        ch.value = bytes(value)
        self.gatt_writes.append((g.dev.phone.address, ch.uuid, bytes(value)))
        self._bump()
        return Message.new_method_return(msg)

    def _m_GattCharacteristic1_StartNotify(self, msg: Message, obj: _Obj) -> Message:
        g, ch = self._gatt_char(obj)
        if not {"notify", "indicate"} & set(ch.flags):
            raise BluezError("NotSupported", "Operation is not supported")
        sender = msg.sender or ""
        if sender in g.sessions:
            raise BluezError("InProgress", "In Progress")
        g.sessions.add(sender)
        self._set_obj(obj.path, GATT_CHAR, Notifying=True)
        return Message.new_method_return(msg)

    def _m_GattCharacteristic1_StopNotify(self, msg: Message, obj: _Obj) -> Message:
        g = self._gatt.get(obj.path)
        sender = msg.sender or ""
        if g is None or sender not in g.sessions:
            raise BluezError("Failed", "No notify session started")
        g.sessions.discard(sender)
        if not g.sessions:
            self._set_obj(obj.path, GATT_CHAR, Notifying=False)
        return Message.new_method_return(msg)

    def gatt_notify(self, address: str, uuid: str, value: bytes) -> bool:
        """The phone notifies a characteristic: one ``PropertiesChanged(Value)`` per notification,
        sent at once (not batched, like src/gatt-client.c).  False when nobody subscribed."""
        dev = self._dev(address)
        for path in dev.gatt_paths:
            g = self._gatt.get(path)
            if g is None or g.char is None or g.char.uuid.lower() != uuid.lower():
                continue
            g.char.value = bytes(value)
            if not g.sessions or not self._device_state(dev).get("Connected"):
                return False
            self._objects[path].props[GATT_CHAR]["Value"] = bytes(value)
            self._send_signal(path, PROPS_IFACE, "PropertiesChanged", "sa{sv}as",
                              [GATT_CHAR, {"Value": Variant("ay", bytes(value))}, []])
            return True
        raise KeyError(f"{address} has no characteristic {uuid}")

    # -- connecting ---------------------------------------------------------------------------------
    def _connectable_local_profiles(self, dev: _Device, *, builtin_only: bool = False) -> list[str]:
        offered = set(dev.phone.uuids)
        local = list(BUILTIN_PROFILES) + ([] if builtin_only else [p.uuid for p in self._profiles])
        return [u for u in dict.fromkeys(local) if LOCAL_TO_REMOTE.get(u) in offered]

    async def _page(self, dev: _Device) -> None:
        """ACL set-up from the car: page timeout when the phone is away."""
        if not dev.phone.in_range:
            await asyncio.sleep(self.t.page_timeout)
            raise BluezError("Failed", "br-connection-page-timeout")
        await asyncio.sleep(self.t.connect_delay)
        if not dev.phone.in_range:
            raise BluezError("Failed", "br-connection-page-timeout")

    async def _do_connect(self, dev: _Device, only: str | None = None) -> None:
        st = self._device_state(dev)
        faults = self._connect_faults.get(dev.phone.address)
        if faults:
            short, text = faults.pop(0)
            await asyncio.sleep(self.t.connect_delay)
            raise BluezError(short, text)
        if not st.get("Connected"):
            await self._page(dev)
            if dev.paired and not dev.phone.bonded:
                # The phone forgot the car: authentication fails on the link; nothing is announced.
                raise BluezError("Failed", "br-connection-key-missing")
            if st.get("Blocked"):
                raise BluezError("Failed", "br-connection-refused")
            self._set(dev, Connected=True)
        if not dev.services_known:
            await asyncio.sleep(self.t.sdp_delay)
            dev.services_known = True
            self._set(dev, UUIDs=list(dev.phone.uuids))
        self._export_gatt(dev)
        if not st.get("ServicesResolved"):
            self._set(dev, ServicesResolved=True)
        wanted = [only] if only else self._connectable_local_profiles(dev)
        if not dev.paired:
            # An unpaired phone refuses profile connections that need authentication (simplified:
            # real bluetoothd would start pairing on the security request).
            wanted = []
        for uuid in wanted:
            if uuid not in dev.profiles and await self._connect_profile(dev, uuid):
                dev.profiles.add(uuid)
        if not dev.profiles:
            await self._drop_link(dev, "Local", "Connection terminated by local host")
            raise BluezError("BREDR.ProfileUnavailable", "Exhausted the list of BR/EDR profiles to connect to")
        self._arm_temporary(dev)

    async def _connect_profile(self, dev: _Device, uuid: str) -> bool:
        prof = next((p for p in self._profiles if p.uuid == uuid), None)
        if prof is None:
            ok = uuid in BUILTIN_PROFILES
        else:
            ok = await self._new_connection(dev, prof)
        if ok:
            self._notify_profiles(dev, {uuid}, connected=True)
        return ok

    async def _new_connection(self, dev: _Device, prof: _Profile) -> bool:
        car_end, phone_end = socket.socketpair()
        props = {"Version": Variant("q", 0x0107), "Features": Variant("q", 0)}
        try:
            reply = await self._call(prof.sender, prof.path, PROFILE, "NewConnection", "oha{sv}",
                                     [dev.path, 0, props], self.t.profile_timeout, unix_fds=[car_end.fileno()])
        finally:
            car_end.close()  # the registrant got its own duplicate
        if reply is None or reply.message_type == MessageType.ERROR:
            phone_end.close()
            return False
        old = self._profile_socks.pop((dev.phone.address, prof.uuid), None)
        if old:
            old.close()
        self._profile_socks[(dev.phone.address, prof.uuid)] = phone_end
        return True

    def _notify_profiles(self, dev: _Device, uuids: set[str], *, connected: bool) -> None:
        for uuid in uuids:
            if not connected:
                prof = next((p for p in self._profiles if p.uuid == uuid), None)
                if prof is not None:
                    self._send_noreply(prof.sender, prof.path, PROFILE, "RequestDisconnection", "o", [dev.path])
                sock = self._profile_socks.pop((dev.phone.address, uuid), None)
                if sock:
                    sock.close()
            for cb in list(self._profile_listeners):
                try:
                    cb(dev.phone.address, uuid, connected)
                except Exception:
                    log.exception("profile listener failed")

    async def _drop_link(self, dev: _Device, reason: str, message: str) -> None:
        st = self._device_state(dev)
        if not st.get("Connected"):
            return
        gone = set(dev.profiles)
        dev.profiles.clear()
        self._notify_profiles(dev, gone, connected=False)
        for path in dev.gatt_paths:  # notification sessions end with the link; the objects stay
            g = self._gatt.get(path)
            if g is not None and g.sessions:
                g.sessions.clear()
                self._set_obj(path, GATT_CHAR, Notifying=False)
        # ServicesResolved goes false before Connected (reference §1.5).
        self._set(dev, ServicesResolved=False)
        await asyncio.sleep(self.t.disconnect_grace)
        self._set(dev, Connected=False)
        if self._exported(dev):
            self._send_signal(dev.path, DEVICE, "Disconnected", "ss", [REASON_PREFIX + reason, message])
        self._arm_temporary(dev)

    async def _remote_connect(self, dev: _Device) -> bool:
        """The phone connects to the car: ACL, then each profile (AuthorizeService when untrusted)."""
        if not (self.running and self._adapter_state["Powered"] and self._adapter_state["Connectable"]):
            return False
        if not (dev.phone.in_range and dev.phone.bonded and dev.paired) or dev.op is not None:
            return False
        st = self._device_state(dev)
        if st.get("Blocked"):
            return False
        self._export_device(dev)
        gen = self._generation
        await asyncio.sleep(self.t.connect_delay)
        if gen != self._generation:
            return False
        self._set(dev, Connected=True)
        if dev.services_known:
            self._export_gatt(dev)
            self._set(dev, ServicesResolved=True)
        await self._incoming_profiles(dev)
        if not dev.profiles:
            await self._drop_link(dev, "Remote", "Connection terminated by remote user")
            return False
        return True

    async def _incoming_profiles(self, dev: _Device) -> None:
        await asyncio.sleep(self.t.profile_delay)
        for uuid in self._connectable_local_profiles(dev):
            if uuid in dev.profiles or not self._device_state(dev).get("Connected"):
                continue
            prof = next((p for p in self._profiles if p.uuid == uuid), None)
            needs_auth = prof.require_authorization if prof else uuid not in _NO_AUTHORIZATION
            if needs_auth and not self._device_state(dev).get("Trusted"):
                agent = self._default()
                if agent is None:
                    continue  # no default agent: rejected
                ok, _ = await self._agent_request(agent, "AuthorizeService", "os", [dev.path, uuid], dev)
                if not ok:
                    continue
            if await self._connect_profile(dev, uuid):
                dev.profiles.add(uuid)

    # -- pairing ------------------------------------------------------------------------------------
    def _passkey(self, dev: _Device) -> int:
        if dev.phone.passkey is not None:
            return dev.phone.passkey % 1_000_000
        return (123456 + 271828 * next(self._passkeys)) % 1_000_000

    async def _agent_request(self, agent: _Agent, member: str, sig: str, body: list[Any],
                             dev: _Device) -> tuple[bool, list[Any]]:
        """One agent request: (accepted, reply body).  Timeout -> Cancel() and rejected."""
        if agent.busy:
            self.agent_log.append(AgentRequest(agent.sender, member, dev.path, tuple(body[1:]), "busy"))
            return False, []
        agent.busy = True
        outcome = "rejected"
        try:
            reply = await self._call(agent.sender, agent.path, AGENT, member, sig, body, self.t.agent_timeout)
            if reply is None:
                outcome = "timeout" if agent.sender in self._agents else "gone"
                if outcome == "timeout":
                    self._send_noreply(agent.sender, agent.path, AGENT, "Cancel")
                return False, []
            if reply.message_type == MessageType.ERROR:
                return False, []
            outcome = "accepted"
            return True, list(reply.body)
        except asyncio.CancelledError:
            outcome = "canceled"
            if self.running and agent.sender in self._agents:
                self._send_noreply(agent.sender, agent.path, AGENT, "Cancel")
            raise
        finally:
            agent.busy = False
            self.agent_log.append(AgentRequest(agent.sender, member, dev.path, tuple(body[1:]), outcome))
            self._bump()

    async def _authenticate(self, dev: _Device, agent: _Agent | None, *, remote: bool) -> str:
        """Run the SSP/legacy exchange; returns "" on success or the failure kind."""
        phone = dev.phone
        cap = agent.capability if agent else "NoInputNoOutput"
        if phone.pairing == "legacy_pin":
            if agent is None:
                return "no_agent"
            ok, body = await self._agent_request(agent, "RequestPinCode", "o", [dev.path], dev)
            if not ok:
                return "rejected"
            pin = body[0] if body else ""
            if not isinstance(pin, str) or not 1 <= len(pin) <= 16 or pin != phone.pin:
                return "phone_rejected"
            return ""
        if phone.pairing == "just_works" or cap == "NoInputNoOutput" or (cap == "DisplayOnly" and remote):
            if remote:
                if dev.paired:
                    return "rejected"  # JustWorksRepairing = never
                if agent is None:
                    return "no_agent"
                ok, _ = await self._agent_request(agent, "RequestAuthorization", "o", [dev.path], dev)
                if not ok:
                    return "rejected"
            # A locally initiated Pair() ending in just-works is auto-accepted without the agent.
        elif cap == "KeyboardOnly":
            passkey = self._passkey(dev)
            assert agent is not None
            ok, body = await self._agent_request(agent, "RequestPasskey", "o", [dev.path], dev)
            if not ok:
                return "rejected"
            if not body or body[0] != passkey:
                return "phone_rejected"
        elif cap == "DisplayOnly":
            assert agent is not None
            passkey = self._passkey(dev)
            self._send_noreply(agent.sender, agent.path, AGENT, "DisplayPasskey", "ouq", [dev.path, passkey, 0])
        else:
            assert agent is not None
            passkey = self._passkey(dev)
            ok, _ = await self._agent_request(agent, "RequestConfirmation", "ou", [dev.path, passkey], dev)
            if not ok:
                return "rejected"
        if self.t.phone_response_delay:
            await asyncio.sleep(self.t.phone_response_delay)
        if not phone.accepts_pairing:
            return "phone_rejected"
        if not phone.in_range:
            return "canceled"
        return ""

    async def _finish_pairing(self, dev: _Device) -> None:
        """Bond stored; SDP; then Paired/Bonded/UUIDs/ServicesResolved in one batch (§1.5, §8.9)."""
        dev.phone.bonded = True
        await asyncio.sleep(self.t.sdp_delay)
        dev.paired = True
        dev.services_known = True
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        self._export_gatt(dev)
        self._set(dev, Paired=True, Bonded=True, UUIDs=list(dev.phone.uuids), ServicesResolved=True)

    async def _local_pair(self, dev: _Device, agent: _Agent | None) -> None:
        dev.pairing_initiator = "local"
        st = self._device_state(dev)
        if not st.get("Connected"):
            try:
                await self._page(dev)
            except BluezError:
                raise BluezError("ConnectionAttemptFailed", "Page Timeout") from None
            self._set(dev, Connected=True)
        try:
            failure = await self._authenticate(dev, agent, remote=False)
        except asyncio.CancelledError:
            raise
        if failure:
            await self._drop_link(dev, "Authentication", "Authentication failure")
            if failure == "canceled":
                raise BluezError("AuthenticationCanceled", "Authentication Canceled")
            if failure == "busy":
                raise BluezError("AuthenticationRejected", "Authentication Rejected")
            raise BluezError("AuthenticationFailed", "Authentication Failed")
        await self._finish_pairing(dev)

    async def _remote_pair(self, dev: _Device) -> PhoneOutcome:
        phone = dev.phone
        if not phone.in_range:
            return "not_found"
        known = self._exported(dev)
        if not known and not self._adapter_state["Discoverable"]:
            return "not_found"  # the phone cannot find a car that is not discoverable
        if not (self._adapter_state["Powered"] and self._adapter_state["Connectable"]):
            return "not_found"
        self._export_device(dev)
        dev.pairing_initiator = "remote"
        try:
            await asyncio.sleep(self.t.connect_delay)
            self._set(dev, Connected=True)
            if not self._adapter_state["Pairable"]:
                failure = "rejected"
            else:
                agent = self._default()
                failure = "no_agent" if agent is None else await self._authenticate(dev, agent, remote=True)
        except asyncio.CancelledError:
            if dev.abort != "restart":
                with contextlib.suppress(Exception):
                    await self._drop_link(dev, "Local", "Connection terminated by local host")
            raise
        if failure:
            await self._drop_link(dev, "Authentication", "Authentication failure")
            self._arm_temporary(dev)
            return failure
        await self._finish_pairing(dev)
        dev.op = None
        self._spawn(self._incoming_profiles(dev))
        return "paired"

    # ================================================================================================
    # helpers for tests
    # ================================================================================================
    def trust(self, address: str, trusted: bool = True) -> None:
        self._set(self._dev(address), Trusted=trusted)

    def fail_next_connects(self, address: str, count: int = 1, error: str = "Failed",
                           message: str = "br-connection-page-timeout") -> None:
        """Fault injection: the next ``count`` Connect()s of this phone fail with ``error``."""
        self._connect_faults.setdefault(address.upper(), []).extend([(error, message)] * count)

    def calls_of(self, member: str, address: str | None = None) -> list[DeviceCall]:
        want = address.upper() if address else None
        return [c for c in self.device_calls if c.member == member and want in (None, c.address)]

    async def call_default_agent(self, member: str, signature: str = "", body: list[Any] | None = None, *,
                                 timeout: float | None = None) -> tuple[bool, list[Any] | str]:
        """Fault injection: send an arbitrary request from bluetoothd's own connection to the default
        agent (bad passkeys, unknown devices, duplicates...).  (True, body) or (False, error name)."""
        agent = self._default()
        if agent is None:
            raise RuntimeError("no default agent registered")
        reply = await self._call(agent.sender, agent.path, AGENT, member, signature, body or [],
                                 self.t.agent_timeout if timeout is None else timeout)
        if reply is None:
            return False, "timeout"
        if reply.message_type == MessageType.ERROR:
            return False, reply.error_name or ""
        return True, list(reply.body)

    def send_agent_cancel(self) -> None:
        """bluetoothd voids the outstanding request (the phone gave up)."""
        agent = self._default()
        if agent is not None:
            self._send_noreply(agent.sender, agent.path, AGENT, "Cancel")


def _split_sig(sig: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(sig):
        j = _end_of_type(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _end_of_type(sig: str, i: int) -> int:
    c = sig[i]
    if c == "a":
        return _end_of_type(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        depth = 0
        for j in range(i, len(sig)):
            if sig[j] == c:
                depth += 1
            elif sig[j] == close:
                depth -= 1
                if depth == 0:
                    return j + 1
    return i + 1


# ================================================================================================
# control interface (for developers and scenario files; not part of org.bluez)
# ================================================================================================
PhoneList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]


class BluezControl(ServiceInterface):
    """``org.dashbridge.Sim.Bluez1``: drive the simulated world from ``busctl`` or a scenario."""

    def __init__(self, fake: "FakeBluez") -> None:
        super().__init__(CONTROL_IFACE)
        self.fake = fake

    @dbus_method()
    def AddPhone(self, address: DBusStr, name: DBusStr, device_class: DBusUInt32,
                 profiles: Annotated[list[str], DBusSignature("as")], pairing: DBusStr,
                 paired: DBusBool) -> DBusStr:
        if pairing not in ("numeric", "legacy_pin", "just_works"):
            raise _ctl_error("pairing must be numeric, legacy_pin or just_works")
        kw: dict[str, Any] = {"address": address, "name": name, "pairing": pairing}
        if device_class:
            kw["device_class"] = device_class
        if profiles:
            kw["profiles"] = tuple(profiles)
        try:
            return self.fake.add_phone(VirtualPhone(**kw), paired=paired)
        except ValueError as exc:
            raise _ctl_error(str(exc)) from None

    @dbus_method()
    def RemovePhone(self, address: DBusStr) -> None:
        self._known(address)
        self.fake.remove_phone(address)

    @dbus_method()
    async def SetInRange(self, address: DBusStr, in_range: DBusBool) -> None:
        self._known(address)
        await self.fake.set_in_range(address, in_range)

    @dbus_method()
    async def PhonePair(self, address: DBusStr, passkey: DBusUInt32) -> DBusStr:
        """The phone starts pairing (passkey 0: the fake picks one); returns the outcome."""
        self._known(address)
        return await self.fake.phone_pair(address, passkey=passkey or None)

    @dbus_method()
    def SetAcceptsPairing(self, address: DBusStr, accept: DBusBool) -> None:
        self._known(address)
        self.fake.set_phone_accepts_pairing(address, accept)

    @dbus_method()
    def ForgetBond(self, address: DBusStr) -> None:
        self._known(address)
        self.fake.phone_forget_bond(address)

    @dbus_method()
    async def PhoneConnect(self, address: DBusStr) -> DBusBool:
        self._known(address)
        return await self.fake.phone_connect(address)

    @dbus_method()
    async def PhoneDisconnect(self, address: DBusStr) -> None:
        self._known(address)
        await self.fake.phone_disconnect(address)

    @dbus_method()
    async def SetPowered(self, on: DBusBool) -> None:
        await self.fake.set_powered(on)

    @dbus_method()
    async def Restart(self, clean: DBusBool) -> None:
        """Simulated bluetoothd restart (clean: agents get Release first)."""
        await self.fake.restart(clean=clean)

    @dbus_method()
    def ListPhones(self) -> PhoneList:
        out: list[dict[str, Variant]] = []
        for addr, dev in sorted(self.fake._devices.items()):
            st = self.fake.device_props(addr) or {}
            out.append({
                "Address": Variant("s", addr), "Name": Variant("s", dev.phone.name),
                "InRange": Variant("b", dev.phone.in_range), "PhoneBonded": Variant("b", dev.phone.bonded),
                "Paired": Variant("b", dev.paired), "Connected": Variant("b", bool(st.get("Connected"))),
                "Trusted": Variant("b", bool(st.get("Trusted"))),
            })
        return out

    def _known(self, address: str) -> None:
        if address.upper() not in self.fake._devices:
            raise _ctl_error(f"no phone {address}")


def _ctl_error(text: str) -> Exception:
    from dbus_fast import DBusError

    return DBusError("org.dashbridge.Sim.Error.InvalidArguments", text)
