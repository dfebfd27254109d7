"""What a run prints: one block per scenario, the summary line, JUnit XML, the step vocabulary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .registry import ACTIONS
from .runner import ScenarioResult, StepResult
from .values import show


def format_result(r: ScenarioResult, *, verbose: bool = False) -> str:
    status = "PASS" if r.ok else ("BAD " if r.load_error else "FAIL")
    lines = [f"{status}  {r.name}  ({Path(r.file).name}, {r.seconds:.1f}s)"]
    if verbose or not r.ok:
        for s in r.steps:
            mark = "ok " if s.ok else "XX "
            lines.append(f"      {mark} {s.index:>2}. line {s.line:<4} {s.text}  [{_timing(s)}]")
    if not r.ok:
        where = f"{r.file}:{r.line}" if r.line else r.file
        lines.append(f"      {where}: {r.error}")
        if r.details:
            lines.extend("    " + ln for ln in r.details.splitlines())
    return "\n".join(lines)


def _timing(s: StepResult) -> str:
    """Since the previous step (an expect_signal: until its signal came; "before" when it had come
    before the previous step was done), and when, since the steps began."""
    since = f"+{s.seconds:.2f}s" if s.seconds >= 0 else "before"
    return f"{since} at {s.at:.2f}s"


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
            out.text = "\n".join(f"{s.index}. line {s.line} {s.text} [{_timing(s)}]" for s in r.steps)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


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
            req = "required" if spec.required else f"default {show(spec.default)}" if spec.default not in (
                None, []) else "optional"
            choices = f" ({'|'.join(spec.choices)})" if spec.choices else ""
            lines.append(f"      {pname}: {spec.type}{choices}, {req} — {spec.doc}")
    return "\n".join(lines)
