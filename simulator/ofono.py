"""A fake ``org.ofono`` for the hands-free (HFP) side of virtual phones.

Faithful to oFono's own conventions (reference §4, §7 items 16-18, checked against oFono's
``src/voicecall.c``, ``src/modem.c`` and ``plugins/hfp_hf_bluez5.c``):

* no ObjectManager; every interface has ``GetProperties``/``SetProperty``/``PropertyChanged(sv)``
  (``org.freedesktop.DBus.Properties`` answers nothing useful, as gdbus does for oFono);
* lists are ``a(oa{sv})`` (``GetModems``, ``GetCalls``, ``GetOperators``);
* one HFP modem per paired phone offering HFP at ``/hfp/org/bluez/hciN/dev_XX_...`` with
  ``Type=hfp``, ``Serial=<address>``, ``Name=<alias>``, ``Powered=false`` until a client powers it;
  powering runs a (simulated) ``ConnectProfile`` + service-level connection, then the modem goes
  ``Online``, gets its ``Serial`` (only then, as real oFono 1.31) and ``Interfaces`` grows in two
  steps (NetworkRegistration, Handsfree, CallVolume; then VoiceCallManager); calls the phone
  already has are announced with ``CallAdded`` *after* that, as oFono's ``AT+CLCC`` does;
* ``voicecall%02d`` paths with the CLCC index as id (ids are reused once free); ``Dial`` replies
  with the call path *then* emits ``CallAdded``; ``DisconnectReason`` precedes the final
  ``State=disconnected``, and ``CallRemoved`` follows it; ``Deflect`` and ``CallVolume.Muted``
  are ``NotImplemented`` on HFP; ``Modem.Online`` cannot be set (no online driver on HFP);
* HFP link loss (or powering the modem off) drops the interfaces and the call objects **without**
  ``CallRemoved`` — the calls live on in the phone and come back when the link does.

The phone side (calls, battery, signal, operator) belongs to the virtual phone and survives a
simulated ofonod restart or link loss; the oFono side (objects, paths) does not.

Control: the Python API of :class:`FakeOfono` (for tests and the scenario runner) and the same
operations over D-Bus as ``org.dashbridge.Sim.Ofono1`` at ``/org/dashbridge/sim`` on the fake's
own connection.  The objects are served by the simulator's one fake object server
(``simulator/fakebus.py``) in its oFono mode: no ObjectManager and no ``InterfacesAdded`` (which
dbus-fast's ``ServiceInterface`` would add and real oFono never sends), ``GetProperties`` from each
interface's properties and ``PropertyChanged(sv)`` sent at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from dashbridge.profiles.hfp.models import MAX_NUMBER_DIGITS

from . import names
from .fakebus import DEFERRED, Call, FakeError, FakeInterface, ObjectServer
from .phone import VirtualPhone

log = logging.getLogger(__name__)

SIM_IFACE = "org.dashbridge.Sim.Ofono1"
SIM_PATH = names.SIM_PATH

_ERR = names.OFONO_ERR
MAX_VOICE_CALLS = 16  # src/voicecall.c
CLCC_POLL_S = 0.05  # oFono polls AT+CLCC after a call-state indicator; the held state shows then
RELEARNT_START_TIME = "1970-01-01T00:00:00+0000"  # what oFono 1.31 says for a call re-learnt from AT+CLCC
DEFAULT_EMERGENCY_NUMBERS = ("112", "911", "08", "000", "110", "118", "119", "999")
AG_FEATURES = (
    "three-way-calling", "echo-canceling-and-noise-reduction", "voice-recognition",
    "release-all-held", "release-specified-active-call", "private-chat", "create-multiparty",
)
HFP_INTERFACES = (
    names.OFONO_VOICECALL_MANAGER,
    names.OFONO_NETREG,
    names.OFONO_HANDSFREE,
    names.OFONO_CALLVOLUME,
)


class OfonoError(FakeError):
    prefix = _ERR

    def __init__(self, short: str, text: str = "") -> None:
        super().__init__(short, text or _DEFAULT_TEXT.get(short, short))


_DEFAULT_TEXT = {
    "Failed": "Operation failed",
    "InProgress": "Operation already in progress",
    "InvalidArguments": "Invalid arguments in method call",
    "InvalidFormat": "Argument format is not recognized",
    "NotImplemented": "Implementation not provided",
    "NotAvailable": "Operation currently not available",
    "NotFound": "Object is not found or not valid for this operation",
    "NotSupported": "Operation is not supported by the network",
}


def _v(sig: str, value: Any) -> Variant:
    return Variant(sig, value)


def modem_path(address: str, adapter: str = "hci0") -> str:
    return f"/hfp/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"


def _time_str(t: float) -> str:
    # oFono: strftime("%Y-%m-%dT%H:%M:%S%z", localtime_r(...))
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def valid_dial_number(number: str) -> bool:
    """oFono's ``valid_long_phone_number_format``: ``[+][0-9*#]{1,80}``."""
    n = number[1:] if number.startswith("+") else number
    return 0 < len(n) <= MAX_NUMBER_DIGITS and all(c in "0123456789*#" for c in n)


# ------------------------------------------------------------------------------------------------
# Phone side: what the phone (the audio gateway) knows.  Survives oFono restarts and link loss.
# ------------------------------------------------------------------------------------------------


@dataclass
class PhoneCall:
    idx: int  # CLCC index = oFono call id
    number: str
    name: str
    state: str  # incoming waiting dialing alerting active held
    direction: str  # incoming | outgoing
    start_time: float | None = None
    multiparty: bool = False


@dataclass
class PhoneSide:
    phone: VirtualPhone
    calls: dict[int, PhoneCall] = field(default_factory=dict)
    last_dialed: str = ""

    def next_idx(self) -> int:
        i = 1
        while i in self.calls:
            i += 1
        return i

    def with_state(self, *states: str) -> list[PhoneCall]:
        return [c for c in sorted(self.calls.values(), key=lambda c: c.idx) if c.state in states]


# ------------------------------------------------------------------------------------------------
# oFono side
# ------------------------------------------------------------------------------------------------


