"""Supervision of long-lived components: restart with capped, jittered backoff; report health.

A component is an ``async def run()`` that only returns when it is done for good.  If it raises,
the supervisor marks it ``down`` with the reason, waits (the component's :class:`RestartPolicy`:
by default full jitter, 0.5 s doubling, capped at 30 s — :mod:`daemon.backoff`) and starts it
again.  Time comes from an injected :class:`~daemon.clock.Clock` (monotonic by default).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .backoff import Attempts, Backoff
from .clock import Clock, MonotonicClock
from .health import Health

log = logging.getLogger(__name__)

# Restart ladder: first retry after up to 0.5 s, doubling, never more than 30 s apart; a component
# that ran for RESET_AFTER_S without crashing starts the ladder again from the bottom.
RESTART_BASE_S = 0.5
RESTART_CAP_S = 30.0
RESET_AFTER_S = 60.0
# A component that crashed this many times in a row is unhealthy: the watchdog stops petting.
UNHEALTHY_AFTER_CRASHES = 5
RESTART_BACKOFF = Backoff(RESTART_BASE_S, RESTART_CAP_S, "full")


@dataclass(frozen=True)
class RestartPolicy:
    """How a component is restarted.  ``critical=False``: its crash loop is reported in health but
    never withholds the systemd watchdog (a component that must not disturb the rest: the cloud)."""

    backoff: Backoff = RESTART_BACKOFF
    reset_after: float = RESET_AFTER_S
    critical: bool = True


DEFAULT_RESTART = RestartPolicy()


def restart_policy(component: object) -> RestartPolicy:
    """A component's ``restart_policy`` attribute, or the default ladder."""
    policy = getattr(component, "restart_policy", None)
    return policy if isinstance(policy, RestartPolicy) else DEFAULT_RESTART


@dataclass
class _Entry:
    name: str
    attempts: Attempts
    critical: bool = True
    running: bool = False
    crashes: int = 0


class Supervisor:
    def __init__(self, health: Health, *, rng: random.Random | None = None, clock: Clock | None = None) -> None:
        self.health = health
        self._entries: dict[str, _Entry] = {}
        self._rng = rng or random.Random()
        self._clock: Clock = clock or MonotonicClock()

    def healthy(self) -> bool:
        return all(e.crashes < UNHEALTHY_AFTER_CRASHES for e in self._entries.values() if e.critical)

    async def supervise(self, name: str, run: Callable[[], Awaitable[None]],
                        policy: RestartPolicy = DEFAULT_RESTART) -> None:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry(
                name, Attempts(policy.backoff, self._clock, self._rng, reset_after=policy.reset_after),
                critical=policy.critical)
        while True:
            started = self._clock.now()
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
                delay = entry.attempts.failure(started)  # resets first after a run of reset_after
                entry.crashes = entry.attempts.count
                reason = f"{type(exc).__name__}: {exc}"[:200]
                if delay is None:  # a bounded policy gave up: the component stays down, the rest runs
                    self.health.set(name, "down", f"gave up after {entry.crashes} crashes ({reason})")
                    log.error("component %s failed (%s); not restarted", name, reason)
                    return
                self.health.set(name, "down", f"restarting ({reason})")
                log.error("component %s failed (%s); restart %d in %.2fs", name, reason, entry.crashes, delay,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                await self._clock.sleep(delay)
