"""Harness for the calls tests: the calls component in-process against the fake oFono, each on
its own connection to a real private dbus-daemon, its ``org.dashbridge.Calls1`` exported there,
and a dashboard client calling it and collecting its signals.  The phone directory is driven by
the test (the bluetooth component's part).

Other ``test_calls_*`` modules build their ``world`` fixture with :func:`calls_world`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from dashbridge.daemon.app import adapters
from dashbridge.daemon.config import CallsConfig, Config, Duration
from dashbridge.daemon.context import AppContext
from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.dbus.errors import BusError
from dashbridge.daemon.dbus.signals import SignalRouter
from dashbridge.daemon.health import Health
from dashbridge.daemon.phones import PhoneDirectory, PhoneLink
from dashbridge.daemon.store import Store
from dashbridge.profiles.hfp.handler import HfpHandler
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.ofono import FakeOfono
from dashbridge.simulator.phone import VirtualPhone

A = "AA:00:00:00:00:01"
B = "BB:00:00:00:00:02"


class CallsWorld:
    def __init__(self, bus: PrivateBus, fake: FakeOfono, handler: HfpHandler, directory: PhoneDirectory,
                 client: MessageBus, health: Health, ctx: AppContext) -> None:
        self.bus = bus
        self.fake = fake
        self.handler = handler
        self.directory = directory
        self.client = client
        self.health = health
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.signals: list[tuple[str, list[Any]]] = []
        self._cond = asyncio.Condition()
        client.add_message_handler(self._on)

    def start(self) -> None:
        """Run the calls component (as the supervisor does)."""
        self.task = asyncio.get_running_loop().create_task(self.handler.run())

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _on(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface == names.DASHBRIDGE_CALLS_IFACE:
            self.signals.append((msg.member or "", unwrap(list(msg.body))))
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        return len(self.signals)

    async def wait(self, member: str, pred: Callable[[list[Any]], bool] = lambda b: True, *, after: int = 0,
                   timeout: float = 5.0) -> list[Any]:
        """The first ``member`` signal (from index ``after`` on) whose body satisfies ``pred``."""
        async with asyncio.timeout(timeout):
            async with self._cond:
                while True:
                    for name, body in self.signals[after:]:
                        if name == member and pred(body):
                            return body
                    await self._cond.wait()

    async def api(self, member: str, signature: str = "", body: list[Any] | None = None,
                  timeout: float = 10.0) -> list[Any]:
        return unwrap(await call(self.client, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH,
                                 names.DASHBRIDGE_CALLS_IFACE, member, signature, body or [], timeout=timeout))

    async def api_error(self, member: str, signature: str = "", body: list[Any] | None = None) -> BusError:
        try:
            await self.api(member, signature, body)
        except BusError as exc:
            return exc
        raise AssertionError(f"{member} succeeded")

    def connect(self, address: str, role: str = "primary", name: str = "Phone") -> None:
        self.directory.set_connected(PhoneLink(address, name, f"/org/bluez/hci0/dev_{address.replace(':', '_')}",
                                               role, frozenset({names.UUID_HFP_AG})))  # type: ignore[arg-type]

    async def connect_ready(self, address: str, role: str = "primary", name: str = "Phone") -> None:
        mark = self.mark()
        self.connect(address, role, name)
        await self.wait("PhoneChanged", lambda b: b[0] == address and b[1]["Ready"], after=mark)

    async def calls(self) -> list[dict[str, Any]]:
        (calls,) = await self.api("GetCalls")
        return list(calls)

    async def incoming(self, address: str, number: str, name: str = "") -> dict[str, Any]:
        """The phone rings; returns the CallAdded properties the dashboard got."""
        mark = self.mark()
        self.fake.incoming_call(address, number, name)
        body = await self.wait("CallAdded", lambda b: b[1]["Phone"] == address and b[1]["Number"] == number,
                               after=mark)
        return dict(body[1])

    async def state(self, call_id: str, state: str, *, after: int = 0) -> dict[str, Any]:
        body = await self.wait("CallChanged", lambda b: b[0] == call_id and b[1]["State"] == state, after=after)
        return dict(body[1])


@contextlib.asynccontextmanager
async def calls_world(system_bus: PrivateBus, tmp_path: Path, **calls_cfg: Any) -> AsyncIterator[CallsWorld]:
    """The world; each test module wraps this in its own ``world`` fixture."""
    phones = [VirtualPhone(A, name="Alice's phone"), VirtualPhone(B, name="Bob's phone")]
    fake = await FakeOfono.start(system_bus.address, phones)
    daemon_bus = await MessageBus(bus_address=system_bus.address).connect()
    client = await MessageBus(bus_address=system_bus.address).connect()
    store = Store(tmp_path / "state.db")
    health = Health()
    settings: dict[str, Any] = {"ofono_timeout": Duration(1.0), "connect_timeout": Duration(3.0),
                                "restart_grace": Duration(3.0)}
    settings.update(calls_cfg)
    cfg = Config(calls=CallsConfig(**settings))
    ctx = AppContext(config=cfg, system_bus=daemon_bus, session_bus=daemon_bus, system=SignalRouter(daemon_bus),
                     session=SignalRouter(daemon_bus), store=store, health=health)
    directory = PhoneDirectory()
    ctx.services.phones = directory
    handler = HfpHandler(ctx)
    for iface in adapters(handler):
        daemon_bus.export(names.DASHBRIDGE_PATH, iface)
    await daemon_bus.request_name(names.DASHBRIDGE_NAME)
    await call(client, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
               [f"type='signal',sender='{names.DASHBRIDGE_NAME}'"])
    w = CallsWorld(system_bus, fake, handler, directory, client, health, ctx)
    w.start()
    try:
        yield w
    finally:
        await w.stop()
        await fake.stop()
        client.disconnect()
        daemon_bus.disconnect()
        store.close()


@pytest.fixture
async def world(system_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[CallsWorld]:
    async with calls_world(system_bus, tmp_path) as w:
        yield w


async def test_world_comes_up_and_powers_the_connected_phone(world: CallsWorld) -> None:
    await world.connect_ready(A)
    m = world.fake.modem(A)
    assert m is not None and m.powered and m.online
    (phones,) = await world.api("GetPhones")
    assert [p["Address"] for p in phones] == [A]
    assert phones[0]["Ready"] is True and phones[0]["Operator"] == "SimNet"


async def test_an_operator_change_during_the_first_reads_is_not_lost(world: CallsWorld,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """oFono answers GetProperties with the state when it got the question.  The network's name
    changes while that answer is on its way, and another interface's read (Handsfree) ends first:
    the change must still win over the older snapshot (seen once on the real ofonod: the phone's
    operator went back to "" after the dashboard had been told the new name)."""
    handler = world.handler
    real = handler._ofono_call
    netreg_answered, changed, handsfree_read = asyncio.Event(), asyncio.Event(), asyncio.Event()
    netreg_read = asyncio.Event()

    async def interleaved(path: str, iface: str, member: str, *a: Any, **kw: Any) -> Any:
        if iface == names.OFONO_HANDSFREE_IFACE and member == "GetProperties":
            await changed.wait()  # this read is in flight when the name changes ...
            res = await real(path, iface, member, *a, **kw)
            handsfree_read.set()  # ... and ends first
            return res
        res = await real(path, iface, member, *a, **kw)  # oFono's answer, as of now
        if iface == names.OFONO_NETREG_IFACE and member == "GetProperties":
            netreg_answered.set()
            await handsfree_read.wait()  # ... read only after the change and the other read
            # set now, seen by the test only once the handler has taken this answer in (the rest
            # of its step: the snapshot applied, the held signals replayed)
            netreg_read.set()
        return res

    monkeypatch.setattr(handler, "_ofono_call", interleaved)
    mark = world.mark()
    world.connect(A)
    await asyncio.wait_for(netreg_answered.wait(), 10)
    world.fake.set_operator(A, "OtherNet")  # PropertyChanged(Name) while both answers are on their way
    changed.set()
    # Both reads over, not merely Ready: the hands-free link may be up before they are, and a
    # GetPhones answered then saw neither the snapshot nor the change (CI once: Operator '').
    await asyncio.wait_for(netreg_read.wait(), 10)
    await world.wait("PhoneChanged", lambda b: b[0] == A and b[1]["Ready"], after=mark)
    (phones,) = await world.api("GetPhones")
    assert [p["Operator"] for p in phones if p["Address"] == A] == ["OtherNet"]
