"""Local mirrors of remote object trees.

* :class:`ObjectManagerMirror` — BlueZ/obexd style: subscribe to InterfacesAdded/Removed and
  PropertiesChanged *before* ``GetManagedObjects``, rebuild from a fresh snapshot whenever the
  service's owner changes (reference §7 item 10, §8 item 1).
* :class:`OfonoPropsMirror` — oFono style (no ObjectManager): ``PropertyChanged(sv)`` on one
  object/interface, subscribed before ``GetProperties``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dbus_fast import Message

from . import names
from .call import call, unwrap, unwrap_props
from .errors import BusError
from .signals import SignalRouter, Subscription

log = logging.getLogger(__name__)

Props = dict[str, Any]
Objects = dict[str, dict[str, Props]]

# Listener events: ("added", path, iface, props) / ("removed", path, iface, {}) /
# ("changed", path, iface, changed_props) / ("reset", "", "", {}) (the service vanished: all gone)
Listener = Callable[[str, str, str, Props], None]


class ObjectManagerMirror:
    def __init__(self, router: SignalRouter, service: str, root: str = "/", *, timeout: float = 5.0) -> None:
        self.router = router
        self.service = service
        self.root = root
        self.timeout = timeout
        self.objects: Objects = {}
        self.owner: str | None = None
        self._listeners: list[Listener] = []
        self._subs: list[Subscription] = []
        self._buffer: list[Message] | None = None
        self.ready = asyncio.Event()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, kind: str, path: str, iface: str, props: Props) -> None:
        for lst in list(self._listeners):
            try:
                lst(kind, path, iface, props)
            except Exception:
                log.exception("mirror listener failed on %s %s %s", kind, path, iface)

    async def subscribe(self) -> None:
        """Add the match rules (once per mirror lifetime)."""
        if self._subs:
            return
        owner = lambda: self.owner  # noqa: E731 - the filter follows the current owner
        for iface, member in (
            (names.OBJECT_MANAGER_IFACE, "InterfacesAdded"),
            (names.OBJECT_MANAGER_IFACE, "InterfacesRemoved"),
            (names.PROPERTIES_IFACE, "PropertiesChanged"),
        ):
            self._subs.append(
                await self.router.subscribe(
                    self._on_signal, sender=self.service, interface=iface, member=member,
                    sender_filter=owner, timeout=self.timeout,
                )
            )

    async def load(self, owner: str) -> None:
        """(Re)build from a fresh snapshot of ``owner``'s tree; signals arriving meanwhile are
        buffered and applied on top."""
        await self.subscribe()
        self.owner = owner
        self._buffer = []
        try:
            (managed,) = await call(
                self.router.bus, owner, self.root, names.OBJECT_MANAGER_IFACE, "GetManagedObjects",
                timeout=self.timeout,
            )
        except BusError:
            self._buffer = None
            raise
        snapshot: Objects = {
            path: {iface: unwrap_props(props) for iface, props in ifaces.items()}
            for path, ifaces in managed.items()
        }
        old, self.objects = self.objects, {}
        for path in old:
            for iface in old[path]:
                if path not in snapshot or iface not in snapshot[path]:
                    self._emit("removed", path, iface, {})
        for path in sorted(snapshot, key=len):
            for iface, props in snapshot[path].items():
                self.objects.setdefault(path, {})[iface] = props
                self._emit("added", path, iface, props)
        buffered, self._buffer = self._buffer or [], None
        for msg in buffered:
            self._apply(msg)
        self.ready.set()

    def reset(self) -> None:
        """The service left the bus: every object is gone."""
        self.owner = None
        self.ready.clear()
        had = self.objects
        self.objects = {}
        for path in sorted(had, key=len, reverse=True):
            for iface in had[path]:
                self._emit("removed", path, iface, {})
        self._emit("reset", "", "", {})

    def _on_signal(self, msg: Message) -> None:
        if self._buffer is not None:
            self._buffer.append(msg)
            return
        self._apply(msg)

    def _apply(self, msg: Message) -> None:
        try:
            if msg.member == "InterfacesAdded":
                path, ifaces = msg.body
                for iface, props in ifaces.items():
                    p = unwrap_props(props)
                    self.objects.setdefault(path, {})[iface] = p
                    self._emit("added", path, iface, p)
            elif msg.member == "InterfacesRemoved":
                path, ifaces = msg.body
                obj = self.objects.get(path, {})
                for iface in ifaces:
                    if obj.pop(iface, None) is not None:
                        self._emit("removed", path, iface, {})
                if path in self.objects and not self.objects[path]:
                    del self.objects[path]
            elif msg.member == "PropertiesChanged":
                iface, changed, invalidated = msg.body
                path = msg.path or ""
                known = self.objects.get(path)
                if known is None or iface not in known:
                    return  # not announced (yet): ignore, as a late subscriber would
                props = known[iface]
                ch = {k: unwrap(v) for k, v in changed.items()}
                props.update(ch)
                for k in invalidated:
                    props.pop(k, None)
                self._emit("changed", path, iface, ch)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("dropped malformed %s from %s: %s", msg.member, self.service, exc)

    def get(self, path: str, iface: str) -> Props | None:
        return self.objects.get(path, {}).get(iface)

    def with_interface(self, iface: str) -> dict[str, Props]:
        return {p: ifs[iface] for p, ifs in self.objects.items() if iface in ifs}

    async def close(self) -> None:
        for s in self._subs:
            await s.close()
        self._subs.clear()


class OfonoPropsMirror:
    """Properties of one oFono object/interface, kept current by ``PropertyChanged``."""

    def __init__(
        self,
        router: SignalRouter,
        service: str,
        path: str,
        interface: str,
        on_change: Callable[[str, Any], None] | None = None,
        *,
        sender_filter: Callable[[], str | None] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.router = router
        self.service = service
        self.path = path
        self.interface = interface
        self.props: Props = {}
        self.on_change = on_change
        self.sender_filter = sender_filter
        self.timeout = timeout
        self._sub: Subscription | None = None
        self._buffer: list[tuple[str, Any]] | None = None

    async def start(self) -> Props:
        self._buffer = []
        self._sub = await self.router.subscribe(
            self._on_signal, sender=self.service, interface=self.interface, member="PropertyChanged",
            path=self.path, sender_filter=self.sender_filter, timeout=self.timeout,
        )
        try:
            (props,) = await call(
                self.router.bus, self.service, self.path, self.interface, "GetProperties",
                timeout=self.timeout,
            )
        except BusError:
            await self.close()
            raise
        self.props = unwrap_props(props)
        buffered, self._buffer = self._buffer or [], None
        for k, v in buffered:
            self._set(k, v)
        return self.props

    def _on_signal(self, msg: Message) -> None:
        try:
            name, value = msg.body
            value = unwrap(value)
        except (ValueError, TypeError):
            log.warning("dropped malformed PropertyChanged on %s", self.path)
            return
        if self._buffer is not None:
            self._buffer.append((name, value))
        else:
            self._set(name, value)

    def _set(self, name: str, value: Any) -> None:
        self.props[name] = value
        if self.on_change:
            try:
                self.on_change(name, value)
            except Exception:
                log.exception("PropertyChanged handler failed for %s", self.path)

    async def close(self) -> None:
        if self._sub:
            await self._sub.close()
            self._sub = None
