"""Start-up, idle cost and the signal burst (issue 2).

* ``startup_ready_s``: exec of ``dashbridged`` to ``READY=1`` on a private bus, median of 5;
  floor ``startup_floor_s``: ``python -c "import dbus_fast.aio"`` on the same machine, median of 5.
* ``idle_cpu_s_per_min``: CPU seconds (user+sys) an idle daemon uses over 60 s, empty config, no
  fakes on the buses (nothing to talk to).
* ``idle_cpu_full_s_per_min``: the same with every component running: the simulator world
  (``dashbridge.simulator.world.World``) with the fake BlueZ, oFono and obexd, a bonded phone
  connected (5,000 contacts synced), the cloud enabled and online against the fake backend, and
  the systemd watchdog on (``WATCHDOG_USEC``, 30 s as in systemd/dashbridged.service), log level
  info.  The window starts once the phone's contacts are synced.
* ``rss_idle_mib`` / ``rss_idle_full_mib``: resident memory at the end of each idle window.
* ``phone_usable_s``: exec of ``dashbridged`` (fresh state directory, the phone already bonded in
  BlueZ) to ``Calls1.PhoneChanged`` with ``Ready`` = true for it (the hands-free link is up: calls
  can be made and received), median of ``USABLE_RUNS``.  Floor ``phone_usable_floor_s``:
  ``startup_floor_s`` (Python + dbus-fast import, same run) plus the fake BlueZ's own set-up delays
  on that path, as configured in this run (``BluezTimings`` defaults: adapter 10 ms, ACL set-up
  50 ms, profile connection 20 ms; oFono's SLC delay 0): no daemon can be faster on this fake.
* ``contacts_usable_s``: exec to caller ID available for a 5,000-contact phone
  (``Contacts1.SyncStateChanged`` ``synced``; the caller-ID index is rebuilt before that signal),
  same runs.  Floor ``contacts_usable_floor_s``: ``phone_usable_floor_s`` (the phonebook can only
  be pulled once the phone is connected); ``contacts_after_phone_s`` is the difference between
  the two figures (PBAP session, transfer from the fake obexd, parse, store).
* ``burst_10k_lost`` / ``burst_10k_s``: 10,000 ``CallChanged``-shaped signals sent with a raw
  ``bus.send`` (the daemon's hot path) to a client that is not reading, the bus daemon held while
  they are sent (so the socket fills: without the writer fix the connection drops and all are
  lost): signals lost (must be 0) and seconds until the client has them all; floor
  ``burst_10k_floor_s`` is the same signals sent to a client that reads at full speed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

IDLE_WINDOW_S = float(os.environ.get("DASHBRIDGE_BENCH_IDLE_S", "60"))
STARTUP_RUNS = 5
USABLE_RUNS = int(os.environ.get("DASHBRIDGE_BENCH_USABLE_RUNS", "3"))
PHONE = "AA:BB:CC:DD:18:01"
CONTACTS = 5000
WATCHDOG_USEC = 30_000_000  # systemd/dashbridged.service: WatchdogSec=30s
# The fake BlueZ at its realistic (default) timings, not the tests' fast ones.
BLUEZ = {"connect_delay": 0.05, "sdp_delay": 0.05, "profile_delay": 0.02, "adapter_delay": 0.01}
FIGURES: dict[str, dict[str, Any]] = {
    "startup_ready_s": {"floor": "startup_floor_s", "samples": STARTUP_RUNS,
                        "what": "exec -> READY=1, empty config, median"},
    "startup_floor_s": {"samples": STARTUP_RUNS, "what": "python -c 'import dbus_fast.aio', median"},
    "idle_cpu_s_per_min": {"samples": 1, "what": f"CPU s per minute idle, empty config ({IDLE_WINDOW_S:g} s window)"},
    "idle_cpu_full_s_per_min": {"floor": "idle_cpu_s_per_min", "samples": 1,
                                "what": f"CPU s per minute idle, every component running ({IDLE_WINDOW_S:g} s window)"},
    "rss_idle_mib": {"samples": 1, "what": "RSS idle, empty config"},
    "rss_idle_full_mib": {"floor": "rss_idle_mib", "samples": 1, "what": "RSS idle, every component running"},
    "phone_usable_s": {"floor": "phone_usable_floor_s", "samples": USABLE_RUNS,
                       "what": "exec -> bonded phone connected, calls possible (PhoneChanged Ready), median"},
    "phone_usable_floor_s": {"samples": STARTUP_RUNS, "what": "import floor + the fake BlueZ's own delays"},
    "contacts_usable_s": {"floor": "contacts_usable_floor_s", "samples": USABLE_RUNS,
                          "what": "exec -> caller ID for a 5,000-contact phone (synced), median"},
    "contacts_usable_floor_s": {"samples": STARTUP_RUNS, "what": "= phone_usable_floor_s"},
    "contacts_after_phone_s": {"samples": USABLE_RUNS, "what": "contacts_usable - phone_usable, median"},
    "burst_10k_lost": {"samples": 1, "what": "signals lost of 10,000 to a client not reading (must be 0)"},
    "burst_10k_s": {"floor": "burst_10k_floor_s", "samples": 1, "what": "10,000 signals to a stalled client"},
    "burst_10k_floor_s": {"samples": 1, "what": "10,000 signals to a client reading at full speed"},
}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _startup(system: PrivateBus, session: PrivateBus) -> list[float]:
    times = []
    for _ in range(STARTUP_RUNS):
        d = DaemonProcess(system.address, session.address)
        t0 = time.monotonic()
        d.start(wait_ready=False)
        d.wait_ready(30)
        times.append(time.monotonic() - t0)
        d.cleanup()
    return times


def _floor() -> list[float]:
    times = []
    for _ in range(STARTUP_RUNS):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import dbus_fast.aio"], check=True)
        times.append(time.monotonic() - t0)
    return times


def _burst(system: PrivateBus) -> tuple[int, float, float]:
    """The burst as the daemon's hot path sends it (dashbridge.simulator.burst), the dashboard not
    reading and the bus held while it is sent; floor: the same signals to a client reading at
    full speed on a bus that runs.  Returns (signals lost, seconds, floor seconds)."""
    from dashbridge.daemon.dbus import writerfix
    from dashbridge.simulator.burst import N, burst

    writerfix.apply()
    connected, got, slow = asyncio.run(burst(system.address, bus_pid=system.pid))
    fast_connected, fast_got, fast = asyncio.run(burst(system.address, paused_reader=False))
    assert fast_connected and len(fast_got) == N
    return (N - len(got)) if connected else N, slow, fast


async def _world(out: dict[str, float]) -> None:
    """The full world: usable times (fresh state each run), then idle with everything running."""
    import tempfile

    from dashbridge.simulator.phone import VirtualPhone
    from dashbridge.simulator.world import TEST_CLOCK_ENV, World, WorldSpec

    phone = VirtualPhone(PHONE, name="Bench phone", bonded=True, generated_contacts=CONTACTS, pbap_photo_every=10,
                         pbap_history=20)
    spec = WorldSpec(phones=[phone], daemon=False, bluez=dict(BLUEZ), config={"log_level": "info"},
                     backend={"state": "online", "auto_approve": True}, navigation={"running": True})
    phone_s: list[float] = []
    contacts_s: list[float] = []
    async with World(spec) as w:
        dash = w.dashboard
        assert dash is not None and w.system is not None and w.session is not None
        if "backend" not in w.fakes:
            raise RuntimeError(f"no fake backend in the world: {w.missing}")
        last: DaemonProcess | None = None
        try:
            for i in range(USABLE_RUNS + 1):  # the last run stays up for the idle window
                if last is not None:
                    await asyncio.to_thread(last.cleanup)
                state = Path(tempfile.mkdtemp(prefix="bench-usable-"))
                d = DaemonProcess(w.system.address, w.session.address, config=w.config, state_dir=state,
                                  env={TEST_CLOCK_ENV: "1"}, watchdog_usec=WATCHDOG_USEC)
                last = d
                mark = dash.mark
                t0 = time.monotonic()
                d.start(wait_ready=False)
                ready = await dash.wait_for(lambda e: e.member == "PhoneChanged" and e.args[0] == PHONE
                                            and bool(e.args[1].get("Ready")), timeout=60, since=mark)
                synced = await dash.wait_for(lambda e: e.member == "SyncStateChanged" and e.args[0] == PHONE
                                             and e.args[1].get("State") == "synced", timeout=120, since=mark)
                if int(synced.args[1].get("Contacts", 0)) != CONTACTS:
                    raise RuntimeError(f"synced {synced.args[1].get('Contacts')} contacts, expected {CONTACTS}")
                if i < USABLE_RUNS:
                    phone_s.append(ready.at - t0)
                    contacts_s.append(synced.at - t0)
            assert last is not None
            for _ in range(300):  # the cloud must be on and online for the idle window to mean anything
                if await dash.get("Cloud1.BackendState") == "online":
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the cloud is not online: {await dash.get_all('Cloud1')}")
            await asyncio.sleep(2.0)  # let the post-sync work settle
            c0 = _cpu_s(last.pid)
            await asyncio.sleep(IDLE_WINDOW_S)
            out["idle_cpu_full_s_per_min"] = (_cpu_s(last.pid) - c0) * 60.0 / IDLE_WINDOW_S
            out["rss_idle_full_mib"] = _rss_mib(last.pid)
        except BaseException:
            if last is not None:
                print(last.log()[-3000:])
            raise
        finally:
            if last is not None:
                await asyncio.to_thread(last.cleanup)
    out["phone_usable_s"] = statistics.median(phone_s)
    out["contacts_usable_s"] = statistics.median(contacts_s)
    out["contacts_after_phone_s"] = statistics.median(c - p for c, p in zip(contacts_s, phone_s, strict=True))


def run() -> dict[str, float]:
    out: dict[str, float] = {}
    # Byte-compile first, as a package install does: start-up is measured as deployed.
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "daemon", "profiles"], cwd=root, check=True,
                   stdout=subprocess.DEVNULL)
    with PrivateBus("system") as system, PrivateBus("session") as session:
        out["startup_ready_s"] = statistics.median(_startup(system, session))
        out["startup_floor_s"] = statistics.median(_floor())
        out["startup_ratio_to_floor"] = out["startup_ready_s"] / out["startup_floor_s"]
        d = DaemonProcess(system.address, session.address).start()
        try:
            d.wait_ready(30)
            c0 = _cpu_s(d.pid)
            time.sleep(IDLE_WINDOW_S)  # the measurement window itself
            out["idle_cpu_s_per_min"] = (_cpu_s(d.pid) - c0) * 60.0 / IDLE_WINDOW_S
            out["rss_idle_mib"] = _rss_mib(d.pid)
        finally:
            d.cleanup()
        asyncio.run(_world(out))
        out["phone_usable_floor_s"] = out["startup_floor_s"] + sum(BLUEZ[k] for k in ("adapter_delay", "connect_delay",
                                                                                      "profile_delay"))
        out["contacts_usable_floor_s"] = out["phone_usable_floor_s"]
        lost, slow, fast = _burst(system)
        out["burst_10k_lost"] = lost
        out["burst_10k_s"] = slow
        out["burst_10k_floor_s"] = fast
    return out
