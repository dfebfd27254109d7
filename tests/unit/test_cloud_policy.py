"""Backoff with full jitter, the circuit breaker, and the simulated clock they run on."""

from __future__ import annotations

import asyncio
import random

import pytest

from dashbridge.daemon.clock import SimClock, Wake
from dashbridge.daemon.cloud.policy import Backoff, Breaker


def test_full_jitter_stays_within_the_doubling_ceiling_and_the_cap() -> None:
    b = Backoff(base=1.0, cap=60.0)
    rng = random.Random(7)
    assert [b.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    for attempt in range(1, 200):
        for _ in range(20):
            d = b.delay(attempt, rng)
            assert 0.0 <= d <= b.ceiling(attempt)
    # Full jitter really spreads: the delays of one rung cover its range, not one point.
    ds = [b.delay(10, rng) for _ in range(2000)]
    assert min(ds) < 6 and max(ds) > 54


def test_no_jitter_is_deterministic_and_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(base=0.5, cap=3600.0, jitter="none")
    assert b.delay(3, random.Random()) == 2.0
    assert b.delay(10**9, random.Random()) == 3600.0


def test_breaker_opens_after_threshold_then_half_open_probe_decides() -> None:
    rng = random.Random(1)
    br = Breaker(3, Backoff(60.0, 600.0), rng)
    now = 1000.0
    assert not br.failure(now) and not br.failure(now)
    assert br.state(now) == "closed" and br.allowed_at() == 0.0
    assert br.failure(now)  # third consecutive failure opens it
    assert br.state(now) == "open" and now <= br.open_until <= now + 60
    # After the cool-down one request is the probe; its failure re-opens for longer (ceiling 120).
    t = br.open_until
    assert br.state(t) == "half-open"
    assert br.failure(t)
    assert br.open_until <= t + 120 and br.opens == 2
    assert br.success() is True  # closing an open breaker reports the recovery
    assert br.state(t) == "closed" and br.failures == 0 and br.opens == 0
    assert br.success() is False


def test_a_success_resets_the_consecutive_count() -> None:
    br = Breaker(3, Backoff(60.0, 600.0), random.Random(1))
    for _ in range(10):
        br.failure(0.0)
        br.failure(0.0)
        br.success()
    assert not br.is_open


async def test_sim_clock_jumps_to_timers_in_order_and_wake_cuts_sleep_short() -> None:
    clock = SimClock(start=100.0)
    order: list[tuple[str, float]] = []
    wake = Wake()

    async def sleeper(name: str, until: float, w: Wake | None = None) -> None:
        await clock.sleep_until(until, w)
        order.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper("b", 300.0)), asyncio.create_task(sleeper("a", 200.0)),
             asyncio.create_task(sleeper("w", 10_000.0, wake))]
    await clock.settle()
    await clock.run_until(250.0)
    assert order == [("a", 200.0)]
    assert clock.now() == 250.0
    wake.set()
    await clock.settle()
    assert order[-1] == ("w", 250.0)  # woken early, at the current simulated instant
    await clock.advance(1000.0)
    assert ("b", 300.0) in order
    await asyncio.gather(*tasks)


async def test_sim_clock_settle_waits_for_sleepers_doing_real_io() -> None:
    clock = SimClock(start=0.0, expect_sleepers=1, settle_timeout=5.0)
    ticks: list[float] = []

    async def worker() -> None:
        while True:
            await clock.sleep_until(clock.now() + 10.0)
            await asyncio.sleep(0.01)  # real I/O stands here: the clock must wait for it
            ticks.append(clock.now())

    t = asyncio.create_task(worker())
    await clock.settle()
    await clock.advance(35.0)
    assert ticks == [10.0, 20.0, 30.0]
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
