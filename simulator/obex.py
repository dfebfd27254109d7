"""Fake obexd: ``org.bluez.obex`` on a (private) session bus, faithful to reference §2 and §7 11-13.

What it reproduces (upstream ``obexd/client/{manager,session,transfer}.c`` + ``gdbus/object.c``):

* ObjectManager at ``/``; ``Client1`` at ``/org/bluez/obex``.  ``CreateSession(s, a{sv}) -> o`` is
  asynchronous (the reply comes after the simulated RFCOMM + OBEX CONNECT), ``Target`` is matched
  case-insensitively (name or UUID), ``Channel`` must be typed ``y`` and ``PSM`` ``q`` (a wrongly
  typed value is silently ignored, as upstream's ``parse_device_dict`` does); both given =>
  ``InvalidArguments``.  Sessions live at ``/org/bluez/obex/client/session<N>`` (global counter,
  never reused) with ``Session1`` and the profile interface announced in ONE InterfacesAdded; they
  die with the D-Bus connection that created them; ``RemoveSession`` is owner-only
  (``NotAuthorized``).  Identical (destination, target, channel, psm, owner) reuses the session.
* ``Transfer1`` at ``<session>/transfer<N>`` (global counter): created ``queued`` (the PullAll/Get
  reply carries the full property dict incl. ``Filename``), run one at a time per session,
  ``active`` with ``Transferred`` updated on a progress timer, then ``complete`` or ``error`` by
  PropertiesChanged and the object removed right after.  A temp file ``obex-clientXXXXXX``
  (mode 0600, in ``tmpdir``) is created for an empty targetfile; the client must delete it after
  ``complete``; a failed GET removes its file (``obc_transfer_free``); a crashed obexd leaves it.
* gdbus signal coalescing (``simulator/fakebus.py``, shared with the other fakes): changes are
  flushed from an idle callback (``loop.call_soon``), so several changes in one iteration make one
  PropertiesChanged with the current values (a fast transfer may go ``queued`` -> ``complete``
  without ``active``); properties of an object not yet announced fold into its InterfacesAdded; an
  object added and removed in one iteration makes no signal; pending changes are flushed before
  InterfacesRemoved.  ObjectManager signals are emitted from ``/``.
* A wrong method signature is ``org.freedesktop.DBus.Error.UnknownMethod`` (gdbus skips methods
  whose signature does not match and libdbus answers UnknownMethod).
* obexd restart/crash: the connection is dropped (name released, every object gone, in-flight
  transfers stop, their temp files stay), then a new connection re-owns the name.

Plug-in API for profile fakes (PBAP is ``simulator/obex_pbap.py``; MAP goes in
``simulator/obex_map.py``)::

    from dashbridge.simulator.obex import (FakeInterface, Method, ObexError, ObexProfile, Session,
                                TransferSpec, register_profile)

    class MessageAccess(FakeInterface):            # one instance per session
        def __init__(self, session: Session) -> None:
            super().__init__("org.bluez.obex.MessageAccess1")
            self.session = session
            self.method("SetFolder", "s", "", self._set_folder)          # handler(call, *args)
            self.method("ListMessages", "sa{sv}", "a{oa{sv}}", self._list)  # may be async
        def properties(self) -> dict[str, Variant]:                      # the props that exist now
            return {"SupportedTypes": Variant("as", ["SMS_GSM"])}
        def set_property(self, call, name, value):                       # for read-write props
            raise ObexError("org.freedesktop.DBus.Error.PropertyReadOnly", name)
        async def _list(self, call: Call, folder: str, filters: dict[str, Variant]) -> list[object]:
            if call.sender != self.session.owner: ...                    # call.sender: unique name
            self.session.obexd.tree.add(path, msg_iface)                 # more objects (Message1)
            self.changed("SupportedTypes")                               # coalesced signal
            return [{...}]

    register_profile(ObexProfile(names=("map",), uuid=MAP_MAS, phone_profile="map",
                                 factory=MessageAccess, default_channel=16))

    # in a method handler: start a transfer that writes these bytes at this rate / fails part-way
    path, props = session.queue_transfer(TransferSpec(
        name="", type="x-bt/message", content=b"BEGIN:BMSG...",   # or a callable -> bytes
        targetfile=targetfile, rate=None,       # None: phone/control default (0 = unlimited)
        fail_after=None))                       # bytes delivered before the link fails
    return [path, props]                        # signature "oa{sv}"

``Call`` carries ``sender`` (unique name) and ``owner`` (the :class:`FakeObexd`); a handler raises :class:`ObexError`
(``ObexError.failed("text")`` etc.) for a D-Bus error reply.  ``session.phone`` is the
:class:`~simulator.phone.VirtualPhone`; ``session.obexd.control`` holds fault settings
(:class:`ObexControl`: per-phone ``rate``, one-shot ``fail_next_transfer_after``).
Profile modules are imported by :meth:`FakeObexd.start` (``simulator.obex_pbap``, and
``simulator.obex_map`` when it exists) so ``register_profile`` calls at import time suffice.

Control for tests and scenarios: the in-process API on :class:`FakeObexd` (``restart()``,
``crash()``, ``resume()``, ``control.set_rate()``, ``control.fail_next_transfer()``, plus what
profiles add) and the D-Bus interface ``org.dashbridge.Sim.Obex1`` at ``/org/dashbridge/sim`` on
the fake's own connection (not announced by the ObjectManager).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import string
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import RequestNameReply, Variant
from dbus_fast.aio import MessageBus

from . import names
from .fakebus import Call, FakeError, FakeInterface, Method, ObjectServer
from .phone import VirtualPhone

__all__ = ["Call", "FakeInterface", "Method", "ObjectTree"]  # the plug-in API (with the names below)

log = logging.getLogger(__name__)

OBEX_NAME = names.OBEX
OBEX_ROOT = names.OBEX_ROOT
CLIENT_IFACE = names.OBEX_CLIENT
SESSION_IFACE = names.OBEX_SESSION
TRANSFER_IFACE = names.OBEX_TRANSFER
SESSION_PREFIX = names.OBEX_SESSION_PREFIX
ERR = names.OBEX_ERR
SIM_PATH = names.SIM_PATH
SIM_IFACE = "org.dashbridge.Sim.Obex1"
E_READ_ONLY = names.E_READ_ONLY

ObjectTree = ObjectServer  # the fake obexd's objects: simulator.fakebus.ObjectServer

# Simulated radio timings (seconds).  Small, so tests are fast; a scenario may raise them.
CONNECT_DELAY_S = 0.02  # RFCOMM + OBEX CONNECT
PROGRESS_INTERVAL_S = 1.0  # obexd's Transferred timer
CHUNK_INTERVAL_S = 0.05  # how often a rate-limited transfer writes a chunk


class ObexError(FakeError):
    """Raised by handlers: becomes a D-Bus error reply ``name`` with ``text``."""

    prefix = ERR

    @classmethod
    def failed(cls, text: str) -> ObexError:
        return cls(ERR + "Failed", text)

    @classmethod
    def invalid_args(cls, text: str = "") -> ObexError:
        return cls(ERR + "InvalidArguments", text)

    @classmethod
    def forbidden(cls, text: str) -> ObexError:
        return cls(ERR + "Forbidden", text)

    @classmethod
    def not_authorized(cls, text: str = "Not Authorized") -> ObexError:
        return cls(ERR + "NotAuthorized", text)

    @classmethod
    def not_supported(cls, text: str = "Operation is not supported") -> ObexError:
        return cls(ERR + "NotSupported", text)


# -------------------------------------------------------------------------------------------------
# Profiles (plug-ins) and control
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObexProfile:
    """A client-side profile obexd offers: ``Target`` names/UUID and the interface factory."""

    names: tuple[str, ...]  # lower-case Target names, e.g. ("pbap",)
    uuid: str  # the PSE/MAS UUID; Session1.Target; also accepted as Target
    phone_profile: str  # VirtualPhone.profiles entry the phone must offer
    factory: Callable[[Session], FakeInterface]
    default_channel: int = 0


PROFILES: dict[str, ObexProfile] = {}


def register_profile(profile: ObexProfile) -> None:
    for n in (*profile.names, profile.uuid.lower()):
        PROFILES[n.lower()] = profile


def find_profile(target: str) -> ObexProfile | None:
    return PROFILES.get(target.lower())


@dataclass
class ObexControl:
    """Fault knobs the tests and scenarios turn (per phone address, upper case)."""

    rate: dict[str, int] = field(default_factory=dict)  # bytes/s (0 = as fast as possible)
    fail_next: dict[str, list[int]] = field(default_factory=dict)  # one-shot: [transfers to skip, bytes]
    stall_next: dict[str, int] = field(default_factory=dict)  # one-shot: silence after N bytes
    refuse_connect: dict[str, str] = field(default_factory=dict)  # CreateSession fails with text
    connect_delay: dict[str, float] = field(default_factory=dict)

    def set_rate(self, address: str, bytes_per_s: int) -> None:
        self.rate[address.upper()] = max(0, int(bytes_per_s))

    def fail_next_transfer(self, address: str, after_bytes: int = 0, *, skip: int = 0) -> None:
        """The link fails after ``after_bytes`` of the phone's next transfer (after ``skip`` good ones)."""
        self.fail_next[address.upper()] = [max(0, int(skip)), max(0, int(after_bytes))]

    def stall_next_transfer(self, address: str, after_bytes: int = 0) -> None:
        """The phone goes quiet mid-transfer (no error, no progress) until the client cancels."""
        self.stall_next[address.upper()] = max(0, int(after_bytes))


