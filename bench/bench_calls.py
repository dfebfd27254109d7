"""Incoming-call relay latency (issue 4).

* ``call_relay_p50_ms`` / ``call_relay_p99_ms``: from the fake oFono emitting ``CallAdded`` to the
  dashboard client receiving dashbridged's ``org.dashbridge.Calls1.CallAdded``, over a private
  bus, 1,000 calls (after 50 warm-up calls).  Two hops: oFono -> dbus-daemon -> dashbridged ->
  dbus-daemon -> client, with dashbridged doing all its work (call table, caller ID, signal).
* ``call_relay_floor_p50_ms`` / ``call_relay_floor_p99_ms``: the same two hops through a bare
  dbus-fast process that only re-emits the signal, in the same run, same fake, same client, same
  bus (dashbridged stays on it).  ``call_relay_ratio_p50`` = daemon p50 / floor p50.
  Goal: ratio within 1.5, daemon p99 under 5 ms.

To expose both to the same load of a shared machine, calls alternate one by one: daemon calls
ring phone A on the fake ``org.ofono`` (which dashbridged follows), floor calls ring phone B on a
second fake oFono under another bus name, which only the bare relay listens to.  Both relays stay
on the bus throughout, so the bus daemon has the same match rules to check for both, and neither
process is woken by the other's calls.

The fake oFono and the client share the bench process's loop; the timestamp is taken just before
the fake sends ``CallAdded`` and when the client's message handler sees the relayed signal
(CLOCK_MONOTONIC, comparable across processes).  Each call is hung up and (for the daemon) its
removal seen before the next one rings, so calls do not overlap.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from dashbridge.daemon.dbus import names
from dashbridge.daemon.dbus.call import call
from dashbridge.simulator.bluez import BluezTimings, FakeBluez
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess
from dashbridge.simulator.ofono import FakeOfono, modem_path
from dashbridge.simulator.phone import VirtualPhone

N = int(os.environ.get("DASHBRIDGE_BENCH_CALLS", "1000"))
WARMUP = 50
FIGURES: dict[str, dict[str, object]] = {
    "call_relay_p50_ms": {"floor": "call_relay_floor_p50_ms", "samples": N,
                          "what": "oFono CallAdded -> client, through the daemon"},
    "call_relay_p99_ms": {"floor": "call_relay_floor_p99_ms", "samples": N, "what": "the same, p99"},
    "call_relay_floor_p50_ms": {"samples": N, "what": "the same two hops through a bare dbus-fast relay"},
    "call_relay_floor_p99_ms": {"samples": N, "what": "the floor, p99"},
    "call_relay_ratio_p50": {"samples": N, "what": "daemon p50 / floor p50 (goal <= 1.5)"},
}
A = "AA:00:00:00:00:01"
B = "BB:00:00:00:00:02"
FLOOR_NAME = "org.dashbridge.Bench.Ofono"

# The floor: a bare dbus-fast process that re-emits oFono's CallAdded as its own signal.
RELAY = """
import asyncio, sys
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

