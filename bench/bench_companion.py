"""The phone as a courier over BLE (issue 17, docs/ble-companion.md).

* ``companion_notify_to_offer_p50_ms`` / ``_p99_ms``: the driver picks a destination in the
  companion app on a bonded, connected phone -> the app notifies the new document header -> the
  real ``dashbridged`` (its ``bleak`` GATT client, in its own process) reads the destinations
  document through the fake BlueZ, stores the destination as an offer and emits
  ``Navigation1.IntentOffered`` -> the dashboard client has the signal.  Timed from just before the
  app notifies to the dashboard's receipt (CLOCK_MONOTONIC, comparable across processes).
* Floor ``companion_floor_bleak_read_p50_ms`` / ``_p99_ms``: a bare ``bleak`` client in the bench
  process, subscribed to the same characteristic of a second phone's app on the same fake BlueZ and
  bus, reading the document's chunk when notified: the least any car must do (notification in,
  one GATT read).  Daemon and floor samples alternate one by one, so both see the same load.
  ``companion_ratio_p50`` = daemon p50 / floor p50.

The floor phone is not bonded (its app does not insist on a bond), so the daemon ignores it, as
it must; the daemon's phone's app stays as the car left it (each destination acknowledged before
the next is picked, so every read is of a one-destination document).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from dashbridge.simulator.phone import VirtualPhone

N = int(os.environ.get("DASHBRIDGE_BENCH_COMPANION", "100"))
WARMUP = 5
CAR_PHONE = "AA:BB:CC:DD:EE:01"
FLOOR_PHONE = "AA:BB:CC:DD:EE:02"
FIGURES: dict[str, dict[str, object]] = {
    "companion_notify_to_offer_p50_ms": {"floor": "companion_floor_bleak_read_p50_ms", "samples": N,
                                         "what": "app notifies a destination -> IntentOffered (daemon + bleak)"},
    "companion_notify_to_offer_p99_ms": {"floor": "companion_floor_bleak_read_p99_ms", "samples": N,
                                         "what": "the same, p99"},
    "companion_floor_bleak_read_p50_ms": {"samples": N,
                                          "what": "bare bleak in the bench: notification in, one GATT read done"},
    "companion_floor_bleak_read_p99_ms": {"samples": N, "what": "the floor, p99"},
    "companion_ratio_p50": {"samples": N, "what": "daemon p50 / floor p50"},
}


def _p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]  # as bench_calls


async def _measure() -> dict[str, float]:
    from bleak import BleakClient
    from bleak.backends.device import BLEDevice

    from dashbridge.daemon.companion.component import drop_gatt_session
    from dashbridge.simulator.companion import DESTINATIONS_UUID, CompanionApp
    from dashbridge.simulator.world import World, WorldSpec

    car_app = CompanionApp()
    floor_app = CompanionApp()
    floor_app.requires_bond = False  # the bench's bare client is no bonded car: let it read
    phones = [VirtualPhone(CAR_PHONE, name="Bench phone", bonded=True, companion=car_app),
              VirtualPhone(FLOOR_PHONE, name="Floor phone", bonded=False, companion=floor_app)]
    w = World(WorldSpec(phones=phones, config={"log_level": "warning"}))
    await w.start()
    client: Any = None
    try:
        dash = w.dashboard
        assert dash is not None and w.system is not None
        await dash.wait_for(lambda e: e.short == "Phones1.PhoneConnected", 30.0)
        assert await w.le_connect(FLOOR_PHONE)
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = w.system.address  # bleak opens "the system bus"
        path = f"/org/bluez/hci0/dev_{FLOOR_PHONE.replace(':', '_')}"
        client = BleakClient(BLEDevice(FLOOR_PHONE, "Floor phone", {"path": path, "props": {}}), timeout=10.0)
        await client.connect()
        char = client.services.get_characteristic(DESTINATIONS_UUID)
        notified: asyncio.Queue[float] = asyncio.Queue()
        await client.start_notify(char, lambda _c, data: notified.put_nowait(time.monotonic())
                                  if len(data) == 9 else None)

        async def car_sample(i: int) -> float:
            mark = dash.mark
            t0 = time.monotonic()
            w.companion_send_destination(CAR_PHONE, f"Bench {i}", lat=51.0 + i / 1000, lon=-0.5)
            ev = await dash.wait_for(lambda e: e.short == "Navigation1.IntentOffered", 10.0, mark)
            deadline = time.monotonic() + 10.0
            while car_app.destinations:  # acknowledged before the next one (not timed)
                assert time.monotonic() < deadline, "not acknowledged"
                await asyncio.sleep(0.001)
            return ev.at - t0

        async def floor_sample(i: int) -> float:
            while not notified.empty():
                notified.get_nowait()
            floor_app.destinations.clear()
            t0 = time.monotonic()
            w.companion_send_destination(FLOOR_PHONE, f"Floor {i}", lat=51.0 + i / 1000, lon=-0.5)
            await asyncio.wait_for(notified.get(), 10.0)
            await client.read_gatt_char(char)
            return time.monotonic() - t0

        for i in range(WARMUP):
            await car_sample(-i - 1)
            await floor_sample(-i - 1)
        car: list[float] = []
        floor: list[float] = []
        for i in range(N):
            car.append(await car_sample(i))
            floor.append(await floor_sample(i))
    finally:
        if client is not None:
            drop_gatt_session(client)  # as the daemon lets go (no Device1.Disconnect)
        await w.stop()
    ms = 1000.0
    out = {
        "companion_notify_to_offer_p50_ms": statistics.median(car) * ms,
        "companion_notify_to_offer_p99_ms": _p99(car) * ms,
        "companion_floor_bleak_read_p50_ms": statistics.median(floor) * ms,
        "companion_floor_bleak_read_p99_ms": _p99(floor) * ms,
    }
    out["companion_ratio_p50"] = out["companion_notify_to_offer_p50_ms"] / out["companion_floor_bleak_read_p50_ms"]
    return out


def run() -> dict[str, float]:
    return asyncio.run(_measure())
