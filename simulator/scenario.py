"""YAML scenarios: load (with file:line errors), run each in its own world, report.

A scenario file (schema version 1, documented in ``docs/scenarios.md``)::

    version: 1
    name: Numeric comparison accepted
    world:
      config: {bluetooth: {prompt_timeout: 3s}}      # daemon config overrides
      phones:
        - {id: alice, name: Alice's Pixel, address: "AA:BB:CC:DD:EE:01", passkey: 123456}
    steps:
      - dashboard: open_pairing_window
      - phone: alice
        do: pair
      - expect_signal: Phones1.PairingPrompt
        args: {passkey: 123456}
        within: 3s
        save: prompt
      ...

Every step is a mapping with exactly one *kind* key (``phone``, ``dashboard``, ``bluez``,
``expect_signal``, ``wait`` ...); the other keys are that step's parameters.  The vocabulary is
the :data:`ACTIONS` registry below; ``dashbridge-sim run --list-steps`` prints it.

The runner never sleeps to wait for something: an expectation waits for the daemon's signal (or
a property change, or the fake's record) under its ``within:`` deadline.  Only ``wait:`` (the
tester asked for real time to pass) and ``expect_no_signal`` (absence over a stated period) let
time pass on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback
import typing
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from dashbridge.daemon.config import parse_duration
from dashbridge.daemon.dbus.errors import BusError

from .phone import PROFILE_UUIDS, VirtualPhone
from .world import Event, ValueTypeError, World, WorldError, WorldSpec

try:  # the C loader is ~9x faster (DESIGN.md §6)
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

SCHEMA_VERSIONS = (1,)
DEFAULT_WITHIN_S = 5.0
DEFAULT_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 25
WORKER_STOP_S = 30.0  # an interrupted worker's time to stop its world
ADDRESS_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
SUBST_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\}")


# =============================================================================================
# Errors
# =============================================================================================


class ScenarioError(Exception):
    """A bad scenario file: ``str()`` is ``file:line: what was expected``."""

    def __init__(self, filename: str, line: int | None, message: str) -> None:
        self.filename = filename
        self.line = line
        self.message = message
        where = f"{filename}:{line}" if line else filename
        super().__init__(f"{where}: {message}")


class StepFailed(Exception):
    """An expectation did not hold (or an action failed): the scenario fails at this step."""


# =============================================================================================
# Values and durations
# =============================================================================================


def _construct(node: yaml.Node) -> Any:
    return SafeConstructor().construct_document(node)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:79] + "…"


def fmt_duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


# =============================================================================================
# Parameter types (each converts a YAML node, or raises ScenarioError naming the line)
# =============================================================================================


@dataclass(frozen=True)
class Param:
    type: str  # see _PARAM_TYPES
    required: bool = False
    default: Any = None
    doc: str = ""
    choices: tuple[str, ...] = ()


def _conv_str(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        f.fail(node, f"{key}: expected text, got {_show(value)}")
    text = str(value)
    if p.choices and text not in p.choices:
        f.fail(node, f"{key}: expected one of {', '.join(p.choices)}, got {_show(text)}")
    return text


def _conv_int(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and SUBST_RE.fullmatch(value):
            return value
        f.fail(node, f"{key}: expected a whole number, got {_show(value)}")
    return value


def _conv_number(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool) or not isinstance(value, int | float):
        f.fail(node, f"{key}: expected a number, got {_show(value)}")
    return value


def _conv_bool(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if not isinstance(value, bool):
        f.fail(node, f"{key}: expected true or false, got {_show(value)}")
    return value


def _conv_duration(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool):
        f.fail(node, f'{key}: expected a duration like "5s", "250ms", "3w", got {_show(value)}')
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_duration(str(value))
    except ValueError:
        f.fail(node, f'{key}: expected a duration like "5s", "250ms", "3w", got {_show(value)}')


def _conv_any(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    return _construct(node)


def _conv_list(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    if not isinstance(node, yaml.SequenceNode):
        f.fail(node, f"{key}: expected a list, got {_show(_construct(node))}")
    return _construct(node)


def _conv_map(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    if not isinstance(node, yaml.MappingNode):
        f.fail(node, f"{key}: expected a mapping, got {_show(_construct(node))}")
    return _construct(node)


def _conv_name(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    text = _conv_str(f, node, key, p)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        f.fail(node, f"{key}: expected a name of letters, digits and _, got {_show(text)}")
    return text


def _conv_matcher(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    err = check_matcher(value)
    if err:
        f.fail(node, f"{key}: {err}")
    return value


def _conv_member(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    text = _conv_str(f, node, key, p)
    if not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*", text):
        f.fail(node, f'{key}: expected Interface.Member, e.g. "Phones1.PairingFinished", got {_show(text)}')
    return text


_API: Any = None


def _api() -> Any:
    global _API
    if _API is None:
        from .world import ApiModel

        _API = ApiModel.documented()
    return _API


def _documented(kind: str) -> Callable[[_File, yaml.Node, str, Param], Any]:
    """Interface.Member that the daemon documents (daemon/api/xml) as a ``kind``."""

    def conv(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
        text = _conv_member(f, node, key, p)
        if kind == "signal" and text.endswith(".PropertiesChanged"):
            iface = text.rsplit(".", 1)[0]
            full = iface if iface.startswith("org.") else "org.dashbridge." + iface
            if full not in _api().members:
                f.fail(node, f'{key}: the daemon documents no interface {full}')
            return text
        try:
            _api().resolve(text, kind)
        except KeyError as exc:
            f.fail(node, f"{key}: {exc.args[0]}")
        return text

    return conv


_PARAM_TYPES: dict[str, Callable[[_File, yaml.Node, str, Param], Any]] = {
    "str": _conv_str, "int": _conv_int, "number": _conv_number, "bool": _conv_bool,
    "duration": _conv_duration, "any": _conv_any, "list": _conv_list, "map": _conv_map,
    "name": _conv_name, "matcher": _conv_matcher, "member": _conv_member,
    "signal": _documented("signal"), "property": _documented("property"), "method": _documented("method"),
}


# =============================================================================================
# Matchers: what `args:` / `value:` / `where:` compare with
# =============================================================================================

OPERATORS = ("$contains", "$each", "$len", "$regex", "$gt", "$ge", "$lt", "$le", "$in", "$not", "$any",
             "$absent", "$eq", "$all", "$approx")


def _is_op_map(m: Any) -> bool:
    return isinstance(m, dict) and bool(m) and all(isinstance(k, str) and k.startswith("$") for k in m)


def check_matcher(m: Any) -> str | None:
    """Static check of a matcher; a message for the first problem, or None."""
    if isinstance(m, dict):
        ops = [k for k in m if isinstance(k, str) and k.startswith("$")]
        if ops and len(ops) != len(m):
            return f"cannot mix operators ({', '.join(ops)}) with plain keys in one mapping"
        for k, v in m.items():
            if ops and k not in OPERATORS:
                return f"unknown operator {k} (known: {', '.join(OPERATORS)})"
            if k in ("$gt", "$ge", "$lt", "$le") and (isinstance(v, bool) or not isinstance(v, int | float)):
                return f"{k} needs a number, got {_show(v)}"
            if k == "$regex":
                if not isinstance(v, str):
                    return f"$regex needs text, got {_show(v)}"
                try:
                    re.compile(v)
                except re.error as exc:
                    return f"$regex {_show(v)} is not a regular expression ({exc})"
            if k == "$in" and not isinstance(v, list):
                return f"$in needs a list, got {_show(v)}"
            if k == "$all" and not isinstance(v, list):
                return f"$all needs a list of matchers, got {_show(v)}"
            if k == "$approx" and not (isinstance(v, list) and len(v) == 2):
                return f"$approx needs [value, tolerance], got {_show(v)}"
            if k in ("$any", "$absent") and v is not True:
                return f"{k} takes true"
            sub = v if k not in ("$in", "$eq", "$approx", "$regex") else None
            if isinstance(sub, list) and k == "$all":
                for x in sub:
                    err = check_matcher(x)
                    if err:
                        return err
            elif sub is not None:
                err = check_matcher(sub)
                if err:
                    return err
    elif isinstance(m, list):
        for x in m:
            err = check_matcher(x)
            if err:
                return err
    return None


def match(expected: Any, actual: Any, path: str = "") -> str | None:
    """None when ``actual`` satisfies ``expected``; else why not (naming the path)."""
    here = path or "value"
    if _is_op_map(expected):
        for op, arg in expected.items():
            why = _match_op(op, arg, actual, here)
            if why:
                return why
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{here}: expected a mapping, got {_show(actual)}"
        for k, v in expected.items():
            sub = f"{path}.{k}" if path else str(k)
            if _is_op_map(v) and v.get("$absent") is True:
                if k in actual:
                    return f"{sub}: expected absent, got {_show(actual[k])}"
                continue
            if k not in actual:
                return f"{sub}: missing (has: {', '.join(map(str, actual)) or 'nothing'})"
            why = match(v, actual[k], sub)
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{here}: expected a list, got {_show(actual)}"
        if len(expected) != len(actual):
            return f"{here}: expected {len(expected)} item(s), got {len(actual)}: {_show(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            why = match(e, a, f"{path}[{i}]")
            if why:
                return why
        return None
    if isinstance(expected, bool) or isinstance(actual, bool):
        ok = expected is actual or (isinstance(actual, bool) == isinstance(expected, bool) and expected == actual)
    elif isinstance(expected, int | float) and isinstance(actual, int | float):
        ok = expected == actual
    elif isinstance(expected, str) and isinstance(actual, str) and ADDRESS_RE.match(expected):
        ok = expected.upper() == actual.upper()
    else:
        ok = expected == actual
    return None if ok else f"{here}: expected {_show(expected)}, got {_show(actual)}"


def _match_op(op: str, arg: Any, actual: Any, here: str) -> str | None:
    if op == "$any":
        return None
    if op == "$absent":
        return f"{here}: expected absent"  # only meaningful as a mapping value (handled there)
    if op == "$eq":
        return None if arg == actual else f"{here}: expected exactly {_show(arg)}, got {_show(actual)}"
    if op == "$not":
        return f"{here}: expected not {_show(arg)}, got {_show(actual)}" if match(arg, actual, here) is None else None
    if op == "$all":
        for m in arg:
            why = match(m, actual, here)
            if why:
                return why
        return None
    if op == "$in":
        return None if any(match(x, actual, here) is None for x in arg) else \
            f"{here}: expected one of {_show(arg)}, got {_show(actual)}"
    if op == "$regex":
        if not isinstance(actual, str):
            return f"{here}: expected text matching /{arg}/, got {_show(actual)}"
        return None if re.search(arg, actual) else f"{here}: expected text matching /{arg}/, got {_show(actual)}"
    if op in ("$gt", "$ge", "$lt", "$le"):
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return f"{here}: expected a number, got {_show(actual)}"
        ok = {"$gt": actual > arg, "$ge": actual >= arg, "$lt": actual < arg, "$le": actual <= arg}[op]
        sym = {"$gt": ">", "$ge": ">=", "$lt": "<", "$le": "<="}[op]
        return None if ok else f"{here}: expected {sym} {arg}, got {actual}"
    if op == "$approx":
        value, tol = arg
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return f"{here}: expected a number, got {_show(actual)}"
        return None if abs(actual - value) <= tol else f"{here}: expected {value} ± {tol}, got {actual}"
    if op == "$len":
        if not isinstance(actual, list | dict | str):
            return f"{here}: expected something with a length, got {_show(actual)}"
        return match(arg, len(actual), f"len({here})")
    if op == "$contains":
        if isinstance(actual, str):
            if not isinstance(arg, str):
                return f"{here}: cannot look for {_show(arg)} in text"
            return None if arg in actual else f"{here}: expected to contain {_show(arg)}, got {_show(actual)}"
        items = list(actual.values()) if isinstance(actual, dict) else actual
        if not isinstance(items, list):
            return f"{here}: expected a list, got {_show(actual)}"
        if any(match(arg, x, here) is None for x in items):
            return None
        return f"{here}: no item matches {_show(arg)} (items: {_show(items)})"
    if op == "$each":
        items = list(actual.values()) if isinstance(actual, dict) else actual
        if not isinstance(items, list):
            return f"{here}: expected a list, got {_show(actual)}"
        for i, x in enumerate(items):
            why = match(arg, x, f"{here}[{i}]")
            if why:
                return why
        return None
    return f"{here}: unknown operator {op}"


# =============================================================================================
# The scenario model
# =============================================================================================


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
            return f"say {_show(self.say)}"
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
            extras.append(f"{k}={fmt_duration(v) if k in ('within', 'during') else _show(v)}")
        return head + (" " + " ".join(extras) if extras else "")


@dataclass
class PhoneSpec:
    id: str
    line: int
    phone: VirtualPhone


@dataclass
class Scenario:
    path: Path
    version: int
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    within: float = DEFAULT_WITHIN_S
    config: dict[str, Any] = field(default_factory=dict)
    config_node: yaml.Node | None = None
    daemon: bool = True
    phones: list[PhoneSpec] = field(default_factory=list)
    backend: dict[str, Any] = field(default_factory=dict)
    navigation: dict[str, Any] = field(default_factory=dict)
    bluez: dict[str, float] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return str(self.path)

    def world_spec(self) -> WorldSpec:
        return WorldSpec(phones=[dataclasses.replace(p.phone) for p in self.phones], config=self.config,
                         daemon=self.daemon, backend=dict(self.backend), navigation=dict(self.navigation),
                         bluez=dict(self.bluez))


# =============================================================================================
# The action registry: every step kind/action, its parameters and its implementation
# =============================================================================================

Handler = Callable[["Run", Step], Awaitable[None]]


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
           **params: Param) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ACTIONS[(kind, name)] = Action(kind, name, dict(params), doc, fn, tuple(needs))
        return fn

    return deco


def value_kind(kind: str, main: Param, doc: str, /, *, needs: Sequence[str] = (),
               **params: Param) -> Callable[[Handler], Handler]:
    """A step whose kind key carries the main value, e.g. ``expect_signal: Phones1.PairingFinished``."""
    VALUE_KINDS[kind] = (kind, main)

    def deco(fn: Handler) -> Handler:
        ACTIONS[(kind, "")] = Action(kind, "", {kind: main, **params}, doc, fn, tuple(needs))
        return fn

    return deco


COMMON_STEP_KEYS = {"say": Param("str", doc="a line for the timeline (what the driver would see)")}


# =============================================================================================
# Loading
# =============================================================================================


class _File:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def fail(self, node: yaml.Node | None, message: str) -> typing.NoReturn:
        raise ScenarioError(self.name, _line(node), message)


def _mapping(f: _File, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        f.fail(node, f"{what}: expected a mapping, got {_show(_construct(node))}")
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    seen: set[str] = set()
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            f.fail(k, f"{what}: keys must be plain words")
        key = str(k.value)
        if key in seen:
            f.fail(k, f"{what}: {key} is given twice")
        seen.add(key)
        out.append((key, k, v))
    return out


TOP_KEYS = {
    "version": "schema version (1)",
    "name": "what the scenario shows, one line",
    "description": "more words for the report",
    "tags": "labels to select scenarios by",
    "timeout": "budget for the whole scenario (default 60s)",
    "defaults": "defaults for steps: within (the deadline of expectations, default 5s)",
    "world": "the world at the start: config, phones, backend, navigation, daemon",
    "steps": "what happens, in order",
}
WORLD_KEYS = {
    "config": "daemon config overrides (same keys as /etc/dashbridge/config.yaml)",
    "daemon": "start the daemon (default true)",
    "phones": "virtual phones in the world",
    "backend": "the fake cloud backend at the start",
    "navigation": "the dashboard's fake navigation service at the start",
    "bluez": "fake bluetoothd timings, e.g. {agent_timeout: 3s} (see simulator/bluez.py BluezTimings)",
}


def load_file(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(p), None, f"cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ScenarioError(str(p), None, "not UTF-8 text") from None
    return loads(text, p)


def load_world(path: str | Path) -> Scenario:
    """Only the world of a scenario file (``dashbridge-sim up --world``, ``shell --world``): the
    same checks, ``steps`` optional."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(p), None, f"cannot read ({exc.strerror})") from None
    return loads(text, p, steps_required=False)