RULE = (f"type='signal',sender='{sys.argv[2]}',interface='org.ofono.VoiceCallManager',member='CallAdded'")

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    def on(msg):
        if msg.message_type == MessageType.SIGNAL and msg.member == "CallAdded":
            path, props = msg.body
            bus.send(Message.new_signal("/org/dashbridge", "org.dashbridge.Calls1", "CallAdded", "sa{sv}",
                                        [path, props]))
    bus.add_message_handler(on)
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[RULE]))
    print(bus.unique_name, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Client:
    """The dashboard: notes when each relayed CallAdded / CallRemoved arrives."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.sender: str | None = None
        self.added: asyncio.Future[float] | None = None
        self.removed: asyncio.Future[None] | None = None
        bus.add_message_handler(self._on)

    def _on(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.interface != names.DASHBRIDGE_CALLS_IFACE:
            return
        if self.sender is not None and msg.sender != self.sender:
            return
        if msg.member == "CallAdded" and self.added is not None and not self.added.done():
            self.added.set_result(time.monotonic())
        elif msg.member == "CallRemoved" and self.removed is not None and not self.removed.done():
            self.removed.set_result(None)

    async def match(self, sender: str) -> None:
        await call(self.bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "AddMatch", "s",
                   [f"type='signal',sender='{sender}',interface='{names.DASHBRIDGE_CALLS_IFACE}'"])


async def _measure(fake: FakeOfono, client: Client, address: str, count: int, *, sender: str | None,
                   wait_removed: bool, serial: list[int]) -> list[float]:
    loop = asyncio.get_running_loop()
    client.sender = sender
    out: list[float] = []
    for _ in range(count):
        i = serial[0] = serial[0] + 1
        client.added = loop.create_future()
        client.removed = loop.create_future() if wait_removed else None
        t0 = time.monotonic()
        fake.incoming_call(address, f"+4477009{i % 100000:05d}")  # sends CallAdded
        async with asyncio.timeout(5):
            t1 = await client.added
        fake.remote_hangup(address)
        if client.removed is not None:
            async with asyncio.timeout(5):
                await client.removed
        out.append((t1 - t0) * 1000.0)
    return out


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


async def _run(system: PrivateBus, session: PrivateBus, workdir: Path) -> dict[str, float]:
    phone_a = VirtualPhone(A, name="Bench phone")
    phone_b = VirtualPhone(B, name="Floor phone")
    bluez = await FakeBluez.start(system.address, [], timings=BluezTimings.fast())
    bluez.add_phone(phone_a, paired=True, connected=True)
    fake = await FakeOfono.start(system.address, [phone_a])
    floor_fake = await FakeOfono.start(system.address, [phone_b], name=FLOOR_NAME)
    bus = await MessageBus(bus_address=system.address).connect()
    client = Client(bus)
    daemon = DaemonProcess(system.address, session.address, state_dir=workdir / "state")
    relay: asyncio.subprocess.Process | None = None
    try:
        await client.match(names.DASHBRIDGE_NAME)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_ready(msg: Message) -> None:
            if msg.member == "PhoneChanged" and msg.body[1]["Ready"].value and not ready.done():
                ready.set_result(None)

        bus.add_message_handler(on_ready)
        daemon.start(wait_ready=False)
        await daemon.await_ready(30)
        async with asyncio.timeout(30):
            await ready
        bus.remove_message_handler(on_ready)
        # Phone B's hands-free link on the floor's fake oFono is powered by us.
        await call(bus, FLOOR_NAME, modem_path(B), names.OFONO_MODEM_IFACE, "SetProperty", "sv",
                   ["Powered", Variant("b", True)], timeout=10)
        floor_modem = floor_fake.modem(B)
        assert floor_modem is not None
        await floor_fake.wait_until(lambda: floor_modem.up)
        relay = await asyncio.create_subprocess_exec(sys.executable, "-c", RELAY, system.address, FLOOR_NAME,
                                                     stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        assert relay.stdout is not None
        relay_name = (await asyncio.wait_for(relay.stdout.readline(), 30)).decode().strip()
        await client.match(relay_name)
        daemon_name = await _owner(bus, names.DASHBRIDGE_NAME)

        serial = [0]
        lat: list[float] = []
        floor: list[float] = []
        for i in range(WARMUP + N):
            d = await _measure(fake, client, A, 1, sender=daemon_name, wait_removed=True, serial=serial)
            f = await _measure(floor_fake, client, B, 1, sender=relay_name, wait_removed=False, serial=serial)
            if i >= WARMUP:
                lat += d
                floor += f
        return {
            "call_relay_p50_ms": statistics.median(lat),
            "call_relay_p99_ms": _p99(lat),
            "call_relay_floor_p50_ms": statistics.median(floor),
            "call_relay_floor_p99_ms": _p99(floor),
            "call_relay_ratio_p50": statistics.median(lat) / statistics.median(floor),
        }
    finally:
        if relay is not None:
            if relay.returncode is None:
                relay.kill()
            await relay.wait()
        daemon.cleanup()
        bus.disconnect()
        await fake.stop()
        await floor_fake.stop()
        await bluez.stop()


async def _owner(bus: MessageBus, name: str) -> str:
    (owner,) = await call(bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_IFACE, "GetNameOwner", "s", [name])
    return str(owner)


def run() -> dict[str, float]:
    with PrivateBus("system") as system, PrivateBus("session") as session, \
            tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        return asyncio.run(_run(system, session, Path(tmp)))


def main(argv: list[str] | None = None) -> int:
    for k, v in run().items():
        print(f"{k:<28} {v:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
