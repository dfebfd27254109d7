"""A real foreign daemon (bluetoothd, ofonod) run by a test tier: its process, its log file, and
stopping it by a signal within a deadline (then SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

STOP_DEADLINE_S = 5.0


class RealProcess:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: Any = None

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process and wait for it (SIGKILL after the deadline); its exit status."""
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    rc = await asyncio.wait_for(proc.wait(), STOP_DEADLINE_S)
                except TimeoutError:
                    proc.kill()
                    rc = await proc.wait()
            else:
                rc = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-15000:]
        except OSError:
            return ""
