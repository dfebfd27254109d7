"""Daemon1.GetSnapshot through the real daemon on a real bus: it holds what a dashboard draws (the
paired phone, a call, sync states, health, cloud); its generation orders it against the daemon's
signals (their D-Bus serials); and the resynchronisation recipe of docs/dbus-api.md keeps a
dashboard's mirror exact across a daemon restart."""

from __future__ import annotations

import asyncio
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.bus import connect
from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.world import Event, World, WorldSpec

ADA = "AA:BB:CC:DD:15:01"
NUMBER = "+447700900123"


def _world() -> World:
    phone = VirtualPhone(ADA, name="Ada's phone", bonded=True, generated_contacts=5)
    return World(WorldSpec(phones=[phone], fakes=("bluez", "ofono", "obexd")))


def _connected(ev: Event) -> bool:
    return ev.member == "PhoneConnected" and ev.args[0] == ADA


async def _snapshot(bus: MessageBus) -> tuple[int, dict[str, dict[str, Any]], str]:
    reply = await bus.call(Message(destination=names.DASHBRIDGE_NAME, path=names.DASHBRIDGE_PATH,
                                   interface=names.DASHBRIDGE_DAEMON_IFACE, member="GetSnapshot"))
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
    generation, state = reply.body
    return generation, {k: unwrap(v) for k, v in unwrap(state).items()}, reply.sender or ""