def loads(text: str, path: str | Path = "<scenario>", *, steps_required: bool = True) -> Scenario:
    f = _File(Path(path))
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f.name, mark.line + 1 if mark else None, f"not valid YAML ({problem})") from None
    if root is None:
        f.fail(None, "the file is empty: expected version, name, world and steps")
    top = {k: (kn, v) for k, kn, v in _mapping(f, root, "the file")}
    for key, (kn, _) in top.items():
        if key not in TOP_KEYS:
            f.fail(kn, f"unknown key {key} (known at the top: {', '.join(TOP_KEYS)})")
    if "version" not in top:
        f.fail(root, f"version: missing (this runner reads versions {', '.join(map(str, SCHEMA_VERSIONS))})")
    vnode = top["version"][1]
    version = _construct(vnode)
    if version not in SCHEMA_VERSIONS:
        f.fail(vnode, f"version: expected {' or '.join(map(str, SCHEMA_VERSIONS))}, got {_show(version)}")
    if "name" not in top:
        f.fail(root, "name: missing (one line saying what the scenario shows)")
    sc = Scenario(path=f.path, version=int(version), name=_conv_str(f, top["name"][1], "name", Param("str")))
    if "description" in top:
        sc.description = _conv_str(f, top["description"][1], "description", Param("str"))
    if "tags" in top:
        tags = _conv_list(f, top["tags"][1], "tags", Param("list"))
        sc.tags = tuple(str(t) for t in tags)
    if "timeout" in top:
        sc.timeout = _conv_duration(f, top["timeout"][1], "timeout", Param("duration"))
    if "defaults" in top:
        for key, kn, v in _mapping(f, top["defaults"][1], "defaults"):
            if key != "within":
                f.fail(kn, f"defaults: unknown key {key} (known: within)")
            sc.within = _conv_duration(f, v, "defaults.within", Param("duration"))
    if "world" in top:
        _load_world(f, top["world"][1], sc)
    if "steps" not in top:
        if not steps_required:
            return sc
        f.fail(root, "steps: missing (a list of what happens)")
    snode = top["steps"][1]
    if not isinstance(snode, yaml.SequenceNode) or not snode.value:
        f.fail(snode, "steps: expected a list with at least one step")
    phone_ids = {p.id for p in sc.phones}
    for i, node in enumerate(snode.value, 1):
        sc.steps.append(_load_step(f, node, i, phone_ids))
    return sc


