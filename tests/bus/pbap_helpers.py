"""Harness for the contacts tests: the contacts component in-process on real private buses (obexd's
session bus with the fake obexd, the system bus with ``org.dashbridge.Contacts1`` exported and a
dashboard client), a real SQLite store, and the phone directory driven by the test (the bluetooth
component's part).  ``test_pbap_*`` modules build their world with :func:`pbap_world`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from dashbridge.daemon import config as config_mod
from dashbridge.daemon.app import close_context, open_context, publish
from dashbridge.daemon.context import AppContext
from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.daemon.health import Health
from dashbridge.daemon.phones import PhoneDirectory, PhoneLink
from dashbridge.daemon.supervisor import Supervisor
from dashbridge.profiles.pbap.sync import ContactsSync
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.obex import FakeObexd
from dashbridge.simulator.phone import VirtualPhone

PHONE = "AA:BB:CC:00:05:01"
OTHER = "AA:BB:CC:00:05:02"
PBAP_UUIDS = frozenset({names.UUID_HFP_AG, names.UUID_PBAP_PSE})
IFACE = names.DASHBRIDGE_CONTACTS_IFACE
FAST = {"retry_delays": (0.2, 0.4), "permission_retry_delays": (0.2, 0.3), "stall_timeout": 3.0,
        "call_timeout": 5.0, "connect_timeout": 5.0}


def make_config(state_dir: Path, **contacts: Any) -> config_mod.Config:
    cfg = config_mod.Config(state_directory=str(state_dir))
    return dataclasses.replace(cfg, contacts=dataclasses.replace(cfg.contacts, **{**FAST, **contacts}))


class PbapWorld:
    def __init__(self, system: PrivateBus, session: PrivateBus, tmp: Path, phones: list[VirtualPhone],
                 contacts_cfg: dict[str, Any]) -> None:
        self.system = system
        self.session = session
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.obex_tmp = tmp / "obexd-tmp"
        self.phones = {p.address: p for p in phones}
        self.contacts_cfg = contacts_cfg
        self.obexd: FakeObexd | None = None
        self.ctx: AppContext | None = None
        self.sync: ContactsSync | None = None
        self.health = Health()
        self.client: MessageBus | None = None
        self.obex_watch: MessageBus | None = None
        self.states: list[dict[str, Any]] = []
        self.transfers_started = 0
        self._cond = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self, *, obexd: bool = True) -> PbapWorld:
        if obexd:
            self.obexd = await FakeObexd.start(self.session.address, list(self.phones.values()),
                                               tmpdir=self.obex_tmp, progress_interval=0.1)
        self.client = await MessageBus(bus_address=self.system.address).connect()
        self.client.add_message_handler(self._on_client)
        await call(self.client, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',interface='{IFACE}'"])
        self.obex_watch = await MessageBus(bus_address=self.session.address).connect()
        self.obex_watch.add_message_handler(self._on_obex)
        await call(self.obex_watch, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{names.OBEX_NAME}',member='InterfacesAdded'"])
        await self.start_daemon()
        return self

    async def start_daemon(self) -> None:
        # assembled exactly as daemon.app does it, with only the contacts component
        cfg = dataclasses.replace(make_config(self.state_dir, **self.contacts_cfg),
                                  buses=config_mod.BusesConfig(self.system.address, self.session.address))
        ctx = await open_context(cfg, self.health)
        self.ctx = ctx
        self.sync = ContactsSync(ctx)
        await publish(ctx, [self.sync])
        # run() is up once it reports its health (subscriptions made, obexd watched)
        up = asyncio.Event()

        def reported() -> None:
            h = self.health.get("contacts")
            if h is not None and h.state != "starting":
                up.set()

        self.health.on_change(reported)
        sup = Supervisor(self.health)
        self._tasks.append(asyncio.get_running_loop().create_task(sup.supervise(self.sync.name, self.sync.run)))
        async with asyncio.timeout(5):
            await up.wait()

    async def stop_daemon(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.ctx is not None:
            await close_context(self.ctx)
            self.ctx = None
        self.health = Health()

    async def stop(self) -> None:
        await self.stop_daemon()
        if self.obexd is not None:
            await self.obexd.stop()
        for b in (self.client, self.obex_watch):
            if b is not None:
                b.disconnect()

    # -- signals ----------------------------------------------------------------------------------
    def _on_client(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "SyncStateChanged":
            self.states.append(unwrap(msg.body[1]))
            asyncio.get_running_loop().create_task(self._notify())

    def _on_obex(self, msg: Message) -> None:
        if (msg.message_type == MessageType.SIGNAL and msg.member == "InterfacesAdded"
                and "org.bluez.obex.Transfer1" in msg.body[1]):
            self.transfers_started += 1

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        return len(self.states)

    async def wait_state(self, state: str, phone: str = PHONE, *, after: int = 0, timeout: float = 10.0,
                         pred: Callable[[dict[str, Any]], bool] = lambda s: True) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            async with self._cond:
                while True:
                    for s in self.states[after:]:
                        if s["Phone"] == phone and s["State"] == state and pred(s):
                            return s
                    await self._cond.wait()

    # -- the bluetooth component's part -----------------------------------------------------------
    def register(self, address: str = PHONE, name: str = "Test phone") -> None:
        assert self.ctx is not None
        with self.ctx.store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO phones (address, name, paired_at) VALUES (?, ?, ?)",
                       (address, name, time.time()))

    @property
    def directory(self) -> PhoneDirectory:
        assert self.ctx is not None
        return self.ctx.services.phones

    def connect(self, address: str = PHONE, *, role: str = "primary", uuids: frozenset[str] = PBAP_UUIDS) -> None:
        self.register(address)
        self.directory.set_connected(PhoneLink(address, "Test phone", names.device_path("/org/bluez/hci0", address),
                                               role, uuids))  # type: ignore[arg-type]

    def disconnect(self, address: str = PHONE) -> None:
        self.directory.set_disconnected(address)

    async def connect_synced(self, address: str = PHONE, timeout: float = 20.0) -> dict[str, Any]:
        mark = self.mark()
        self.connect(address)
        return await self.wait_state("synced", address, after=mark, timeout=timeout)

    # -- the dashboard's part ---------------------------------------------------------------------
    async def api(self, member: str, sig: str = "", body: list[Any] | None = None) -> Any:
        assert self.client is not None
        out = unwrap(await call(self.client, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH, IFACE, member, sig,
                                body or [], timeout=10.0))
        return out[0] if len(out) == 1 else out

    async def api_error(self, member: str, sig: str = "", body: list[Any] | None = None) -> BusError:
        try:
            await self.api(member, sig, body)
        except BusError as exc:
            return exc
        raise AssertionError(f"{member} succeeded")

    def db(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.ctx is not None
        return list(self.ctx.store.execute(sql, params).fetchall())

    def obex_files(self) -> list[str]:
        """Files left in obexd's temp directory or in the daemon's transfer directory (where the
        daemon tells obexd to write: <state>/obex outside systemd)."""
        dirs = (self.obex_tmp, self.state_dir / "obex")
        return sorted(name for d in dirs if d.exists() for name in os.listdir(d))


@contextlib.asynccontextmanager
async def pbap_world(system: PrivateBus, session: PrivateBus, tmp: Path, phones: list[VirtualPhone],
                     **contacts_cfg: Any) -> AsyncIterator[PbapWorld]:
    w = PbapWorld(system, session, tmp, phones, contacts_cfg)
    try:
        await w.start()
        yield w
    finally:
        await w.stop()
