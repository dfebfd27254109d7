"""Supervision of long-lived components: restart with capped, jittered backoff; report health.

A component is an ``async def run()`` that only returns when it is done for good.  If it raises,
the supervisor marks it ``down`` with the reason, waits (full jitter, capped) and starts it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .health import Health

log = logging.getLogger(__name__)

# Restart ladder: first retry after up to 0.5 s, doubling, never more than 30 s apart; a component
# that ran for RESET_AFTER_S without crashing starts the ladder again from the bottom.
RESTART_BASE_S = 0.5
RESTART_CAP_S = 30.0
RESET_AFTER_S = 60.0
# A component that crashed this many times in a row is unhealthy: the watchdog stops petting.
UNHEALTHY_AFTER_CRASHES = 5


@dataclass
class _Entry:
    name: str
    crashes: int = 0
    running: bool = False


class Supervisor:
    def __init__(self, health: Health, *, rng: random.Random | None = None) -> None:
        self.health = health
        self._entries: dict[str, _Entry] = {}
        self._rng = rng or random.Random()

    def healthy(self) -> bool:
        return all(e.crashes < UNHEALTHY_AFTER_CRASHES for e in self._entries.values())

    async def supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        entry = self._entries.setdefault(name, _Entry(name))
        while True:
            started = time.monotonic()
            entry.running = True
            try:
                await run()
                entry.running = False
                log.info("component %s finished", name)
                return
            except asyncio.CancelledError:
                entry.running = False
                raise
            except Exception as exc:
                entry.running = False
                if time.monotonic() - started > RESET_AFTER_S:
                    entry.crashes = 0
                entry.crashes += 1
                delay = self._rng.uniform(0, min(RESTART_CAP_S, RESTART_BASE_S * 2 ** (entry.crashes - 1)))
                reason = f"{type(exc).__name__}: {exc}"[:200]
                self.health.set(name, "down", f"restarting ({reason})")
                log.error("component %s failed (%s); restart %d in %.2fs", name, reason, entry.crashes, delay,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                await asyncio.sleep(delay)