def _load_world(f: _File, node: yaml.Node, sc: Scenario) -> None:
    if _is_null(node):
        return
    for key, kn, v in _mapping(f, node, "world"):
        if key not in WORLD_KEYS:
            f.fail(kn, f"world: unknown key {key} (known: {', '.join(WORLD_KEYS)})")
        if key == "config":
            sc.config = _conv_map(f, v, "world.config", Param("map")) if not _is_null(v) else {}
            sc.config_node = v
            _check_config(f, v, sc.config)
        elif key == "daemon":
            sc.daemon = _conv_bool(f, v, "world.daemon", Param("bool"))
        elif key == "phones":
            if not isinstance(v, yaml.SequenceNode):
                f.fail(v, "world.phones: expected a list of phones")
            for i, pn in enumerate(v.value):
                sc.phones.append(_load_phone(f, pn, i, sc.phones))
        elif key == "backend":
            sc.backend = _load_options(f, v, "world.backend", BACKEND_OPTIONS)
        elif key == "navigation":
            sc.navigation = _load_options(f, v, "world.navigation", NAVIGATION_OPTIONS)
        elif key == "bluez":
            sc.bluez = _load_bluez(f, v)


BACKEND_OPTIONS = {
    "state": Param("str", choices=("online", "offline", "blackhole", "untrusted_tls"),
                   doc="the configured address at the start"),
    "phase": Param("str", choices=("original", "migrating", "migrated"), doc="migration phase at the start"),
    "auto_approve": Param("bool", doc="registrations complete at once (default true)"),
    "lease": Param("duration", doc="how long entitlement documents are valid (default 30d)"),
    "features": Param("map", doc="entitled features, e.g. {remote_navigation: {enabled: true}}"),
    "enabled": Param("bool", doc="false: the daemon gets no cloud config at all"),
}
NAVIGATION_OPTIONS = {
    "running": Param("bool", doc="the navigation service is on the bus at the start (default true)"),
    "mode": Param("str", choices=("ok", "error", "hang"), doc="how it answers"),
}


