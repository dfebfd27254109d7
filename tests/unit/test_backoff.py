"""The one backoff (daemon/backoff.py): ceilings, both jitter kinds, bounds by attempts and by
time, the reset after a good run, and the supervisor driven by it on a simulated clock.  Seeded
rngs and SimClock: deterministic, nothing sleeps for real."""

from __future__ import annotations

import asyncio
import random

from dashbridge.daemon import supervisor as sup
from dashbridge.daemon.backoff import Attempts, Backoff
from dashbridge.daemon.clock import SimClock
from dashbridge.daemon.cloud.component import RESTART_POLICY as CLOUD_RESTART
from dashbridge.daemon.health import Health


def test_ceiling_doubles_to_the_cap() -> None:
    b = Backoff(0.5, 30.0)
    assert [b.ceiling(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.ceiling(0) == 0.5 and b.ceiling(10**9) == 30.0


def test_full_and_equal_jitter_ranges_and_determinism() -> None:
    full, equal = Backoff(1.0, 60.0, "full"), Backoff(1.0, 60.0, "equal")
    rng = random.Random(3)
    for attempt in range(1, 40):
        c = full.ceiling(attempt)
        for _ in range(50):
            assert 0.0 <= full.delay(attempt, rng) <= c
            assert c / 2 <= equal.delay(attempt, rng) <= c
    # Same seed, same delays.
    assert [full.delay(5, random.Random(9)) for _ in range(3)] == [full.delay(5, random.Random(9))] * 3
    a, b = random.Random(11), random.Random(11)
    assert [equal.delay(n, a) for n in range(1, 20)] == [equal.delay(n, b) for n in range(1, 20)]
    # Equal jitter is the navigation relay's former formula, number for number.
    r1, r2 = random.Random(5), random.Random(5)
    for n in range(1, 12):
        old = min(60.0, 1.0 * 2 ** (n - 1)) * (0.5 + 0.5 * r1.random())
        assert abs(equal.delay(n, r2) - old) < 1e-9


def test_bounded_by_attempts() -> None:
    b = Backoff(1.0, 10.0, "none", max_attempts=3)
    assert [b.allows(n) for n in range(1, 6)] == [True, True, True, False, False]
    att = Attempts(b, SimClock(start=0.0), random.Random(1))
    assert [att.failure() for _ in range(4)] == [1.0, 2.0, 4.0, None]
    att.success()
    assert att.failure() == 1.0


async def test_bounded_by_elapsed_time_on_the_injected_clock() -> None:
    clock = SimClock(start=1000.0)
    att = Attempts(Backoff(1.0, 10.0, "none", max_elapsed=30.0), clock, random.Random(1))
    waits = []
    while (d := att.failure()) is not None:
        waits.append(d)
        await clock.advance(d)
    # Failures at 0, 1, 3, 7, 15, 25 s after the first are retried; the one at 35 s (> 30 s) is not.
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert clock.now() == 1035.0
    assert Backoff(1.0, 10.0).allows(10**6, 10**9)  # unbounded by default


async def test_reset_after_a_good_run() -> None:
    clock = SimClock(start=0.0)
    att = Attempts(Backoff(0.5, 30.0, "none"), clock, random.Random(1), reset_after=60.0)
    for _ in range(4):
        started = clock.now()
        await clock.advance(1.0)
        assert att.failure(started) is not None
    assert att.count == 4
    started = clock.now()
    await clock.advance(60.0)  # exactly 60 s is not yet "more than 60 s"
    assert att.failure(started) == 0.5 * 2**4 and att.count == 5
    started = clock.now()
    await clock.advance(61.0)
    assert att.failure(started) == 0.5 and att.count == 1


async def test_supervisor_ladder_on_a_sim_clock_resets_after_a_good_run() -> None:
    clock = SimClock(start=0.0)
    s = sup.Supervisor(Health(), rng=random.Random(4), clock=clock)
    starts: list[float] = []
    run_for = [0.0, 0.0, 0.0, 61.0, 0.0]

    async def flaky() -> None:
        starts.append(clock.now())
        i = len(starts) - 1
        if i >= len(run_for):
            return
        if run_for[i]:
            await clock.sleep(run_for[i])
        raise RuntimeError(f"crash {i}")

    task = asyncio.create_task(s.supervise("x", flaky))
    await clock.run_until(10_000.0)
    await task
    gaps = [starts[i + 1] - starts[i] - run_for[i] for i in range(len(run_for))]
    ceilings = [0.5, 1.0, 2.0, 0.5, 1.0]  # the 61 s run reset the ladder
    assert all(0.0 <= g <= c for g, c in zip(gaps, ceilings, strict=True)), gaps
    assert s.healthy()


async def test_cloud_restarts_on_its_own_ladder_and_never_withhold_the_watchdog() -> None:
    assert CLOUD_RESTART.backoff == Backoff(1.0, 300.0, "full") and CLOUD_RESTART.reset_after == 60.0
    assert sup.restart_policy(object()) is sup.DEFAULT_RESTART
    clock = SimClock(start=0.0)
    s = sup.Supervisor(Health(), rng=random.Random(2), clock=clock)
    crashes = 0

    async def always_fails() -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("engine bug")

    task = asyncio.create_task(s.supervise("cloud", always_fails, CLOUD_RESTART))
    await clock.run_until(3600.0)
    assert crashes > sup.UNHEALTHY_AFTER_CRASHES
    assert s.healthy()  # not critical: the daemon keeps petting the watchdog
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
