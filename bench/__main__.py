"""``make bench``: a benchmark runner (not timed tests).

Every module ``bench/bench_*.py`` exposes ``run() -> dict[str, float]`` returning named figures and
may expose ``FIGURES: dict[str, dict]`` describing them: ``floor`` (the name of the figure it is
compared with, measured in the same run), ``samples`` (how many measurements the figure is made
of) and ``what`` (one line: what it measures).  ``FIGURES`` is read after ``run()``, so a module
may fill in sample sizes it only knows then.

Each run writes ONE complete record to ``bench/results.json`` (never merged with an earlier run):
the figures, each figure's floor and ratio to it, the sample sizes, which areas ran (a partial run
says so), the commit (``git rev-parse HEAD`` and whether the tree was dirty), Python and library
versions, the CPU model and core count, the load average at the start, the time, and every
``DASHBRIDGE_BENCH*`` environment variable that was set (they shrink sample sizes: a record says
so, and the ``samples`` it lists are the ones actually used).

    python -m bench                    every area
    python -m bench startup pbap       some areas (the record is marked partial)
    python -m bench --keep             copy bench/results.json to bench/history/<time>-<commit>.json
    python -m bench --compare A B      two records side by side (paths, history names, or "latest")
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import pkgutil
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
HISTORY = HERE / "history"
LIBRARIES = ("dbus-fast", "aiohttp", "cryptography", "PyYAML", "phonenumberslite", "phonenumbers", "vobject")
RECORD_FORMAT = 2


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, Any]:
    """Where and on what the figures were measured (taken at the start of a run)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status),
        "dirty_files": len(status.splitlines()) if status else 0,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libraries": _versions(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "cpu_cores_usable": usable,
        "loadavg_start": [round(x, 2) for x in load],
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("DASHBRIDGE_BENCH")},
    }


def _areas() -> list[str]:
    return sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules([str(HERE)])
                  if m.name.startswith("bench_"))


def run(wanted: list[str]) -> int:
    areas = _areas()
    unknown = [a for a in wanted if a not in areas]
    if unknown:
        print(f"unknown area(s): {', '.join(unknown)}; areas: {', '.join(areas)}", file=sys.stderr)
        return 2
    selected = [a for a in areas if not wanted or a in wanted]
    record: dict[str, Any] = {"format": RECORD_FORMAT, **environment()}
    if record["env"]:
        print(f"NOTE: sample sizes changed by the environment: {record['env']} (recorded)", flush=True)
    record.update({"areas": selected, "partial": selected != areas, "failed": {}, "area_seconds": {},
                   "figures": {}, "floors": {}, "ratios": {}, "samples": {}, "what": {}})
    t_run = time.monotonic()
    for area in selected:
        print(f"== {area}", flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(f"bench.bench_{area}")
            figures = mod.run()
        except Exception as exc:  # report and go on: one broken area must not hide the others
            print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
            record["failed"][area] = f"{type(exc).__name__}: {exc}"
            continue
        meta: dict[str, dict[str, Any]] = getattr(mod, "FIGURES", {})
        for k, v in figures.items():
            record["figures"][k] = round(float(v), 6)
        for k in figures:
            m = meta.get(k, {})
            if m.get("samples") is not None:
                record["samples"][k] = int(m["samples"])
            if m.get("what"):
                record["what"][k] = str(m["what"])
            floor = m.get("floor")
            if floor and floor in figures:
                record["floors"][k] = floor
                if float(figures[floor]):
                    record["ratios"][k] = round(float(figures[k]) / float(figures[floor]), 4)
        for k, v in figures.items():
            floor = record["floors"].get(k)
            tail = f"   floor {floor} (x{record['ratios'].get(k, float('nan')):.3g})" if floor else ""
            n = record["samples"].get(k)
            print(f"   {k:<44} {v:>12.6g}{f'  n={n}' if n is not None else '':<9}{tail}", flush=True)
        record["area_seconds"][area] = round(time.monotonic() - t0, 1)
        print(f"   ({time.monotonic() - t0:.1f}s)", flush=True)
    record["duration_s"] = round(time.monotonic() - t_run, 1)
    RESULTS.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}" + (" (partial: " + ", ".join(selected) + ")"
                                                     if record["partial"] else ""))
    return 1 if record["failed"] else 0


def keep(src: Path = RESULTS) -> Path:
    """Copy a record into bench/history/, named by its time and commit."""
    rec = load(str(src))
    stamp = str(rec.get("time", "")).replace("-", "").replace(":", "").split("+")[0] or "unknown"
    commit = str(rec.get("commit", ""))[:10] or "nocommit"
    suffix = ("-dirty" if rec.get("dirty") else "") + ("-partial" if rec.get("partial") else "")
    HISTORY.mkdir(exist_ok=True)
    dest = HISTORY / f"{stamp}-{commit}{suffix}.json"
    shutil.copyfile(src, dest)
    return dest


def load(name: str) -> dict[str, Any]:
    """A record by path, by file name in bench/history/, or "latest" (bench/results.json).  A
    pre-record results.json (one flat object of figures) is read as figures only."""
    p = Path(name)
    if name == "latest":
        p = RESULTS
    elif not p.exists() and (HISTORY / name).exists():
        p = HISTORY / name
    elif not p.exists() and (HISTORY / f"{name}.json").exists():
        p = HISTORY / f"{name}.json"
    data = json.loads(p.read_text())
    if "figures" not in data:
        return {"figures": data, "floors": {}, "ratios": {}, "samples": {}}
    return dict(data)


def compare(a_name: str, b_name: str) -> int:
    a, b = load(a_name), load(b_name)
    for label, rec in (("A", a), ("B", b)):
        partial = " partial " + str(rec.get("areas")) if rec.get("partial") else ""
        print(f"{label}: {rec.get('time', '?')}  {str(rec.get('commit', '?'))[:10]}"
              f"{' dirty' if rec.get('dirty') else ''}{partial}"
              f"  py {rec.get('python', '?')}  {rec.get('cpu_model', '?')} x{rec.get('cpu_cores', '?')}"
              f"  load {rec.get('loadavg_start', '?')}  env {rec.get('env') or '-'}")
    names = sorted(set(a["figures"]) | set(b["figures"]))
    print(f"\n{'figure':<44} {'A':>12} {'B':>12} {'B/A':>7}   {'A/floor':>8} {'B/floor':>8}  n(A/B)")
    for k in names:
        va, vb = a["figures"].get(k), b["figures"].get(k)
        rel = f"{vb / va:7.3f}" if va and vb is not None else f"{'':>7}"
        ra, rb = a["ratios"].get(k), b["ratios"].get(k)
        na, nb = a["samples"].get(k, "-"), b["samples"].get(k, "-")
        print(f"{k:<44} {_fmt(va):>12} {_fmt(vb):>12} {rel}   {_fmt(ra):>8} {_fmt(rb):>8}  {na}/{nb}")
    return 0


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        if len(argv) != 3:
            print("usage: python -m bench --compare A B", file=sys.stderr)
            return 2
        return compare(argv[1], argv[2])
    if argv[:1] == ["--keep"]:
        src = Path(argv[1]) if len(argv) > 1 else RESULTS
        print(f"kept {keep(src).relative_to(ROOT)}")
        return 0
    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
