"""Composition root: builds everything, owns the root TaskGroup, talks to systemd.

Order at start: config (already loaded) -> buses -> store -> components (their interfaces are
exported) -> caller gate -> bus name ``org.dashbridge`` -> ``READY=1``.  SIGTERM/SIGINT: cancel
the TaskGroup, run clean-ups, release the name, close the store, all within ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from dbus_fast import RequestNameReply
from dbus_fast.service import ServiceInterface

from . import logs
from .api.auth import CallerGate
from .api.daemon1 import Daemon1
from .config import Config
from .context import AppContext, Component
from .dbus import bus as dbus_bus
from .dbus import names
from .dbus.signals import SignalRouter
from .health import Health
from .phones import PhoneDirectory
from .sdnotify import Notifier
from .store import DB_NAME, Store
from .supervisor import Supervisor, restart_policy

log = logging.getLogger(__name__)

# The watchdog pets systemd only if the loop answered within this lag and every supervised
# component is healthy; a wedged loop or a crash-looping component lets systemd restart us.
WATCHDOG_MAX_LAG_S = 1.0


class StartupError(Exception):
    pass


def build_components(ctx: AppContext) -> list[Component]:
    """Every capability, in dependency order.  Each issue's component registers here."""
    components: list[Component] = []
    # The directory of connected phones exists before any component: the bluetooth component
    # writes it, the profile components (built after it) read and listen to it.
    ctx.services["phones"] = PhoneDirectory()
    # bluetooth (issue 3): pairing, the phone registry, auto-connect; writes the phone directory.
    from .bluetooth.component import BluetoothComponent

    components.append(BluetoothComponent(ctx))
    # contacts (issue 5): PBAP phonebook/call history; offers ctx.services["callerid"] (set when
    # built, loaded from the store, so caller ID works before any phone syncs) to calls/messages.
    from dashbridge.profiles.pbap.sync import ContactsSync

    components.append(ContactsSync(ctx))
    # calls (issue 4): HFP through oFono; after bluetooth (which fills the phone directory).
    from dashbridge.profiles.hfp.handler import HfpHandler

    components.append(HfpHandler(ctx))
    # navigation relay, then messages (issue 6): messages offer the destinations they contain to
    # the relay, and the cloud feeds send-to-car destinations into it (ctx.services["navigation"]).
    from dashbridge.profiles.map.handler import MessagesComponent

    from .navigation import NavigationRelay

    navigation = NavigationRelay(ctx)
    ctx.services["navigation"] = navigation
    components.append(navigation)
    components.append(MessagesComponent(ctx))
    # cloud (issue 7): last; looks up ctx.services["navigation"] at run time.  Imports nothing
    # heavy here (aiohttp/cryptography load in a thread once the daemon is READY).
    from .cloud.component import CloudComponent

    components.append(CloudComponent(ctx))
    return components


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


async def publish(ctx: AppContext, components: list[Component], extra: Sequence[ServiceInterface] = ()) -> None:
    """Export the components' interfaces at /org/dashbridge, gate callers, then own the name:
    once this returns, the API answers."""
    exported = list(extra)
    for comp in components:
        ctx.health.set(comp.name, "starting")
        exported.extend(comp.interfaces())
    for iface in exported:
        ctx.system_bus.export(names.DASHBRIDGE_PATH, iface)
    CallerGate(ctx.system_bus, ctx.config.api.allowed_users, ctx.config.api.allowed_groups,
               system_peer=lambda sender: any(p(sender) for p in ctx.system_peers)).install()
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
        await publish(ctx, components, [Daemon1(self.health)])
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