@dataclass
class Modem:
    side: PhoneSide
    path: str
    powered: bool = False
    online: bool = False
    lockdown: bool = False
    interfaces: list[str] = field(default_factory=list)
    published: set[int] = field(default_factory=set)  # call ids with a VoiceCall object
    pending_power: Message | None = None
    speaker_volume: int = 50
    microphone_volume: int = 50
    voice_recognition: bool = False
    ecnr: bool = True
    link_generation: int = 0  # bumps on every link loss; stale timers check it
    relearnt: set[int] = field(default_factory=set)  # call ids learnt from AT+CLCC at link-up (no start time)

    @property
    def address(self) -> str:
        return self.side.phone.address

    @property
    def up(self) -> bool:
        return names.OFONO_VOICECALL_MANAGER in self.interfaces

    def call_path(self, idx: int) -> str:
        return f"{self.path}/voicecall{idx:02d}"


Handler = Callable[[Message, Any], "Message | None"]


class FakeOfono:
    """``await FakeOfono.start(bus_address, phones)``; ``await fake.stop()``."""

    def __init__(self, bus_address: str, phones: Iterable[VirtualPhone] = (), *, adapter: str = "hci0",
                 name: str = names.OFONO) -> None:
        self.bus_address = bus_address
        self.adapter = adapter
        self.name = name  # another name only to run a second fake beside the real one (benchmarks)
        self.sides: dict[str, PhoneSide] = {}
        self.modems: dict[str, Modem] = {}  # address -> modem (only while "running")
        self.bus: MessageBus | None = None
        self.server: ObjectServer | None = None
        self.unresponsive = False
        self.swallowed: list[Message] = []
        # The phone's answer per oFono method (member name): (error short name or "", delay s).
        self.command_faults: dict[str, tuple[str, float]] = {}
        self._released: set[int] = set()  # ids of delayed messages being served now
        self.method_calls: list[tuple[str, str, str]] = []  # (path, interface, member) seen, for tests
        self.call_times: list[float] = []  # time.monotonic() of each entry in method_calls
        self._call_waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        for p in phones:
            if p.offers("hfp"):
                self.sides[p.address] = PhoneSide(p)

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    async def start(cls, bus_address: str, phones: Iterable[VirtualPhone] = (), *, adapter: str = "hci0",
                    name: str = names.OFONO) -> FakeOfono:
        self = cls(bus_address, phones, adapter=adapter, name=name)
        await self._come_up()
        return self

    async def _come_up(self) -> None:
        bus = MessageBus(bus_address=self.bus_address)
        async with asyncio.timeout(5):
            await bus.connect()
        self.server = ObjectServer(
            bus, owner=self, object_manager=None, ofono=True, error_prefix=_ERR,
            bad_args_error=(_ERR + "InvalidArguments", _DEFAULT_TEXT["InvalidArguments"]),
            arg_errors=(TypeError, ValueError, IndexError, KeyError), before_call=self._before_call)
        self.bus = bus
        self.server.add("/", self._iface(names.OFONO_MANAGER, None, lambda msg, member: self._manager_method(msg),
                                         _METHODS[names.OFONO_MANAGER]))
        self.server.add(SIM_PATH, self._iface(SIM_IFACE, None, lambda msg, member: self._control(msg),
                                              _METHODS[SIM_IFACE]))
        for side in self.sides.values():
            self._add_modem(Modem(side, modem_path(side.phone.address, self.adapter)))
        async with asyncio.timeout(5):
            await bus.request_name(self.name)
        for m in self.modems.values():
            self._signal("/", names.OFONO_MANAGER, "ModemAdded", "oa{sv}", [m.path, self._modem_props(m)])

    async def _go_down(self, graceful: bool = True) -> None:
        # A clean ofonod exit (SIGTERM) removes every modem (ModemRemoved) before leaving the
        # bus, as the real one does; a crash just drops the connection.
        if graceful:
            for m in list(self.modems.values()):
                self._signal("/", names.OFONO_MANAGER, "ModemRemoved", "o", [m.path])
        for t in list(self._timers):
            t.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        self.modems.clear()
        if self.server is not None:
            self.server.clear()
        bus, self.bus = self.bus, None
        if bus is not None and bus.connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await bus.release_name(self.name)
            bus.disconnect()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def stop(self, graceful: bool = True) -> None:
        await self._go_down(graceful)

    async def restart(self, graceful: bool = True) -> None:
        """Simulated ofonod restart: the name goes away with every object (after ModemRemoved for
        each when ``graceful``, as on SIGTERM; without when it crashed); a new instance owns it
        again with unpowered modems.  Calls live on in the phones."""
        await self._go_down(graceful)
        await self._come_up()

    @property
    def running(self) -> bool:
        return self.bus is not None and self.bus.connected

    # ---------------------------------------------------------------- plumbing

    def _send(self, msg: Message) -> None:
        if self.bus is not None and self.bus.connected:
            self.bus.send(msg)

    def _signal(self, path: str, iface: str, member: str, sig: str, body: list[Any]) -> None:
        self._send(Message.new_signal(path, iface, member, sig, body))
        if self._call_waiters:
            self._wake_call_waiters()

    def _changed(self, path: str, iface: str, name: str) -> None:
        """``PropertyChanged(name, current value)`` from the object's interface, at once."""
        if self.server is not None:
            self.server.changed(path, iface, [name])
        if self._call_waiters:
            self._wake_call_waiters()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def run() -> None:
            if handle is not None:
                self._timers.discard(handle)
            try:
                fn()
            except Exception:
                log.exception("fake oFono timer failed")

        handle = loop.call_later(max(0.0, delay), run)
        self._timers.add(handle)

    def _before_call(self, msg: Message) -> Message | bool | None:
        """Every call the fake gets is logged; an unresponsive ofonod swallows org.ofono calls."""
        iface = msg.interface or ""
        self.method_calls.append((msg.path or "", iface, msg.member or ""))
        self.call_times.append(time.monotonic())
        if self._call_waiters:
            self._wake_call_waiters()
        if self.unresponsive and iface.startswith("org.ofono."):
            self.swallowed.append(msg)  # an ofonod that hangs: never answers
            return True
        fault = self.command_faults.get(msg.member or "") if iface.startswith("org.ofono.") else None
        if fault is not None and id(msg) not in self._released:
            error, delay = fault
            if error:
                # The phone answered the AT command with ERROR/+CME ERROR: oFono replies Failed (1.31
                # maps every CME error to org.ofono.Error.Failed) and nothing changes.
                reply = Message.new_error(msg, _ERR + error, _DEFAULT_TEXT.get(error, "Operation failed"))
                if delay <= 0:
                    return reply
                self._later(delay, lambda: self._send(reply))
                return True
            self._later(delay, lambda: self._serve_late(msg))  # a slow phone: OK after `delay`
            return True
        return None

    def _serve_late(self, msg: Message) -> None:
        if self.server is None:
            return
        self._released.add(id(msg))
        try:
            reply = self.server._on_message(msg)
        finally:
            self._released.discard(id(msg))
        if isinstance(reply, Message):
            self._send(reply)

    # ---------------------------------------------------------------- the objects on the bus

    def _iface(self, name: str, props: Callable[[], dict[str, Variant]] | None,
               route: Callable[[Message, str], Message | None], methods: dict[str, tuple[str, str]]) -> OfonoIface:
        """An interface whose methods are served by ``route(msg, member)``: it returns the reply, or
        None when it replied itself (oFono answers before it signals) or will reply later."""
        iface = OfonoIface(name, props)
        for member, (in_sig, out_sig) in methods.items():
            iface.method(member, in_sig, out_sig, self._router(route, member))
        iface.signals.update(_SIGNALS.get(name, {}))
        return iface

    def _router(self, route: Callable[[Message, str], Message | None], member: str) -> Callable[..., Any]:
        def serve(call: Call, *args: Any) -> Any:
            reply = route(call.message, member)
            if reply is not None:
                self._send(reply)
            return DEFERRED
        return serve

    def _add_modem(self, m: Modem) -> None:
        self.modems[m.address] = m
        if self.server is not None:
            self.server.add(m.path, self._iface(names.OFONO_MODEM, lambda: self._modem_props(m),
                                                lambda msg, member: self._modem_method(msg, m, member),
                                                _METHODS[names.OFONO_MODEM]))

    def _remove_modem(self, m: Modem) -> None:
        if self.server is not None:
            for path in [m.path, *self.server.children(m.path)]:
                self.server.remove(path)

    def _sync_interfaces(self, m: Modem) -> None:
        """The modem's atoms on the bus follow ``m.interfaces`` (no signal: oFono has no ObjectManager)."""
        if self.server is None:
            return
        present = set(self.server.objects.get(m.path, {}))
        for name in present - {names.OFONO_MODEM, *m.interfaces}:
            self.server.remove(m.path, name)
        for name in m.interfaces:
            if name not in present:
                props, route = self._atom(m, name)
                self.server.add(m.path, self._iface(name, props, route, _METHODS[name]))

    def _atom(self, m: Modem, name: str) -> tuple[Callable[[], dict[str, Variant]],
                                                   Callable[[Message, str], Message | None]]:
        if name == names.OFONO_VOICECALL_MANAGER:
            return (lambda: self._vcm_props(m)), (lambda msg, member: self._vcm_method(msg, m, member))
        if name == names.OFONO_HANDSFREE:
            return (lambda: self._handsfree_props(m)), (lambda msg, member: self._handsfree_method(msg, m, member))
        if name == names.OFONO_NETREG:
            return (lambda: self._netreg_props(m)), (lambda msg, member: self._netreg_method(msg, m, member))
        return (lambda: self._callvolume_props(m)), (lambda msg, member: self._callvolume_method(msg, m, member))

    def _register_call(self, m: Modem, c: PhoneCall) -> None:
        if self.server is not None:
            self.server.add(m.call_path(c.idx), self._iface(
                names.OFONO_VOICECALL, lambda: self._call_props(c, m),
                lambda msg, member: self._call_method(msg, m, c, member), _METHODS[names.OFONO_VOICECALL]))

    def _unregister_call(self, m: Modem, idx: int) -> None:
        if self.server is not None:
            self.server.remove(m.call_path(idx))

    def _manager_method(self, msg: Message) -> Message:
        return Message.new_method_return(
            msg, "a(oa{sv})", [[[m.path, self._modem_props(m)] for m in self.modems.values()]])

    # ---------------------------------------------------------------- Modem

    def _modem_props(self, m: Modem) -> dict[str, Variant]:
        p = m.side.phone
        feats = ["net"] if names.OFONO_NETREG in m.interfaces else []
        props = {
            "Online": _v("b", m.online),
            "Powered": _v("b", m.powered),
            "Lockdown": _v("b", m.lockdown),
            "Emergency": _v("b", False),
            "Name": _v("s", p.name),
            "Features": _v("as", feats),
            "Interfaces": _v("as", list(m.interfaces)),
            "Type": _v("s", "hfp"),
        }
        if m.powered:
            # As real oFono 1.31: Serial (= the phone's address) comes from the devinfo atom, so an
            # unpowered modem has none (the reference says otherwise).
            props["Serial"] = _v("s", p.address)
        return props

    def _modem_method(self, msg: Message, m: Modem, member: str) -> Message | None:
        if member == "SetProperty" and msg.signature == "sv":
            name, value = msg.body
            val = value.value
            if name == "Powered":
                if not isinstance(val, bool):
                    raise OfonoError("InvalidArguments")
                return self._set_powered(msg, m, val)
            if name == "Online":
                # HFP modems have no set_online driver call (src/modem.c): NotImplemented.
                raise OfonoError("NotImplemented")
            if name == "Lockdown":
                if not isinstance(val, bool):
                    raise OfonoError("InvalidArguments")
                if val != m.lockdown:
                    m.lockdown = val
                    self._changed(m.path, names.OFONO_MODEM, "Lockdown")
                    if val and m.powered:
                        self._drop_link(m)
                return Message.new_method_return(msg)
            raise OfonoError("InvalidArguments")
        raise _unknown(msg)

    def _set_powered(self, msg: Message, m: Modem, on: bool) -> Message | None:
        if m.pending_power is not None:
            raise OfonoError("InProgress")
        if on == m.powered:
            return Message.new_method_return(msg)
        if not on:
            self._drop_link(m)
            return Message.new_method_return(msg)
        if m.lockdown:
            raise OfonoError("AccessDenied", "Operation not permitted")
        # hfp_enable(): Device1.ConnectProfile(HFP AG); the reply waits for the SLC.
        m.pending_power = msg
        gen = m.link_generation
        self._later(m.side.phone.hfp_slc_delay, lambda: self._slc_result(m, gen))
        return None

    def _slc_result(self, m: Modem, gen: int) -> None:
        msg, m.pending_power = m.pending_power, None
        if msg is None or gen != m.link_generation or self.modems.get(m.address) is not m:
            return
        if not m.side.phone.in_range:
            # ConnectProfile failed: the modem stays off and the SetProperty caller gets Failed.
            self._send(Message.new_error(msg, _ERR + "Failed", _DEFAULT_TEXT["Failed"]))
            return
        # oFono replies to SetProperty(Powered) first, then emits PropertyChanged(Powered/Online)
        # (src/modem.c: the pending reply is sent from the powered callback before the signals).
        self._send(Message.new_method_return(msg))
        self._bring_up(m)

    def _bring_up(self, m: Modem) -> None:
        m.powered = True
        self._changed(m.path, names.OFONO_MODEM, "Powered")
        m.online = True
        self._changed(m.path, names.OFONO_MODEM, "Online")
        self._changed(m.path, names.OFONO_MODEM, "Serial")
        # As real oFono: the voice-call atom registers last (after AT+CLIP/AT+CCWA are answered),
        # so Interfaces grows twice; then AT+CLCC announces the calls the phone already has.
        m.interfaces = [i for i in HFP_INTERFACES if i != names.OFONO_VOICECALL_MANAGER]
        self._sync_interfaces(m)
        self._changed(m.path, names.OFONO_MODEM, "Interfaces")
        self._changed(m.path, names.OFONO_MODEM, "Features")
        gen = m.link_generation

        def voicecall_atom() -> None:
            if gen != m.link_generation or not m.powered:
                return
            m.interfaces = [names.OFONO_VOICECALL_MANAGER, *m.interfaces]
            self._sync_interfaces(m)
            self._changed(m.path, names.OFONO_MODEM, "Interfaces")
            self._later(0, lambda: self._publish_existing(m, gen))

        self._later(0, voicecall_atom)

    def _publish_existing(self, m: Modem, gen: int) -> None:
        if gen != m.link_generation or not m.up:
            return
        for c in sorted(m.side.calls.values(), key=lambda c: c.idx):
            if c.idx not in m.published:
                m.relearnt.add(c.idx)  # oFono 1.31 has no start time for a call learnt from AT+CLCC
                self._publish(m, c)

    def _drop_link(self, m: Modem) -> None:
        """RFCOMM gone (link loss, power-off, lockdown): atoms and call objects vanish without
        CallRemoved; Powered/Online false.  The phone keeps its calls."""
        m.link_generation += 1
        if m.pending_power is not None:
            msg, m.pending_power = m.pending_power, None
            self._send(Message.new_error(msg, _ERR + "Failed", _DEFAULT_TEXT["Failed"]))
        was_powered = m.powered
        for idx in m.published:
            self._unregister_call(m, idx)
        m.published.clear()
        m.relearnt.clear()
        if was_powered:
            m.powered = False
            self._changed(m.path, names.OFONO_MODEM, "Powered")
        if m.online:
            m.online = False
            self._changed(m.path, names.OFONO_MODEM, "Online")
        if m.interfaces:
            m.interfaces = []
            self._sync_interfaces(m)
            self._changed(m.path, names.OFONO_MODEM, "Interfaces")
            self._changed(m.path, names.OFONO_MODEM, "Features")

    # ---------------------------------------------------------------- VoiceCall objects

    def _call_props(self, c: PhoneCall, m: Modem) -> dict[str, Variant]:
        props = {
            "State": _v("s", c.state),
            "LineIdentification": _v("s", c.number),
            "Name": _v("s", c.name),
            "Multiparty": _v("b", c.multiparty),
            "RemoteHeld": _v("b", False),
            "RemoteMultiparty": _v("b", False),
            "Emergency": _v("b", c.number in DEFAULT_EMERGENCY_NUMBERS),
        }
        if c.idx in m.relearnt and c.state in ("active", "held"):
            # drivers/hfpmodem (1.31): a call found by AT+CLCC after ofonod started or the SLC came back
            # has start_time 0, which voicecall.c formats as the epoch.
            props["StartTime"] = _v("s", RELEARNT_START_TIME)
        elif c.start_time is not None and c.state in ("active", "held"):
            props["StartTime"] = _v("s", _time_str(c.start_time))
        return props

    def _publish(self, m: Modem, c: PhoneCall) -> str:
        m.published.add(c.idx)
        self._register_call(m, c)
        path = m.call_path(c.idx)
        self._signal(m.path, names.OFONO_VOICECALL_MANAGER, "CallAdded", "oa{sv}",
                     [path, self._call_props(c, m)])
        return path

    def _set_state(self, m: Modem, c: PhoneCall, state: str) -> None:
        if c.state == state:
            return
        old = c.state
        c.state = state
        if state == "active" and old in ("incoming", "waiting", "dialing", "alerting"):
            c.start_time = time.time()
        if c.idx in m.published:
            path = m.call_path(c.idx)
            self._changed(path, names.OFONO_VOICECALL, "State")
            if state == "active" and old in ("incoming", "waiting", "dialing", "alerting") and c.start_time:
                self._changed(path, names.OFONO_VOICECALL, "StartTime")

    def _end(self, m: Modem, c: PhoneCall, reason: str) -> None:
        """``reason``: local | remote | network.  DisconnectReason, State, then CallRemoved."""
        m.side.calls.pop(c.idx, None)
        if c.idx in m.published:
            path = m.call_path(c.idx)
            self._signal(path, names.OFONO_VOICECALL, "DisconnectReason", "s", [reason])
            c.state = "disconnected"
            self._changed(path, names.OFONO_VOICECALL, "State")
            m.published.discard(c.idx)
            self._unregister_call(m, c.idx)
            self._signal(m.path, names.OFONO_VOICECALL_MANAGER, "CallRemoved", "o", [path])
        self._after_release(m)

    def _after_release(self, m: Modem) -> None:
        side = m.side
        # A lone waiting call becomes incoming when nothing else is left (ciev call=0).
        if not side.with_state("active", "held", "dialing", "alerting"):
            for w in side.with_state("waiting"):
                self._set_state(m, w, "incoming")
        mp = [c for c in side.calls.values() if c.multiparty]
        if len(mp) == 1:
            mp[0].multiparty = False
            if mp[0].idx in m.published:
                self._changed(m.call_path(mp[0].idx), names.OFONO_VOICECALL, "Multiparty")

    def _call_method(self, msg: Message, m: Modem, c: PhoneCall, member: str) -> Message | None:
        if member == "Answer":
            if c.state != "incoming":
                raise OfonoError("Failed")
            self._send(Message.new_method_return(msg))  # ATA's OK comes before the +CIEV
            for other in m.side.with_state("active"):
                self._set_state(m, other, "held")
            self._set_state(m, c, "active")
            return None
        if member == "Hangup":
            self._send(Message.new_method_return(msg))
            self._end(m, c, "local")
            return None
        if member == "Deflect":
            raise OfonoError("NotImplemented")  # the hfpmodem driver has no deflect
        raise _unknown(msg)

    # ---------------------------------------------------------------- VoiceCallManager

    def _vcm_props(self, m: Modem) -> dict[str, Variant]:
        return {"EmergencyNumbers": _v("as", list(DEFAULT_EMERGENCY_NUMBERS))}

    def _vcm_method(self, msg: Message, m: Modem, member: str) -> Message | None:
        side = m.side
        if member == "GetCalls":
            return Message.new_method_return(msg, "a(oa{sv})", [[
                [m.call_path(c.idx), self._call_props(c, m)]
                for c in sorted(side.calls.values(), key=lambda c: c.idx) if c.idx in m.published
            ]])
        if member in ("Dial", "DialLast"):
            if member == "Dial":
                if msg.signature != "ss":
                    raise OfonoError("InvalidArguments")
                number, hide = msg.body
                if hide not in ("", "default", "enabled", "disabled"):
                    raise OfonoError("InvalidFormat")
            else:
                number = side.last_dialed
                if not number:
                    raise OfonoError("Failed")
            if len(side.calls) >= MAX_VOICE_CALLS:
                raise OfonoError("Failed")
            if not valid_dial_number(number):
                raise OfonoError("InvalidFormat")
            if side.with_state("incoming") or side.with_state("dialing", "alerting"):
                raise OfonoError("Failed")
            if side.with_state("active") and side.with_state("held"):
                raise OfonoError("Failed")
            for a in side.with_state("active"):
                self._set_state(m, a, "held")  # the AG puts the active call on hold
            c = PhoneCall(side.next_idx(), number, "", "dialing", "outgoing")
            side.calls[c.idx] = c
            side.last_dialed = number
            path = m.call_path(c.idx)
            self._send(Message.new_method_return(msg, "o", [path]) if member == "Dial"
                       else Message.new_method_return(msg))
            self._publish(m, c)
            self._schedule_progress(m, c)
            return None
        if member == "HangupAll":
            # oFono 1.31 queues one release per call and replies when the last is done: the calls'
            # DisconnectReason/State/CallRemoved come first, the reply after them.
            for c in side.with_state("incoming", "dialing", "alerting", "active", "held"):
                self._end(m, c, "local")
            self._send(Message.new_method_return(msg))
            return None
        if member == "SwapCalls":
            if side.with_state("waiting"):
                raise OfonoError("Failed")
            active, held = side.with_state("active"), side.with_state("held")
            if not active and not held:
                raise OfonoError("Failed")
            self._send(Message.new_method_return(msg))
            for c in active:
                self._set_state(m, c, "held")
            for c in held:
                self._set_state(m, c, "active")
            return None
        if member == "HoldAndAnswer":
            waiting = side.with_state("waiting")
            if not waiting or (side.with_state("active") and side.with_state("held")):
                raise OfonoError("Failed")
            self._send(Message.new_method_return(msg))
            # oFono 1.31: AT+CHLD=2's OK, then +CIEV call/callsetup mark the answered call active; the
            # other call is seen held only after the AT+CLCC poll that follows — for a moment two
            # calls are active.
            # (The phone itself holds the call at once: fake.calls() shows it held.)
            others = side.with_state("active")
            for c in others:
                c.state = "held"
            self._set_state(m, waiting[0], "active")
            gen = m.link_generation

            def clcc_poll() -> None:
                if gen != m.link_generation:
                    return
                for c in others:
                    if c.state == "held" and c.idx in side.calls and c.idx in m.published:
                        self._changed(m.call_path(c.idx), names.OFONO_VOICECALL, "State")

            self._later(CLCC_POLL_S, clcc_poll)
            return None
        if member == "ReleaseAndAnswer":
            waiting = side.with_state("waiting")
            if not waiting:
                raise OfonoError("Failed")
            self._send(Message.new_method_return(msg))
            for c in side.with_state("active", "dialing", "alerting"):
                self._end(m, c, "local")
            if waiting[0].idx in side.calls:
                self._set_state(m, waiting[0], "active")
            return None
        if member == "ReleaseAndSwap":
            if side.with_state("waiting"):
                raise OfonoError("Failed")
            self._send(Message.new_method_return(msg))
            for c in side.with_state("active"):
                self._end(m, c, "local")
            for c in side.with_state("held"):
                self._set_state(m, c, "active")
            return None
        if member == "SendTones":
            (tones,) = msg.body
            if not side.with_state("active", "alerting"):
                raise OfonoError("Failed")
            t = str(tones).upper()
            if not t or any(ch not in "0123456789*#ABCDP" for ch in t):
                raise OfonoError("InvalidFormat")
            side.phone.extra.setdefault("dtmf", [])
            dtmf = side.phone.extra["dtmf"]
            if isinstance(dtmf, list):
                dtmf.append(t)
            return Message.new_method_return(msg)
        if member == "CreateMultiparty":
            active, held = side.with_state("active"), side.with_state("held")
            if not active or not held:
                raise OfonoError("Failed")
            members = active + held
            for c in members:
                if not c.multiparty:
                    c.multiparty = True
                    if c.idx in m.published:
                        self._changed(m.call_path(c.idx), names.OFONO_VOICECALL, "Multiparty")
                self._set_state(m, c, "active")
            return Message.new_method_return(msg, "ao", [[m.call_path(c.idx) for c in members]])
        if member == "HangupMultiparty":
            self._send(Message.new_method_return(msg))
            for c in [c for c in side.calls.values() if c.multiparty]:
                self._end(m, c, "local")
            return None
        if member == "PrivateChat":
            (path,) = msg.body
            idx = _call_idx(m, path)
            if idx is None or idx not in side.calls or not side.calls[idx].multiparty:
                raise OfonoError("NotFound")
            if side.with_state("held"):
                raise OfonoError("Failed")
            for c in side.calls.values():
                if c.multiparty and c.idx != idx:
                    self._set_state(m, c, "held")
            c = side.calls[idx]
            c.multiparty = False
            self._changed(m.call_path(idx), names.OFONO_VOICECALL, "Multiparty")
            rest = [m.call_path(x.idx) for x in side.calls.values() if x.multiparty]
            return Message.new_method_return(msg, "ao", [rest])
        if member == "Transfer":
            raise OfonoError("NotImplemented")  # the phone does not offer AG feature "transfer"
        if member == "DialMemory":
            raise OfonoError("Failed")
        raise _unknown(msg)

    def _schedule_progress(self, m: Modem, c: PhoneCall) -> None:
        p = m.side.phone
        gen = m.link_generation
        if p.hfp_alert_after is not None:
            def alert() -> None:
                if m.side.calls.get(c.idx) is c and c.state == "dialing" and gen == m.link_generation:
                    self._set_state(m, c, "alerting")
            self._later(p.hfp_alert_after, alert)
        if p.hfp_remote_answer_after is not None:
            def answer() -> None:
                if m.side.calls.get(c.idx) is c and c.state in ("dialing", "alerting"):
                    self._set_state(m, c, "active")
            self._later(p.hfp_remote_answer_after, answer)

    # ---------------------------------------------------------------- Handsfree / NetReg / CallVolume

    def _handsfree_props(self, m: Modem) -> dict[str, Variant]:
        p = m.side.phone
        return {
            "Features": _v("as", list(AG_FEATURES)),
            "InbandRinging": _v("b", p.inband_ringing),
            "VoiceRecognition": _v("b", m.voice_recognition),
            "EchoCancelingNoiseReduction": _v("b", m.ecnr),
            "BatteryChargeLevel": _v("y", max(0, min(5, p.battery))),
            "SubscriberNumbers": _v("as", [p.subscriber_number] if p.subscriber_number else []),
        }

    def _handsfree_method(self, msg: Message, m: Modem, member: str) -> Message | None:
        if member == "SetProperty" and msg.signature == "sv":
            name, value = msg.body
            val = value.value
            if name == "VoiceRecognition" and isinstance(val, bool):
                if val != m.voice_recognition:
                    m.voice_recognition = val
                    self._changed(m.path, names.OFONO_HANDSFREE, name)
                return Message.new_method_return(msg)
            if name == "EchoCancelingNoiseReduction" and isinstance(val, bool):
                if val:
                    raise OfonoError("NotSupported")  # can only be switched off
                if m.ecnr:
                    m.ecnr = False
                    self._changed(m.path, names.OFONO_HANDSFREE, name)
                return Message.new_method_return(msg)
            raise OfonoError("InvalidArguments")
        if member == "RequestPhoneNumber":
            if not m.side.phone.subscriber_number:
                raise OfonoError("Failed")
            return Message.new_method_return(msg, "s", [m.side.phone.subscriber_number])
        raise _unknown(msg)

    def _netreg_props(self, m: Modem) -> dict[str, Variant]:
        p = m.side.phone
        status = "unregistered" if p.signal <= 0 else ("roaming" if p.roaming else "registered")
        return {
            "Mode": _v("s", "auto"),
            "Status": _v("s", status),
            "Name": _v("s", p.operator),
            "Strength": _v("y", max(0, min(5, p.signal)) * 20),
        }

    def _netreg_method(self, msg: Message, m: Modem, member: str) -> Message | None:
        if member in ("Register", "Scan", "SetProperty"):
            raise OfonoError("NotImplemented")
        if member == "GetOperators":
            return Message.new_method_return(msg, "a(oa{sv})", [[]])
        raise _unknown(msg)

    def _callvolume_props(self, m: Modem) -> dict[str, Variant]:
        return {"Muted": _v("b", False), "SpeakerVolume": _v("y", m.speaker_volume),
                "MicrophoneVolume": _v("y", m.microphone_volume)}

    def _callvolume_method(self, msg: Message, m: Modem, member: str) -> Message | None:
        if member == "SetProperty" and msg.signature == "sv":
            name, value = msg.body
            val = value.value
            if name == "Muted":
                raise OfonoError("NotImplemented")  # not on HFP
            if name in ("SpeakerVolume", "MicrophoneVolume") and isinstance(val, int) and 0 <= val <= 100:
                attr = "speaker_volume" if name == "SpeakerVolume" else "microphone_volume"
                if getattr(m, attr) != val:
                    setattr(m, attr, val)
                    self._changed(m.path, names.OFONO_CALLVOLUME, name)
                return Message.new_method_return(msg)
            raise OfonoError("InvalidArguments")
        raise _unknown(msg)

    # ================================================================ Python control API

    def _wake_call_waiters(self) -> None:
        for pred, fut in list(self._call_waiters):
            if not fut.done() and pred():
                fut.set_result(None)
                self._call_waiters.remove((pred, fut))

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (under a deadline) until ``pred()`` holds, re-checked on every method call the
        fake receives and every signal it sends — e.g. "the daemon has tried to power the modem
        twice", "the modem's voice-call interface is up"."""
        if pred():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._call_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            if entry in self._call_waiters:
                self._call_waiters.remove(entry)

    def side(self, address: str) -> PhoneSide:
        try:
            return self.sides[address.upper()]
        except KeyError:
            raise ValueError(f"no HFP phone {address}") from None

    def modem(self, address: str) -> Modem | None:
        return self.modems.get(address.upper())

    def path_of(self, address: str) -> str:
        return modem_path(address, self.adapter)

    def add_phone(self, phone: VirtualPhone) -> str:
        """A phone offering HFP was paired: a modem appears (ModemAdded)."""
        if not phone.offers("hfp"):
            raise ValueError("the phone does not offer HFP")
        side = self.sides.setdefault(phone.address, PhoneSide(phone))
        side.phone = phone
        if self.running and phone.address not in self.modems:
            m = Modem(side, modem_path(phone.address, self.adapter))
            self._add_modem(m)
            self._signal("/", names.OFONO_MANAGER, "ModemAdded", "oa{sv}", [m.path, self._modem_props(m)])
        return modem_path(phone.address, self.adapter)

    def remove_phone(self, address: str) -> None:
        """Unpaired (or HFP UUID gone): the modem is removed (ModemRemoved)."""
        address = address.upper()
        m = self.modems.pop(address, None)
        self.sides.pop(address, None)
        if m is not None:
            self._remove_modem(m)
            m.link_generation += 1
            self._signal("/", names.OFONO_MANAGER, "ModemRemoved", "o", [m.path])

    def _modem_for(self, address: str) -> tuple[PhoneSide, Modem | None]:
        side = self.side(address)
        m = self.modems.get(side.phone.address)
        return side, m

    def incoming_call(self, address: str, number: str, name: str = "") -> int:
        """The phone rings (``incoming``), or — with a call in progress — a call waits
        (``waiting``).  Returns the call's CLCC index (oFono path ``voicecall%02d``)."""
        side, m = self._modem_for(address)
        if side.with_state("incoming", "waiting"):
            raise ValueError("the phone already has a ringing call")
        if len(side.calls) >= MAX_VOICE_CALLS:
            raise ValueError("too many calls")
        busy = bool(side.with_state("active", "held", "dialing", "alerting"))
        c = PhoneCall(side.next_idx(), number, name, "waiting" if busy else "incoming", "incoming")
        side.calls[c.idx] = c
        if m is not None and m.up:
            self._publish(m, c)
        return c.idx

    def call_waiting(self, address: str, number: str, name: str = "") -> int:
        """A second call arrives during a call (+CCWA): ``waiting``."""
        side = self.side(address)
        if not side.with_state("active", "held", "dialing", "alerting"):
            raise ValueError("call waiting needs a call in progress")
        return self.incoming_call(address, number, name)

    def _pick(self, side: PhoneSide, idx: int | None, states: tuple[str, ...]) -> PhoneCall:
        if idx is not None:
            c = side.calls.get(idx)
            if c is None:
                raise ValueError(f"no call {idx}")
            return c
        cands = side.with_state(*states)
        if not cands:
            raise ValueError("no such call on the phone")
        return cands[0]

    def remote_alerting(self, address: str, idx: int | None = None) -> None:
        side, m = self._modem_for(address)
        c = self._pick(side, idx, ("dialing",))
        if m is not None:
            self._set_state(m, c, "alerting")
        else:
            c.state = "alerting"

    def remote_answer(self, address: str, idx: int | None = None) -> None:
        """The called party picks up an outgoing call (or the driver answers on the handset)."""
        side, m = self._modem_for(address)
        c = self._pick(side, idx, ("alerting", "dialing", "incoming", "waiting"))
        if m is not None:
            for other in side.with_state("active"):
                if other is not c:
                    self._set_state(m, other, "held")
            self._set_state(m, c, "active")
        else:
            c.state = "active"
            c.start_time = time.time()

    def remote_hangup(self, address: str, idx: int | None = None, reason: str = "remote") -> None:
        """The other party (or the network) ends a call."""
        side, m = self._modem_for(address)
        c = self._pick(side, idx, ("active", "incoming", "alerting", "dialing", "waiting", "held"))
        if m is not None:
            self._end(m, c, reason)
        else:
            side.calls.pop(c.idx, None)

    def set_battery(self, address: str, level: int) -> None:
        side, m = self._modem_for(address)
        side.phone.battery = max(0, min(5, int(level)))
        if m is not None and names.OFONO_HANDSFREE in m.interfaces:
            self._changed(m.path, names.OFONO_HANDSFREE, "BatteryChargeLevel")

    def set_signal(self, address: str, level: int) -> None:
        side, m = self._modem_for(address)
        before = self._netreg_props(m)["Status"].value if m is not None else ""
        side.phone.signal = max(0, min(5, int(level)))
        if m is not None and names.OFONO_NETREG in m.interfaces:
            self._changed(m.path, names.OFONO_NETREG, "Strength")
            after = self._netreg_props(m)["Status"].value
            if after != before:
                self._changed(m.path, names.OFONO_NETREG, "Status")

    def set_operator(self, address: str, name: str) -> None:
        side, m = self._modem_for(address)
        side.phone.operator = name
        if m is not None and names.OFONO_NETREG in m.interfaces:
            self._changed(m.path, names.OFONO_NETREG, "Name")

    def set_inband_ringing(self, address: str, on: bool) -> None:
        side, m = self._modem_for(address)
        side.phone.inband_ringing = bool(on)
        if m is not None and names.OFONO_HANDSFREE in m.interfaces:
            self._changed(m.path, names.OFONO_HANDSFREE, "InbandRinging")

    def link_loss(self, address: str) -> None:
        """The HFP RFCOMM link drops (phone walked away, radio trouble)."""
        _side, m = self._modem_for(address)
        if m is not None:
            self._drop_link(m)

    def set_command_fault(self, member: str, error: str = "Failed", delay: float = 0.0) -> None:
        """The phone answers the AT command behind oFono method ``member`` (Answer, Hangup, Dial,
        HoldAndAnswer, SwapCalls, HangupAll, SendTones...) with ERROR (``error``: the oFono error short
        name, "" = OK) after ``delay`` seconds.  E.g. ``set_command_fault("Answer")`` is a phone that
        refuses ATA with +CME ERROR: 3 (the call keeps ringing); ``("Dial", "", 2.0)`` a slow phone."""
        self.command_faults[member] = (error, delay)

    def clear_command_faults(self) -> None:
        self.command_faults.clear()

    def set_unresponsive(self, on: bool) -> None:
        """ofonod stops answering method calls (a hung daemon); signals still flow."""
        self.unresponsive = bool(on)
        if not on:
            self.swallowed.clear()

    def calls(self, address: str) -> list[PhoneCall]:
        return sorted(self.side(address).calls.values(), key=lambda c: c.idx)

    # ================================================================ D-Bus control interface

    def _control(self, msg: Message) -> Message | None:
        member, body = msg.member, msg.body
        try:
            if member == "IncomingCall":
                idx = self.incoming_call(body[0], body[1], body[2])
                return Message.new_method_return(msg, "u", [idx])
            if member == "CallWaiting":
                idx = self.call_waiting(body[0], body[1], body[2])
                return Message.new_method_return(msg, "u", [idx])
            if member in ("RemoteAnswer", "RemoteHangup", "RemoteAlerting"):
                which = int(body[1]) or None
                fn = {"RemoteAnswer": self.remote_answer, "RemoteHangup": self.remote_hangup,
                      "RemoteAlerting": self.remote_alerting}[member]
                fn(body[0], which)
                return Message.new_method_return(msg)
            if member == "SetBattery":
                self.set_battery(body[0], int(body[1]))
            elif member == "SetSignal":
                self.set_signal(body[0], int(body[1]))
            elif member == "SetOperator":
                self.set_operator(body[0], str(body[1]))
            elif member == "SetInbandRinging":
                self.set_inband_ringing(body[0], bool(body[1]))
            elif member == "LinkLoss":
                self.link_loss(body[0])
            elif member == "SetUnresponsive":
                self.set_unresponsive(bool(body[0]))
            elif member == "Restart":
                task = asyncio.get_running_loop().create_task(self.restart())
                self._tasks.add(task)  # restart drops this connection: reply first
                task.add_done_callback(self._tasks.discard)
            elif member == "GetCalls":
                calls = self.calls(body[0])
                return Message.new_method_return(msg, "a(ussss)", [[
                    [c.idx, c.number, c.name, c.state, c.direction] for c in calls]])
            else:
                return Message.new_error(msg, names.E_UNKNOWN_METHOD, f"no method {member}")
        except (ValueError, IndexError, TypeError) as exc:
            return Message.new_error(msg, "org.dashbridge.Sim.Error.Failed", str(exc))
        return Message.new_method_return(msg)