# -------------------------------------------------------------------------------------------------
# Transfers
# -------------------------------------------------------------------------------------------------


@dataclass
class TransferSpec:
    """What a profile asks the session to GET: the bytes, how fast, and whether it breaks."""

    name: str  # OBEX Name, e.g. "telecom/pb.vcf" ("" when the profile uses a handle)
    type: str  # OBEX Type, e.g. "x-bt/phonebook"
    content: bytes | Callable[[], bytes]  # a callable is evaluated when the transfer starts
    targetfile: str = ""  # "" => a temp file obex-clientXXXXXX in obexd's tmpdir
    rate: int | None = None  # bytes/s; None => ObexControl/phone default; 0 = unlimited
    fail_after: int | None = None  # deliver this many bytes, then the link fails (status error)
    report_size: bool = True  # the phone sends an OBEX Length header (Size known when active)
    on_done: Callable[[bool], None] | None = None  # called with success after the final status


class Transfer(FakeInterface):
    def __init__(self, session: Session, path: str, spec: TransferSpec, filename: str) -> None:
        super().__init__(TRANSFER_IFACE)
        self.session = session
        self.path = path
        self.spec = spec
        self.filename = filename
        self.status = "queued"
        self.size = 0
        self.transferred = 0
        self.started = False
        self.cancelled = False
        self._resume = asyncio.Event()
        self._resume.set()
        self.method("Cancel", "", "", self._cancel)
        self.method("Suspend", "", "", self._suspend)
        self.method("Resume", "", "", self._resume_m)

    def properties(self) -> dict[str, Variant]:
        props = {"Status": Variant("s", self.status), "Session": Variant("o", self.session.path),
                 "Size": Variant("t", self.size)}
        if self.spec.name:
            props["Name"] = Variant("s", self.spec.name)
        if self.filename:
            props["Filename"] = Variant("s", self.filename)
        if self.started:
            props["Transferred"] = Variant("t", self.transferred)
        return props

    def property_signatures(self) -> dict[str, str]:
        return {"Status": "s", "Session": "o", "Size": "t", "Name": "s", "Filename": "s", "Transferred": "t"}

    def _check_owner(self, call: Call) -> None:
        if call.sender != self.session.owner:
            raise ObexError.not_authorized()

    def _cancel(self, call: Call) -> None:
        self._check_owner(call)
        if self.status in ("complete", "error"):
            raise ObexError.failed("Transfer finished")
        self.cancelled = True
        self._resume.set()
        self.session._wake(self)

    def _suspend(self, call: Call) -> None:
        self._check_owner(call)
        if self.status != "active":
            raise ObexError(ERR + "NotInProgress", "Not in progress")
        self.status = "suspended"
        self._resume.clear()
        self.changed("Status")

    def _resume_m(self, call: Call) -> None:
        self._check_owner(call)
        if self.status != "suspended":
            raise ObexError(ERR + "NotInProgress", "Not in progress")
        self.status = "active"
        self._resume.set()
        self.changed("Status")


