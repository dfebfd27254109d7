"""Backoff: the one retry/restart ladder of the daemon (supervisor, cloud, navigation relay).

A :class:`Backoff` is pure (no I/O, no clock of its own): the n-th retry (n = 1 for the first)
waits at most ``ceiling(n) = min(cap, base * 2**(n-1))``, drawn from the caller's rng by its
jitter kind:

- ``"full"`` — uniform in ``[0, c]`` ("AWS Architecture Blog: Exponential Backoff And Jitter").
  Without jitter, clients that failed at the same moment retry at the same moments forever.
- ``"equal"`` — uniform in ``[c/2, c]``: never much earlier than the ceiling, still spread.
- ``"none"`` — exactly ``c``.

Who uses which (keep docs in step):

| user | base | cap | jitter | bound |
|---|---|---|---|---|
| supervisor restart ladder (``daemon/supervisor.py``) | 0.5 s | 30 s | full | none; reset after 60 s of good running |
| cloud restarts (supervisor ladder, ``cloud/component.py``) | 1 s | 300 s | full | none; reset after 60 s |
| cloud outbox retry (``cloud.retry.base_delay``/``max_delay``) | 1 s | 1 h | full | none |
| cloud breaker cool-down (``breaker_cooldown``/``breaker_max_cooldown``) | 60 s | 10 min | equal | none |
| navigation delivery retry (``navigation.retry_base``/``retry_max``) | 2 s | 5 min | equal | the intent's expiry |
| companion session retry (``companion.retry_base``/``retry_max``) | 2 s | 60 s | equal | none |

A backoff may also be bounded: ``max_attempts`` retries and/or ``max_elapsed`` seconds since the
first failure; :meth:`Backoff.allows` says whether one more retry is allowed.  :class:`Attempts`
is the stateful side: the failures in a row on one backoff, timed on an injected
:class:`~daemon.clock.Clock`, with an optional reset after a try that ran long enough.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .clock import Clock

Jitter = Literal["full", "equal", "none"]

# 2**60 seconds is far beyond any cap; stop doubling there so the float never overflows.
_MAX_EXPONENT = 60


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float
    jitter: Jitter = "full"
    max_attempts: int | None = None  # at most this many retries (None: unbounded)
    max_elapsed: float | None = None  # no retry once this long has passed since the first failure

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (1 = first retry)."""
        exp = min(max(attempt, 1) - 1, _MAX_EXPONENT)
        return float(min(self.cap, self.base * (2.0 ** exp)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        top = self.ceiling(attempt)
        if self.jitter == "full":
            return rng.uniform(0.0, top)
        if self.jitter == "equal":
            return rng.uniform(top / 2.0, top)
        return top

    def allows(self, attempt: int, elapsed: float = 0.0) -> bool:
        """May retry number ``attempt`` happen, ``elapsed`` seconds after the first failure?"""
        if self.max_attempts is not None and attempt > self.max_attempts:
            return False
        return self.max_elapsed is None or elapsed < self.max_elapsed


class Attempts:
    """Consecutive failures on one :class:`Backoff`, timed on ``clock``.

    ``failure(started)`` records a failed try and returns the wait before the next one, or
    ``None`` when the backoff's bound is reached (give up).  A try that ran for ``reset_after``
    seconds before failing counts as a good run: the ladder starts again from the bottom.
    """

    def __init__(self, backoff: Backoff, clock: Clock, rng: random.Random, *,
                 reset_after: float | None = None) -> None:
        self.backoff = backoff
        self.clock = clock
        self.rng = rng
        self.reset_after = reset_after
        self.count = 0  # failures in a row
        self.first_failure: float | None = None

    def success(self) -> None:
        self.count = 0
        self.first_failure = None

    def failure(self, started: float | None = None) -> float | None:
        now = self.clock.now()
        if started is not None and self.reset_after is not None and now - started > self.reset_after:
            self.success()
        self.count += 1
        if self.first_failure is None:
            self.first_failure = now
        if not self.backoff.allows(self.count, now - self.first_failure):
            return None
        return self.backoff.delay(self.count, self.rng)