def _load_options(f: _File, node: yaml.Node, where: str, spec: dict[str, Param]) -> dict[str, Any]:
    if _is_null(node):
        return {}
    out: dict[str, Any] = {}
    for key, kn, v in _mapping(f, node, where):
        p = spec.get(key)
        if p is None:
            f.fail(kn, f"{where}: unknown key {key} (known: {', '.join(spec)})")
        out[key] = _PARAM_TYPES[p.type](f, v, f"{where}.{key}", p)
    return out


def _load_bluez(f: _File, node: yaml.Node) -> dict[str, float]:
    try:
        from .bluez import BluezTimings
    except ModuleNotFoundError:
        f.fail(node, "world.bluez: this tree has no fake bluetoothd (simulator/bluez.py)")
    known = [x.name for x in dataclasses.fields(BluezTimings)]
    out = {}
    for key, kn, v in _mapping(f, node, "world.bluez"):
        if key not in known:
            f.fail(kn, f"world.bluez: unknown timing {key} (known: {', '.join(known)})")
        out[key] = _conv_duration(f, v, f"world.bluez.{key}", Param("duration"))
    return out


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _check_config(f: _File, node: yaml.Node, data: dict[str, Any]) -> None:
    """Validate overrides with the daemon's own loader; point at the offending line here."""
    from dashbridge.daemon.config import Config, ConfigError
    from dashbridge.daemon.config import overrides as config_overrides

    try:
        config_overrides(Config(), data, "<config>")
    except ConfigError as exc:
        text = str(exc)
        # "<config>:LINE key.path: message" -> find key.path in our own node tree
        m = re.match(r"^<config>(?::\d+)? (\S+?): (.*)$", text, re.S)
        key_path, msg = (m.group(1), m.group(2)) if m else ("", text)
        target = _find_node(node, key_path)
        f.fail(target or node, f"world.config.{key_path}: {msg}" if key_path else f"world.config: {msg}")


def _find_node(node: yaml.Node, dotted: str) -> yaml.Node | None:
    cur: yaml.Node | None = node
    best = node
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        if cur is None:
            break
        if part.startswith("[") and isinstance(cur, yaml.SequenceNode):
            idx = int(part[1:-1])
            cur = cur.value[idx] if idx < len(cur.value) else None
        elif isinstance(cur, yaml.MappingNode):
            nxt = None
            for k, v in cur.value:
                if isinstance(k, yaml.ScalarNode) and k.value == part:
                    nxt = v
                    best = k
                    break
            cur = nxt
        else:
            cur = None
        if cur is not None:
            best = cur
    return best


_PHONE_FIELDS = {f.name: f for f in dataclasses.fields(VirtualPhone)}
_PHONE_HINTS = typing.get_type_hints(VirtualPhone)
PHONE_SUGAR = {
    "id": "the phone's handle in steps (default: its name)",
    "contacts": "[{name, number}, ...], {generated: N} or {vcf: file.vcf} (relative to the scenario file), "
                "the last two with plus: [{name, number}, ...]",
}


