"""Composition root: builds everything, owns the root TaskGroup, talks to systemd.

Order at start: config (already loaded) -> buses -> store -> components, then the API adapters
over them, from one table (:data:`PARTS`), exported -> caller gate -> bus name ``org.dashbridge``
-> ``READY=1``.  SIGTERM/SIGINT: cancel the TaskGroup, run clean-ups, release the name, close the
store, all within ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from dbus_fast import RequestNameReply
from dbus_fast.service import ServiceInterface

from dashbridge.profiles.hfp.handler import HfpHandler
from dashbridge.profiles.map.handler import MessagesComponent
from dashbridge.profiles.pbap.sync import ContactsSync

from . import logs
from .api.auth import CallerGate
from .api.calls import Calls1
from .api.cloud import Cloud1, CloudTestClock1
from .api.contacts import Contacts1
from .api.daemon1 import Daemon1
from .api.introspect import XmlIntrospection
from .api.messages import Messages1
from .api.navigation import Navigation1
from .api.phones import Phones1
from .api.snapshot import Snapshot, State, contacts_state
from .bluetooth.component import BluetoothComponent
from .cloud.component import CloudComponent
from .companion.component import CompanionComponent
from .config import Config
from .context import AppContext, Component
from .dbus import bus as dbus_bus
from .dbus import names
from .dbus.signals import SignalRouter
from .health import Health
from .navigation import NavigationRelay
from .sdnotify import Notifier
from .services import Services
from .store import DB_NAME, Store
from .supervisor import Supervisor, restart_policy

log = logging.getLogger(__name__)

# The watchdog pets systemd only if the loop answered within this lag and every supervised
# component is healthy; a wedged loop or a crash-looping component lets systemd restart us.
WATCHDOG_MAX_LAG_S = 1.0


C = TypeVar("C")


class StartupError(Exception):
    pass


@dataclass(frozen=True)
class Part(Generic[C]):
    """One capability: how its component is built, what it offers the other components (fields
    of :class:`~daemon.services.Services`), and the ``org.dashbridge`` adapters over it."""

    build: Callable[[AppContext], C]
    adapters: Callable[[C], list[ServiceInterface]]
    offers: Callable[[Services, C], None] | None = None
    # What Daemon1.GetSnapshot takes from the component's port besides its adapters' properties and
    # snapshot_extra(): (short interface name, source).
    snapshot: Callable[[C], tuple[str, Callable[[], State]]] | None = None


def _phones_api(c: BluetoothComponent) -> list[ServiceInterface]:
    return [Phones1(c.manager)]


def _contacts_api(c: ContactsSync) -> list[ServiceInterface]:
    return [Contacts1(c)]


def _contacts_snapshot(c: ContactsSync) -> tuple[str, Callable[[], State]]:
    return "Contacts1", contacts_state(c)


def _contacts_offer(s: Services, c: ContactsSync) -> None:
    s.callerid = c  # loaded from the store when built: caller ID works before any phone syncs


def _calls_api(c: HfpHandler) -> list[ServiceInterface]:
    return [Calls1(c)]


def _navigation_api(c: NavigationRelay) -> list[ServiceInterface]:
    return [Navigation1(c)]


def _navigation_offer(s: Services, c: NavigationRelay) -> None:
    s.navigation = c


def _messages_api(c: MessagesComponent) -> list[ServiceInterface]:
    return [Messages1(c)]


def _cloud_api(c: CloudComponent) -> list[ServiceInterface]:
    out: list[ServiceInterface] = [Cloud1(c)]
    if c.test_clock:
        out.append(CloudTestClock1(c))
    return out


def _no_api(_c: object) -> list[ServiceInterface]:
    return []  # what it does shows in Navigation1 (source "companion"), Cloud1 and Daemon1.Health


def _cloud_offer(s: Services, c: CloudComponent) -> None:
    s.entitlements = c
    s.cloud_destinations = c
    s.relayed_leases = c


# Every capability, in build order (component name -> parts).  Each issue's component registers here.
# The phone directory exists before any component (``Services.phones``): bluetooth writes it, the
# profile components built after it read and listen to it.  Contacts offer caller ID to calls and
# messages; messages offer the destinations they contain to the navigation relay, and the cloud
# feeds send-to-car destinations into it (it looks ``services.navigation`` up at run time).  The
# cloud imports nothing heavy when built (aiohttp/cryptography load in a thread once READY).
PARTS: dict[str, Part[Any]] = {
    "bluetooth": Part(BluetoothComponent, _phones_api),  # issue 3: pairing, registry, auto-connect
    "contacts": Part(ContactsSync, _contacts_api, _contacts_offer, _contacts_snapshot),  # issue 5: PBAP
    "calls": Part(HfpHandler, _calls_api),  # issue 4: HFP through oFono
    "navigation": Part(NavigationRelay, _navigation_api, _navigation_offer),  # issue 6
    "messages": Part(MessagesComponent, _messages_api),  # issue 6: MAP
    "cloud": Part(CloudComponent, _cloud_api, _cloud_offer),  # issue 7
    "companion": Part(CompanionComponent, _no_api),  # issue 17: the phone as a courier over BLE
}


def build_components(ctx: AppContext) -> list[Component]:
    """Every capability's component, in :data:`PARTS` order; each offers its services as it is built."""
    components: list[Component] = []
    for part in PARTS.values():
        comp = part.build(ctx)
        if part.offers is not None:
            part.offers(ctx.services, comp)
        components.append(comp)
    return components


def adapters(comp: Component) -> list[ServiceInterface]:
    """The ``org.dashbridge`` interfaces over a component built from :data:`PARTS`."""
    return PARTS[comp.name].adapters(comp)


