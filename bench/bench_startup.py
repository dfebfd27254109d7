"""Start-up, idle cost and the signal burst (issue 2).

* ``startup_ready_s``: exec of ``dashbridged`` to ``READY=1`` on a private bus, median of 5;
  floor ``startup_floor_s``: ``python -c "import dbus_fast.aio"`` on the same machine, median of 5.
* ``idle_cpu_s_per_min``: CPU seconds (user+sys) an idle daemon uses over 60 s.
* ``rss_idle_mib``: its resident memory when idle.
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

from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

IDLE_WINDOW_S = float(os.environ.get("DASHBRIDGE_BENCH_IDLE_S", "60"))


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
    for _ in range(5):
        d = DaemonProcess(system.address, session.address)
        t0 = time.monotonic()
        d.start(wait_ready=False)
        d.wait_ready(30)
        times.append(time.monotonic() - t0)
        d.cleanup()
    return times


def _floor() -> list[float]:
    times = []
    for _ in range(5):
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
        lost, slow, fast = _burst(system)
        out["burst_10k_lost"] = lost
        out["burst_10k_s"] = slow
        out["burst_10k_floor_s"] = fast
    return out