def _load_phone(f: _File, node: yaml.Node, i: int, earlier: list[PhoneSpec]) -> PhoneSpec:
    items = _mapping(f, node, f"world.phones[{i}]")
    keys = {k: (kn, v) for k, kn, v in items}
    for req in ("name", "address"):
        if req not in keys:
            f.fail(node, f"world.phones[{i}].{req}: missing")
    kwargs: dict[str, Any] = {}
    pid: str | None = None
    extra: dict[str, Any] = {}
    plus: list[dict[str, Any]] = []
    for key, kn, v in items:
        where = f"world.phones[{i}].{key}"
        if key == "id":
            pid = _conv_name(f, v, where, Param("name"))
        elif key == "contacts":
            if isinstance(v, yaml.SequenceNode):
                plus = _load_contacts(f, v, where)
                continue
            c = _conv_map(f, v, where, Param("map"))
            if set(c) - {"generated", "vcf", "plus"} or not ({"generated", "vcf"} & set(c)) or \
                    {"generated", "vcf"} <= set(c):
                f.fail(v, f"{where}: expected a list of {{name, number}}, {{generated: N}} or {{vcf: file.vcf}} "
                          f"(either with plus: [more contacts]), got {_show(c)}")
            if "generated" in c:
                if isinstance(c["generated"], bool) or not isinstance(c["generated"], int) or c["generated"] < 0:
                    f.fail(v, f"{where}.generated: expected a whole number >= 0, got {_show(c['generated'])}")
                kwargs["generated_contacts"] = c["generated"]
            else:
                vcf = (f.path.parent / str(c["vcf"])).resolve()
                if not vcf.is_file():
                    f.fail(v, f"{where}.vcf: no such file {vcf}")
                kwargs["contacts_vcf"] = str(vcf)
            if "plus" in c:
                pnode = next(pv for pk, pv in v.value if pk.value == "plus")
                if not isinstance(pnode, yaml.SequenceNode):
                    f.fail(pnode, f"{where}.plus: expected a list of {{name, number}}")
                plus = _load_contacts(f, pnode, where + ".plus")
        elif key == "messages":
            kwargs["messages"] = _load_messages(f, v, where)
        elif key in _PHONE_FIELDS and key != "extra":
            kwargs[key] = _phone_field(f, v, where, _PHONE_HINTS[key])
        elif key == "extra":
            extra = _conv_map(f, v, where, Param("map"))
        else:
            known = sorted([*PHONE_SUGAR, *(n for n in _PHONE_FIELDS if n != "extra")])
            f.fail(kn, f"{where}: unknown key (known: {', '.join(known)})")
    addr = str(kwargs["address"])
    if not ADDRESS_RE.match(addr):
        f.fail(keys["address"][1], f'world.phones[{i}].address: expected "AA:BB:CC:DD:EE:FF", got {_show(addr)}')
    for p in kwargs.get("profiles", ()):
        if p not in PROFILE_UUIDS:
            f.fail(keys["profiles"][1], f"world.phones[{i}].profiles: unknown profile {_show(p)} "
                                        f"(known: {', '.join(PROFILE_UUIDS)})")
    phone = VirtualPhone(**kwargs)
    phone.extra.update(extra)
    if plus:
        _add_contacts(phone, plus)
    pid = pid or re.sub(r"\W+", "_", phone.name).strip("_").lower() or f"phone{i + 1}"
    for e in earlier:
        if e.id == pid:
            f.fail(node, f"world.phones[{i}]: id {pid} is already used by the phone at line {e.line}")
        if e.phone.address == phone.address:
            f.fail(node, f"world.phones[{i}]: address {phone.address} is already used at line {e.line}")
    return PhoneSpec(pid, _line(node) or 0, phone)


MESSAGE_KEYS = {"type": "sms (default), mms or email", "folder": "inbox (default), outbox, sent, deleted, draft",
                "sender": "number or e-mail address", "sender_name": "", "recipient": "", "subject": "",
                "text": "the SMS text or the e-mail's body", "timestamp": "YYYYMMDDTHHMMSS (default: now)",
                "read": "already read on the phone"}
_MAP_TYPES = {"sms": "SMS_GSM", "mms": "MMS", "email": "EMAIL"}


def _load_messages(f: _File, node: yaml.Node, where: str) -> list[Any]:
    """Messages already on the phone at the start: ``[{type, sender, text, ...}]``."""
    from .phone import PhoneMessage

    if not isinstance(node, yaml.SequenceNode):
        f.fail(node, f"{where}: expected a list of messages")
    out = []
    for i, mn in enumerate(node.value):
        m: dict[str, Any] = {}
        for key, kn, v in _mapping(f, mn, f"{where}[{i}]"):
            if key not in MESSAGE_KEYS:
                f.fail(kn, f"{where}[{i}]: unknown key {key} (known: {', '.join(MESSAGE_KEYS)})")
            m[key] = _conv_bool(f, v, key, Param("bool")) if key == "read" else _conv_str(f, v, key, Param("str"))
        mtype = _MAP_TYPES.get(str(m.get("type", "sms")).lower())
        if mtype is None:
            f.fail(mn, f"{where}[{i}].type: expected sms, mms or email, got {_show(m.get('type'))}")
        if m.get("folder", "inbox") not in ("inbox", "outbox", "sent", "deleted", "draft"):
            f.fail(mn, f"{where}[{i}].folder: expected inbox, outbox, sent, deleted or draft")
        body = m.get("text", "")
        if mtype == "EMAIL":
            from .obex_map import make_email

            body = make_email(m.get("sender", ""), m.get("sender_name", ""), m.get("subject", ""), body)
        out.append(PhoneMessage(handle=i + 1, folder=m.get("folder", "inbox"), type=mtype,
                                sender=m.get("sender", ""), sender_name=m.get("sender_name", ""),
                                recipient=m.get("recipient", ""), subject=m.get("subject", ""), body=body,
                                timestamp=m.get("timestamp") or time.strftime("%Y%m%dT%H%M%S"),
                                read=bool(m.get("read", False))))
    return out


CONTACT_KEYS = {"name": "shown name (FN)", "number": "a phone number", "numbers": "several numbers",
                "type": "cell|home|work (default cell)", "email": "an e-mail address"}


def _load_contacts(f: _File, node: yaml.SequenceNode, where: str) -> list[dict[str, Any]]:
    out = []
    for i, cn in enumerate(node.value):
        items = _mapping(f, cn, f"{where}[{i}]")
        c: dict[str, Any] = {}
        for key, kn, v in items:
            if key not in CONTACT_KEYS:
                f.fail(kn, f"{where}[{i}]: unknown key {key} (known: {', '.join(CONTACT_KEYS)})")
            c[key] = _construct(v)
        if "name" not in c or not ({"number", "numbers", "email"} & set(c)):
            f.fail(cn, f"{where}[{i}]: a contact needs name and a number (or email)")
        out.append(c)
    return out


def _add_contacts(phone: VirtualPhone, contacts: list[dict[str, Any]]) -> None:
    """Contacts written in the scenario, added to the phone's phonebook (after the generated ones
    or the .vcf's) — so a scenario knows a caller's number and name."""
    from .obex_pbap import book_for
    from .vcards import SimContact

    book = book_for(phone)
    for c in contacts:
        numbers = [str(n) for n in c.get("numbers", [])] + ([str(c["number"])] if "number" in c else [])
        name = str(c["name"])
        given, _, family = name.partition(" ")
        book.contacts.append(SimContact(family=family, given=given, fn=name,
                                        numbers=[(n, str(c.get("type", "cell"))) for n in numbers],
                                        emails=[str(c["email"])] if "email" in c else []))


