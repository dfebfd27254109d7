"""A private ``dbus-daemon`` for the simulator, the tests, the benchmarks and the demo.

Never touches the machine's own buses: each instance has its own config file and socket in a
temporary directory and is stopped (and its directory removed) by :meth:`PrivateBus.stop`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

# The policy is deliberately open: on a developer's machine every process on the private bus is
# the developer's own.  The daemon's own caller authorization (daemon/api/auth.py) is still
# enforced, so access-denied paths are testable here.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>{kind}</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">134217728</limit>
  <limit name="reply_timeout">300000</limit>
</busconfig>
"""

DBUS_DAEMON = "dbus-daemon"
START_DEADLINE_S = 10.0


class BusStartError(RuntimeError):
    """dbus-daemon is missing or did not come up."""


class PrivateBus:
    """One private bus: ``address`` is what clients pass to ``MessageBus(bus_address=...)``."""

    def __init__(self, kind: str = "session", directory: Path | None = None) -> None:
        self.kind = kind
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix=f"dashbridge-{kind}-bus-"))
        self.socket_path = self.directory / f"{kind}_bus_socket"
        self.address = f"unix:path={self.socket_path}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateBus:
        # Other local users may connect (the dbus policy still applies): tests of caller
        # authorization run a client as another uid.
        self.directory.chmod(0o755)
        exe = shutil.which(DBUS_DAEMON)
        if exe is None:
            raise BusStartError("dbus-daemon is not installed (Debian package: dbus-daemon)")
        conf = self.directory / f"{self.kind}.conf"
        conf.write_text(_CONFIG.format(kind=self.kind, socket=self.socket_path))
        # --print-address tells us the bus is listening: no polling, no sleeps.
        self._proc = subprocess.Popen(
            [exe, f"--config-file={conf}", "--nofork", "--nosyslog", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=START_DEADLINE_S)
        sel.close()
        line = self._proc.stdout.readline() if ready else b""
        if not line.strip():
            self.stop()
            raise BusStartError(f"dbus-daemon ({self.kind}) did not start within {START_DEADLINE_S}s")
        return self

    async def astart(self) -> PrivateBus:
        return await asyncio.to_thread(self.start)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateBus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