# -------------------------------------------------------------------------------------------------
# Sessions and Client1
# -------------------------------------------------------------------------------------------------


class Session(FakeInterface):
    def __init__(self, obexd: FakeObexd, path: str, owner: str, phone: VirtualPhone, profile: ObexProfile,
                 source: str | None, channel: int | None, psm: int | None) -> None:
        super().__init__(SESSION_IFACE)
        self.obexd = obexd
        self.path = path
        self.owner = owner
        self.phone = phone
        self.profile = profile
        self.source = source
        self.channel = channel
        self.psm = psm
        self.profile_iface: FakeInterface | None = None
        self.transfers: list[Transfer] = []
        self._queue: asyncio.Queue[Transfer] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._wakeups: dict[Transfer, asyncio.Event] = {}
        self.closed = False
        self.method("GetCapabilities", "", "s", self._get_capabilities)

    @property
    def key(self) -> tuple[str, str, str, int | None, int | None, str]:
        return (self.source or "", self.phone.address, self.profile.uuid, self.channel, self.psm, self.owner)

    def properties(self) -> dict[str, Variant]:
        props = {"Destination": Variant("s", self.phone.address), "Target": Variant("s", self.profile.uuid)}
        if self.source:
            props["Source"] = Variant("s", self.source)
        if self.psm is not None:
            props["PSM"] = Variant("q", self.psm)
        else:
            props["Channel"] = Variant("y", self.channel if self.channel is not None
                                       else self.profile.default_channel)
        return props

    def property_signatures(self) -> dict[str, str]:
        return {"Destination": "s", "Target": "s", "Source": "s", "Channel": "y", "PSM": "q"}

    def _get_capabilities(self, call: Call) -> list[Any]:
        raise ObexError.not_supported("Capabilities not supported by the remote device")

    # -- transfers (the reusable helper for every profile) ----------------------------------------
    def queue_transfer(self, spec: TransferSpec) -> tuple[str, dict[str, Variant]]:
        """Create a queued Transfer1 (announced at the next idle) and return ``(path, props)``
        for a ``(o, a{sv})`` reply.  Raises :class:`ObexError` if the target file can't be made."""
        if self.closed:
            raise ObexError.failed("Session closed")
        filename = self.obexd._open_target(spec.targetfile)
        path = f"{self.path}/transfer{self.obexd._next_transfer()}"
        t = Transfer(self, path, spec, filename)
        self.transfers.append(t)
        self.obexd.tree.add(path, t)
        self._queue.put_nowait(t)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run_queue(), name=f"obex:{self.path}")
        return path, t.properties()

    def _wake(self, t: Transfer) -> None:
        ev = self._wakeups.get(t)
        if ev is not None:
            ev.set()

    async def _run_queue(self) -> None:
        while not self.closed:
            t = await self._queue.get()
            if t.cancelled:
                self._finish(t, ok=False)
                continue
            try:
                await self._run(t)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fake obexd: transfer %s failed", t.path)
                self._finish(t, ok=False)

    async def _run(self, t: Transfer) -> None:
        addr = self.phone.address
        ctl = self.obexd.control
        data = t.spec.content() if callable(t.spec.content) else t.spec.content
        fail_after = t.spec.fail_after
        armed = ctl.fail_next.get(addr)
        if armed is not None:
            if armed[0] > 0:
                armed[0] -= 1
            else:
                fail_after = ctl.fail_next.pop(addr)[1]
        stall_after = ctl.stall_next.pop(addr, None)
        rate = t.spec.rate if t.spec.rate is not None else ctl.rate.get(addr, 0)
        t.started = True
        t.status = "active"
        if t.spec.report_size:
            t.size = len(data)
        t.changed("Status", "Size", "Transferred")
        limit = len(data) if fail_after is None else min(fail_after, len(data))
        wake = self._wakeups[t] = asyncio.Event()
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        pos = 0
        fh = None
        try:
            if t.filename:
                fh = open(t.filename, "r+b")  # noqa: SIM115, ASYNC230 - closed below; a local temp file
            while pos < limit:
                if t.cancelled:
                    break
                if not t._resume.is_set():
                    await t._resume.wait()
                    continue
                if stall_after is not None and pos >= stall_after:
                    wake.clear()
                    await wake.wait()  # silent until Cancel (or obexd goes away)
                    continue
                step = limit - pos if rate <= 0 else max(1, int(rate * CHUNK_INTERVAL_S))
                if stall_after is not None:
                    step = min(step, stall_after - pos)
                chunk = data[pos:pos + step]
                if fh is not None:
                    fh.write(chunk)
                    fh.flush()
                pos += len(chunk)
                t.transferred = pos
                now = loop.time()
                if now - last_progress >= self.obexd.progress_interval:
                    last_progress = now
                    t.changed("Transferred")
                if rate > 0 and pos < limit:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(CHUNK_INTERVAL_S):
                            await wake.wait()
        except OSError as exc:
            log.warning("fake obexd: cannot write %s: %s", t.filename, exc)
            pos = -1
        finally:
            self._wakeups.pop(t, None)
            if fh is not None:
                fh.close()
        self._finish(t, ok=not t.cancelled and pos == len(data))

    def _finish(self, t: Transfer, *, ok: bool) -> None:
        t.status = "complete" if ok else "error"
        t.changed("Status", "Transferred")
        if not ok and t.filename:
            with contextlib.suppress(OSError):
                os.unlink(t.filename)  # obc_transfer_free removes a failed GET's file
        if t in self.transfers:
            self.transfers.remove(t)
        self.obexd.tree.remove(t.path)  # flushes the final status first
        if t.spec.on_done:
            try:
                t.spec.on_done(ok)
            except Exception:
                log.exception("fake obexd: on_done failed")

    def close(self, *, clean: bool = True) -> None:
        """Tear down (RemoveSession, owner left, or obexd stopped): transfers end, files of
        unfinished GETs are removed when ``clean`` (obexd exiting normally)."""
        if self.closed:
            return
        self.closed = True
        if self._worker is not None:
            self._worker.cancel()
        for t in list(self.transfers):
            if clean:
                t.status = "error"
                if t.filename:
                    with contextlib.suppress(OSError):
                        os.unlink(t.filename)
                self.obexd.tree.remove(t.path)
        self.transfers.clear()
        self.obexd.tree.remove(self.path)