def _phone_field(f: _File, node: yaml.Node, where: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return _conv_str(f, node, where, Param("str", choices=tuple(map(str, args))))
    if origin in (typing.Union, __import__("types").UnionType):
        if _is_null(node) and type(None) in args:
            return None
        return _phone_field(f, node, where, next(a for a in args if a is not type(None)))
    if tp is bool:
        return _conv_bool(f, node, where, Param("bool"))
    if tp is int:
        return _conv_int(f, node, where, Param("int"))
    if tp is float:
        return float(_conv_number(f, node, where, Param("number")))
    if tp is str:
        return _conv_str(f, node, where, Param("str"))
    if origin is tuple:
        return tuple(str(x) for x in _conv_list(f, node, where, Param("list")))
    if origin is list:
        return list(_conv_list(f, node, where, Param("list")))
    if origin is dict:
        return dict(_conv_map(f, node, where, Param("map")))
    return _construct(node)


def _load_step(f: _File, node: yaml.Node, index: int, phone_ids: set[str]) -> Step:
    items = _mapping(f, node, f"step {index}")
    keys = {k: (kn, v) for k, kn, v in items}
    all_kinds = [*KINDS, *VALUE_KINDS]
    kinds = [k for k in keys if k in all_kinds]
    if "phone" in kinds and len(kinds) > 1 and "do" not in keys:
        kinds.remove("phone")  # "phone:" is a parameter of that step (e.g. dashboard: connect)
    if len(kinds) > 1:
        f.fail(node, f"step {index}: one kind per step, got {', '.join(kinds)}")
    say = None
    if "say" in keys:
        say = _conv_str(f, keys["say"][1], "say", Param("str"))
    if not kinds:
        if say is not None and len(keys) == 1:
            return Step(index, _line(node) or 0, "say", "", {}, say=say)
        given = ", ".join(keys) or "nothing"
        f.fail(node, f"step {index}: no step kind in {given} (expected one of {', '.join(all_kinds)}, or say)")
    kind = kinds[0]
    kv = keys[kind][1]
    phone = None
    if kind in VALUE_KINDS:
        act = ACTIONS[(kind, "")]
        name = ""
        raw = {k: v for k, v in keys.items() if k not in ("say",)}
    elif kind == "phone":
        phone = _conv_str(f, kv, "phone", Param("str"))
        if phone not in phone_ids:
            f.fail(kv, f"phone: no phone with id {_show(phone)} in world.phones "
                       f"(ids: {', '.join(sorted(phone_ids)) or 'none'})")
        if "do" not in keys:
            f.fail(node, f"step {index}: phone steps need do: (one of {_names('phone')})")
        name = _conv_str(f, keys["do"][1], "do", Param("str"))
        kv = keys["do"][1]
        raw = {k: v for k, v in keys.items() if k not in ("phone", "do", "say")}
    else:
        name = _conv_str(f, kv, kind, Param("str"))
        raw = {k: v for k, v in keys.items() if k not in (kind, "say")}
    if kind not in VALUE_KINDS:
        found = ACTIONS.get((kind, name))
        if found is None:
            f.fail(kv, f"{kind}: unknown action {_show(name)} (known: {_names(kind)})")
        act = found
    params: dict[str, Any] = {}
    for key, (pkn, pv) in raw.items():
        spec = act.params.get(key)
        if spec is None:
            known = ", ".join([*act.params, "say"])
            what = f"{kind} {name}".strip() if kind not in VALUE_KINDS else kind
            f.fail(pkn, f"{what}: unknown parameter {key} (known: {known})")
        params[key] = _PARAM_TYPES[spec.type](f, pv, key, spec)
    for key, spec in act.params.items():
        if key not in params:
            if spec.required:
                what = f"{kind} {name}".strip()
                f.fail(node, f"{what}: {key} is required ({spec.doc})")
            params[key] = spec.default
    return Step(index, _line(node) or 0, kind, name, params, say=say, phone=phone)


def _names(kind: str) -> str:
    return ", ".join(sorted(n for (k, n) in ACTIONS if k == kind)) or "none yet"


# =============================================================================================
# Running
# =============================================================================================


@dataclass
class StepResult:
    index: int
    line: int
    text: str
    ok: bool
    seconds: float
    detail: str = ""
    say: str | None = None


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

    def __init__(self, sc: Scenario, narrator: Narrator | None = None) -> None:
        self.sc = sc
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
                raise StepFailed(f"${{{name}{dotted}}}: {_show(cur)} has no {part}")
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
                result.steps.append(StepResult(failing.index, failing.line, failing.describe(), False,
                                               time.monotonic() - self.step_t0, result.error, failing.say))
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
        sr = StepResult(step.index, step.line, step.describe(), True, time.monotonic() - self.step_t0,
                        say=step.say)
        result.steps.append(sr)
        self.narrator.done(self, step, sr)


async def run_scenario(sc: Scenario, narrator: Narrator | None = None) -> ScenarioResult:
    return await Run(sc, narrator).execute()


# =============================================================================================
# Built-in steps: time, the dashboard (public API), expectations
# =============================================================================================


@value_kind("wait", Param("duration", required=True, doc="real time to let pass"),
            "let real time pass (only when the scenario is about time; expectations wait by themselves)")
async def _wait(run: Run, step: Step) -> None:
    await asyncio.sleep(step.params["wait"])


def _signal_pred(run: Run, step: Step, member: str, args: Any) -> Callable[[Event], bool]:
    try:
        m = run.dash.api.resolve(member, "signal")
        iface, name = m.interface, m.name
    except KeyError:
        # PropertiesChanged of an org.dashbridge interface: "Phones1.PropertiesChanged"
        iface, _, name = member.rpartition(".")
        if name != "PropertiesChanged":
            raise
        iface = iface if iface.startswith("org.") else "org.dashbridge." + iface
    want = run.subst(args) if args is not None else None

    def pred(ev: Event) -> bool:
        if ev.interface != iface or ev.member != name:
            return False
        return want is None or match(want, ev.named) is None

    return pred


def _explain_signal(run: Run, member: str, args: Any, since: int) -> str:
    """Why nothing matched: the closest signals of that name, with the mismatch."""
    want = run.subst(args) if args is not None else None
    short = member.rsplit(".", 1)[-1]
    near = [ev for ev in run.dash.events[since:] if ev.member == short]
    lines = []
    for ev in near[-3:]:
        why = match(want, ev.named) if want is not None else None
        lines.append(f"    {ev.describe()}\n      differs: {why}" if why else f"    {ev.describe()}")
    seen = "\n".join(lines) if lines else "    (none of that name)"
    return f"  {short} signals seen:\n{seen}\n  all signals since the step before:\n{run.events_since(since)}"


@value_kind("expect_signal", Param("signal", required=True, doc="Interface.Signal, e.g. Phones1.PairingFinished"),
            "the dashboard receives this signal (since the last action step) within the deadline",
            args=Param("matcher", doc="what its arguments must match (by name, see docs/api/)"),
            within=Param("duration", doc="deadline (default: defaults.within)"),
            count=Param("int", default=1, doc="at least this many matching signals"),
            since=Param("str", default="step", choices=("step", "start"),
                        doc="look from the last action step (default) or from the scenario's start"),
            after=Param("name", doc="only after the signal saved under this name (ordering)"),
            save=Param("name", doc="keep the (last) matching signal's arguments under this name"))
async def _expect_signal(run: Run, step: Step) -> None:
    p = step.params
    within = p["within"] if p["within"] is not None else run.sc.within
    since = 0 if p["since"] == "start" else run.mark
    if p["after"] is not None:
        if p["after"] not in run.saved_seq:
            raise StepFailed(f"after: no signal was saved as {p['after']}")
        since = run.saved_seq[p["after"]] + 1
    try:
        pred = _signal_pred(run, step, p["expect_signal"], p["args"])
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    found: list[Event] = []
    pos = since
    try:
        async with asyncio.timeout(within):
            while len(found) < p["count"]:
                ev = await run.dash.wait_for(pred, within + 1, since=pos)
                found.append(ev)
                pos = ev.seq + 1
    except TimeoutError:
        got = f" (saw {len(found)} of {p['count']})" if p["count"] > 1 else ""
        raise StepFailed(f"not seen within {fmt_duration(within)}{got}\n"
                         + _explain_signal(run, p["expect_signal"], p["args"], since)) from None
    if p["save"]:
        run.saved[p["save"]] = found[-1].named
        run.saved_seq[p["save"]] = found[-1].seq


@value_kind("expect_no_signal", Param("signal", required=True, doc="Interface.Signal"),
            "the dashboard does NOT receive this signal during the given time (absence takes time to show)",
            args=Param("matcher", doc="only signals whose arguments match count"),
            during=Param("duration", required=True, doc="how long to watch (real time)"),
            since=Param("str", default="step", choices=("step", "start")))
async def _expect_no_signal(run: Run, step: Step) -> None:
    p = step.params
    since = 0 if p["since"] == "start" else run.mark
    try:
        pred = _signal_pred(run, step, p["expect_no_signal"], p["args"])
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    try:
        ev = await run.dash.wait_for(pred, p["during"], since=since)
    except TimeoutError:
        return
    raise StepFailed(f"it came: {ev.describe()}\n  all signals since the step before:\n{run.events_since(since)}")


@value_kind("expect_property", Param("property", required=True, doc="Interface.Property, e.g. Daemon1.Health"),
            "a property of org.dashbridge matches within the deadline (re-read whenever the daemon signals)",
            value=Param("matcher", required=True, doc="what the property's value must match"),
            within=Param("duration", doc="deadline (default: defaults.within)"),
            save=Param("name", doc="keep the value under this name"))
async def _expect_property(run: Run, step: Step) -> None:
    p = step.params
    within = p["within"] if p["within"] is not None else run.sc.within
    try:
        run.dash.api.resolve(p["expect_property"], "property")
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    want = run.subst(p["value"])
    last: Any = None
    why: str | None = "never read"
    try:
        async with asyncio.timeout(within):
            while True:
                # Wait for the next signal *before* reading, so a change between the read and
                # the wait is not missed (any daemon signal may come with a property change).
                nxt = asyncio.ensure_future(run.dash.changed())
                try:
                    last = await run.dash.get(p["expect_property"], timeout=within)
                    why = match(want, last)
                    if why is None:
                        break
                    await nxt
                finally:
                    nxt.cancel()
    except TimeoutError:
        raise StepFailed(f"not so within {fmt_duration(within)}: {why}\n  last value: {_show(last)}") from None
    if p["save"]:
        run.saved[p["save"]] = last


@action("dashboard", "call", "call any documented org.dashbridge method (Interface.Method) with arguments",
        method=Param("method", required=True, doc="Interface.Method, e.g. Phones1.OpenPairingWindow"),
        args=Param("list", default=[], doc="the arguments, in order (see docs/api/)"),
        expect_error=Param("str", doc="the call must fail with this error (e.g. NotReady)"),
        result=Param("matcher", doc="what the reply must match"),
        save=Param("name", doc="keep the reply under this name"))
async def _dashboard_call(run: Run, step: Step) -> None:
    p = step.params
    await dashboard_call(run, p["method"], run.subst(p["args"]), expect_error=p["expect_error"],
                         result=p["result"], save=p["save"])


async def dashboard_call(run: Run, method: str, args: Sequence[Any], *, expect_error: str | None = None,
                         result: Any = None, save: str | None = None) -> Any:
    try:
        reply = await run.dash.call(method, list(args))
    except KeyError as exc:
        raise StepFailed(str(exc.args[0])) from None
    except BusError as exc:
        if expect_error and (exc.name == expect_error or exc.name.endswith("." + expect_error)):
            if save:
                run.saved[save] = {"error": exc.name, "message": exc.text}
            return None
        raise StepFailed(f"the daemon answered {exc.name}: {exc.text}") from None
    if expect_error:
        raise StepFailed(f"expected the error {expect_error}, but the call succeeded: {_show(reply)}")
    if result is not None:
        why = match(run.subst(result), reply)
        if why:
            raise StepFailed(f"reply does not match: {why}")
    if save:
        run.saved[save] = reply
    return reply


@action("daemon", "restart", "stop the daemon (SIGTERM) and start it again on the same state")
async def _daemon_restart(run: Run, step: Step) -> None:
    await run.w.restart_daemon()


@action("daemon", "kill", "SIGKILL the daemon (power loss) and start it again on the same state")
async def _daemon_kill(run: Run, step: Step) -> None:
    await run.w.restart_daemon(kill=True)


@action("daemon", "stop", "stop the daemon (SIGTERM)")
async def _daemon_stop(run: Run, step: Step) -> None:
    await run.w.stop_daemon()


@action("daemon", "start", "start the daemon (after stop) on the same state")
async def _daemon_start(run: Run, step: Step) -> None:
    await run.w.start_daemon()


# Capability steps (phones, fakes' faults, dashboard sugar) are registered by
# simulator/scenario_steps.py-style sections below as the fakes land.
from . import steps as _steps  # noqa: E402,F401  (registers the capability steps)

# =============================================================================================
# Many files: parallel workers, report, JUnit
# =============================================================================================


async def run_file(path: str | Path, narrator: Narrator | None = None) -> ScenarioResult:
    try:
        sc = load_file(path)
    except ScenarioError as exc:
        return ScenarioResult(str(path), Path(path).stem, False, 0.0, error=exc.message, line=exc.line,
                              load_error=True)
    return await run_scenario(sc, narrator)


async def _run_in_worker(path: str) -> ScenarioResult:
    """One scenario in a child process (isolation: its own fakes, buses and daemon)."""
    fd, out = tempfile.mkstemp(prefix="dashbridge-scenario-", suffix=".json")
    os.close(fd)
    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dashbridge.simulator", "run", "--worker", out, path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
        try:
            output, _ = await proc.communicate()
        except asyncio.CancelledError:
            # The run was interrupted (Ctrl-C): let the worker stop its world (SIGINT cancels its
            # scenario, whose clean-up stops the daemon, the fakes and the buses), then go.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.shield(asyncio.wait_for(proc.wait(), WORKER_STOP_S))
                except (TimeoutError, asyncio.CancelledError):
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            raise
        try:
            data = json.loads(await asyncio.to_thread(Path(out).read_text) or "null")
        except (OSError, ValueError):
            data = None
        if not data:
            return ScenarioResult(path, Path(path).stem, False, time.monotonic() - t0,
                                  error=f"the scenario worker died (exit {proc.returncode})",
                                  details=output.decode(errors="replace")[-4000:])
        return ScenarioResult.from_json(data)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)


