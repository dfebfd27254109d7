"""The step vocabulary: every step kind/action, its parameters and its implementation.

Step modules register with :func:`action` / :func:`value_kind`; the loader (``schema.py``)
checks steps against :data:`ACTIONS`, the runner (``runner.py``) calls their handlers.  This
module imports neither, so both (and the step modules) can import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .values import fmt_duration, show


class StepFailed(Exception):
    """An expectation did not hold (or an action failed): the scenario fails at this step."""


@dataclass(frozen=True)
class Param:
    type: str  # see schema.PARAM_TYPES
    required: bool = False
    default: Any = None
    doc: str = ""
    choices: tuple[str, ...] = ()


@dataclass
class Step:
    index: int  # 1-based
    line: int
    kind: str
    action: str
    params: dict[str, Any]
    say: str | None = None
    phone: str | None = None  # for phone steps: the phone's id

    def describe(self) -> str:
        if self.kind == "say":
            return f"say {show(self.say)}"
        if self.kind == "phone":
            head = f"phone {self.phone} {self.action}"
        elif self.kind in VALUE_KINDS:
            main = self.params.get(self.kind)
            head = f"{self.kind} {fmt_duration(main) if isinstance(main, float) else main}"
        else:
            head = f"{self.kind} {self.action}"
        extras = []
        for k, v in self.params.items():
            if v is None or (v == [] and k == "args") or k in ("save", self.kind) or (k == "count" and v == 1) or \
                    (k == "since" and v == "step"):
                continue
            extras.append(f"{k}={fmt_duration(v) if k in ('within', 'during') else show(v)}")
        return head + (" " + " ".join(extras) if extras else "")


# What a step does: ``async def handler(run: Run, step: Step)``.  Typed loosely here (the runner's
# Run imports this module); the decorators keep each handler's own signature.
Handler = Callable[[Any, Step], Awaitable[None]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class Action:
    kind: str
    name: str
    params: dict[str, Param]
    doc: str
    handler: Handler
    needs: tuple[str, ...] = ()  # fakes this action needs in the world


ACTIONS: dict[tuple[str, str], Action] = {}
# Kinds whose action is the value of the kind key (``bluez: restart``), and their descriptions.
KINDS: dict[str, str] = {
    "phone": "a virtual phone does something (the value is the phone's id; `do:` names the action)",
    "dashboard": "the dashboard uses the public org.dashbridge API",
    "bluez": "faults of the fake bluetoothd",
    "obexd": "faults of the fake obexd",
    "ofono": "faults of the fake oFono",
    "backend": "the fake cloud backend's state and faults",
    "navigation": "the dashboard's fake navigation service",
    "daemon": "the daemon process itself",
}
# Kinds whose value is the main parameter (``expect_signal: Phones1.X``, ``wait: 2s``).
VALUE_KINDS: dict[str, tuple[str, Param]] = {}


def action(kind: str, name: str, doc: str, /, *, needs: Sequence[str] = (),
           **params: Param) -> Callable[[H], H]:
    def deco(fn: H) -> H:
        ACTIONS[(kind, name)] = Action(kind, name, dict(params), doc, fn, tuple(needs))
        return fn

    return deco


def value_kind(kind: str, main: Param, doc: str, /, *, needs: Sequence[str] = (),
               **params: Param) -> Callable[[H], H]:
    """A step whose kind key carries the main value, e.g. ``expect_signal: Phones1.PairingFinished``."""
    VALUE_KINDS[kind] = (kind, main)

    def deco(fn: H) -> H:
        ACTIONS[(kind, "")] = Action(kind, "", {kind: main, **params}, doc, fn, tuple(needs))
        return fn

    return deco


COMMON_STEP_KEYS = {"say": Param("str", doc="a line for the timeline (what the driver would see)")}
