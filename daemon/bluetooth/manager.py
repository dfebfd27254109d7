"""Pairing and connection management through bluetoothd (reference §1, §8).

One :class:`BluetoothManager` per daemon.  It

* watches the owner of ``org.bluez`` and, whenever bluetoothd (re)appears, registers the pairing
  agent as the default agent, rebuilds its mirror of BlueZ's objects from a fresh snapshot, brings
  the adapter up from config, adopts phones that are already connected and auto-connects the rest
  (reference §8 item 1: agents and profiles die with bluetoothd; nothing is sent on a crash);
* turns agent requests into dashboard prompts with deadlines (``prompts.py``) and only lets
  unknown phones pair while the pairing window is open;
* keeps the registry of paired phones (``registry.py``), and the in-process
  :class:`~daemon.phones.PhoneDirectory` of connected phones with their roles (primary: all
  profiles; secondary: calls only), which the profile components listen to;
* auto-connects one phone at a time from a snapshot of the priority list with a per-phone budget,
  retries the first connection after pairing, yields to the pairing window, and turns a phone that
  lost its key (``br-connection-key-missing``) into a "forget and re-pair" event, not a retry loop.

Everything here runs on the event loop; every call to bluetoothd has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, Variant

from ..context import AppContext
from ..dbus import names
from ..dbus.call import call, set_property
from ..dbus.errors import AlreadyExists, BusError, CallTimeout, ServiceGone
from ..dbus.mirror import ObjectManagerMirror
from ..dbus.signals import Subscription
from ..dbus.watch import NameWatcher
from ..errors import Busy, DeadlineExceeded, InvalidInput, NotFound, NotReadyError, OperationFailed
from ..events import (
    BluetoothEvent,
    BluetoothListener,
    BluetoothStateChanged,
    DeviceFound,
    PairingFinished,
    PairingWindowChanged,
    PhoneChanged,
    PhoneConnected,
    PhoneDisconnected,
    PhoneForgotten,
    RepairNeeded,
)
from ..logs import redact, redact_address
from ..phones import PhoneDirectory, PhoneLink
from .agent import AGENT_PATH, AgentGate, AgentRejected, PairingAgent
from .model import (
    CAR_SERVICES,
    DISCONNECT_REASONS,
    ConnectFailure,
    assign_roles,
    classify_connect_error,
    classify_pair_error,
    clean_name,
    format_passkey,
    looks_like_phone,
    normalize_address,
    parse_pin,
    profiles_of,
    valid_uuid,
    valid_uuids,
)
from .prompts import Outcome, PromptBroker
from .registry import PhoneRecord, Registry

log = logging.getLogger(__name__)

# Retry ladders (named so they can be reasoned about; habluetooth style).
# Between two first-connect attempts after pairing, wait this long for the phone to connect by
# itself before paging it again (a phone usually connects HFP right after pairing).
FIRST_CONNECT_PAUSE_S = 1.0
# Setting bluetoothd up after it appeared failed (it answered errors or nothing): try again after
# these pauses, then every last one, until it works or bluetoothd goes away.
SETUP_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
# Longest pairing window a caller may ask for.
MAX_WINDOW_S = 3600
# A phone the car is already bonded with pairs again (the user removed the car on the phone only):
# bluetoothd replaces the link key and sends no Paired/Bonded change (all versions, src/device.c
# only emits on a change), so after the driver accepted, the pairing counts as done once the link is
# still up this long (a phone that refuses the new key drops the link at once: failed).
REPAIR_SETTLE_S = 1.0
# How long what we know about a phone's last failure or our own Disconnect() explains its next
# disconnection (BlueZ < 5.83 has no Device1.Disconnected signal with the reason).
DISCONNECT_HINT_S = 10.0
# Connect failure -> the reason a disconnection following it gets (BlueZ < 5.83).
_HINT_OF_FAILURE = {"out_of_range": "link_loss", "key_missing": "authentication", "refused": "remote",
                    "aborted": "remote", "canceled": "local", "adapter_off": "adapter_off"}


def _bonded(props: dict[str, Any] | None) -> bool:
    """The car holds a bond with this phone.  BlueZ 5.66 sets ``Bonded`` when the keys are stored but
    ``Paired`` (with ``ServicesResolved``) only after service discovery — never when SDP fails; newer
    versions set both together.  Either one is a finished pairing."""
    return bool(props and (props.get("Paired") or props.get("Bonded")))

@dataclass
class _Attempt:
    address: str
    initiator: str  # remote: the phone started; local: the car (Device1.Pair)
    accepted: bool = False
    done: bool = False
    watchdog: asyncio.TimerHandle | None = None
    rebond: bool = False  # the phone was bonded already when the agent was asked (a re-pairing)
    settle: asyncio.TimerHandle | None = None


class BluetoothManager:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.bluetooth
        self.bus = ctx.system_bus
        self.directory: PhoneDirectory = ctx.services.phones
        self.registry = Registry(ctx.store)
        self.prompts = PromptBroker()
        self.adapter_path = f"{names.BLUEZ_ROOT}/{self.cfg.adapter}"
        self.agent = PairingAgent(self)
        self._listeners: list[BluetoothListener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._new_session_objects()
        self._pulse = asyncio.Event()
        self._disc_sub: Subscription | None = None
        self._started = False

    def _new_session_objects(self) -> None:
        ctx = self.ctx
        self.mirror = ObjectManagerMirror(ctx.system, names.BLUEZ_NAME, "/", timeout=self.cfg.bluez_call_timeout)
        self.watcher = NameWatcher(ctx.system, names.BLUEZ_NAME, self._owner_changed)
        self.gate = AgentGate(self.bus, lambda: self.watcher.owner)
        # The caller gate lets bluetoothd's calls to the agent through at once (no uid lookup
        # first): a Release sent just before bluetoothd leaves the bus must still find it the owner.
        ctx.system_peers.append(lambda sender: sender == self.watcher.owner)
        self._session: asyncio.Task[None] | None = None
        self._loading = False
        self._loaded = False
        self._agent_registered = False
        self._adapter_up = False
        self._window_deadline: float | None = None
        self._window_timer: asyncio.TimerHandle | None = None
        self._discovering = False
        self._found: set[str] = set()  # devices announced as found during this window
        self._attempts: dict[str, _Attempt] = {}
        self._autoconnect: asyncio.Task[None] | None = None
        self._autoconnect_again = False
        self._connecting: set[str] = set()
        self._explicit: set[str] = set()
        # address -> why the phone is in its state when that is not obvious (Phones1 key Reason)
        self._notes: dict[str, str] = {}
        self._evicting: set[str] = set()
        self._disc_reason: dict[str, str] = {}  # from Device1.Disconnected (BlueZ >= 5.83)
        self._disc_hint: dict[str, tuple[float, str]] = {}  # inferred reason, when (BlueZ < 5.83)
        self._states: dict[str, str] = {}
        self._edges: dict[str, int] = {}  # connections seen per phone (to notice "it connected by itself")
        self._class_warned = False
        self._last_state = ""

    # ================================================================================================
    # events for the API layer
    # ================================================================================================
    def add_listener(self, listener: BluetoothListener) -> None:
        """``listener(event)`` for every :data:`daemon.events.BluetoothEvent`."""
        self._listeners.append(listener)

    def _emit(self, event: BluetoothEvent) -> None:
        for cb in list(self._listeners):
            try:
                cb(event)
            except Exception:
                log.exception("bluetooth listener failed on %s", type(event).__name__)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("bluetooth task %s failed", task.get_name(), exc_info=task.exception())

    def _bump(self) -> None:
        self._pulse.set()
        self._pulse = asyncio.Event()

    async def _wait_for(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait (event-driven) until ``pred()``; False at the deadline."""
        try:
            async with asyncio.timeout(timeout):
                while not pred():
                    await self._pulse.wait()
        except TimeoutError:
            return pred()
        return True

    # ================================================================================================
    # life cycle
    # ================================================================================================
    async def run(self) -> None:
        if self._started:
            # A supervised restart: fresh subscriptions and session state; the registry, the prompt
            # numbering and the API's listeners stay.
            self._new_session_objects()
        self._started = True
        self.ctx.health.set("bluetooth", "degraded", "waiting for bluetoothd")
        with contextlib.suppress(ValueError):
            self.bus.unexport(AGENT_PATH)
        self.bus.export(AGENT_PATH, self.agent)
        self.gate.install()
        self.mirror.add_listener(self._on_mirror)
        try:
            await self.mirror.subscribe()
            self._disc_sub = await self.ctx.system.subscribe(
                self._on_disconnected_signal, sender=names.BLUEZ_NAME, interface=names.BLUEZ_DEVICE_IFACE,
                member="Disconnected", path_namespace=names.BLUEZ_ROOT, sender_filter=lambda: self.watcher.owner,
                timeout=self.cfg.bluez_call_timeout,
            )
            await self.watcher.start()
            await asyncio.Event().wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._window_timer:
            self._window_timer.cancel()
        self.prompts.end_for(None, "bluetooth_gone")
        with contextlib.suppress(Exception):
            await self.watcher.stop()
        with contextlib.suppress(Exception):
            await self.mirror.close()
        if self._disc_sub is not None:
            with contextlib.suppress(Exception):
                await self._disc_sub.close()
        self.gate.remove()
        with contextlib.suppress(Exception):
            self.bus.unexport(AGENT_PATH)
        for addr in list(self.directory.connected):
            self.directory.set_disconnected(addr)

    async def _owner_changed(self, owner: str | None) -> None:
        if self._session is not None:
            self._session.cancel()
            self._session = None
        if owner is None:
            self._bluez_gone()
            return
        self._session = self._spawn(self._setup(owner), name="bluez-setup")

    def _bluez_gone(self) -> None:
        log.warning("bluetoothd left the bus; waiting for it to come back")
        self._loaded = False
        self._agent_registered = False
        self._adapter_up = False
        self._discovering = False
        if self._autoconnect:
            self._autoconnect.cancel()
            self._autoconnect = None
        self.prompts.end_for(None, "bluetooth_gone")
        for addr in list(self._attempts):
            self._finish_attempt(addr, False, "bluetooth_restarted")
        self._connecting.clear()
        self.mirror.reset()
        self._publish()
        self._update_health()

    async def _setup(self, owner: str) -> None:
        """bluetoothd (re)appeared: agent, snapshot, adapter, adoption, auto-connect — quickly."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for attempt in itertools.count():
            try:
                await self._register_agent()
                self._loading = True
                try:
                    await self.mirror.load(owner)
                finally:
                    self._loading = False
                break
            except BusError as exc:
                pause = SETUP_RETRY_S[min(attempt, len(SETUP_RETRY_S) - 1)]
                log.warning("setting up with bluetoothd failed (%s); again in %.1fs", exc, pause)
                self._update_health(f"bluetoothd not answering: {exc.name.rsplit('.', 1)[-1]}")
                await asyncio.sleep(pause)
        self._loaded = True
        self._refresh_registry()
        await self._process_removals()
        if self.mirror.get(self.adapter_path, names.BLUEZ_ADAPTER_IFACE) is not None:
            await self._adapter_ready("bluetoothd appeared")
        else:
            log.warning("adapter %s not present yet; waiting for it", self.cfg.adapter)
            self._publish()
            self._update_health()
        log.info("bluetoothd %s set up in %.3fs", owner, loop.time() - t0)

    async def _register_agent(self) -> None:
        t = self.cfg.bluez_call_timeout
        try:
            await call(self.bus, names.BLUEZ_NAME, names.BLUEZ_ROOT, names.BLUEZ_AGENT_MANAGER_IFACE, "RegisterAgent",
                       "os", [AGENT_PATH, self.cfg.agent_capability], timeout=t)
        except AlreadyExists:
            pass  # this connection registered it before (e.g. our component was restarted)
        await call(self.bus, names.BLUEZ_NAME, names.BLUEZ_ROOT, names.BLUEZ_AGENT_MANAGER_IFACE,
                   "RequestDefaultAgent", "o", [AGENT_PATH], timeout=t)
        self._agent_registered = True
        log.info("pairing agent registered as default (%s)", self.cfg.agent_capability)

    def _adapter_props(self) -> dict[str, Any] | None:
        return self.mirror.get(self.adapter_path, names.BLUEZ_ADAPTER_IFACE)

    def _powered(self) -> bool:
        props = self._adapter_props()
        return bool(props and props.get("Powered"))

    def _ready(self) -> bool:
        return self.watcher.owner is not None and self._loaded and self._powered()

    def _require_ready(self) -> None:
        if self.watcher.owner is None or not self._loaded:
            raise NotReadyError("bluetoothd is not running")
        if self._adapter_props() is None:
            raise NotReadyError(f"Bluetooth adapter {self.cfg.adapter} is not present")
        if not self._powered():
            raise NotReadyError("the Bluetooth adapter is switched off")

    async def _adapter_ready(self, why: str) -> None:
        await self._bring_up()
        self._adapter_up = True
        self._publish()
        self._update_health()
        if self._powered():
            self._trigger_autoconnect(why)

    async def _bring_up(self) -> None:
        """Apply the config to the adapter; re-run whenever the adapter or bluetoothd (re)appears."""
        props = self._adapter_props()
        if props is None:
            return
        t = self.cfg.bluez_call_timeout
        path, iface = self.adapter_path, names.BLUEZ_ADAPTER_IFACE
        try:
            if props.get("Alias") != self.cfg.alias:
                await set_property(self.bus, names.BLUEZ_NAME, path, iface, "Alias", Variant("s", self.cfg.alias),
                                   timeout=t)
            if not props.get("Powered"):
                await set_property(self.bus, names.BLUEZ_NAME, path, iface, "Powered", Variant("b", True), timeout=t)
            if not props.get("Pairable"):
                await set_property(self.bus, names.BLUEZ_NAME, path, iface, "Pairable", Variant("b", True), timeout=t)
        except BusError as exc:
            log.warning("adapter %s set-up failed: %s", self.cfg.adapter, exc)
        cls = props.get("Class")
        # Adapter1.Class is read-only: it comes from Class= in /etc/bluetooth/main.conf (major and minor
        # class; bluetoothd adds the service bits itself).
        if isinstance(cls, int) and (cls & 0x1FFC) != (self.cfg.device_class & 0x1FFC) and not self._class_warned:
            self._class_warned = True
            log.warning("adapter class is 0x%06x, config asks for 0x%06x: set Class= in /etc/bluetooth/main.conf",
                        cls, self.cfg.device_class)
        if self.window_open:
            await self._apply_window()

    def _refresh_registry(self) -> None:
        """After a snapshot: adopt phones paired outside dashbridge, refresh names, trust ours."""
        removals = set(self.registry.removals())
        for path, props in self._devices().items():
            addr = names.address_from_device_path(path)
            if addr is None or addr in removals:
                continue
            rec = self.registry.get(addr)
            if rec is None:
                self._adopt(addr, props)
                continue
            if _bonded(props) and not props.get("Trusted"):
                self._spawn(self._trust(addr), name="trust")
            self._sync_record(addr, props)

    def _adopt(self, addr: str, props: dict[str, Any]) -> bool:
        """A phone bluetoothd has paired that we did not pair (bluetoothctl, a lost state database,
        a pairing that finished while we were away): take it into the registry, last in priority."""
        if not _bonded(props) or not looks_like_phone(props) or addr in self.registry:
            return False
        if addr in self.registry.removals():
            return False  # forgotten: its bond is about to be removed
        name = clean_name(props.get("Alias") or props.get("Name"), addr)
        self.registry.add(addr, name, profiles_of(valid_uuids(props.get("UUIDs"))))
        log.info("adopted phone %s, paired outside dashbridge", redact_address(addr))
        if not props.get("Trusted"):
            self._spawn(self._trust(addr), name="trust")
        return True

    def _devices(self) -> dict[str, dict[str, Any]]:
        prefix = self.adapter_path + "/"
        return {p: v for p, v in self.mirror.with_interface(names.BLUEZ_DEVICE_IFACE).items()
                if p.startswith(prefix) and p.count("/") == prefix.count("/")}

    def _device(self, address: str) -> dict[str, Any] | None:
        return self.mirror.get(names.device_path(self.adapter_path, address), names.BLUEZ_DEVICE_IFACE)

    def _sync_record(self, address: str, props: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        if "Alias" in props or "Name" in props:
            name = clean_name(props.get("Alias") or props.get("Name"), address)
            if self.registry.update_name(address, name):
                changes["Name"] = name
        if "UUIDs" in props:
            profs = profiles_of(valid_uuids(props.get("UUIDs")))
            if profs and self.registry.update_profiles(address, profs):
                changes["Profiles"] = profs
        if changes:
            self._emit(PhoneChanged(address, changes))

    async def _process_removals(self) -> None:
        for addr in self.registry.removals():
            if self._device(addr) is None:
                self.registry.removal_done(addr)
                continue
            try:
                await call(self.bus, names.BLUEZ_NAME, self.adapter_path, names.BLUEZ_ADAPTER_IFACE, "RemoveDevice",
                           "o", [names.device_path(self.adapter_path, addr)], timeout=self.cfg.bluez_call_timeout)
                self.registry.removal_done(addr)
                log.info("removed the bond of forgotten phone %s", redact_address(addr))
            except BusError as exc:
                log.warning("could not remove forgotten phone %s from bluetoothd yet: %s", redact_address(addr), exc)

    def _update_health(self, reason: str | None = None) -> None:
        h = self.ctx.health
        if reason is not None:
            h.set("bluetooth", "degraded", reason)
        elif self.watcher.owner is None:
            h.set("bluetooth", "degraded", "bluetoothd not running")
        elif not self._loaded:
            h.set("bluetooth", "degraded", "connecting to bluetoothd")
        elif self._adapter_props() is None:
            h.set("bluetooth", "degraded", f"adapter {self.cfg.adapter} not present")
        elif not self._powered():
            h.set("bluetooth", "degraded", "adapter switched off")
        elif not self._agent_registered:
            h.set("bluetooth", "degraded", "pairing agent not registered")
        else:
            h.set("bluetooth", "ok")
        state = self.state
        if state != self._last_state:
            self._last_state = state
            self._emit(BluetoothStateChanged(state))

    @property
    def state(self) -> str:
        """ready | off | no_adapter | unavailable (bluetoothd not running)."""
        if self.watcher.owner is None or not self._loaded:
            return "unavailable"
        if self._adapter_props() is None:
            return "no_adapter"
        return "ready" if self._powered() else "off"

    # ================================================================================================
    # the mirror of BlueZ's objects
    # ================================================================================================
    def _on_mirror(self, kind: str, path: str, iface: str, props: dict[str, Any]) -> None:
        if kind == "reset":
            self._publish()
            return
        if iface == names.BLUEZ_ADAPTER_IFACE and path == self.adapter_path:
            self._on_adapter(kind, props)
            return
        if iface != names.BLUEZ_DEVICE_IFACE or not path.startswith(self.adapter_path + "/"):
            return
        addr = names.address_from_device_path(path)
        if addr is None:
            return
        if kind == "added":
            if not self._loading:
                self._adopt(addr, props)
                self._maybe_found(addr, props)
                if props.get("Connected"):
                    self._publish()
                elif addr in self.registry and self._adapter_up:
                    # bluetoothd announces stored devices after the adapter, maybe in a later batch.
                    self._publish()
                    self._trigger_autoconnect("phone announced")
        elif kind == "changed":
            # Paired (all versions) or Bonded (5.66: at once; Paired only after SDP, maybe never).
            if props.get("Paired") is True or props.get("Bonded") is True:
                att = self._attempts.get(addr)
                if att is not None and not att.done:
                    if att.initiator == "remote":  # a local Pair() ends with its reply (_local_pair)
                        self._on_paired(addr)
                elif self._adopt(addr, self._device(addr) or props):
                    self._publish()
            if "Connected" in props:
                if not props["Connected"]:
                    self._on_link_down(addr)
                self._publish()
            if addr in self.registry and ({"Alias", "Name", "UUIDs"} & set(props)):
                self._sync_record(addr, props)
                if addr in self.directory.connected:
                    self._publish()
            if "RSSI" in props:
                self._maybe_found(addr, props)
        elif kind == "removed":
            att = self._attempts.get(addr)
            if att is not None and not att.done:
                self._finish_attempt(addr, False, "failed")
            self._publish()
        self._bump()

    def _on_adapter(self, kind: str, props: dict[str, Any]) -> None:
        if kind == "added" and not self._loading and self._loaded:
            self._spawn(self._adapter_ready("adapter appeared"), name="adapter-ready")
        elif kind == "removed":
            self._adapter_up = False
            self._discovering = False
            self._publish()
            self._update_health()
        elif kind == "changed" and "Powered" in props:
            if props["Powered"]:
                log.info("adapter powered on")
                self._publish()
                self._update_health()
                if self.window_open:
                    self._spawn(self._apply_window(), name="window")
                self._trigger_autoconnect("adapter powered on")
            else:
                log.info("adapter powered off")
                self._discovering = False
                if self._autoconnect:
                    self._autoconnect.cancel()
                    self._autoconnect = None
                self._publish()
                self._update_health()
        self._bump()

    def _on_disconnected_signal(self, msg: Message) -> None:
        addr = names.address_from_device_path(msg.path or "")
        if addr is None or not msg.body or not isinstance(msg.body[0], str):
            return
        self._disc_reason[addr] = DISCONNECT_REASONS.get(msg.body[0], "unknown")

    def _maybe_found(self, addr: str, props: dict[str, Any]) -> None:
        if not self.window_open or addr in self._found or addr in self.registry:
            return
        full = self._device(addr) or props
        if _bonded(full) or full.get("RSSI") is None:
            return
        self._found.add(addr)
        rssi = full.get("RSSI")
        self._emit(DeviceFound(addr, clean_name(full.get("Alias") or full.get("Name"), addr),
                               int(rssi) if isinstance(rssi, int) else 0))

    def _on_link_down(self, addr: str) -> None:
        att = self._attempts.get(addr)
        if att is not None and not att.done and att.initiator == "remote" and att.accepted:
            props = self._device(addr) or {}
            if att.rebond or not _bonded(props):
                # A re-pairing shows nothing but the link: dropped before it settled = refused.
                self._finish_attempt(addr, False, "failed")

    # ================================================================================================
    # the directory of connected phones, roles and states
    # ================================================================================================
    def _publish(self) -> None:
        """Make the PhoneDirectory (and the API's signals) match what BlueZ says is connected."""
        records = self.registry.all()
        by_addr = {r.address: r for r in records}
        bluez_up = self.watcher.owner is not None and self._loaded
        connected = []
        for rec in records:
            props = self._device(rec.address) if bluez_up else None
            if props and props.get("Connected"):
                connected.append(rec.address)
        order = connected
        if len(order) > self.cfg.max_connected:
            prefer = [a for a in order if a in self._explicit] + [a for a in order if a not in self._explicit]
            keep = set(prefer[: self.cfg.max_connected])
            order = [a for a in connected if a in keep]
        roles, _ = assign_roles(order, self.cfg.max_connected)
        for addr in connected:
            if addr not in roles and addr not in self._evicting:
                self._evicting.add(addr)
                log.info("%d phones connected, at most %d allowed: disconnecting %s", len(connected),
                         self.cfg.max_connected, redact_address(addr))
                self._spawn(self._evict(addr), name="evict")
        current = self.directory.connected
        for addr in current:
            if addr not in roles:
                self._explicit.discard(addr)
                self.directory.set_disconnected(addr)
                self._emit(PhoneDisconnected(addr, self._disconnect_reason(addr)))
        for addr, role in roles.items():
            rec = by_addr[addr]
            props = self._device(addr) or {}
            link = PhoneLink(addr, rec.name, names.device_path(self.adapter_path, addr),
                             role,  # type: ignore[arg-type]
                             valid_uuids(props.get("UUIDs")))
            old = current.get(addr)
            if old == link:
                continue
            self.directory.set_connected(link)
            if old is None:
                self._disc_reason.pop(addr, None)
                if self._notes.pop(addr, None):
                    self._emit(PhoneChanged(addr, {"Reason": ""}))
                self.registry.connected(addr)
                self._edges[addr] = self._edges.get(addr, 0) + 1
                log.info("phone %s connected (%s)", redact_address(addr), role)
                self._emit(PhoneConnected(addr, rec.name, role))
            else:
                changes: dict[str, Any] = {}
                if old.role != role:
                    changes["Role"] = role
                if old.name != link.name:
                    changes["Name"] = link.name
                if changes:
                    self._emit(PhoneChanged(addr, changes))
        for rec in records:
            st = self._state_of(rec, roles)
            if self._states.get(rec.address) != st:
                self._states[rec.address] = st
                self._emit(PhoneChanged(rec.address, {"State": st}))
        for addr in list(self._states):
            if addr not in by_addr:
                del self._states[addr]
        self._bump()

    def _disconnect_reason(self, addr: str) -> str:
        hint = self._disc_hint.pop(addr, None)
        if self.watcher.owner is None or not self._loaded:
            return "bluetooth_gone"
        if not self._powered():
            return "adapter_off"
        if addr in self._evicting:
            return "too_many_phones"
        signalled = self._disc_reason.pop(addr, None)
        if signalled is not None:
            return signalled  # BlueZ >= 5.83: Device1.Disconnected said why
        # BlueZ < 5.83 sends only Connected=false (with ServicesResolved): infer the reason from what we
        # did or saw just before — our own Disconnect(), a failed Connect(), a refused pairing.
        if hint is not None and asyncio.get_running_loop().time() - hint[0] <= DISCONNECT_HINT_S:
            return hint[1]
        return "disconnected"

    def _hint(self, addr: str, reason: str) -> None:
        self._disc_hint[addr] = (asyncio.get_running_loop().time(), reason)

    def _state_of(self, rec: PhoneRecord, roles: dict[str, str]) -> str:
        if rec.address in roles:
            return "connected"
        if rec.needs_repair:
            return "needs_repair"
        if rec.address in self._connecting:
            return "connecting"
        if not self._ready() or self._device(rec.address) is None:
            return "unavailable"
        return "disconnected"

    def role_of(self, address: str) -> str:
        link = self.directory.get(address)
        return link.role if link else ""

    async def _evict(self, addr: str) -> None:
        try:
            await self._disconnect_device(addr)
        finally:
            self._evicting.discard(addr)

    async def _disconnect_device(self, addr: str) -> None:
        self._hint(addr, "local")
        try:
            await call(self.bus, names.BLUEZ_NAME, names.device_path(self.adapter_path, addr), names.BLUEZ_DEVICE_IFACE,
                       "Disconnect", timeout=self.cfg.bluez_call_timeout)
        except BusError as exc:
            log.warning("disconnecting %s failed: %s", redact_address(addr), exc)

    # ================================================================================================
    # connecting
    # ================================================================================================
    def _trigger_autoconnect(self, why: str) -> None:
        if not self._ready():
            return
        if self.window_open:
            log.info("auto-connect (%s) waits for the pairing window to close", why)
            return
        if self._autoconnect is not None and not self._autoconnect.done():
            self._autoconnect_again = True
            return
        self._autoconnect = self._spawn(self._autoconnect_run(why), name="autoconnect")

    async def _autoconnect_run(self, why: str) -> None:
        """Android Automotive style: a snapshot of the priority list, one phone at a time, each
        with ``connect_budget``; stop at ``max_connected``."""
        while True:
            self._autoconnect_again = False
            snapshot = [r for r in self.registry.all() if not r.needs_repair]
            log.info("auto-connect (%s): %d phone(s) in priority order", why, len(snapshot))
            for rec in snapshot:
                if self.window_open or not self._ready():
                    return
                if len(self.directory.connected) >= self.cfg.max_connected:
                    break
                if rec.address not in self.registry or rec.address in self.directory.connected:
                    continue
                if rec.address in self._connecting or self._device(rec.address) is None:
                    continue
                failure = await self._connect_once(rec.address, self.cfg.connect_budget)
                if failure is not None:
                    log.info("auto-connect: %s not connected (%s)", redact_address(rec.address), failure.reason)
                    if failure.reason == "adapter_off":
                        return
            if not self._autoconnect_again:
                return
            why = "again"

    async def _connect_once(self, addr: str, budget: float) -> ConnectFailure | None:
        """One ``Device1.Connect`` under ``budget``; None on success."""
        path = names.device_path(self.adapter_path, addr)
        self._connecting.add(addr)
        self._publish()
        pending = True  # bluetoothd may still be paging when we stop waiting
        try:
            await call(self.bus, names.BLUEZ_NAME, path, names.BLUEZ_DEVICE_IFACE, "Connect", timeout=budget)
            pending = False
            # Connect replies after the profiles connected; the Connected change may still be in flight.
            await self._wait_for(lambda: addr in self.directory.connected or addr not in self.registry,
                                 self.cfg.bluez_call_timeout)
            return None
        except CallTimeout:
            return ConnectFailure("timeout", True)
        except ServiceGone:
            pending = False
            return ConnectFailure("failed", False)
        except BusError as exc:
            pending = False
            failure = classify_connect_error(exc.name, exc.text)
            if failure.reason == "already_connected":
                return None
            log.info("Connect %s: %s %s -> %s", redact_address(addr), exc.name, exc.text[:80], failure.reason)
            if failure.reason in _HINT_OF_FAILURE:
                self._hint(addr, _HINT_OF_FAILURE[failure.reason])
            if failure.reason == "key_missing":
                self._needs_repair(addr)
            return failure
        finally:
            self._connecting.discard(addr)
            if pending and self.watcher.owner is not None and not self._connected_in_bluez(addr):
                # Out of budget (or cancelled): abort the page still running in bluetoothd
                # (Device1.Disconnect cancels a pending Connect).
                self._spawn(self._disconnect_device(addr), name="abort-connect")
            self._publish()

    def _connected_in_bluez(self, addr: str) -> bool:
        props = self._device(addr)
        return bool(props and props.get("Connected"))

    def _needs_repair(self, addr: str) -> None:
        if self.registry.set_needs_repair(addr, True):
            rec = self.registry.get(addr)
            log.warning("phone %s no longer has the car's key; asking the dashboard to offer forget and re-pair",
                        redact_address(addr))
            self._emit(RepairNeeded(addr, rec.name if rec else ""))
            self._publish()

    async def _first_connect(self, addr: str) -> None:
        """The first connection after pairing: up to ``first_connect_attempts`` x ``connect_budget``."""
        for i in range(self.cfg.first_connect_attempts):
            if addr not in self.registry or not self._ready():
                return
            failure = await self._connect_once(addr, self.cfg.connect_budget)
            if failure is None:
                return
            log.info("first connection to %s, attempt %d: %s", redact_address(addr), i + 1, failure.reason)
            if not failure.retry:
                return
            # Give the phone a moment to connect by itself; then Connect() again (it succeeds at once
            # when everything is connected already).
            seen = self._edges.get(addr, 0)
            await self._wait_for(lambda seen=seen: self._edges.get(addr, 0) != seen,  # type: ignore[misc]
                                 FIRST_CONNECT_PAUSE_S)

    # ================================================================================================
    # pairing
    # ================================================================================================
    @property
    def window_open(self) -> bool:
        return self._window_deadline is not None

    def window_remaining(self) -> int:
        if self._window_deadline is None:
            return 0
        return max(0, math.ceil(self._window_deadline - asyncio.get_running_loop().time()))

    async def open_window(self, seconds: int) -> int:
        secs = seconds or int(self.cfg.pairing_window)
        if not 1 <= secs <= MAX_WINDOW_S:
            raise InvalidInput(f"a pairing window lasts 1 to {MAX_WINDOW_S} seconds")
        self._require_ready()
        loop = asyncio.get_running_loop()
        was_open = self.window_open
        self._window_deadline = loop.time() + secs
        if self._window_timer:
            self._window_timer.cancel()
        self._window_timer = loop.call_later(secs, lambda: self._spawn(self.close_window("timeout"), name="window"))
        if not was_open:
            self._found.clear()
        if self._autoconnect is not None and not self._autoconnect.done():
            log.info("pairing window opened: auto-connect yields")
            self._autoconnect.cancel()
            self._autoconnect = None
        try:
            await self._apply_window()
        except BusError:
            await self.close_window("failed")
            raise
        log.info("pairing window open for %ds", secs)
        if not was_open:
            self._emit(PairingWindowChanged(True))
        return secs

    async def _apply_window(self) -> None:
        t = self.cfg.bluez_call_timeout
        path, iface = self.adapter_path, names.BLUEZ_ADAPTER_IFACE
        remaining = max(1, self.window_remaining())
        props = self._adapter_props() or {}
        if not props.get("Pairable"):
            await set_property(self.bus, names.BLUEZ_NAME, path, iface, "Pairable", Variant("b", True), timeout=t)
        await set_property(self.bus, names.BLUEZ_NAME, path, iface, "DiscoverableTimeout", Variant("u", remaining),
                           timeout=t)
        await set_property(self.bus, names.BLUEZ_NAME, path, iface, "Discoverable", Variant("b", True), timeout=t)
        if not self._discovering:
            try:
                await call(self.bus, names.BLUEZ_NAME, path, iface, "StartDiscovery", timeout=t)
            except BusError as exc:
                if not exc.name.endswith("InProgress"):
                    raise
            self._discovering = True

    async def close_window(self, why: str = "closed") -> None:
        if self._window_deadline is None:
            return
        self._window_deadline = None
        if self._window_timer:
            self._window_timer.cancel()
            self._window_timer = None
        log.info("pairing window closed (%s)", why)
        if self.watcher.owner is not None and self._adapter_props() is not None:
            t = self.cfg.bluez_call_timeout
            with contextlib.suppress(BusError):
                await set_property(self.bus, names.BLUEZ_NAME, self.adapter_path, names.BLUEZ_ADAPTER_IFACE,
                                   "Discoverable", Variant("b", False), timeout=t)
            if self._discovering:
                self._discovering = False
                with contextlib.suppress(BusError):
                    await call(self.bus, names.BLUEZ_NAME, self.adapter_path, names.BLUEZ_ADAPTER_IFACE,
                               "StopDiscovery", timeout=t)
        self._emit(PairingWindowChanged(False))
        self._trigger_autoconnect("pairing window closed")

    def nearby(self) -> list[dict[str, Any]]:
        out = []
        for path, props in sorted(self._devices().items()):
            addr = names.address_from_device_path(path)
            if addr is None or addr in self.registry or _bonded(props):
                continue
            rssi = props.get("RSSI")
            out.append({"Address": addr, "Name": clean_name(props.get("Alias") or props.get("Name"), addr),
                        "RSSI": int(rssi) if isinstance(rssi, int) else 0, "Visible": rssi is not None})
        return out

    def _attempt(self, addr: str, initiator: str) -> _Attempt:
        att = self._attempts.get(addr)
        if att is None or att.done:
            att = _Attempt(addr, initiator)
            att.watchdog = asyncio.get_running_loop().call_later(
                self.cfg.pair_timeout, lambda: self._finish_attempt(addr, False, "timeout"))
            self._attempts[addr] = att
            log.info("pairing with %s started (%s)", redact_address(addr), "by the phone" if initiator == "remote"
                     else "by the car")
        return att

    def _finish_attempt(self, addr: str, success: bool, reason: str) -> None:
        att = self._attempts.pop(addr, None)
        if att is None or att.done:
            return
        att.done = True
        if att.watchdog:
            att.watchdog.cancel()
        if att.settle:
            att.settle.cancel()
        for p in self.prompts.open:
            if p.address == addr and not p.answerable:
                self.prompts.end(p.id, Outcome(False, "", "pairing_done"))
        if success:
            log.info("pairing with %s succeeded", redact_address(addr))
        else:
            log.info("pairing with %s failed: %s", redact_address(addr), reason)
            for p in self.prompts.open:
                if p.address == addr:
                    self.prompts.end(p.id, Outcome(False, "", "cancelled"))
        self._emit(PairingFinished(addr, success, reason))

    def _on_paired(self, addr: str) -> None:
        att = self._attempts.get(addr)
        if att is None or att.done:
            return
        self._spawn(self._after_pairing(addr), name="after-pairing")

    async def _after_pairing(self, addr: str) -> None:
        att = self._attempts.get(addr)
        if att is None or att.done:
            return
        props = self._device(addr) or {}
        name = clean_name(props.get("Alias") or props.get("Name"), addr)
        self.registry.add(addr, name, profiles_of(valid_uuids(props.get("UUIDs"))))
        full = self._car_full(addr)
        if full:  # connecting it would disconnect one of the driver's phones: say so, don't
            self._notes[addr] = f"not connected: {full}"
            log.info("paired %s; not connecting it: %d phones are already connected", redact_address(addr),
                     self.cfg.max_connected)
        self._finish_attempt(addr, True, f"paired; not connected: {full}" if full else "")
        await self._trust(addr)
        self._publish()
        if full and addr in self.registry:
            state = self._states.get(addr) or "disconnected"
            self._emit(PhoneChanged(addr, {"State": state, "Reason": self._notes.get(addr, "")}))
        if self.cfg.close_window_after_pairing and self.window_open:
            await self.close_window("paired")
        if not full:
            await self._first_connect(addr)

    def _car_full(self, addr: str) -> str:
        """``""``, or why a newly paired phone is not connected: the other connected phones."""
        others = [link for a, link in self.directory.connected.items() if a != addr]
        if len(others) < self.cfg.max_connected:
            return ""
        count = {1: "one phone is", 2: "two phones are", 3: "three phones are"}.get(
            len(others), f"{len(others)} phones are")
        order = sorted(others, key=lambda link: link.role != "primary")
        return f"{count} already connected ({', '.join(f'{link.role} {link.name}' for link in order)})"

    async def _trust(self, addr: str) -> None:
        try:
            await set_property(self.bus, names.BLUEZ_NAME, names.device_path(self.adapter_path, addr),
                               names.BLUEZ_DEVICE_IFACE, "Trusted", Variant("b", True),
                               timeout=self.cfg.bluez_call_timeout)
        except BusError as exc:
            log.warning("could not mark %s trusted: %s", redact_address(addr), exc)

    async def pair(self, address: str) -> None:
        """Car-initiated pairing towards a discovered phone; the outcome is ``pairing_finished``."""
        addr = self._address(address)
        self._require_ready()
        props = self._device(addr)
        if props is None:
            raise NotFound("no such phone nearby: open the pairing window and make the phone visible")
        if _bonded(props) and addr in self.registry:
            raise InvalidInput("this phone is already paired")
        if any(not a.done for a in self._attempts.values()):
            raise Busy("a pairing is already in progress")
        self._attempt(addr, "local")
        self._spawn(self._local_pair(addr), name="pair")

    async def _local_pair(self, addr: str) -> None:
        path = names.device_path(self.adapter_path, addr)
        try:
            await call(self.bus, names.BLUEZ_NAME, path, names.BLUEZ_DEVICE_IFACE, "Pair",
                       timeout=self.cfg.pair_timeout)
        except AlreadyExists:
            pass  # bonded already (bluetoothd: "Already Exists"): treat as paired
        except CallTimeout:
            with contextlib.suppress(BusError):
                await call(self.bus, names.BLUEZ_NAME, path, names.BLUEZ_DEVICE_IFACE, "CancelPairing",
                           timeout=self.cfg.bluez_call_timeout)
            self._finish_attempt(addr, False, "timeout")
            return
        except ServiceGone:
            self._finish_attempt(addr, False, "bluetooth_restarted")
            return
        except BusError as exc:
            if _bonded(self._device(addr)):
                # The keys are stored but service discovery failed: Pair() answers Failed
                # "br-connection-sdp-search" (src/device.c browse_cb, 5.66..current); the phone is paired.
                log.info("Pair %s: %s %s, but the phone is bonded: paired", redact_address(addr), exc.name,
                         exc.text[:80])
            else:
                self._finish_attempt(addr, False, classify_pair_error(exc.name, exc.text))
                return
        await self._after_pairing(addr)

    # -- the agent (AgentHandler) ---------------------------------------------------------------------
    def _agent_device(self, device: str, member: str) -> tuple[str, dict[str, Any]]:
        addr = names.address_from_device_path(device) if device.startswith(self.adapter_path + "/") else None
        props = self._device(addr) if addr else None
        if addr is None or props is None:
            log.warning("agent %s for unknown device %s: rejected", member, device[:120])
            raise AgentRejected("unknown device")
        return addr, props

    def _may_pair(self, addr: str) -> bool:
        att = self._attempts.get(addr)
        return self.window_open or addr in self.registry or (att is not None and att.initiator == "local")

    async def _pairing_prompt(self, device: str, member: str, kind: str, code: str) -> Outcome:
        addr, props = self._agent_device(device, member)
        if not self._may_pair(addr):
            log.info("%s from unknown phone %s outside the pairing window: rejected", member, redact_address(addr))
            raise AgentRejected("the pairing window is closed")
        att = self._attempt(addr, "remote")
        # Bonded already (the phone lost the car's key and pairs again): BlueZ will send no Paired or
        # Bonded change for it (none of 5.66..current does), so success comes from the link settling.
        att.rebond = att.initiator == "remote" and _bonded(props)
        name = clean_name(props.get("Alias") or props.get("Name"), addr)
        prompt = self.prompts.create(kind, addr, name, code, self.cfg.prompt_timeout)
        outcome = await self.prompts.wait(prompt)
        if not outcome.accepted:
            if outcome.reason != "superseded":
                reason = {"answered": "rejected", "timeout": "timeout", "bluetooth_gone": "bluetooth_restarted"}.get(
                    outcome.reason, "cancelled")
                self._hint(addr, "authentication")
                self._finish_attempt(addr, False, reason)
            raise AgentRejected(outcome.reason)
        att.accepted = True
        if att.rebond:
            if att.settle:
                att.settle.cancel()
            att.settle = asyncio.get_running_loop().call_later(REPAIR_SETTLE_S, self._rebond_settled, addr)
        return outcome

    def _rebond_settled(self, addr: str) -> None:
        att = self._attempts.get(addr)
        if att is None or att.done:
            return
        if self._connected_in_bluez(addr):
            log.info("re-pairing of bonded phone %s: link up %.1fs after the driver accepted: done",
                     redact_address(addr), REPAIR_SETTLE_S)
            self._on_paired(addr)
        else:
            self._finish_attempt(addr, False, "failed")

    async def request_confirmation(self, device: str, passkey: int) -> None:
        code = format_passkey(passkey)
        if code is None:
            log.warning("RequestConfirmation with an invalid passkey: rejected")
            raise AgentRejected("invalid passkey")
        await self._pairing_prompt(device, "RequestConfirmation", "confirm_passkey", code)

    async def request_authorization(self, device: str) -> None:
        await self._pairing_prompt(device, "RequestAuthorization", "authorize_pairing", "")

    async def request_pin_code(self, device: str) -> str:
        outcome = await self._pairing_prompt(device, "RequestPinCode", "enter_pin", "")
        return outcome.value

    async def request_passkey(self, device: str) -> int:
        outcome = await self._pairing_prompt(device, "RequestPasskey", "enter_passkey", "")
        return int(outcome.value)

    def _display(self, device: str, member: str, kind: str, code: str) -> None:
        addr, props = self._agent_device(device, member)
        if not self._may_pair(addr):
            log.info("%s for unknown phone %s outside the pairing window: ignored", member, redact_address(addr))
            raise AgentRejected("the pairing window is closed")
        self._attempt(addr, "remote" if addr not in self._attempts else self._attempts[addr].initiator)
        if any(p.address == addr and p.kind == kind and p.code == code for p in self.prompts.open):
            return  # the same code again (DisplayPasskey repeats with "entered" updates)
        name = clean_name(props.get("Alias") or props.get("Name"), addr)
        self.prompts.create(kind, addr, name, code, self.cfg.pair_timeout)

    def display_passkey(self, device: str, passkey: int, entered: int) -> None:
        code = format_passkey(passkey)
        if code is None:
            log.warning("DisplayPasskey with an invalid passkey: ignored")
            return
        with contextlib.suppress(AgentRejected):
            self._display(device, "DisplayPasskey", "display_passkey", code)

    def display_pin_code(self, device: str, pincode: str) -> None:
        pin = parse_pin(pincode)
        if pin is None:
            log.warning("DisplayPinCode with an invalid PIN: rejected")
            raise AgentRejected("invalid PIN")
        self._display(device, "DisplayPinCode", "display_pin", pin)

    async def authorize_service(self, device: str, uuid: str) -> None:
        addr, props = self._agent_device(device, "AuthorizeService")
        if not valid_uuid(uuid):
            log.warning("AuthorizeService with a malformed UUID from %s: rejected", redact_address(addr))
            raise AgentRejected("malformed UUID")
        uuid = uuid.lower()
        att = self._attempts.get(addr)
        ours = addr in self.registry or (att is not None and (att.accepted or att.done))
        if ours:
            if uuid not in CAR_SERVICES:
                log.info("phone %s asked for service %s the car does not offer: rejected", redact_address(addr), uuid)
                raise AgentRejected("service not offered")
            return
        if not self.window_open:
            log.info("service request from unknown phone %s outside the pairing window: rejected",
                     redact_address(addr))
            raise AgentRejected("unknown phone")
        name = clean_name(props.get("Alias") or props.get("Name"), addr)
        prompt = self.prompts.create("authorize_service", addr, name, uuid, self.cfg.prompt_timeout)
        outcome = await self.prompts.wait(prompt)
        if not outcome.accepted:
            raise AgentRejected(outcome.reason)

    def cancel(self) -> None:
        n = 0
        for p in self.prompts.open:
            if p.answerable or p.kind.startswith("display"):
                n += self.prompts.end(p.id, Outcome(False, "", "cancelled"))
        log.info("bluetoothd cancelled the agent request (%d prompt(s) closed)", n)

    def release(self) -> None:
        log.info("bluetoothd released the pairing agent (it is shutting down)")
        self._agent_registered = False
        self._update_health()

    # ================================================================================================
    # API operations
    # ================================================================================================
    def _address(self, address: str) -> str:
        addr = normalize_address(address)
        if addr is None:
            raise InvalidInput("not a Bluetooth address (expected AA:BB:CC:DD:EE:FF)")
        return addr

    def _record(self, address: str) -> PhoneRecord:
        addr = self._address(address)
        rec = self.registry.get(addr)
        if rec is None:
            raise NotFound("no paired phone with this address")
        return rec

    def phones(self) -> list[dict[str, Any]]:
        out = []
        for rec in self.registry.all():
            out.append({
                "Address": rec.address, "Name": rec.name, "Priority": rec.priority,
                "State": self._states.get(rec.address) or self._state_of(rec, {}),
                "Role": self.role_of(rec.address), "Profiles": list(rec.profiles),
                "LastConnected": int(rec.last_connected or 0), "PairedAt": int(rec.paired_at),
                "NeedsRepair": rec.needs_repair, "Reason": self._notes.get(rec.address, ""),
            })
        return out

    async def connect(self, address: str) -> None:
        rec = self._record(address)
        self._require_ready()
        if self._device(rec.address) is None:
            raise OperationFailed("the car's adapter has no pairing with this phone any more: forget it and pair again")
        if rec.address in self.directory.connected:
            return
        if rec.address in self._connecting:
            raise Busy("already connecting to this phone")
        self._explicit.add(rec.address)
        failure = await self._connect_once(rec.address, self.cfg.connect_budget)
        if failure is None:
            return
        self._explicit.discard(rec.address)
        if failure.reason == "timeout":
            raise DeadlineExceeded(f"the phone did not connect within {self.cfg.connect_budget:g}s")
        raise OperationFailed(failure.message)

    async def disconnect(self, address: str) -> None:
        rec = self._record(address)
        if self.watcher.owner is None:
            raise NotReadyError("bluetoothd is not running")
        self._explicit.discard(rec.address)
        if not self._connected_in_bluez(rec.address):
            return
        self._hint(rec.address, "local")
        await call(self.bus, names.BLUEZ_NAME, names.device_path(self.adapter_path, rec.address),
                   names.BLUEZ_DEVICE_IFACE, "Disconnect", timeout=self.cfg.bluez_call_timeout)

    async def forget(self, address: str) -> None:
        """Remove the phone from BlueZ and delete everything the car stored about it."""
        addr = self._address(address)
        rec = self.registry.get(addr)
        present = self._device(addr) is not None
        if rec is None and not present:
            raise NotFound("no paired phone with this address")
        att = self._attempts.get(addr)
        if att is not None:
            self._finish_attempt(addr, False, "cancelled")
        self.prompts.end_for(addr, "cancelled")
        self._explicit.discard(addr)
        was_connected = addr in self.directory.connected
        # Privacy first: the data goes now, even if bluetoothd does not answer.
        self.registry.forget(addr, tombstone=True)
        self._states.pop(addr, None)
        self.directory.forgotten(addr, rec.name if rec else "")
        if was_connected:
            self._emit(PhoneDisconnected(addr, "forgotten"))
        self._notes.pop(addr, None)
        self._emit(PhoneForgotten(addr))
        log.info("phone %s forgotten (%s)", redact_address(addr), redact(rec.name if rec else ""))
        if self.watcher.owner is None or not self._loaded:
            return  # the bond is removed when bluetoothd is back (phone_removals)
        if not present:
            self.registry.removal_done(addr)
            return
        try:
            await call(self.bus, names.BLUEZ_NAME, self.adapter_path, names.BLUEZ_ADAPTER_IFACE, "RemoveDevice", "o",
                       [names.device_path(self.adapter_path, addr)], timeout=self.cfg.bluez_call_timeout)
            self.registry.removal_done(addr)
        except BusError as exc:
            log.warning("bluetoothd did not remove %s yet (%s); will retry when it restarts", redact_address(addr), exc)
        self._publish()

    def set_priority(self, address: str, position: int) -> None:
        rec = self._record(address)
        changed = self.registry.move(rec.address, position)
        for r in changed:
            self._emit(PhoneChanged(r.address, {"Priority": r.priority}))
        self._publish()

    def answer(self, prompt_id: int, accept: bool, value: str) -> None:
        self.prompts.answer(prompt_id, accept, value)
