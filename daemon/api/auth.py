"""Caller authorization for ``org.dashbridge``.

The D-Bus policy file (systemd/org.dashbridge.conf) is the first gate on a real head unit.  This
is the second, enforced by the daemon itself on every method call and property access to our
interfaces: the caller's Unix uid (asked from the bus daemon, cached per unique name) must be
root, the daemon's own user, a user named in ``api.allowed_users`` or a member of a group in
``api.allowed_groups``.  Denied callers get ``org.dashbridge.Error.AccessDenied`` and a log line.

dbus-fast message handlers are synchronous, so the first call from a new connection is held,
the uid is looked up asynchronously (with a deadline) and the call is then re-dispatched.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
from collections import OrderedDict

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ..dbus import names
from ..dbus.call import call
from ..dbus.errors import BusError

log = logging.getLogger(__name__)

_CACHE_SIZE = 512
LOOKUP_TIMEOUT_S = 2.0


def uid_allowed(uid: int, users: tuple[str, ...], groups: tuple[str, ...]) -> bool:
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


class CallerGate:
    """Install with :meth:`install` after exporting the interfaces."""

    def __init__(self, bus: MessageBus, users: tuple[str, ...], groups: tuple[str, ...],
                 interface_prefix: str = "org.dashbridge.") -> None:
        self.bus = bus
        self.users = users
        self.groups = groups
        self.prefix = interface_prefix
        self._verdicts: OrderedDict[str, bool] = OrderedDict()
        self._pending: dict[str, list[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        # Must run before dbus-fast's own dispatch: user handlers are consulted first.
        self.bus.add_message_handler(self._on_message)

    def _guarded(self, msg: Message) -> bool:
        if msg.message_type != MessageType.METHOD_CALL:
            return False
        iface = msg.interface or ""
        if iface.startswith(self.prefix):
            return True
        if iface == names.PROPERTIES_IFACE and msg.body and isinstance(msg.body[0], str):
            return msg.body[0].startswith(self.prefix) or (msg.member == "GetAll" and msg.body[0] == "")
        return False

    def _on_message(self, msg: Message) -> bool | Message | None:
        if not self._guarded(msg) or msg.sender is None:
            return None
        verdict = self._verdicts.get(msg.sender)
        if verdict is True:
            return None
        if verdict is False:
            return self._deny(msg)
        waiting = self._pending.setdefault(msg.sender, [])
        waiting.append(msg)
        if len(waiting) == 1:
            task = asyncio.get_running_loop().create_task(self._lookup(msg.sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    def _deny(self, msg: Message) -> Message:
        log.warning("denied %s.%s from %s (not an allowed dashboard user)", msg.interface, msg.member, msg.sender)
        return Message.new_error(msg, names.DB_ERR_ACCESS_DENIED, "caller is not allowed to use org.dashbridge")

    async def _lookup(self, sender: str) -> None:
        try:
            (uid,) = await call(
                self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "GetConnectionUnixUser", "s",
                [sender], timeout=LOOKUP_TIMEOUT_S,
            )
            allowed = uid_allowed(int(uid), self.users, self.groups)
        except BusError as exc:
            log.warning("cannot identify caller %s (%s): denied", sender, exc)
            allowed = False
        self._verdicts[sender] = allowed
        if len(self._verdicts) > _CACHE_SIZE:
            self._verdicts.popitem(last=False)
        for msg in self._pending.pop(sender, []):
            if allowed:
                self.bus._process_message(msg)  # re-dispatch now that the verdict is cached
            else:
                self.bus.send(self._deny(msg))