class Mirror:
    """A dashboard following docs/dbus-api.md "Starting up and resynchronising" for Calls1."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.owner = ""
        self.generation = 0
        self.calls: dict[str, str] = {}  # call id -> state
        self.queue: list[Message] = []
        self.snapshots = 0
        self.dropped = 0
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # set whenever the mirror moved (no polling in the tests)

    async def until(self, pred: Any, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        self.bus.add_message_handler(self._on)
        for rule in (f"type='signal',sender='{names.DASHBRIDGE_NAME}'",
                     "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                     f"arg0='{names.DASHBRIDGE_NAME}'"):
            await call(self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s", [rule])
        await self.resync()

    async def resync(self) -> None:
        self._busy = True
        generation, state, owner = await _snapshot(self.bus)
        self.owner, self.generation, self.snapshots = owner, generation, self.snapshots + 1
        self.calls = {c["Id"]: c["State"] for c in state["Calls1"]["Calls"]}
        self._busy = False
        queued, self.queue = self.queue, []
        for msg in queued:
            self._apply(msg)
        self._changed.set()

    def _on(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.interface == names.DBUS_IFACE:
            if msg.body[0] == names.DASHBRIDGE_NAME and msg.body[2]:
                task = asyncio.get_running_loop().create_task(self.resync())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self._busy = True
            return
        if self._busy:
            self.queue.append(msg)
        else:
            self._apply(msg)

    def _apply(self, msg: Message) -> None:
        if msg.sender != self.owner or msg.serial < self.generation:
            self.dropped += 1
            return
        if msg.interface != names.DASHBRIDGE_CALLS_IFACE:
            return
        if msg.member in ("CallAdded", "CallChanged"):
            self.calls[msg.body[0]] = unwrap(msg.body[1]["State"])
        elif msg.member == "CallRemoved":
            self.calls.pop(msg.body[0], None)
        self._changed.set()


async def test_the_snapshot_holds_the_phone_the_call_and_the_rest() -> None:
    async with _world() as w:
        dash = w.dashboard
        assert dash is not None and w.system is not None
        await dash.wait_for(_connected, timeout=20)
        since = len(dash.events)
        w.fake("ofono").incoming_call(ADA, NUMBER)
        added = await dash.wait_for(lambda e: e.member == "CallAdded", timeout=10, since=since)
        bus = await connect(w.system.address, "system")
        try:
            generation, state, _ = await _snapshot(bus)
        finally:
            bus.disconnect()
        assert generation > 0
        assert set(state) >= {"Daemon1", "Phones1", "Calls1", "Contacts1", "Messages1", "Navigation1", "Cloud1"}
        phones = state["Phones1"]["Phones"]
        assert [(p["Address"], p["State"], p["Role"]) for p in phones] == [(ADA, "connected", "primary")]
        assert state["Phones1"]["Prompts"] == [] and state["Phones1"]["PairingWindow"] is False
        calls = state["Calls1"]["Calls"]
        assert [(c["Id"], c["State"]) for c in calls] == [(added.args[0], "incoming")]
        assert [p["Address"] for p in state["Calls1"]["Phones"]] == [ADA]
        assert ADA in [s["Phone"] for s in state["Contacts1"]["SyncStates"]]
        assert state["Daemon1"]["Health"]["api"][0] == "ok"
        assert "Features" in state["Cloud1"] and "LinkCode" not in state["Cloud1"]
        assert isinstance(state["Messages1"]["Unread"], dict) and isinstance(state["Messages1"]["Recent"], list)
        assert state["Navigation1"]["Pending"] == [] and state["Navigation1"]["PendingCount"] == 0
        # Through the caller gate, like every method: a dashboard caller (here: ourselves) is allowed.


async def test_the_generation_orders_snapshots_and_signals() -> None:
    async with _world() as w:
        dash = w.dashboard
        assert dash is not None and w.system is not None
        await dash.wait_for(_connected, timeout=20)
        bus = await connect(w.system.address, "system")
        seen: list[Message] = []
        added = asyncio.Event()

        def on(m: Message) -> None:
            if m.member == "CallAdded":
                seen.append(m)
                added.set()

        bus.add_message_handler(on)
        await call(bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{names.DASHBRIDGE_NAME}'"])
        try:
            g1, s1, _ = await _snapshot(bus)
            assert s1["Calls1"]["Calls"] == []
            w.fake("ofono").incoming_call(ADA, NUMBER)
            await asyncio.wait_for(added.wait(), 10)
            g2, s2, _ = await _snapshot(bus)
            g3, _, _ = await _snapshot(bus)
        finally:
            bus.disconnect()
        assert g1 < seen[0].serial < g2 < g3  # the signal is newer than the first snapshot, older than the second
        assert [c["Id"] for c in s2["Calls1"]["Calls"]] == [seen[0].body[0]]


async def test_the_documented_resync_recipe_survives_a_daemon_restart() -> None:
    async with _world() as w:
        dash = w.dashboard
        assert dash is not None and w.system is not None
        await dash.wait_for(_connected, timeout=20)
        bus = await connect(w.system.address, "system")
        mirror = Mirror(bus)
        try:
            w.fake("ofono").incoming_call(ADA, NUMBER)  # races the mirror's first snapshot on purpose
            await mirror.start()
            await mirror.until(lambda: len(mirror.calls) == 1)
            first_owner = mirror.owner
            await w.restart_daemon()
            await mirror.until(lambda: mirror.owner != first_owner and mirror.snapshots == 2)
            w.fake("ofono").remote_hangup(ADA)
            w.fake("ofono").incoming_call(ADA, "+447700900456")
            _, truth, _ = await _snapshot(bus)
            await mirror.until(lambda: mirror.calls == {c["Id"]: c["State"] for c in truth["Calls1"]["Calls"]}
                               and not mirror._busy)
            # Whatever the daemon sent before this reply has reached the mirror (one connection,
            # in order): the mirror must still equal the daemon's truth.
            (calls,) = await call(bus, names.DASHBRIDGE_NAME, names.DASHBRIDGE_PATH,
                                  names.DASHBRIDGE_CALLS_IFACE, "GetCalls")
            await mirror.until(lambda: not mirror._busy)
            assert mirror.calls == {unwrap(c["Id"]): unwrap(c["State"]) for c in calls}
            assert len(mirror.calls) == 1
        finally:
            bus.disconnect()

