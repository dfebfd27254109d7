"""Signal subscriptions: one message handler per bus, match rules added before anything is read.

``SignalRouter.subscribe()`` adds the match rule on the bus daemon *and* a local filter; it
returns a handle whose ``close()`` removes both.  Subscribing is awaited (AddMatch is a call with
a deadline) so a caller can subscribe first and then read state, as the ObjectManager pattern
requires (bleak: subscribe to InterfacesAdded/Removed and PropertiesChanged before
GetManagedObjects).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from . import names
from .call import call
from .errors import BusError

log = logging.getLogger(__name__)

SignalCallback = Callable[[Message], None]


@dataclass(eq=False)
class Subscription:
    router: SignalRouter
    rule: str
    interface: str | None
    member: str | None
    path: str | None
    path_namespace: str | None
    sender: Callable[[], str | None] | str | None
    arg0: str | None
    callback: SignalCallback
    closed: bool = field(default=False)

    def matches(self, msg: Message) -> bool:
        if self.interface is not None and msg.interface != self.interface:
            return False
        if self.member is not None and msg.member != self.member:
            return False
        if self.path is not None and msg.path != self.path:
            return False
        if self.path_namespace is not None and self.path_namespace != "/":
            p = msg.path or ""
            if p != self.path_namespace and not p.startswith(self.path_namespace + "/"):
                return False
        if self.sender is not None:
            want = self.sender() if callable(self.sender) else self.sender
            if want is None or msg.sender != want:
                return False
        return not (self.arg0 is not None and (not msg.body or msg.body[0] != self.arg0))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.router._unsubscribe(self)


class SignalRouter:
    """Dispatches incoming signals on one bus to subscriptions; callbacks must not raise."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._subs: list[Subscription] = []
        self._rule_refs: dict[str, int] = {}
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> bool | None:
        if msg.message_type != MessageType.SIGNAL:
            return None
        for sub in list(self._subs):
            if not sub.closed and sub.matches(msg):
                try:
                    sub.callback(msg)
                except Exception:
                    log.exception("signal handler for %s.%s failed", msg.interface, msg.member)
        return None

    async def subscribe(
        self,
        callback: SignalCallback,
        *,
        interface: str | None = None,
        member: str | None = None,
        path: str | None = None,
        path_namespace: str | None = None,
        sender: str | None = None,
        sender_filter: Callable[[], str | None] | None = None,
        arg0: str | None = None,
        timeout: float = 5.0,
    ) -> Subscription:
        """``sender`` goes into the bus match rule (a well-known name is fine there);
        ``sender_filter`` returns the unique name a message must come from (or None = drop)."""
        parts = ["type='signal'"]
        if sender:
            parts.append(f"sender='{sender}'")
        if interface:
            parts.append(f"interface='{interface}'")
        if member:
            parts.append(f"member='{member}'")
        if path:
            parts.append(f"path='{path}'")
        if path_namespace and path_namespace != "/":
            parts.append(f"path_namespace='{path_namespace}'")
        if arg0 is not None:
            parts.append(f"arg0='{arg0}'")
        rule = ",".join(parts)
        sub = Subscription(
            self, rule, interface, member, path, path_namespace, sender_filter, arg0, callback
        )
        if self._rule_refs.get(rule, 0) == 0:
            await call(
                self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s", [rule],
                timeout=timeout,
            )
        self._rule_refs[rule] = self._rule_refs.get(rule, 0) + 1
        self._subs.append(sub)
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        n = self._rule_refs.get(sub.rule, 0) - 1
        if n <= 0:
            self._rule_refs.pop(sub.rule, None)
            if self.bus.connected:
                try:
                    await call(
                        self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "RemoveMatch", "s",
                        [sub.rule],
                    )
                except BusError as exc:
                    log.debug("RemoveMatch failed: %s", exc)
        else:
            self._rule_refs[sub.rule] = n