def _call_idx(m: Modem, path: str) -> int | None:
    prefix = m.path + "/voicecall"
    if not path.startswith(prefix):
        return None
    tail = path[len(prefix):]
    return int(tail) if tail.isdigit() and len(tail) == 2 else None


def _unknown(msg: Message) -> OfonoError:
    err = OfonoError("NotImplemented")
    err.name = names.E_UNKNOWN_METHOD
    err.text = f'Method "{msg.member}" with signature "{msg.signature}" on interface "{msg.interface}" doesn\'t exist'
    return err


class OfonoIface(FakeInterface):
    """An oFono interface: ``GetProperties`` from ``props()`` (when it has properties) and
    ``PropertyChanged(sv)`` (sent at once by the object server in its oFono mode)."""

    def __init__(self, name: str, props: Callable[[], dict[str, Variant]] | None) -> None:
        super().__init__(name)
        self._props = props
        if props is not None:
            self.ofono_properties()

    def properties(self) -> dict[str, Variant]:
        return self._props() if self._props is not None else {}


# Methods besides GetProperties (in, out) and signals besides PropertyChanged, per interface
# (oFono's doc/*-api.txt; the HFP modem's subset).
_SETPROP = {"SetProperty": ("sv", "")}
_METHODS: dict[str, dict[str, tuple[str, str]]] = {
    names.OFONO_MANAGER: {"GetModems": ("", "a(oa{sv})")},
    names.OFONO_MODEM: {**_SETPROP},
    names.OFONO_VOICECALL_MANAGER: {
        "Dial": ("ss", "o"), "DialLast": ("", ""), "DialMemory": ("u", ""), "Transfer": ("", ""),
        "SwapCalls": ("", ""), "ReleaseAndAnswer": ("", ""), "ReleaseAndSwap": ("", ""), "HoldAndAnswer": ("", ""),
        "HangupAll": ("", ""), "PrivateChat": ("o", "ao"), "CreateMultiparty": ("", "ao"),
        "HangupMultiparty": ("", ""), "SendTones": ("s", ""), "GetCalls": ("", "a(oa{sv})")},
    names.OFONO_VOICECALL: {"Deflect": ("s", ""), "Hangup": ("", ""), "Answer": ("", "")},
    names.OFONO_HANDSFREE: {**_SETPROP, "RequestPhoneNumber": ("", "s")},
    names.OFONO_NETREG: {**_SETPROP, "Register": ("", ""), "GetOperators": ("", "a(oa{sv})"),
                         "Scan": ("", "a(oa{sv})")},
    names.OFONO_CALLVOLUME: {**_SETPROP},
    SIM_IFACE: {
        "IncomingCall": ("sss", "u"), "CallWaiting": ("sss", "u"), "RemoteAnswer": ("su", ""),
        "RemoteHangup": ("su", ""), "RemoteAlerting": ("su", ""), "SetBattery": ("sy", ""), "SetSignal": ("sy", ""),
        "SetOperator": ("ss", ""), "SetInbandRinging": ("sb", ""), "LinkLoss": ("s", ""),
        "SetUnresponsive": ("b", ""), "Restart": ("", ""), "GetCalls": ("s", "a(ussss)")},
}
_SIGNALS: dict[str, dict[str, str]] = {
    names.OFONO_MANAGER: {"ModemAdded": "oa{sv}", "ModemRemoved": "o"},
    names.OFONO_VOICECALL_MANAGER: {"CallAdded": "oa{sv}", "CallRemoved": "o"},
    names.OFONO_VOICECALL: {"DisconnectReason": "s"},
}
