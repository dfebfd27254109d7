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

# A system bus as a head unit has it: the default policy of dbus-daemon's own system.conf (Debian's
# dbus 1.14: calls denied unless a service's policy file punches a hole, signals and replies
# allowed, everything receivable), then the policy files given — e.g. our shipped
# systemd/org.dashbridge.conf — included as system.d files are.  Root stands in for the foreign
# daemons (bluetoothd, ofonod, obexd), whose own policy files let root own their names and be
# called; the simulator's fakes and the daemon under test run as root.
_SYSTEM_LIKE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>{kind}</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
    <allow own="*"/>
    <allow send_destination="*"/>
  </policy>
{includes}
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

    def __init__(self, kind: str = "session", directory: Path | None = None,
                 policy_files: tuple[Path, ...] | None = None) -> None:
        """``policy_files``: None for the open developer's policy; a tuple (possibly empty) for a
        system-bus-like policy that includes those files (see ``_SYSTEM_LIKE``)."""
        self.kind = kind
        self.policy_files = policy_files
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
        if self.policy_files is None:
            conf.write_text(_CONFIG.format(kind=self.kind, socket=self.socket_path))
        else:
            includes = "\n".join(f"  <include>{Path(f).resolve()}</include>" for f in self.policy_files)
            conf.write_text(_SYSTEM_LIKE.format(kind=self.kind, socket=self.socket_path, includes=includes))
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