class Client(FakeInterface):
    def __init__(self, obexd: FakeObexd) -> None:
        super().__init__(CLIENT_IFACE)
        self.obexd = obexd
        self.method("CreateSession", "sa{sv}", "o", self._create)
        self.method("RemoveSession", "o", "", self._remove)

    async def _create(self, call: Call, destination: str, args: dict[str, Variant]) -> list[Any]:
        source = target = None
        channel = psm = None
        for key, var in args.items():  # keys are case-sensitive upstream; wrong types ignored
            if var.signature == "s" and key == "Source":
                source = var.value
            elif var.signature == "s" and key == "Target":
                target = var.value
            elif var.signature == "y" and key == "Channel":
                channel = int(var.value)
            elif var.signature == "q" and key == "PSM":
                psm = int(var.value)
        if not destination or not target:
            raise ObexError.invalid_args("Invalid arguments in method call")
        if channel is not None and psm is not None:
            raise ObexError.invalid_args("Invalid arguments in method call")
        profile = find_profile(target)
        if profile is None:
            raise ObexError.failed("Unable to find service record")  # fake: only plugged-in profiles
        od = self.obexd
        phone = od.phones.get(destination.upper())
        wanted = (source or "", destination.upper(), profile.uuid, channel, psm, call.sender)
        for s in od.sessions.values():
            if s.key == wanted and not s.closed:
                return [s.path]
        await asyncio.sleep(od.control.connect_delay.get(destination.upper(), CONNECT_DELAY_S))
        if phone is None or not phone.in_range:
            raise ObexError.failed("Host is down")
        if not phone.offers(profile.phone_profile):
            raise ObexError.failed("Unable to find service record")
        refuse = od.control.refuse_connect.get(phone.address)
        if refuse:
            raise ObexError.failed(refuse)
        if call.sender in od._gone:
            raise ObexError.failed("owner left")  # the caller left while we were connecting
        path = f"{SESSION_PREFIX}{od._next_session()}"
        session = Session(od, path, call.sender, phone, profile, source, channel, psm)
        session.profile_iface = profile.factory(session)
        od.sessions[path] = session
        od.tree.add(path, session, session.profile_iface)
        return [path]

    def _remove(self, call: Call, path: str) -> None:
        s = self.obexd.sessions.get(path)
        if s is None:
            raise ObexError.invalid_args("Invalid arguments in method call")
        if s.owner != call.sender:
            raise ObexError.not_authorized()
        self.obexd._drop_session(s)


