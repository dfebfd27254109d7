"""Loading a scenario file: the schema (version 1, docs/scenarios.md), checked with file:line errors.

The YAML is read with the shared typed-YAML reader (``dashbridge.daemon.yamlload``), the one the
daemon's config loader uses; scenario messages show the offending value (the config's never do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dashbridge.daemon import yamlload
from dashbridge.daemon.config import Config, ConfigError
from dashbridge.daemon.config import overrides as config_overrides
from dashbridge.daemon.yamlload import construct as _construct
from dashbridge.daemon.yamlload import is_null as _is_null
from dashbridge.daemon.yamlload import line as _line

from ..phone import MESSAGE_KEYS as MESSAGE_KEYS
from ..phone import PROFILE_UUIDS, VirtualPhone
from ..world import ApiModel, WorldSpec
from .matchers import check_matcher
from .registry import ACTIONS, KINDS, VALUE_KINDS, Param, Step
from .values import ADDRESS_RE, SUBST_RE, show

SCHEMA_VERSIONS = (1,)
DEFAULT_WITHIN_S = 5.0
DEFAULT_TIMEOUT_S = 60.0


class ScenarioError(Exception):
    """A bad scenario file: ``str()`` is ``file:line: what was expected`` — one line per error
    when the file has several (:attr:`errors`, in the order found; ``line``/``message`` are the first's)."""

    def __init__(self, filename: str, line: int | None, message: str,
                 errors: list[ScenarioError] | None = None) -> None:
        self.filename = filename
        self.line = line
        self.message = message
        where = f"{filename}:{line}" if line else filename
        self.errors: list[ScenarioError] = errors or [self]
        super().__init__("\n".join(e.where_what for e in errors) if errors else f"{where}: {message}")

    @property
    def where_what(self) -> str:
        return f"{self.filename}:{self.line}: {self.message}" if self.line else f"{self.filename}: {self.message}"

    @classmethod
    def several(cls, errors: list[ScenarioError]) -> ScenarioError:
        first = errors[0]
        return first if len(errors) == 1 else cls(first.filename, first.line, first.message, errors)


def _conv_str(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        f.error(node, f"{key}: expected text, got {show(value)}")
    text = str(value)
    if p.choices and text not in p.choices:
        f.error(node, f"{key}: expected one of {', '.join(p.choices)}, got {show(text)}")
    return text


def _conv_int(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and SUBST_RE.fullmatch(value):
            return value
        f.error(node, f"{key}: expected a whole number, got {show(value)}")
    return value


def _conv_number(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool) or not isinstance(value, int | float):
        f.error(node, f"{key}: expected a number, got {show(value)}")
    return value


def _conv_bool(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if not isinstance(value, bool):
        f.error(node, f"{key}: expected true or false, got {show(value)}")
    return value


def _conv_duration(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    if isinstance(value, bool):
        f.error(node, f'{key}: expected a duration like "5s", "250ms", "3w", got {show(value)}')
    if isinstance(value, int | float):
        return float(value)
    try:
        return yamlload.parse_duration(str(value))
    except ValueError:
        f.error(node, f'{key}: expected a duration like "5s", "250ms", "3w", got {show(value)}')


def _conv_any(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    return _construct(node)


def _conv_list(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    if not isinstance(node, yaml.SequenceNode):
        f.error(node, f"{key}: expected a list, got {show(_construct(node))}")
    return _construct(node)


def _conv_map(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    if not isinstance(node, yaml.MappingNode):
        f.error(node, f"{key}: expected a mapping, got {show(_construct(node))}")
    return _construct(node)


def _conv_name(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    text = _conv_str(f, node, key, p)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        f.error(node, f"{key}: expected a name of letters, digits and _, got {show(text)}")
    return text


def _conv_matcher(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    value = _construct(node)
    err = check_matcher(value)
    if err:
        f.error(node, f"{key}: {err}")
    return value


def _conv_member(f: _File, node: yaml.Node, key: str, p: Param) -> Any:
    text = _conv_str(f, node, key, p)
    if not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*", text):
        f.error(node, f'{key}: expected Interface.Member, e.g. "Phones1.PairingFinished", got {show(text)}')
    return text


_API: Any = None


def _api() -> Any:
    global _API
    if _API is None:
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
                f.error(node, f'{key}: the daemon documents no interface {full}')
            return text
        try:
            _api().resolve(text, kind)
        except KeyError as exc:
            f.error(node, f"{key}: {exc.args[0]}")
        return text

    return conv


PARAM_TYPES: dict[str, Callable[[_File, yaml.Node, str, Param], Any]] = {
    "str": _conv_str, "int": _conv_int, "number": _conv_number, "bool": _conv_bool,
    "duration": _conv_duration, "any": _conv_any, "list": _conv_list, "map": _conv_map,
    "name": _conv_name, "matcher": _conv_matcher, "member": _conv_member,
    "signal": _documented("signal"), "property": _documented("property"), "method": _documented("method"),
}


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


class _File(yamlload.TypedReader):
    """The file being read; every error is a :class:`ScenarioError` naming its line.

    Typed values (a phone's fields) go through the shared reader (``yamlload``), with leaves
    read and worded as the step parameters are (the offending value is shown)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        self.name = str(path)
        self.errors: list[ScenarioError] = []
        self.broken_phones: set[str] = set()  # ids of phones with errors (steps may still name them)

    def error(self, node: yaml.Node | None, message: str) -> typing.NoReturn:
        raise ScenarioError(self.name, _line(node), message)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Note an error and go on with the next part of the file (every error is reported)."""
        try:
            yield
        except ScenarioError as exc:
            self.errors.extend(exc.errors)

    def fail(self, node: yaml.Node | None, path: str, msg: str) -> typing.NoReturn:
        self.error(node, f"{path}: {msg}")

    def duration(self, node: yaml.Node, path: str) -> Any:
        return _conv_duration(self, node, path, Param("duration"))

    def literal(self, node: yaml.Node, choices: tuple[Any, ...], path: str) -> Any:
        return _conv_str(self, node, path, Param("str", choices=tuple(map(str, choices))))

    def bool_(self, node: yaml.Node, path: str) -> Any:
        return _conv_bool(self, node, path, Param("bool"))

    def int_(self, node: yaml.Node, path: str) -> Any:
        return _conv_int(self, node, path, Param("int"))

    def float_(self, node: yaml.Node, path: str) -> Any:
        return float(_conv_number(self, node, path, Param("number")))

    def str_(self, node: yaml.Node, path: str) -> Any:
        return _conv_str(self, node, path, Param("str"))

    def tuple_(self, node: yaml.Node, item_tp: Any, path: str) -> Any:
        return tuple(str(x) for x in _conv_list(self, node, path, Param("list")))

    def list_(self, node: yaml.Node, item_tp: Any, path: str) -> Any:
        return list(_conv_list(self, node, path, Param("list")))

    def dict_(self, node: yaml.Node, val_tp: Any, path: str) -> Any:
        return dict(_conv_map(self, node, path, Param("map")))

    def other(self, node: yaml.Node, tp: Any, path: str) -> Any:
        return _construct(node)


def _mapping(f: _File, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        f.error(node, f"{what}: expected a mapping, got {show(_construct(node))}")
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    seen: set[str] = set()
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            f.error(k, f"{what}: keys must be plain words")
        key = str(k.value)
        if key in seen:
            f.error(k, f"{what}: {key} is given twice")
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


def _plus_numbers_as_text(node: yaml.Node) -> None:
    """An unquoted ``+447700900123`` is a phone number, not 447700900123: YAML would drop its +,
    so such plain scalars stay text (where a number is expected the step then says so, file:line)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.ScalarNode):
            if not n.style and n.value.startswith("+") and n.tag in (yamlload.INT_TAG, yamlload.FLOAT_TAG):
                n.tag = "tag:yaml.org,2002:str"
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))


def loads(text: str, path: str | Path = "<scenario>", *, steps_required: bool = True) -> Scenario:
    f = _File(Path(path))
    try:
        root = yamlload.compose(text)
    except yamlload.SyntaxProblem as exc:
        raise ScenarioError(f.name, exc.line, f"not valid YAML ({exc.problem or exc})") from None
    if root is None:
        f.error(None, "the file is empty: expected version, name, world and steps")
    _plus_numbers_as_text(root)
    try:
        sc = _loads(f, root, steps_required)
    except ScenarioError as exc:
        f.errors.extend(exc.errors)
    if f.errors:
        raise ScenarioError.several(f.errors)
    return sc


def _loads(f: _File, root: yaml.Node, steps_required: bool) -> Scenario:
    top = {k: (kn, v) for k, kn, v in _mapping(f, root, "the file")}
    for key, (kn, _) in top.items():
        if key not in TOP_KEYS:
            with f.guard():
                f.error(kn, f"unknown key {key} (known at the top: {', '.join(TOP_KEYS)})")
    if "version" not in top:
        f.error(root, f"version: missing (this runner reads versions {', '.join(map(str, SCHEMA_VERSIONS))})")
    vnode = top["version"][1]
    version = _construct(vnode)
    if version not in SCHEMA_VERSIONS:
        f.error(vnode, f"version: expected {' or '.join(map(str, SCHEMA_VERSIONS))}, got {show(version)}")
    if "name" not in top:
        f.error(root, "name: missing (one line saying what the scenario shows)")
    sc = Scenario(path=f.path, version=int(version), name=_conv_str(f, top["name"][1], "name", Param("str")))
    if "description" in top:
        with f.guard():
            sc.description = _conv_str(f, top["description"][1], "description", Param("str"))
    if "tags" in top:
        with f.guard():
            tags = _conv_list(f, top["tags"][1], "tags", Param("list"))
            for t in tags:
                if not isinstance(t, str | int) or isinstance(t, bool) or not re.fullmatch(r"[\w.-]+", str(t)):
                    f.error(top["tags"][1], f"tags: expected words (letters, digits, _ . -), got {show(t)}")
            sc.tags = tuple(str(t) for t in tags)
    if "timeout" in top:
        with f.guard():
            sc.timeout = _conv_duration(f, top["timeout"][1], "timeout", Param("duration"))
    if "defaults" in top:
        with f.guard():
            for key, kn, v in _mapping(f, top["defaults"][1], "defaults"):
                with f.guard():
                    if key != "within":
                        f.error(kn, f"defaults: unknown key {key} (known: within)")
                    sc.within = _conv_duration(f, v, "defaults.within", Param("duration"))
    if "world" in top:
        with f.guard():
            _load_world(f, top["world"][1], sc)
    if "steps" not in top:
        if not steps_required:
            return sc
        f.error(root, "steps: missing (a list of what happens)")
    snode = top["steps"][1]
    if not isinstance(snode, yaml.SequenceNode) or not snode.value:
        f.error(snode, "steps: expected a list with at least one step")
    phone_ids = {p.id for p in sc.phones}
    saved: dict[str, _Saved] = {}
    for i, node in enumerate(snode.value, 1):
        with f.guard():
            sc.steps.append(_load_step(f, node, i, phone_ids, saved))
    return sc


def _load_world(f: _File, node: yaml.Node, sc: Scenario) -> None:
    if _is_null(node):
        return
    for key, kn, v in _mapping(f, node, "world"):
        with f.guard():
            _load_world_key(f, key, kn, v, sc)


def _load_world_key(f: _File, key: str, kn: yaml.Node, v: yaml.Node, sc: Scenario) -> None:
    if True:
        if key not in WORLD_KEYS:
            f.error(kn, f"world: unknown key {key} (known: {', '.join(WORLD_KEYS)})")
        if key == "config":
            sc.config = _conv_map(f, v, "world.config", Param("map")) if not _is_null(v) else {}
            sc.config_node = v
            _check_config(f, v, sc.config)
        elif key == "daemon":
            sc.daemon = _conv_bool(f, v, "world.daemon", Param("bool"))
        elif key == "phones":
            if not isinstance(v, yaml.SequenceNode):
                f.error(v, "world.phones: expected a list of phones")
            for i, pn in enumerate(v.value):
                with f.guard():
                    try:
                        sc.phones.append(_load_phone(f, pn, i, sc.phones))
                    except ScenarioError:
                        f.broken_phones.add(_phone_id_of(pn, i))
                        raise
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
            f.error(kn, f"{where}: unknown key {key} (known: {', '.join(spec)})")
        out[key] = PARAM_TYPES[p.type](f, v, f"{where}.{key}", p)
    return out


def _load_bluez(f: _File, node: yaml.Node) -> dict[str, float]:
    try:
        from ..bluez import BluezTimings
    except ModuleNotFoundError:
        f.error(node, "world.bluez: this tree has no fake bluetoothd (simulator/bluez.py)")
    known = [x.name for x in dataclasses.fields(BluezTimings)]
    out = {}
    for key, kn, v in _mapping(f, node, "world.bluez"):
        if key not in known:
            f.error(kn, f"world.bluez: unknown timing {key} (known: {', '.join(known)})")
        out[key] = _conv_duration(f, v, f"world.bluez.{key}", Param("duration"))
    return out


def _check_config(f: _File, node: yaml.Node, data: dict[str, Any]) -> None:
    """Validate overrides with the daemon's own loader; point at the offending line here."""
    try:
        config_overrides(Config(), data, "<config>")
    except ConfigError as exc:
        text = str(exc)
        # "<config>:LINE key.path: message" -> find key.path in our own node tree
        m = re.match(r"^<config>(?::\d+)? (\S+?): (.*)$", text, re.S)
        key_path, msg = (m.group(1), m.group(2)) if m else ("", text)
        target = yamlload.find_node(node, key_path)
        f.error(target, f"world.config.{key_path}: {msg}" if key_path else f"world.config: {msg}")


_PHONE_FIELDS = {f.name: f for f in dataclasses.fields(VirtualPhone)}
_PHONE_HINTS = typing.get_type_hints(VirtualPhone)
PHONE_SUGAR = {
    "id": "the phone's handle in steps (default: its name)",
    "contacts": "[{name, number}, ...], {generated: N} or {vcf: file.vcf} (relative to the scenario file), "
                "the last two with plus: [{name, number}, ...]",
    "history": "the call history from a .vcf of call-history cards (X-IRMC-CALL-DATETIME) or a directory "
               "with ich.vcf/och.vcf/mch.vcf (or cch.vcf), relative to the scenario file",
    "messages": "[{type, sender, text, ...}], or a .yaml/.json file of such a list, or a directory of "
                "bMessages (*.bmsg), relative to the scenario file",
    "companion": "the carmaker's companion app runs on the phone (docs/ble-companion.md): true, or "
                 "{version, serve, running, max_chunk, destinations}",
}


COMPANION_KEYS = {
    "version": "the protocol version its service says, e.g. \"1.0\" (default) or \"2.0\"",
    "serve": "which characteristics it serves: [version, destinations, ack, lease] (default: all)",
    "running": "the app runs (default true; the step companion_app starts/stops it)",
    "max_chunk": "cut document chunks to at most this many bytes (default: what the MTU allows, 503)",
    "destinations": "pending destinations at the start: [{label, lat, lon, address, id, created}]",
}


def _load_companion(f: _File, node: yaml.Node, where: str) -> Any:
    """``companion: true`` or a mapping of :data:`COMPANION_KEYS`: a CompanionApp on the phone."""
    from ..companion import CompanionApp

    if isinstance(node, yaml.ScalarNode) and str(node.value).lower() in ("true", "false", "yes", "no", "on", "off"):
        return CompanionApp() if _conv_bool(f, node, where, Param("bool")) else None
    c = _conv_map(f, node, where, Param("map"))
    unknown = sorted(set(c) - set(COMPANION_KEYS))
    if unknown:
        f.error(node, f"{where}: unknown key {unknown[0]} (known: {', '.join(COMPANION_KEYS)})")
    kw: dict[str, Any] = {}
    if "version" in c:
        m = re.match(r"^(\d+)\.(\d+)$", str(c["version"]))
        if not m:
            f.error(node, f"{where}.version: expected MAJOR.MINOR, e.g. \"1.0\", got {show(c['version'])}")
        kw["version"] = (int(m.group(1)), int(m.group(2)))
    if "serve" in c:
        serve = c["serve"]
        allowed = ("version", "destinations", "ack", "lease")
        if not isinstance(serve, list) or any(x not in allowed for x in serve):
            f.error(node, f"{where}.serve: expected a list of {', '.join(allowed)}, got {show(serve)}")
        kw["serve"] = tuple(serve)
    if "running" in c:
        if not isinstance(c["running"], bool):
            f.error(node, f"{where}.running: expected true or false, got {show(c['running'])}")
        kw["running"] = c["running"]
    if "max_chunk" in c:
        mc = c["max_chunk"]
        if isinstance(mc, bool) or not isinstance(mc, int) or not 1 <= mc <= 503:
            f.error(node, f"{where}.max_chunk: expected a whole number from 1 to 503, got {show(mc)}")
        kw["max_chunk"] = mc
    app = CompanionApp(**kw)
    for i, d in enumerate(c.get("destinations") or []):
        if not isinstance(d, dict) or "label" not in d:
            f.error(node, f"{where}.destinations[{i}]: expected {{label, lat, lon | address, id}}, got {show(d)}")
        extra = sorted(set(d) - {"label", "lat", "lon", "address", "id", "created"})
        if extra:
            f.error(node, f"{where}.destinations[{i}]: unknown key {extra[0]}")
        try:
            app.add_destination(str(d["label"]), lat=d.get("lat"), lon=d.get("lon"),
                                address=None if d.get("address") is None else str(d["address"]),
                                id=None if d.get("id") is None else str(d["id"]),
                                created=None if d.get("created") is None else str(d["created"]))
        except ValueError as exc:
            f.error(node, f"{where}.destinations[{i}]: {exc}")
    app.notifications.clear()
    return app


def _data_path(f: _File, node: yaml.Node, where: str, *, dirs: bool) -> str:
    """A file (or directory) named in the scenario, relative to the scenario file."""
    text = _conv_str(f, node, where, Param("str"))
    path = (f.path.parent / text).resolve()
    if not (path.is_file() or (dirs and path.is_dir())):
        f.error(node, f"{where}: no such {'file or directory' if dirs else 'file'} {path}")
    return str(path)


def _phone_id_of(node: yaml.Node, i: int) -> str:
    if isinstance(node, yaml.MappingNode):
        keys = {str(k.value): v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        for key in ("id", "name"):
            v = keys.get(key)
            if isinstance(v, yaml.ScalarNode):
                text = str(v.value)
                return text if key == "id" else (re.sub(r"\W+", "_", text).strip("_").lower() or f"phone{i + 1}")
    return f"phone{i + 1}"


def _load_phone(f: _File, node: yaml.Node, i: int, earlier: list[PhoneSpec]) -> PhoneSpec:
    items = _mapping(f, node, f"world.phones[{i}]")
    keys = {k: (kn, v) for k, kn, v in items}
    for req in ("name", "address"):
        if req not in keys:
            f.error(node, f"world.phones[{i}].{req}: missing")
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
                f.error(v, f"{where}: expected a list of {{name, number}}, {{generated: N}} or {{vcf: file.vcf}} "
                          f"(either with plus: [more contacts]), got {show(c)}")
            if "generated" in c:
                if isinstance(c["generated"], bool) or not isinstance(c["generated"], int) or c["generated"] < 0:
                    f.error(v, f"{where}.generated: expected a whole number >= 0, got {show(c['generated'])}")
                kwargs["generated_contacts"] = c["generated"]
            else:
                vcf = (f.path.parent / str(c["vcf"])).resolve()
                if not vcf.is_file():
                    f.error(v, f"{where}.vcf: no such file {vcf}")
                kwargs["contacts_vcf"] = str(vcf)
            if "plus" in c:
                pnode = next(pv for pk, pv in v.value if pk.value == "plus")
                if not isinstance(pnode, yaml.SequenceNode):
                    f.error(pnode, f"{where}.plus: expected a list of {{name, number}}")
                plus = _load_contacts(f, pnode, where + ".plus")
        elif (key == "messages" and isinstance(v, yaml.ScalarNode)) or key == "messages_from":
            kwargs["messages_from"] = _data_path(f, v, where, dirs=True)
            try:
                from ..phone import load_messages

                load_messages(kwargs["messages_from"])
            except ValueError as exc:
                f.error(v, f"{where}: {exc}")
        elif key == "messages":
            kwargs["messages"] = _load_messages(f, v, where)
        elif key in ("history", "history_from"):
            kwargs["history_from"] = _data_path(f, v, where, dirs=True)
            try:
                from ..vcards import load_call_history

                load_call_history(kwargs["history_from"])
            except ValueError as exc:
                f.error(v, f"{where}: {exc}")
        elif key == "contacts_vcf":
            kwargs["contacts_vcf"] = _data_path(f, v, where, dirs=False)
        elif key == "companion":
            kwargs["companion"] = _load_companion(f, v, where)
        elif key in _PHONE_FIELDS and key != "extra":
            kwargs[key] = f.convert(v, _PHONE_HINTS[key], where)
        elif key == "extra":
            extra = _conv_map(f, v, where, Param("map"))
        else:
            known = sorted([*PHONE_SUGAR, *(n for n in _PHONE_FIELDS if n != "extra")])
            f.error(kn, f"{where}: unknown key (known: {', '.join(known)})")
    addr = str(kwargs["address"])
    if not ADDRESS_RE.match(addr):
        f.error(keys["address"][1], f'world.phones[{i}].address: expected "AA:BB:CC:DD:EE:FF", got {show(addr)}')
    for p in kwargs.get("profiles", ()):
        if p not in PROFILE_UUIDS:
            f.error(keys["profiles"][1], f"world.phones[{i}].profiles: unknown profile {show(p)} "
                                        f"(known: {', '.join(PROFILE_UUIDS)})")
    phone = VirtualPhone(**kwargs)
    phone.extra.update(extra)
    if plus:
        _add_contacts(phone, plus)
    pid = pid or re.sub(r"\W+", "_", phone.name).strip("_").lower() or f"phone{i + 1}"
    for e in earlier:
        if e.id == pid:
            f.error(node, f"world.phones[{i}]: id {pid} is already used by the phone at line {e.line}")
        if e.phone.address == phone.address:
            f.error(node, f"world.phones[{i}]: address {phone.address} is already used at line {e.line}")
    return PhoneSpec(pid, _line(node) or 0, phone)


def _load_messages(f: _File, node: yaml.Node, where: str) -> list[Any]:
    """Messages already on the phone at the start: ``[{type, sender, text, ...}]``."""
    from ..phone import message_from_dict

    if not isinstance(node, yaml.SequenceNode):
        f.error(node, f"{where}: expected a list of messages, or a file or directory to read them from")
    out = []
    for i, mn in enumerate(node.value):
        m: dict[str, Any] = {}
        for key, kn, v in _mapping(f, mn, f"{where}[{i}]"):
            if key not in MESSAGE_KEYS:
                f.error(kn, f"{where}[{i}]: unknown key {key} (known: {', '.join(MESSAGE_KEYS)})")
            m[key] = _conv_bool(f, v, key, Param("bool")) if key == "read" else _conv_str(f, v, key, Param("str"))
        try:
            out.append(message_from_dict(m, i + 1))
        except ValueError as exc:
            f.error(mn, f"{where}[{i}].{exc}")
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
                f.error(kn, f"{where}[{i}]: unknown key {key} (known: {', '.join(CONTACT_KEYS)})")
            c[key] = _construct(v)
        if "name" not in c or not ({"number", "numbers", "email"} & set(c)):
            f.error(cn, f"{where}[{i}]: a contact needs name and a number (or email)")
        out.append(c)
    return out


def _add_contacts(phone: VirtualPhone, contacts: list[dict[str, Any]]) -> None:
    """Contacts written in the scenario, added to the phone's phonebook (after the generated ones
    or the .vcf's) — so a scenario knows a caller's number and name."""
    from ..obex_pbap import book_for
    from ..vcards import SimContact

    book = book_for(phone)
    for c in contacts:
        numbers = [str(n) for n in c.get("numbers", [])] + ([str(c["number"])] if "number" in c else [])
        name = str(c["name"])
        given, _, family = name.partition(" ")
        book.contacts.append(SimContact(family=family, given=given, fn=name,
                                        numbers=[(n, str(c.get("type", "cell"))) for n in numbers],
                                        emails=[str(c["email"])] if "email" in c else []))


def _load_step(f: _File, node: yaml.Node, index: int, phone_ids: set[str], saved: dict[str, _Saved]) -> Step:
    items = _mapping(f, node, f"step {index}")
    keys = {k: (kn, v) for k, kn, v in items}
    all_kinds = [*KINDS, *VALUE_KINDS]
    kinds = [k for k in keys if k in all_kinds]
    if "phone" in kinds and len(kinds) > 1 and "do" not in keys:
        kinds.remove("phone")  # "phone:" is a parameter of that step (e.g. dashboard: connect)
    if len(kinds) > 1:
        f.error(node, f"step {index}: one kind per step, got {', '.join(kinds)}")
    say = None
    if "say" in keys:
        say = _conv_str(f, keys["say"][1], "say", Param("str"))
    if not kinds:
        if say is not None and len(keys) == 1:
            return Step(index, _line(node) or 0, "say", "", {}, say=say)
        given = ", ".join(keys) or "nothing"
        f.error(node, f"step {index}: no step kind in {given} (expected one of {', '.join(all_kinds)}, or say)")
    kind = kinds[0]
    kv = keys[kind][1]
    phone = None
    if kind in VALUE_KINDS:
        act = ACTIONS[(kind, "")]
        name = ""
        raw = {k: v for k, v in keys.items() if k not in ("say",)}
    elif kind == "phone":
        phone = _conv_str(f, kv, "phone", Param("str"))
        if phone not in phone_ids and phone not in f.broken_phones:
            f.error(kv, f"phone: no phone with id {show(phone)} in world.phones "
                       f"(ids: {', '.join(sorted(phone_ids)) or 'none'})")
        if "do" not in keys:
            f.error(node, f"step {index}: phone steps need do: (one of {_names('phone')})")
        name = _conv_str(f, keys["do"][1], "do", Param("str"))
        kv = keys["do"][1]
        raw = {k: v for k, v in keys.items() if k not in ("phone", "do", "say")}
    else:
        name = _conv_str(f, kv, kind, Param("str"))
        raw = {k: v for k, v in keys.items() if k not in (kind, "say")}
    if kind not in VALUE_KINDS:
        found = ACTIONS.get((kind, name))
        if found is None:
            f.error(kv, f"{kind}: unknown action {show(name)} (known: {_names(kind)})")
        act = found
    params: dict[str, Any] = {}
    what = f"{kind} {name}".strip() if kind not in VALUE_KINDS else kind
    bad: set[str] = set()
    errors_before = len(f.errors)
    for key, (pkn, pv) in raw.items():
        spec = act.params.get(key)
        with f.guard():
            if spec is None:
                known = ", ".join([*act.params, "say"])
                f.error(pkn, f"{what}: unknown parameter {key} (known: {known}){_did_you_mean(key, act.params)}")
            try:
                params[key] = PARAM_TYPES[spec.type](f, pv, key, spec)
            except ScenarioError:
                bad.add(key)
                raise
    for key, spec in act.params.items():
        if key not in params and key not in bad:
            if spec.required and key not in raw:
                with f.guard():
                    f.error(node, f"{what}: {key} is required ({spec.doc})")
            params[key] = spec.default
    step = Step(index, _line(node) or 0, kind, name, params, say=say, phone=phone)
    nodes = {k: v for k, (_kn, v) in raw.items()}
    if len(f.errors) == errors_before:
        with f.guard():
            _check_step(f, step, node, nodes, saved)
    # What this step saves, for the steps after it (also when it has errors: one error each).
    if isinstance(params.get("save"), str):
        saved[params["save"]] = _Saved(step.line, _saved_keys(step))
    return step


@dataclass
class _Saved:
    line: int
    keys: tuple[str, ...] | None  # the names a ${saved.key} may use, when known


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" — did you mean {close[0]}?" if close else ""


def _saved_keys(step: Step) -> tuple[str, ...] | None:
    """What ``save:`` keeps, when the API says: a signal's argument names, or a method's reply
    names when it has several."""
    if step.params.get("expect_error"):
        return ("error", "message")
    try:
        if step.kind == "expect_signal":
            return tuple(n for n, _ in _api().resolve(step.params["expect_signal"], "signal").out_args)
        if step.kind == "dashboard" and step.action == "call":
            outs = _api().resolve(step.params["method"], "method").out_args
            return tuple(n for n, _ in outs) if len(outs) > 1 else None
    except (KeyError, TypeError):
        return None
    return None


def _refs(value: Any) -> Iterator[tuple[str, str]]:
    """Every ``${name.dotted}`` in a parameter's value: (name, ".dotted")."""
    if isinstance(value, str):
        for m in SUBST_RE.finditer(value):
            yield m.group(1), m.group(2)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _refs(k)
            yield from _refs(v)


def _has_ref(value: Any) -> bool:
    return next(_refs(value), None) is not None


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    """The node of a mapping key / list item, for the error's line (the parent when not found)."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]  # type: ignore[no-any-return]
    return node


def _check_step(f: _File, step: Step, node: yaml.Node, nodes: dict[str, yaml.Node], saved: dict[str, _Saved]) -> None:
    """What the runner would only find out at run time, checked at load time: ``${saved}``
    references, ``after:`` names, ``dashboard: call`` argument counts and types and reply names,
    and the argument names in ``expect_signal``/``expect_no_signal`` ``args:``."""
    p = step.params
    what = step.describe().split(" ", 2)
    label = " ".join(what[:2]) if step.kind != "phone" else f"phone {step.phone} {step.action}"
    for key, value in p.items():
        if key in ("save", "say"):
            continue
        for name, dotted in _refs(value):
            with f.guard():
                where = nodes.get(key, node)
                if name not in saved:
                    hint = f"saved so far: {', '.join(sorted(saved))}" if saved else "nothing is saved before it"
                    f.error(where, f"{label}: {key}: ${{{name}{dotted}}} is not saved by an earlier step "
                                   f"(save: {name} on a step before this one; {hint})")
                keys = saved[name].keys
                first = dotted.lstrip(".").split(".")[0] if dotted else ""
                if keys is not None and first and not first.isdigit() and first not in keys:
                    f.error(where, f"{label}: {key}: ${{{name}{dotted}}}: what was saved at line {saved[name].line} "
                                   f"has no {first} (it has: {', '.join(keys)})")
    if p.get("after") is not None and p["after"] not in saved:
        with f.guard():
            f.error(nodes.get("after", node), f"{label}: after: no earlier step saves {p['after']} "
                                              f"(saved so far: {', '.join(sorted(saved)) or 'nothing'})")
    if step.kind in ("expect_signal", "expect_no_signal") and isinstance(p.get("args"), dict):
        member = p[step.kind]
        try:
            m = _api().resolve(member, "signal")
        except KeyError:
            m = None  # PropertiesChanged pseudo-signals
        if m is not None:
            names = [n for n, _ in m.out_args]
            anode = nodes.get("args")
            for arg in p["args"]:
                if isinstance(arg, str) and not arg.startswith("$") and arg not in names:
                    with f.guard():
                        f.error(_child(anode, arg) if anode is not None else node,
                                f"{label}: args: {m.name} has no argument {arg} (its arguments: "
                                f"{', '.join(names) or 'none'}){_did_you_mean(arg, names)}")
    if step.kind == "dashboard" and step.action == "call":
        _check_call(f, step, node, nodes, label)


def _check_call(f: _File, step: Step, node: yaml.Node, nodes: dict[str, yaml.Node], label: str) -> None:
    from ..world import ValueTypeError, to_dbus

    p = step.params
    m = _api().resolve(p["method"], "method")
    args = p["args"] or []
    want = ", ".join(f"{n} ({t})" for n, t in m.in_args) or "none"
    anode = nodes.get("args", node)
    if len(args) != len(m.in_args):
        f.error(anode, f"{label}: {m.name} takes {len(m.in_args)} argument(s): {want}; got {len(args)}")
    for i, ((aname, sig), value) in enumerate(zip(m.in_args, args, strict=True)):
        if _has_ref(value) and not (isinstance(value, str) and sig == "s"):
            continue  # its type is known when the step runs
        try:
            to_dbus(value, sig)
        except ValueTypeError as exc:
            with f.guard():
                f.error(_child(anode, i), f"{label}: argument {i + 1}, {aname} ({sig}): {exc}")
    result = p.get("result")
    if result is not None and isinstance(result, dict) and len(m.out_args) > 1 and \
            not any(isinstance(k, str) and k.startswith("$") for k in result):
        names = [n for n, _ in m.out_args]
        for k in result:
            if k not in names:
                with f.guard():
                    f.error(_child(nodes.get("result"), k), f"{label}: result: {m.name} replies "
                            f"{{{', '.join(names)}}} (several values: a mapping by name), no {k}")
    if result is not None and not m.out_args:
        with f.guard():
            f.error(nodes.get("result", node), f"{label}: result: {m.name} returns nothing")


def _names(kind: str) -> str:
    return ", ".join(sorted(n for (k, n) in ACTIONS if k == kind)) or "none yet"


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
    return sorted(str(p) for p in (Path(__file__).parent.parent / "scenarios").glob("*.yaml"))
