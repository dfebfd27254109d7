"""The calls component: HFP calls of the connected phones, through oFono.

What it does (issue 4; reference §4, §8 items 13-15):

* Watches who owns ``org.ofono``; on every (re)appearance takes a fresh ``GetModems`` snapshot
  (signals are subscribed first and buffered while a snapshot is in flight, then replayed).
* Follows the HFP modems (``Type=hfp``, ``Serial`` = the phone's address) of the phones the
  bluetooth component lists as connected (``ctx.services.phones``), powers them, and follows
  their ``Interfaces``: when ``VoiceCallManager`` (re)appears the phone's call table is rebuilt
  from ``GetCalls`` — a single event is never the truth.
* Keeps one call table per phone.  Calls carry our own ids, stable for the life of the call,
  also across an oFono restart (calls are matched by object path and number when oFono comes
  back; those not seen again within the grace period end with reason ``ofono-lost``).
* HFP link loss (``VoiceCallManager`` leaving ``Interfaces``, or the modem disappearing) ends
  the phone's calls at once with reason ``link-lost`` — oFono does not send ``CallRemoved`` then.
* Every call to oFono has a deadline (``calls.ofono_timeout``); an oFono that does not answer
  makes that one request fail with ``Timeout``, nothing else waits on it.

Commands come from ``daemon/api/calls.py`` (``org.dashbridge.Calls1``); events go to listeners
(the API object turns them into D-Bus signals).  Calls never depend on the cloud.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from dbus_fast import Message, Variant

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call as dbus_call
from dashbridge.daemon.dbus.call import unwrap, unwrap_props
from dashbridge.daemon.dbus.errors import (
    BusError,
    CallTimeout,
    InProgress,
    InvalidArguments,
    NotImplementedOnPeer,
    ServiceGone,
)
from dashbridge.daemon.dbus.signals import Subscription
from dashbridge.daemon.dbus.watch import NameWatcher
from dashbridge.daemon.errors import (
    Busy,
    DeadlineExceeded,
    InvalidInput,
    NotConnected,
    NotFound,
    NotReadyError,
    OperationFailed,
)
from dashbridge.daemon.logs import redact, redact_address
from dashbridge.daemon.phones import PhoneDirectory, PhoneLink

from .models import (
    Call,
    InvalidNumber,
    InvalidTones,
    ModemProps,
    PhoneStatus,
    apply_modem_change,
    display_name,
    normalize_dial_number,
    normalize_tones,
    parse_call_props,
    parse_modem_props,
    parse_start_time,
)

if TYPE_CHECKING:
    from dashbridge.daemon.context import AppContext

log = logging.getLogger(__name__)

CallEventKind = Literal["added", "changed", "removed"]
CallListener = Callable[[CallEventKind, Call, str], None]
PhoneListener = Callable[[PhoneStatus, bool], None]  # (status, still connected)

# Powering a modem makes oFono ask bluetoothd for the HFP connection and run the service-level
# handshake; if that fails we try again along this ladder (seconds), then wait for the phone to
# reconnect.  Android's car service gives HFP 10 s per attempt (see DESIGN.md §4).
POWER_RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# After a phone's VoiceCallManager comes back from an oFono restart, oFono announces the calls
# the phone still has (its AT+CLCC) shortly after the interface; calls from before the restart
# that have not reappeared this long after our GetCalls are over.
LIMBO_SETTLE_S = 2.0
# A modem removed while oFono stays (device unpaired, HFP UUID gone) — or ofonod shutting down
# cleanly, which removes every modem *before* it leaves the bus: calls wait this long for oFono to
# go (then restart_grace applies) or the modem to come back, else they end with "link-lost".
MODEM_GONE_GRACE_S = 2.0
# Retry ladder for reading state from oFono (GetModems / GetCalls / GetProperties) that failed.
LOAD_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0)

_OFONO_IFACES = (names.OFONO_VOICECALL_MANAGER_IFACE, names.OFONO_HANDSFREE_IFACE, names.OFONO_NETREG_IFACE)


@dataclass(eq=False)
class _Modem:
    path: str
    props: ModemProps
    address: str  # the phone's; fixed for the modem's life (looked up on every signal)
    loaded: set[str] = field(default_factory=set)  # interfaces whose state we have read
    loading: set[str] = field(default_factory=set)
    powering: bool = False
    power_attempt: int = 0
    power_timer: asyncio.TimerHandle | None = None

    @property
    def has_calls(self) -> bool:
        return names.OFONO_VOICECALL_MANAGER_IFACE in self.props.interfaces


@dataclass(eq=False)
class _Phone:
    link: PhoneLink
    status: PhoneStatus
    calls: dict[str, Call] = field(default_factory=dict)  # our id -> call
    by_path: dict[str, str] = field(default_factory=dict)  # oFono path -> our id
    limbo: dict[str, Call] = field(default_factory=dict)  # from before an oFono restart
    limbo_timer: asyncio.TimerHandle | None = None
    limbo_reason: str = "ofono-lost"
    reasons: dict[str, str] = field(default_factory=dict)  # oFono path -> DisconnectReason


class HfpHandler:
    """The ``calls`` component (registered in ``daemon/app.py``)."""

    name = "calls"

    def __init__(self, ctx: AppContext, directory: PhoneDirectory | None = None) -> None:
        self.ctx = ctx
        self.bus = ctx.system_bus
        self.router = ctx.system
        self.cfg = ctx.config.calls
        self._directory = directory
        self._owner: str | None = None
        self._modems: dict[str, _Modem] = {}  # oFono path -> modem
        self._phones: dict[str, _Phone] = {}  # address -> phone
        self._buffers: dict[str, list[Message]] = {}  # "/" or modem path -> signals held back
        # Reads of a modem's interfaces in flight: its signals are held until the last one is done
        # (several interfaces are read at once; one finishing must not replay signals that another,
        # whose snapshot may be older than them, would then overwrite).
        self._reads: dict[str, int] = {}
        self._call_listeners: list[CallListener] = []
        self._phone_listeners: list[PhoneListener] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self._listening = False
        self._generation = 0  # bumps whenever oFono vanishes: stale work checks it

    # ------------------------------------------------------------------ component protocol

    async def run(self) -> None:
        directory = self._directory or self.ctx.services.phones
        self._directory = directory
        self._running = True
        sub: Subscription | None = None
        watcher: NameWatcher | None = None
        try:
            # One match rule for everything oFono says; dispatched here by interface and path.
            sub = await self.router.subscribe(
                self._on_signal, sender=names.OFONO_NAME, sender_filter=lambda: self._owner,
                timeout=self.cfg.ofono_timeout,
            )
            if not self._listening:
                directory.add_listener(self._on_directory)
                self._listening = True
            # (Re)start: match the directory (phones may have come and gone while we were down),
            # and give calls kept from a previous run the usual grace to be found again.
            connected = directory.connected
            for address in [a for a in self._phones if a not in connected]:
                self._phone_gone(address)
            for link in connected.values():
                self._phone_connected(link)
            for p in self._phones.values():
                for cid, c in list(p.calls.items()):
                    p.limbo[cid] = c
                p.calls.clear()
                p.by_path.clear()
                if p.limbo and p.limbo_timer is None:
                    p.limbo_reason = "stale"  # not in oFono's list any more
                    self._arm_limbo(p, self.cfg.restart_grace)
            watcher = NameWatcher(self.router, names.OFONO_NAME, self._owner_changed)
            await watcher.start()
            if watcher.owner is None and self._owner is None:
                self.ctx.health.set(self.name, "degraded", "oFono is not running")
            await asyncio.Future()  # until cancelled
        finally:
            self._running = False
            for t in list(self._tasks):
                t.cancel()
            for m in self._modems.values():
                if m.power_timer:
                    m.power_timer.cancel()
            for p in self._phones.values():
                if p.limbo_timer:
                    p.limbo_timer.cancel()
                    p.limbo_timer = None
            if watcher is not None:
                await watcher.stop()
            if sub is not None:
                try:
                    await sub.close()
                except BusError:
                    pass
            self._owner = None
            self._modems.clear()
            self._buffers.clear()
            self._reads.clear()

    # ------------------------------------------------------------------ listeners and queries

    def add_call_listener(self, cb: CallListener) -> None:
        self._call_listeners.append(cb)

    def add_phone_listener(self, cb: PhoneListener) -> None:
        self._phone_listeners.append(cb)

    def calls(self) -> list[Call]:
        out: list[Call] = []
        for p in self._phones.values():
            out.extend(p.calls.values())
            out.extend(p.limbo.values())
        return sorted(out, key=lambda c: int(c.id[4:]))

    def phones(self) -> list[PhoneStatus]:
        return [p.status for p in self._phones.values()]

    def phone_name(self, address: str) -> str:
        p = self._phones.get(address)
        return p.status.name if p else ""

    def phone_role(self, address: str) -> str:
        p = self._phones.get(address)
        return p.link.role if p else ""

    def caller_name(self, call: Call) -> tuple[str, str]:
        """(display name, source) for a call: the phone's contacts, the network, the number."""
        contact: str | None = None
        number = call.number
        if number and number != "withheld":
            svc = self.ctx.services.callerid
            if svc is not None:
                try:
                    found: object = svc.display_name(call.phone, number)
                except Exception:
                    log.exception("caller-id lookup failed")
                    found = None
                contact = found if isinstance(found, str) else None
        return display_name(contact, call.network_name, number)

    def _emit_call(self, kind: CallEventKind, call: Call, reason: str = "") -> None:
        for cb in self._call_listeners:
            try:
                cb(kind, call, reason)
            except Exception:
                log.exception("call listener failed")

    def _emit_phone(self, p: _Phone, connected: bool = True) -> None:
        for cb in self._phone_listeners:
            try:
                cb(p.status, connected)
            except Exception:
                log.exception("phone listener failed")

    def _set_status(self, p: _Phone, status: PhoneStatus) -> None:
        if status != p.status:
            p.status = status
            self._emit_phone(p)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if not self._running:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("calls task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ phones (directory)

    def _on_directory(self, event: str, link: PhoneLink) -> None:
        if not self._running:
            return
        if event in ("connected", "changed"):
            self._phone_connected(link)
        elif event in ("disconnected", "forgotten"):
            self._phone_gone(link.address)

    def _phone_connected(self, link: PhoneLink) -> None:
        address = link.address.upper()
        p = self._phones.get(address)
        if p is None:
            p = _Phone(link, PhoneStatus(address, name=link.name))
            self._phones[address] = p
            log.info("phone %s connected (%s): following its hands-free link", redact_address(address), link.role)
            self._emit_phone(p)
        else:
            p.link = link
            self._set_status(p, replace(p.status, name=link.name))
        m = self._modem_of(address)
        if m is not None:
            m.power_attempt = 0
            self._evaluate(m)

    def _phone_gone(self, address: str) -> None:
        p = self._phones.pop(address.upper(), None)
        if p is None:
            return
        log.info("phone %s disconnected", redact_address(address))
        if p.limbo_timer:
            p.limbo_timer.cancel()
        for c in list(p.calls.values()) + list(p.limbo.values()):
            self._end_call(p, c, "phone-disconnected")
        p.limbo.clear()
        self._emit_phone(p, connected=False)
        m = self._modem_of(address)
        if m is not None and m.power_timer:
            m.power_timer.cancel()
            m.power_timer = None

    def _modem_of(self, address: str) -> _Modem | None:
        for m in self._modems.values():
            if m.address == address:
                return m
        return None

    def _phone_of_modem(self, modem_path: str) -> _Phone | None:
        m = self._modems.get(modem_path)
        if m is None:
            return None
        return self._phones.get(m.address)

    # ------------------------------------------------------------------ oFono presence

    async def _owner_changed(self, owner: str | None) -> None:
        if owner is None:
            if self._owner is not None:
                self._ofono_vanished()
            return
        self._owner = owner
        self._generation += 1
        self._spawn(self._load_modems(self._generation), "calls:GetModems")

    def _ofono_vanished(self) -> None:
        log.warning("oFono left the bus: keeping calls for %.0fs while it comes back", self.cfg.restart_grace)
        self.ctx.health.set(self.name, "degraded", "oFono is not running")
        self._owner = None
        self._generation += 1
        self._buffers.clear()
        self._reads.clear()
        for m in self._modems.values():
            if m.power_timer:
                m.power_timer.cancel()
        self._modems.clear()
        for p in self._phones.values():
            self._to_limbo(p, self.cfg.restart_grace, "ofono-lost")

    def _to_limbo(self, p: _Phone, grace: float, reason: str) -> None:
        """Keep the phone's calls (listed, same ids) while oFono may give them back; those not
        back within ``grace`` end with ``reason``."""
        for cid, c in list(p.calls.items()):
            p.limbo[cid] = c
        p.calls.clear()
        p.by_path.clear()
        p.reasons.clear()
        self._set_status(p, replace(p.status, ready=False))
        if p.limbo:
            p.limbo_reason = reason
            self._arm_limbo(p, grace)

    def _arm_limbo(self, p: _Phone, delay: float) -> None:
        if p.limbo_timer:
            p.limbo_timer.cancel()
        p.limbo_timer = asyncio.get_running_loop().call_later(delay, self._limbo_expired, p)

    def _limbo_expired(self, p: _Phone) -> None:
        p.limbo_timer = None
        if self._phones.get(p.link.address) is not p:
            return
        for c in list(p.limbo.values()):
            log.info("call %s on %s did not come back", c.id, redact_address(c.phone))
            self._end_call(p, c, p.limbo_reason)
        p.limbo.clear()

    async def _load_modems(self, gen: int) -> None:
        """GetModems snapshot; while it is in flight every oFono signal is held back ("/")."""
        attempt = 0
        while True:
            self._buffers["/"] = []
            try:
                (modems,) = await self._ofono_call("/", names.OFONO_MANAGER_IFACE, "GetModems")
                break
            except BusError as exc:
                if gen != self._generation:
                    return
                self._flush("/")
                delay = LOAD_RETRY_DELAYS_S[min(attempt, len(LOAD_RETRY_DELAYS_S) - 1)]
                attempt += 1
                log.warning("oFono GetModems failed (%s); retrying in %.1fs", exc.name, delay)
                self.ctx.health.set(self.name, "degraded", f"oFono did not list its modems ({_short(exc.name)})")
                await asyncio.sleep(delay)
                if gen != self._generation:
                    return
        if gen != self._generation:
            return
        self.ctx.health.set(self.name, "ok", "")
        seen: set[str] = set()
        try:
            for entry in modems if isinstance(modems, list) else []:
                try:
                    path, props = entry
                except (TypeError, ValueError):
                    continue
                if isinstance(path, str) and isinstance(props, dict):
                    seen.add(path)
                    self._modem_seen(path, unwrap_props(props))
            for path in [p for p in self._modems if p not in seen]:
                self._modem_removed(path)
        finally:
            if gen == self._generation:
                self._flush("/")

    # ------------------------------------------------------------------ signal intake

    def _on_signal(self, msg: Message) -> None:
        if self._buffers:
            key = "/" if "/" in self._buffers else self._modem_key(msg.path or "")
            buf = self._buffers.get(key)
            if buf is not None:
                buf.append(msg)
                return
        try:
            self._dispatch(msg)
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            log.warning("dropped malformed %s.%s from oFono: %s", msg.interface, msg.member, exc)

    def _modem_key(self, path: str) -> str:
        if path in self._modems:
            return path
        head = path.rsplit("/", 1)[0]
        return head if head in self._modems else path

    def _hold(self, path: str) -> None:
        """A read of the modem at ``path`` begins: hold its signals back."""
        self._reads[path] = self._reads.get(path, 0) + 1
        self._buffers.setdefault(path, [])

    def _release(self, path: str) -> None:
        """A read of the modem is over: replay what was held once no other read is in flight."""
        left = self._reads.get(path, 0) - 1
        if left > 0:
            self._reads[path] = left
            return
        self._reads.pop(path, None)
        self._flush(path)

    def _flush(self, key: str) -> None:
        buffered = self._buffers.pop(key, None) or []
        for msg in buffered:
            self._on_signal(msg)

    def _dispatch(self, msg: Message) -> None:
        iface, member, path = msg.interface, msg.member, msg.path or ""
        if iface == names.OFONO_VOICECALL_MANAGER_IFACE:
            if member == "CallAdded":
                cpath, props = msg.body
                # Hot path (the incoming-call relay): CallAdded values are plain variants.
                self._call_seen(path, cpath, {k: v.value if type(v) is Variant else v for k, v in props.items()})
            elif member == "CallRemoved":
                (cpath,) = msg.body
                self._call_removed(path, cpath)
        elif iface == names.OFONO_VOICECALL_IFACE:
            modem_path = path.rsplit("/", 1)[0]
            p = self._phone_of_modem(modem_path)
            if p is None:
                return
            if member == "PropertyChanged":
                name, value = msg.body
                self._call_changed(p, path, name, unwrap(value))
            elif member == "DisconnectReason":
                (reason,) = msg.body
                if isinstance(reason, str):
                    p.reasons[path] = reason[:32]
        elif iface == names.OFONO_MODEM_IFACE and member == "PropertyChanged":
            m = self._modems.get(path)
            if m is not None:
                name, value = msg.body
                self._modem_changed(m, name, unwrap(value))
        elif iface == names.OFONO_MANAGER_IFACE:
            if member == "ModemAdded":
                mpath, props = msg.body
                self._modem_seen(mpath, unwrap_props(props))
            elif member == "ModemRemoved":
                (mpath,) = msg.body
                self._modem_removed(mpath)
        elif iface == names.OFONO_NETREG_IFACE and member == "PropertyChanged":
            p = self._phone_of_modem(path)
            if p is not None:
                name, value = msg.body
                self._set_status(p, p.status.with_netreg({name: unwrap(value)}))
        elif iface == names.OFONO_HANDSFREE_IFACE and member == "PropertyChanged":
            p = self._phone_of_modem(path)
            if p is not None:
                name, value = msg.body
                self._set_status(p, p.status.with_handsfree({name: unwrap(value)}))

    # ------------------------------------------------------------------ modems

    def _modem_seen(self, path: str, props: dict[str, Any]) -> None:
        mp = parse_modem_props(props, path)
        if mp.type != "hfp" or not mp.address:
            return
        m = self._modems.get(path)
        if m is None:
            m = _Modem(path, mp, mp.address)
            self._modems[path] = m
            log.debug("HFP modem %s for %s", path, redact_address(mp.address))
        else:
            m.props = mp
        self._evaluate(m)

    def _modem_removed(self, path: str) -> None:
        m = self._modems.pop(path, None)
        if m is None:
            return
        if m.power_timer:
            m.power_timer.cancel()
        self._buffers.pop(path, None)
        self._reads.pop(path, None)
        p = self._phones.get(m.address)
        if p is not None:
            if p.calls:
                log.info("hands-free modem of %s removed with %d call(s): waiting %.0fs for it (or oFono's "
                         "exit)", redact_address(m.address), len(p.calls), MODEM_GONE_GRACE_S)
            self._to_limbo(p, MODEM_GONE_GRACE_S, "link-lost")

    def _modem_changed(self, m: _Modem, name: str, value: Any) -> None:
        before = m.props
        m.props = apply_modem_change(m.props, name, value)
        if m.props is before:
            return
        p = self._phones.get(m.address)
        if name == "Interfaces":
            gone = before.interfaces - m.props.interfaces
            m.loaded -= gone
            if p is not None and names.OFONO_VOICECALL_MANAGER_IFACE in gone:
                self._link_lost(p, "hands-free link lost")
        elif (name == "Powered" and before.powered and not m.props.powered and p is not None
              and m.power_timer is None and not m.powering):
            # The link dropped under us: reconnect, but not in a tight loop with a flapping link.
            m.power_timer = asyncio.get_running_loop().call_later(
                    POWER_RETRY_DELAYS_S[0], self._power_retry, m)
        self._evaluate(m)

    def _evaluate(self, m: _Modem) -> None:
        """Make what we do match what the modem says: power it, read new interfaces."""
        p = self._phones.get(m.address)
        if p is None or self._owner is None:
            return
        if self._modems.get(m.path) is not m:
            return
        if not m.props.powered:
            if p.status.ready:
                self._set_status(p, replace(p.status, ready=False))
            if not m.powering and m.power_timer is None:
                self._spawn(self._power(m, self._generation), f"calls:power:{m.path}")
            return
        m.power_attempt = 0
        for iface in _OFONO_IFACES:
            if iface in m.props.interfaces and iface not in m.loaded and iface not in m.loading:
                m.loading.add(iface)
                self._spawn(self._load_iface(m, iface, self._generation), f"calls:load:{iface}")

    async def _power(self, m: _Modem, gen: int) -> None:
        m.powering = True
        try:
            await self._ofono_call(m.path, names.OFONO_MODEM_IFACE, "SetProperty", "sv",
                                   ["Powered", Variant("b", True)], timeout=self.cfg.connect_timeout)
            log.info("hands-free link to %s is up", redact_address(m.address))
        except BusError as exc:
            if gen != self._generation or self._modems.get(m.path) is not m or m.address not in self._phones:
                return
            delay = POWER_RETRY_DELAYS_S[min(m.power_attempt, len(POWER_RETRY_DELAYS_S) - 1)]
            m.power_attempt += 1
            if m.power_attempt > len(POWER_RETRY_DELAYS_S):
                log.warning("could not bring up the hands-free link to %s (%s); waiting for the phone to "
                            "reconnect", redact_address(m.address), exc.name)
                return
            log.info("hands-free link to %s not up (%s); retry %d in %.0fs", redact_address(m.address), exc.name,
                     m.power_attempt, delay)
            m.power_timer = asyncio.get_running_loop().call_later(delay, self._power_retry, m)
        finally:
            m.powering = False

    def _power_retry(self, m: _Modem) -> None:
        m.power_timer = None
        self._evaluate(m)

    async def _load_iface(self, m: _Modem, iface: str, gen: int) -> None:
        """Read an interface's state: GetCalls for VoiceCallManager, GetProperties otherwise.
        Signals for this modem are held back meanwhile and replayed on top of the snapshot."""
        attempt = 0
        held = False
        try:
            while True:
                self._hold(m.path)
                held = True
                p0 = self._phones.get(m.address)
                known_before = set(p0.by_path) if p0 is not None else set()
                try:
                    if iface == names.OFONO_VOICECALL_MANAGER_IFACE:
                        (result,) = await self._ofono_call(m.path, iface, "GetCalls")
                    else:
                        (result,) = await self._ofono_call(m.path, iface, "GetProperties")
                    break
                except BusError as exc:
                    held = False
                    self._release(m.path)
                    if not self._still(m, gen, iface):
                        return
                    delay = LOAD_RETRY_DELAYS_S[min(attempt, len(LOAD_RETRY_DELAYS_S) - 1)]
                    attempt += 1
                    log.warning("reading %s of %s failed (%s); retry in %.1fs", iface.rsplit(".", 1)[-1],
                                redact_address(m.address), exc.name, delay)
                    await asyncio.sleep(delay)
                    if not self._still(m, gen, iface):
                        return
            if not self._still(m, gen, iface):
                held = False
                self._release(m.path)
                return
            p = self._phones.get(m.address)
            log.debug("read %s of %s", iface.rsplit(".", 1)[-1], redact_address(m.address))
            if p is not None:
                if iface == names.OFONO_VOICECALL_MANAGER_IFACE:
                    self._rebuild_calls(p, m, result, known_before)
                elif iface == names.OFONO_NETREG_IFACE:
                    self._set_status(p, p.status.with_netreg(unwrap_props(result)))
                else:
                    self._set_status(p, p.status.with_handsfree(unwrap_props(result)))
            m.loaded.add(iface)
            held = False
            self._release(m.path)
        finally:
            if held:  # cancelled mid-read: never leave the modem's signals held back
                self._release(m.path)
            m.loading.discard(iface)

    def _still(self, m: _Modem, gen: int, iface: str) -> bool:
        return (gen == self._generation and self._modems.get(m.path) is m and iface in m.props.interfaces
                and m.address in self._phones)

    # ------------------------------------------------------------------ calls

    def _rebuild_calls(self, p: _Phone, m: _Modem, snapshot: Any, known_before: set[str]) -> None:
        """The truth from GetCalls: add what we miss, update what we have, end what is gone
        (only calls we knew before asking: a call dialled meanwhile is not in the answer)."""
        seen: dict[str, dict[str, Any]] = {}
        for entry in snapshot if isinstance(snapshot, list) else []:
            try:
                cpath, props = entry
            except (TypeError, ValueError):
                continue
            if isinstance(cpath, str) and cpath.startswith(m.path + "/") and isinstance(props, dict):
                seen[cpath] = unwrap_props(props)
        for cpath, cid in list(p.by_path.items()):
            if cpath not in seen and cpath in known_before and cid in p.calls:
                self._end_call(p, p.calls[cid], p.reasons.pop(cpath, "") or "stale")
        for cpath, props in seen.items():
            self._call_seen(m.path, cpath, props)
        if not p.status.ready:
            self._set_status(p, replace(p.status, ready=True))
        if p.limbo:
            self._arm_limbo(p, LIMBO_SETTLE_S)

    def _call_seen(self, modem_path: str, cpath: str, props: dict[str, Any]) -> None:
        p = self._phone_of_modem(modem_path)
        if p is None or not isinstance(cpath, str):
            return
        cp = parse_call_props(_without_placeholder_start(props))
        cid = p.by_path.get(cpath)
        if cid is not None and cid in p.calls:
            old = p.calls[cid]
            new = old.with_props(cp)
            if new.state == "disconnected":
                self._end_call(p, new, p.reasons.pop(cpath, "") or "network")
                return
            if new != old:
                p.calls[cid] = new
                self._emit_call("changed", new)
            return
        if cp.state is None or cp.state == "disconnected":
            return
        adopted = self._adopt_from_limbo(p, cpath, cp.line_id or "")
        if adopted is not None:
            new = replace(adopted, path=cpath).with_props(cp)
            p.calls[new.id] = new
            p.by_path[cpath] = new.id
            log.info("call %s on %s is back after oFono restarted", new.id, redact_address(p.link.address))
            self._emit_call("changed", new)
            return
        new = Call.first_seen(f"call{next(self._ids)}", p.link.address, cpath, cp)
        if new.state in ("active", "held") and new.start_time is None:
            # A call in progress before we (or oFono 1.31, which says 1970 for it) saw it: its real
            # start is unknown; the dashboard's clock starts now, as for a call answered here.
            new = replace(new, start_time=float(int(time.time())))
        p.calls[new.id] = new
        p.by_path[cpath] = new.id
        self._emit_call("added", new)  # first: the dashboard rings before we write our log
        if new.ringing:
            log.info("incoming call %s on %s from %s", new.id, redact_address(p.link.address), redact(new.number))
        log.debug("call %s added: %s %s", new.id, new.state, new.number)

    def _adopt_from_limbo(self, p: _Phone, cpath: str, number: str) -> Call | None:
        if not p.limbo:
            return None
        best = None
        for c in p.limbo.values():
            if c.number == number and c.path == cpath:
                best = c
                break
            if c.number == number and best is None:
                best = c
        if best is not None:
            del p.limbo[best.id]
        return best

    def _call_changed(self, p: _Phone, cpath: str, name: str, value: Any) -> None:
        cid = p.by_path.get(cpath)
        if cid is None or cid not in p.calls:
            return
        old = p.calls[cid]
        if name == "StartTime" and _placeholder_start(value):
            return  # oFono 1.31 re-learnt the call from AT+CLCC: keep the start time we know
        new = old.apply(name, value)
        if new is old or new == old:
            return
        if new.state == "disconnected":
            # oFono: DisconnectReason, then State=disconnected, then CallRemoved.
            self._end_call(p, new, p.reasons.pop(cpath, "") or "network")
            return
        if new.state != old.state:
            log.debug("call %s: %s -> %s", cid, old.state, new.state)
            if new.state in ("active", "held") and new.start_time is None:
                # oFono sends StartTime right after State; start the dashboard's clock now (same
                # one-second resolution, so oFono's value normally changes nothing).
                new = replace(new, start_time=float(int(time.time())))
        p.calls[cid] = new
        self._emit_call("changed", new)

    def _call_removed(self, modem_path: str, cpath: Any) -> None:
        p = self._phone_of_modem(modem_path)
        if p is None or not isinstance(cpath, str):
            return
        cid = p.by_path.get(cpath)
        if cid is not None and cid in p.calls:
            self._end_call(p, p.calls[cid], p.reasons.pop(cpath, "") or "network")
        p.reasons.pop(cpath, None)

    def _end_call(self, p: _Phone, call: Call, reason: str) -> None:
        """Tell the dashboard a call is over: a final ``changed`` (disconnected + reason), then
        ``removed``."""
        p.calls.pop(call.id, None)
        p.limbo.pop(call.id, None)
        if p.by_path.get(call.path) == call.id:
            del p.by_path[call.path]
        final = replace(call, state="disconnected", disconnect_reason=reason)
        log.info("call %s on %s ended (%s)", call.id, redact_address(call.phone), reason)
        self._emit_call("changed", final)
        self._emit_call("removed", final, reason)

    def _link_lost(self, p: _Phone, why: str) -> None:
        if p.calls:
            log.warning("%s for %s with %d call(s) in progress", why, redact_address(p.link.address), len(p.calls))
        for c in list(p.calls.values()):
            self._end_call(p, c, "link-lost")
        p.reasons.clear()
        self._set_status(p, replace(p.status, ready=False))

    # ------------------------------------------------------------------ commands

    async def _ofono_call(self, path: str, iface: str, member: str, signature: str = "",
                          body: list[Any] | None = None, *, timeout: float | None = None) -> list[Any]:
        owner = self._owner
        if owner is None:
            raise ServiceGone(names.ERR_SERVICE_UNKNOWN, "oFono is not running", member=member)
        return await dbus_call(self.bus, owner, path, iface, member, signature, body or [],
                               timeout=timeout or self.cfg.ofono_timeout)

    async def _command(self, path: str, iface: str, member: str, signature: str = "",
                       body: list[Any] | None = None) -> list[Any]:
        """An oFono call made for a dashboard request: errors become domain errors."""
        try:
            return await self._ofono_call(path, iface, member, signature, body)
        except CallTimeout:
            raise DeadlineExceeded(f"oFono did not answer {member} within {self.cfg.ofono_timeout:g}s") from None
        except ServiceGone:
            raise NotReadyError("oFono is not running") from None
        except InvalidArguments as exc:
            raise InvalidInput(f"oFono refused the request ({_short(exc.name)})") from None
        except InProgress:
            raise Busy("the phone is busy with another call operation; try again") from None
        except NotImplementedOnPeer:
            raise OperationFailed("the phone does not support this") from None
        except BusError as exc:
            raise OperationFailed(f"the phone refused {member} ({_short(exc.name)})") from None

    def _resolve_phone(self, phone: str) -> _Phone:
        if phone:
            addr = phone.strip().upper()
            p = self._phones.get(addr)
            if p is None:
                raise NotConnected(f"phone {redact_address(addr)} is not connected")
            return p
        for p in self._phones.values():
            if p.link.role == "primary":
                return p
        if len(self._phones) == 1:
            return next(iter(self._phones.values()))
        if not self._phones:
            raise NotConnected("no phone is connected")
        raise InvalidInput("more than one phone is connected and none is primary: name the phone")

    def _ready_modem(self, p: _Phone) -> _Modem:
        m = self._modem_of(p.link.address)
        if self._owner is None:
            raise NotReadyError("oFono is not running")
        if m is None or not m.has_calls:
            raise NotReadyError("the phone's hands-free link is not up yet")
        return m

    def _find_call(self, call_id: str) -> tuple[_Phone, Call]:
        for p in self._phones.values():
            c = p.calls.get(call_id)
            if c is not None:
                return p, c
            if call_id in p.limbo:
                raise NotReadyError("oFono is restarting; the call is being recovered")
        raise NotFound(f"no call {call_id!r} (it may have ended)")

    async def dial(self, number: str, phone: str = "") -> Call:
        # Calls switched off (cloud.gated_local_features): dial, answer, hold, resume, swap and
        # tones are refused with NotEntitled; ending a call never is.
        self.ctx.services.require("calls")
        try:
            n = normalize_dial_number(number)
        except InvalidNumber as exc:
            raise InvalidInput(str(exc)) from None
        p = self._resolve_phone(phone)
        m = self._ready_modem(p)
        log.info("dialling %s on %s", redact(n), redact_address(p.link.address))
        (cpath,) = await self._command(m.path, names.OFONO_VOICECALL_MANAGER_IFACE, "Dial", "ss", [n, ""])
        if self._phones.get(p.link.address) is not p:
            raise NotConnected("the phone disconnected while dialling")
        cid = p.by_path.get(cpath)
        if cid is not None and cid in p.calls:
            return p.calls[cid]
        # oFono sends CallAdded right after this reply; announce the call now, merge it then.
        new = Call(id=f"call{next(self._ids)}", phone=p.link.address, path=cpath, state="dialing",
                   direction="outgoing", number=n)
        p.calls[new.id] = new
        p.by_path[cpath] = new.id
        self._emit_call("added", new)
        return new

    async def answer(self, call_id: str) -> None:
        self.ctx.services.require("calls")
        p, c = self._find_call(call_id)
        m = self._ready_modem(p)
        if c.state == "incoming":
            await self._guarded(p, c, c.path, names.OFONO_VOICECALL_IFACE, "Answer")
        elif c.state == "waiting":
            # Answer a waiting call: the active one goes on hold (CHLD=2).
            await self._guarded(p, c, m.path, names.OFONO_VOICECALL_MANAGER_IFACE, "HoldAndAnswer")
        else:
            raise InvalidInput(f"call {call_id} is {c.state}, not ringing: it cannot be answered")

    async def hangup(self, call_id: str) -> None:
        p, c = self._find_call(call_id)
        self._ready_modem(p)
        await self._guarded(p, c, c.path, names.OFONO_VOICECALL_IFACE, "Hangup")

    async def hangup_all(self, phone: str = "") -> int:
        """Hang up every call (but a waiting one) on ``phone``, or on every phone for ""."""
        targets = [self._resolve_phone(phone)] if phone else [p for p in self._phones.values() if p.calls]
        n = 0
        for p in targets:
            if not p.calls:
                continue
            m = self._ready_modem(p)
            await self._command(m.path, names.OFONO_VOICECALL_MANAGER_IFACE, "HangupAll")
            n += 1
        return n

    async def hold(self, call_id: str) -> None:
        self.ctx.services.require("calls")
        p, c = self._find_call(call_id)
        if c.state != "active":
            raise InvalidInput(f"call {call_id} is {c.state}; only an active call can be put on hold")
        await self._swap(p)

    async def resume(self, call_id: str) -> None:
        self.ctx.services.require("calls")
        p, c = self._find_call(call_id)
        if c.state != "held":
            raise InvalidInput(f"call {call_id} is {c.state}, not on hold")
        await self._swap(p)

    async def swap(self, phone: str = "") -> None:
        self.ctx.services.require("calls")
        p = self._resolve_phone(phone)
        states = {c.state for c in p.calls.values()}
        if not {"active", "held"} <= states:
            raise InvalidInput("swapping needs one active and one held call")
        await self._swap(p)

    async def _swap(self, p: _Phone) -> None:
        m = self._ready_modem(p)
        if any(c.state == "waiting" for c in p.calls.values()):
            raise InvalidInput("a call is waiting: answer or reject it first")
        await self._command(m.path, names.OFONO_VOICECALL_MANAGER_IFACE, "SwapCalls")

    async def send_tones(self, call_id: str, tones: str) -> None:
        self.ctx.services.require("calls")
        try:
            t = normalize_tones(tones)
        except InvalidTones as exc:
            raise InvalidInput(str(exc)) from None
        p, c = self._find_call(call_id)
        if c.state not in ("active", "alerting"):
            raise InvalidInput(f"call {call_id} is {c.state}; tones need a connected call")
        m = self._ready_modem(p)
        await self._command(m.path, names.OFONO_VOICECALL_MANAGER_IFACE, "SendTones", "s", [t])

    async def _guarded(self, p: _Phone, c: Call, path: str, iface: str, member: str) -> None:
        """A per-call command; if oFono refuses because the call moved on meanwhile, say so."""
        try:
            await self._command(path, iface, member)
        except OperationFailed:
            now = p.calls.get(c.id)
            if now is None:
                raise NotFound(f"call {c.id} has ended") from None
            if member in ("Answer", "HoldAndAnswer"):
                # oFono answers Failed both when the call stopped ringing (our table may not have heard
                # yet) and when the phone refused ATA/AT+CHLD (+CME ERROR: 3, the call keeps ringing:
                # oFono 1.31).  Ask oFono which it is.
                if await self._still_ringing(p, c):
                    raise OperationFailed(f"the phone refused to answer call {c.id}") from None
                now = p.calls.get(c.id)
                if now is None:
                    raise NotFound(f"call {c.id} has ended") from None
                raise InvalidInput(f"call {c.id} is no longer ringing on the phone: it cannot be answered") from None
            raise

    async def _still_ringing(self, p: _Phone, c: Call) -> bool:
        """oFono's own view (VoiceCallManager.GetCalls): is ``c`` still incoming/waiting?  When oFono
        cannot tell, our table decides."""
        m = self._modem_of(p.link.address)
        try:
            if m is None:
                raise ServiceGone(names.ERR_SERVICE_UNKNOWN, "no modem")
            (calls,) = await self._ofono_call(m.path, names.OFONO_VOICECALL_MANAGER_IFACE, "GetCalls")
        except BusError:
            now = p.calls.get(c.id)
            return now is not None and now.state in ("incoming", "waiting")
        for entry in calls if isinstance(calls, list) else []:
            try:
                cpath, props = entry
            except (TypeError, ValueError):
                continue
            if cpath == c.path and isinstance(props, dict):
                state = unwrap_props(props).get("State")
                return state in ("incoming", "waiting")
        return False


def _short(error_name: str) -> str:
    return error_name.rsplit(".", 1)[-1]


# oFono 1.31 (drivers/hfpmodem/voicecall.c) re-learns the calls from AT+CLCC after ofonod restarted or
# the service level connection came back, and has no start time for them: StartTime is the epoch,
# "1970-01-01T00:00:00+0000".  No call starts before 1971: such a value means "unknown".
_EPOCH_PLACEHOLDER_S = 365 * 86400


def _placeholder_start(value: Any) -> bool:
    t = parse_start_time(value)
    return t is not None and t < _EPOCH_PLACEHOLDER_S


def _without_placeholder_start(props: dict[str, Any]) -> dict[str, Any]:
    if _placeholder_start(props.get("StartTime")):
        return {k: v for k, v in props.items() if k != "StartTime"}
    return props