class SimControl(FakeInterface):
    """``org.dashbridge.Sim.Obex1``: generic faults; profiles add methods via ``control_methods``."""

    def __init__(self, obexd: FakeObexd) -> None:
        super().__init__(SIM_IFACE)
        self.obexd = obexd
        ctl = obexd.control
        self.method("SetRate", "su", "", lambda c, a, r: ctl.set_rate(a, r))
        self.method("FailNextTransfer", "su", "", lambda c, a, n: ctl.fail_next_transfer(a, n))
        self.method("StallNextTransfer", "su", "", lambda c, a, n: ctl.stall_next_transfer(a, n))
        self.method("RefuseConnect", "ss", "", lambda c, a, t: self._refuse(a, t))
        self.method("Restart", "", "", self._restart)
        self.method("Sessions", "", "a(sss)", lambda c: [[[p, s.phone.address, s.profile.names[0]]
                                                          for p, s in obexd.sessions.items()]])

    def _refuse(self, address: str, text: str) -> None:
        if text:
            self.obexd.control.refuse_connect[address.upper()] = text
        else:
            self.obexd.control.refuse_connect.pop(address.upper(), None)

    def _restart(self, call: Call) -> None:
        # Reply first (on this connection), then restart on the next iteration.
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.obexd.restart()))


