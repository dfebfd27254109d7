"""Caller authorization for ``org.dashbridge``.

The D-Bus policy file (systemd/org.dashbridge.conf) is the first gate on a real head unit.  This
is the second, enforced by the daemon itself on **every** method call that reaches its connection
on the system bus, whatever its interface header says (default deny):

* ``org.freedesktop.DBus.Introspectable.Introspect`` and ``org.freedesktop.DBus.Peer`` (``Ping``,
  ``GetMachineId``) are open, but only when the call names that interface: a call without an
  interface header is dispatched by dbus-fast by member and signature to *any* interface at the
  path (``Ping`` would reach ``Daemon1.Ping``), so it is gated like the rest;
* the pairing agent (``org.bluez.*`` interfaces, and anything at the agent's path) is bluetoothd's
  to call: the current owner of ``org.bluez`` (at once, no lookup: a ``Release`` sent just before
  bluetoothd leaves must still be seen as bluetoothd's), else root or the daemon's own user only;
* everything else — our ``org.dashbridge.*`` interfaces, ``Properties.Get/GetAll/Set``,
  ``ObjectManager.GetManagedObjects`` (served by dbus-fast itself, it would hand out every
  property), calls without an interface — needs a dashboard caller: root, the daemon's own user, a
  user named in ``api.allowed_users`` or a member of a group in ``api.allowed_groups``.

The caller's Unix uid is asked from the bus daemon (with a deadline); what it may call is decided
once and cached per unique name (unique names are never reused on a bus).  dbus-fast message
handlers are synchronous, so the first call from a new connection is held, the uid is looked up,
and the call re-dispatched.
Denied callers get ``org.dashbridge.Error.AccessDenied``; the log line is rate-limited so a
hostile process cannot flood the journal.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import time
from collections import OrderedDict
from collections.abc import Callable

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from ..dbus import names
from ..dbus.call import call
from ..dbus.errors import BusError

log = logging.getLogger(__name__)

_CACHE_SIZE = 512
LOOKUP_TIMEOUT_S = 2.0
# Calls held per unknown caller while its uid is looked up; more are denied at once.
MAX_HELD_PER_CALLER = 64
# Denial log lines: at most this many per window; the rest are counted and summarised.
DENIAL_LOGS_PER_WINDOW = 10
DENIAL_LOG_WINDOW_S = 60.0

# (interface, member) pairs anybody may call — only with the interface header present.
OPEN_CALLS = frozenset({
    (names.INTROSPECTABLE_IFACE, "Introspect"),
    ("org.freedesktop.DBus.Peer", "Ping"),
    ("org.freedesktop.DBus.Peer", "GetMachineId"),
})
_BLUEZ_PREFIX = "org.bluez."


def uid_allowed(uid: int, users: tuple[str, ...], groups: tuple[str, ...]) -> bool:
    """A dashboard caller: root, ourselves, a named user or a member of a named group."""
    if uid == 0 or uid == os.getuid():
        return True
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    if pw.pw_name in users:
        return True
    for gname in groups:
        try:
            g = grp.getgrnam(gname)
        except KeyError:
            continue
        if pw.pw_gid == g.gr_gid or pw.pw_name in g.gr_mem:
            return True
    return False


def system_uid(uid: int) -> bool:
    """bluetoothd's side (the pairing agent): root or the daemon's own user."""
    return uid == 0 or uid == os.getuid()


class DenialLog:
    """Rate-limited warnings for denied calls (no timer: the window is checked when one comes)."""

    def __init__(self, per_window: int = DENIAL_LOGS_PER_WINDOW, window: float = DENIAL_LOG_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_window = per_window
        self.window = window
        self.clock = clock
        self._start = -window
        self._logged = 0
        self.suppressed = 0

    def denied(self, what: str, sender: str) -> None:
        now = self.clock()
        if now - self._start >= self.window:
            if self.suppressed:
                log.warning("%d more denied calls were not logged", self.suppressed)
            self._start, self._logged, self.suppressed = now, 0, 0
        if self._logged < self.per_window:
            self._logged += 1
            log.warning("denied %s from %s (not an allowed caller)", what, sender)
        else:
            self.suppressed += 1
            log.debug("denied %s from %s (not an allowed caller)", what, sender)


class CallerGate:
    """Install with :meth:`install` after exporting the interfaces (before owning the name)."""

    def __init__(self, bus: MessageBus, users: tuple[str, ...], groups: tuple[str, ...],
                 agent_path: str = names.DASHBRIDGE_AGENT_PATH,
                 system_peer: Callable[[str], bool] | None = None) -> None:
        """``system_peer(sender)``: the sender is a foreign daemon the agent serves (the current
        owner of ``org.bluez``, a name only root may own under bluetoothd's policy): its calls to
        the agent pass at once, in order, without waiting for a uid lookup."""
        self.bus = bus
        self.system_peer = system_peer
        self.users = users
        self.groups = groups
        self.agent_path = agent_path
        # unique name -> (may call the agent, may call the dashboard API), decided once per caller
        # from its uid: no user/group database lookups on the path of every call
        self._verdicts: OrderedDict[str, tuple[bool, bool]] = OrderedDict()
        self._pending: dict[str, list[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.denials = DenialLog()

    def install(self) -> None:
        # Must run before dbus-fast's own dispatch: user handlers are consulted first.
        self.bus.add_message_handler(self._on_message)

    # -- policy ---------------------------------------------------------------------------------
    def _open(self, msg: Message) -> bool:
        return (msg.interface or "", msg.member or "") in OPEN_CALLS

    def _system_only(self, msg: Message) -> bool:
        path = msg.path or ""
        return ((msg.interface or "").startswith(_BLUEZ_PREFIX) or path == self.agent_path
                or path.startswith(self.agent_path + "/"))

    def verdict(self, uid: int | None) -> tuple[bool, bool]:
        if uid is None:
            return False, False
        return system_uid(uid), uid_allowed(uid, self.users, self.groups)

    def allows(self, msg: Message, verdict: tuple[bool, bool]) -> bool:
        return verdict[0] if self._system_only(msg) else verdict[1]

    # -- dispatch -------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> bool | Message | None:
        if msg.message_type != MessageType.METHOD_CALL or self._open(msg):
            return None
        sender = msg.sender
        if not sender:  # on a bus every call carries its sender; refuse one that does not
            return self._deny(msg)
        if self.system_peer is not None and self._system_only(msg) and self.system_peer(sender):
            return None
        known = self._verdicts.get(sender)
        if known is not None:
            return None if self.allows(msg, known) else self._deny(msg)
        waiting = self._pending.setdefault(sender, [])
        if len(waiting) >= MAX_HELD_PER_CALLER:
            return self._deny(msg)
        waiting.append(msg)
        if len(waiting) == 1:
            task = asyncio.get_running_loop().create_task(self._lookup(sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    def _deny(self, msg: Message) -> Message | bool:
        self.denials.denied(f"{msg.interface or '(no interface)'}.{msg.member} at {msg.path}", msg.sender or "?")
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return Message.new_error(msg, names.DB_ERR_ACCESS_DENIED, "caller is not allowed to use org.dashbridge")

    async def _lookup(self, sender: str) -> None:
        uid: int | None
        try:
            (raw,) = await call(
                self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "GetConnectionUnixUser", "s",
                [sender], timeout=LOOKUP_TIMEOUT_S,
            )
            uid = int(raw)
        except BusError as exc:
            log.warning("cannot identify caller %s (%s): denied", sender, exc)
            uid = None
        verdict = self._verdicts[sender] = self.verdict(uid)
        if len(self._verdicts) > _CACHE_SIZE:
            self._verdicts.popitem(last=False)
        for msg in self._pending.pop(sender, []):
            if self.allows(msg, verdict):
                self.bus._process_message(msg)  # re-dispatch: the uid is cached now
            else:
                reply = self._deny(msg)
                if isinstance(reply, Message):
                    self.bus.send(reply)
