"""Per-component health (ok / degraded / down + reason), exported as Daemon1.Health."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["ok", "degraded", "down", "starting"]


@dataclass(frozen=True)
class ComponentHealth:
    state: State
    reason: str = ""


class Health:
    def __init__(self) -> None:
        self._components: dict[str, ComponentHealth] = {}
        self._listeners: list[Callable[[], None]] = []

    def set(self, component: str, state: State, reason: str = "") -> None:
        new = ComponentHealth(state, reason)
        if self._components.get(component) == new:
            return
        self._components[component] = new
        for cb in list(self._listeners):
            cb()

    def get(self, component: str) -> ComponentHealth | None:
        return self._components.get(component)

    def snapshot(self) -> dict[str, ComponentHealth]:
        return dict(self._components)

    def on_change(self, cb: Callable[[], None]) -> None:
        self._listeners.append(cb)

    def summary(self) -> str:
        if not self._components:
            return "starting"
        bad = {k: v for k, v in self._components.items() if v.state not in ("ok",)}
        if not bad:
            return f"ok ({len(self._components)} components)"
        return "; ".join(f"{k} {v.state}" + (f": {v.reason}" if v.reason else "") for k, v in sorted(bad.items()))