async def run_many(paths: Sequence[str], jobs: int, on_result: Callable[[ScenarioResult], None] | None = None,
                   *, in_process: bool = False) -> list[ScenarioResult]:
    sem = asyncio.Semaphore(max(1, jobs))
    results: list[ScenarioResult | None] = [None] * len(paths)

    async def one(i: int, path: str) -> None:
        async with sem:
            r = await (run_file(path) if in_process else _run_in_worker(path))
        results[i] = r
        if on_result:
            on_result(r)

    async with asyncio.TaskGroup() as tg:
        for i, path in enumerate(paths):
            tg.create_task(one(i, path))
    return [r for r in results if r is not None]


def format_result(r: ScenarioResult, *, verbose: bool = False) -> str:
    status = "PASS" if r.ok else ("BAD " if r.load_error else "FAIL")
    lines = [f"{status}  {r.name}  ({Path(r.file).name}, {r.seconds:.1f}s)"]
    if verbose or not r.ok:
        for s in r.steps:
            mark = "ok " if s.ok else "XX "
            lines.append(f"      {mark} {s.index:>2}. line {s.line:<4} {s.text}  [{s.seconds:.2f}s]")
    if not r.ok:
        where = f"{r.file}:{r.line}" if r.line else r.file
        lines.append(f"      {where}: {r.error}")
        if r.details:
            lines.extend("    " + ln for ln in r.details.splitlines())
    return "\n".join(lines)


