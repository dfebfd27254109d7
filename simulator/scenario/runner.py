"""Running one scenario in its own world: :class:`Run`, :func:`run_scenario`, the results."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashbridge.daemon.dbus.errors import BusError

from ..phone import VirtualPhone
from ..world import Event, ValueTypeError, World, WorldError
from .registry import ACTIONS, Step, StepFailed
from .schema import Scenario, ScenarioError, load_file
from .values import SUBST_RE, fmt_duration, show

LOG_TAIL_LINES = 25


@dataclass
class StepResult:
    index: int
    line: int
    text: str
    ok: bool
    seconds: float  # since the previous step: from when it was done to when this one was (see at)
    detail: str = ""
    say: str | None = None
    at: float = 0.0  # when it was done, since the steps began: an expect_signal when its signal came


@dataclass
class ScenarioResult:
    file: str
    name: str
    ok: bool
    seconds: float
    steps: list[StepResult] = field(default_factory=list)
    error: str = ""  # one line: what failed
    line: int | None = None  # where
    details: str = ""  # what was seen (signals, daemon log tail)
    load_error: bool = False  # the file itself is bad (JUnit <error>)
    leftovers: list[str] = field(default_factory=list)  # what the world left running (should be none)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        steps = [StepResult(**s) for s in data.pop("steps", [])]
        return cls(steps=steps, **data)


class Narrator:
    """Receives what happens while a scenario runs (the demo prints a timeline from it)."""

    def step(self, run: Run, step: Step) -> None:
        pass

    def event(self, run: Run, ev: Event) -> None:
        pass

    def done(self, run: Run, step: Step, result: StepResult) -> None:
        pass


class Run:
    """One scenario in its own world."""

    def __init__(self, sc: Scenario, narrator: Narrator | None = None, *,
                 on_failure: Callable[[Run, ScenarioResult], Awaitable[None]] | None = None) -> None:
        self.sc = sc
        self.on_failure = on_failure  # called with the world still up (--keep-on-failure)
        self.steps_t0 = 0.0  # when the steps began (the world was up)
        self.prev_done = 0.0  # when the previous step was done (monotonic)
        self.satisfied_at: float | None = None  # an expectation: when what it waited for happened
        self.narrator = narrator or Narrator()
        self.world: World | None = None
        self.saved: dict[str, Any] = {}
        self.mark = 0  # dashboard event position at the start of the latest action step
        self.step_mark = 0  # ... at the start of the current step
        self.phone_ids = {p.id: p.phone.address for p in sc.phones}
        self.t0 = time.monotonic()
        self.last: dict[str, Any] = {}  # last prompt/call/intent seen, for dashboard sugar
        self.pairings: dict[str, asyncio.Task[str]] = {}  # phone id -> its latest pairing attempt
        self.answered: set[int] = set()  # prompts the scenario answered
        self.saved_seq: dict[str, int] = {}  # saved signal name -> its position in the event log
        self._background: list[asyncio.Task[Any]] = []
        self.step_t0 = self.t0

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Something a step starts that goes on while later steps run (cancelled at the end)."""
        task = asyncio.ensure_future(coro)
        self._background.append(task)
        return task

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    @property
    def dash(self) -> Any:
        assert self.world is not None and self.world.dashboard is not None
        return self.world.dashboard

    def phone(self, step: Step) -> VirtualPhone:
        assert step.phone is not None
        return self.w.phones[self.phone_ids[step.phone]]

    def within(self, step: Step) -> float:
        """The step's deadline: its ``within``, else the scenario's default."""
        w = step.params.get("within")
        return float(w) if w is not None else float(self.sc.within)

    def subst(self, value: Any) -> Any:
        """``${name.key}`` -> a saved value (the raw value when the whole string is one reference)."""
        if isinstance(value, str):
            whole = SUBST_RE.fullmatch(value)
            if whole:
                return self._lookup(whole.group(1), whole.group(2))
            return SUBST_RE.sub(lambda m: str(self._lookup(m.group(1), m.group(2))), value)
        if isinstance(value, list):
            return [self.subst(v) for v in value]
        if isinstance(value, dict):
            return {k: self.subst(v) for k, v in value.items()}
        return value

    def _lookup(self, name: str, dotted: str) -> Any:
        if name not in self.saved:
            raise StepFailed(f"${{{name}}} was never saved (saved so far: {', '.join(self.saved) or 'nothing'})")
        cur = self.saved[name]
        for part in [p for p in dotted.split(".") if p]:
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                raise StepFailed(f"${{{name}{dotted}}}: {show(cur)} has no {part}")
        return cur

    def events_since(self, pos: int, limit: int = 12) -> str:
        evs = self.dash.events[pos:]
        if not evs:
            return "    (no signals from the daemon)"
        lines = [f"    +{ev.at - self.t0:6.2f}s {ev.describe()}" for ev in evs[-limit:]]
        if len(evs) > limit:
            lines.insert(0, f"    ... {len(evs) - limit} earlier")
        return "\n".join(lines)

    async def execute(self) -> ScenarioResult:
        sc = self.sc
        result = ScenarioResult(sc.filename, sc.name, ok=False, seconds=0.0)
        failing: Step | None = None
        try:
            async with asyncio.timeout(sc.timeout):
                self.world = World(sc.world_spec())
                await self.world.start()
                assert self.world.dashboard is not None
                self.world.dashboard.on_event(lambda ev: self.narrator.event(self, ev))
                self.steps_t0 = self.prev_done = time.monotonic()
                for step in sc.steps:
                    failing = step
                    await self._step(step, result)
                failing = None
            result.ok = True
        except StepFailed as exc:
            result.error = str(exc).splitlines()[0] if str(exc) else "failed"
            result.details = "\n".join(str(exc).splitlines()[1:])
        except TimeoutError:
            result.error = f"the scenario did not finish within its timeout ({fmt_duration(sc.timeout)})"
        except WorldError as exc:
            result.error = f"the world could not be built: {exc}"
        except Exception as exc:
            result.error = f"runner error: {type(exc).__name__}: {exc}"
            result.details = traceback.format_exc()
        finally:
            if not result.ok and self.on_failure is not None and self.world is not None:
                if failing is not None:
                    result.line = failing.line
                try:
                    await self.on_failure(self, result)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    pass  # Ctrl-C while the world is kept up: stop it (below)
            for task in self._background:
                task.cancel()
            if self._background:
                await asyncio.wait(self._background, timeout=5.0)
            if self.world is not None:
                with contextlib.suppress(Exception):
                    await self.world.stop()
                result.leftovers = self.world.leftovers()
        if failing is not None and not result.ok:
            result.line = failing.line
            done = {s.index for s in result.steps}
            if failing.index not in done:
                now = time.monotonic()
                result.steps.append(StepResult(failing.index, failing.line, failing.describe(), False,
                                               now - self.prev_done, result.error, failing.say,
                                               at=now - self.steps_t0 if self.steps_t0 else 0.0))
        if not result.ok and self.world is not None:
            if self.world.unsettled:
                result.details += ("\n" if result.details else "") + \
                    f"    note: the daemon had not settled when the steps began ({self.world.unsettled})"
            tail = self.world.daemon_log.splitlines()[-LOG_TAIL_LINES:]
            if tail:
                result.details += ("\n" if result.details else "") + "    daemon log (last lines):\n" + \
                    "\n".join("      " + ln for ln in tail)
        if result.ok and result.leftovers:
            result.ok = False
            result.error = "the world did not stop cleanly: " + "; ".join(result.leftovers)
        result.seconds = time.monotonic() - self.t0
        return result

    async def _step(self, step: Step, result: ScenarioResult) -> None:
        self.step_t0 = time.monotonic()
        self.satisfied_at = None
        self.step_mark = self.dash.mark
        if not step.kind.startswith("expect") and step.kind != "say":
            self.mark = self.dash.mark
        self.narrator.step(self, step)
        if step.kind != "say":
            act = ACTIONS[(step.kind, step.action)]
            for need in act.needs:
                if need not in self.w.fakes:
                    raise StepFailed(f"step {step.index} (line {step.line}): {step.describe()}: "
                                     f"this world has no {need} ({self.w.missing.get(need, 'not started')})")
            try:
                await act.handler(self, step)
            except StepFailed as exc:
                first, *rest = str(exc).splitlines() or [""]
                raise StepFailed("\n".join([f"step {step.index} (line {step.line}): {step.describe()}: {first}",
                                            *rest])) from None
            except TimeoutError:
                raise StepFailed(f"step {step.index} (line {step.line}): {step.describe()}: "
                                 f"did not complete in time") from None
            except (BusError, WorldError, ValueTypeError) as exc:
                raise StepFailed(f"step {step.index} (line {step.line}): {step.describe()}: {exc}") from None
            except (KeyError, ValueError) as exc:  # a fake refusing what the step asked
                why = exc.args[0] if exc.args else type(exc).__name__
                raise StepFailed(f"step {step.index} (line {step.line}): {step.describe()}: "
                                 f"the simulator refused: {why}") from None
        done = self.satisfied_at if self.satisfied_at is not None else time.monotonic()
        sr = StepResult(step.index, step.line, step.describe(), True, done - self.prev_done, say=step.say,
                        at=done - self.steps_t0)
        self.prev_done = max(self.prev_done, done)
        result.steps.append(sr)
        self.narrator.done(self, step, sr)


OnFailure = Callable[[Run, ScenarioResult], Awaitable[None]]


async def run_scenario(sc: Scenario, narrator: Narrator | None = None, *,
                       on_failure: OnFailure | None = None) -> ScenarioResult:
    return await Run(sc, narrator, on_failure=on_failure).execute()


async def run_file(path: str | Path, narrator: Narrator | None = None, *,
                   on_failure: OnFailure | None = None) -> ScenarioResult:
    try:
        sc = load_file(path)
    except ScenarioError as exc:
        more = [f"    {e.where_what}" for e in exc.errors[1:]]
        if more:
            more.insert(0, f"    ... and {len(more)} more error(s) in the file:")
        return ScenarioResult(str(path), Path(path).stem, False, 0.0, error=exc.message, line=exc.line,
                              load_error=True, details="\n".join(more))
    return await run_scenario(sc, narrator, on_failure=on_failure)
