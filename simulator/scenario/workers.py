"""Many scenario files: each in its own worker process (``dashbridge-sim run -j N``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .runner import OnFailure, ScenarioResult, run_file

WORKER_STOP_S = 30.0  # an interrupted worker's time to stop its world


async def _run_in_worker(path: str) -> ScenarioResult:
    """One scenario in a child process (isolation: its own fakes, buses and daemon)."""
    fd, out = tempfile.mkstemp(prefix="dashbridge-scenario-", suffix=".json")
    os.close(fd)
    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dashbridge.simulator", "run", "--worker", out, path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
        try:
            output, _ = await proc.communicate()
        except asyncio.CancelledError:
            # The run was interrupted (Ctrl-C): let the worker stop its world (SIGINT cancels its
            # scenario, whose clean-up stops the daemon, the fakes and the buses), then go.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.shield(asyncio.wait_for(proc.wait(), WORKER_STOP_S))
                except (TimeoutError, asyncio.CancelledError):
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            raise
        try:
            data = json.loads(await asyncio.to_thread(Path(out).read_text) or "null")
        except (OSError, ValueError):
            data = None
        if not data:
            return ScenarioResult(path, Path(path).stem, False, time.monotonic() - t0,
                                  error=f"the scenario worker died (exit {proc.returncode})",
                                  details=output.decode(errors="replace")[-4000:])
        return ScenarioResult.from_json(data)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)


async def run_many(paths: Sequence[str], jobs: int, on_result: Callable[[ScenarioResult], None] | None = None,
                   *, in_process: bool = False, on_failure: OnFailure | None = None) -> list[ScenarioResult]:
    """Each file in a worker process (``jobs`` at a time); ``in_process`` runs them here, one
    after the other when ``on_failure`` is given (``--keep-on-failure`` waits on this terminal)."""
    if on_failure is not None:
        in_process, jobs = True, 1
    sem = asyncio.Semaphore(max(1, jobs))
    results: list[ScenarioResult | None] = [None] * len(paths)

    async def one(i: int, path: str) -> None:
        async with sem:
            r = await (run_file(path, on_failure=on_failure) if in_process else _run_in_worker(path))
        results[i] = r
        if on_result:
            on_result(r)

    async with asyncio.TaskGroup() as tg:
        for i, path in enumerate(paths):
            tg.create_task(one(i, path))
    return [r for r in results if r is not None]
