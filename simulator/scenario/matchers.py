"""Matchers: what ``args:`` / ``value:`` / ``where:`` of a step compare with (docs/scenarios.md)."""

from __future__ import annotations

import re
from typing import Any

from .values import ADDRESS_RE, show

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
                return f"{k} needs a number, got {show(v)}"
            if k == "$regex":
                if not isinstance(v, str):
                    return f"$regex needs text, got {show(v)}"
                try:
                    re.compile(v)
                except re.error as exc:
                    return f"$regex {show(v)} is not a regular expression ({exc})"
            if k == "$in" and not isinstance(v, list):
                return f"$in needs a list, got {show(v)}"
            if k == "$all" and not isinstance(v, list):
                return f"$all needs a list of matchers, got {show(v)}"
            if k == "$approx" and not (isinstance(v, list) and len(v) == 2):
                return f"$approx needs [value, tolerance], got {show(v)}"
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
            return f"{here}: expected a mapping, got {show(actual)}"
        for k, v in expected.items():
            sub = f"{path}.{k}" if path else str(k)
            if _is_op_map(v) and v.get("$absent") is True:
                if k in actual:
                    return f"{sub}: expected absent, got {show(actual[k])}"
                continue
            if k not in actual:
                return f"{sub}: missing (has: {', '.join(map(str, actual)) or 'nothing'})"
            why = match(v, actual[k], sub)
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{here}: expected a list, got {show(actual)}"
        if len(expected) != len(actual):
            return f"{here}: expected {len(expected)} item(s), got {len(actual)}: {show(actual)}"
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
    return None if ok else f"{here}: expected {show(expected)}, got {show(actual)}"


def _match_op(op: str, arg: Any, actual: Any, here: str) -> str | None:
    if op == "$any":
        return None
    if op == "$absent":
        return f"{here}: expected absent"  # only meaningful as a mapping value (handled there)
    if op == "$eq":
        return None if arg == actual else f"{here}: expected exactly {show(arg)}, got {show(actual)}"
    if op == "$not":
        return f"{here}: expected not {show(arg)}, got {show(actual)}" if match(arg, actual, here) is None else None
    if op == "$all":
        for m in arg:
            why = match(m, actual, here)
            if why:
                return why
        return None
    if op == "$in":
        return None if any(match(x, actual, here) is None for x in arg) else \
            f"{here}: expected one of {show(arg)}, got {show(actual)}"
    if op == "$regex":
        if not isinstance(actual, str):
            return f"{here}: expected text matching /{arg}/, got {show(actual)}"
        return None if re.search(arg, actual) else f"{here}: expected text matching /{arg}/, got {show(actual)}"
    if op in ("$gt", "$ge", "$lt", "$le"):
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return f"{here}: expected a number, got {show(actual)}"
        ok = {"$gt": actual > arg, "$ge": actual >= arg, "$lt": actual < arg, "$le": actual <= arg}[op]
        sym = {"$gt": ">", "$ge": ">=", "$lt": "<", "$le": "<="}[op]
        return None if ok else f"{here}: expected {sym} {arg}, got {actual}"
    if op == "$approx":
        value, tol = arg
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return f"{here}: expected a number, got {show(actual)}"
        return None if abs(actual - value) <= tol else f"{here}: expected {value} ± {tol}, got {actual}"
    if op == "$len":
        if not isinstance(actual, list | dict | str):
            return f"{here}: expected something with a length, got {show(actual)}"
        return match(arg, len(actual), f"len({here})")
    if op == "$contains":
        if isinstance(actual, str):
            if not isinstance(arg, str):
                return f"{here}: cannot look for {show(arg)} in text"
            return None if arg in actual else f"{here}: expected to contain {show(arg)}, got {show(actual)}"
        items = list(actual.values()) if isinstance(actual, dict) else actual
        if not isinstance(items, list):
            return f"{here}: expected a list, got {show(actual)}"
        if any(match(arg, x, here) is None for x in items):
            return None
        return f"{here}: no item matches {show(arg)} (items: {show(items)})"
    if op == "$each":
        items = list(actual.values()) if isinstance(actual, dict) else actual
        if not isinstance(items, list):
            return f"{here}: expected a list, got {show(actual)}"
        for i, x in enumerate(items):
            why = match(arg, x, f"{here}[{i}]")
            if why:
                return why
        return None
    return f"{here}: unknown operator {op}"
