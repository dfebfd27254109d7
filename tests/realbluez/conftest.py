"""Real-bluetoothd tier: the real dashbridged against Debian's bluetoothd 5.66, whose kernel is the
user-space management server (``mgmtserver.py``) behind the LD_PRELOAD shim (``shim.c``).

A failing test prints bluetoothd's and dashbridged's logs and the management commands bluetoothd
sent.  Every test ends by checking the daemon's log holds no traceback."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

from .mgmtserver import MgmtServer
from .support import Bluetoothd, BusMonitor, bluetoothd_path, build_shim

# Short timers (as the bus tier's pairing tests) so nothing waits for real-world timeouts.
DAEMON_BT: dict[str, Any] = {
    "alias": "Dashbridge Car",
    "prompt_timeout": "3s",
    "connect_budget": "3s",
    "pair_timeout": "8s",
    "pairing_window": "60s",
    "bluez_call_timeout": "3s",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def shim() -> Path:
    """Fails (never skips) when bluetoothd or a C compiler is missing."""
    bluetoothd_path()
    return build_shim()


@dataclass
class Rig:
    mgmt: MgmtServer
    bluetoothd: Bluetoothd
    monitor: BusMonitor
    daemon: DaemonProcess
    client: MessageBus
    signals: Any  # tests.conftest.SignalCollector

    def diagnostics(self) -> str:
        cmds = ", ".join(c.name for c in self.mgmt.commands[-80:])
        return (f"--- bluetoothd ---\n{self.bluetoothd.log()[-8000:]}\n--- dashbridged ---\n"
                f"{self.daemon.log()[-12000:]}\n--- mgmt commands ---\n{cmds}")

    def start_daemon(self) -> None:
        self.daemon.start(wait_ready=False)


@pytest.fixture
async def rig(request: pytest.FixtureRequest, shim: Path, system_bus: PrivateBus,
              daemon_factory: Callable[..., DaemonProcess], client: MessageBus, signals: Any
              ) -> AsyncIterator[Rig]:
    marker = request.node.get_closest_marker("daemon_bt")
    bt = {**DAEMON_BT, **(marker.kwargs if marker else {})}
    # A short directory: a Unix socket path is limited to 107 bytes.
    work = Path(tempfile.mkdtemp(prefix="dbrb-"))
    mgmt = await MgmtServer(work / "mgmt.sock").start()
    bluetoothd = Bluetoothd(system_bus.address, work, mgmt, client)
    monitor = await BusMonitor(system_bus.address).start()
    daemon = daemon_factory({"log_level": "debug", "bluetooth": bt}, start=False)
    rig = Rig(mgmt, bluetoothd, monitor, daemon, client, signals)
    try:
        await bluetoothd.start()
        daemon.start(wait_ready=False)
        await daemon.await_ready()
        yield rig
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(rig.diagnostics())
        text = daemon.log_path.read_text(errors="replace")
        assert "Traceback" not in text, f"dashbridged logged a traceback:\n{text[-12000:]}"
    except BaseException:
        print(rig.diagnostics())
        raise
    finally:
        daemon.stop()
        await bluetoothd.stop()
        monitor.stop()
        await mgmt.stop()
        shutil.rmtree(work, ignore_errors=True)
