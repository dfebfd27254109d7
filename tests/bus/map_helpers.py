"""Harness for the messages/navigation bus tests.

:class:`MiniDaemon` runs the daemon's real navigation relay and messages component in this
process on private buses: real dbus-daemons, a real SQLite file, the real exported interfaces at
``/org/dashbridge`` under the name ``org.dashbridge`` (with the caller gate), supervised like in
``daemon.app``.  The test plays the bluetooth component by writing the PhoneDirectory (the radio
boundary) and the phones table row the pairing component would have written.  The end-to-end test
through the dashbridged process is ``test_map_e2e_daemon.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon import config as config_mod
from dashbridge.daemon.app import close_context, open_context, publish
from dashbridge.daemon.context import AppContext
from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.health import Health
from dashbridge.daemon.navigation import NavigationRelay
from dashbridge.daemon.phones import PhoneDirectory, PhoneLink
from dashbridge.daemon.supervisor import Supervisor
from dashbridge.profiles.map.handler import MessagesComponent

NAME, PATH = names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH
MSG_IFACE = names.DASHBRIDGE_MESSAGES_IFACE
NAV_IFACE = names.DASHBRIDGE_NAVIGATION_IFACE
PHONE = "AA:BB:CC:00:00:01"
MAP_UUIDS = frozenset({names.UUID_HFP_AG, names.UUID_PBAP_PSE, names.UUID_MAP_MAS})


def make_config(state_dir: Path, **sections: dict[str, Any]) -> config_mod.Config:
    """Config() with section fields replaced (no loader validation: tests may use tiny timings)."""
    cfg = config_mod.Config(state_directory=str(state_dir))
    for section, fields in sections.items():
        cur = getattr(cfg, section)
        nested = {k: v for k, v in fields.items() if dataclasses.is_dataclass(getattr(cur, k, None))}
        flat = {k: v for k, v in fields.items() if k not in nested}
        for k, v in nested.items():
            flat[k] = dataclasses.replace(getattr(cur, k), **v)
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(cur, **flat)})
    return cfg


class MiniDaemon:
    def __init__(self, system_address: str, session_address: str, state_dir: Path, *,
                 config: config_mod.Config | None = None, callerid: object | None = None,
                 messages: bool = True) -> None:
        self.system_address = system_address
        self.session_address = session_address
        self.state_dir = state_dir
        self.config = config or make_config(state_dir)
        self.callerid = callerid
        self.with_messages = messages
        self.ctx: AppContext | None = None
        self.nav: NavigationRelay | None = None
        self.messages: MessagesComponent | None = None
        self.health = Health()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def phones(self) -> PhoneDirectory:
        assert self.ctx is not None
        return self.ctx.services.phones

    async def start(self) -> MiniDaemon:
        # assembled exactly as daemon.app does it, with only these components
        cfg = dataclasses.replace(self.config, state_directory=str(self.state_dir),
                                  buses=dataclasses.replace(self.config.buses, system=self.system_address,
                                                            session=self.session_address))
        ctx = await open_context(cfg, self.health)
        if self.callerid is not None:
            ctx.services.callerid = self.callerid
        self.ctx = ctx
        self.nav = NavigationRelay(ctx)
        ctx.services.navigation = self.nav
        comps: list[Any] = [self.nav]
        if self.with_messages:
            self.messages = MessagesComponent(ctx)
            comps.append(self.messages)
        await publish(ctx, comps)
        sup = Supervisor(self.health)
        for comp in comps:
            self._tasks.append(asyncio.get_running_loop().create_task(sup.supervise(comp.name, comp.run)))
        return self

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.ctx is not None:
            await close_context(self.ctx)
            self.ctx = None

    # -- the bluetooth component's part ------------------------------------------------------------
    def register_phone(self, address: str = PHONE, name: str = "Test phone") -> None:
        assert self.ctx is not None
        with self.ctx.store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO phones (address, name, paired_at) VALUES (?, ?, ?)",
                       (address, name, time.time()))

    def connect_phone(self, address: str = PHONE, *, uuids: frozenset[str] = MAP_UUIDS,
                      role: str = "primary") -> PhoneLink:
        self.register_phone(address)
        link = PhoneLink(address, "Test phone", names.device_path("/org/bluez/hci0", address),
                         role, uuids)  # type: ignore[arg-type]
        self.phones.set_connected(link)
        return link

    def disconnect_phone(self, address: str = PHONE) -> None:
        self.phones.set_disconnected(address)


class Signals:
    """org.dashbridge signals on a client connection; ``await wait(member, pred)`` with a deadline.
    Bodies are unwrapped once, when they arrive."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.items: list[tuple[str, list[Any]]] = []
        self._cond = asyncio.Condition()
        bus.add_message_handler(self._on)

    async def start(self) -> Signals:
        await call(self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{NAME}'"])
        return self

    def _on(self, msg: Message) -> None:
        if msg.message_type.name == "SIGNAL" and msg.path == PATH:
            self.items.append((msg.member or "", unwrap(list(msg.body))))
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def of(self, member: str) -> list[list[Any]]:
        return [body for m, body in self.items if m == member]

    async def wait(self, member: str, pred: Callable[[list[Any]], bool] = lambda b: True,
                   timeout: float = 5.0) -> list[Any]:
        pos = 0
        async with asyncio.timeout(timeout):
            async with self._cond:
                while True:
                    for m, body in self.items[pos:]:
                        if m == member and pred(body):
                            return body
                    pos = len(self.items)
                    await self._cond.wait()

    async def wait_count(self, member: str, pred: Callable[[list[Any]], bool], count: int,
                         timeout: float = 5.0) -> list[list[Any]]:
        """Until ``count`` signals ``member`` matching ``pred`` were seen; returns them."""
        async with asyncio.timeout(timeout):
            async with self._cond:
                while True:
                    hits = [b for b in self.of(member) if pred(b)]
                    if len(hits) >= count:
                        return hits
                    await self._cond.wait()


async def api(client: MessageBus, iface: str, member: str, sig: str = "", body: list[Any] | None = None,
              timeout: float = 10.0) -> Any:
    reply = await call(client, NAME, PATH, iface, member, sig, body or [], timeout=timeout)
    out = unwrap(reply)
    return out[0] if len(out) == 1 else (out or None)


async def prop(client: MessageBus, iface: str, name: str) -> Any:
    (val,) = await call(client, NAME, PATH, names.PROPERTIES_IFACE, "Get", "ss", [iface, name])
    return unwrap(val)


def var(sig: str, value: Any) -> Variant:
    return Variant(sig, value)