async def open_context(cfg: Config, health: Health) -> AppContext:
    """The store, then both buses: what every component is built on."""
    # The store first: a database from a newer release must stop us before anything else.
    store = Store(Path(cfg.state_directory) / DB_NAME)
    # The install's key for redact() lives beside the data it protects (the store made the directory).
    logs.set_up_redaction(Path(cfg.state_directory))
    try:
        system_bus = await dbus_bus.connect(cfg.buses.system, "system", negotiate_unix_fd=True)
    except BaseException:
        store.close()
        raise
    try:
        session_bus = await dbus_bus.connect(cfg.buses.session, "session")
    except BaseException:
        system_bus.disconnect()
        store.close()
        raise
    return AppContext(
        config=cfg,
        system_bus=system_bus,
        session_bus=session_bus,
        system=SignalRouter(system_bus),
        session=SignalRouter(session_bus),
        store=store,
        health=health,
    )


async def publish(ctx: AppContext, components: list[Component], extra: Sequence[ServiceInterface] = (),
                  snapshot: Snapshot | None = None) -> None:
    """Build the adapters over the components, export them at /org/dashbridge, gate callers, then
    own the name: once this returns, the API answers.  ``snapshot`` (Daemon1.GetSnapshot's) learns
    every exported interface and the parts' own snapshot sources."""
    exported = list(extra)
    for comp in components:
        ctx.health.set(comp.name, "starting")
        exported.extend(adapters(comp))
    for iface in exported:
        ctx.system_bus.export(names.DASHBRIDGE_PATH, iface)
        if snapshot is not None:
            snapshot.add_interface(iface)
    if snapshot is not None:
        for comp in components:
            part = PARTS[comp.name]
            if part.snapshot is not None:
                snapshot.add(*part.snapshot(comp))
    CallerGate(ctx.system_bus, ctx.config.api.allowed_users, ctx.config.api.allowed_groups,
               system_peer=lambda sender: any(p(sender) for p in ctx.system_peers)).install()
    XmlIntrospection(ctx.system_bus).install()  # Introspect answers with the documented XML
    reply = await asyncio.wait_for(ctx.system_bus.request_name(names.DASHBRIDGE_NAME), timeout=5.0)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        raise StartupError(f"cannot own {names.DASHBRIDGE_NAME} ({reply.name}): another instance?")


async def close_context(ctx: AppContext) -> None:
    """Clean-ups (newest first), release the name, close the buses and the store."""
    for cleanup in reversed(ctx.cleanups):
        try:
            async with asyncio.timeout(2.0):
                await cleanup()
        except Exception as exc:
            log.warning("clean-up failed: %s", exc)
    with contextlib.suppress(Exception):
        if ctx.system_bus.connected:
            async with asyncio.timeout(1.0):
                await ctx.system_bus.release_name(names.DASHBRIDGE_NAME)
    ctx.system_bus.disconnect()
    ctx.session_bus.disconnect()
    ctx.store.close()


class App:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.health = Health()
        self.supervisor = Supervisor(self.health)
        self._stop = asyncio.Event()
        self.ctx: AppContext | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        t0 = time.monotonic()
        ctx = await open_context(self.config, self.health)
        self.ctx = ctx
        try:
            await self._serve(ctx, t0)
        finally:
            self.notifier.stopping()
            await close_context(ctx)
            log.info("stopped")

    async def _serve(self, ctx: AppContext, t0: float) -> None:
        components = build_components(ctx)
        snapshot = Snapshot(ctx.system_bus)
        await publish(ctx, components, [Daemon1(self.health, snapshot)], snapshot)
        self.health.set("store", "ok", f"schema v{ctx.store.version}")
        self.health.set("api", "ok")
        log.info("ready in %.3fs (%d components)", time.monotonic() - t0, len(components))
        self.notifier.ready(self.health.summary())
        self.health.on_change(lambda: self.notifier.status(self.health.summary()))

        async with asyncio.TaskGroup() as tg:
            for comp in components:
                tg.create_task(self.supervisor.supervise(comp.name, comp.run, restart_policy(comp)), name=comp.name)
            if self.notifier.watchdog_interval:
                tg.create_task(self._watchdog(self.notifier.watchdog_interval / 2), name="watchdog")
            tg.create_task(self._bus_lost(ctx), name="bus-watch")
            await self._stop.wait()
            raise _Stop

    async def _bus_lost(self, ctx: AppContext) -> None:
        waits = [asyncio.ensure_future(b.wait_for_disconnect())  # type: ignore[no-untyped-call]
                 for b in (ctx.system_bus, ctx.session_bus)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        log.error("lost a bus connection; exiting so systemd restarts us")
        raise BusLost()

    async def _watchdog(self, period: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            lag = loop.time() - due
            if lag < WATCHDOG_MAX_LAG_S and self.supervisor.healthy():
                self.notifier.watchdog()
            else:
                log.warning("watchdog withheld (loop lag %.2fs, components healthy: %s)",
                            lag, self.supervisor.healthy())


class _Stop(Exception):
    pass


class BusLost(Exception):
    pass


async def serve(config: Config, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    app = App(config, notifier)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    task = asyncio.ensure_future(app.run())
    stop_wait = asyncio.ensure_future(app._stop.wait())
    await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        try:
            async with asyncio.timeout(config.stop_timeout):
                await asyncio.wait([task])
        except TimeoutError:
            log.error("did not stop within %.1fs; giving up", config.stop_timeout)
            task.cancel()
            return 1
    stop_wait.cancel()
    exc = task.exception()
    if exc is None:
        return 0
    leaves = _leaves(exc)
    if all(isinstance(e, _Stop) for e in leaves):
        return 0
    if any(isinstance(e, BusLost) for e in leaves):
        return 1
    raise exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaves(e))
        return out
    return [exc]
