"""Time, injectable (the stamina idea: a test mode, never patched sleeps).  One clock module for
the daemon: the cloud engine, the navigation relay and the supervisor wait through a :class:`Clock`.

Everything the cloud and the navigation relay schedule (retries, breaker cool-downs, the sync
schedule, lease and grace ends, intent expiry) is expressed as wall-clock instants (epoch seconds,
as stored in SQLite so they survive a restart) and waited for through a :class:`Clock`:

- :class:`RealClock` — ``time.time()``; sleeps are cut into chunks of at most 15 minutes so a
  wall-clock jump (a head unit that boots with a wrong RTC and is corrected by GPS/NTP) is noticed
  within that time.  Callers re-evaluate after every wake-up, so waking early is harmless.
- :class:`SimClock` — simulated time that only moves when the driver says so; ``run_until`` jumps
  straight to the next timer.  Used by unit tests and the 10,000-car fleet bench.
- :class:`OffsetClock` — real time plus an offset a test can advance (``dashbridged`` in test
  mode, driven over D-Bus by the 2014 replay test: three weeks pass in a second).
- :class:`MonotonicClock` — ``time.monotonic()``, for durations that must not follow wall-clock
  jumps (the supervisor's "ran long enough to reset the restart ladder").

A :class:`Wake` cuts a sleep short (new outbox item, SyncNow) without an extra task per sleep.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

# A sleep on the real clock never lasts longer than this; see the module docstring.
MAX_SLEEP_CHUNK_S = 900.0


class Wake:
    """A flag that also resolves the sleep currently waiting on it."""

    __slots__ = ("_fire", "_flag")

    def __init__(self) -> None:
        self._flag = False
        self._fire: Callable[[], None] | None = None

    def set(self) -> None:
        self._flag = True
        fire, self._fire = self._fire, None
        if fire is not None:
            fire()

    @property
    def is_set(self) -> bool:
        return self._flag

    def take(self) -> bool:
        """Read and clear the flag (the sleeper does this at the top of its loop)."""
        flag, self._flag = self._flag, False
        return flag


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Clock(ABC):
    @abstractmethod
    def now(self) -> float:
        """Wall-clock time, epoch seconds."""

    @abstractmethod
    async def sleep_until(self, when: float, wake: Wake | None = None) -> None:
        """Return at ``when`` (or earlier: a set ``wake``, or a chunk boundary)."""

    async def sleep(self, delay: float, wake: Wake | None = None) -> None:
        await self.sleep_until(self.now() + delay, wake)


class RealClock(Clock):
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float, wake: Wake | None = None) -> None:
        if wake is not None and wake.is_set:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        delay = min(max(0.0, when - self.now()), MAX_SLEEP_CHUNK_S)
        handle = loop.call_later(delay, _resolve, fut)
        self._track(fut, when)
        if wake is not None:
            wake._fire = lambda: _resolve(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._untrack(fut)
            if wake is not None:
                wake._fire = None

    def _track(self, fut: asyncio.Future[None], when: float) -> None:
        """Hook for clocks that can jump (OffsetClock); real time never does."""

    def _untrack(self, fut: asyncio.Future[None]) -> None:
        pass


class OffsetClock(RealClock):
    """Real time plus an offset; :meth:`advance` jumps forward and fires every timer now due."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._sleepers: dict[asyncio.Future[None], float] = {}

    def now(self) -> float:
        return time.time() + self.offset

    def _track(self, fut: asyncio.Future[None], when: float) -> None:
        self._sleepers[fut] = when

    def _untrack(self, fut: asyncio.Future[None]) -> None:
        self._sleepers.pop(fut, None)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds
        now = self.now()
        for fut, when in list(self._sleepers.items()):
            if when <= now:
                _resolve(fut)
        return now


class MonotonicClock(RealClock):
    """Monotonic time (seconds since an arbitrary point, never jumps): for durations, not instants
    that are stored.  A plain sleep is the event loop's own (monotonic) timer, unchunked."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: float, wake: Wake | None = None) -> None:
        if wake is None:
            await asyncio.sleep(max(0.0, when - self.now()))
        else:
            await super().sleep_until(when, wake)


class SimClock(Clock):
    """Simulated time.  ``run_until``/``advance`` move it from timer to timer; between jumps every
    woken sleeper runs until it sleeps again (``settle``), so results are deterministic for a
    given rng seed as long as the sleepers do no real I/O.

    Sleepers that do real I/O between sleeps (an engine talking HTTPS to the fake backend in a
    test) are supported with ``expect_sleepers=n``: ``settle`` then also waits, under a real-time
    deadline, until ``n`` sleepers are parked again."""

    def __init__(self, start: float = 1_700_000_000.0, *, expect_sleepers: int = 0,
                 settle_timeout: float = 10.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._woken = 0  # resolved sleeps whose sleeper has not resumed yet
        self._sleeping = 0  # sleeps waiting for their time
        self._parked: asyncio.Event | None = None
        self.expect_sleepers = expect_sleepers
        self.settle_timeout = settle_timeout

    def now(self) -> float:
        return self._now

    @property
    def sleeping(self) -> int:
        return self._sleeping

    def _fire(self, fut: asyncio.Future[None]) -> None:
        if not fut.done():
            self._woken += 1
            self._sleeping -= 1
            fut.set_result(None)

    async def sleep_until(self, when: float, wake: Wake | None = None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._sleeping += 1
        if (wake is not None and wake.is_set) or when <= self._now:
            self._fire(fut)  # still yield, so a loop that is always due cannot starve the others
        else:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, fut))
            if wake is not None:
                wake._fire = lambda: self._fire(fut)
            if self._parked is not None:
                self._parked.set()
        try:
            await fut
        finally:
            if fut.done() and not fut.cancelled():
                self._woken -= 1
            else:
                self._sleeping -= 1
                fut.cancel()
            if wake is not None:
                wake._fire = None

    async def settle(self) -> None:
        """Let every woken sleeper run until it sleeps again."""
        await asyncio.sleep(0)
        while self._woken > 0:
            await asyncio.sleep(0)
        if self.expect_sleepers:
            if self._parked is None:
                self._parked = asyncio.Event()
            async with asyncio.timeout(self.settle_timeout):
                while self._sleeping < self.expect_sleepers or self._woken > 0:
                    self._parked.clear()
                    if self._woken > 0:
                        await asyncio.sleep(0)
                        continue
                    await self._parked.wait()

    def next_timer(self) -> float | None:
        while self._heap and self._heap[0][2].done():
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def run_until(self, t_end: float) -> None:
        """Advance to ``t_end``, firing timers in order and settling after each instant."""
        await self.settle()
        while True:
            nxt = self.next_timer()
            if nxt is None or nxt > t_end:
                break
            self._now = max(self._now, nxt)
            while self._heap and self._heap[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._heap)
                self._fire(fut)
            await self.settle()
        self._now = max(self._now, t_end)

    async def advance(self, seconds: float) -> None:
        await self.run_until(self._now + seconds)
