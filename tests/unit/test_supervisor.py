"""The supervisor restarts a failing component with capped, jittered backoff and reports health."""

from __future__ import annotations

import asyncio
import random

import pytest

from dashbridge.daemon import supervisor as sup
from dashbridge.daemon.health import Health


async def test_restarts_with_backoff_and_reports_down_then_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(d: float) -> None:  # record the backoff, do not wait it out
        delays.append(d)
        await real_sleep(0)

    monkeypatch.setattr(sup.asyncio, "sleep", fake_sleep)
    health = Health()
    s = sup.Supervisor(health, rng=random.Random(1))
    runs = 0
    reasons: list[str] = []
    states: list[str] = []
    health.on_change(lambda: states.append(health.get("x").state if health.get("x") else ""))

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 4:
            if runs == 3:
                reasons.append(health.snapshot()["x"].reason)
            raise ConnectionError("bluetoothd went away")
        health.set("x", "ok")

    async with asyncio.timeout(5):
        await s.supervise("x", flaky)
    assert runs == 4
    assert len(delays) == 3
    for i, d in enumerate(delays):
        assert 0 <= d <= min(sup.RESTART_CAP_S, sup.RESTART_BASE_S * 2**i)
    assert states[0] == "down" and states[-1] == "ok"
    assert "bluetoothd went away" in reasons[0]


async def test_crash_loop_marks_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def fast_sleep(d: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr(sup.asyncio, "sleep", fast_sleep)
    s = sup.Supervisor(Health(), rng=random.Random(2))
    crashes = 0

    async def always_fails() -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("boom")

    task = asyncio.ensure_future(s.supervise("y", always_fails))
    async with asyncio.timeout(5):
        while crashes < sup.UNHEALTHY_AFTER_CRASHES:
            await real_sleep(0)
    assert not s.healthy()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
