"""Typed YAML with line numbers: the one loader behind the daemon's config and the simulator's scenarios.

:func:`compose` reads text into a node tree (libyaml's C loader when it is there, ~9x faster:
DESIGN.md §6) and turns a syntax error into a :class:`SyntaxProblem` with its line.  A
:class:`TypedReader` turns nodes into values of type hints — dataclasses (one mapping each; unknown
keys are errors), ``X | None``, ``Literal[...]``, ``tuple[X, ...]``, ``dict[str, X]``, ``bool``,
``int``, ``float``, ``str`` and :data:`Duration` — remembering the node every key path came from,
so that a check made later (a range, two keys that go together) still names the line.  Every
failure goes through :meth:`TypedReader.fail`, which a reader implements to raise its own error
(``ConfigError``, ``ScenarioError``) naming the file and line.

The default readers never repeat a value from the file in a message, only what kind of thing was
found (the daemon's config may be a symlink to a secret); a reader may override a leaf to word its
messages otherwise (the scenario runner shows the offending value).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, NewType, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.constructor import SafeConstructor

try:  # the C loader is ~9x faster (DESIGN.md §6)
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as Loader  # type: ignore[assignment]

NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"

Duration = NewType("Duration", float)
"""Seconds; written in YAML as ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"21d"`` or a number."""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # key names we are willing to repeat in a message
_PARENT_RE = re.compile(r"(\.[^.\[\]]*|\[\d+\])$")
_PATH_PART_RE = re.compile(r"[^.\[\]]+|\[\d+\]")


def parse_duration(text: str) -> float:
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


# ---------------------------------------------------------------------------------------------
# Text to nodes, and what a node is
# ---------------------------------------------------------------------------------------------


class SyntaxProblem(Exception):
    """Not valid YAML: where (``line``, 1-based, None when the parser gave no position) and the
    parser's ``problem`` (None when it named none); ``str()`` is the parser's whole message."""

    def __init__(self, line: int | None, problem: str | None, text: str) -> None:
        super().__init__(text)
        self.line = line
        self.problem = problem

    def quiet(self) -> str:
        """The problem without the text it quotes (a character or two is kept)."""
        return re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: m.group(0) if len(m.group(0)) <= 6 else "'...'",
                      self.problem or "syntax error")


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (None for an empty one); raises :class:`SyntaxProblem`
    (and, for absurdly deep nesting, ``RecursionError``)."""
    try:
        return yaml.compose(text, Loader=Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        raise SyntaxProblem(mark.line + 1 if mark is not None else None, str(problem) if problem else None,
                            str(exc)) from None


def line(node: yaml.Node | None) -> int | None:
    """The 1-based line a node starts on (None for no node)."""
    return node.start_mark.line + 1 if node is not None else None


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def construct(node: yaml.Node) -> Any:
    """The plain Python value of a node (as ``yaml.safe_load`` would give)."""
    return SafeConstructor().construct_document(node)


def kind(node: yaml.Node) -> str:
    """What a node is, never what it says."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return {"null": "nothing", "bool": "true or false", "int": "a number", "float": "a number"}.get(
        str(node.tag).rsplit(":", 1)[-1], "a string")


def safe_name(raw: str) -> str:
    """A key as it may appear in a message: itself if it is a plain name, else ``<key>``."""
    return raw if NAME_RE.fullmatch(raw) else "<key>"


def find_node(node: yaml.Node, dotted: str) -> yaml.Node:
    """The node at a key path (``a.b[2].c``) below ``node``, or the deepest one on the way there
    (a key's own node when its value is not a mapping or list to go on in)."""
    cur: yaml.Node | None = node
    best = node
    for part in _PATH_PART_RE.findall(dotted):
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


# ---------------------------------------------------------------------------------------------
# Nodes to typed values
# ---------------------------------------------------------------------------------------------


class TypedReader:
    """Converts nodes to values of type hints; one per file read.

    ``nodes`` maps each key path read (``cloud.retry.max_delay``, ``api.allowed_users[2]``; the
    document itself at ``""``) to its node, so :meth:`at` finds a line for any path later."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.nodes: dict[str, yaml.Node] = {}

    def fail(self, node: yaml.Node | None, path: str, msg: str) -> typing.NoReturn:
        """Raise the reader's error for ``path`` (at ``node``'s line): ``msg`` says what was expected."""
        raise NotImplementedError

    def at(self, path: str) -> yaml.Node | None:
        """The node of ``path`` or, for a key the file does not set, of its nearest parent."""
        while True:
            node = self.nodes.get(path)
            if node is not None or not path:
                return node
            parent = _PARENT_RE.sub("", path)
            path = parent if parent != path else ""

    # --- the dispatch on the type hint ---

    def convert(self, node: yaml.Node, tp: Any, path: str) -> Any:
        origin = get_origin(tp)
        args = get_args(tp)
        if tp is Duration:
            return self.duration(node, path)
        if origin in (Union, types.UnionType):
            if is_null(node):
                if type(None) in args:
                    return None
                self.fail(node, path, "must not be empty")
            return self.convert(node, next(a for a in args if a is not type(None)), path)
        if origin is Literal:
            return self.literal(node, tuple(args), path)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.section(node, tp, path)
        if tp is bool:
            return self.bool_(node, path)
        if tp is int:
            return self.int_(node, path)
        if tp is float:
            return self.float_(node, path)
        if tp is str:
            return self.str_(node, path)
        if origin is tuple:
            return self.tuple_(node, args[0], path)
        if origin is list:
            return self.list_(node, args[0] if args else Any, path)
        if origin is dict:
            return self.dict_(node, args[1], path)
        return self.other(node, tp, path)

    # --- leaves (never repeating a value from the file) ---

    def scalar(self, node: yaml.Node, path: str, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"expected {what}, got {kind(node)}")
        return str(node.value)

    def duration(self, node: yaml.Node, path: str) -> Any:
        raw = self.scalar(node, path, 'a duration like "30s"')
        try:
            value = parse_duration(raw)
        except ValueError:
            self.fail(node, path, f'expected a duration like "30s", got {kind(node)}')
        return Duration(value)

    def literal(self, node: yaml.Node, choices: tuple[Any, ...], path: str) -> Any:
        listed = ", ".join(map(str, choices))
        raw = self.scalar(node, path, "one of " + listed)
        if raw not in choices:
            self.fail(node, path, f"expected one of {listed}")
        return raw

    def bool_(self, node: yaml.Node, path: str) -> Any:
        raw = self.scalar(node, path, "true or false")
        if node.tag != BOOL_TAG:
            self.fail(node, path, f"expected true or false, got {kind(node)}")
        return raw.lower() in ("true", "yes", "on")

    def int_(self, node: yaml.Node, path: str) -> Any:
        raw = self.scalar(node, path, "a whole number")
        try:
            return int(raw, 0) if node.tag == INT_TAG else int(raw)
        except ValueError:
            what = kind(node)
            self.fail(node, path, "expected a whole number" + (f", got {what}" if what != "a number" else
                                                               " (decimal, or hexadecimal with 0x)"))

    def float_(self, node: yaml.Node, path: str) -> Any:
        raw = self.scalar(node, path, "a number")
        if node.tag == FLOAT_TAG and raw.lower().lstrip("+-") in (".inf", ".nan"):
            self.fail(node, path, "expected a finite number")
        try:
            number = float(raw)
        except ValueError:
            self.fail(node, path, f"expected a number, got {kind(node)}")
        if not math.isfinite(number):
            self.fail(node, path, "expected a finite number")
        return number

    def str_(self, node: yaml.Node, path: str) -> Any:
        if is_null(node):
            self.fail(node, path, "expected a string, got nothing")
        raw = self.scalar(node, path, "a string")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
            self.fail(node, path, "must not contain control characters")
        return raw

    def tuple_(self, node: yaml.Node, item_tp: Any, path: str) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected a list, got {kind(node)}")
        items = []
        for i, n in enumerate(node.value):
            self.nodes[f"{path}[{i}]"] = n
            items.append(self.convert(n, item_tp, f"{path}[{i}]"))
        return tuple(items)

    def list_(self, node: yaml.Node, item_tp: Any, path: str) -> Any:
        return list(self.tuple_(node, item_tp, path))

    def dict_(self, node: yaml.Node, val_tp: Any, path: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {kind(node)}")
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            k = self.scalar(knode, path, "a key")
            if not NAME_RE.fullmatch(k):
                self.fail(knode, path, "expected keys of at most 64 letters, digits and _ . : -")
            if k in out:
                self.fail(knode, f"{path}.{k}", "given twice")
            self.nodes[f"{path}.{k}"] = knode
            out[k] = self.convert(vnode, val_tp, f"{path}.{k}")
        return out

    def section(self, node: yaml.Node, cls: type[Any], path: str) -> Any:
        """A dataclass from a mapping of its fields (empty: all defaults); unknown keys are errors."""
        if is_null(node):
            return cls()
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {kind(node)}")
        hints = get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode, path, "a key")
            sub = f"{path}.{safe_name(key)}" if path else safe_name(key)
            if key not in fields:
                known = ", ".join(sorted(fields))
                self.fail(knode, sub, f"unknown key (known here: {known})")
            if key in kwargs:
                self.fail(knode, sub, "given twice")
            self.nodes[sub] = knode
            kwargs[key] = self.convert(vnode, hints[key], sub)
        return cls(**kwargs)

    def other(self, node: yaml.Node, tp: Any, path: str) -> Any:
        raise TypeError(f"type {tp!r} not supported")  # a programming error, not user input


__all__ = ["BOOL_TAG", "FLOAT_TAG", "INT_TAG", "NAME_RE", "NULL_TAG", "Duration", "Loader", "SyntaxProblem",
           "TypedReader", "compose", "construct", "find_node", "is_null", "kind", "line", "parse_duration",
           "safe_name"]