# Control methods profiles contribute to org.dashbridge.Sim.Obex1: name -> (in, out, handler(obexd, call, *args))
CONTROL_METHODS: dict[str, tuple[str, str, Callable[..., Any]]] = {}


def register_control_method(name: str, in_sig: str, out_sig: str, handler: Callable[..., Any]) -> None:
    CONTROL_METHODS[name] = (in_sig, out_sig, handler)


# -------------------------------------------------------------------------------------------------
# The daemon
# -------------------------------------------------------------------------------------------------

_PROFILE_MODULES = (f"{__package__}.obex_pbap", f"{__package__}.obex_map")


def load_profiles() -> None:
    for mod in _PROFILE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


class FakeObexd:
    """``obexd = await FakeObexd.start(session_bus_address, phones)``; ``await obexd.stop()``."""

    def __init__(self, bus_address: str, phones: Iterable[VirtualPhone] = (), *, tmpdir: str | Path | None = None,
                 progress_interval: float = PROGRESS_INTERVAL_S) -> None:
        self.bus_address = bus_address
        self.phones: dict[str, VirtualPhone] = {p.address: p for p in phones}
        self.tmpdir = Path(tmpdir) if tmpdir is not None else Path(tempfile.gettempdir())
        self.progress_interval = progress_interval
        self.control = ObexControl()
        self.sessions: dict[str, Session] = {}
        self.bus: MessageBus | None = None
        self.tree: ObjectTree = None  # type: ignore[assignment]  # set by _up()
        self._session_ctr = 0
        self._transfer_ctr = 0
        self._gone: set[str] = set()
        self.generation = 0  # bumps on every (re)start
        self._up_cond = asyncio.Condition()
        self.targetfiles: list[str] = []  # every non-empty target a client named, in order

    @classmethod
    async def start(cls, bus_address: str, phones: Iterable[VirtualPhone] = (), **kw: Any) -> FakeObexd:
        self = cls(bus_address, phones, **kw)
        await self._up()
        return self

    def add_phone(self, phone: VirtualPhone) -> None:
        self.phones[phone.address] = phone

    @property
    def running(self) -> bool:
        return self.bus is not None and self.bus.connected

    async def _up(self) -> None:
        load_profiles()
        bus = await MessageBus(bus_address=self.bus_address).connect()
        tree = ObjectServer(bus, owner=self, error_prefix=ERR, sync_removal=True)
        tree.on_name_lost = self._owner_left
        self.bus, self.tree = bus, tree
        self._session_ctr = 0 if self.generation == 0 else self._session_ctr  # a new process: see restart()
        await tree.watch_clients()
        tree.add(OBEX_ROOT, Client(self))
        ctl = SimControl(self)
        for name, (i, o, h) in CONTROL_METHODS.items():
            ctl.method(name, i, o, lambda c, *a, _h=h: _h(self, c, *a))
        tree.add(SIM_PATH, ctl, hidden=True)
        tree.flush()
        reply = await asyncio.wait_for(bus.request_name(OBEX_NAME), timeout=5.0)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            bus.disconnect()
            raise RuntimeError(f"cannot own {OBEX_NAME}: {reply}")
        self.generation += 1
        async with self._up_cond:
            self._up_cond.notify_all()

    async def wait_generation(self, generation: int, timeout: float = 5.0) -> None:
        """Until the fake has come up ``generation`` times (e.g. after a Restart over D-Bus)."""
        async with asyncio.timeout(timeout), self._up_cond:
            await self._up_cond.wait_for(lambda: self.generation >= generation)

    async def crash(self) -> None:
        """obexd dies: the name vanishes with every object; temp files of running GETs stay."""
        for s in list(self.sessions.values()):
            s.close(clean=False)
        self.sessions.clear()
        if self.tree is not None:
            self.tree.clear()
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        self.bus = None

    async def resume(self) -> None:
        """A new obexd process takes the name (counters restart, as in a new process)."""
        self._session_ctr = 0
        self._transfer_ctr = 0
        self._gone.clear()
        await self._up()

    async def restart(self) -> None:
        await self.crash()
        await self.resume()

    async def stop(self) -> None:
        """Clean exit: sessions closed (unfinished GET files removed), name released."""
        for s in list(self.sessions.values()):
            s.close(clean=True)
        self.sessions.clear()
        if self.tree is not None:
            self.tree.flush()
            self.tree.clear()
        if self.bus is not None:
            self.bus.disconnect()
        self.bus = None

    # -- internals -------------------------------------------------------------------------------
    def _next_session(self) -> int:
        n = self._session_ctr
        self._session_ctr += 1
        return n

    def _next_transfer(self) -> int:
        n = self._transfer_ctr
        self._transfer_ctr += 1
        return n

    def _owner_left(self, name: str) -> None:
        self._gone.add(name)
        for s in [s for s in self.sessions.values() if s.owner == name]:
            self._drop_session(s)

    def _drop_session(self, s: Session) -> None:
        self.sessions.pop(s.path, None)
        s.close(clean=True)

    def _open_target(self, targetfile: str) -> str:
        if targetfile:
            # Like obexd's transfer_open(): exactly this file, O_WRONLY|O_CREAT|O_TRUNC, 0600 when
            # created (an existing file keeps its owner and mode).
            self.targetfiles.append(targetfile)
            try:
                fd = os.open(targetfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as exc:
                raise ObexError.failed(f"Unable to open file: {exc.strerror}") from None
            os.close(fd)
            return targetfile
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        alphabet = string.ascii_letters + string.digits
        for _ in range(100):
            name = self.tmpdir / ("obex-client" + "".join(secrets.choice(alphabet) for _ in range(6)))
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise ObexError.failed(f"Unable to create file: {exc.strerror}") from None
            os.close(fd)
            return str(name)
        raise ObexError.failed("Unable to create temporary file")