def summary(results: Sequence[ScenarioResult], seconds: float) -> str:
    passed = sum(r.ok for r in results)
    failed = len(results) - passed
    word = "scenario" if len(results) == 1 else "scenarios"
    return f"{len(results)} {word}: {passed} passed, {failed} failed ({seconds:.1f}s)"


def junit_xml(results: Sequence[ScenarioResult], seconds: float) -> str:
    failures = sum(1 for r in results if not r.ok and not r.load_error)
    errors = sum(1 for r in results if r.load_error)
    suites = ET.Element("testsuites", name="dashbridge-sim", tests=str(len(results)), failures=str(failures),
                        errors=str(errors), time=f"{seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="scenarios", tests=str(len(results)),
                          failures=str(failures), errors=str(errors), time=f"{seconds:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"scenarios.{Path(r.file).stem}", name=r.name,
                             file=r.file, time=f"{r.seconds:.3f}")
        if r.line:
            case.set("line", str(r.line))
        if not r.ok:
            where = f"{r.file}:{r.line}" if r.line else r.file
            el = ET.SubElement(case, "error" if r.load_error else "failure", message=f"{where}: {r.error}")
            el.text = format_result(r, verbose=True)
        else:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(f"{s.index}. line {s.line} {s.text} [{s.seconds:.2f}s]" for s in r.steps)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def expand(paths: Iterable[str]) -> list[str]:
    """Files as given; a directory means every *.yaml in it."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(sorted(str(x) for x in Path(p).glob("*.yaml")))
        else:
            out.append(p)
    return out


def library() -> list[str]:
    """The scenario library shipped in simulator/scenarios/."""
    return sorted(str(p) for p in (Path(__file__).parent / "scenarios").glob("*.yaml"))


def vocabulary() -> str:
    """Every step kind, action and parameter, for ``dashbridge-sim run --list-steps``."""
    lines = []
    for (kind, name), act in sorted(ACTIONS.items()):
        head = f"{kind}: {name}" if name else f"{kind}: <{act.params[kind].doc}>"
        if kind == "phone":
            head = f"phone: <id>, do: {name}"
        needs = f"  [needs {', '.join(act.needs)}]" if act.needs else ""
        lines.append(f"{head}{needs}\n    {act.doc}")
        for pname, spec in act.params.items():
            if pname == kind:
                continue
            req = "required" if spec.required else f"default {_show(spec.default)}" if spec.default not in (
                None, []) else "optional"
            choices = f" ({'|'.join(spec.choices)})" if spec.choices else ""
            lines.append(f"      {pname}: {spec.type}{choices}, {req} — {spec.doc}")
    return "\n".join(lines)


__all__ = ["ACTIONS", "KINDS", "Narrator", "Run", "Scenario", "ScenarioError", "ScenarioResult", "Step",
           "StepFailed", "check_matcher", "junit_xml", "load_file", "loads", "match", "run_file", "run_many",
           "run_scenario", "summary"]
_ = Mapping
