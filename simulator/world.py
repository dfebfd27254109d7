"""The World: everything around the daemon, composed on private buses, started and stopped as one.

A :class:`World` owns

* a private system bus and a private session bus (:class:`~simulator.bus.PrivateBus`);
* the fakes that have landed in ``simulator/`` (BlueZ and oFono on the system bus, obexd on the
  session bus, the dashboard's navigation service, the cloud backend on 127.0.0.1), each started
  on its own connection through its own in-process API;
* the daemon, ``dashbridged``, as a child process (:class:`~simulator.daemonproc.DaemonProcess`)
  with a config made of the world's defaults, what the fakes need (backend URL, TLS files,
  navigation service) and the caller's overrides (checked with :func:`daemon.config.overrides`);
* a :class:`Dashboard`: a client of the public ``org.dashbridge`` API that records every signal
  the daemon emits (with argument names from the documented introspection XML) and lets callers
  wait for one under a deadline — never sleep.

``await World(...).start()`` / ``await world.stop()`` (or ``async with World(...)``); ``stop()``
always leaves nothing running: the daemon, the fakes' connections and both dbus-daemons end, and
their temporary directories are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.signature import SignatureTree, SignatureType

from dashbridge.daemon.config import Config
from dashbridge.daemon.config import overrides as config_overrides
from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.bus import connect
from dashbridge.daemon.dbus.call import call, unwrap

from .bus import PrivateBus
from .daemonproc import DaemonProcess
from .phone import VirtualPhone

log = logging.getLogger(__name__)

# Deadlines the world itself uses (seconds).  Short: a world is for tests and developers, and a
# fake that does not answer in this long is broken.
DAEMON_READY_S = 20.0
DAEMON_STOP_S = 15.0
DASHBOARD_CALL_S = 10.0
SETTLE_S = 10.0
FAKE_STOP_S = 5.0

# Config the world applies before the caller's overrides: debug logs in the daemon's log file (the
# scenario report shows its tail on failure).  Anything else is the daemon's own default unless a
# scenario says otherwise.
WORLD_CONFIG: dict[str, Any] = {"log_level": "debug"}


class WorldError(Exception):
    """The world could not be built (bad config overrides, a fake that did not start ...)."""


# ---------------------------------------------------------------------------------------------
# The documented API: argument names and signatures from daemon/api/xml/*.xml
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    interface: str
    name: str
    kind: str  # "method" | "signal" | "property"
    in_args: tuple[tuple[str, str], ...] = ()  # (name, signature)
    out_args: tuple[tuple[str, str], ...] = ()
    type: str = ""  # properties
    access: str = ""
    doc: str = ""

    @property
    def in_signature(self) -> str:
        return "".join(t for _, t in self.in_args)


@dataclass
class ApiModel:
    """``org.dashbridge`` interfaces as documented (the lead's test keeps XML == exported)."""

    members: dict[str, dict[str, Member]] = field(default_factory=dict)  # iface -> name -> Member

    @classmethod
    def from_xml_texts(cls, texts: Iterable[str]) -> ApiModel:
        model = cls()
        for text in texts:
            model.add_xml(text)
        return model

    def add_xml(self, text: str) -> None:
        root = ET.fromstring(text)
        for iface in root.findall("interface"):
            iname = iface.get("name", "")
            table = self.members.setdefault(iname, {})
            for el in iface:
                name = el.get("name", "")
                doc = ""
                for a in el.findall("annotation"):
                    if a.get("name") == "org.freedesktop.DBus.Description":
                        doc = a.get("value", "")
                if el.tag == "method":
                    ins = tuple((a.get("name") or f"arg{i}", a.get("type", ""))
                                for i, a in enumerate(x for x in el.findall("arg")
                                                      if x.get("direction", "in") == "in"))
                    outs = tuple((a.get("name") or f"arg{i}", a.get("type", ""))
                                 for i, a in enumerate(x for x in el.findall("arg")
                                                       if x.get("direction") == "out"))
                    table[name] = Member(iname, name, "method", ins, outs, doc=doc)
                elif el.tag == "signal":
                    outs = tuple((a.get("name") or f"arg{i}", a.get("type", ""))
                                 for i, a in enumerate(el.findall("arg")))
                    table[name] = Member(iname, name, "signal", (), outs, doc=doc)
                elif el.tag == "property":
                    table[name] = Member(iname, name, "property", type=el.get("type", ""),
                                         access=el.get("access", "read"), doc=doc)

    @classmethod
    def documented(cls) -> ApiModel:
        texts = []
        xml_dir = resources.files("daemon") / "api" / "xml"
        for entry in sorted(xml_dir.iterdir(), key=lambda e: e.name):
            if entry.name.startswith("org.dashbridge.") and entry.name.endswith(".xml"):
                texts.append(entry.read_text(encoding="utf-8"))
        return cls.from_xml_texts(texts)

    def interfaces(self) -> list[str]:
        return sorted(self.members)

    def resolve(self, dotted: str, kind: str | None = None) -> Member:
        """``Phones1.OpenPairingWindow`` or ``org.dashbridge.Phones1.OpenPairingWindow``."""
        iface, _, member = dotted.rpartition(".")
        if not iface:
            raise KeyError(f'"{dotted}": expected Interface.Member, e.g. "Daemon1.Ping"')
        if not iface.startswith("org."):
            iface = "org.dashbridge." + iface
        table = self.members.get(iface)
        if table is None:
            known = ", ".join(i.removeprefix("org.dashbridge.") for i in self.interfaces()) or "none"
            raise KeyError(f'"{dotted}": the daemon documents no interface {iface} (known: {known})')
        m = table.get(member)
        if m is None or (kind is not None and m.kind != kind):
            of_kind = sorted(n for n, x in table.items() if kind is None or x.kind == kind)
            what = f"{kind} " if kind else ""
            raise KeyError(f'"{dotted}": {iface} has no {what}{member} (it has: {", ".join(of_kind) or "none"})')
        return m


# ---------------------------------------------------------------------------------------------
# YAML/JSON values -> D-Bus values, by signature
# ---------------------------------------------------------------------------------------------


class ValueTypeError(ValueError):
    pass


def guess_signature(value: Any) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "x" if not -(2**31) <= value < 2**31 else "i"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    if isinstance(value, Mapping):
        return "a{sv}"
    if isinstance(value, Sequence):
        kinds = {guess_signature(v) for v in value}
        return f"a{kinds.pop()}" if len(kinds) == 1 else "av"
    raise ValueTypeError(f"cannot send {value!r} over D-Bus")


def to_dbus(value: Any, sig: str | SignatureType) -> Any:
    """Convert a plain value (from YAML) to what dbus-fast sends for signature ``sig``."""
    t = SignatureTree(sig).types[0] if isinstance(sig, str) else sig
    code = t.token
    if code == "v":
        if isinstance(value, Variant):
            return value
        s = guess_signature(value)
        return Variant(s, to_dbus(value, s))
    if code in "ynqiuxt":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueTypeError(f"expected a whole number, got {value!r}")
        return value
    if code == "d":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueTypeError(f"expected a number, got {value!r}")
        return float(value)
    if code == "b":
        if not isinstance(value, bool):
            raise ValueTypeError(f"expected true or false, got {value!r}")
        return value
    if code in "sog":
        if not isinstance(value, str):
            raise ValueTypeError(f"expected a string, got {value!r}")
        return value
    if code == "a":
        inner = t.children[0]
        if inner.token == "{":
            if not isinstance(value, Mapping):
                raise ValueTypeError(f"expected a mapping, got {value!r}")
            kt, vt = inner.children
            return {to_dbus(k, kt): to_dbus(v, vt) for k, v in value.items()}
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ValueTypeError(f"expected a list, got {value!r}")
        return [to_dbus(v, inner) for v in value]
    if code == "(":
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != len(t.children):
            raise ValueTypeError(f"expected a list of {len(t.children)} values ({t.signature}), got {value!r}")
        return [to_dbus(v, c) for v, c in zip(value, t.children, strict=True)]
    raise ValueTypeError(f"signature {t.signature} is not supported in scenarios")


def plain(value: Any) -> Any:
    """Unwrap variants and turn tuples into lists (what scenario matchers compare against)."""
    value = unwrap(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


# ---------------------------------------------------------------------------------------------
# The dashboard: a client of org.dashbridge that records signals
# ---------------------------------------------------------------------------------------------


@dataclass
class Event:
    """One signal from the daemon, as the dashboard saw it."""

    seq: int
    at: float  # time.monotonic()
    interface: str  # for PropertiesChanged: the interface whose properties changed
    member: str
    path: str
    args: list[Any]
    named: dict[str, Any]

    @property
    def short(self) -> str:
        return f"{self.interface.removeprefix('org.dashbridge.')}.{self.member}"

    def describe(self, limit: int = 160) -> str:
        text = ", ".join(f"{k}={v!r}" for k, v in self.named.items())
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        return f"{self.short}({text})"


class Dashboard:
    """What a dashboard service sees of the daemon: its signals, properties and methods."""

    def __init__(self, address: str, api: ApiModel | None = None) -> None:
        self.address = address
        self.api = api or ApiModel.documented()
        self.bus: MessageBus | None = None
        self.events: list[Event] = []
        self.t0 = time.monotonic()
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[Event], None]] = []

    async def connect(self) -> Dashboard:
        self.bus = await connect(self.address, "system")
        self.bus.add_message_handler(self._on_message)
        # A well-known sender in a match rule follows whoever owns the name (dbus-daemon
        # checks ownership at delivery), so a daemon restart keeps being followed.
        await call(self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{names.DASHBRIDGE_NAME}'"], timeout=DASHBOARD_CALL_S)
        return self

    def disconnect(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None

    def on_event(self, cb: Callable[[Event], None]) -> None:
        self._listeners.append(cb)

    def off_event(self, cb: Callable[[Event], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(cb)

    # -- recording --------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        iface = msg.interface or ""
        body = [plain(a) for a in msg.body]
        if iface == names.PROPERTIES_IFACE and msg.member == "PropertiesChanged" and len(body) == 3:
            if not str(body[0]).startswith("org.dashbridge."):
                return
            ev_iface = str(body[0])
            named: dict[str, Any] = {"changed": body[1], "invalidated": body[2]}
        elif iface.startswith("org.dashbridge."):
            ev_iface = iface
            member = self.api.members.get(iface, {}).get(msg.member or "")
            arg_names = [n for n, _ in member.out_args] if member else []
            named = {}
            for i, v in enumerate(body):
                named[arg_names[i] if i < len(arg_names) else f"arg{i}"] = v
        else:
            return
        ev = Event(len(self.events), time.monotonic(), ev_iface, msg.member or "", msg.path or "", body, named)
        self.events.append(ev)
        self._changed.set()
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                log.exception("dashboard event listener failed")

    @property
    def mark(self) -> int:
        """Position in the event log: events recorded from here on are 'new'."""
        return len(self.events)

    async def wait_for(self, pred: Callable[[Event], bool], timeout: float, since: int = 0) -> Event:
        """The first event from ``since`` on that matches ``pred``; TimeoutError after ``timeout``."""
        pos = since
        async with asyncio.timeout(timeout):
            while True:
                while pos < len(self.events):
                    ev = self.events[pos]
                    pos += 1
                    if pred(ev):
                        return ev
                self._changed.clear()
                await self._changed.wait()

    async def changed(self) -> None:
        """Returns when the next event is recorded (callers put their own deadline around it)."""
        n = len(self.events)
        while len(self.events) == n:
            self._changed.clear()
            await self._changed.wait()

    # -- calling ----------------------------------------------------------------------------

    def _bus(self) -> MessageBus:
        if self.bus is None:
            raise WorldError("the dashboard is not connected")
        return self.bus

    async def call(self, dotted: str, args: Sequence[Any] = (), *, timeout: float = DASHBOARD_CALL_S) -> Any:
        """Call a documented method with plain values; returns the plain reply (one value, a
        dict of named values when there are several, or None)."""
        m = self.api.resolve(dotted, "method")
        if len(args) != len(m.in_args):
            want = ", ".join(f"{n} ({t})" for n, t in m.in_args) or "none"
            raise ValueTypeError(f"{m.interface}.{m.name} takes {len(m.in_args)} argument(s): {want}")
        body = []
        for (aname, sig), value in zip(m.in_args, args, strict=True):
            try:
                body.append(to_dbus(value, sig))
            except ValueTypeError as exc:
                raise ValueTypeError(f"argument {aname} ({sig}): {exc}") from None
        reply = await call(self._bus(), names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, m.interface, m.name,
                           m.in_signature, body, timeout=timeout)
        out = [plain(v) for v in reply]
        if not out:
            return None
        if len(out) == 1:
            return out[0]
        return {(m.out_args[i][0] if i < len(m.out_args) else f"arg{i}"): v for i, v in enumerate(out)}

    async def get(self, dotted: str, *, timeout: float = DASHBOARD_CALL_S) -> Any:
        m = self.api.resolve(dotted, "property")
        (value,) = await call(self._bus(), names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, names.PROPERTIES_IFACE,
                              "Get", "ss", [m.interface, m.name], timeout=timeout)
        return plain(value)

    async def get_all(self, interface: str, *, timeout: float = DASHBOARD_CALL_S) -> dict[str, Any]:
        if not interface.startswith("org."):
            interface = "org.dashbridge." + interface
        (props,) = await call(self._bus(), names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, names.PROPERTIES_IFACE,
                              "GetAll", "s", [interface], timeout=timeout)
        return {k: plain(v) for k, v in props.items()}

    async def exported_interfaces(self, *, timeout: float = DASHBOARD_CALL_S) -> list[str]:
        (xml,) = await call(self._bus(), names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH,
                            names.INTROSPECTABLE_IFACE, "Introspect", timeout=timeout)
        return sorted(i.get("name", "") for i in ET.fromstring(xml).findall("interface")
                      if i.get("name", "").startswith("org.dashbridge."))


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


def _optional_module(name: str) -> Any | None:
    """A fake's module if it has landed in the tree, else None (the world runs without it)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


@dataclass
class WorldSpec:
    """What to build.  Everything is optional: the smallest world is two buses and the daemon."""

    phones: list[VirtualPhone] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # daemon config overrides
    daemon: bool = True
    fakes: tuple[str, ...] | None = None  # None: every fake that is available
    bluez: dict[str, float] = field(default_factory=dict)  # BluezTimings overrides (seconds)
    # The BlueZ release the fake emulates ("5.66", "current"); None: $DASHBRIDGE_SIM_BLUEZ_VERSION or current
    bluez_version: str | None = None
    backend: dict[str, Any] = field(default_factory=dict)  # fake backend's initial state
    navigation: dict[str, Any] = field(default_factory=dict)  # fake navigation service options
    log_path: Path | None = None  # keep the daemon's log here (default: its temp dir)
    # None: the open developer's policy; a tuple: a system-bus-like policy including these files
    system_policy: tuple[Path, ...] | None = None


FAKE_NAMES = ("bluez", "ofono", "obexd", "navigation", "backend")
TEST_CLOCK_IFACE = "org.dashbridge.CloudTestClock1"
TEST_CLOCK_ENV = "DASHBRIDGE_CLOUD_TEST_CLOCK"  # daemon/cloud/component.py: OffsetClock + CloudTestClock1
VEHICLE_ID = "WDB0000000DASH001"
_FAKE_OF = {"bluetoothd": "bluez", "ofonod": "ofono"}  # process name -> fake name


class World:
    def __init__(self, spec: WorldSpec | None = None) -> None:
        self.spec = spec or WorldSpec()
        self.system: PrivateBus | None = None
        self.session: PrivateBus | None = None
        self.daemon: DaemonProcess | None = None
        self.dashboard: Dashboard | None = None
        self.phones: dict[str, VirtualPhone] = {}
        self.fakes: dict[str, Any] = {}  # name -> the fake's in-process object
        self.missing: dict[str, str] = {}  # name -> why it is not in this world
        self.config: dict[str, Any] = {}  # the daemon's config as written
        self.daemon_log = ""  # the daemon's log, kept after stop()
        self.unsettled = ""  # why the daemon had not settled after its last start, if it had not
        self._cleanups: list[Callable[[], Any]] = []
        self._tmp: Path | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started: list[tuple[str, int, Path]] = []  # what this world started: (what, pid, its dir)
        self.clock_offset = 0.0  # seconds simulated time is ahead of real time
        self.vehicle_id = VEHICLE_ID
        self.t0 = time.monotonic()

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> World:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> World:
        try:
            # Config first: a bad override must fail before anything is started.
            self.config = self._daemon_config({})
            self.system = await PrivateBus("system", policy_files=self.spec.system_policy).astart()
            self.session = await PrivateBus("session").astart()
            for bus in (self.system, self.session):
                if bus.pid is not None:
                    self._started.append((f"dbus-daemon ({bus.kind} bus)", bus.pid, bus.directory))
            for p in self.spec.phones:
                self.phones[p.address] = p
            await self._start_fakes()
            self._tasks.append(asyncio.ensure_future(self._follow_bluez()))
            self.config = self._daemon_config(self._fake_config())
            self.dashboard = await Dashboard(self.system.address).connect()
            if self.spec.daemon:
                await self.start_daemon()
        except BaseException:
            await self.stop()
            raise
        return self

    def _daemon_config(self, from_fakes: Mapping[str, Any]) -> dict[str, Any]:
        merged = _merge(_merge(dict(WORLD_CONFIG), from_fakes), self.spec.config)
        try:
            config_overrides(Config(), merged, "<config>")
        except Exception as exc:
            raise WorldError(str(exc)) from None
        return merged

    def _fake_config(self) -> dict[str, Any]:
        """Config the fakes need the daemon to have (the backend's URL and TLS files ...)."""
        out: dict[str, Any] = {}
        for fake in self.fakes.values():
            extra = getattr(fake, "daemon_config", None)
            if callable(extra):
                out = _merge(out, extra())
        return out

    async def start_daemon(self) -> DaemonProcess:
        assert self.system is not None and self.session is not None
        if self.daemon is not None:
            raise WorldError("the daemon is already running")
        # The cloud's clock is simulated in a world (advance: in scenarios).
        d = DaemonProcess(self.system.address, self.session.address, config=self.config,
                          state_dir=self._state_dir(), log_path=self.spec.log_path, env={TEST_CLOCK_ENV: "1"})
        self.daemon = d
        d.start(wait_ready=False)
        self._started.append(("dashbridged", d.pid, d.workdir))
        await d.await_ready(DAEMON_READY_S)
        if self.clock_offset and self.dashboard is not None and self.dashboard.bus is not None:
            # A new daemon process starts on real time: bring its cloud clock to the world's.
            await call(self.dashboard.bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, TEST_CLOCK_IFACE,
                       "Advance", "d", [float(self.clock_offset)], timeout=DASHBOARD_CALL_S)
        await self.settle()
        return d

    async def settle(self, timeout: float = SETTLE_S) -> bool:
        """Wait (event-driven, under ``timeout``) until the daemon has found the world it runs in:
        no component still ``starting``, and ``Phones1.State`` is ``ready`` while the fake
        bluetoothd runs with its adapter on.  READY=1 only says the API is exported; a scenario's
        first step should meet a daemon that knows its bluetoothd.  False (and a log line) when it
        did not settle in time: the scenario then shows what is wrong."""
        dash = self.dashboard
        if dash is None or self.daemon is None:
            return False
        exported = set(await dash.exported_interfaces())
        why = ""

        async def settled() -> bool:
            nonlocal why
            health = await dash.get("Daemon1.Health")
            starting = sorted(k for k, v in health.items() if v and v[0] == "starting")
            if starting:
                why = f"still starting: {', '.join(starting)}"
                return False
            bluez = self.fakes.get("bluez")
            if "org.dashbridge.Phones1" in exported and bluez is not None and bluez.running \
                    and bluez.adapter_props().get("Powered"):
                state = await dash.get("Phones1.State")
                if state != "ready":
                    why = f"Phones1.State is {state}"
                    return False
            return True

        try:
            async with asyncio.timeout(timeout):
                while True:
                    nxt = asyncio.ensure_future(dash.changed())
                    try:
                        if await settled():
                            return True
                        await nxt
                    finally:
                        nxt.cancel()
        except TimeoutError:
            log.warning("the daemon did not settle within %.0fs (%s)", timeout, why)
            self.unsettled = why
            return False

    @property
    def tmpdir(self) -> Path:
        """The world's own temporary directory (removed by :meth:`stop`)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="dashbridge-world-"))
        return self._tmp

    def _state_dir(self) -> Path:
        # One state directory for the world's whole life, so a daemon restart keeps its store.
        return self.tmpdir / "state"

    async def stop_daemon(self, *, kill: bool = False) -> int | None:
        d, self.daemon = self.daemon, None
        if d is None:
            return None
        try:
            rc = await asyncio.to_thread(d.kill) if kill else await d.astop(DAEMON_STOP_S)
        finally:
            self.daemon_log += d.log()
            d.cleanup()
        return rc

    async def restart_daemon(self, *, kill: bool = False) -> DaemonProcess:
        await self.stop_daemon(kill=kill)
        return await self.start_daemon()

    async def stop(self) -> None:
        """Stop everything; never raises for a part that is already gone."""
        try:
            await self.stop_daemon()
        except Exception as exc:
            log.warning("stopping the daemon: %s", exc)
        if self.dashboard is not None:
            self.dashboard.disconnect()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=FAKE_STOP_S)
        self._tasks.clear()
        for name, fake in reversed(list(self.fakes.items())):
            try:
                async with asyncio.timeout(FAKE_STOP_S):
                    await _maybe_await(fake.stop())
            except Exception as exc:
                log.warning("stopping fake %s: %s", name, exc)
        self.fakes.clear()
        for bus in (self.session, self.system):
            if bus is not None:
                bus.stop()
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanups.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """After :meth:`stop`: anything this world started that is still there (should be [])."""
        out = []
        for what, pid, directory in self._started:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                pass
            except PermissionError:  # the pid was reused by someone else's process
                pass
            else:
                out.append(f"{what} (pid {pid}) is still running")
            if directory.exists():
                out.append(f"{what}'s directory {directory} is still there")
        if self._tmp is not None and self._tmp.exists():
            out.append(f"the world's directory {self._tmp} is still there")
        return out

    # -- fakes --------------------------------------------------------------------------------

    def wants(self, fake: str) -> bool:
        return self.spec.fakes is None or fake in self.spec.fakes

    async def _start_fakes(self) -> None:
        for name in FAKE_NAMES:
            if not self.wants(name):
                continue
            starter = getattr(self, f"_start_{name}")
            try:
                fake = await starter()
            except WorldError:
                raise
            except Exception as exc:
                raise WorldError(f"the fake {name} did not start: {exc}") from exc
            if fake is not None:
                self.fakes[name] = fake

    def _phones(self) -> list[VirtualPhone]:
        return list(self.phones.values())

    async def _start_bluez(self) -> Any | None:
        mod = _optional_module(f"{__package__}.bluez")
        if mod is None:
            self.missing["bluez"] = "simulator/bluez.py has not landed"
            return None
        assert self.system is not None
        # Fast radio timings; the agent timeout stays bluetoothd's 60 s unless a scenario sets it
        # (the daemon's prompt_timeout must be what ends an unanswered prompt).
        timings = mod.BluezTimings.fast(**{"agent_timeout": 60.0, **self.spec.bluez})
        return await mod.FakeBluez.start(self.system.address, self._phones(), timings=timings,
                                         version=self.spec.bluez_version)

    async def _start_ofono(self) -> Any | None:
        mod = _optional_module(f"{__package__}.ofono")
        if mod is None:
            self.missing["ofono"] = "simulator/ofono.py has not landed"
            return None
        assert self.system is not None
        # oFono makes a modem for each *paired* device offering HFP (plugins/hfp_hf_bluez5.c);
        # _follow_bluez adds the others as they pair.
        paired = [p for p in self._phones() if p.bonded and p.offers("hfp")]
        return await mod.FakeOfono.start(self.system.address, paired)

    async def _start_obexd(self) -> Any | None:
        mod = _optional_module(f"{__package__}.obex")
        if mod is None:
            self.missing["obexd"] = "simulator/obex.py has not landed"
            return None
        assert self.session is not None
        # Its own temp dir: transfer files a crashed obexd leaves behind go with the world.
        return await mod.FakeObexd.start(self.session.address, self._phones(), tmpdir=self.tmpdir / "obex")

    async def _start_navigation(self) -> Any | None:
        mod = _optional_module(f"{__package__}.navsvc")
        if mod is None:
            self.missing["navigation"] = "simulator/navsvc.py has not landed"
            return None
        assert self.system is not None
        opts = self.spec.navigation
        # The dashboard's navigation service lives on the system bus, where the daemon calls it
        # (navigation.service.* in config; the fake takes the configured name/path/method).
        from dashbridge.daemon.config import Config

        try:
            cfg = config_overrides(Config(), {"navigation": self.spec.config.get("navigation", {})})
        except Exception as exc:
            raise WorldError(str(exc)) from None
        fake = mod.FakeNavigation.from_config(self.system.address, cfg.navigation.service,
                                              mode=opts.get("mode", "ok"))
        if opts.get("running", True):
            await fake.up()
        return fake

    async def navigation_start(self) -> None:
        nav = self.fake("navigation")
        if nav.bus is None:
            await nav.up()

    async def navigation_stop(self) -> None:
        await self.fake("navigation").stop()

    async def _start_backend(self) -> Any | None:
        """The carmaker's backend on 127.0.0.1 (HTTPS, mutual TLS), on the world's simulated clock.

        ``spec.backend``: ``state`` (``online``, ``offline``, ``blackhole``, ``untrusted_tls``: the
        address the car is configured with), ``phase`` (``original``, ``migrating``,
        ``migrated``), ``auto_approve`` (registrations complete at once), ``lease`` (seconds of
        entitlement validity), ``features`` (entitlements), ``enabled`` (false: no cloud config
        for the daemon at all)."""
        mod = _optional_module(f"{__package__}.cloud")
        if mod is None:
            self.missing["backend"] = "simulator/cloud.py has not landed"
            return None
        opts = dict(self.spec.backend)
        kw: dict[str, Any] = {"now": self.now}
        for key in ("auto_approve", "lease", "features"):
            if key in opts:
                kw[key] = opts[key]
        fake = mod.FakeCloud(self.tmpdir / "cloud", (self.vehicle_id,), **kw)
        # The car's configured address exists from the start (a port is taken), whatever state
        # the backend is in now.
        await fake.start()
        state = opts.get("state", "online")
        if state != "online":
            await fake.set_listener("old", state)
        phase = opts.get("phase", "original")
        if phase != "original":
            await fake.migrate(phase)
        return _Backend(fake, enabled=bool(opts.get("enabled", True)))

    # -- simulated time ---------------------------------------------------------------------------

    def now(self) -> float:
        """The world's wall clock: real time plus what :meth:`advance` added (the daemon's cloud
        clock and the fake backend follow it; radios and buses stay on real time)."""
        return time.time() + self.clock_offset

    async def advance(self, seconds: float) -> None:
        """Simulated time passes: the daemon's cloud clock (``CloudTestClock1.Advance``, the daemon
        runs with ``DASHBRIDGE_CLOUD_TEST_CLOCK=1`` in a world) and the backend's clock jump ahead;
        every timer now due fires."""
        if seconds < 0:
            raise WorldError("time only moves forward")
        self.clock_offset += seconds
        if self.daemon is not None and self.dashboard is not None and self.dashboard.bus is not None:
            await call(self.dashboard.bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, TEST_CLOCK_IFACE,
                       "Advance", "d", [float(seconds)], timeout=DASHBOARD_CALL_S)

    async def _follow_bluez(self) -> None:
        """What ties the fakes together the way the real daemons are tied: oFono follows BlueZ's
        devices (a modem appears when a phone offering HFP is paired, goes when its device goes,
        and loses its link when the phone disconnects)."""
        bluez, ofono = self.fakes.get("bluez"), self.fakes.get("ofono")
        if bluez is None or ofono is None:
            return
        known: dict[str, tuple[bool, bool]] = {}

        def snapshot() -> dict[str, tuple[bool, bool]]:
            out = {}
            for addr in self.phones:
                props = bluez.device_props(addr) or {}
                out[addr] = (bool(props.get("Paired")), bool(props.get("Connected")))
            return out

        known = snapshot()
        while True:
            now: dict[str, tuple[bool, bool]] = {}

            def changed(prev: dict[str, tuple[bool, bool]] = known) -> bool:
                nonlocal now
                now = snapshot()
                return now != prev

            await bluez.wait_until(changed, None)
            for addr, (paired, connected) in now.items():
                was_paired, was_connected = known.get(addr, (False, False))
                phone = self.phones[addr]
                try:
                    if paired and not was_paired and phone.offers("hfp"):
                        ofono.add_phone(phone)
                    elif was_paired and not paired and addr in ofono.sides:
                        ofono.remove_phone(addr)
                    elif paired and was_connected and not connected and addr in ofono.modems:
                        ofono.link_loss(addr)
                except Exception:
                    log.exception("world: oFono did not follow BlueZ for %s", addr)
            known = now

    def fake(self, name: str) -> Any:
        """The running fake ``name``; a clear error when this world has none."""
        f = self.fakes.get(name)
        if f is None:
            why = self.missing.get(name, "not started in this world")
            raise WorldError(f"no {name} in this world: {why}")
        return f

    # -- phones -------------------------------------------------------------------------------

    async def add_phone(self, phone: VirtualPhone) -> VirtualPhone:
        if phone.address in self.phones:
            raise WorldError(f"a phone with address {phone.address} is already in the world")
        self.phones[phone.address] = phone
        if "bluez" in self.fakes:
            self.fakes["bluez"].add_phone(phone, paired=phone.bonded, trusted=phone.bonded)
        if "obexd" in self.fakes:
            self.fakes["obexd"].add_phone(phone)
        if "ofono" in self.fakes and phone.bonded and phone.offers("hfp"):
            self.fakes["ofono"].add_phone(phone)
        return phone

    def phone(self, ref: str) -> VirtualPhone:
        """A phone by address or by name (case-insensitive)."""
        p = self.phones.get(ref.upper())
        if p is not None:
            return p
        for p in self.phones.values():
            if p.name.lower() == ref.lower():
                return p
        known = ", ".join(f"{p.name} ({p.address})" for p in self.phones.values()) or "none"
        raise WorldError(f'no phone "{ref}" in this world (phones: {known})')

    # -- what phones do (bluetoothd's view of them) ---------------------------------------------

    async def set_in_range(self, ref: str, in_range: bool) -> None:
        p = self.phone(ref)
        await self.fake("bluez").set_in_range(p.address, in_range)

    async def phone_pair(self, ref: str, passkey: int | None = None) -> str:
        """The phone starts pairing with the car; returns how it ended for the phone (``paired``,
        ``rejected``, ``phone_rejected``, ``timeout``, ``no_agent``, ``not_found``, ``busy``,
        ``canceled``, ``failed``)."""
        p = self.phone(ref)
        outcome: str = await self.fake("bluez").phone_pair(p.address, passkey=passkey)
        return outcome

    def phone_accepts_pairing(self, ref: str, accept: bool) -> None:
        self.fake("bluez").set_phone_accepts_pairing(self.phone(ref).address, accept)

    def phone_forgets_car(self, ref: str) -> None:
        self.fake("bluez").phone_forget_bond(self.phone(ref).address)

    async def phone_connect(self, ref: str) -> bool:
        ok: bool = await self.fake("bluez").phone_connect(self.phone(ref).address)
        return ok

    async def phone_disconnect(self, ref: str) -> None:
        await self.fake("bluez").phone_disconnect(self.phone(ref).address)

    def phone_state(self, ref: str) -> dict[str, Any]:
        """What the phone and bluetoothd know: in_range, bonded (phone side), paired/connected/
        trusted (car side), the car-side profiles connected."""
        p = self.phone(ref)
        out: dict[str, Any] = {"name": p.name, "address": p.address, "in_range": p.in_range, "bonded": p.bonded,
                               "profiles": list(p.profiles)}
        bluez = self.fakes.get("bluez")
        if bluez is not None:
            props = bluez.device_props(p.address) or {}
            out.update({"paired": bool(props.get("Paired")), "connected": bool(props.get("Connected")),
                        "trusted": bool(props.get("Trusted")), "known_to_bluez": bool(props)})
        return out

    # -- the companion app on a phone (simulator/companion.py, docs/ble-companion.md) ----------------

    def companion_app(self, ref: str) -> Any:
        """The phone's companion app (a :class:`simulator.companion.CompanionApp`)."""
        p = self.phone(ref)
        if p.companion is None:
            raise WorldError(f"{p.name} ({p.address}) runs no companion app (phone key companion: true)")
        return p.companion

    def companion_send_destination(self, ref: str, label: str, *, lat: float | None = None,
                                   lon: float | None = None, address: str | None = None,
                                   id: str | None = None) -> str:
        """The driver picks a destination in the app ("send to car"); returns its id."""
        try:
            d = self.companion_app(ref).add_destination(label, lat=lat, lon=lon, address=address, id=id)
        except ValueError as exc:
            raise WorldError(str(exc)) from None
        return str(d.id)

    def companion_lease(self, ref: str, *, version: int | None = None, forged: bool = False,
                        vehicle: str | None = None, expired: bool = False, empty: bool = False) -> str:
        """The app fetched a lease for this car from the backend and now serves it (§6).  By default
        the backend issues a new entitlement document (the very one it serves the car too); with
        ``version`` (a roll-back), ``vehicle`` (another car), ``expired`` or ``forged`` (signed by
        a key the car does not trust) a document only the phone has.  ``empty``: no lease.
        Returns the JWS text."""
        app = self.companion_app(ref)
        if empty:
            app.set_lease(b"")
            return ""
        cloud = self.fake("backend")
        vid = self.vehicle_id
        v = cloud.vehicles[vid]
        if version is None and not (forged or vehicle or expired):
            cloud.issue_entitlements(vid)
            jws = str(v.ent_jws)
        else:
            now = self.now()
            issued = now - 7200 if expired else now
            not_after = now - 3600 if expired else now + float(cloud.lease)
            jws = str(cloud._sign(v, v.ent_version + 1 if version is None else version, not_after,
                                  vehicle or vid, cloud.active_kid, key=cloud.rogue_key if forged else None,
                                  issued_at=issued))
        app.set_lease(jws)
        return jws

    def companion_running(self, ref: str, running: bool) -> None:
        """The app is started/stopped on the phone: its service comes/goes (Device1.UUIDs too)."""
        app = self.companion_app(ref)
        app.running = running
        bluez = self.fakes.get("bluez")
        if bluez is not None:
            bluez.gatt_app_changed(self.phone(ref).address)

    def companion_status(self, ref: str) -> dict[str, Any]:
        status: dict[str, Any] = self.companion_app(ref).status()
        return status

    async def le_connect(self, ref: str) -> bool:
        """The phone makes an LE connection to the car (bonded or not): the car's bluetoothd
        resolves its GATT services (the companion service among them)."""
        ok: bool = await self.fake("bluez").le_connect(self.phone(ref).address)
        return ok

    # -- messages (the fake obexd's MAP side: simulator/obex_map.py) -----------------------------

    def deliver_message(self, ref: str, type: str, sender: str, body: str, *, subject: str = "",
                        sender_name: str = "", html: bool = False) -> Any:
        """A new SMS (``SMS_GSM``), ``MMS`` or ``EMAIL`` reaches the phone; it notifies the car
        if it delivers MAP notifications.  Returns the phone's message record."""
        mod = _optional_module(f"{__package__}.obex_map")
        if mod is None:
            raise WorldError("no MAP in this world: simulator/obex_map.py has not landed")
        p = self.phone(ref)
        return mod.deliver(self.fake("obexd"), p.address, type=type, sender=sender, sender_name=sender_name,
                           subject=subject, body=body, html=html)

    def phone_outbox(self, ref: str) -> list[Any]:
        """Messages the car sent through the phone (its outbox)."""
        mod = _optional_module(f"{__package__}.obex_map")
        if mod is None:
            raise WorldError("no MAP in this world: simulator/obex_map.py has not landed")
        return list(mod.outbox(self.fake("obexd"), self.phone(ref).address))

    # -- services restarting --------------------------------------------------------------------

    RESTARTABLE = ("bluetoothd", "obexd", "ofono", "daemon")

    async def restart_bluez(self, gap: float | None = None) -> None:
        """bluetoothd restarts.  bluetoothd forgets the devices it had not paired, but the phones
        are still in the world (in the cabin, radios on): they are put back as unknown devices."""
        bluez = self.fake("bluez")
        await bluez.restart(gap=gap)
        self._readd_phones()

    async def crash_bluez(self) -> None:
        await self.fake("bluez").crash()

    async def revive_bluez(self) -> None:
        await self.fake("bluez").revive()
        self._readd_phones()

    def _readd_phones(self) -> None:
        bluez = self.fake("bluez")
        for addr, p in self.phones.items():
            try:
                bluez.phone(addr)
            except (KeyError, ValueError):
                bluez.add_phone(p)

    async def restart(self, what: str) -> None:
        """Restart ``bluetoothd``, ``obexd``, ``ofono`` (simulated: the name drops, objects go,
        then come back) or the ``daemon`` (SIGTERM, then started again on the same state)."""
        if what == "daemon":
            await self.restart_daemon()
            return
        if what in ("bluetoothd", "bluez"):
            await self.restart_bluez()
            return
        fake = self.fake(_FAKE_OF.get(what, what))
        await _maybe_await(fake.restart())

    # -- what a developer needs ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        assert self.system is not None and self.session is not None
        out = {"DBUS_SYSTEM_BUS_ADDRESS": self.system.address,
               "DBUS_SESSION_BUS_ADDRESS": self.session.address}
        for fake in self.fakes.values():
            extra = getattr(fake, "env", None)
            if callable(extra):
                out.update(extra())
        return out

    def write_config(self, path: Path) -> Path:
        """The config a daemon started by hand needs to run in this world: what the world's own
        daemon gets, plus its state and transfer directories (the world's daemon has them from its
        environment), so a hand-started daemon never touches /var/lib/dashbridge."""
        from .daemonproc import write_config

        state = self._state_dir()
        return write_config(path, _merge(self.config, {"state_directory": str(state),
                                                       "buses": {"transfer_dir": str(state / "obex")}}))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class _Backend:
    """The fake backend as the world holds it: ``stop()`` closes it, ``daemon_config()`` points the
    daemon at it; everything else is the :class:`simulator.cloud.FakeCloud` (``.cloud``)."""

    def __init__(self, cloud: Any, *, enabled: bool) -> None:
        self.cloud = cloud
        self.enabled = enabled

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cloud, name)

    async def stop(self) -> None:
        await self.cloud.close()

    def daemon_config(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        # Short start-up delay: a world's first sync should not wait the production 30 s.
        return {"cloud": self.cloud.daemon_config(startup_delay="0s")}

    def env(self) -> dict[str, str]:
        return {"DASHBRIDGE_SIM_BACKEND_URL": str(self.cloud.url)}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


__all__ = ["FAKE_NAMES", "ApiModel", "Dashboard", "Event", "Member", "ValueTypeError", "World", "WorldError",
           "WorldSpec", "guess_signature", "plain", "to_dbus"]
